"""Run a scenario end to end: for every model and fleet option, choose each pool's deployment,
find a replica's capacity at the SLO, size the pools from the budget and account power and money.

Pool evaluations are independent and seeded on their own, so they run in parallel processes and
the same seed gives the same numbers however they are scheduled.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
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
from megawatt.fleet.demand import simulate_demand
from megawatt.hardware import Catalog
from megawatt.model import ModelSpec, load_model
from megawatt.perf import Deployment, plan_memory
from megawatt.perf.speculative import Speculation
from megawatt.plan import Choice, PoolSettings, candidates, choose
from megawatt.scenario import PoolSpec, Scenario
from megawatt.serving import ReplicaConfig, Slo, single_user
from megawatt.units import MW
from megawatt.workload import Mix, Poisson, Requests, chatgpt_mix, mix_from_spec

Progress = Callable[[int, int, str], None]


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


def _settings(pool: PoolSpec) -> PoolSettings:
    spec = pool.speculative
    return PoolSettings(
        engine=pool.engine,
        weight_dtype=pool.weight_dtype,
        kv_dtype=pool.kv_dtype,
        policy=pool.scheduler,
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
        _settings(task.pool),
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
    return _Evaluated(choice, speed, float(np.median(solo.ttft_s)))


def _size(scenario: Scenario, pool: PoolSpec, dep: Deployment, field: str) -> PoolSize:
    """The pool's whole systems and replicas of `dep` under the scenario's budget."""
    if pool.n_systems is not None:
        return size_pool(
            0.0, dep.system, dep.n_devices, field=f"{field}.n_systems", n_systems=pool.n_systems
        )
    spec = scenario.budget
    if spec.capex_usd is not None:
        it_w = it_power_for_capex(
            spec.capex_usd, dep.system, scenario.economics.facility_capex_usd_per_mw
        )
    else:
        it_w = PowerBudget(spec.facility_mw * MW, spec.pue).it_w if spec.facility_mw else 0.0
    return size_pool(it_w * pool.power_share, dep.system, dep.n_devices, field=f"{field}.power_share")


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
                        model, system, catalog.device(system.device_id), _settings(pool), longest
                    )
                    _size(scenario, pool, deps[0], field)
                    if pool.tp or pool.pp or pool.weight_streaming:  # a stated plan: not searched
                        _holds(deps[0], longest)
                except (FitError, InputError) as exc:
                    raise ScenarioError(
                        f"scenario: {field} ({pool.system}, option {option.name!r}) cannot serve "
                        f"models[{mi}] ({model.id}): {exc}"
                    ) from None


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
            out.append(
                Assumption(
                    f"{s.id} price",
                    f"${s.price_usd / 1e6:.3g}M per system",
                    s.sources.get("price_usd", "estimate"),
                )
            )
    return tuple(out)


def run_study(
    scenario: Scenario, *, progress: Progress | None = None, workers: int | None = None
) -> StudyResult:
    """Answer a scenario: every option for every model. `workers` processes evaluate pools in
    parallel (default: the CPU count; 1 runs in this process)."""
    start = time.perf_counter()
    check_plans(scenario)
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
        progress(0, total, "choosing deployments")
    if n_workers <= 1 or total == 1:
        for k in keys:
            results[k] = _evaluate(tasks[k])
            if progress:
                progress(len(results), total, _label(tasks[k], models))
    else:
        with ProcessPoolExecutor(max_workers=min(n_workers, total)) as pool_exec:
            futures = {pool_exec.submit(_evaluate, tasks[k]): k for k in keys}
            from concurrent.futures import as_completed

            for fut in as_completed(futures):
                k = futures[fut]
                results[k] = fut.result()
                if progress:
                    progress(len(results), total, _label(tasks[k], models))
    load_fraction = 1.0 / scenario.traffic.peak_to_mean
    options: list[OptionResult] = []
    for mi, model in enumerate(models):
        for oi, option in enumerate(scenario.options):
            pools: list[PoolResult] = []
            for pj, pool in enumerate(option.pools):
                ev = results[_pool_key(mi, pool)]
                dep = ev.choice.deployment
                system = catalog.system(pool.system)
                size = _size(scenario, pool, dep, f"options[{oi}].pools[{pj}]")
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
                    )
                )
            options.append(
                option_result(option.name, model.id, pools, economics, scenario.budget.pue, load_fraction)
            )
    if scenario.fleet.simulate_demand:
        options = _at_demand(scenario, models, options, economics, progress)
    return StudyResult(scenario, tuple(options), assumptions(scenario, catalog), time.perf_counter() - start)


def _at_demand(
    scenario: Scenario,
    models: list[ModelSpec],
    options: list[OptionResult],
    economics: Economics,
    progress: Progress | None,
) -> list[OptionResult]:
    """Each option serving the traffic's peak-hour demand (see `megawatt.fleet.demand`)."""
    fleet, traffic = scenario.fleet, scenario.traffic
    peak_rate = traffic.demand_prompts_per_day / 86_400.0 * traffic.peak_to_mean
    by_name = {o.name: o for o in scenario.options}
    out = []
    for n, option in enumerate(options):
        mi = scenario.models.index(option.model_id)
        spec = by_name[option.name]
        demand = simulate_demand(
            option.pools,
            traffic_mix(scenario, models[mi]),
            peak_rate,
            router=spec.router,
            economics=economics,
            pue=scenario.budget.pue,
            mean_to_peak=1.0 / traffic.peak_to_mean,
            duration_s=fleet.duration_s,
            mode=fleet.mode,
            k=fleet.k,
            replica_router=fleet.replica_router,
            policy=spec.pools[0].scheduler,
            seed=(scenario.seed, mi, n),
        )
        out.append(dataclasses.replace(option, demand=demand))
        if progress:
            progress(n + 1, len(options), f"{option.name} / {option.model_id} at demand")
    return out


def _label(task: _Task, models: list[ModelSpec]) -> str:
    return f"{models[task.model_index].id} on {task.pool.system}"
