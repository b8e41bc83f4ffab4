"""Plan files: a multi-year compute deal and its alternatives as strict YAML, validated with
pydantic into one frozen `Plan` (the horizon, demand per traffic class, a model roadmap,
suppliers and their generations, sites, constraints, a cloud overflow, the deal being judged and
the uncertainty around it). Unknown keys are errors naming the field; every number may say where
it comes from in its object's `sources` (field -> source) or `source`.
"""

from __future__ import annotations

import copy
import math
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from megawatt._files import read_user_text
from megawatt._yaml import MAX_CHARS, load_yaml
from megawatt.errors import CatalogError, InputError, PlanError, ScenarioError
from megawatt.hardware import Catalog, load_catalog
from megawatt.model import load_model
from megawatt.scenario import SloSpec, apply_override, read_input, validation_message
from megawatt.workload import length_distribution

_PERIOD = re.compile(r"^(\d{4})(?:Q([1-4]))?$")


def quarter_of(text: str) -> int:
    """A date as a count of quarters since year 0: `2026Q3` -> 2026 * 4 + 2; `2026` is its Q1.
    Raises `ValueError` (pydantic reports it with the field) for anything else."""
    match = _PERIOD.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"a date is YYYYQn or YYYY, e.g. 2026Q3; got {text!r}")
    return int(match.group(1)) * 4 + int(match.group(2) or 1) - 1


def _date(value: str) -> str:
    quarter_of(value)
    return value.strip()


