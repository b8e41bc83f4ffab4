"""Prefill/decode disaggregation (Splitwise, DistServe, Mooncake): a pool of prefill replicas hands
each prompt's KV cache to a pool of decode replicas over a link.

A request arriving is sent by the router to a prefill replica. Its prefill there ends with the
first token, so its TTFT is set by the prefill pool alone (no decode queueing in it), and its KV
is then freed there. The prompt's KV (`transfer_bytes`: full-attention KV per token x prompt
tokens, plus the windowed layers' window) crosses that prefill replica's link: transfers from
one replica go one at a time (bytes / bandwidth each, in the order their prefills ended), then
take the link's latency. The router picks the decode replica when the transfer starts; the
request joins that replica's batch as a decode once its KV has arrived and fits
(`Replica.submit_decode`), and it generates the rest of its tokens there. So TPOT (and the first
inter-token gap: the transfer, any wait for room, one decode step) is set by the decode side.

Simplifications: the prefill side frees the prompt's KV when its prefill ends (not when the
transfer does); a link carries one transfer at a time at full bandwidth (no fabric contention
between links); a request whose whole sequence can never fit a decode replica is rejected on
arrival, one whose prompt cannot fit a prefill replica is rejected by it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from functools import partial
from typing import Any

import numpy as np

from megawatt.errors import InputError
from megawatt.perf.factory import exported_coefficients
from megawatt.perf.roofline import StepCoefficients
from megawatt.serving.drivers import BACKENDS, ReplicaConfig
from megawatt.serving.kv import KvBudget
from megawatt.serving.metrics import RunResult
from megawatt.serving.replica import PREFIX_BLOCK_TOKENS, Replica, ReplicaStats
from megawatt.serving.timeline import Timeline
from megawatt.sim import Environment
from megawatt.workload import Requests

Router = Callable[[Sequence[int], int], int]
"""Picks a replica: `(outstanding requests per replica, how many picks before this one)` -> index."""


def _round_robin(loads: Sequence[int], k: int) -> int:
    return k % len(loads)


def _least_outstanding(loads: Sequence[int], k: int) -> int:
    return min(range(len(loads)), key=loads.__getitem__)  # ties: the lowest index


ROUTERS: dict[str, Router] = {
    "round_robin": _round_robin,
    "least_outstanding": _least_outstanding,
}
"""Replica routers of a disaggregated pair: `round_robin` (in turn) and `least_outstanding`
(fewest requests waiting, running or, for decode replicas, on their way)."""


def router(name: str) -> Router:
    """The router registered under `name`; an unknown name lists the known ones."""
    try:
        return ROUTERS[name]
    except KeyError:
        raise InputError(f"router must be one of {', '.join(sorted(ROUTERS))}; got {name!r}.") from None


@dataclass(frozen=True)
class KvLink:
    """The link a prefill replica sends KV caches over: bandwidth (bytes/s) and latency (s)."""

    bandwidth_bytes_per_s: float
    latency_s: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.bandwidth_bytes_per_s) and self.bandwidth_bytes_per_s > 0):
            raise InputError(f"KvLink bandwidth_bytes_per_s must be > 0; got {self.bandwidth_bytes_per_s}.")
        if not (math.isfinite(self.latency_s) and self.latency_s >= 0):
            raise InputError(f"KvLink latency_s must be >= 0; got {self.latency_s}.")

    def transfer_s(self, n_bytes: float) -> float:
        """Seconds to move `n_bytes` over an idle link: bytes / bandwidth + latency."""
        return n_bytes / self.bandwidth_bytes_per_s + self.latency_s


def transfer_bytes(kv: KvBudget, prompt_tokens: Any) -> Any:
    """KV bytes of a prompt of `prompt_tokens` tokens (no fragmentation: the data moved); an
    array of prompts gives an array."""
    windowed = np.minimum(prompt_tokens, kv.window_tokens) if kv.window_tokens else 0
    return kv.bytes_per_token * prompt_tokens + kv.bytes_per_token_windowed * windowed


@dataclass
class DisaggResult:
    """A disaggregated run: `result` is the per-request view of the whole pair (first token from
    the prefill side, finish from the decode side, preemptions of both, ITL samples of the decode
    side with each request's first gap; stats summed over every replica, `peak_kv_bytes` the
    largest replica peak; its timeline merges every replica's). Per request: the replicas it
    used (-1: none), when its KV was ready on the decode side, the bytes moved and how many
    times each side finished it (1 for every request that completed; a check)."""

    result: RunResult
    prefill_replica: np.ndarray
    decode_replica: np.ndarray
    kv_ready_s: np.ndarray
    transfer_bytes: np.ndarray
    n_prefill_finishes: np.ndarray
    n_decode_finishes: np.ndarray
    prefill_stats: tuple[ReplicaStats, ...]
    decode_stats: tuple[ReplicaStats, ...]
    prefill_timeline: Timeline
    decode_timeline: Timeline

    @property
    def transfer_s(self) -> np.ndarray:
        """Seconds from the first token to the KV ready on the decode side (queueing on the
        link included; NaN where nothing was sent)."""
        out: np.ndarray = self.kv_ready_s - self.result.first_token_s
        return out


def _summed(stats: Sequence[ReplicaStats]) -> ReplicaStats:
    out = ReplicaStats()
    for f in fields(ReplicaStats):
        values = [getattr(s, f.name) for s in stats]
        setattr(out, f.name, max(values) if f.name == "peak_kv_bytes" else sum(values))
    return out


def disaggregated(
    prefill: ReplicaConfig,
    decode: ReplicaConfig,
    requests: Requests,
    link: KvLink,
    *,
    n_prefill: int = 1,
    n_decode: int = 1,
    router_name: str = "least_outstanding",
    until_s: float | None = None,
    prefix_blocks: Sequence[np.ndarray] | None = None,
    prefix_block_tokens: int = PREFIX_BLOCK_TOKENS,
    n_in_flight: int = 0,
    backend: str = "auto",
) -> DisaggResult:
    """Open loop on a P:D pair: `n_prefill` replicas of `prefill` and `n_decode` of `decode`,
    KV over `link` (one per prefill replica), replicas picked by `router_name` (see `ROUTERS`).
    Stops when all requests are done, or at `until_s`. `prefix_blocks` gives the prefill
    replicas hashed prefix caches (see `simulate`).

    `backend` as in `simulate`: the compiled pair (`serving.compiled.run_pair_fast`, the same
    events in the same order, each replica stepped by the compiled replica's helpers) gives the
    Python replicas' run; it needs both step models' coefficients, no `prefix_blocks` and one of
    the built-in routers, and `auto` takes it whenever it can.

    `n_in_flight` > 0 runs a closed loop instead (a serving benchmark's client, as
    `drivers.concurrency`): the requests' `arrival_s` are ignored, the first `n_in_flight`
    arrive at the start and each completion or rejection issues the next in table order; the
    result's `arrival_s` are the issue times."""
    _check_pair(n_prefill, n_decode, n_in_flight)
    pick = router(router_name)
    n = len(requests)
    closed = n_in_flight > 0
    if closed:
        requests = requests.with_arrivals(np.zeros(n))
    arrival = np.array(requests.arrival_s, dtype=np.float64)
    start_s = min(0.0, float(arrival[0])) if n else 0.0
    if until_s is not None and not until_s >= start_s:
        raise InputError(f"run: until must be >= now ({start_s}); got {until_s}.")
    coefficients = _pair_coefficients(prefill, decode, backend, router_name, prefix_blocks)
    if coefficients is not None:
        return _compiled_pair(
            prefill, decode, requests, link, coefficients, arrival,
            n_prefill=n_prefill, n_decode=n_decode, router_name=router_name, until_s=until_s,
            n_in_flight=n_in_flight,
        )
    return _python_pair(
        prefill, decode, requests, link, arrival, pick, (n_prefill, n_decode, n_in_flight),
        until_s, prefix_blocks, prefix_block_tokens,
    )


def _python_pair(
    prefill: ReplicaConfig,
    decode: ReplicaConfig,
    requests: Requests,
    link: KvLink,
    arrival: np.ndarray,
    pick: Router,
    counts: tuple[int, int, int],
    until_s: float | None,
    prefix_blocks: Sequence[np.ndarray] | None,
    prefix_block_tokens: int,
) -> DisaggResult:
    """`disaggregated` on the Python replicas: `counts` are the prefill and decode replicas and
    the closed loop's requests in flight."""
    n_prefill, n_decode, n_in_flight = counts
    n = len(requests)
    closed = n_in_flight > 0
    start_s = min(0.0, float(arrival[0])) if n else 0.0
    prompt = requests.prompt_tokens.tolist()
    output = requests.output_tokens.tolist()
    env = Environment(start_s)
    prefill_requests = _first_tokens_only(requests, arrival)
    first, finish, rejected = np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, dtype=bool)
    kv_ready, moved = np.full(n, np.nan), np.zeros(n)
    prefill_of, decode_of = np.full(n, -1, dtype=np.int64), np.full(n, -1, dtype=np.int64)
    n_prefilled, n_decoded = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    link_free, inbound = [env.now] * n_prefill, [0] * n_decode
    picks = [0, 0]
    issued = [min(n_in_flight, n) if closed else n]

    def settled() -> None:
        """A request is done or turned away: a closed loop's client sends the next one."""
        if closed and issued[0] < n:
            i = issued[0]
            issued[0] += 1
            arrival[i] = env.now
            env.schedule(0.0, arrive, i, False, priority=-1)

    def prefilled(p: int, i: int) -> None:
        n_prefilled[i] += 1
        rep = prefill_reps[p]
        if math.isnan(rep.first_token_s[i]):  # turned away: the prompt can never fit
            rejected[i] = True
            finish[i] = env.now
            settled()
            return
        first[i] = rep.first_token_s[i]
        if output[i] <= 1:
            finish[i] = env.now
            settled()
            return
        moved[i] = transfer_bytes(prefill.kv, prompt[i])
        start = max(env.now, link_free[p])
        link_free[p] = start + moved[i] / link.bandwidth_bytes_per_s
        d = pick([r.outstanding + inbound[k] for k, r in enumerate(decode_reps)], picks[1])
        picks[1] += 1
        decode_of[i] = d
        inbound[d] += 1
        env.schedule_at(link_free[p] + link.latency_s, deliver, d, i, priority=-1)

    def deliver(d: int, i: int) -> None:
        inbound[d] -= 1
        kv_ready[i] = env.now
        decode_reps[d].submit_decode(i, float(first[i]))

    def decoded(d: int, i: int) -> None:
        n_decoded[i] += 1
        finish[i] = env.now
        settled()

    prefill_reps = [
        prefill.build(
            env,
            prefill_requests,
            partial(prefilled, p),
            prefix_blocks,
            prefix_block_tokens,
        )
        for p in range(n_prefill)
    ]
    decode_reps = [decode.build(env, requests, partial(decoded, d)) for d in range(n_decode)]

    def arrive(i: int, chain: bool = True) -> None:
        if chain and i + 1 < n:
            env.schedule_at(float(arrival[i + 1]), arrive, i + 1, priority=-1)
        if decode.kv.sequence_bytes(prompt[i] + output[i] - 1) > decode.kv.capacity_bytes:
            rejected[i] = True
            finish[i] = env.now
            settled()
            return
        p = pick([r.outstanding for r in prefill_reps], picks[0])
        picks[0] += 1
        prefill_of[i] = p
        prefill_reps[p].submit(i)

    if closed:
        for i in range(issued[0]):
            env.schedule_at(0.0, arrive, i, False, priority=-1)
    elif n:
        env.schedule_at(float(arrival[0]), arrive, 0, priority=-1)
    env.run(until=until_s)
    for rep in (*prefill_reps, *decode_reps):
        rep.settle()

    return _collect(
        requests, arrival, first, finish, rejected, env.now, _Side.of(prefill_reps),
        _Side.of(decode_reps), (prefill_of, decode_of, kv_ready, moved, n_prefilled, n_decoded),
    )


def _pair_coefficients(
    prefill: ReplicaConfig,
    decode: ReplicaConfig,
    backend: str,
    router_name: str,
    prefix_blocks: Sequence[np.ndarray] | None,
) -> tuple[StepCoefficients, StepCoefficients] | None:
    """Both sides' step coefficients when the compiled pair runs this (see `disaggregated`),
    else None; errors for `fast` when it cannot."""
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}.")
    if backend == "python":
        return None
    pair = (exported_coefficients(prefill.step_model), exported_coefficients(decode.step_model))
    why = (
        "a step model without coefficients()" if pair[0] is None or pair[1] is None
        else "prefix_blocks" if prefix_blocks is not None
        else f"router {router_name!r}" if ROUTERS.get(router_name) not in (_round_robin, _least_outstanding)
        else ""
    )
    if why and backend == "fast":
        raise InputError(
            f"backend 'fast' cannot run this pair: it has {why}. Use backend='python' or 'auto'."
        )
    if why or pair[0] is None or pair[1] is None:
        return None
    return pair[0], pair[1]


