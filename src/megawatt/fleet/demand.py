"""A fleet option at a given demand: the pool router splits the traffic (by class) over the
pools, each pool is simulated (sampled or exact), and the answers are the latency users see,
how busy the fleet is, the power it draws and what a token costs at that demand."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from megawatt.errors import InputError
from megawatt.fleet.economics import AnnualCost, Economics, annual_cost
from megawatt.fleet.pool import DemandResult, PoolResult
from megawatt.fleet.pools import PoolOutcome, Progress, simulate_pool
from megawatt.fleet.routing import PoolTarget, pool_router
from megawatt.serving import ReplicaConfig
from megawatt.units import SECONDS_PER_YEAR
from megawatt.workload import Mix, Poisson

OVERLOAD = 1.0  # demand above this share of a pool's capacity is not simulated


def pool_split(
    pools: Sequence[PoolResult], mix: Mix, *, router: str, economics: Economics, pue: float
) -> np.ndarray:
    """Where the pool router sends each request class: a (classes x pools) matrix of shares."""
    targets = [
        PoolTarget(
            p.name,
            p.rate_per_s,
            usd_per_request=_usd_per_request(p, economics, pue),
            tpot_s=p.capacity.result.percentile("tpot_s", 50) if p.capacity.result else math.inf,
        )
        for p in pools
    ]
    return pool_router(router).shares(mix.class_names, list(mix.shares), targets)


def simulated_requests(
    pools: Sequence[PoolResult],
    mix: Mix,
    rate_per_s: float,
    split: np.ndarray,
    *,
    duration_s: float,
    mode: str,
    k: int,
) -> list[float]:
    """Requests `simulate_demand` will simulate in each pool (expected): the pool's share of the
    traffic over `duration_s`, all of it in exact mode, k / N of it in sampled mode; none for a
    pool without traffic or over its capacity."""
    out = []
    for j, p in enumerate(pools):
        rate = rate_per_s * float(mix.shares @ split[:, j])
        if rate <= 0 or rate > OVERLOAD * p.rate_per_s:
            out.append(0.0)
            continue
        n = p.size.n_replicas
        out.append(rate * duration_s * (1.0 if mode == "exact" else min(k, n) / n))
    return out


def pool_mix(mix: Mix, weights: np.ndarray) -> Mix:
    """The mix a pool sees when it takes `weights[i]` of class i's requests."""
    shares = mix.shares * weights
    total = shares.sum()
    classes = tuple(
        dataclasses.replace(c, share=float(s / total))
        for c, s in zip(mix.classes, shares, strict=True)
        if s > 0
    )
    return Mix(classes)


def simulate_demand(
    pools: Sequence[PoolResult],
    mix: Mix,
    rate_per_s: float,
    *,
    router: str,
    economics: Economics,
    pue: float,
    mean_to_peak: float,
    duration_s: float,
    mode: str = "sampled",
    k: int = 4,
    replica_router: str = "random",
    scheduler: str | Sequence[str] = "vllm",
    seed: tuple[int, ...] = (0,),
    progress: Progress | None = None,
) -> DemandResult:
    """Serve `rate_per_s` of `mix` with these pools for `duration_s` seconds of arrivals;
    `scheduler` is the scheduler of every pool, or one per pool; `progress` is called with the
    requests simulated as they are."""
    schedulers = [scheduler] * len(pools) if isinstance(scheduler, str) else list(scheduler)
    if len(schedulers) != len(pools):
        raise InputError(
            f"scheduler: give one or one per pool ({len(pools)}); got {len(schedulers)}."
        )
    split = pool_split(pools, mix, router=router, economics=economics, pue=pue)
    runs: list[PoolOutcome | None] = []
    rates: list[float] = []
    over: list[str] = []
    it_w = 0.0
    costs: list[AnnualCost] = []
    for j, p in enumerate(pools):
        weights = split[:, j]
        rate = rate_per_s * float(mix.shares @ weights)
        rates.append(rate)
        busy = 0.0
        if rate <= 0:
            runs.append(None)
        elif rate > OVERLOAD * p.rate_per_s:
            over.append(p.name)
            runs.append(None)
            busy = 1.0
        else:
            cfg = ReplicaConfig.of(p.deployment, schedulers[j])
            run = simulate_pool(
                p.name,
                cfg,
                p.size.n_replicas,
                pool_mix(mix, weights),
                Poisson(rate),
                duration_s,
                mode=mode,
                k=k,
                replica_router=replica_router,
                seed=(*seed, j),
                progress=progress,
            )
            runs.append(run)
            busy = rate / p.rate_per_s  # load as a share of capacity sets power (see PoolResult)
        curve = p.power_curve
        it_w += p.size.n_systems * curve.power_w(busy)
        # Over a year the load averages `mean_to_peak` of this peak-hour demand.
        mean_w = p.size.n_systems * curve.power_w(busy * mean_to_peak) * pue
        costs.append(
            annual_cost(
                economics,
                n_systems=p.size.n_systems,
                system_price_usd=p.system.price_usd,
                it_peak_w=p.size.used_w,
                facility_mean_w=mean_w,
                pue=pue,
            )
        )
    annual = AnnualCost(
        *(
            sum(getattr(c, f) for c in costs)
            for f in ("it_capex", "facility_capex", "electricity", "contract")
        )
    )
    return DemandResult(
        rate_per_s, tuple(rates), tuple(runs), tuple(over), it_w, it_w * pue, annual, mean_to_peak
    )


def _usd_per_request(pool: PoolResult, economics: Economics, pue: float) -> float:
    """A pool's yearly cost over the requests it serves at capacity in a year."""
    cost = annual_cost(
        economics,
        n_systems=pool.size.n_systems,
        system_price_usd=pool.system.price_usd,
        it_peak_w=pool.size.used_w,
        facility_mean_w=pool.size.used_w * pue,
        pue=pue,
    )
    per_year = pool.rate_per_s * SECONDS_PER_YEAR
    return cost.total / per_year if per_year > 0 else math.inf