def _text_date(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Date = Annotated[str, BeforeValidator(_text_date), AfterValidator(_date)]
"""A date as YYYYQn (or YYYY, its first quarter)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _Sourced(_Strict):
    """An object whose figures say where they come from: `source` for all of them, or
    `sources` per field (an `ASSUMED: ...` source marks an assumption)."""

    source: str = Field("", description="where every figure of this object comes from")
    sources: dict[str, str] = Field(
        default_factory=dict, description="field name -> where its figure comes from"
    )

    @model_validator(mode="after")
    def _sources_name_fields(self) -> _Sourced:
        unknown = sorted(set(self.sources) - set(type(self).model_fields) - {"source", "sources"})
        if unknown:
            known = ", ".join(f for f in type(self).model_fields if f not in ("source", "sources"))
            raise ValueError(f"sources must name fields of this object ({known}); got {unknown}")
        return self

    def source_of(self, name: str) -> str:
        """Where the figure of field `name` comes from ('' when unsaid)."""
        return self.sources.get(name) or self.source


class ClassSpec(_Sourced):
    """A traffic class: its share of requests, token lengths (length specs as in a scenario's
    `traffic.mix`), latency targets and daily peak over mean."""

    name: str = Field(min_length=1)
    share: float = Field(gt=0, description="relative share of requests (all classes rescaled to 1)")
    prompt: dict[str, Any] = Field(description="new prompt tokens: a length spec")
    output: dict[str, Any] = Field(description="output tokens: a length spec")
    cached_prefix: dict[str, Any] | None = Field(
        None, description="tokens already in a prefix cache (agents): a length spec"
    )
    slo: SloSpec
    peak_to_mean: float = Field(1.5, ge=1.0, le=20.0, description="peak-hour rate / daily mean")

    @field_validator("prompt", "output", "cached_prefix")
    @classmethod
    def _length(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            try:
                length_distribution(value)
            except InputError as exc:
                raise ValueError(str(exc).rstrip(".")) from None
        return value

    def mix_entry(self) -> dict[str, Any]:
        """The class as one entry of a scenario's `traffic.mix`, alone (share 1)."""
        entry: dict[str, Any] = {
            "name": self.name,
            "share": 1.0,
            "prompt": self.prompt,
            "output": self.output,
        }
        if self.cached_prefix is not None:
            entry["cached_prefix"] = self.cached_prefix
        return entry


class DemandSpec(_Sourced):
    """Requests per day at the start, their growth and the drift of the class mix."""

    prompts_per_day: float = Field(gt=0, le=1e15, description="requests per day at the start")
    growth_per_year: float = Field(
        gt=0, le=100, description="demand multiplies by this each year (compounded per period)"
    )
    mix_drift_per_year: float = Field(
        0.0, ge=0, le=10, description="shares of drift_classes multiply by (1 + this) each year"
    )
    drift_classes: list[str] = Field(default_factory=list, description="classes the mix drifts to")


class RoadmapStep(_Sourced):
    """From `start`, `model` serves `classes` (all classes when unset)."""

    start: Date = Field(description="date the model starts serving, YYYYQn")
    model: str
    classes: list[str] | None = None


class GenerationSpec(_Sourced):
    """What a supplier delivers from `start`: a catalog system, or a future generation modelled
    as that system with `perf_per_watt` times its simulated throughput per MW."""

    name: str | None = Field(None, description="label, e.g. 'Vera Rubin NVL144 (modelled)'")
    system: str = Field(description="catalog system id, e.g. gb300-nvl72")
    engine: str = Field(description="serving engine, e.g. trtllm, sglang, vllm, cerebras")
    engine_release: str | None = Field(None, description="latest, as-published or YYYY-MM")
    start: Date = Field(description="first delivery date of this generation, YYYYQn")
    perf_per_watt: float = Field(
        1.0, gt=0, le=100, description="throughput per MW relative to the simulated system"
    )
    usd_per_it_mw: float | None = Field(
        None, gt=0, description="purchase price per MW of IT load (default: catalog price / power)"
    )

    @property
    def label(self) -> str:
        """The generation's name, or its system id."""
        return self.name or self.system


class SupplierSpec(_Sourced):
    """One supplier: generations over time, when it can deliver, in what blocks and at what
    price. `purchase`: systems bought and placed in the buyer's sites (capex amortised, power
    and site paid); `contract`: capacity hosted by the supplier at a price per facility MW-year
    covering power and site."""

    name: str = Field(min_length=1)
    terms: Literal["purchase", "contract"]
    generations: list[GenerationSpec] = Field(min_length=1)
    first_delivery: Date = Field(description="earliest delivery date, YYYYQn")
    lead_time_quarters: int = Field(0, ge=0, le=40, description="quarters from order to delivery")
    tranche_mw: float = Field(
        gt=0, le=100_000, description="MW per block bought (IT MW; contract: facility MW)"
    )
    max_tranches_per_period: int = Field(ge=0, le=10_000, description="supply cap per period")
    contract_usd_per_mw_year: float | None = Field(
        None, gt=0, description="contract price per facility MW-year (terms: contract)"
    )
    pue: float | None = Field(
        None, ge=1.0, le=3.0, description="contract: the supplier's PUE (facility MW / IT MW)"
    )
    life_years: float | None = Field(
        None, gt=0, le=30, description="purchase: amortisation years (default 4, DEFAULT_LIFE_YEARS)"
    )

    @model_validator(mode="after")
    def _terms(self) -> SupplierSpec:
        if self.terms == "contract" and (self.contract_usd_per_mw_year is None or self.pue is None):
            raise ValueError(
                "terms contract needs contract_usd_per_mw_year (price per facility MW-year) and pue; "
                f"got {self.contract_usd_per_mw_year} and {self.pue}"
            )
        if self.terms == "purchase" and (self.contract_usd_per_mw_year is not None or self.pue is not None):
            raise ValueError(
                "contract_usd_per_mw_year and pue apply to terms contract (purchases use their "
                f"site's PUE); got {self.contract_usd_per_mw_year} and {self.pue}. Remove them or "
                "set terms: contract"
            )
        if self.terms == "contract" and self.life_years is not None:
            raise ValueError(f"life_years applies to terms purchase; got {self.life_years}. Remove it")
        starts = [quarter_of(g.start) for g in self.generations]
        if starts != sorted(starts) or len(set(starts)) < len(starts):
            raise ValueError(
                f"generations must start at increasing dates; got {[g.start for g in self.generations]}"
            )
        return self


DEFAULT_LIFE_YEARS = 4.0
"""Amortisation of purchased systems when a supplier gives none: megawatt.fleet.economics'
it_amortisation_years (an estimate: a 4-year economic life of AI accelerators)."""


class EnergisedStep(_Sourced):
    """From `start`, `mw` of facility power is available at a site (cumulative, not added)."""

    start: Date
    mw: float = Field(ge=0, le=1e6)


class SiteSpec(_Sourced):
    """A site of the buyer for purchased systems: facility power by date, PUE, electricity and
    the facility's own capital cost (amortised)."""

    name: str = Field(min_length=1)
    pue: float = Field(ge=1.0, le=3.0)
    electricity_usd_per_mwh: float = Field(ge=0, le=10_000)
    facility_capex_usd_per_mw: float = Field(15e6, ge=0, le=1e9, description="per facility MW")
    facility_life_years: float = Field(15.0, gt=0, le=60)
    energised: list[EnergisedStep] = Field(min_length=1)

    @model_validator(mode="after")
    def _steps(self) -> SiteSpec:
        starts = [quarter_of(e.start) for e in self.energised]
        if starts != sorted(starts) or len(set(starts)) < len(starts):
            raise ValueError(
                f"energised steps must be at increasing dates; got {[e.start for e in self.energised]}"
            )
        return self


class ConstraintsSpec(_Sourced):
    """Limits on the plan: no supplier above `concentration_cap` of the fleet's IT MW from
    `concentration_from`; capital and contract spending per calendar year."""

    concentration_cap: float = Field(1.0, gt=0, le=1.0)
    concentration_from: Date | None = None
    budget_usd_per_year: dict[int, float] = Field(
        default_factory=dict, description="year -> most spent on systems and contracts"
    )

    @field_validator("budget_usd_per_year")
    @classmethod
    def _positive(cls, value: dict[int, float]) -> dict[int, float]:
        for year, usd in value.items():
            if not (usd >= 0 and math.isfinite(usd)):
                raise ValueError(f"budget of {year} must be a finite amount >= 0; got {usd!r}")
        return value


class TokenPrice(_Sourced):
    """A pay-as-you-go price per million tokens."""

    input_usd_per_m_tokens: float = Field(ge=0, le=1e6)
    output_usd_per_m_tokens: float = Field(ge=0, le=1e6)


class OverflowSpec(_Sourced):
    """Cloud or pay-as-you-go capacity for demand the fleet does not serve, at most `max_share`
    of each class's demand; demand beyond it is unserved, at a penalty per million output
    tokens."""

    max_share: float = Field(ge=0, le=1)
    prices: dict[str, TokenPrice] = Field(description="model id -> price per million tokens")
    cached_input_discount: float = Field(0.0, ge=0, le=1)
    unserved_usd_per_m_tokens: float = Field(ge=0, le=1e6)


class TrancheSpec(_Strict):
    """One tranche of a deal: facility MW delivered at a date."""

    period: Date
    mw: float = Field(gt=0, le=1e6)


class DealSpec(_Sourced):
    """The deal being judged: a supplier (contract or purchase terms), its tranches and terms.
    `take_or_pay`: the deal as announced takes every tranche; `option`: each tranche is the
    buyer's right, not its duty (no premium is modelled). The optimised plan always treats the
    tranches as options (any part of each, in the supplier's blocks)."""

    name: str = Field(min_length=1)
    supplier: SupplierSpec
    terms: Literal["take_or_pay", "option"] = Field(
        "take_or_pay", description="take_or_pay (every tranche paid) or option (each tranche a right)"
    )
    tranches: list[TrancheSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _blocks(self) -> DealSpec:
        block = self.supplier.tranche_mw
        for i, t in enumerate(self.tranches):
            if abs(t.mw / block - round(t.mw / block)) > 1e-9:
                raise ValueError(
                    f"tranches[{i}].mw must be a whole number of the supplier's {block:g} MW blocks; "
                    f"got {t.mw:g}. Make it a multiple or change supplier.tranche_mw"
                )
        quarters = [quarter_of(t.period) for t in self.tranches]
        if len(set(quarters)) < len(quarters):
            raise ValueError(f"tranches must be at different dates; got {[t.period for t in self.tranches]}")
        return self

    @property
    def total_mw(self) -> float:
        """Facility MW over every tranche."""
        return sum(t.mw for t in self.tranches)


class RangeSpec(_Strict):
    """An uncertain input: a triangular distribution from `low` to `high`, most likely `base`
    (the value the deterministic plan uses)."""

    low: float
    base: float
    high: float

    @model_validator(mode="after")
    def _order(self) -> RangeSpec:
        if not self.low <= self.base <= self.high:
            raise ValueError(f"needs low <= base <= high; got {self.low:g}, {self.base:g}, {self.high:g}")
        return self


class UncertaintySpec(_Sourced):
    """What the Monte Carlo draws (a Latin hypercube): demand growth, the mix drift, the
    electricity price (a factor), delivery slips per supplier (quarters) and the performance
    model's own leave-one-out error per hardware (scaled by `model_error_scale`; 0 turns it
    off)."""

    draws: int = Field(200, ge=1, le=10_000)
    demand_growth_per_year: RangeSpec
    mix_drift_per_year: RangeSpec
    electricity_price_factor: RangeSpec
    delivery_slip_quarters: dict[str, RangeSpec] = Field(
        default_factory=dict, description="supplier name -> slip in quarters"
    )
    model_error_scale: float = Field(1.0, ge=0, le=10)

    @field_validator("delivery_slip_quarters")
    @classmethod
    def _slips(cls, value: dict[str, RangeSpec]) -> dict[str, RangeSpec]:
        for name, r in value.items():
            if r.low < 0 or r.high > 40:
                raise ValueError(f"slip of {name} must lie in 0 to 40 quarters; got {r.low:g} to {r.high:g}")
        return value


class CapacityRunSpec(_Strict):
    """How much each capacity run simulates (the settings of `megawatt run`'s simulation)."""

    n_requests: int = Field(1500, ge=100, le=1_000_000)
    rel_tol: float = Field(0.05, gt=0, lt=0.5)


class Plan(_Sourced):
    """A whole plan: horizon, traffic, models, suppliers, sites, constraints, overflow, the deal
    and its uncertainty."""

    name: str = Field(min_length=1)
    description: str = ""
    seed: int = Field(0, ge=0)
    start: Date = Field(description="first period, YYYYQn (YYYY for yearly periods)")
    period: Literal["quarter", "year"] = "quarter"
    n_periods: int = Field(ge=1, le=80)
    orders_from: Date | None = Field(None, description="date the first orders can be placed")
    discount_rate: float = Field(0.08, ge=0, lt=1, description="per year, also the cost of capital")
    engine_release: str = "latest"
    hardware_files: list[str] = Field(default_factory=list)
    classes: list[ClassSpec] = Field(min_length=1)
    demand: DemandSpec
    roadmap: list[RoadmapStep] = Field(min_length=1)
    suppliers: list[SupplierSpec] = Field(default_factory=list)
    sites: list[SiteSpec] = Field(default_factory=list)
    constraints: ConstraintsSpec = ConstraintsSpec()
    overflow: OverflowSpec
    deal: DealSpec | None = None
    uncertainty: UncertaintySpec
    capacity: CapacityRunSpec = CapacityRunSpec()

    @model_validator(mode="after")
    def _consistent(self) -> Plan:
        if self.period == "year" and quarter_of(self.start) % 4:
            raise ValueError(f"yearly periods start in a year's first quarter; got start {self.start!r}")
        names = [c.name for c in self.classes]
        if len(set(names)) < len(names):
            raise ValueError(f"class names must be unique; got {names}")
        for where, listed in [("demand.drift_classes", self.demand.drift_classes)] + [
            (f"roadmap[{i}].classes", step.classes or []) for i, step in enumerate(self.roadmap)
        ]:
            unknown = sorted(set(listed) - set(names))
            if unknown:
                raise ValueError(f"{where} must name classes of the plan ({names}); got {unknown}")
        first = min(quarter_of(s.start) for s in self.roadmap)
        if first > quarter_of(self.start):
            raise ValueError(
                f"the roadmap must name a model from the start ({self.start}); got a first step at "
                f"{min(self.roadmap, key=lambda s: quarter_of(s.start)).start}"
            )
        suppliers = [s.name for s in self.all_suppliers]
        if len(set(suppliers)) < len(suppliers):
            raise ValueError(f"supplier names (the deal's included) must be unique; got {suppliers}")
        unknown = sorted(set(self.uncertainty.delivery_slip_quarters) - set(suppliers))
        if unknown:
            raise ValueError(
                f"uncertainty.delivery_slip_quarters must name suppliers of the plan ({suppliers}); "
                f"got {unknown}"
            )
        missing = sorted({s.model for s in self.roadmap} - set(self.overflow.prices))
        if missing:
            raise ValueError(f"overflow.prices needs a price for every roadmap model; got none for {missing}")
        if self.deal is not None:
            self._tranches_in_reach(self.deal)
        if any(s.terms == "purchase" for s in self.all_suppliers) and not self.sites:
            raise ValueError(
                "purchased systems need a site; got suppliers with terms purchase and no sites. Add "
                "sites, or make every supplier a contract"
            )
        return self

    def _tranches_in_reach(self, deal: DealSpec) -> None:
        """Every tranche falls in the horizon, once the deal's supplier can deliver."""
        sup = deal.supplier
        orders = quarter_of(self.orders_from or self.start)
        first = max(
            quarter_of(sup.first_delivery),
            orders + sup.lead_time_quarters,
            quarter_of(sup.generations[0].start),
        )
        end = quarter_of(self.start) + self.n_periods * self.quarters_per_period
        for i, t in enumerate(deal.tranches):
            if not first <= quarter_of(t.period) < end:
                raise ValueError(
                    f"deal.tranches[{i}].period must fall between the supplier's first possible "
                    f"delivery ({first // 4}Q{first % 4 + 1}: first_delivery, orders_from plus "
                    f"lead_time_quarters, its first generation) and the horizon's end; got {t.period}"
                )

    @property
    def all_suppliers(self) -> list[SupplierSpec]:
        """The suppliers, the deal's last."""
        return [*self.suppliers, *([self.deal.supplier] if self.deal else [])]

    @property
    def quarters_per_period(self) -> int:
        """3 months or 12."""
        return 1 if self.period == "quarter" else 4

    @property
    def period_years(self) -> float:
        """A period's length in years."""
        return self.quarters_per_period / 4.0

    def period_index(self, date: str) -> int:
        """The period a date falls in (negative before the start, n_periods or more after)."""
        return (quarter_of(date) - quarter_of(self.start)) // self.quarters_per_period

    @property
    def period_labels(self) -> tuple[str, ...]:
        """`2026Q1`... or `2026`..."""
        q0 = quarter_of(self.start)
        out = []
        for t in range(self.n_periods):
            q = q0 + t * self.quarters_per_period
            out.append(f"{q // 4}Q{q % 4 + 1}" if self.period == "quarter" else f"{q // 4}")
        return tuple(out)

    def catalog(self) -> Catalog:
        """The hardware catalog with this plan's own files merged in."""
        return load_catalog(*self.hardware_files)

    def dump(self) -> str:
        """The fully resolved plan (defaults filled) as YAML."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, width=100)


# ---------------------------------------------------------------------------------------------
# Sources of the figures
# ---------------------------------------------------------------------------------------------

STRUCTURAL = frozenset({"seed", "n_periods", "draws", "n_requests", "rel_tol", "model_error_scale"})
"""Numeric fields that set how the planner works, not what the world is: they need no source."""


@dataclass(frozen=True)
class Figure:
    """One number of a plan, where it sits and where it comes from ('' when unsaid)."""

    path: str
    value: Any
    source: str

    @property
    def assumed(self) -> bool:
        """True when its source marks it as an assumption."""
        return self.source.upper().startswith("ASSUMED")


def _numbers(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    if isinstance(value, dict):
        return any(_numbers(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_numbers(v) for v in value)
    return False


def figures(obj: BaseModel, path: str = "", inherited: str = "") -> list[Figure]:
    """Every input figure of a plan (numbers, and objects holding numbers such as length
    specs and ranges) with its source: the field's `sources` entry, else the object's `source`,
    else the source of the field that holds the object. Structural settings are left out."""
    out: list[Figure] = []
    own = obj.source if isinstance(obj, _Sourced) else ""
    for name in type(obj).model_fields:
        if name in ("source", "sources") or name in STRUCTURAL:
            continue
        value = getattr(obj, name)
        where = f"{path}.{name}" if path else name
        source = (obj.source_of(name) if isinstance(obj, _Sourced) else "") or own or inherited
        items = list(enumerate(value)) if isinstance(value, list) else None
        if isinstance(value, BaseModel):
            out += figures(value, where, source)
        elif items is not None and items and all(isinstance(v, BaseModel) for _, v in items):
            for i, v in items:
                out += figures(v, f"{where}[{i}]", source)
        elif isinstance(value, dict) and value and all(isinstance(v, BaseModel) for v in value.values()):
            for key, v in value.items():
                out += figures(v, f"{where}.{key}", source)
        elif _numbers(value):
            out.append(Figure(where, value, source))
    return out


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def _check_ids(plan: Plan, where: str) -> None:
    """Systems, engines and models must exist; say which field holds a bad one."""
    from megawatt.scenario import PoolSpec, parse_scenario

    try:
        catalog = plan.catalog()
    except (CatalogError, InputError) as exc:
        raise PlanError(f"{where}: hardware_files: {exc}") from None
    for i, step in enumerate(plan.roadmap):
        try:
            load_model(step.model)
        except (CatalogError, InputError) as exc:
            raise PlanError(f"{where}: roadmap[{i}].model: {exc}") from None
    for supplier, path in supplier_paths(plan):
        for j, gen in enumerate(supplier.generations):
            field = f"{path}.generations[{j}]"
            try:
                catalog.system(gen.system)
            except CatalogError as exc:
                raise PlanError(f"{where}: {field}.system: {exc}") from None
            pool = PoolSpec(system=gen.system, engine=gen.engine, engine_release=gen.engine_release)
            probe = {
                "name": "check",
                "engine_release": plan.engine_release,
                "hardware_files": list(plan.hardware_files),
                "budget": {"facility_mw": 1},
                "models": [plan.roadmap[0].model],
                "options": [{"name": supplier.name, "pools": [pool.model_dump(exclude_defaults=True)]}],
                "slo": {"ttft_p99_s": 1, "tpot_p99_s": 1},
            }
            try:
                parse_scenario(probe, where=field)
            except InputError as exc:
                raise PlanError(f"{where}: {str(exc).replace('options[0].pools[0].', '')}") from None


def supplier_paths(plan: Plan) -> list[tuple[SupplierSpec, str]]:
    """Every supplier with its field path in the plan (`suppliers[i]`, `deal.supplier`)."""
    out = [(s, f"suppliers[{i}]") for i, s in enumerate(plan.suppliers)]
    if plan.deal is not None:
        out.append((plan.deal.supplier, "deal.supplier"))
    return out


def parse_plan(data: Any, *, where: str = "plan", overrides: list[str] | tuple[str, ...] = ()) -> Plan:
    """Validate a plan mapping after applying `key=value` overrides."""
    if not isinstance(data, dict):
        raise PlanError(f"{where}: a plan must be a YAML mapping; got {type(data).__name__}.")
    data = copy.deepcopy(data)
    for override in overrides:
        try:
            apply_override(data, override)
        except ScenarioError as exc:
            raise PlanError(str(exc)) from None
    try:
        plan = Plan.model_validate(data)
    except ValidationError as exc:
        raise PlanError(validation_message(exc.errors()[0], where, Plan)) from None
    _check_ids(plan, where)
    return plan


def default_plan_text() -> str:
    """The embedded default plan (the OpenAI-Cerebras deal, FACTS.md C.2) as YAML text."""
    return resources.files("megawatt").joinpath("data/plans/default.yaml").read_text()


def load_plan(
    path: str | os.PathLike[str] | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> Plan:
    """Load and validate a plan file; `None` loads the embedded default plan. Relative
    `hardware_files` are resolved against the file's folder."""
    data, where = read_input(path, "plan file", (default_plan_text(), "default plan"), PlanError)
    return parse_plan(data, where=where, overrides=overrides)


def load_deal(path: str | os.PathLike[str]) -> DealSpec:
    """Load a deal file (the `deal:` section of a plan, on its own) for `megawatt plan
    --compare`."""
    p = Path(path)
    where = str(p)
    data = load_yaml(read_user_text(p, "deal file", PlanError, limit=MAX_CHARS), where, PlanError)
    if not isinstance(data, dict):
        raise PlanError(f"{where}: a deal must be a YAML mapping; got {type(data).__name__}.")
    try:
        return DealSpec.model_validate(data)
    except ValidationError as exc:
        raise PlanError(validation_message(exc.errors()[0], where, DealSpec)) from None


def with_deal(plan: Plan, deal: DealSpec, where: str = "--compare") -> Plan:
    """The plan judging another deal (the same checks as a plan file's own)."""
    data = plan.model_dump(mode="json")
    data["deal"] = deal.model_dump(mode="json")
    return parse_plan(data, where=f"{plan.name} with {where}")
