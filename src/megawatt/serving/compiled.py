"""The replica compiled (numba): the same scheduling as `Replica`, one step at a time over
columnar arrays, with the roofline step model evaluated from its coefficients.

It mirrors `replica.py` literally (decode first, preemption of the newest, chunked prefill,
admission, KV growth, the idle start after every arrival of an instant, backlog at the last
arrival, `until`), so a run gives the same per-request table, stats, ITL samples and timeline as
the Python replica simulated step by step, under the drivers' three kinds of load: open loop
(arrivals in table order), closed loop (each completion issues the next row) and sessions (each
completion issues a turn's next turns, which wait on a small heap until they arrive). It has no
hashed prefix cache (only the idealised `cached_tokens` column) and no requests prefilled
elsewhere: those runs take the Python replica. The first call compiles the kernel (seconds;
cached on disk after that).

Two things set it apart from a plain loop. It polls a flag every ~65,000 iterations (a few
milliseconds) and returns early when a held Ctrl-C or SIGTERM set it (`megawatt.interrupts`), so
a long run is interrupted between iterations, never inside numba's runtime. And in `stretch`
mode (the fleet's exact mode) it times a pure-decode stretch, which nothing can join until a
request finishes or arrives, in closed form instead of step by step: step times are piecewise
linear in the step, so their sum is a sum of arithmetic series. The per-request table is then
the step-by-step one up to float rounding; the run keeps no timeline and no ITL samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit, objmode

from megawatt.errors import InputError
from megawatt.interrupts import held_signals
from megawatt.perf.roofline import StepCoefficients
from megawatt.serving.metrics import RunResult
from megawatt.serving.replica import KvBudget, ReplicaStats
from megawatt.serving.scheduler import SchedulerPolicy
from megawatt.serving.scheduler import scheduler as scheduler_named
from megawatt.serving.timeline import DEFAULT_BIN_S, DEFAULT_MAX_BINS, Timeline
from megawatt.workload import Requests
from megawatt.workload.sessions import check_sessions

# Request states, as in replica.py.
_WAITING, _RUNNING, _DONE, _REJECTED = 0, 1, 2, 3
# Stats slots of the kernel's output, in ReplicaStats order.
_BUSY, _N_STEPS, _SEQ_S, _KV_S, _PREFILL, _DECODE, _PEAK, _STRETCHES = range(8)
# Timeline rows (Timeline's arrays) and its scalars.
_TL_BUSY, _TL_SEQ, _TL_KV, _TL_TOKENS = range(4)
_TL_BIN_S, _TL_N_BINS, _TL_LAST = range(3)
# The abort flag's slots: set by a held signal; iterations since the last poll.
_ABORT, _ITERATIONS = range(2)
_POLL_MASK = (1 << 16) - 1  # poll every 65,536 iterations of the event loop
# A decode stretch's parameters (`_stretch_sums`).
(
    _P_B, _P_MB, _P_OTHERS, _P_EXTRA, _P_C, _P_M, _P_WKV, _P_WM, _P_K, _P_C3, _P_C4, _P_Q,
    _P_KVB, _P_BPTW, _P_NB, _P_SB, _P_NGAP,
) = range(17)


def _poll() -> None:
    """Run from compiled code now and then: executing Python lets a pending signal's handler
    run (and set the abort flag)."""


@njit(cache=True)
def _enter_python() -> None:
    """`_poll` from compiled code (kept out of line: an object-mode block cannot be inlined)."""
    with objmode():
        _poll()


@njit(cache=True, inline="always")
def _aborted(abort: np.ndarray) -> bool:
    """Count an iteration; every 65,536 of them let Python handle pending signals; True when a
    held signal asks the run to stop."""
    abort[_ITERATIONS] += 1
    if (abort[_ITERATIONS] & _POLL_MASK) == 0:
        _enter_python()
    return bool(abort[_ABORT] != 0)


@njit(cache=True, inline="always")
def _line_sums(a: float, b: float, p: float, q: float, t0: float, t1: float) -> tuple[float, float]:
    """Over the integers t0 .. t1 - 1: the sum of a + b t, and of (p + q t)(a + b t)."""
    n = t1 - t0
    if n <= 0:
        return 0.0, 0.0
    s1 = (t0 + t1 - 1.0) * n / 2.0
    s2 = ((t1 - 1.0) * t1 * (2.0 * t1 - 1.0) - (t0 - 1.0) * t0 * (2.0 * t0 - 1.0)) / 6.0
    return n * a + b * s1, n * p * a + (p * b + q * a) * s1 + q * b * s2


@njit(cache=True, inline="always")
def _max_sums(
    f0: float, f1: float, g0: float, g1: float, n: float, p: float, q: float
) -> tuple[float, float]:
    """Over t = 0 .. n - 1: the sum of max(f0 + f1 t, g0 + g1 t), and of (p + q t) times it."""
    d0 = f0 - g0
    d1 = f1 - g1
    if d1 == 0.0:
        if d0 >= 0.0:
            return _line_sums(f0, f1, p, q, 0.0, n)
        return _line_sums(g0, g1, p, q, 0.0, n)
    root = min(max(-d0 / d1, -1.0), n + 1.0)  # f - g changes sign here
    if d1 > 0.0:  # g below the root, f from it
        cut = min(max(math.ceil(root), 0.0), n)
        a, wa = _line_sums(g0, g1, p, q, 0.0, cut)
        b, wb = _line_sums(f0, f1, p, q, cut, n)
    else:  # f up to the root, g after it
        cut = min(max(math.floor(root) + 1.0, 0.0), n)
        a, wa = _line_sums(f0, f1, p, q, 0.0, cut)
        b, wb = _line_sums(g0, g1, p, q, cut, n)
    return a + b, wa + wb


@njit(cache=True, inline="always")
def _cross(a1: float, s1: float, a2: float, s2: float) -> float:
    """Where the lines a1 + s1 x and a2 + s2 x cross (-1 when they do not)."""
    if s1 == s2:
        return -1.0
    return (a2 - a1) / (s1 - s2)


@njit(cache=True)
def _stretch_sums(
    m: int, par: np.ndarray, opc: np.ndarray, gaps: np.ndarray
) -> tuple[float, float]:
    """The first `m` steps of a decode stretch: the sum of their step times (s), and of KV
    bytes in use during each step times its time (byte-seconds).

    Step s's features are the step-by-step kernel's (`_step_s`) for b sequences of contexts
    c_i + s: decode context C + b s, longest M + s, windowed sum_i min(c_i + s, W). Between
    the steps where a sequence reaches the window (`gaps`, sorted) or the longest reaches the
    model's window, each feature is the max of two lines, and each operator's time the max of
    two lines: the sums split at the crossings and add arithmetic series. `par` holds the
    stretch's scalars (`_P_*`), `opc` the operators' time per unit of the constant, decode-
    context and window features (rows: compute 0/3/4, memory 0/3/4)."""
    b = par[_P_B]
    mb = par[_P_MB]
    others = par[_P_OTHERS]
    extra = par[_P_EXTRA]
    big_c = par[_P_C]
    big_m = par[_P_M]
    w_kv = par[_P_WKV]
    w_model = par[_P_WM]
    n_gaps = int(par[_P_NGAP])
    n_below = par[_P_NB]
    sum_below = par[_P_SB]
    # From step `w_kink` on, the longest context is past the model's window.
    w_kink = w_model - big_m if w_model > 0.0 and big_m < w_model else -1.0
    # Decode context feature: max of two lines in s (RooflineStepModel._features).
    a1 = big_c / mb
    s1 = b / mb
    a2 = big_m + extra * (big_c - big_m) / others
    s2 = 1.0 + extra * (b - 1.0) / others
    c12 = _cross(a1, s1, a2, s2)
    n_ops = opc.shape[1]
    total = 0.0
    kv_total = 0.0
    s = 0.0
    gi = 0
    end = float(m)
    cuts = np.empty(4, np.float64)
    while s < end:
        while gi < n_gaps and gaps[gi] <= s:  # sequences now capped at the window
            n_below -= 1.0
            sum_below -= w_kv - gaps[gi]
            gi += 1
        nxt = end
        if gi < n_gaps and gaps[gi] < nxt:
            nxt = gaps[gi]
        if s < w_kink < nxt:
            nxt = w_kink
        # On [s, nxt): windowed context dA + dB x; longest windowed context wA + wB x.
        d_a = sum_below + w_kv * (b - n_below)
        d_b = n_below
        a3 = d_a / mb
        s3 = d_b / mb
        if w_model > 0.0:
            w_a, w_b = (big_m, 1.0) if s < w_kink else (w_model, 0.0)
            a4 = w_a + extra * (d_a - w_a) / others
            s4 = w_b + extra * (d_b - w_b) / others
        else:
            a4 = a3
            s4 = s3
        c34 = _cross(a3, s3, a4, s4)
        n_cuts = 0
        cuts[n_cuts] = s
        n_cuts += 1
        for c in (c12, c34):
            if s < c < nxt and math.ceil(c) < nxt:
                cuts[n_cuts] = math.ceil(c)
                n_cuts += 1
        cuts[n_cuts] = nxt
        n_cuts += 1
        if n_cuts == 4 and cuts[1] > cuts[2]:
            cuts[1], cuts[2] = cuts[2], cuts[1]
        for part in range(n_cuts - 1):
            u0 = cuts[part]
            u1 = cuts[part + 1]
            if u1 <= u0:
                continue
            mid = (u0 + u1 - 1.0) / 2.0
            al3, be3 = (a1, s1) if a1 + s1 * mid >= a2 + s2 * mid else (a2, s2)
            al4, be4 = (a3, s3) if a3 + s3 * mid >= a4 + s4 * mid else (a4, s4)
            x3 = al3 + be3 * u0  # features at u0 and their growth per step
            x4 = al4 + be4 * u0
            n = u1 - u0
            p = par[_P_Q] + par[_P_BPTW] * d_a + (par[_P_KVB] + par[_P_BPTW] * d_b) * u0
            q = par[_P_KVB] + par[_P_BPTW] * d_b
            t, w = _line_sums(
                par[_P_K] + par[_P_C3] * x3 + par[_P_C4] * x4,
                par[_P_C3] * be3 + par[_P_C4] * be4, p, q, 0.0, n,
            )
            total += t
            kv_total += w
            for j in range(n_ops):
                t, w = _max_sums(
                    opc[0, j] + opc[1, j] * x3 + opc[2, j] * x4,
                    opc[1, j] * be3 + opc[2, j] * be4,
                    opc[3, j] + opc[4, j] * x3 + opc[5, j] * x4,
                    opc[4, j] * be3 + opc[5, j] * be4,
                    n, p, q,
                )
                total += t
                kv_total += w
        s = nxt
    return total, kv_total


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
def _plan_stretch(
    k: int,
    now: float,
    t_next: float,
    cuttable: bool,
    n_dec: int,
    decodes: np.ndarray,
    ctx: np.ndarray,
    kv_bytes: np.ndarray,
    kv_used: float,
    bpt: float,
    bptw: float,
    kv_window: int,
    half_block: float,
    flops: np.ndarray,
    nbytes: np.ndarray,
    rate: np.ndarray,
    bw: np.ndarray,
    comm: np.ndarray,
    constant_s: float,
    depth: float,
    model_window: int,
    n_experts: float,
    top_k: float,
    par: np.ndarray,
    opc: np.ndarray,
    gaps: np.ndarray,
) -> tuple[int, float, float]:
    """A decode stretch of at most `k` steps of the `n_dec` sequences in `decodes`: its steps,
    their summed time (s) and KV byte-seconds. The next arrival (at `t_next`, s; inf when none
    is known), when it comes before the end and could join (`cuttable`), ends the stretch after
    the step in progress then (as `Replica._cut_stretch`). `constant_s`: latency and overheads
    of a step; `par`, `opc` and `gaps` are work arrays (see `_stretch_sums`)."""
    b = float(n_dec)
    mb = max(min(b, depth), 1.0)
    big_c = 0.0
    big_m = 0.0
    held = 0.0
    n_gaps = 0
    sum_below = 0.0
    for d in range(n_dec):
        i = decodes[d]
        c = float(ctx[i] + 1)  # the context step 0 attends over
        big_c += c
        big_m = max(big_m, c)
        held += kv_bytes[i]
        if kv_window > 0 and c < kv_window:
            gaps[n_gaps] = kv_window - c  # the step from which it is capped at the window
            n_gaps += 1
            sum_below += c
    gaps[:n_gaps].sort()
    # Features that do not change during the stretch (`_step_s`): 1, tokens and logits.
    x1 = b / mb
    x7 = n_experts * (1.0 - (1.0 - top_k / n_experts) ** x1) if n_experts > 0 else 0.0
    for j in range(flops.shape[0]):
        opc[0, j] = (flops[j, 0] + (flops[j, 1] + flops[j, 2]) * x1 + flops[j, 7] * x7) / rate[j]
        opc[1, j] = flops[j, 3] / rate[j]
        opc[2, j] = flops[j, 4] / rate[j]
        opc[3, j] = (nbytes[j, 0] + (nbytes[j, 1] + nbytes[j, 2]) * x1 + nbytes[j, 7] * x7) / bw[j]
        opc[4, j] = nbytes[j, 3] / bw[j]
        opc[5, j] = nbytes[j, 4] / bw[j]
    par[_P_B] = b
    par[_P_MB] = mb
    par[_P_OTHERS] = max(b - 1.0, 1.0)
    par[_P_EXTRA] = max(b / mb - 1.0, 0.0)
    par[_P_C] = big_c
    par[_P_M] = big_m
    par[_P_WKV] = float(kv_window)
    par[_P_WM] = float(model_window)
    par[_P_K] = constant_s + comm[0] + (comm[1] + comm[2]) * x1 + comm[7] * x7
    par[_P_C3] = comm[3]
    par[_P_C4] = comm[4]
    # KV in use during step s: what the others hold plus sum_i seq_bytes(c_i + s).
    par[_P_Q] = kv_used - held + bpt * (big_c + b * half_block)
    par[_P_KVB] = bpt * b
    par[_P_BPTW] = bptw if kv_window > 0 else 0.0
    par[_P_NB] = float(n_gaps)
    par[_P_SB] = sum_below
    par[_P_NGAP] = float(n_gaps)
    dt, kv_dt = _stretch_sums(k, par, opc, gaps)
    if cuttable and t_next <= now + dt:
        # Steps ending strictly before the arrival, plus the one in progress then.
        t_a = t_next
        lo = 0
        hi = k
        while hi - lo > 1:
            mid = (lo + hi) // 2
            t, _ = _stretch_sums(mid, par, opc, gaps)
            if now + t < t_a:
                lo = mid
            else:
                hi = mid
        k = hi
        dt, kv_dt = _stretch_sums(k, par, opc, gaps)
    return k, dt, kv_dt


@njit(cache=True, inline="always")
def _heap_push(heap_t: np.ndarray, heap_q: np.ndarray, size: int, t: float, q: int) -> int:
    """Push (t, q) on the min-heap held in the first `size` slots; returns its new size. `q`
    exceeds every key pushed before, so it sorts after equal times already there."""
    j = size
    while j > 0:
        up = (j - 1) >> 1
        if heap_t[up] <= t:
            break
        heap_t[j] = heap_t[up]
        heap_q[j] = heap_q[up]
        j = up
    heap_t[j] = t
    heap_q[j] = q
    return size + 1


@njit(cache=True, inline="always")
def _heap_pop(heap_t: np.ndarray, heap_q: np.ndarray, size: int) -> int:
    """Drop the least (time, key) of the heap of `size`; returns its new size."""
    size -= 1
    t = heap_t[size]
    q = heap_q[size]
    j = 0
    while True:
        c = 2 * j + 1
        if c >= size:
            break
        if c + 1 < size and (
            heap_t[c + 1] < heap_t[c] or (heap_t[c + 1] == heap_t[c] and heap_q[c + 1] < heap_q[c])
        ):
            c += 1
        if heap_t[c] > t or (heap_t[c] == t and heap_q[c] > q):
            break
        heap_t[j] = heap_t[c]
        heap_q[j] = heap_q[c]
        j = c
    heap_t[j] = t
    heap_q[j] = q
    return size


@njit(cache=True, inline="always")
def _next_arrival(
    ai: int, roots: np.ndarray, arrival: np.ndarray, heap_t: np.ndarray, n_heap: int
) -> float:
    """When the next request arrives (s; inf when none is known): the earlier of the table's
    next arrival (`roots[ai]` on) and the first of the issued turns on the heap."""
    t = arrival[roots[ai]] if ai < roots.shape[0] else math.inf
    if n_heap > 0 and heap_t[0] < t:
        return float(heap_t[0])
    return t


@njit(cache=True)
def _issue_turns(
    i: int,
    now: float,
    arrival: np.ndarray,
    kids: np.ndarray,
    kid_start: np.ndarray,
    gap: np.ndarray,
    heap_t: np.ndarray,
    heap_q: np.ndarray,
    by_issue: np.ndarray,
    n_heap: int,
    n_issued: int,
) -> tuple[int, int]:
    """Sessions: row `i` completed or was rejected at `now`, which issues its next turns, rows
    kids[kid_start[i]:kid_start[i + 1]], each to arrive its `gap` later: onto the heap of
    (arrival, issue number) with their rows by issue number. Returns the heap's size and the
    turns issued so far."""
    for j in range(kid_start[i], kid_start[i + 1]):
        c = kids[j]
        arrival[c] = now + gap[c]
        by_issue[n_issued] = c
        n_heap = _heap_push(heap_t, heap_q, n_heap, arrival[c], n_issued)
        n_issued += 1
    return n_heap, n_issued


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
    stretch: bool,
    abort: np.ndarray,
    n_in_flight: int,
    issue_delay: np.ndarray,
    roots: np.ndarray,
    kids: np.ndarray,
    kid_start: np.ndarray,
    gap: np.ndarray,
) -> tuple[
    np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
    int, float, np.ndarray, np.ndarray, np.ndarray, bool,
]:
    """One replica's run (see the module docstring). `stretch`: time pure-decode stretches in
    closed form and keep no timeline and no ITL samples. Returns early, with the last element
    True, when `abort` is set.

    The table's arrivals come in the order of `roots` (rows by arrival: all rows but in
    sessions). Sessions (`kid_start` not empty, n + 1 offsets): row i's completion or rejection
    issues rows kids[kid_start[i]:kid_start[i + 1]], each arriving its `gap` (s) later; they
    wait on a heap until then, and their `arrival` is written at issue."""
    n = arrival.shape[0]
    # Sessions' issued turns not yet arrived: a heap of (arrival, issue number), and the row of
    # each issue number.
    has_turns = kid_start.shape[0] > 0
    heap_t = np.zeros(kids.shape[0] + 1, np.float64)
    heap_q = np.zeros(kids.shape[0] + 1, np.int64)
    by_issue = np.zeros(kids.shape[0] + 1, np.int64)
    n_heap = 0
    n_issued = 0
    n_roots = roots.shape[0]
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
    oversized = np.zeros(n, np.bool_)  # can never fit the cache: rejected on arrival
    for i in range(n):
        need = _seq_bytes(prompt[i] + output[i] - 1, bpt, bptw, kv_window, half_block)
        oversized[i] = need > capacity

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
    stats = np.zeros(8, np.float64)

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

    itl_cap = 1 if stretch else 1024  # stretch mode keeps no ITL samples
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
    step_k = 1  # decode steps the step in progress stands for (a stretch: more than one)
    aborted = False
    par = np.zeros(17, np.float64)
    opc = np.zeros((6, flops.shape[0]), np.float64)
    gaps = np.zeros(n + 1, np.float64)

    while True:
        if _aborted(abort):
            aborted = True
            break
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
                if stretch and spec_k == 0 and n_chunks == 0 and n_dec == n_run and not has_until:
                    # ---- Replica._start_stretch: many decode steps at once -----------------
                    left = output[decodes[0]] - generated[decodes[0]]
                    min_ctx = ctx[decodes[0]]
                    for d in range(1, n_dec):
                        i = decodes[d]
                        left = min(left, output[i] - generated[i])
                        min_ctx = min(min_ctx, ctx[i])
                    per_step = bpt * n_dec
                    if kv_window > 0 and bptw > 0 and min_ctx < kv_window:
                        per_step += bptw * n_dec
                    k = left
                    if per_step > 0:
                        k = min(k, int((capacity - kv_used) // per_step))
                    if k >= 2:
                        k, dt, kv_dt = _plan_stretch(
                            k, now, _next_arrival(ai, roots, arrival, heap_t, n_heap),
                            admit_while_running and n_run < max_num_seqs,
                            n_dec, decodes, ctx, kv_bytes, kv_used, bpt, bptw, kv_window,
                            half_block, flops, nbytes, rate, bw, comm,
                            latency + step_overhead + seq_overhead * n_dec, depth,
                            model_window, n_experts, top_k, par, opc, gaps,
                        )
                        for d in range(n_dec):
                            i = decodes[d]
                            new = _seq_bytes(ctx[i] + k, bpt, bptw, kv_window, half_block)
                            kv_used += new - kv_bytes[i]
                            kv_bytes[i] = new
                            ctx[i] = ctx[i] + k
                        stats[_N_STEPS] += k
                        stats[_BUSY] += dt
                        stats[_SEQ_S] += n_run * dt
                        stats[_KV_S] += kv_dt
                        stats[_PEAK] = max(stats[_PEAK], kv_used)
                        stats[_DECODE] += k * n_dec
                        stats[_STRETCHES] += 1.0
                        n_chunks = 0
                        step_k = k
                        pending = True
                        t_end = now + dt
                        break
                step_k = 1
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
                if not stretch:
                    _timeline_add(bins, meta, start_s, now, now + dt, n_run, kv_used, n_logits)
                if n_dec > 0 and not stretch:
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

        # Arrivals: during a step, those up to its end (they run before a step end that ties);
        # when idle, those of the next instant with any (the step starts after all of them).
        # At one time the table's arrivals come first (their events run first), then issued
        # turns by issue number; a rejection may issue turns that arrive by then too.
        if pending:
            limit = min(t_end, until_s)
        else:
            limit = _next_arrival(ai, roots, arrival, heap_t, n_heap)
            if limit == math.inf or limit > until_s:
                break
        joined = 0
        while True:
            t = arrival[roots[ai]] if ai < n_roots else math.inf
            turn = n_heap > 0 and heap_t[0] < t
            if turn:
                t = heap_t[0]
            if not t <= limit:
                break
            now = t
            if turn:
                i = by_issue[heap_q[0]]
                n_heap = _heap_pop(heap_t, heap_q, n_heap)
            else:
                i = roots[ai]
                if ai == n_roots - 1:
                    backlog = w_count
                ai += 1
            if oversized[i]:  # Replica.submit
                state[i] = _REJECTED
                finish[i] = now
                if issued < n:
                    arrival[issued] = max(now + issue_delay[issued], arrival[issued - 1])
                    issued += 1
                if has_turns:
                    n_heap, n_issued = _issue_turns(
                        i, now, arrival, kids, kid_start, gap, heap_t, heap_q, by_issue, n_heap,
                        n_issued,
                    )
            else:
                waiting[(w_head + w_count) % cap] = i
                w_count += 1
                joined += 1
        if not pending:
            if joined > 0 and not busy:
                busy = True
                start_now = True
            continue
        if has_until and t_end > until_s:
            break
        now = t_end
        pending = False
        # ---- _end_step ----------------------------------------------------------------
        n_fin = 0
        for d in range(n_dec):
            i = decodes[d]
            generated[i] += step_k
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
                if has_turns:
                    n_heap, n_issued = _issue_turns(
                        i, now, arrival, kids, kid_start, gap, heap_t, heap_q, by_issue,
                        n_heap, n_issued,
                    )
        start_now = True

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
        aborted,
    )


@njit(cache=True)
def _run_replicas(
    arrival: np.ndarray,
    prompt: np.ndarray,
    output: np.ndarray,
    cached: np.ndarray,
    offsets: np.ndarray,
    replica: tuple[Any, ...],  # `_replica_args`, taken whole
    abort: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """Independent replicas, replica r serving rows offsets[r] .. offsets[r + 1] - 1, each
    run to completion in stretch mode: first token and finish times and rejections per row,
    busy seconds per replica, and whether the run was aborted."""
    n = arrival.shape[0]
    first = np.full(n, np.nan)
    finish = np.full(n, np.nan)
    rejected = np.zeros(n, np.bool_)
    busy = np.zeros(offsets.shape[0] - 1, np.float64)
    for r in range(offsets.shape[0] - 1):
        a = offsets[r]
        e = offsets[r + 1]
        if e <= a:
            continue
        out = _run(  # type: ignore[call-arg]  # mypy cannot count *replica
            arrival[a:e], prompt[a:e], output[a:e], cached[a:e], *replica,
            min(0.0, arrival[a]), False, math.inf, 1.0, 1, True, abort, 0, np.zeros(0),
            np.arange(e - a), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0),
        )
        if out[13]:
            return first, finish, rejected, busy, True
        state = out[0]
        for t in range(e - a):
            first[a + t] = out[1][t]
            if state[t] == _DONE or state[t] == _REJECTED:
                finish[a + t] = out[2][t]
            rejected[a + t] = state[t] == _REJECTED
        busy[r] = out[5][_BUSY]
    return first, finish, rejected, busy, False


def _replica_args(
    coefficients: StepCoefficients,
    kv: KvBudget,
    scheduler: str | SchedulerPolicy,
    max_num_seqs: int,
    max_num_batched_tokens: int,
) -> tuple[Any, ...]:
    """The kernel's arguments that describe the replica (scheduler, KV budget, step model), in
    `_run`'s order."""
    if max_num_seqs < 1 or max_num_batched_tokens < 1:
        raise InputError(
            "max_num_seqs and max_num_batched_tokens must be >= 1; got "
            f"{max_num_seqs} and {max_num_batched_tokens}."
        )
    pol = scheduler_named(scheduler) if isinstance(scheduler, str) else scheduler
    c = coefficients
    return (
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
    )


