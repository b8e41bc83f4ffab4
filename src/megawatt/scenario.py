"""Scenario files: YAML validated with pydantic into one frozen `Scenario`. Unknown keys are
errors; every error names the field path, what was expected and what was given. `--set
key=value` overrides any field before validation.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from megawatt._files import read_user_text
from megawatt._yaml import MAX_CHARS, StrictLoader, describe, load_yaml, surrogate
from megawatt.errors import CatalogError, InputError, ScenarioError
from megawatt.hardware import Catalog, load_catalog
from megawatt.model import load_model
from megawatt.perf import family_of
from megawatt.perf.efficiency import PRIORS, pick_release
from megawatt.serving import SCHEDULERS
from megawatt.units import SECONDS_PER_DAY
from megawatt.workload import mix_from_spec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class BudgetSpec(_Strict):
    """What the fleet may spend: facility power (MW), or capital (USD), or neither when every
    pool fixes its `n_systems`; and the PUE that turns IT power into facility power."""

    facility_mw: float | None = Field(
        None, gt=0, description="facility power, MW (IT power = facility / PUE)"
    )
    capex_usd: float | None = Field(
        None, gt=0, description="capital budget, USD (systems plus facility capex for their power)"
    )
    pue: float = Field(1.2, ge=1.0, le=3.0, description="power usage effectiveness")

    @model_validator(mode="after")
    def _one_kind(self) -> BudgetSpec:
        if self.facility_mw is not None and self.capex_usd is not None:
            raise ValueError("give facility_mw or capex_usd, not both")
        return self

    @property
    def kind(self) -> str:
        """`power`, `money` or `systems` (every pool gives n_systems)."""
        if self.facility_mw is not None:
            return "power"
        return "money" if self.capex_usd is not None else "systems"

    def describe(self) -> str:
        """One line: the budget and its PUE."""
        if self.facility_mw is not None:
            return f"{self.facility_mw:g} MW facility, PUE {self.pue:g}"
        if self.capex_usd is not None:
            return f"${self.capex_usd / 1e9:g}B capital, PUE {self.pue:g}"
        return f"fixed system counts, PUE {self.pue:g}"


class SpeculativeSpec(_Strict):
    """Speculative decoding for a pool: `draft_tokens` drafted per step, each accepted with
    probability `acceptance`. GPUs: MTP or EAGLE heads costing `draft_cost` of a decode step per
    drafted token. Wafers: a `draft_model` kept on the same wafers, timed on its own cores."""

    draft_tokens: int = Field(3, ge=1, le=16, description="tokens drafted per step (k)")
    acceptance: float = Field(0.8, ge=0.0, le=1.0, description="per-token acceptance rate")
    draft_cost: float = Field(
        0.1, ge=0.0, le=1.0, description="GPUs: cost of one drafted token, share of a decode step"
    )
    draft_model: str | None = Field(
        None, description="wafers: the draft model id (e.g. llama-3.1-8b); GPUs: leave unset"
    )


class PoolSpec(_Strict):
    """One pool of an option: a system type, its share of the power, how it deploys models."""

    system: str = Field(description="system id from the hardware catalog, e.g. gb200-nvl72")
    power_share: float = Field(1.0, gt=0, le=1, description="share of the option's IT power")
    engine: str = Field("vllm", description="serving engine: vllm, sglang, trtllm, cerebras")
    engine_release: str | None = Field(
        None,
        description="software release assumed: latest, as-published (the tuned MLPerf-era "
        "release of published figures) or a month YYYY-MM; default: the scenario's",
    )
    weight_dtype: Literal["auto", "native", "bf16", "fp8", "fp4"] = "auto"
    kv_dtype: Literal["bf16", "fp8"] = "bf16"
    scheduler: str = Field("vllm", description="scheduler policy: vllm, fcfs, static")
    n_systems: int | None = Field(
        None, ge=1, description="systems in the pool (instead of a share of the budget)"
    )
    tp: int | None = Field(None, ge=1, description="tensor-parallel width (searched if unset)")
    pp: int | None = Field(None, ge=1, description="pipeline stages or wafers (searched if unset)")
    ep: int | None = Field(
        None, ge=1, description="expert-parallel width for MoE models (needs tp; default: as tp)"
    )
    attention_dp: bool = Field(
        False, description="data-parallel attention over the tp devices (needs tp > 1)"
    )
    weight_streaming: bool = Field(
        False, description="wafers: stream weights from external memory, one wafer per replica"
    )
    speculative: SpeculativeSpec | None = None
    max_num_seqs: int = Field(256, ge=1, le=65536)
    max_num_batched_tokens: int = Field(8192, ge=16, le=1_048_576)

    @model_validator(mode="after")
    def _plan_settings_need_a_plan(self) -> PoolSpec:
        if self.ep is not None and self.tp is None:
            raise ValueError(
                f"ep needs tp (and pp, if any) set too: the plan is then not searched; got "
                f"ep={self.ep} and no tp"
            )
        if self.ep is not None and self.tp is not None and self.ep > self.tp * (self.pp or 1):
            raise ValueError(
                f"ep must be at most tp x pp = {self.tp * (self.pp or 1)} (the replica's devices); "
                f"got {self.ep}"
            )
        if self.attention_dp and (self.tp is None or self.tp < 2):
            raise ValueError(
                f"attention_dp needs tp >= 2 (attention data-parallel over tp devices); got "
                f"tp={self.tp}"
            )
        if self.weight_streaming and (self.tp is not None or self.pp not in (None, 1)):
            raise ValueError(
                "weight_streaming runs one wafer per replica: leave tp and pp unset; got "
                f"tp={self.tp}, pp={self.pp}"
            )
        return self

    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, value: str) -> str:
        if value not in SCHEDULERS:
            raise ValueError(f"must be one of {', '.join(sorted(SCHEDULERS))}")
        return value


class OptionSpec(_Strict):
    """A fleet option: one or more pools sharing the budget, and how traffic is split over them."""

    name: str = Field(min_length=1)
    pools: list[PoolSpec] = Field(min_length=1)
    router: Literal["proportional", "class_aware", "cost_aware"] = Field(
        "proportional", description="pool router: proportional, class_aware or cost_aware"
    )

    @model_validator(mode="after")
    def _shares(self) -> OptionSpec:
        total = sum(p.power_share for p in self.pools)
        if total > 1.0 + 1e-9:
            raise ValueError(f"pool power shares must sum to at most 1; they sum to {total:g}")
        return self


class TrafficSpec(_Strict):
    """The traffic: a request mix and its daily shape."""

    mix: Literal["chatgpt"] | list[dict[str, Any]] = Field(
        "chatgpt", description="'chatgpt' (FACTS.md B.7) or a list of request classes"
    )
    peak_to_mean: float = Field(1.5, ge=1.0, le=20.0, description="peak-hour rate / daily mean rate")
    demand_prompts_per_day: float = Field(2.5e9, gt=0, description="demand to compare capacity with")


class FleetSpec(_Strict):
    """Simulating each option at the traffic's peak-hour demand (after capacity is known)."""

    simulate_demand: bool = True
    mode: Literal["sampled", "exact"] = Field("sampled", description="sampled or exact")
    k: int = Field(4, ge=1, le=100_000, description="replicas simulated per pool in sampled mode")
    duration_s: float = Field(
        300.0, ge=1.0, le=SECONDS_PER_DAY, description="seconds of arrivals simulated, 1 to 86,400"
    )
    replica_router: Literal["random", "round_robin", "least_outstanding"] = "random"


