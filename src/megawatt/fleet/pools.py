"""Simulating pools of replicas behind a router, exactly (every replica) or sampled (k replicas
carry their share of the load, with bootstrap confidence intervals across replicas).

Replicas behind a balanced router are exchangeable: under random routing each of N replicas
sees a Poisson stream of rate lambda / N, so simulating k of them with that stream is exact in
distribution; under least-outstanding routing a group of k replicas fed k/N of the traffic
approximates the pool (the approximation the sampling benchmark measures).

Exact mode streams: replicas are drawn and simulated a batch at a time (each replica its own
stream: rate lambda / N under random routing; under round robin every N-th arrival of the pool,
gaps the sum of N of the pool's gaps), and each batch is folded into per-class latency
histograms (`fleet.histogram`, quantiles within 0.5%) and counters, so memory is bounded by the
batch and the histograms, not by the requests (`PoolTally`). Sampled mode keeps every request
(`PoolRun`), for its bootstrap intervals.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from megawatt.errors import InputError
from megawatt.fleet.histogram import LatencyHistograms
from megawatt.fleet.routing import ReplicaRouter, scaled
from megawatt.fleet.routing import replica_router as router_named
from megawatt.serving import ReplicaConfig, RunResult, simulate
from megawatt.serving.drivers import simulate_replicas
from megawatt.serving.metrics import e2e_of, tpot_of, ttft_of, weighted_percentile
from megawatt.sim import Environment
from megawatt.workload import ArrivalProcess, Mix, Poisson, Requests

MODES = ("exact", "sampled")
METRICS = ("ttft_s", "tpot_s", "e2e_s")
_JOINT_LIMIT = 60_000_000  # replicas x requests of a joint (least-outstanding) simulation
BATCH_REQUESTS = 1 << 18
"""Requests exact mode draws and simulates at a time (fewer when one replica has more): a
compiled call of about half a second, some 25 MB of working memory."""

Progress = Callable[[int], None]
"""Called with the requests just simulated."""


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

    def weighted(self, metric: str, class_name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Values of a metric over the served requests (of one class, or all), each weighted by
        the replicas its replica stands for (`scale`)."""
        parts = []
        for res, mask in zip(self.replicas, self.served, strict=True):
            keep = mask & ~res.rejected
            if class_name is not None:
                if class_name not in res.class_names:
                    continue
                keep = keep & (res.class_id == res.class_names.index(class_name))
            parts.append(getattr(res, metric)[keep])
        v = np.concatenate(parts) if parts else np.zeros(0)
        return v, np.full(v.size, self.scale)

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