def _compiled_pair(
    prefill: ReplicaConfig,
    decode: ReplicaConfig,
    requests: Requests,
    link: KvLink,
    coefficients: tuple[StepCoefficients, StepCoefficients],
    arrival: np.ndarray,
    *,
    n_prefill: int,
    n_decode: int,
    router_name: str,
    until_s: float | None,
    n_in_flight: int,
) -> DisaggResult:
    """`disaggregated` on the compiled pair (`serving.compiled.run_pair_fast`)."""
    from megawatt.serving.compiled import Pair, run_pair_fast  # compiles on first use

    n = len(requests)
    prompt = np.asarray(requests.prompt_tokens)
    moved = np.asarray(transfer_bytes(prefill.kv, prompt), dtype=np.float64)
    sides = tuple(
        (c, cfg.kv, cfg.scheduler, cfg.max_num_seqs, cfg.max_num_batched_tokens, cfg.timeline_bin_s)
        for c, cfg in zip(coefficients, (prefill, decode), strict=True)
    )
    pair = Pair(
        n_prefill, n_decode, router_name == "least_outstanding", link.bandwidth_bytes_per_s,
        link.latency_s, n_in_flight, until_s is not None,
        float(until_s) if until_s is not None else math.inf,
    )
    start_s = min(0.0, float(arrival[0])) if n else 0.0
    run = run_pair_fast(sides, requests, arrival, moved, pair, start_s)
    order = np.argsort(run.itl_replica, kind="stable")  # each decode replica's samples in turn

    def side(lo: int, hi: int, itl: bool) -> _Side:
        return _Side(
            list(run.preemptions[lo:hi]), list(run.cache_hits[lo:hi]),
            [run.itl_s[order]] if itl else [], [run.itl_n[order]] if itl else [],
            run.stats[lo:hi], list(run.timelines[lo:hi]),
        )

    return _collect(
        requests, run.arrival_s, run.first_token_s, run.finish_s, run.rejected, run.end_s,
        side(0, n_prefill, False), side(n_prefill, n_prefill + n_decode, True),
        (run.prefill_of, run.decode_of, run.kv_ready_s, run.moved_bytes, run.n_prefilled,
         run.n_decoded),
    )


