"""Simulating pools of replicas behind a router, exactly (every replica) or sampled (k replicas
carry their share of the load, with bootstrap confidence intervals across replicas).

Replicas behind a balanced router are exchangeable: under random routing each of N replicas
sees a Poisson stream of rate lambda / N, so simulating k of them with that stream is exact in
distribution; under least-outstanding routing a group of k replicas fed k/N of the traffic
approximates the pool (the approximation the sampling benchmark measures).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from megawatt.errors import InputError
from megawatt.fleet.routing import RoundRobin, check_replica_router
from megawatt.serving import ReplicaConfig, RunResult, simulate
from megawatt.serving.metrics import weighted_percentile
from megawatt.sim import Environment
from megawatt.workload import ArrivalProcess, Mix, Requests

MODES = ("exact", "sampled")
_JOINT_LIMIT = 60_000_000  # replicas x requests of a joint (least-outstanding) simulation


def scaled(process: ArrivalProcess, factor: float) -> ArrivalProcess:
    """The process with its rate multiplied by `factor` (a random split of the traffic).

    Exact for Poisson and diurnal (thinned Poisson); for a gamma renewal process a split
    stream is not gamma, so the gap CV is kept (an approximation)."""
    if not 0 < factor:
        raise InputError(f"a traffic share must be > 0; got {factor}.")
    rate = process.rate_per_s
    if not math.isfinite(rate):
        return process
    return dataclasses.replace(process, rate_per_s=rate * factor)  # type: ignore[type-var]


def requests_until(mix: Mix, process: ArrivalProcess, duration_s: float, seed: tuple[int, ...]) -> Requests:
    """Requests of `mix` arriving in [0, duration_s), deterministic for `seed`."""
    n = int(process.rate_per_s * duration_s * 1.3) + 64
    for attempt in range(40):
        rng = np.random.default_rng([*seed, attempt])
        reqs = mix.sample(rng, n, process)
        if len(reqs) and reqs.arrival_s[-1] >= duration_s:
            return reqs.subset(np.asarray(reqs.arrival_s) < duration_s)
        n *= 2
    raise InputError(f"could not draw {duration_s} s of arrivals; is the rate zero?")


@dataclass(frozen=True)
class PoolRun:
    """The simulated replicas of one pool: each replica's result and the requests it served."""

    name: str
    n_replicas: int
    replicas: tuple[RunResult, ...]
    served: tuple[np.ndarray, ...]  # per simulated replica: mask of its rows in its result
    duration_s: float

    @property
    def n_simulated(self) -> int:
        """Replicas simulated."""
        return len(self.replicas)

    @property
    def scale(self) -> float:
        """Replicas represented by each simulated one."""
        return self.n_replicas / self.n_simulated

    def _values(self, metric: str, replicas: np.ndarray | None = None) -> np.ndarray:
        idx = range(self.n_simulated) if replicas is None else replicas
        parts = []
        for i in idx:
            res, mask = self.replicas[i], self.served[i]
            parts.append(getattr(res, metric)[mask & ~res.rejected])
        return np.concatenate(parts) if parts else np.zeros(0)

    def percentile(self, metric: str, q: float) -> float:
        """q-th percentile of `ttft_s`, `tpot_s` or `e2e_s` over the simulated requests."""
        v = self._values(metric)
        return float(np.percentile(v, q, method="inverted_cdf")) if v.size else math.nan

    def _tokens(self, replicas: np.ndarray | None = None) -> float:
        idx = range(self.n_simulated) if replicas is None else replicas
        total = 0.0
        for i in idx:
            res, mask = self.replicas[i], self.served[i]
            total += float(res.output_tokens[mask & res.completed].sum())
        return total

    @property
    def output_tokens_per_s(self) -> float:
        """Output tokens per second of the whole pool (simulated replicas scaled up)."""
        return self._tokens() / self.duration_s * self.scale

    @property
    def n_requests(self) -> int:
        """Requests the simulated replicas served."""
        return int(sum(int(m.sum()) for m in self.served))

    @property
    def busy_fraction(self) -> float:
        """Mean share of time the simulated replicas' engines were busy."""
        return float(np.mean([min(r.stats.busy_s / self.duration_s, 1.0) for r in self.replicas]))

    def interval(
        self, statistic: str, q: float = 50, *, n_boot: int = 200, seed: int = 0, level: float = 0.95
    ) -> tuple[float, float]:
        """Bootstrap confidence interval (resampling replicas) of a percentile of `ttft_s` /
        `tpot_s` / `e2e_s`, or of `throughput` (output tokens/s of the pool)."""
        rng = np.random.default_rng(seed)
        k = self.n_simulated
        draws = []
        for _ in range(n_boot):
            pick = rng.integers(0, k, size=k)
            if statistic == "throughput":
                draws.append(self._tokens(pick) / self.duration_s * self.n_replicas / k)
            else:
                v = self._values(statistic, pick)
                draws.append(float(np.percentile(v, q, method="inverted_cdf")) if v.size else math.nan)
        lo, hi = np.nanpercentile(draws, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
        return float(lo), float(hi)


def simulate_pool(
    name: str,
    config: ReplicaConfig,
    n_replicas: int,
    mix: Mix,
    arrivals: ArrivalProcess,
    duration_s: float,
    *,
    mode: str = "sampled",
    k: int = 8,
    router: str = "random",
    seed: tuple[int, ...] = (0,),
) -> PoolRun:
    """Simulate a pool of `n_replicas` replicas serving `arrivals` (the pool's whole stream)
    for `duration_s` seconds of arrivals (every request is followed to completion).

    `mode="exact"` simulates every replica; `"sampled"` simulates `k` of them, fed k / N of
    the traffic. `router` picks a replica: `random`, `round_robin` or `least_outstanding`.
    """
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}; got {mode!r}.")
    if n_replicas < 1:
        raise InputError(f"pool {name}: n_replicas must be >= 1; got {n_replicas}.")
    check_replica_router(router)
    group = n_replicas if mode == "exact" else min(k, n_replicas)
    if group < 1:
        raise InputError(f"sampled mode needs k >= 1; got {k}.")
    stream = scaled(arrivals, group / n_replicas)
    reqs = requests_until(mix, stream, duration_s, seed)
    rng = np.random.default_rng([*seed, 10_007])
    if router == "least_outstanding":
        results, served = _joint(config, reqs, group)
    else:
        if router == "random":
            target = rng.integers(0, group, size=len(reqs))
        else:
            rr = RoundRobin(group)
            target = np.array([rr.pick() for _ in range(len(reqs))], dtype=np.int64)
        results, served = [], []
        for r in range(group):
            sub = reqs.subset(target == r)
            res = simulate(config, sub)
            results.append(res)
            served.append(np.ones(len(sub), dtype=bool))
    return PoolRun(name, n_replicas, tuple(results), tuple(served), duration_s)


