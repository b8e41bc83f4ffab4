"""Load generators with MLPerf LoadGen's meaning, driving one replica:

- `offline`:     every request available at t=0; the figure is output tokens/s.
- `server`:      Poisson arrivals at rate lambda; `capacity` searches the highest lambda whose
                 p99 TTFT and p99 TPOT meet the limits (the MLPerf server result).
- `interactive`: `server` with tighter limits (the caller passes them).
- `single_user`: one request at a time.
- `concurrency`: closed loop with N requests in flight.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from megawatt.errors import InputError
from megawatt.perf import Deployment, StepModel, plan_memory
from megawatt.perf.factory import exported_coefficients, step_model
from megawatt.perf.roofline import StepCoefficients
from megawatt.serving.kv import KvBudget
from megawatt.serving.metrics import RunResult, Slo
from megawatt.serving.replica import PREFIX_BLOCK_TOKENS, Replica
from megawatt.serving.timeline import DEFAULT_BIN_S
from megawatt.sim import Environment
from megawatt.units import SECONDS_PER_DAY
from megawatt.workload import Requests
from megawatt.workload.sessions import check_sessions, session_links


@dataclass(frozen=True)
class ReplicaConfig:
    """Everything needed to build a replica: the step-time seam, the KV budget, the scheduler, and
    the narrowest bin of its timeline (seconds)."""

    step_model: StepModel
    kv: KvBudget
    scheduler: str = "vllm"
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    timeline_bin_s: float = DEFAULT_BIN_S

    @staticmethod
    def of(deployment: Deployment, scheduler: str = "vllm") -> ReplicaConfig:
        """The replica a deployment gives: its roofline step model (wrapped for speculative
        decoding when the deployment has `speculation`) and its KV budget."""
        plan = plan_memory(deployment)
        step = step_model(deployment, plan)
        return ReplicaConfig(
            step,
            KvBudget.of(plan),
            scheduler,
            deployment.max_num_seqs,
            deployment.max_num_batched_tokens,
        )

    def build(
        self,
        env: Environment,
        requests: Requests,
        on_finish: Callable[[int], None] | None = None,
        prefix_blocks: Sequence[np.ndarray] | None = None,
        prefix_block_tokens: int = PREFIX_BLOCK_TOKENS,
    ) -> Replica:
        """A Python replica of this configuration serving `requests` on `env`."""
        return Replica(
            env,
            self.step_model,
            self.kv,
            requests,
            scheduler=self.scheduler,
            max_num_seqs=self.max_num_seqs,
            max_num_batched_tokens=self.max_num_batched_tokens,
            on_finish=on_finish,
            prefix_blocks=prefix_blocks,
            prefix_block_tokens=prefix_block_tokens,
            timeline_bin_s=self.timeline_bin_s,
        )


BACKENDS = ("auto", "fast", "python")
"""How `simulate` runs a replica: `python` (the event-driven `Replica`), `fast` (the compiled
kernel of `serving.compiled`; needs a step model with `coefficients()`),
`auto` (fast when it can, else python)."""


def _coefficients(cfg: ReplicaConfig) -> StepCoefficients | None:
    """The step model's exported coefficients, or None (`perf.factory.exported_coefficients`)."""
    return exported_coefficients(cfg.step_model)


def _compiled(
    cfg: ReplicaConfig, coefficients: StepCoefficients, requests: Requests, **run: Any
) -> RunResult:
    """`requests` on the compiled kernel (`serving.compiled.simulate_fast`) with the replica's
    KV budget, scheduler, batch limits and timeline bin; `run` holds the driver's own settings."""
    from megawatt.serving.compiled import simulate_fast  # compiles on first use

    return simulate_fast(
        coefficients,
        cfg.kv,
        requests,
        scheduler=cfg.scheduler,
        max_num_seqs=cfg.max_num_seqs,
        max_num_batched_tokens=cfg.max_num_batched_tokens,
        timeline_bin_s=cfg.timeline_bin_s,
        **run,
    )