def _check_pair(n_prefill: int, n_decode: int, n_in_flight: int) -> None:
    if n_prefill < 1 or n_decode < 1:
        raise InputError(
            f"a disaggregated pair needs n_prefill >= 1 and n_decode >= 1; got {n_prefill} and {n_decode}."
        )
    if n_in_flight < 0:
        raise InputError(f"n_in_flight must be >= 0 (0: open loop); got {n_in_flight}.")


def _first_tokens_only(requests: Requests, arrival: np.ndarray) -> Requests:
    """The table a prefill replica serves: the requests arriving at `arrival`, each stopping at
    its first token."""
    return Requests(
        arrival_s=arrival,
        prompt_tokens=requests.prompt_tokens,
        output_tokens=np.ones(len(requests), dtype=np.int64),
        cached_tokens=requests.cached_tokens,
        class_id=requests.class_id,
        class_names=requests.class_names,
    )


@dataclass
class _Side:
    """One side's replicas as a pair's result reads them: per replica its requests'
    preemptions and cache hits, its ITL samples (seconds; tokens each), stats and timeline."""

    preemptions: list[np.ndarray]
    cache_hits: list[np.ndarray]
    itl_s: list[np.ndarray]
    itl_n: list[np.ndarray]
    stats: tuple[ReplicaStats, ...]
    timelines: list[Timeline]

    @staticmethod
    def of(reps: Sequence[Replica]) -> _Side:
        """The Python replicas' (their prefix caches' evictions counted in their stats)."""
        for rep in reps:
            if rep.cache is not None:
                rep.stats.prefix_evicted_blocks = rep.cache.n_evicted
        return _Side(
            [np.array(rep.preemptions, dtype=np.int64) for rep in reps],
            [np.array(rep.cache_hits, dtype=np.int64) for rep in reps],
            [a for rep in reps for a in rep.itl_s],
            [a for rep in reps for a in rep.itl_n],
            tuple(rep.stats for rep in reps),
            [rep.timeline for rep in reps],
        )