def simulate_replicas_fast(
    coefficients: StepCoefficients,
    kv: KvBudget,
    arrival_s: np.ndarray,
    prompt_tokens: np.ndarray,
    output_tokens: np.ndarray,
    cached_tokens: np.ndarray,
    offsets: np.ndarray,
    *,
    scheduler: str | SchedulerPolicy = "vllm",
    max_num_seqs: int = 256,
    max_num_batched_tokens: int = 8192,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Many independent replicas in one compiled call, in stretch mode (see the module
    docstring): replica r serves rows offsets[r] .. offsets[r + 1] - 1, sorted by arrival
    within each replica, every request followed to completion. Returns per row the first
    token and finish times (s; NaN where none) and whether it was rejected, and per replica its
    busy seconds."""
    args = _replica_args(coefficients, kv, scheduler, max_num_seqs, max_num_batched_tokens)
    columns = (
        np.ascontiguousarray(arrival_s, dtype=np.float64),
        np.ascontiguousarray(prompt_tokens, dtype=np.int64),
        np.ascontiguousarray(output_tokens, dtype=np.int64),
        np.ascontiguousarray(cached_tokens, dtype=np.int64),
        np.ascontiguousarray(offsets, dtype=np.int64),
    )
    while True:  # again only if a held signal's handler chose not to stop the run
        with held_signals() as abort:
            first, finish, rejected, busy, aborted = _run_replicas(*columns, args, abort)
        if not aborted:
            return first, finish, rejected, busy


def _session_order(
    arrival_s: np.ndarray, parent: np.ndarray, gap_s: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A session table as the kernel takes it (`_run`): the first turns' rows by arrival
    (stable, as the Python driver), the other rows grouped by parent (in row order within a
    parent) with each parent's offsets into them (n + 1), and the gaps (s), checked."""
    n = arrival_s.shape[0]
    par, gap = check_sessions(n, parent, gap_s)
    first = np.flatnonzero(par < 0)
    roots = first[np.argsort(arrival_s[first], kind="stable")].astype(np.int64)
    turns = np.flatnonzero(par >= 0)
    kids = turns[np.argsort(par[turns], kind="stable")].astype(np.int64)
    kid_start = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(par[turns], minlength=n), out=kid_start[1:])
    return roots, kids, kid_start, gap