def _backend_coefficients(cfg: ReplicaConfig, backend: str) -> StepCoefficients | None:
    """The step coefficients the compiled backend runs on, or None for the Python replica (see
    `BACKENDS`); errors for a backend name that cannot run this replica."""
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}.")
    coefficients = _coefficients(cfg) if backend != "python" else None
    if backend == "fast" and coefficients is None:
        raise InputError(
            f"backend 'fast' needs a step model with coefficients(); "
            f"{type(cfg.step_model).__name__} has none. Use backend='python' or 'auto'."
        )
    return coefficients


def simulate(
    cfg: ReplicaConfig,
    requests: Requests,
    *,
    until_s: float | None = None,
    backend: str = "auto",
    prefix_blocks: Sequence[np.ndarray] | None = None,
    prefix_block_tokens: int = PREFIX_BLOCK_TOKENS,
) -> RunResult:
    """Open loop: each request arrives at its `arrival_s`. Stops when all are done, or at
    `until_s` (requests unfinished then have no finish time). Records the queue the last request
    finds waiting when it arrives (`backlog`), the sign of an overloaded replica.

    `prefix_blocks` (per request, the hash ids of its prompt's blocks of `prefix_block_tokens`
    tokens, e.g. from `workload.load_trace_with_prefixes`) gives the replica a prefix cache over
    those blocks in its KV memory, in place of the idealised `cached_tokens` column (see
    `Replica`).

    `backend` (see `BACKENDS`): the compiled kernel and the Python replica give the same run; the
    compiled one is ~100x faster and is used whenever the step model exports `coefficients()`.
    """
    coefficients = _backend_coefficients(cfg, backend)
    if coefficients is not None:
        return _compiled(
            cfg, coefficients, requests, until_s=until_s, prefix_blocks=prefix_blocks,
            prefix_block_tokens=prefix_block_tokens,
        )
    arrivals = requests.arrival_s
    n = len(requests)
    # The clock starts at 0, or at the first arrival when that is earlier (shifted traces).
    env = Environment(min(0.0, float(arrivals[0])) if n else 0.0)
    rep = cfg.build(env, requests, None, prefix_blocks, prefix_block_tokens)
    backlog = [0]

    def arrive(i: int) -> None:
        if i + 1 < n:
            env.schedule_at(float(arrivals[i + 1]), arrive, i + 1, priority=-1)
        else:
            backlog[0] = len(rep.waiting)  # the queue the last request finds, not counting it
        rep.submit(i)

    if n:
        env.schedule_at(float(arrivals[0]), arrive, 0, priority=-1)
    env.run(until=until_s)
    rep.settle()
    result = RunResult.of(rep, env.now)
    result.backlog = backlog[0]
    return result


@dataclass(frozen=True)
class ReplicaRuns:
    """Independent replicas run side by side (`simulate_replicas`): per request, in the rows'
    order, first token and finish times (s from the start; NaN where none) and whether it was
    rejected; per replica, its busy seconds."""

    first_token_s: np.ndarray
    finish_s: np.ndarray
    rejected: np.ndarray
    busy_s: np.ndarray


def simulate_replicas(
    cfg: ReplicaConfig,
    arrival_s: np.ndarray,
    prompt_tokens: np.ndarray,
    output_tokens: np.ndarray,
    cached_tokens: np.ndarray,
    offsets: np.ndarray,
) -> ReplicaRuns:
    """Open loop on many independent replicas of `cfg`: replica r serves rows offsets[r] ..
    offsets[r + 1] - 1 (sorted by arrival within each replica), every request followed to
    completion. The compiled kernel runs them all in one call, timing pure-decode stretches in
    closed form (`serving.compiled`: the same times up to float rounding); a step model without
    coefficients runs each replica on the Python replica."""
    coefficients = _coefficients(cfg)
    if coefficients is not None:
        from megawatt.serving.compiled import simulate_replicas_fast  # compiles on first use

        first, finish, rejected, busy = simulate_replicas_fast(
            coefficients,
            cfg.kv,
            arrival_s,
            prompt_tokens,
            output_tokens,
            cached_tokens,
            offsets,
            scheduler=cfg.scheduler,
            max_num_seqs=cfg.max_num_seqs,
            max_num_batched_tokens=cfg.max_num_batched_tokens,
        )
        return ReplicaRuns(first, finish, rejected, busy)
    n = len(arrival_s)
    out = ReplicaRuns(np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, bool), np.zeros(len(offsets) - 1))
    for r, (a, e) in enumerate(itertools.pairwise(offsets)):
        if e <= a:
            continue
        res = simulate(
            cfg,
            Requests(
                arrival_s[a:e], prompt_tokens[a:e], output_tokens[a:e], cached_tokens[a:e],
                np.zeros(e - a, dtype=np.int32), ("any",),
            ),
            backend="python",
        )
        out.first_token_s[a:e] = res.first_token_s
        out.finish_s[a:e] = res.finish_s
        out.rejected[a:e] = res.rejected
        out.busy_s[r] = res.stats.busy_s
    return out