def _collect(
    requests: Requests,
    arrival: np.ndarray,
    first: np.ndarray,
    finish: np.ndarray,
    rejected: np.ndarray,
    end_s: float,
    prefill_side: _Side,
    decode_side: _Side,
    per_request: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> DisaggResult:
    """A P:D run's result from its replicas: the run as one table (preemptions and cache hits
    summed over both sides, decode ITLs, stats and timelines merged) and each side's own;
    `per_request` is (prefill replica, decode replica, KV ready time, bytes moved, prefill
    finishes, decode finishes)."""
    prefill_of, decode_of, kv_ready, moved, n_prefilled, n_decoded = per_request
    n = len(requests)
    preemptions = np.zeros(n, dtype=np.int64)
    cached = np.zeros(n, dtype=np.int64)
    for counts in (*prefill_side.preemptions, *decode_side.preemptions):
        preemptions += counts
    for hits in prefill_side.cache_hits:
        cached += hits
    itl_s, itl_n = decode_side.itl_s, decode_side.itl_n
    prefill_stats, decode_stats = prefill_side.stats, decode_side.stats
    prefill_timeline = Timeline.merged(prefill_side.timelines)
    decode_timeline = Timeline.merged(decode_side.timelines)
    result = RunResult(
        arrival_s=arrival,
        first_token_s=first,
        finish_s=finish,
        prompt_tokens=np.asarray(requests.prompt_tokens),
        output_tokens=np.asarray(requests.output_tokens),
        cached_tokens=cached,
        preemptions=preemptions,
        rejected=rejected,
        class_id=np.asarray(requests.class_id),
        class_names=requests.class_names,
        stats=_summed(prefill_stats + decode_stats),
        end_s=end_s,
        itl_s=np.concatenate(itl_s) if itl_s else np.zeros(0),
        itl_n=np.concatenate(itl_n) if itl_n else np.zeros(0),
        timeline_bins=Timeline.merged([prefill_timeline, decode_timeline]),
    )
    return DisaggResult(
        result=result,
        prefill_replica=prefill_of,
        decode_replica=decode_of,
        kv_ready_s=kv_ready,
        transfer_bytes=moved,
        n_prefill_finishes=n_prefilled,
        n_decode_finishes=n_decoded,
        prefill_stats=prefill_stats,
        decode_stats=decode_stats,
        prefill_timeline=prefill_timeline,
        decode_timeline=decode_timeline,
    )


def closed_loop_by_symmetry(
    prefill: ReplicaConfig,
    decode: ReplicaConfig,
    requests: Requests,
    link: KvLink,
    *,
    n_prefill: int,
    n_decode: int,
    n_in_flight: int,
    iterations: int = 6,
) -> RunResult:
    """A closed loop of `n_in_flight` over a P:D pair, estimated fast: one decode replica and one
    prefill replica on the compiled engine instead of the whole pair on the Python one.

    Round robin over identical replicas makes them alike: each decode replica serves
    `n_in_flight / n_decode` clients, each prefill replica every `n_prefill`-th request of the
    system's issue stream. So one decode replica runs the clients' closed loop, each request
    arriving after its issue by its prefill and KV transfer (`issue_delay_s`; on the decode side
    its prompt's KV is cached and its first decode step is a one-token chunk); one prefill
    replica runs its share of the issue stream that decode run implies (the decode replica's
    issues once per replica, the copies spread over the gap between its issues), its KV
    leaving over its link one transfer at a time; their delays feed the next decode run, until
    the issue times settle. The result holds the decode replica's requests (a sample of the
    system's: TTFT from the prefill side, TPOT and completions from the decode side) with
    `end_s` its last completion; the system's output rate is that sample's times
    `n_in_flight / clients per decode replica`.

    It agrees with `disaggregated(..., n_in_flight=...)` within a few percent on the median
    TTFT and TPOT and the output rate (tests/serving/test_disagg.py) and runs ~100x faster.
    """
    from megawatt.serving.drivers import concurrency, simulate

    if n_prefill < 1 or n_decode < 1 or n_in_flight < 1:
        raise InputError(
            "closed_loop_by_symmetry needs n_prefill, n_decode and n_in_flight >= 1; got "
            f"{n_prefill}, {n_decode} and {n_in_flight}."
        )
    n = len(requests)
    clients = max(1, round(n_in_flight / n_decode))  # per decode replica
    share = n_in_flight / clients  # decode replicas' worth of clients in the system
    n_dec = max(1, min(n, math.ceil(n / share)))
    system_of = np.minimum(np.round(np.arange(n_dec) * share).astype(np.int64), n - 1)
    prompt = requests.prompt_tokens[system_of]
    output = np.maximum(requests.output_tokens[system_of], 2)
    # The decode side: the prompt and first token cached; output - 1 tokens still to make.
    dec_requests = Requests(
        arrival_s=np.zeros(n_dec),
        prompt_tokens=prompt + 1,
        output_tokens=output - 1,
        cached_tokens=prompt,
        class_id=requests.class_id[system_of],
        class_names=requests.class_names,
    )
    # The prefill side: every n_prefill-th request of the system's issue stream.
    mine = np.arange(0, n, n_prefill, dtype=np.int64)
    pre_requests = Requests(
        arrival_s=np.zeros(mine.size),
        prompt_tokens=requests.prompt_tokens[mine],
        output_tokens=np.ones(mine.size, dtype=np.int64),
        cached_tokens=requests.cached_tokens[mine],
        class_id=requests.class_id[mine],
        class_names=requests.class_names,
    )
    nbytes = np.asarray(
        transfer_bytes(prefill.kv, np.asarray(pre_requests.prompt_tokens)), dtype=np.float64
    )
    delay = np.zeros(n_dec)
    ttft = np.zeros(n_dec)
    last_end = math.nan
    res: RunResult | None = None
    for _ in range(max(1, iterations)):
        res = concurrency(decode, dec_requests, clients, issue_delay_s=delay, stretch=True)
        issue = res.arrival_s - delay
        # The system's issues: the decode replica's, once per replica's worth of clients, the
        # copies spread over the mean gap between its issues (the other replicas complete at
        # other moments of the same rhythm: their requests' lengths differ); the first round
        # all at the start.
        order = np.maximum.accumulate(issue)
        later = order[clients:]
        gap = float(later[-1] - later[0]) / max(later.size - 1, 1) if later.size else 0.0
        copies = math.ceil(share)
        phase = np.arange(copies) * gap / copies
        spread = np.concatenate([order[:clients].repeat(copies), (later[:, None] + phase).ravel()])
        spread.sort()
        # ceil(share) copies thinned to share of them: the system's rate exactly.
        stream = spread[np.minimum((mine * (copies / share)).astype(np.int64), spread.size - 1)]
        pre = simulate(prefill, pre_requests.with_arrivals(stream))
        first = pre.first_token_s
        ready = np.full(mine.size, np.nan)
        free = 0.0
        for k in np.argsort(first, kind="stable"):  # transfers leave in prefill order
            if math.isnan(first[k]):
                continue
            start = max(float(first[k]), free)
            free = start + nbytes[k] / link.bandwidth_bytes_per_s
            ready[k] = free + link.latency_s
        got = ~np.isnan(ready)
        if not got.any():
            break
        at = mine[got].astype(np.float64)
        delay = np.interp(system_of, at, (ready - stream)[got])
        ttft = np.interp(system_of, at, (first - stream)[got])
        end = res.end_s
        if math.isfinite(last_end) and abs(end - last_end) <= 1e-3 * end:
            break
        last_end = end
    assert res is not None
    res = concurrency(decode, dec_requests, clients, issue_delay_s=delay, stretch=True) if iterations else res
    issue = res.arrival_s - delay
    done = ~res.rejected
    return replace(
        res,
        arrival_s=issue,
        first_token_s=np.where(done, issue + ttft, np.nan),
        prompt_tokens=prompt,
        output_tokens=output,
    )