class SloSpec(_Strict):
    """Latency targets every option must meet at its capacity."""

    ttft_p99_s: float = Field(gt=0)
    tpot_p99_s: float = Field(gt=0)


class EconomicsSpec(_Strict):
    """Money assumptions (USD); see megawatt.fleet.economics.SOURCES."""

    electricity_usd_per_mwh: float = Field(70.0, ge=0)
    facility_capex_usd_per_mw: float = Field(15e6, ge=0)
    it_amortisation_years: float = Field(4.0, gt=0)
    facility_amortisation_years: float = Field(15.0, gt=0)
    cost_of_capital: float = Field(0.08, ge=0, lt=1)
    contract_usd_per_mw_year: float | None = Field(None, gt=0)


class SimulationSpec(_Strict):
    """How much to simulate per capacity search."""

    n_requests: int = Field(1200, ge=100, le=1_000_000)
    rel_tol: float = Field(0.05, gt=0, lt=0.5)


class PriceTierSpec(_Strict):
    """A price tier (USD per million tokens) that sessions earn when the pool serving them gives
    each user at least `min_tokens_per_s`."""

    name: str = Field(min_length=1)
    min_tokens_per_s: float = Field(0.0, ge=0, allow_inf_nan=False)
    input_usd_per_m: float = Field(ge=0, allow_inf_nan=False)
    cached_input_usd_per_m: float = Field(ge=0, allow_inf_nan=False)
    output_usd_per_m: float = Field(ge=0, allow_inf_nan=False)
    source: str = ""


