"""Run a scenario end to end: for every model and fleet option, choose each pool's deployment,
find a replica's capacity at the SLO, size the pools from the budget and account power and money.

Pool evaluations are independent and seeded on their own, so they run in parallel processes and
the same seed gives the same numbers however they are scheduled.

Before simulating, a study estimates what it will simulate (`estimate_cost`: requests, memory,
wall time) and refuses, with the estimate, a study whose memory would pass a limit; it checks
again, with the pools known, before simulating the fleets at demand.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import as_completed
from dataclasses import dataclass

import numpy as np

from megawatt.errors import FitError, InputError, ScenarioError
from megawatt.fleet import (
    SOURCES,
    Economics,
    OptionResult,
    PoolResult,
    PoolSize,
    PowerBudget,
    it_power_for_capex,
    option_result,
    size_pool,
)
from megawatt.fleet.demand import pool_mix, pool_split, simulate_demand, simulated_requests
from megawatt.fleet.image import ImageFleet, image_fleet
from megawatt.fleet.power import LOAD_SHARES, power_curve
from megawatt.fleet.sessions import (
    PriceTier,
    SessionCapacity,
    SessionOutcome,
    SessionsAtDemand,
    session_capacity,
    sessions_at_demand,
)
from megawatt.hardware import Catalog, System
from megawatt.interrupts import worker_pool
from megawatt.model import ModelSpec, load_model
from megawatt.perf import Deployment, plan_memory
from megawatt.perf.speculative import Speculation
from megawatt.plan import Choice, PoolSettings, candidates, choose
from megawatt.scenario import OptionSpec, PoolSpec, Scenario, pool_engine
from megawatt.serving import ReplicaConfig, Slo, single_user
from megawatt.units import GB, MW, SECONDS_PER_DAY
from megawatt.workload import Mix, Poisson, Requests, chatgpt_mix, mix_from_spec
from megawatt.workload.sessions import SessionClass, default_session_classes

Progress = Callable[[str, int, int, str], None]
"""`progress(phase, done, total, label)`: phase `plans` counts pools evaluated (deployment and
capacity at the SLO), phase `demand` counts requests simulated at demand."""

SEARCH_REQUESTS_PER_S = 35_000.0
"""Requests a capacity search simulates per wall-second and process (the compiled replica step
by step, near capacity): the default scenario's searches ran 2.57 M requests in 72 s on one
core of a 2-core machine, from 14k (Llama-3.3-70B on H200) to 130k per second (gpt-oss-120b);
bench/serving_speed.py gives 250k-420k on lighter workloads."""
FLEET_REQUESTS_PER_S = {"exact": 300_000.0, "sampled": 60_000.0}
"""Requests a fleet run at demand simulates per wall-second, by mode: exact mode's batches of
replicas with closed-form decode stretches (bench/fleet_scale.py --mode exact), sampled mode's
replicas one by one, step by step (a 400-replica pool: 65k)."""
BYTES_PER_REQUEST_RUNNING = 800.0
"""Peak memory per request of a run in progress (requests, the kernel's arrays, the results a
capacity search keeps): measured 814 bytes for a 200k-request capacity search, 686 for a
3M-request sampled pool."""
BYTES_PER_REQUEST_KEPT = 150.0
"""Memory per request of a finished run kept in the result (its per-request table and ITL
samples): each pool's capacity run, every request of a sampled fleet run."""
STREAM_BYTES = 100e6
"""Exact mode's batch in flight (`fleet.pools.BATCH_REQUESTS` requests; bench/fleet_scale.py
--mode exact: 58 MB above the process for 3M requests)."""
MEMORY_LIMIT_BYTES = 4 * GB
"""The default memory limit of a study (raise it with `run_study(memory_limit_bytes=)` or
`megawatt run --max-memory-gb`)."""
LONG_RUN_S = 300.0
"""A study estimated to take longer than this is worth a note before it starts."""
_EVALUATIONS_PER_PLAN = 10  # capacity runs per plan and probes (the default scenario: ~40 a pool)
_PLANS_SEARCHED = 4  # plans a search evaluates (tp widths that fit, a token budget, wafer counts)