def offline(
    cfg: ReplicaConfig,
    requests: Requests,
    *,
    backend: str = "auto",
    prefix_blocks: Sequence[np.ndarray] | None = None,
    prefix_block_tokens: int = PREFIX_BLOCK_TOKENS,
) -> RunResult:
    """MLPerf offline: all requests queued at t=0 (in their table order, which `prefix_blocks`
    follows)."""
    return simulate(
        cfg,
        requests.with_arrivals(np.zeros(len(requests))),
        backend=backend,
        prefix_blocks=prefix_blocks,
        prefix_block_tokens=prefix_block_tokens,
    )


def concurrency(
    cfg: ReplicaConfig,
    requests: Requests,
    n_in_flight: int,
    *,
    backend: str = "auto",
    prefix_blocks: Sequence[np.ndarray] | None = None,
    prefix_block_tokens: int = PREFIX_BLOCK_TOKENS,
    issue_delay_s: np.ndarray | None = None,
    stretch: bool = False,
) -> RunResult:
    """Closed loop: `n_in_flight` requests at a time, in table order; each completion (or
    rejection) issues the next request at that instant, and it joins the replica's next step.
    `issue_delay_s` (per request, seconds; none by default) delays each request's arrival
    after its issue, arrivals kept in issue order (the decode side of a disaggregated pair:
    the prefill and KV transfer come first). The result's `arrival_s` are the arrivals.
    `backend` and `prefix_blocks` as in `simulate`; `stretch` (compiled backend) times pure-decode
    stretches in closed form (the same per-request times to float rounding; no timeline)."""
    if n_in_flight < 1:
        raise InputError(f"concurrency must be >= 1; got {n_in_flight}.")
    n = len(requests)
    delay = np.zeros(n) if issue_delay_s is None else np.asarray(issue_delay_s, dtype=np.float64)
    if delay.shape != (n,) or not (np.isfinite(delay).all() and (delay >= 0).all()):
        raise InputError("issue_delay_s must hold one finite delay >= 0 per request.")
    coefficients = _backend_coefficients(cfg, backend)
    if coefficients is not None:
        return _compiled(
            cfg,
            coefficients,
            requests.with_arrivals(np.zeros(len(requests))),
            n_in_flight=n_in_flight,
            issue_delay_s=delay,
            stretch=stretch,
            prefix_blocks=prefix_blocks,
            prefix_block_tokens=prefix_block_tokens,
        )
    env = Environment()
    arrival = np.zeros(n)
    issued = [0]
    rep: Replica

    def issue() -> None:
        i = issued[0]
        issued[0] += 1
        arrival[i] = env.now + delay[i]
        if i:  # arrivals keep the issue order
            arrival[i] = max(arrival[i], arrival[i - 1])
        env.schedule_at(float(arrival[i]), rep.submit, i)

    def on_finish(_: int) -> None:
        if issued[0] < n:
            issue()

    reqs = requests.with_arrivals(np.zeros(n))
    rep = cfg.build(env, reqs, on_finish, prefix_blocks, prefix_block_tokens)
    for _ in range(min(n_in_flight, n)):
        issue()
    env.run()
    result = RunResult.of(rep, env.now)
    result.arrival_s = arrival
    return result