class SessionsSpec(_Strict):
    """Closed-loop sessions (agents, chat, research) evaluated on every pool: task time, tasks per
    day per MW, cost and revenue per task (see megawatt.fleet.sessions)."""

    classes: list[str] = Field(
        default_factory=lambda: ["coding-agent"],
        description="session classes: chat, coding-agent, deep-research, automation",
    )
    n_requests: int = Field(20_000, ge=100, le=2_000_000, description="turns per search run (first draw)")
    max_requests: int = Field(400_000, ge=100, le=10_000_000, description="turns a search may grow to")
    tiers: list[PriceTierSpec] = Field(default_factory=list)
    usd_per_wait_hour: float = Field(0.0, ge=0, allow_inf_nan=False, description="value of a user's hour")
    model: str | None = Field(None, description="model the sessions run on (default: the first)")


class ImagesSpec(_Strict):
    """Image generation served on GPUs from the same power budget (see megawatt.fleet.image)."""

    model: str = Field("sdxl", description="image model: sdxl, flux.1-dev, flux.1-schnell")
    images_per_day: float = Field(gt=0, allow_inf_nan=False)
    peak_to_mean: float = Field(1.5, ge=1.0, le=20.0, allow_inf_nan=False)
    system: str = Field(description="GPU system serving images, e.g. hgx-h200")
    dtype: Literal["bf16", "fp16", "fp8", "fp4"] = "fp8"
    latency_limit_s: float | None = Field(None, gt=0, allow_inf_nan=False)
    source: str = ""