@dataclass(frozen=True)
class Cost:
    """What a study simulates, estimated before it runs: requests (capacity searches and fleet
    runs at demand), peak memory (bytes, all processes) and wall time (s, at
    SEARCH_REQUESTS_PER_S per process and FLEET_REQUESTS_PER_S). A guide to refuse what cannot
    fit, not a prediction; `at_least` marks a lower bound (sampled fleets before their pools
    are sized)."""

    capacity_requests: float
    demand_requests: float
    memory_bytes: float
    wall_s: float
    at_least: bool = False

    @property
    def requests(self) -> float:
        """Simulated requests, all runs."""
        return self.capacity_requests + self.demand_requests

    def describe(self) -> str:
        """One line: requests, memory and time."""
        about = "at least" if self.at_least else "about"
        gb = self.memory_bytes / GB
        memory = f"{gb:,.0f}" if gb >= 100 else f"{gb:.2g}"
        return (
            f"{about} {_count(self.requests)} requests (capacity searches "
            f"{_count(self.capacity_requests)}, fleets at demand {_count(self.demand_requests)}), "
            f"{memory} GB of memory, {_duration(self.wall_s)}"
        )


def _count(n: float) -> str:
    for scale, unit in ((1e9, " B"), (1e6, " M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.0f}"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _processes(workers: int | None, tasks: int) -> int:
    n = workers if workers is not None else (os.cpu_count() or 1)
    return max(1, min(n, tasks))


def _peak_rate(scenario: Scenario) -> float:
    """The traffic's peak-hour demand, requests per second."""
    return scenario.traffic.demand_prompts_per_day / SECONDS_PER_DAY * scenario.traffic.peak_to_mean


def _demand_bytes(fleet_requests: float, exact: bool) -> float:
    return STREAM_BYTES if exact else fleet_requests * BYTES_PER_REQUEST_RUNNING


def estimate_cost(scenario: Scenario, *, workers: int | None = None) -> Cost:
    """What `run_study` will simulate, from the scenario alone (no simulation). Capacity
    searches: n_requests per run, a few runs per plan, a few plans per pool unless its plan is
    fixed. Fleets at demand: the peak rate over `fleet.duration_s` for each option and model,
    all of it in exact mode (streamed: memory bounded), at least the share of the most sampled
    pool in sampled mode (k over the most replicas the pool's budget could buy)."""
    n = scenario.simulation.n_requests
    searches = 0.0
    pools_seen: set[tuple[int, str]] = set()
    for mi in range(len(scenario.models)):
        for option in scenario.options:
            for pool in option.pools:
                if _pool_key(mi, pool) in pools_seen:
                    continue
                pools_seen.add(_pool_key(mi, pool))
                fixed = pool.tp is not None or pool.pp is not None or pool.weight_streaming
                searches += 2 if fixed else _PLANS_SEARCHED
    capacity_requests = searches * _EVALUATIONS_PER_PLAN * n
    procs = _processes(workers, len(pools_seen))
    kept = len(pools_seen) * n * BYTES_PER_REQUEST_KEPT
    capacity_bytes = procs * n * BYTES_PER_REQUEST_RUNNING + kept
    fleet = scenario.fleet
    demand_requests = 0.0
    at_least = False
    if fleet.simulate_demand:
        per_option = _peak_rate(scenario) * fleet.duration_s
        catalog = scenario.catalog()
        economics = Economics(**scenario.economics.model_dump())
        for option in scenario.options:
            share = 1.0
            if fleet.mode == "sampled":
                at_least = True
                share = min(
                    _sampled_share_at_least(scenario, catalog.system(pool.system), economics, pool, fleet.k)
                    for pool in option.pools
                )
            demand_requests += per_option * share * len(scenario.models)
    exact = fleet.mode == "exact"
    memory = max(capacity_bytes, kept + _demand_bytes(demand_requests, exact))
    fleet_speed = FLEET_REQUESTS_PER_S[fleet.mode]
    wall = capacity_requests / (SEARCH_REQUESTS_PER_S * procs) + demand_requests / fleet_speed
    return Cost(capacity_requests, demand_requests, memory, wall, at_least and not exact)


def _sampled_share_at_least(
    scenario: Scenario, system: System, economics: Economics, pool: PoolSpec, k: int
) -> float:
    """The least share of a pool's traffic sampled mode simulates: k over the most replicas the
    pool could have (one device each); 0 when the budget buys none (the study says why)."""
    try:
        most = _pool_size(scenario, system, economics, pool, 1, "").n_replicas
    except InputError:
        return 0.0
    return min(k, most) / most


def check_memory(cost: Cost, limit_bytes: float | None, what: str) -> None:
    """Refuse, with the estimate, a study whose memory would pass `limit_bytes` (None: none)."""
    if limit_bytes is None or cost.memory_bytes <= limit_bytes:
        return
    need = math.ceil(cost.memory_bytes / GB)
    raise InputError(
        f"{what} would simulate {cost.describe()}; the memory limit is {limit_bytes / GB:g} GB. "
        "Lower simulation.n_requests, fleet.duration_s or fleet.k, use fleet.mode=exact (streamed), "
        f"or raise the limit (--max-memory-gb {need})."
    )


@dataclass(frozen=True)
class Assumption:
    """A number the result rests on, with where it comes from."""

    name: str
    value: str
    source: str


@dataclass(frozen=True)
class StudyResult:
    """Every (option, model) answer of a scenario, plus the assumptions behind them."""

    scenario: Scenario
    options: tuple[OptionResult, ...]
    assumptions: tuple[Assumption, ...]
    wall_s: float
    images: ImageFleet | None = None


def traffic_mix(scenario: Scenario, model: ModelSpec) -> Mix:
    """The scenario's request mix, clipped to the model's context window."""
    if scenario.traffic.mix == "chatgpt":
        return chatgpt_mix(model.max_context_tokens)
    return mix_from_spec(scenario.traffic.mix)


def workload(scenario: Scenario, model_index: int, model: ModelSpec) -> Requests:
    """The requests one capacity search replays for a model: `n_requests` from the mix with
    unit-rate Poisson arrivals (scaled by 1/lambda in the search). Seeded by (seed, model)."""
    rng = np.random.default_rng([scenario.seed, model_index])
    return traffic_mix(scenario, model).sample(rng, scenario.simulation.n_requests, Poisson(1.0))


def _settings(pool: PoolSpec, scenario: Scenario) -> PoolSettings:
    spec = pool.speculative
    return PoolSettings(
        engine=pool_engine(scenario, pool),
        weight_dtype=pool.weight_dtype,
        kv_dtype=pool.kv_dtype,
        scheduler=pool.scheduler,
        tp=pool.tp,
        pp=pool.pp,
        max_num_seqs=pool.max_num_seqs,
        max_num_batched_tokens=pool.max_num_batched_tokens,
        weight_streaming=pool.weight_streaming,
        ep=pool.ep,
        attention_dp=pool.attention_dp,
        speculation=None if spec is None else Speculation(
            spec.draft_tokens, spec.acceptance, spec.draft_cost
        ),
        draft_model=None if spec is None or spec.draft_model is None else load_model(
            spec.draft_model
        ),
    )


@dataclass(frozen=True)
class _Task:
    scenario: Scenario
    model_index: int
    pool: PoolSpec


@dataclass(frozen=True)
class _Evaluated:
    choice: Choice
    single_tokens_per_s: float
    single_ttft_s: float
    sessions: tuple[SessionCapacity, ...] = ()


def _evaluate(task: _Task) -> _Evaluated:
    """Choose a pool's deployment for a model and measure its capacity and single-user speed."""
    sc = task.scenario
    catalog = sc.catalog()
    model = load_model(sc.models[task.model_index])
    system = catalog.system(task.pool.system)
    device = catalog.device(system.device_id)
    requests = workload(sc, task.model_index, model)
    slo = Slo(sc.slo.ttft_p99_s, sc.slo.tpot_p99_s)
    choice = choose(
        model,
        system,
        device,
        _settings(task.pool, sc),
        requests,
        np.asarray(requests.arrival_s),
        slo,
        rel_tol=sc.simulation.rel_tol,
    )
    # Single-user speed on chat-like requests: the first few of the most common class.
    chat = np.flatnonzero(requests.class_id == np.bincount(requests.class_id).argmax())[:8]
    solo = single_user(ReplicaConfig.of(choice.deployment, task.pool.scheduler), requests.subset(chat))
    decode_s = solo.finish_s - solo.first_token_s
    tokens = solo.output_tokens - 1
    ok = tokens > 0
    speed = float(tokens[ok].sum() / decode_s[ok].sum()) if ok.any() and decode_s[ok].sum() > 0 else math.nan
    return _Evaluated(choice, speed, float(np.median(solo.ttft_s)), _sessions(task, model, choice, slo))


def session_classes(scenario: Scenario) -> tuple[SessionClass, ...]:
    """The scenario's session classes (`sessions.classes`, from the sourced defaults)."""
    spec = scenario.sessions
    if spec is None:
        return ()
    known = {c.name: c for c in default_session_classes()}
    return tuple(known[name] for name in spec.classes)


def sessions_model_index(scenario: Scenario) -> int | None:
    """The index of the model sessions run on (None: no sessions)."""
    spec = scenario.sessions
    if spec is None:
        return None
    return scenario.models.index(spec.model) if spec.model is not None else 0


def _sessions(task: _Task, model: ModelSpec, choice: Choice, slo: Slo) -> tuple[SessionCapacity, ...]:
    """The pool's session capacity for each session class, on the model sessions run on."""
    sc = task.scenario
    spec = sc.sessions
    if spec is None or task.model_index != sessions_model_index(sc):
        return ()
    cfg = ReplicaConfig.of(choice.deployment, task.pool.scheduler)
    return tuple(
        session_capacity(
            cfg, cls, slo, max_context_tokens=model.max_context_tokens,
            seed=(sc.seed, task.model_index, k, 7), n_requests=spec.n_requests,
            max_requests=spec.max_requests, rel_tol=sc.simulation.rel_tol,
        )
        for k, cls in enumerate(session_classes(sc))
    )


def _size(scenario: Scenario, pool: PoolSpec, dep: Deployment, field: str) -> PoolSize:
    """The pool's whole systems and replicas of `dep` under the scenario's budget."""
    economics = Economics(**scenario.economics.model_dump())
    return _pool_size(scenario, dep.system, economics, pool, dep.n_devices, field)


def _holds(dep: Deployment, tokens: int) -> None:
    plan = plan_memory(dep)
    if plan.sequence_kv_bytes(tokens) > plan.kv_bytes:
        raise FitError(
            f"the longest request of the workload ({tokens:,} tokens) does not fit in the KV "
            f"cache of {dep.label} ({plan.kv_bytes / 1e9:,.2f} GB); give more devices (tp, pp), "
            "kv_dtype fp8, or cap the request lengths."
        )


def check_plans(scenario: Scenario) -> None:
    """Refuse, before any simulation, a scenario with a pool that cannot serve one of its models:
    a request longer than the model's context, a stated plan that is not valid (tp must divide
    the attention heads, fit a scale-up domain, ...) or does not hold the longest request, no
    plan that holds the weights and the longest request, or a budget that buys no replica even
    of the smallest plan. Raises `ScenarioError` naming the field."""
    catalog = scenario.catalog()
    _check_sessions_and_images(scenario, catalog)
    for mi, model_id in enumerate(scenario.models):
        model = load_model(model_id)
        try:
            requests = workload(scenario, mi, model)
        except InputError as exc:
            raise ScenarioError(f"scenario: traffic.mix for models[{mi}] ({model.id}): {exc}") from None
        longest = int((requests.prompt_tokens + requests.output_tokens).max()) if len(requests) else 0
        if 0 < model.max_context_tokens < longest:
            raise ScenarioError(
                f"scenario: traffic.mix: a request of {longest:,} tokens (prompt and output) is "
                f"longer than the {model.max_context_tokens:,}-token context of models[{mi}] "
                f"({model.id}); cap the lengths with max_tokens."
            )
        for oi, option in enumerate(scenario.options):
            for pj, pool in enumerate(option.pools):
                field = f"options[{oi}].pools[{pj}]"
                system = catalog.system(pool.system)
                try:
                    deps = candidates(
                        model, system, catalog.device(system.device_id), _settings(pool, scenario),
                        longest,
                    )
                    _size(scenario, pool, deps[0], field)
                    if pool.tp or pool.pp or pool.weight_streaming:  # a stated plan: not searched
                        _holds(deps[0], longest)
                except (FitError, InputError) as exc:
                    raise ScenarioError(
                        f"scenario: {field} ({pool.system}, option {option.name!r}) cannot serve "
                        f"models[{mi}] ({model.id}): {exc}"
                    ) from None


def _check_sessions_and_images(scenario: Scenario, catalog: Catalog) -> None:
    """Refuse unknown session classes, a sessions model not among the models, and an image
    system or model that cannot serve images."""
    spec = scenario.sessions
    if spec is not None:
        known = [c.name for c in default_session_classes()]
        for i, name in enumerate(spec.classes):
            if name not in known:
                raise ScenarioError(
                    f"scenario: sessions.classes[{i}]: unknown session class {name!r}; use one of "
                    f"{', '.join(known)}."
                )
        if spec.model is not None and spec.model not in scenario.models:
            raise ScenarioError(
                f"scenario: sessions.model: {spec.model!r} is not one of models "
                f"({', '.join(scenario.models)}); name one of them."
            )
    if scenario.images is not None:
        try:
            _image_fleet(scenario, catalog)
        except (FitError, InputError) as exc:
            raise ScenarioError(f"scenario: images: {exc}") from None


def _image_fleet(scenario: Scenario, catalog: Catalog) -> ImageFleet | None:
    """The image fleet of the scenario's `images` (None without one)."""
    spec = scenario.images
    if spec is None:
        return None
    try:
        system = catalog.system(spec.system)
    except Exception as exc:
        raise InputError(f"system: {exc}") from None
    fleet = image_fleet(
        system, spec.model, images_per_day=spec.images_per_day, peak_to_mean=spec.peak_to_mean,
        dtype=spec.dtype, latency_limit_s=spec.latency_limit_s,
        economics=Economics(**scenario.economics.model_dump()), pue=scenario.budget.pue,
    )
    budget = scenario.budget
    if budget.facility_mw and fleet.it_peak_w * budget.pue >= budget.facility_mw * MW:
        raise InputError(
            f"images_per_day {spec.images_per_day:g} needs {fleet.n_systems} {system.id} systems "
            f"({fleet.it_peak_w * budget.pue / MW:.1f} MW), the whole budget of {budget.facility_mw} "
            "MW; lower images_per_day or raise budget.facility_mw."
        )
    return fleet


def _pool_key(model_index: int, pool: PoolSpec) -> tuple[int, str]:
    body = pool.model_dump(exclude={"power_share"})
    return model_index, repr(sorted(body.items()))


def assumptions(scenario: Scenario, catalog: Catalog) -> tuple[Assumption, ...]:
    """The stated assumptions of a study, each with its source."""
    econ = scenario.economics
    out = [
        Assumption(
            "budget", scenario.budget.describe(), "scenario budget (the default: FACTS.md C.2, up to 750 MW)"
        ),
        Assumption("PUE", f"{scenario.budget.pue:g}", SOURCES["pue"]),
        Assumption(
            "SLO",
            f"p99 TTFT <= {scenario.slo.ttft_p99_s:g} s, p99 TPOT <= {scenario.slo.tpot_p99_s * 1e3:g} ms",
            "scenario slo (assumption)",
        ),
        Assumption(
            "traffic",
            "ChatGPT-like mix (FACTS.md B.7)"
            if scenario.traffic.mix == "chatgpt"
            else "user-defined classes",
            "scenario traffic.mix",
        ),
        Assumption(
            "peak / mean load",
            f"{scenario.traffic.peak_to_mean:g}",
            "FACTS.md A.2, A.5: conversation traffic 1.5-1.9",
        ),
    ]
    if econ.contract_usd_per_mw_year is not None:
        out.append(
            Assumption(
                "contract price",
                f"${econ.contract_usd_per_mw_year / 1e6:.2f}M per MW-year",
                SOURCES["contract_usd_per_mw_year"],
            )
        )
    else:
        out += [
            Assumption(
                "electricity",
                f"${econ.electricity_usd_per_mwh:g}/MWh",
                SOURCES["electricity_usd_per_mwh"],
            ),
            Assumption(
                "facility capex",
                f"${econ.facility_capex_usd_per_mw / 1e6:g}M per IT MW",
                SOURCES["facility_capex_usd_per_mw"],
            ),
            Assumption(
                "IT amortisation",
                f"{econ.it_amortisation_years:g} years",
                SOURCES["it_amortisation_years"],
            ),
            Assumption(
                "facility amortisation",
                f"{econ.facility_amortisation_years:g} years",
                SOURCES["facility_amortisation_years"],
            ),
            Assumption("cost of capital", f"{econ.cost_of_capital:.0%}", SOURCES["cost_of_capital"]),
        ]
    seen: set[str] = set()
    for option in scenario.options:
        for pool in option.pools:
            if pool.system in seen:
                continue
            seen.add(pool.system)
            s = catalog.system(pool.system)
            out.append(
                Assumption(
                    f"{s.id} power",
                    f"{s.power_w / 1e3:g} kW peak, {s.idle_power_w / 1e3:g} kW idle",
                    f"{s.sources.get('power_w', '')}; idle: {s.sources.get('idle_power_w', '')}",
                )
            )
            curve = power_curve(s, catalog.device(s.device_id))
            if curve.fitted:  # prior curves are the linear idle-to-peak line stated above
                kw = " / ".join(f"{w / 1e3:.3g}" for w in curve.points_w())
                shares = "/".join(f"{u:.0%}" for u in LOAD_SHARES)
                out.append(
                    Assumption(f"{s.id} power against load", f"{kw} kW at {shares} load", curve.source)
                )
            out.append(
                Assumption(
                    f"{s.id} price",
                    f"${s.price_usd / 1e6:.3g}M per system",
                    s.sources.get("price_usd", "estimate"),
                )
            )
    return tuple(out)


def _pool_size(
    scenario: Scenario,
    system: System,
    economics: Economics,
    pool: PoolSpec,
    n_devices: int,
    field: str,
    images_it_w: float = 0.0,
) -> PoolSize:
    """The systems and replicas of `n_devices` devices a pool's budget buys (or its n_systems)."""
    if pool.n_systems is not None:
        return size_pool(0.0, system, n_devices, field=f"{field}.n_systems", n_systems=pool.n_systems)
    spec = scenario.budget
    if spec.capex_usd is not None:
        share_w = it_power_for_capex(spec.capex_usd, system, economics.facility_capex_usd_per_mw)
    else:
        share_w = PowerBudget(spec.facility_mw * MW, spec.pue).it_w if spec.facility_mw else 0.0
        share_w = max(share_w - images_it_w, 0.0)  # images draw from the same megawatts
    return size_pool(share_w * pool.power_share, system, n_devices, field=f"{field}.power_share")


def run_study(
    scenario: Scenario,
    *,
    progress: Progress | None = None,
    workers: int | None = None,
    memory_limit_bytes: float | None = MEMORY_LIMIT_BYTES,
) -> StudyResult:
    """Answer a scenario: every option for every model. `workers` processes evaluate pools in
    parallel (default: the CPU count; 1 runs in this process). Raises `InputError` before
    simulating when the estimated memory (`estimate_cost`) passes `memory_limit_bytes` (None:
    no limit)."""
    start = time.perf_counter()
    check_plans(scenario)
    check_memory(estimate_cost(scenario, workers=workers), memory_limit_bytes, scenario.name)
    catalog = scenario.catalog()
    economics = Economics(**scenario.economics.model_dump())
    models = [load_model(m) for m in scenario.models]
    tasks: dict[tuple[int, str], _Task] = {}
    for mi in range(len(models)):
        for option in scenario.options:
            for pool in option.pools:
                tasks.setdefault(_pool_key(mi, pool), _Task(scenario, mi, pool))
    keys = list(tasks)
    total = len(keys)
    results: dict[tuple[int, str], _Evaluated] = {}
    n_workers = workers if workers is not None else (os.cpu_count() or 1)
    if progress:
        progress("plans", 0, total, "choosing deployments")
    if n_workers <= 1 or total == 1:
        for k in keys:
            results[k] = _evaluate(tasks[k])
            if progress:
                progress("plans", len(results), total, _label(tasks[k], models))
    else:
        with worker_pool(min(n_workers, total)) as pool_exec:
            futures = {pool_exec.submit(_evaluate, tasks[k]): k for k in keys}
            for fut in as_completed(futures):
                k = futures[fut]
                results[k] = fut.result()
                if progress:
                    progress("plans", len(results), total, _label(tasks[k], models))
    load_fraction = 1.0 / scenario.traffic.peak_to_mean
    images = _image_fleet(scenario, catalog)
    images_w = images.it_peak_w if images is not None else 0.0
    options: list[OptionResult] = []
    for mi, model in enumerate(models):
        for oi, option in enumerate(scenario.options):
            pools: list[PoolResult] = []
            for pj, pool in enumerate(option.pools):
                ev = results[_pool_key(mi, pool)]
                dep = ev.choice.deployment
                system = catalog.system(pool.system)
                field = f"options[{oi}].pools[{pj}]"
                size = _pool_size(scenario, system, economics, pool, dep.n_devices, field, images_w)
                pools.append(
                    PoolResult(
                        pool.system,
                        system,
                        dep,
                        plan_memory(dep),
                        size,
                        ev.choice.capacity,
                        ev.single_tokens_per_s,
                        ev.single_ttft_s,
                        ev.choice.scores,
                        ev.sessions,
                    )
                )
            result = option_result(
                option.name, model.id, pools, economics, scenario.budget.pue, load_fraction
            )
            options.append(dataclasses.replace(result, sessions=_outcomes(scenario, result)))
    if scenario.fleet.simulate_demand:
        options = _at_demand(scenario, models, options, economics, progress, memory_limit_bytes)
    return StudyResult(
        scenario, tuple(options), assumptions(scenario, catalog), time.perf_counter() - start, images
    )


def price_tiers(scenario: Scenario) -> tuple[PriceTier, ...]:
    """The scenario's price tiers for sessions."""
    spec = scenario.sessions
    return tuple(PriceTier(**t.model_dump()) for t in spec.tiers) if spec is not None else ()


def _outcomes(scenario: Scenario, option: OptionResult) -> tuple[SessionOutcome, ...]:
    """Each session class served by the pool its latency class routes to (see `fleet.sessions`)."""
    spec = scenario.sessions
    if spec is None:
        return ()
    return option.session_outcomes(price_tiers(scenario), spec.usd_per_wait_hour)


def _at_demand(
    scenario: Scenario,
    models: list[ModelSpec],
    options: list[OptionResult],
    economics: Economics,
    progress: Progress | None,
    memory_limit_bytes: float | None,
) -> list[OptionResult]:
    """Each option serving the traffic's peak-hour demand (see `megawatt.fleet.demand`), once
    the requests it takes, now that the pools are sized, are known to fit in memory."""
    fleet, traffic = scenario.fleet, scenario.traffic
    peak_rate = _peak_rate(scenario)
    by_name = {o.name: o for o in scenario.options}
    plans = []
    for option in options:
        mi = scenario.models.index(option.model_id)
        mix = traffic_mix(scenario, models[mi])
        router = by_name[option.name].router
        split = pool_split(option.pools, mix, router=router, economics=economics, pue=scenario.budget.pue)
        expected = simulated_requests(
            option.pools, mix, peak_rate, split, duration_s=fleet.duration_s, mode=fleet.mode, k=fleet.k
        )
        plans.append((mi, mix, sum(expected)))
    total = sum(p[2] for p in plans)
    exact = fleet.mode == "exact"
    kept = sum(len(o.pools) for o in options) * scenario.simulation.n_requests * BYTES_PER_REQUEST_KEPT
    cost = Cost(0.0, total, kept + _demand_bytes(total, exact), total / FLEET_REQUESTS_PER_S[fleet.mode])
    check_memory(cost, memory_limit_bytes, f"{scenario.name} at demand")
    done = 0
    label = f"fleets at demand ({fleet.mode})"

    def tick(n_requests: int) -> None:
        nonlocal done
        done += n_requests
        if progress:
            progress("demand", min(done, int(total)), int(total), label)

    if progress:
        progress("demand", 0, int(total), label)
    out = []
    for n, (option, (mi, mix, _)) in enumerate(zip(options, plans, strict=True)):
        spec = by_name[option.name]
        demand = simulate_demand(
            option.pools,
            mix,
            peak_rate,
            router=spec.router,
            economics=economics,
            pue=scenario.budget.pue,
            mean_to_peak=1.0 / traffic.peak_to_mean,
            duration_s=fleet.duration_s,
            mode=fleet.mode,
            k=fleet.k,
            replica_router=fleet.replica_router,
            scheduler=[pool.scheduler for pool in spec.pools],
            seed=(scenario.seed, mi, n),
            progress=tick,
        )
        at_peak = _sessions_at_peak(scenario, option, mix, peak_rate, models[mi], (scenario.seed, mi, n))
        out.append(dataclasses.replace(option, demand=demand, sessions_at_demand=at_peak))
    if progress:
        progress("demand", int(total), int(total), label)
    return out


def _sessions_at_peak(
    scenario: Scenario,
    option: OptionResult,
    mix: Mix,
    peak_rate: float,
    model: ModelSpec,
    seed: tuple[int, ...],
) -> tuple[SessionsAtDemand, ...]:
    """Each session class made of a mix class's requests (`SessionClass.mix_class`) over a day on
    a replica of the pool its latency class routes to, next to the rest of that replica's share
    of the traffic, both following the day (`fleet.sessions.sessions_at_demand`)."""
    spec = scenario.sessions
    if spec is None or scenario.models.index(option.model_id) != sessions_model_index(scenario):
        return ()
    split = pool_split(
        option.pools, mix, router=_option_spec(scenario, option.name).router,
        economics=option.economics, pue=option.pue,
    )
    peak_to_mean = scenario.traffic.peak_to_mean
    a = min(peak_to_mean - 1.0, 0.99)  # rate = mean x (1 + a cos): peak / trough = (1 + a) / (1 - a)
    out = []
    for k, cls in enumerate(session_classes(scenario)):
        if cls.mix_class not in mix.class_names:
            continue
        served = next((o for o in option.sessions if o.class_name == cls.name), None)
        if served is None or served.capacity.users < 1:  # the pool cannot serve them at all
            continue
        j = next(i for i, p in enumerate(option.pools) if p.name == served.pool)
        pool = option.pools[j]
        c = mix.class_names.index(cls.mix_class)
        per_replica_day = peak_rate / peak_to_mean * SECONDS_PER_DAY / max(pool.size.n_replicas, 1)
        turns = per_replica_day * mix.shares[c] * split[c, j]
        weights = split[:, j].copy()
        weights[c] = 0.0
        others = per_replica_day * float(mix.shares @ weights)
        if turns <= 0 or others <= 0:
            continue
        out.append(
            sessions_at_demand(
                ReplicaConfig.of(pool.deployment, _option_spec(scenario, option.name).pools[j].scheduler),
                cls, pool.name,
                tasks_per_day=turns / served.capacity.turns_per_task,
                other=pool_mix(mix, weights), other_requests_per_day=others,
                peak_to_trough=(1.0 + a) / (1.0 - a),
                max_context_tokens=model.max_context_tokens, seed=(*seed, k),
            )
        )
    return tuple(out)


def _option_spec(scenario: Scenario, name: str) -> OptionSpec:
    return next(o for o in scenario.options if o.name == name)


def _label(task: _Task, models: list[ModelSpec]) -> str:
    return f"{models[task.model_index].id} on {task.pool.system}"