def sessions(
    cfg: ReplicaConfig,
    requests: Requests,
    parent: np.ndarray,
    gap_s: np.ndarray,
    *,
    backend: str = "auto",
    until_s: float | None = None,
    stretch: bool = False,
) -> RunResult:
    """Sessions: chains of turns, each waiting for the one before. Row i with `parent[i] == -1`
    (a session's first turn) arrives at its `arrival_s`; any other row is issued when row
    `parent[i]` (an earlier row) completes or is rejected, and arrives `gap_s[i]` seconds
    later (tool or think time), joining the replica's next step. Stops when all are done, or
    at `until_s`. The result's `arrival_s` are the arrivals (NaN for turns never issued).
    A session table keeps each session's rows together, sessions in order of their start, and
    gives every row its session's start as `arrival_s` (`workload.sessions` builds one).
    `backend` as in `simulate`; `stretch` as in `concurrency`."""
    n = len(requests)
    par, gap = check_sessions(n, parent, gap_s)
    coefficients = _backend_coefficients(cfg, backend)
    if coefficients is not None:
        return _compiled(
            cfg,
            coefficients,
            requests,
            until_s=until_s,
            stretch=stretch,
            parent=par,
            gap_s=gap,
        )
    first, children, arrival = session_links(requests.arrival_s, par)
    start = min(0.0, float(arrival[first[0]])) if len(first) else 0.0
    env = Environment(start)
    rep: Replica

    def arrive(k: int) -> None:
        if k + 1 < len(first):
            env.schedule_at(float(arrival[first[k + 1]]), arrive, k + 1, priority=-1)
        rep.submit(int(first[k]))

    def on_finish(i: int) -> None:
        for c in children.get(i, ()):
            arrival[c] = env.now + gap[c]
            env.schedule_at(float(arrival[c]), rep.submit, c)

    rep = cfg.build(env, requests, on_finish)
    if len(first):
        env.schedule_at(float(arrival[first[0]]), arrive, 0, priority=-1)
    env.run(until=until_s)
    rep.settle()
    result = RunResult.of(rep, env.now)
    result.arrival_s = arrival
    return result


def single_user(cfg: ReplicaConfig, requests: Requests) -> RunResult:
    """One request at a time (batch 1)."""
    return concurrency(cfg, requests, 1)


@dataclass(frozen=True)
class Capacity:
    """The highest Poisson rate a replica sustains within an SLO, and the run at that rate.

    `rate_per_s` is within `rel_tol` (relative) below the true threshold of the search's
    sampled workload; 0 when the SLO fails even at the lowest rate tried.
    """

    rate_per_s: float
    result: RunResult | None
    slo: Slo
    rel_tol: float
    evaluations: tuple[tuple[float, bool], ...] = field(default=())
    reason: str = ""
    limited_by: tuple[str, ...] = ()
    frontier: tuple[tuple[float, float, float, float], ...] = ()
    """Every rate tried, sorted: (rate per s, output tokens/s, p99 TTFT s, p99 TPOT s), the
    throughput-latency curve of the replica."""

    @property
    def output_tokens_per_s(self) -> float:
        """Output tokens per second at that rate: rate x mean output tokens of the served
        requests (in steady state the replica serves what arrives)."""
        if self.result is None:
            return 0.0
        served = ~self.result.rejected
        return self.rate_per_s * float(self.result.output_tokens[served].mean())


def offline_rate_hint(
    cfg: ReplicaConfig, requests: Requests, n: int = 400, *, backend: str = "auto"
) -> float:
    """A first guess of a replica's request rate: offline output tokens/s of the first `n`
    requests over their mean output (the search brackets from there)."""
    probe = offline(cfg, requests.subset(np.arange(min(len(requests), n))), backend=backend)
    served = ~probe.rejected
    mean_out = float(probe.output_tokens[served].mean()) if served.any() else 1.0
    return max(probe.output_tokens_per_s / mean_out, 1e-3)