class Scenario(_Strict):
    """A whole study: budget, models, fleet options, traffic, SLO, money, simulation settings."""

    name: str = Field(min_length=1)
    description: str = ""
    seed: int = Field(0, ge=0)
    engine_release: str = Field(
        "latest",
        description="software release every pool assumes unless it says otherwise: latest (each "
        "engine's newest calibrated release: open engines as InferenceX runs them where data "
        "exist), as-published (the tuned MLPerf-era releases) or a month YYYY-MM",
    )
    hardware_files: list[str] = Field(default_factory=list)
    budget: BudgetSpec
    models: list[str] = Field(min_length=1)
    options: list[OptionSpec] = Field(min_length=1)
    traffic: TrafficSpec = TrafficSpec()
    slo: SloSpec
    economics: EconomicsSpec = EconomicsSpec()
    simulation: SimulationSpec = SimulationSpec()
    fleet: FleetSpec = FleetSpec()
    sessions: SessionsSpec | None = None
    images: ImagesSpec | None = None

    @model_validator(mode="after")
    def _budget_or_counts(self) -> Scenario:
        if self.budget.kind == "systems":
            for i, option in enumerate(self.options):
                for j, pool in enumerate(option.pools):
                    if pool.n_systems is None:
                        raise ValueError(
                            f"options[{i}].pools[{j}] has no n_systems and the budget gives neither "
                            "facility_mw nor capex_usd; set budget.facility_mw (or capex_usd) or the "
                            "pool's n_systems"
                        )
        return self

    def catalog(self) -> Catalog:
        """The hardware catalog with this scenario's own files merged in."""
        return load_catalog(*self.hardware_files)

    def dump(self) -> str:
        """The fully resolved scenario (defaults filled) as YAML."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, width=100)


# ---------------------------------------------------------------------------------------------
# Loading, overrides and error messages
# ---------------------------------------------------------------------------------------------


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _model_at(loc: tuple[int | str, ...], root: type[BaseModel]) -> type[BaseModel] | None:
    """The schema class that owns the last key of `loc` (to list its known keys)."""
    cls: Any = root
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = cls.model_fields.get(part) if isinstance(cls, type) and issubclass(cls, BaseModel) else None
        if field is None:
            return None
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        cls = next((a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if cls is None:
            return None
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def validation_message(err: Any, where: str, root: type[BaseModel] | None = None) -> str:
    """One line for a pydantic error of a file validated against `root` (default: `Scenario`):
    where, the field path, the rule and the value given; an unknown key lists the known ones."""
    root = root or Scenario
    loc = tuple(err["loc"])
    path = _loc(loc)
    given = err.get("input")
    if err["type"] == "extra_forbidden":
        owner = _model_at(loc, root)
        known = ", ".join(owner.model_fields) if owner else ""
        return f"{where}: {path}: unknown key (known keys here: {known}). Remove it or fix its spelling."
    if err["type"] == "missing":
        return f"{where}: {path}: required field is missing. Add it."
    msg = str(err["msg"]).removeprefix("Value error, ").replace("Input should be", "must be")
    shown = repr(given) if not isinstance(given, dict | list) else type(given).__name__
    owner = _model_at(loc, root) if loc and isinstance(loc[-1], str) else None
    field = owner.model_fields.get(str(loc[-1])) if owner else None
    hint = f" Expected: {field.description}." if field is not None and field.description else ""
    if isinstance(given, dict) and "got " in msg:  # a check across fields says what it got
        return f"{where}: {path}: {msg}.{hint}"
    return f"{where}: {path}: {msg}; got {shown}.{hint}"


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _override_value(key: str, raw: str) -> Any:
    """The YAML value of `--set key=raw`; text that is not YAML (`name=a: b`) stays text, but a
    duplicate key, a non-finite number or an alias bomb is refused."""
    if not raw.strip():
        return ""
    try:
        return yaml.load(raw, Loader=StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except (yaml.composer.ComposerError, yaml.constructor.ConstructorError) as exc:
        problem = describe(exc).partition("not valid YAML: ")[2]
        raise ScenarioError(f"--set {key}: {problem}.") from None
    except yaml.YAMLError:
        return raw


def apply_override(data: dict[str, Any], override: str) -> None:
    """Apply one `--set key=value` to a file's mapping in place: dotted keys, list indices,
    the value read as strict YAML; a bad key or value is a one-line `ScenarioError`."""
    bad = surrogate(override)
    if bad is not None:
        raise ScenarioError(
            f"--set {override!a}: {bad!a} is not UTF-8 text (an undecodable byte?); "
            "write the value in UTF-8."
        )
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ScenarioError(f"--set {override!r}: expected key=value, e.g. budget.facility_mw=500.")
    key = key.strip()
    value = _override_value(key, raw)
    parts = key.split(".")
    if any(not part for part in parts):
        raise ScenarioError(
            f"--set {key}: a key is field names joined by dots, e.g. options.0.pools.0.tp; this "
            "one has an empty part."
        )
    node: Any = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                span = f"0 to {len(node) - 1}" if node else "it is empty"
                raise ScenarioError(f"--set {key}: '{where}' must index the list ({span}); got {part!r}.")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            parent = ".".join(parts[:depth])
            raise ScenarioError(
                f"--set {key}: '{parent}' is {type(node).__name__} {_shown(node)}, not a mapping or "
                f"list, so it has no field {part!r}. Set '{parent}' itself, or fix the key."
            )


def pool_engine(scenario: Scenario, pool: PoolSpec) -> str:
    """The engine release a pool runs: its engine at the pool's `engine_release`, else the
    scenario's (`perf.efficiency.pick_release`), e.g. trtllm at latest is `trtllm-2025-11`."""
    return pick_release(pool.engine, pool.engine_release or scenario.engine_release)


