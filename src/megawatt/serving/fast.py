"""The open-loop replica compiled (numba): the same scheduling as `Replica`, one step at a time
over columnar arrays, with the roofline step model evaluated from its coefficients.

It mirrors `replica.py` literally (decode first, preemption of the newest, chunked prefill,
admission, KV growth, the idle start after every arrival of an instant, backlog at the last
arrival, `until`), so a run gives the same per-request table, stats, ITL samples and timeline as
the Python replica simulated step by step. It has no hashed prefix cache (only the idealised
`cached_tokens` column) and no requests prefilled elsewhere: those runs take the Python replica.
The first call compiles the kernel (seconds; cached on disk after that).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from megawatt.errors import InputError
from megawatt.perf.step import StepCoefficients
from megawatt.serving.metrics import RunResult
from megawatt.serving.replica import KvBudget, ReplicaStats
from megawatt.serving.scheduler import SchedulerPolicy, scheduler
from megawatt.serving.timeline import DEFAULT_BIN_S, DEFAULT_MAX_BINS, Timeline
from megawatt.workload import Requests

# Request states, as in replica.py.
_WAITING, _RUNNING, _DONE, _REJECTED = 0, 1, 2, 3
# Stats slots of the kernel's output, in ReplicaStats order.
_BUSY, _N_STEPS, _SEQ_S, _KV_S, _PREFILL, _DECODE, _PEAK = range(7)
# Timeline rows (Timeline's arrays) and its scalars.
_TL_BUSY, _TL_SEQ, _TL_KV, _TL_TOKENS = range(4)
_TL_BIN_S, _TL_N_BINS, _TL_LAST = range(3)


@njit(cache=True)
def _seq_bytes(ctx: float, bpt: float, bptw: float, window: int, half_block: float) -> float:
    """KvBudget.sequence_bytes."""
    if ctx <= 0:
        return 0.0
    out = bpt * (ctx + half_block)
    if window > 0:
        out += bptw * min(ctx, window)
    return out


@njit(cache=True, inline="always")  # a call per step: inlined, it costs little
def _timeline_add(
    bins: np.ndarray,
    meta: np.ndarray,
    origin: float,
    start: float,
    end: float,
    batch: float,
    kv: float,
    tokens: float,
) -> None:
    """Timeline.add_step over the kernel's arrays (`bins`: 4 x max_bins; `meta`: bin_s,
    n_bins, last_s)."""
    m = bins.shape[1]
    w = meta[_TL_BIN_S]
    while math.ceil((end - origin) / w) > m:
        half = m // 2
        for r in range(4):
            for b in range(half):  # reads 2b, 2b + 1 >= b: not yet overwritten
                bins[r, b] = bins[r, 2 * b] + bins[r, 2 * b + 1]
            for b in range(half, m):
                bins[r, b] = 0.0
        w *= 2.0
        meta[_TL_N_BINS] = math.floor((meta[_TL_N_BINS] + 1.0) / 2.0)
    meta[_TL_BIN_S] = w
    first = math.floor((start - origin) / w)
    last = max(math.ceil((end - origin) / w) - 1, first)
    for b in range(first, last + 1):
        lo = max(start, origin + b * w)
        hi = min(end, origin + (b + 1) * w)
        if hi > lo:
            bins[_TL_BUSY, b] += hi - lo
            bins[_TL_SEQ, b] += batch * (hi - lo)
            bins[_TL_KV, b] += kv * (hi - lo)
    bins[_TL_TOKENS, last] += tokens
    meta[_TL_N_BINS] = max(meta[_TL_N_BINS], last + 1.0)
    meta[_TL_LAST] = max(meta[_TL_LAST], end)


@njit(cache=True, inline="always")
def _preempt(
    victim: int,
    kv_used: float,
    w_head: int,
    w_count: int,
    kv_bytes: np.ndarray,
    ctx: np.ndarray,
    target: np.ndarray,
    prompt: np.ndarray,
    generated: np.ndarray,
    done: np.ndarray,
    state: np.ndarray,
    preemptions: np.ndarray,
    waiting: np.ndarray,
) -> tuple[float, int, int]:
    """Replica._preempt (recompute): free the victim's KV and put it back at the head of the
    waiting queue (a ring of `waiting.shape[0]` slots); returns the new KV in use, queue head
    and queue length. The caller takes it off the running list."""
    kv_used -= kv_bytes[victim]
    kv_bytes[victim] = 0.0
    ctx[victim] = 0
    target[victim] = prompt[victim] + generated[victim]
    done[victim] = 0
    state[victim] = _WAITING
    preemptions[victim] += 1
    w_head = (w_head - 1) % waiting.shape[0]
    waiting[w_head] = victim
    return kv_used, w_head, w_count + 1


_StepArrays = tuple[
    np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
    float, float, float, float, int, float, float, float,
]
"""The step coefficients `_run` takes, bundled for `_step_s`."""


@njit(cache=True, inline="always")
def _step_s(
    x: np.ndarray,
    tokens: float,
    n_logits: float,
    dctx: float,
    dwin: float,
    dmax: float,
    n_dec: float,
    p_att: float,
    p_win: float,
    p_tok: float,
    big_tok: float,
    big_att: float,
    big_win: float,
    units: float,
    n_seqs: float,
    eager: float,
    model: _StepArrays,
) -> float:
    """RooflineStepModel._features and _times for one batch's aggregates (`eager`: 1 when the
    step carries a prompt chunk); `model`: the step coefficients as `_run` takes them (flops,
    nbytes, rate, bw, comm, latency, step_overhead, seq_overhead, depth, model_window,
    n_experts, top_k, prefill_overhead)."""
    flops, nbytes, rate, bw, comm, latency, step_overhead, seq_overhead = model[:8]
    depth, model_window, n_experts, top_k, prefill_overhead = model[8:]
    mb = max(min(units, depth), 1.0)
    x[0] = 1.0
    x[1] = tokens / mb
    x[2] = n_logits / mb
    others = max(n_dec - 1.0, 1.0)
    extra = max(n_dec / mb - 1.0, 0.0)
    x[3] = max(dctx / mb, dmax + extra * (dctx - dmax) / others)
    if model_window > 0:
        wmax = min(dmax, float(model_window))
        x[4] = max(dwin / mb, wmax + extra * (dwin - wmax) / others)
    else:
        x[4] = dwin / mb
    x[5] = p_att / mb
    x[6] = p_win / mb
    x[8] = p_tok / mb
    x[9] = big_tok
    x[10] = big_att
    x[11] = big_win
    if n_experts > 0:
        x[7] = n_experts * (1.0 - (1.0 - top_k / n_experts) ** x[1])
    else:
        x[7] = 0.0
    n_feat = x.shape[0]
    ops = 0.0
    for j in range(flops.shape[0]):
        fl = 0.0
        by = 0.0
        for f in range(n_feat):
            fl += flops[j, f] * x[f]
            by += nbytes[j, f] * x[f]
        ops += max(fl / rate[j], by / bw[j])
    cm = 0.0
    for f in range(n_feat):
        cm += comm[f] * x[f]
    return ops + cm + latency + step_overhead + seq_overhead * n_seqs + prefill_overhead * eager


@njit(cache=True)
def _run(
    arrival: np.ndarray,
    prompt: np.ndarray,
    output: np.ndarray,
    cached: np.ndarray,
    chunked: bool,
    admit_while_running: bool,
    max_num_seqs: int,
    max_tokens: int,
    capacity: float,
    bpt: float,
    bptw: float,
    kv_window: int,
    block_tokens: int,
    flops: np.ndarray,
    nbytes: np.ndarray,
    rate: np.ndarray,
    bw: np.ndarray,
    comm: np.ndarray,
    latency: float,
    step_overhead: float,
    seq_overhead: float,
    depth: float,
    model_window: int,
    n_experts: float,
    top_k: float,
    prefill_overhead: float,
    prefill_unit: float,
    spec_k: int,
    spec_tokens: float,
    spec_cost: float,
    spec_pipelined: bool,
    start_s: float,
    has_until: bool,
    until_s: float,
    bin_s: float,
    max_bins: int,
    n_in_flight: int,
    issue_delay: np.ndarray,
) -> tuple[
    np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
    int, float, np.ndarray, np.ndarray, np.ndarray,
]:
    n = arrival.shape[0]
    # Closed loop (n_in_flight > 0, drivers.concurrency): the first n_in_flight requests arrive
    # at the start, each later one when an earlier one completes or is rejected (it then joins
    # the next step, as the Python driver's submit scheduled after the step end), each
    # `issue_delay` after its issue, in issue order.
    issued = n
    if n_in_flight > 0:
        issued = min(n_in_flight, n)
        for i in range(n):
            arrival[i] = math.inf
            if i < issued:
                arrival[i] = start_s + issue_delay[i]
                if i > 0:
                    arrival[i] = max(arrival[i], arrival[i - 1])
    half_block = block_tokens / 2.0
    n_feat = flops.shape[1]

    state = np.zeros(n, np.int64)
    target = prompt.copy()
    done = np.zeros(n, np.int64)
    ctx = np.zeros(n, np.int64)
    generated = np.zeros(n, np.int64)
    kv_bytes = np.zeros(n, np.float64)
    first_token = np.full(n, np.nan)
    finish = np.full(n, np.nan)
    preemptions = np.zeros(n, np.int64)
    cache_hits = np.zeros(n, np.int64)
    stats = np.zeros(7, np.float64)

    cap = n + 1
    waiting = np.zeros(cap, np.int64)  # a ring buffer: head, count
    w_head = 0
    w_count = 0
    running = np.zeros(n + 1, np.int64)
    n_run = 0
    decodes = np.zeros(n + 1, np.int64)
    partial = np.zeros(n + 1, np.int64)
    chunk_i = np.zeros(n + 1, np.int64)
    chunk_c = np.zeros(n + 1, np.int64)
    finished = np.zeros(n + 1, np.int64)
    x = np.zeros(n_feat, np.float64)
    model = (
        flops, nbytes, rate, bw, comm, latency, step_overhead, seq_overhead, depth, model_window,
        n_experts, top_k, prefill_overhead,
    )

    itl_cap = 1024
    itl_s = np.zeros(itl_cap, np.float64)
    itl_n = np.zeros(itl_cap, np.int64)
    n_itl = 0
    bins = np.zeros((4, max_bins), np.float64)
    meta = np.array([bin_s, 0.0, start_s])

    kv_used = 0.0
    busy = False
    now = start_s
    ai = 0
    backlog = 0
    pending = False  # a step is in progress, ending at t_end
    t_end = 0.0
    n_dec = 0
    n_chunks = 0
    start_now = False  # run _start_step now

    while True:
        if start_now:
            start_now = False
            pending = False
            # ---- _start_step ------------------------------------------------------------
            while True:
                if n_run == 0 and w_count == 0:
                    busy = False
                    break
                busy = True
                n_dec = 0
                n_part = 0
                for r in range(n_run):
                    i = running[r]
                    if done[i] >= target[i]:
                        decodes[n_dec] = i
                        n_dec += 1
                    else:
                        partial[n_part] = i
                        n_part += 1
                need = 0.0
                for d in range(n_dec):
                    i = decodes[d]
                    need += _seq_bytes(ctx[i] + 1, bpt, bptw, kv_window, half_block) - kv_bytes[i]
                while need > (capacity - kv_used) + 1e-6 and n_run > 0:
                    victim = running[n_run - 1]
                    if n_dec > 0 and decodes[n_dec - 1] == victim:
                        need -= (
                            _seq_bytes(ctx[victim] + 1, bpt, bptw, kv_window, half_block)
                            - kv_bytes[victim]
                        )
                        n_dec -= 1
                    else:
                        n_part -= 1
                    n_run -= 1
                    kv_used, w_head, w_count = _preempt(
                        victim, kv_used, w_head, w_count, kv_bytes, ctx, target, prompt,
                        generated, done, state, preemptions, waiting,
                    )
                budget = max_tokens - n_dec
                free = (capacity - kv_used) - need
                n_chunks = 0
                for p in range(n_part):
                    i = partial[p]
                    left = target[i] - done[i]
                    c = min(left, budget) if chunked else left
                    if c <= 0 or (not chunked and c > budget and (n_chunks > 0 or n_dec > 0)):
                        break
                    grow = _seq_bytes(done[i] + c, bpt, bptw, kv_window, half_block) - kv_bytes[i]
                    if grow > free:
                        break
                    free -= grow
                    budget -= c
                    chunk_i[n_chunks] = i
                    chunk_c[n_chunks] = c
                    n_chunks += 1
                if admit_while_running or n_run == 0:
                    while w_count > 0 and n_run < max_num_seqs:
                        i = waiting[w_head]
                        start = min(cached[i], target[i] - 1)
                        left = target[i] - start
                        if chunked:
                            c = min(left, budget)
                            if c <= 0:
                                break
                        elif not admit_while_running:
                            c = left
                        else:
                            c = left
                            if c > budget and (n_chunks > 0 or n_dec > 0):
                                break
                        if not admit_while_running:
                            reserve = prompt[i] + output[i] - 1
                        else:
                            reserve = start + c
                        grow = _seq_bytes(reserve, bpt, bptw, kv_window, half_block)
                        if grow > free:
                            break
                        w_head = (w_head + 1) % cap
                        w_count -= 1
                        running[n_run] = i
                        n_run += 1
                        state[i] = _RUNNING
                        done[i] = start
                        cache_hits[i] = start
                        new = _seq_bytes(start, bpt, bptw, kv_window, half_block)
                        kv_used += new - kv_bytes[i]
                        kv_bytes[i] = new
                        ctx[i] = start
                        free -= grow
                        budget -= c
                        chunk_i[n_chunks] = i
                        chunk_c[n_chunks] = c
                        n_chunks += 1
                if n_dec == 0 and n_chunks == 0:
                    if n_run > 0:
                        # Nothing fits (the cache is held by partial prefills): preempt the newest.
                        victim = running[n_run - 1]
                        n_run -= 1
                        kv_used, w_head, w_count = _preempt(
                            victim, kv_used, w_head, w_count, kv_bytes, ctx, target, prompt,
                            generated, done, state, preemptions, waiting,
                        )
                        continue
                    busy = False
                    break
                # ---- _run_step: the batch's aggregates (BatchShape.of) ------------------
                dctx = 0.0
                dwin = 0.0
                dmax = 0.0
                for d in range(n_dec):
                    cx = float(ctx[decodes[d]] + 1)
                    dctx += cx
                    if kv_window > 0:
                        dwin += min(cx, float(kv_window))
                    if cx > dmax:
                        dmax = cx
                p_att = 0.0
                p_win = 0.0
                p_tok = 0
                big_tok = 0
                big_att = 0.0
                big_win = 0.0
                n_logits = n_dec
                for q in range(n_chunks):
                    i = chunk_i[q]
                    c = chunk_c[q]
                    span = done[i] + (c + 1) / 2.0
                    att = c * span
                    win = c * min(span, float(kv_window)) if kv_window > 0 else 0.0
                    p_att += att
                    p_win += win
                    p_tok += c
                    if c > big_tok:
                        big_tok = c
                        big_att = att
                        big_win = win
                    if done[i] + c >= target[i]:
                        n_logits += 1
                n_seqs = n_dec + n_chunks
                tokens = float(n_dec + p_tok)
                units = n_dec + max(float(n_chunks), p_tok / prefill_unit)
                fdec = float(n_dec)
                eager = 1.0 if big_tok > 1 else 0.0  # a prompt chunk (one token: a decode)
                if spec_k == 0 or n_dec == 0:
                    dt = _step_s(
                        x, tokens, float(n_logits), dctx, dwin, dmax, fdec, p_att, p_win,
                        float(p_tok), float(big_tok), big_att, big_win, units, float(n_seqs),
                        eager, model,
                    )
                else:
                    # ---- SpeculativeStepModel.step_time: a verify pass over k + 1 tokens per
                    # decoding sequence (the extra ones priced as a chunk), plus k drafts.
                    fk = float(spec_k)
                    extra_tok = n_dec * spec_k
                    span = (fk + 1.0) / 2.0
                    v_tok = p_tok + extra_tok
                    v_win = p_win + (fk * (dwin + fdec * span) if model_window > 0 else 0.0)
                    dt = _step_s(
                        x, float(n_dec + v_tok), float(n_logits + extra_tok), dctx, dwin, dmax,
                        fdec, p_att + fk * (dctx + fdec * span), v_win, float(v_tok),
                        float(big_tok), big_att, big_win,
                        n_dec + max(float(n_chunks), v_tok / prefill_unit), float(n_seqs),
                        eager, model,
                    )
                    if spec_pipelined:
                        pd = n_dec * (spec_k + 1)
                        pspan = fdec * fk * (fk + 1.0) / 2.0
                        piped = _step_s(
                            x, float(pd + p_tok), float(n_logits + extra_tok),
                            (fk + 1.0) * dctx + pspan,
                            (fk + 1.0) * dwin + (pspan if model_window > 0 else 0.0),
                            dmax + fk, float(pd), p_att, p_win, float(p_tok), float(big_tok),
                            big_att, big_win, pd + max(float(n_chunks), p_tok / prefill_unit),
                            float(pd + n_chunks), eager, model,
                        )
                        dt = min(dt, piped)
                    draft = _step_s(
                        x, fdec, fdec, dctx, dwin, dmax, fdec, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                        fdec, fdec, 0.0, model,
                    )
                    dt = (dt + spec_cost * fk * draft) / spec_tokens
                # Reserve the KV the step writes now, so arrivals during the step see it taken.
                for d in range(n_dec):
                    i = decodes[d]
                    new = _seq_bytes(ctx[i] + 1, bpt, bptw, kv_window, half_block)
                    kv_used += new - kv_bytes[i]
                    kv_bytes[i] = new
                    ctx[i] = ctx[i] + 1
                for q in range(n_chunks):
                    i = chunk_i[q]
                    cx = done[i] + chunk_c[q]
                    new = _seq_bytes(cx, bpt, bptw, kv_window, half_block)
                    kv_used += new - kv_bytes[i]
                    kv_bytes[i] = new
                    ctx[i] = cx
                stats[_N_STEPS] += 1.0
                stats[_BUSY] += dt
                stats[_SEQ_S] += n_run * dt
                stats[_KV_S] += kv_used * dt
                stats[_PEAK] = max(stats[_PEAK], kv_used)
                stats[_PREFILL] += p_tok
                stats[_DECODE] += n_dec
                _timeline_add(bins, meta, start_s, now, now + dt, n_run, kv_used, n_logits)
                if n_dec > 0:
                    if n_itl == itl_cap:
                        itl_cap *= 2
                        grown_s = np.zeros(itl_cap, np.float64)
                        grown_n = np.zeros(itl_cap, np.int64)
                        grown_s[:n_itl] = itl_s
                        grown_n[:n_itl] = itl_n
                        itl_s = grown_s
                        itl_n = grown_n
                    itl_s[n_itl] = dt
                    itl_n[n_itl] = n_dec
                    n_itl += 1
                pending = True
                t_end = now + dt
                break
            continue

        if pending:
            # Arrivals up to the step's end come first (they run before a step end that ties).
            while ai < n and arrival[ai] <= t_end and (not has_until or arrival[ai] <= until_s):
                now = arrival[ai]
                if ai == n - 1:
                    backlog = w_count
                if _seq_bytes(prompt[ai] + output[ai] - 1, bpt, bptw, kv_window, half_block) > capacity:
                    state[ai] = _REJECTED
                    finish[ai] = now
                    if issued < n:
                        arrival[issued] = max(now + issue_delay[issued], arrival[issued - 1])
                        issued += 1
                else:
                    waiting[(w_head + w_count) % cap] = ai
                    w_count += 1
                ai += 1
            if has_until and t_end > until_s:
                break
            now = t_end
            pending = False
            # ---- _end_step ----------------------------------------------------------------
            n_fin = 0
            for d in range(n_dec):
                i = decodes[d]
                generated[i] += 1
                if generated[i] >= output[i]:
                    finished[n_fin] = i
                    n_fin += 1
            for q in range(n_chunks):
                i = chunk_i[q]
                done[i] += chunk_c[q]
                if done[i] >= target[i]:
                    generated[i] += 1
                    if math.isnan(first_token[i]):
                        first_token[i] = now
                    if generated[i] >= output[i]:
                        finished[n_fin] = i
                        n_fin += 1
            if n_fin > 0:
                for f in range(n_fin):
                    state[finished[f]] = _DONE
                kept = 0
                for r in range(n_run):
                    i = running[r]
                    if state[i] != _DONE:
                        running[kept] = i
                        kept += 1
                n_run = kept
                for f in range(n_fin):
                    i = finished[f]
                    kv_used -= kv_bytes[i]
                    kv_bytes[i] = 0.0
                    ctx[i] = 0
                    finish[i] = now
                    if issued < n:
                        arrival[issued] = max(now + issue_delay[issued], arrival[issued - 1])
                        issued += 1
            start_now = True
            continue

        # Idle: the next instant with arrivals; the step starts after all of them.
        if ai >= n:
            break
        t = arrival[ai]
        if has_until and t > until_s:
            break
        now = t
        while ai < n and arrival[ai] == t:
            if ai == n - 1:
                backlog = w_count
            if _seq_bytes(prompt[ai] + output[ai] - 1, bpt, bptw, kv_window, half_block) > capacity:
                state[ai] = _REJECTED
                finish[ai] = now
                if issued < n:
                    arrival[issued] = max(now + issue_delay[issued], arrival[issued - 1])
                    issued += 1
            else:
                waiting[(w_head + w_count) % cap] = ai
                w_count += 1
                if not busy:
                    busy = True
                    start_now = True
            ai += 1

    end_s = until_s if has_until else now
    return (
        state,
        first_token,
        finish,
        cache_hits,
        preemptions,
        stats,
        itl_s[:n_itl].copy(),
        itl_n[:n_itl].copy(),
        backlog,
        end_s,
        bins,
        meta,
        arrival,
    )


def simulate_fast(
    coefficients: StepCoefficients,
    kv: KvBudget,
    requests: Requests,
    *,
    policy: str | SchedulerPolicy = "vllm",
    max_num_seqs: int = 256,
    max_num_batched_tokens: int = 8192,
    until_s: float | None = None,
    timeline_bin_s: float = DEFAULT_BIN_S,
    n_in_flight: int = 0,
    issue_delay_s: np.ndarray | None = None,
) -> RunResult:
    """Open loop, compiled: what `drivers.simulate` gives with the Python `Replica`, for a step
    model given by its `coefficients` (seconds, bytes, tokens as there). It steps one step at a
    time, so `stats.n_stretches` is 0.

    `n_in_flight` > 0 runs a closed loop instead (what `drivers.concurrency` gives): the
    requests' `arrival_s` are ignored; the first `n_in_flight` arrive at 0 and each completion
    (or rejection) issues the next in table order at that instant. The result's `arrival_s` are
    the times each request reached the replica: its issue, plus `issue_delay_s` (per request,
    seconds; none by default) - e.g. the prefill and KV transfer of a disaggregated pair -
    kept in issue order."""
    if n_in_flight < 0:
        raise InputError(f"n_in_flight must be >= 0 (0: open loop); got {n_in_flight}.")
    n = len(requests)
    delay = np.zeros(n) if issue_delay_s is None else np.asarray(issue_delay_s, dtype=np.float64)
    if delay.shape != (n,) or not (np.isfinite(delay).all() and (delay >= 0).all()):
        raise InputError("issue_delay_s must hold one finite delay >= 0 per request.")
    if max_num_seqs < 1 or max_num_batched_tokens < 1:
        raise InputError(
            "max_num_seqs and max_num_batched_tokens must be >= 1; got "
            f"{max_num_seqs} and {max_num_batched_tokens}."
        )
    pol = scheduler(policy) if isinstance(policy, str) else policy
    start_s = min(0.0, float(requests.arrival_s[0])) if n and not n_in_flight else 0.0
    if until_s is not None and not until_s >= start_s:
        raise InputError(f"run: until must be >= now ({start_s}); got {until_s}.")
    c = coefficients
    timeline = Timeline(start_s, kv.capacity_bytes, timeline_bin_s, DEFAULT_MAX_BINS)  # validates
    state, first, finish, hits, preempt, st, itl_s, itl_n, backlog, end_s, bins, meta, arrival = _run(
        np.array(requests.arrival_s, dtype=np.float64),
        np.array(requests.prompt_tokens, dtype=np.int64),
        np.array(requests.output_tokens, dtype=np.int64),
        np.array(requests.cached_tokens, dtype=np.int64),
        bool(pol.chunked_prefill),
        bool(pol.admit_while_running),
        int(max_num_seqs),
        int(max_num_batched_tokens),
        float(kv.capacity_bytes),
        float(kv.bytes_per_token),
        float(kv.bytes_per_token_windowed),
        int(kv.window_tokens or 0),
        int(kv.block_tokens),
        np.array(c.flops, dtype=np.float64, order="C"),
        np.array(c.bytes, dtype=np.float64, order="C"),
        np.array(c.rate_flops_per_s, dtype=np.float64),
        np.array(c.bandwidth_bytes_per_s, dtype=np.float64),
        np.array(c.comm_s, dtype=np.float64),
        float(c.latency_s),
        float(c.step_overhead_s),
        float(c.seq_overhead_s),
        float(c.pipeline_depth),
        int(c.window_tokens or 0),
        float(c.n_experts),
        float(c.top_k),
        float(c.prefill_overhead_s),
        float(c.prefill_unit_tokens),
        int(c.spec_draft_tokens),
        float(c.spec_tokens_per_step),
        float(c.spec_draft_cost),
        bool(c.spec_pipelined),
        float(start_s),
        until_s is not None,
        float(until_s) if until_s is not None else math.inf,
        float(timeline_bin_s),
        DEFAULT_MAX_BINS,
        int(n_in_flight),
        np.array(delay, dtype=np.float64),
    )
    timeline.busy_s, timeline.seq_s, timeline.kv_s, timeline.tokens = (
        bins[_TL_BUSY], bins[_TL_SEQ], bins[_TL_KV], bins[_TL_TOKENS]
    )
    timeline.bin_s = float(meta[_TL_BIN_S])
    timeline.n_bins = int(meta[_TL_N_BINS])
    timeline.last_s = float(meta[_TL_LAST])
    stats = ReplicaStats(
        busy_s=float(st[_BUSY]),
        n_steps=int(st[_N_STEPS]),
        n_stretches=0,
        seq_seconds=float(st[_SEQ_S]),
        kv_byte_seconds=float(st[_KV_S]),
        prefill_tokens=int(st[_PREFILL]),
        decode_tokens=int(st[_DECODE]),
        peak_kv_bytes=float(st[_PEAK]),
    )
    rejected = state == _REJECTED
    return RunResult(
        arrival_s=arrival if n_in_flight else np.asarray(requests.arrival_s),
        first_token_s=first,
        finish_s=np.where((state == _DONE) | rejected, finish, np.nan),
        prompt_tokens=np.asarray(requests.prompt_tokens),
        output_tokens=np.asarray(requests.output_tokens),
        cached_tokens=hits,
        preemptions=preempt,
        rejected=rejected,
        class_id=np.asarray(requests.class_id),
        class_names=requests.class_names,
        stats=stats,
        end_s=float(end_s),
        itl_s=itl_s,
        itl_n=itl_n if itl_n.size else np.zeros(0),
        backlog=0 if n_in_flight else int(backlog),
        bins=timeline,
    )