def unit_poisson(rng: np.random.Generator, n: int) -> np.ndarray:
    """Arrival times of a rate-1 Poisson process (scale by 1/lambda for rate lambda)."""
    return np.cumsum(rng.exponential(1.0, n))


def capacity(
    cfg: ReplicaConfig,
    requests: Requests,
    unit_arrivals: np.ndarray,
    slo: Slo,
    *,
    rel_tol: float = 0.03,
    max_evaluations: int = 24,
    rate_hint: float | None = None,
    backend: str = "auto",
    links: tuple[np.ndarray, np.ndarray] | None = None,
    observe: Callable[[float, RunResult], None] | None = None,
) -> Capacity:
    """MLPerf server search: the highest rate lambda at which p99 TTFT and TPOT meet `slo`.

    The same request lengths and unit-rate arrivals are reused at every rate (common random
    numbers), so the outcome is monotone in lambda up to simulation noise. Bisection on
    log(lambda) stops when the bracket is within `rel_tol`. `backend` as in `simulate`.
    `links` (each row's parent and gap, see `sessions`) searches the rate of session starts
    instead: `unit_arrivals` are then each row's session start at unit rate, and the limits
    apply to every turn. `observe(rate, result)` sees every run.
    """
    if not 0 < rel_tol < 1:
        raise InputError(f"rel_tol must be in (0, 1); got {rel_tol}.")
    evals: list[tuple[float, bool]] = []
    points: list[tuple[float, float, float, float]] = []
    cache: dict[float, RunResult] = {}

    def run(rate: float) -> bool:
        arrivals = unit_arrivals / rate
        span = float(arrivals[-1])
        until = 50.0 * span + SECONDS_PER_DAY
        if links is None:
            res = simulate(cfg, requests.with_arrivals(arrivals), until_s=until, backend=backend)
        else:
            res = sessions(cfg, requests.with_arrivals(arrivals), *links, until_s=until, backend=backend)
        if observe is not None:
            observe(rate, res)
        for old in [r for r in cache if r not in (lo, hi)]:  # only the bracket's runs are needed
            del cache[old]
        cache[rate] = res
        ok = res.meets(slo)
        evals.append((rate, ok))
        served = ~res.rejected
        mean_out = float(res.output_tokens[served].mean()) if served.any() else 0.0
        points.append((rate, rate * mean_out, res.percentile("ttft_s", 99), res.percentile("tpot_s", 99)))
        return ok

    if rate_hint is None:
        rate_hint = offline_rate_hint(cfg, requests, backend=backend)
    hi = max(rate_hint * 1.25, 1e-6)
    lo = None
    if run(hi):
        while len(evals) < max_evaluations:
            lo, hi = hi, hi * 2.0
            if not run(hi):
                break
        else:
            return _with_frontier(
                points, Capacity(hi, cache[hi], slo, rel_tol, tuple(evals), "not saturated")
            )
    else:
        rate = hi
        while len(evals) < max_evaluations:
            rate /= 3.0
            if run(rate):
                lo = rate
                break
            hi = rate
        if lo is None:
            return _with_frontier(
                points,
                Capacity(
                    0.0,
                    None,
                    slo,
                    rel_tol,
                    tuple(evals),
                    "SLO not met even at low load (latency floor above the limit)",
                    limited_by=cache[rate].violations(slo),
                ),
            )
    assert lo is not None
    while hi / lo > 1.0 + rel_tol and len(evals) < max_evaluations:
        mid = math.sqrt(lo * hi)
        if run(mid):
            lo = mid
        else:
            hi = mid
    return _with_frontier(
        points, Capacity(lo, cache[lo], slo, rel_tol, tuple(evals), limited_by=cache[hi].violations(slo))
    )


def _with_frontier(points: list[tuple[float, float, float, float]], cap: Capacity) -> Capacity:
    """The capacity with the throughput-latency points of its search, sorted by rate."""
    return replace(cap, frontier=tuple(sorted(points)))


def with_scheduler(cfg: ReplicaConfig, scheduler: str) -> ReplicaConfig:
    """The same replica under another scheduler (see `SCHEDULERS`)."""
    return replace(cfg, scheduler=scheduler)