def _check_ids(scenario: Scenario, where: str) -> None:
    """Hardware ids, model ids, engines and the traffic mix must exist and make sense; say which
    field holds a bad one."""
    try:
        catalog = scenario.catalog()
    except (CatalogError, InputError) as exc:
        raise ScenarioError(f"{where}: hardware_files: {exc}") from None
    if scenario.traffic.mix != "chatgpt":
        try:
            mix_from_spec(scenario.traffic.mix)
        except InputError as exc:
            raise ScenarioError(f"{where}: traffic.mix: {exc}") from None
    for i, model_id in enumerate(scenario.models):
        try:
            load_model(model_id)
        except (CatalogError, InputError) as exc:
            raise ScenarioError(f"{where}: models[{i}]: {exc}") from None
    for i, option in enumerate(scenario.options):
        for j, pool in enumerate(option.pools):
            path = f"options[{i}].pools[{j}]"
            try:
                system = catalog.system(pool.system)
            except CatalogError as exc:
                raise ScenarioError(f"{where}: {path}.system: {exc}") from None
            family = family_of(catalog.device(system.device_id).kind)
            engines = sorted(e for f, e in PRIORS if f == family)
            if pool.engine not in engines:
                raise ScenarioError(
                    f"{where}: {path}.engine: must be one of {', '.join(engines)} for "
                    f"{family} systems like {system.id}; got {pool.engine!r}."
                )
            release_path = f"{path}.engine_release" if pool.engine_release else "engine_release"
            try:
                pool_engine(scenario, pool)
            except CatalogError as exc:
                raise ScenarioError(f"{where}: {release_path}: {exc}") from None
            if pool.weight_streaming and family != "wafer":
                raise ScenarioError(
                    f"{where}: {path}.weight_streaming: applies to wafer-scale systems only; "
                    f"{system.id} is a {family} system. Remove it."
                )
            spec = pool.speculative
            if spec is None:
                continue
            if family == "wafer" and spec.draft_model is None:
                raise ScenarioError(
                    f"{where}: {path}.speculative.draft_model: wafer-scale systems draft with a "
                    "model kept on the wafers; set one, e.g. llama-3.1-8b."
                )
            if family != "wafer" and spec.draft_model is not None:
                raise ScenarioError(
                    f"{where}: {path}.speculative.draft_model: GPU-like systems draft with MTP or "
                    f"EAGLE heads priced by draft_cost; got {spec.draft_model!r}. Remove it."
                )
            if spec.draft_model is not None:
                try:
                    load_model(spec.draft_model)
                except (CatalogError, InputError) as exc:
                    raise ScenarioError(f"{where}: {path}.speculative.draft_model: {exc}") from None


def parse_scenario(
    data: Any,
    *,
    where: str = "scenario",
    overrides: list[str] | tuple[str, ...] = (),
    hardware_files: Sequence[str | os.PathLike[str]] = (),
) -> Scenario:
    """Validate a scenario mapping after applying `key=value` overrides and adding
    `hardware_files` to the scenario's own."""
    if not isinstance(data, dict):
        raise ScenarioError(f"{where}: a scenario must be a YAML mapping; got {type(data).__name__}.")
    data = copy.deepcopy(data)
    for override in overrides:
        apply_override(data, override)
    if hardware_files:
        own = data.get("hardware_files") or []
        if isinstance(own, list):
            data["hardware_files"] = [*own, *(os.fspath(f) for f in hardware_files)]
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(validation_message(exc.errors()[0], where)) from None
    _check_ids(scenario, where)
    return scenario


def default_scenario_text() -> str:
    """The embedded default scenario (the 750 MW question) as YAML text."""
    return resources.files("megawatt").joinpath("data/scenarios/default.yaml").read_text()


def read_input(
    path: str | os.PathLike[str] | None, what: str, default: tuple[str, str], error: type[InputError]
) -> tuple[Any, str]:
    """The YAML data of an input file and its name for messages: `path` read strictly (`what`
    names it in errors, raised as `error`), or the embedded `default` (text, name) when None.
    Relative `hardware_files` of a file are resolved against its folder."""
    if path is None:
        text, where, base = default[0], default[1], None
    else:
        p = Path(path)
        text = read_user_text(p, what, error, limit=MAX_CHARS)
        where, base = str(p), p.parent
    data = load_yaml(text, where, error)
    if base is not None and isinstance(data, dict) and isinstance(data.get("hardware_files"), list):
        data["hardware_files"] = [
            str(base / f) if isinstance(f, str) and not os.path.isabs(f) else f
            for f in data["hardware_files"]
        ]
    return data, where


def load_scenario(
    path: str | os.PathLike[str] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    hardware_files: Sequence[str | os.PathLike[str]] = (),
) -> Scenario:
    """Load and validate a scenario file; `None` loads the embedded default scenario.

    Relative `hardware_files` of the file are resolved against its folder; `hardware_files`
    given here (`run --hardware`) are added to them, relative to the working folder.
    """
    default = (default_scenario_text(), "default scenario")
    data, where = read_input(path, "scenario file", default, ScenarioError)
    return parse_scenario(data, where=where, overrides=overrides, hardware_files=hardware_files)