@dataclass(frozen=True)
class PoolTally:
    """A pool simulated in exact mode (every replica), kept as counters and per-class latency
    histograms of the requests served (`fleet.histogram`: percentiles within 0.5%), not as
    requests: its memory does not grow with the traffic."""

    name: str
    n_replicas: int
    duration_s: float
    histograms: LatencyHistograms
    n_requests: int  # requests the replicas served
    n_completed: int
    n_rejected: int
    output_tokens: float  # of the completed requests
    busy_fraction: float  # mean over replicas of the share of time their engines were busy

    @property
    def n_simulated(self) -> int:
        """Replicas simulated: all of them."""
        return self.n_replicas

    @property
    def scale(self) -> float:
        """Replicas represented by each simulated one: 1."""
        return 1.0

    @property
    def output_tokens_per_s(self) -> float:
        """Output tokens per second of the whole pool."""
        return self.output_tokens / self.duration_s

    def percentile(self, metric: str, q: float) -> float:
        """q-th percentile of `ttft_s`, `tpot_s` or `e2e_s` over the requests not rejected."""
        return self.histograms.quantile(metric, q)

    def weighted(self, metric: str, class_name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(value, count) of each histogram bucket of a metric (one class, or all)."""
        return self.histograms.weighted(metric, class_name)

    @staticmethod
    def of(run: PoolRun) -> PoolTally:
        """A sampled-style run of every replica, folded into counters and histograms."""
        hist = LatencyHistograms(run.replicas[0].class_names if run.replicas else ())
        n = done = rejected = 0
        tokens = 0.0
        for res, mask in zip(run.replicas, run.served, strict=True):
            keep = mask & ~res.rejected
            for metric in METRICS:
                hist.add(metric, getattr(res, metric)[keep], res.class_id[keep])
            n += int(mask.sum())
            done += int((mask & res.completed).sum())
            rejected += int((mask & res.rejected).sum())
            tokens += float(res.output_tokens[mask & res.completed].sum())
        return PoolTally(
            run.name, run.n_replicas, run.duration_s, hist, n, done, rejected, tokens, run.busy_fraction
        )


PoolOutcome = PoolRun | PoolTally
"""A simulated pool: every request kept (sampled mode) or tallied (exact mode)."""


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
    replica_router: str = "random",
    seed: tuple[int, ...] = (0,),
    progress: Progress | None = None,
) -> PoolOutcome:
    """Simulate a pool of `n_replicas` replicas serving `arrivals` (the pool's whole stream)
    for `duration_s` seconds of arrivals (every request is followed to completion).

    `mode="exact"` simulates every replica, streamed into a `PoolTally` (least-outstanding
    routing simulates the replicas jointly, then tallies them); `"sampled"` simulates `k` of
    them, fed k / N of the traffic, into a `PoolRun`. `replica_router` picks a replica: a name
    of `REPLICA_ROUTERS` (`random`, `round_robin` or `least_outstanding`). `progress`, when
    given, is called with the number of requests simulated as they are.
    """
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}; got {mode!r}.")
    if n_replicas < 1:
        raise InputError(f"pool {name}: n_replicas must be >= 1; got {n_replicas}.")
    router = router_named(replica_router)
    if mode == "exact" and not router.joint:
        batches = replica_batches(mix, arrivals, n_replicas, duration_s, router, seed)
        return _tally(name, config, n_replicas, duration_s, mix.class_names, batches, progress)
    group = n_replicas if mode == "exact" else min(k, n_replicas)
    if group < 1:
        raise InputError(f"sampled mode needs k >= 1; got {k}.")
    stream = scaled(arrivals, group / n_replicas)
    reqs = requests_until(mix, stream, duration_s, seed)
    rng = np.random.default_rng([*seed, 10_007])
    if router.joint:
        results, served = _joint(config, reqs, group)
    else:
        target = router.targets(rng, len(reqs), group)
        results, served = [], []
        for r in range(group):
            sub = reqs.subset(target == r)
            res = simulate(config, sub)
            results.append(res)
            served.append(np.ones(len(sub), dtype=bool))
    if progress:
        progress(len(reqs))
    run = PoolRun(name, n_replicas, tuple(results), tuple(served), duration_s)
    return PoolTally.of(run) if mode == "exact" else run


def _replica_arrivals(
    rng: np.random.Generator,
    arrivals: ArrivalProcess,
    n_replicas: int,
    replica: int,
    duration_s: float,
    router: ReplicaRouter,
) -> np.ndarray:
    """Arrival times in [0, duration_s) of one replica of the pool: the router's stream for it
    (`ReplicaRouter.replica_stream`), its first arrival drawn apart when the router says so."""
    process, first = router.replica_stream(rng, arrivals, n_replicas, replica)
    expected = process.rate_per_s * duration_s
    n = int(expected * 1.2 + 6.0 * math.sqrt(expected) + 8)
    if first is None:
        times = process.sample(rng, n)
    elif first >= duration_s:
        return np.zeros(0)
    else:
        times = np.concatenate(([first], process.sample(rng, n, first)))
    parts = [times]
    while parts[-1][-1] < duration_s:  # rarely: more than the margin above
        parts.append(process.sample(rng, n, float(parts[-1][-1])))
    times = np.concatenate(parts) if len(parts) > 1 else times
    out: np.ndarray = times[times < duration_s]
    return out


def batch_size(n_replicas: int, arrivals: ArrivalProcess, duration_s: float) -> int:
    """Replicas exact mode draws and simulates together: about `BATCH_REQUESTS` requests."""
    per_replica = arrivals.rate_per_s / n_replicas * duration_s
    return max(1, min(n_replicas, int(BATCH_REQUESTS / max(per_replica, 1.0))))


def replica_batches(
    mix: Mix,
    arrivals: ArrivalProcess,
    n_replicas: int,
    duration_s: float,
    router: ReplicaRouter,
    seed: tuple[int, ...],
) -> Iterator[tuple[np.ndarray, np.ndarray, Requests]]:
    """The requests exact mode gives the pool's replicas, `batch_size` replicas at a time: their
    arrival times (s, sorted within each replica), the offsets of each replica's rows, and the
    requests' lengths and classes (the table's own arrivals unused: lengths and classes are
    drawn for each request independently of when it arrives). Deterministic for `seed`."""
    size = batch_size(n_replicas, arrivals, duration_s)
    for first in range(0, n_replicas, size):
        rng = np.random.default_rng([*seed, 20_011, first])
        replicas = range(first, min(first + size, n_replicas))
        times = [
            _replica_arrivals(rng, arrivals, n_replicas, r, duration_s, router) for r in replicas
        ]
        offsets = np.zeros(len(times) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([t.size for t in times])
        arrival = np.concatenate(times)
        yield arrival, offsets, mix.sample(rng, int(arrival.size), Poisson(1.0))


def _tally(
    name: str,
    config: ReplicaConfig,
    n_replicas: int,
    duration_s: float,
    class_names: tuple[str, ...],
    batches: Iterable[tuple[np.ndarray, np.ndarray, Requests]],
    progress: Progress | None,
) -> PoolTally:
    """Simulate each batch of replicas and fold it into histograms and counters (see the module
    docstring)."""
    hist = LatencyHistograms(class_names)
    n = done = rejected = 0
    tokens = busy = 0.0
    for arrival, offsets, reqs in batches:
        runs = simulate_replicas(
            config, arrival, reqs.prompt_tokens, reqs.output_tokens, reqs.cached_tokens, offsets
        )
        keep = ~runs.rejected
        cls = reqs.class_id[keep]
        first_s, finish_s = runs.first_token_s[keep], runs.finish_s[keep]
        out_tokens = reqs.output_tokens[keep]
        hist.add("ttft_s", ttft_of(arrival[keep], first_s), cls)
        hist.add("tpot_s", tpot_of(first_s, finish_s, out_tokens), cls)
        hist.add("e2e_s", e2e_of(arrival[keep], finish_s), cls)
        completed = keep & np.isfinite(runs.finish_s)
        n += int(arrival.size)
        done += int(completed.sum())
        rejected += int(runs.rejected.sum())
        tokens += float(reqs.output_tokens[completed].sum())
        busy += float(np.minimum(runs.busy_s / duration_s, 1.0).sum())
        if progress:
            progress(int(arrival.size))
    return PoolTally(name, n_replicas, duration_s, hist, n, done, rejected, tokens, busy / n_replicas)


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


def pooled_percentile(
    runs: list[PoolOutcome], metric: str, q: float, class_name: str | None = None
) -> float:
    """q-th percentile across pools (of one request class, or all), each request weighted by
    the replicas it stands for."""
    pairs = [run.weighted(metric, class_name) for run in runs]
    if not sum(v.size for v, _ in pairs):
        return math.nan
    return weighted_percentile(
        np.concatenate([v for v, _ in pairs]), np.concatenate([w for _, w in pairs]), q
    )