def simulate_fast(
    coefficients: StepCoefficients,
    kv: KvBudget,
    requests: Requests,
    *,
    scheduler: str | SchedulerPolicy = "vllm",
    max_num_seqs: int = 256,
    max_num_batched_tokens: int = 8192,
    until_s: float | None = None,
    timeline_bin_s: float = DEFAULT_BIN_S,
    stretch: bool = False,
    n_in_flight: int = 0,
    issue_delay_s: np.ndarray | None = None,
    parent: np.ndarray | None = None,
    gap_s: np.ndarray | None = None,
) -> RunResult:
    """Open loop, compiled: what `drivers.simulate` gives with the Python `Replica`, for a step
    model given by its `coefficients` (seconds, bytes, tokens as there). It steps one step at a
    time (`stats.n_stretches` is 0), or with `stretch` times pure-decode stretches in closed
    form (times equal to float rounding; no timeline, no ITL samples).

    `n_in_flight` > 0 runs a closed loop instead (what `drivers.concurrency` gives): the
    requests' `arrival_s` are ignored; the first `n_in_flight` arrive at 0 and each completion
    (or rejection) issues the next in table order at that instant. The result's `arrival_s` are
    the times each request reached the replica: its issue, plus `issue_delay_s` (per request,
    seconds; none by default) - e.g. the prefill and KV transfer of a disaggregated pair -
    kept in issue order.

    `parent` and `gap_s` (both or neither) run sessions instead (what `drivers.sessions`
    gives): row i with parent[i] == -1 arrives at its `arrival_s`, any other when row
    parent[i] completes or is rejected, gap_s[i] seconds later. The result's `arrival_s` are
    the arrivals (NaN for turns never issued); `backlog` is 0."""
    if n_in_flight < 0:
        raise InputError(f"n_in_flight must be >= 0 (0: open loop); got {n_in_flight}.")
    n = len(requests)
    delay = np.zeros(n) if issue_delay_s is None else np.asarray(issue_delay_s, dtype=np.float64)
    if delay.shape != (n,) or not (np.isfinite(delay).all() and (delay >= 0).all()):
        raise InputError("issue_delay_s must hold one finite delay >= 0 per request.")
    args = _replica_args(coefficients, kv, scheduler, max_num_seqs, max_num_batched_tokens)
    arrival = np.array(requests.arrival_s, dtype=np.float64)
    roots = np.arange(n, dtype=np.int64)
    kids = kid_start = np.zeros(0, dtype=np.int64)
    gap = np.zeros(0)
    sessions = parent is not None or gap_s is not None
    if sessions:
        if parent is None or gap_s is None or n_in_flight:
            raise InputError(
                "sessions need both parent and gap_s, and no n_in_flight (a closed loop); got "
                f"parent {'set' if parent is not None else 'None'}, gap_s "
                f"{'set' if gap_s is not None else 'None'}, n_in_flight {n_in_flight}."
            )
        roots, kids, kid_start, gap = _session_order(arrival, parent, gap_s)
        arrival[kids] = np.nan  # written when issued
    start_s = min(0.0, float(arrival[roots[0]])) if n and not n_in_flight else 0.0
    if until_s is not None and not until_s >= start_s:
        raise InputError(f"run: until must be >= now ({start_s}); got {until_s}.")
    timeline = Timeline(start_s, kv.capacity_bytes, timeline_bin_s, DEFAULT_MAX_BINS)  # validates
    while True:  # again only if a held signal's handler chose not to stop the run
        with held_signals() as abort:
            run: Callable[..., Any] = _run  # mypy cannot count *args
            out = run(
                arrival.copy(),
                np.array(requests.prompt_tokens, dtype=np.int64),
                np.array(requests.output_tokens, dtype=np.int64),
                np.array(requests.cached_tokens, dtype=np.int64),
                *args,
                float(start_s),
                until_s is not None,
                float(until_s) if until_s is not None else math.inf,
                float(timeline_bin_s),
                1 if stretch else DEFAULT_MAX_BINS,
                stretch,
                abort,
                int(n_in_flight),
                np.array(delay, dtype=np.float64),
                roots,
                kids,
                kid_start,
                gap,
            )
        if not out[-1]:
            break
    state, first, finish, hits, preempt, st, itl_s, itl_n, backlog, end_s, bins, meta, arrived, _ = (
        out
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
        n_stretches=int(st[_STRETCHES]),
        seq_seconds=float(st[_SEQ_S]),
        kv_byte_seconds=float(st[_KV_S]),
        prefill_tokens=int(st[_PREFILL]),
        decode_tokens=int(st[_DECODE]),
        peak_kv_bytes=float(st[_PEAK]),
    )
    rejected = state == _REJECTED
    return RunResult(
        arrival_s=arrived if n_in_flight or sessions else np.asarray(requests.arrival_s),
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
        backlog=0 if n_in_flight or sessions else int(backlog),
        timeline_bins=None if stretch else timeline,
    )