def _joint(config: ReplicaConfig, reqs: Requests, group: int) -> tuple[list[RunResult], list[np.ndarray]]:
    """Least-outstanding routing: one event loop, every replica sees the whole table and serves
    the requests routed to it (ties to the lowest index)."""
    n = len(reqs)
    if group * n > _JOINT_LIMIT:
        raise InputError(
            f"least_outstanding over {group} replicas and {n} requests is too large to simulate "
            f"jointly (limit {_JOINT_LIMIT:,} replica-requests); use mode='sampled' with a smaller k."
        )
    env = Environment()
    replicas = [config.build(env, reqs) for _ in range(group)]
    owner = np.full(n, -1, dtype=np.int64)
    arrivals = reqs.arrival_s

    def arrive(i: int) -> None:
        if i + 1 < n:
            env.schedule_at(float(arrivals[i + 1]), arrive, i + 1, priority=-1)
        best = min(range(group), key=lambda r: replicas[r].outstanding)
        owner[i] = best
        replicas[best].submit(i)

    if n:
        env.schedule_at(float(arrivals[0]), arrive, 0, priority=-1)
    env.run()
    results = []
    for rep in replicas:
        rep.settle()
        results.append(RunResult.of(rep, env.now))
    return results, [owner == r for r in range(group)]


def pooled_percentile(runs: list[PoolRun], metric: str, q: float) -> float:
    """q-th percentile across pools, each request weighted by the replicas it stands for."""
    values, weights = [], []
    for run in runs:
        v = run._values(metric)
        values.append(v)
        weights.append(np.full(v.size, run.scale))
    if not values or not sum(v.size for v in values):
        return math.nan
    return weighted_percentile(np.concatenate(values), np.concatenate(weights), q)
