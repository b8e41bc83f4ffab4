"""The replica compiled (numba): the same scheduling as `Replica`, one step at a time over
columnar arrays, with the roofline step model evaluated from its coefficients.

Written once, compiled twice: the arithmetic both engines share is plain Python that the Python
replica calls and this module compiles (`numba.njit(inline="always")` on the same function
objects): a sequence's KV bytes (`serving.kv.sequence_bytes`), the step features of a batch
(`perf.roofline.fill_features`, indexed by the named rows `F_*`) and the timeline's binning
(`serving.timeline.add_step`). The scheduling itself mirrors `replica.py` function by function
(`_start_step`, `_admit`, `_make_room`, `_preempt`, `_end_step`, `_finish` ...): decode first,
preemption of the newest, chunked prefill, admission, KV growth, the idle start after every
arrival of an instant, backlog at the last arrival, `until`. So a run gives the same per-request
table, stats, ITL samples and timeline as the Python replica simulated step by step, under the
drivers' three kinds of load: open loop (arrivals in table order), closed loop (each completion
issues the next row) and sessions (each completion issues a turn's next turns, which wait on a
small heap until they arrive). It has no hashed prefix cache (only the idealised
`cached_tokens` column) and no requests prefilled elsewhere: those runs take the Python
replica. The first call compiles the kernel (seconds; cached on disk after that).

The kernel's arguments are packed records (`Settings`, `Coefficients`, `Options`, `Load`) and its
state (`State`) five arrays with named rows and slots, so each helper takes a handful of records.
The helpers that take the state are compiled without numba's reference-counting runtime
(`_nrt=False`, an internal flag of the pinned numba): otherwise every array a helper binds is
counted with an atomic increment and decrement, and with steps that take well under a
microsecond those counts cost more than the work (measured: 2-4x slower). Such helpers allocate
nothing (scratch arrays come in `Work`; `_heapsort` stands in for numpy's sort, which allocates),
and division follows numpy's error model (no zero check per division; no division here has a
zero divisor).

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
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar, cast

import numpy as np
from numba import njit, objmode

from megawatt.errors import InputError
from megawatt.interrupts import held_signals
from megawatt.perf.roofline import (
    F_DECODE_CONTEXT,
    F_DECODE_WINDOW,
    F_EXPERTS,
    F_LOGITS,
    F_ONE,
    F_TOKENS,
    StepCoefficients,
    fill_features,
)
from megawatt.serving.kv import KvBudget, sequence_bytes
from megawatt.serving.metrics import RunResult
from megawatt.serving.prefix import (
    PrefixState,
    acquire,
    any_free,
    dense_blocks,
    evict_to,
    leading_hits,
    n_evicted,
    new_state,
    register,
    release,
    shared_bytes,
)
from megawatt.serving.replica import PREFIX_BLOCK_TOKENS, ReplicaStats
from megawatt.serving.scheduler import SchedulerPolicy
from megawatt.serving.scheduler import scheduler as scheduler_named
from megawatt.serving.timeline import (
    DEFAULT_BIN_S,
    DEFAULT_MAX_BINS,
    Timeline,
    add_step,
)
from megawatt.workload import Requests
from megawatt.workload.sessions import check_sessions

_F = TypeVar("_F", bound=Callable[..., Any])
_NO_RUNTIME: dict[str, Any] = {"_nrt": False}  # numba's internal flag (see the module docstring)


def _helper(fn: _F) -> _F:
    """Compile a kernel helper that takes the run's state: without the reference-counting
    runtime, numpy's error model, cached on disk."""
    return cast(_F, njit(cache=True, error_model="numpy", **_NO_RUNTIME)(fn))


# The shared arithmetic, compiled (see the module docstring).
_seq_bytes = njit(cache=True, inline="always", error_model="numpy")(sequence_bytes)
_features = njit(cache=True, inline="always", error_model="numpy")(fill_features)
_timeline_add = njit(cache=True, inline="always", error_model="numpy")(add_step)

# The prefix cache's functions, compiled (the Python replica calls them through PrefixCache).
_leading_hits = _helper(leading_hits)
_any_free = _helper(any_free)
_shared_bytes = _helper(shared_bytes)
_acquire = _helper(acquire)
_register = _helper(register)
_release_blocks = _helper(release)
_evict_to = _helper(evict_to)

# Request states, as in replica.py.
_WAITING, _RUNNING, _DONE, _REJECTED = 0, 1, 2, 3
# Stats slots of the kernel's output, in ReplicaStats order.
_ST_BUSY, _ST_STEPS, _ST_SEQ_S, _ST_KV_S, _ST_PREFILL, _ST_DECODE, _ST_PEAK, _ST_STRETCHES = range(8)
# A run's integer state (`ints`): requests, running, waiting (a ring: head, count), the batch
# being formed (decodes, partial prefills, chunks), decode steps the step in progress stands for,
# roots and the next one, backlog, the sessions' heap and turns issued, requests issued (closed
# loop), flags.
(
    _N, _N_RUN, _W_HEAD, _W_COUNT, _N_DEC, _N_PART, _N_CHUNKS, _STEP_K, _N_ROOTS, _AI, _BACKLOG,
    _N_HEAP, _N_ISSUED, _ISSUED, _HAS_TURNS, _BUSY, _PENDING, _START_NOW, _N_INTS,
) = range(19)
# A run's float state (`floats`): the clock, KV in use (bytes), the end of the step in progress.
_NOW, _KV_USED, _T_END, _N_FLOATS = range(4)
# Per request, integer rows (`ri`, n wide): as `Replica`'s lists (state, prefill target, prompt
# tokens in cache, KV context, tokens generated, preemptions, cache hits), whether it can never
# fit the cache, its prompt, output and cached tokens, and in a hashed prefix cache the blocks
# it references and the leading blocks it has hit or computed (`Prefix`).
(
    _R_STATE, _R_TARGET, _R_DONE, _R_CTX, _R_GENERATED, _R_PREEMPTIONS, _R_HITS, _R_OVERSIZED,
    _R_PROMPT, _R_OUTPUT, _R_CACHED, _R_N_HELD, _R_N_SEEN, _R_ROWS,
) = range(14)
# Per request, float rows (`rf`, n + 1 wide): KV bytes held, first token and finish times,
# arrival (s; written for issued rows), closed-loop issue delay and session gap (s); and the
# sessions' heap of issued turns' arrivals.
_F_KV, _F_FIRST, _F_FINISH, _F_ARRIVAL, _F_DELAY, _F_GAP, _F_HEAP_T, _F_ROWS = range(8)
# Queues of request rows (`qs`, n + 1 wide): waiting (a ring), running, the batch being formed
# (decodes, partial prefills, chunks and their tokens, finished), the table's rows by arrival
# (roots), the sessions' turns grouped by parent with each parent's offsets, the heap's issue
# numbers and each issue's row.
(
    _Q_WAITING, _Q_RUNNING, _Q_DECODES, _Q_PARTIAL, _Q_CHUNK_I, _Q_CHUNK_C, _Q_FINISHED,
    _Q_ROOTS, _Q_KIDS, _Q_KID_START, _Q_HEAP_Q, _Q_BY_ISSUE, _Q_ROWS,
) = range(13)
# The abort flag's slots: set by a held signal; iterations since the last poll.
_ABORT, _ITERATIONS = range(2)
_POLL_MASK = (1 << 16) - 1  # poll every 65,536 iterations of the event loop
# A decode stretch's parameters (`_stretch_sums`).
(
    _P_B, _P_MB, _P_OTHERS, _P_EXTRA, _P_C, _P_M, _P_WKV, _P_WM, _P_K, _P_C3, _P_C4, _P_Q,
    _P_KVB, _P_BPTW, _P_NB, _P_SB, _P_NGAP,
) = range(17)


class Settings(NamedTuple):
    """A replica's scheduler and KV budget (bytes; `kv_window` 0: no windowed layers), and
    whether it keeps a hashed prefix cache of blocks of `block_tokens` tokens (`Prefix`)."""

    chunked: bool
    admit_while_running: bool
    max_num_seqs: int
    max_tokens: int
    capacity: float
    bpt: float
    bptw: float
    kv_window: int
    half_block: float
    prefix: bool
    block_tokens: int


class Coefficients(NamedTuple):
    """The roofline step model (`StepCoefficients`) as arrays and numbers."""

    flops: np.ndarray
    nbytes: np.ndarray
    rate: np.ndarray
    bw: np.ndarray
    comm: np.ndarray
    latency: float
    step_overhead: float
    seq_overhead: float
    depth: float
    window: int
    n_experts: float
    top_k: float
    prefill_overhead: float
    prefill_unit: float
    spec_k: int
    spec_tokens: float
    spec_cost: float
    spec_pipelined: bool


class Options(NamedTuple):
    """How a run goes: its start (s), an optional stop (`until_s`), the timeline's narrowest bin
    and bins kept, `stretch` mode, and the closed loop's requests in flight (0: open loop)."""

    start_s: float
    has_until: bool
    until_s: float
    bin_s: float
    max_bins: int
    stretch: bool
    n_in_flight: int


class Load(NamedTuple):
    """The requests: arrival (s; written for a closed loop's and sessions' issued rows), prompt,
    output and cached tokens, the closed loop's issue delays (s), the rows arriving from the
    table in arrival order (`roots`) and the sessions' turns: row i's completion issues rows
    kids[kid_start[i]:kid_start[i + 1]], each arriving its `gap` (s) later (`kid_start` empty:
    no sessions)."""

    arrival: np.ndarray
    prompt: np.ndarray
    output: np.ndarray
    cached: np.ndarray
    issue_delay: np.ndarray
    roots: np.ndarray
    kids: np.ndarray
    kid_start: np.ndarray
    gap: np.ndarray


class Prefix(NamedTuple):
    """A hashed prefix cache (`serving.prefix`): request i's whole prompt blocks are
    blocks[off[i]:off[i + 1]] (dense ids), the blocks it references are held[off[i]:off[i] +
    n_held] (row `_R_N_HELD`), and `cache` is the cache's state. Empty arrays without one."""

    blocks: np.ndarray
    off: np.ndarray
    held: np.ndarray
    cache: PrefixState


class State(NamedTuple):
    """A run's state: per request (`_R_*`, `_F_*` rows), its queues (`_Q_*`) and its scalars
    (`_N_RUN` ..., `_NOW` ...): few arrays, each holding many rows, indexed by name."""

    ri: np.ndarray
    rf: np.ndarray
    qs: np.ndarray
    ints: np.ndarray
    floats: np.ndarray
    px: Prefix


class Record(NamedTuple):
    """What a run records: stats (`_ST_*`), the timeline's bins and meta (`serving.timeline`)."""

    stats: np.ndarray
    bins: np.ndarray
    meta: np.ndarray


class Work(NamedTuple):
    """Scratch arrays: a step's features, and a decode stretch's parameters (`_stretch_sums`)."""

    x: np.ndarray
    par: np.ndarray
    opc: np.ndarray
    gaps: np.ndarray
    cuts: np.ndarray


def _poll() -> None:
    """Run from compiled code now and then: executing Python lets a pending signal's handler
    run (and set the abort flag)."""


@njit(cache=True, error_model="numpy")
def _enter_python() -> None:
    """`_poll` from compiled code (kept out of line: an object-mode block cannot be inlined)."""
    with objmode():
        _poll()


@njit(cache=True, inline="always", error_model="numpy")
def _aborted(abort: np.ndarray) -> bool:
    """Count an iteration; every 65,536 of them let Python handle pending signals; True when a
    held signal asks the run to stop."""
    abort[_ITERATIONS] += 1
    if (abort[_ITERATIONS] & _POLL_MASK) == 0:
        _enter_python()
    return bool(abort[_ABORT] != 0)


@njit(cache=True, inline="always", error_model="numpy")
def _line_sums(a: float, b: float, p: float, q: float, t0: float, t1: float) -> tuple[float, float]:
    """Over the integers t0 .. t1 - 1: the sum of a + b t, and of (p + q t)(a + b t)."""
    n = t1 - t0
    if n <= 0:
        return 0.0, 0.0
    s1 = (t0 + t1 - 1.0) * n / 2.0
    s2 = ((t1 - 1.0) * t1 * (2.0 * t1 - 1.0) - (t0 - 1.0) * t0 * (2.0 * t0 - 1.0)) / 6.0
    return n * a + b * s1, n * p * a + (p * b + q * a) * s1 + q * b * s2


@njit(cache=True, inline="always", error_model="numpy")
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


@njit(cache=True, inline="always", error_model="numpy")
def _cross(a1: float, s1: float, a2: float, s2: float) -> float:
    """Where the lines a1 + s1 x and a2 + s2 x cross (-1 when they do not)."""
    if s1 == s2:
        return -1.0
    return (a2 - a1) / (s1 - s2)


@_helper
def _stretch_sums(m: int, wk: Work) -> tuple[float, float]:
    """The first `m` steps of a decode stretch: the sum of their step times (s), and of KV
    bytes in use during each step times its time (byte-seconds).

    Step s's features are the step-by-step kernel's (`_step_s`) for b sequences of contexts
    c_i + s: decode context C + b s, longest M + s, windowed sum_i min(c_i + s, W). Between
    the steps where a sequence reaches the window (`gaps`, sorted) or the longest reaches the
    model's window, each feature is the max of two lines, and each operator's time the max of
    two lines: the sums split at the crossings and add arithmetic series. `wk.par` holds the
    stretch's scalars (`_P_*`), `opc` the operators' time per unit of the constant, decode-
    context and window features (rows: compute 0/3/4, memory 0/3/4); `cuts` is scratch."""
    par, opc, gaps, cuts = wk.par, wk.opc, wk.gaps, wk.cuts
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


@njit(cache=True, inline="always", error_model="numpy")
def _sift_down(a: np.ndarray, j: int, n: int) -> None:
    """Move a[j] down the max-heap a[:n] to its place."""
    v = a[j]
    while True:
        c = 2 * j + 1
        if c >= n:
            break
        if c + 1 < n and a[c + 1] > a[c]:
            c += 1
        if a[c] <= v:
            break
        a[j] = a[c]
        j = c
    a[j] = v


@_helper
def _heapsort(a: np.ndarray, n: int) -> None:
    """Sort a[:n] in place, ascending (numpy's sort allocates, which a helper compiled without
    the runtime cannot: see the module docstring)."""
    for j in range(n // 2 - 1, -1, -1):
        _sift_down(a, j, n)
    for end in range(n - 1, 0, -1):
        a[0], a[end] = a[end], a[0]
        _sift_down(a, 0, end)


@_helper
def _plan_stretch(
    k: int,
    now: float,
    t_next: float,
    cuttable: bool,
    state: State,
    s: Settings,
    co: Coefficients,
    wk: Work,
) -> tuple[int, float, float]:
    """A decode stretch of at most `k` steps of the batch's decodes: its steps, their summed
    time (s) and KV byte-seconds. The next arrival (at `t_next`, s; inf when none is known),
    when it comes before the end and could join (`cuttable`), ends the stretch after the step
    in progress then (as `Replica._cut_stretch`)."""
    ri, rf, qs, ints, floats, _ = state
    n_dec = ints[_N_DEC]
    kv_used = floats[_KV_USED]
    par, opc, gaps = wk.par, wk.opc, wk.gaps
    flops, nbytes, rate, bw, comm = co.flops, co.nbytes, co.rate, co.bw, co.comm
    b = float(n_dec)
    mb = max(min(b, co.depth), 1.0)
    big_c = 0.0
    big_m = 0.0
    held = 0.0
    n_gaps = 0
    sum_below = 0.0
    for d in range(n_dec):
        i = qs[_Q_DECODES, d]
        c = float(ri[_R_CTX, i] + 1)  # the context step 0 attends over
        big_c += c
        big_m = max(big_m, c)
        held += rf[_F_KV, i]
        if s.kv_window > 0 and c < s.kv_window:
            gaps[n_gaps] = s.kv_window - c  # the step from which it is capped at the window
            n_gaps += 1
            sum_below += c
    _heapsort(gaps, n_gaps)
    # Features that do not change during the stretch (`fill_features`): one, tokens, logits and
    # experts touched.
    x1 = b / mb
    x7 = co.n_experts * (1.0 - (1.0 - co.top_k / co.n_experts) ** x1) if co.n_experts > 0 else 0.0
    one, tok, log, exp = F_ONE, F_TOKENS, F_LOGITS, F_EXPERTS
    dctx, dwin = F_DECODE_CONTEXT, F_DECODE_WINDOW
    for j in range(flops.shape[0]):
        opc[0, j] = (flops[j, one] + (flops[j, tok] + flops[j, log]) * x1 + flops[j, exp] * x7) / rate[j]
        opc[1, j] = flops[j, dctx] / rate[j]
        opc[2, j] = flops[j, dwin] / rate[j]
        opc[3, j] = (nbytes[j, one] + (nbytes[j, tok] + nbytes[j, log]) * x1 + nbytes[j, exp] * x7) / bw[j]
        opc[4, j] = nbytes[j, dctx] / bw[j]
        opc[5, j] = nbytes[j, dwin] / bw[j]
    par[_P_B] = b
    par[_P_MB] = mb
    par[_P_OTHERS] = max(b - 1.0, 1.0)
    par[_P_EXTRA] = max(b / mb - 1.0, 0.0)
    par[_P_C] = big_c
    par[_P_M] = big_m
    par[_P_WKV] = float(s.kv_window)
    par[_P_WM] = float(co.window)
    constant_s = co.latency + co.step_overhead + co.seq_overhead * n_dec
    par[_P_K] = constant_s + comm[one] + (comm[tok] + comm[log]) * x1 + comm[exp] * x7
    par[_P_C3] = comm[dctx]
    par[_P_C4] = comm[dwin]
    # KV in use during step s: what the others hold plus sum_i seq_bytes(c_i + s).
    par[_P_Q] = kv_used - held + s.bpt * (big_c + b * s.half_block)
    par[_P_KVB] = s.bpt * b
    par[_P_BPTW] = s.bptw if s.kv_window > 0 else 0.0
    par[_P_NB] = float(n_gaps)
    par[_P_SB] = sum_below
    par[_P_NGAP] = float(n_gaps)
    dt, kv_dt = _stretch_sums(k, wk)
    if cuttable and t_next <= now + dt:
        # Steps ending strictly before the arrival, plus the one in progress then.
        lo = 0
        hi = k
        while hi - lo > 1:
            mid = (lo + hi) // 2
            t, _ = _stretch_sums(mid, wk)
            if now + t < t_next:
                lo = mid
            else:
                hi = mid
        k = hi
        dt, kv_dt = _stretch_sums(k, wk)
    return k, dt, kv_dt


@njit(cache=True, inline="always", error_model="numpy")
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


@njit(cache=True, inline="always", error_model="numpy")
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


@njit(cache=True, error_model="numpy")
def _new_state(load: Load, s: Settings, opt: Options, px: Prefix) -> State:
    """A run's state at its start: every request waiting to arrive (a closed loop's first
    `n_in_flight` issued, each `issue_delay` after the start, in issue order), those that can
    never fit the cache marked."""
    n = load.arrival.shape[0]
    ri = np.zeros((_R_ROWS, n), np.int64)
    rf = np.zeros((_F_ROWS, n + 1), np.float64)
    qs = np.zeros((_Q_ROWS, n + 1), np.int64)
    ints = np.zeros(_N_INTS, np.int64)
    floats = np.zeros(_N_FLOATS, np.float64)
    ri[_R_PROMPT] = load.prompt
    ri[_R_TARGET] = load.prompt
    ri[_R_OUTPUT] = load.output
    ri[_R_CACHED] = load.cached
    rf[_F_ARRIVAL, :n] = load.arrival
    rf[_F_FIRST, :n] = np.nan
    rf[_F_FINISH, :n] = np.nan
    floats[_NOW] = opt.start_s
    ints[_N] = n
    ints[_ISSUED] = n
    if opt.n_in_flight > 0:
        rf[_F_DELAY, :n] = load.issue_delay
        ints[_ISSUED] = min(opt.n_in_flight, n)
        for i in range(n):
            rf[_F_ARRIVAL, i] = math.inf
            if i < ints[_ISSUED]:
                rf[_F_ARRIVAL, i] = opt.start_s + load.issue_delay[i]
                if i > 0:
                    rf[_F_ARRIVAL, i] = max(rf[_F_ARRIVAL, i], rf[_F_ARRIVAL, i - 1])
    for i in range(n):
        need = _seq_bytes(
            load.prompt[i] + load.output[i] - 1, s.bpt, s.bptw, s.kv_window, s.half_block
        )
        ri[_R_OVERSIZED, i] = need > s.capacity
    n_roots = load.roots.shape[0]
    qs[_Q_ROOTS, :n_roots] = load.roots
    ints[_N_ROOTS] = n_roots
    if load.kid_start.shape[0] > 0:  # sessions
        ints[_HAS_TURNS] = 1
        qs[_Q_KIDS, : load.kids.shape[0]] = load.kids
        qs[_Q_KID_START] = load.kid_start
        rf[_F_GAP, :n] = load.gap
    return State(ri, rf, qs, ints, floats, px)


@njit(cache=True, inline="always", error_model="numpy")
def _set_ctx(i: int, ctx: int, ri: np.ndarray, rf: np.ndarray, floats: np.ndarray, s: Settings) -> None:
    """Replica._set_ctx: request i now holds `ctx` tokens of KV."""
    new = _seq_bytes(ctx, s.bpt, s.bptw, s.kv_window, s.half_block)
    floats[_KV_USED] += new - rf[_F_KV, i]
    rf[_F_KV, i] = new
    ri[_R_CTX, i] = ctx


@njit(cache=True, inline="always", error_model="numpy")
def _grow_bytes(i: int, tokens: int, ri: np.ndarray, rf: np.ndarray, s: Settings) -> float:
    """Replica._grow_bytes: KV request i needs to hold `tokens` more tokens."""
    held: float = rf[_F_KV, i]
    return _seq_bytes(ri[_R_CTX, i] + tokens, s.bpt, s.bptw, s.kv_window, s.half_block) - held


@njit(cache=True, inline="always", error_model="numpy")
def _release(
    i: int, ri: np.ndarray, rf: np.ndarray, floats: np.ndarray, px: Prefix, s: Settings
) -> None:
    """Replica._release: free request i's KV; the cached blocks it references that others
    still use stay counted, now against them."""
    floats[_KV_USED] -= rf[_F_KV, i]
    rf[_F_KV, i] = 0.0
    ri[_R_CTX, i] = 0
    if s.prefix:
        n = ri[_R_N_HELD, i]
        if n > 0:
            lo = px.off[i]
            floats[_KV_USED] += _release_blocks(px.cache, px.held, lo, lo + n)
            ri[_R_N_HELD, i] = 0
        ri[_R_N_SEEN, i] = 0


@njit(cache=True, inline="always", error_model="numpy")
def _hit_tokens(i: int, ri: np.ndarray, px: Prefix, s: Settings) -> int:
    """Replica._hit_tokens: prompt tokens of request i already cached, were it admitted now
    (at most target - 1): its `cached` column, or its leading blocks in the prefix cache."""
    if not s.prefix:
        hits: int = min(ri[_R_CACHED, i], ri[_R_TARGET, i] - 1)
        return hits
    lo = px.off[i]
    hi = min(lo + (ri[_R_TARGET, i] - 1) // s.block_tokens, px.off[i + 1])
    return s.block_tokens * _leading_hits(px.cache, px.blocks, lo, hi)


@njit(cache=True, inline="always", error_model="numpy")
def _shared(i: int, start: int, px: Prefix, s: Settings) -> float:
    """Replica._shared_bytes: bytes of request i's first `start` tokens that running
    sequences already hold."""
    if not s.prefix or start == 0:
        return 0.0
    lo = px.off[i]
    return _shared_bytes(px.cache, px.blocks, lo, lo + start // s.block_tokens)


@njit(cache=True, inline="always", error_model="numpy")
def _register_blocks(i: int, ri: np.ndarray, px: Prefix, s: Settings) -> None:
    """Replica._register_blocks: cache the whole prompt blocks request i has computed by now
    (those cached already it keeps a private copy of)."""
    lo = px.off[i]
    end = min(px.off[i + 1] - lo, ri[_R_DONE, i] // s.block_tokens)
    n = ri[_R_N_SEEN, i]
    if n >= end:
        return
    m = ri[_R_N_HELD, i]
    for k in range(lo + n, lo + end):
        h = px.blocks[k]
        if _register(px.cache, h):
            px.held[lo + m] = h
            m += 1
    ri[_R_N_HELD, i] = m
    ri[_R_N_SEEN, i] = end


@_helper
def _preempt(state: State, s: Settings) -> None:
    """Replica._preempt (recompute) of the newest running request: free its KV and put it back
    at the head of the waiting queue."""
    ri, rf, qs, ints, floats, px = state
    ints[_N_RUN] -= 1
    i = qs[_Q_RUNNING, ints[_N_RUN]]
    _release(i, ri, rf, floats, px, s)
    ri[_R_TARGET, i] = ri[_R_PROMPT, i] + ri[_R_GENERATED, i]
    ri[_R_DONE, i] = 0
    ri[_R_STATE, i] = _WAITING
    ri[_R_PREEMPTIONS, i] += 1
    ints[_W_HEAD] = (ints[_W_HEAD] - 1) % qs.shape[1]
    qs[_Q_WAITING, ints[_W_HEAD]] = i
    ints[_W_COUNT] += 1


@_helper
def _make_room(state: State, s: Settings) -> float:
    """Replica._start_step's first part: sort the running requests into decodes and partial
    prefills, then preempt the newest while the decodes' next tokens do not fit. Returns the
    KV bytes the decodes need."""
    ri, rf, qs, ints, floats, _ = state
    n_dec = 0
    n_part = 0
    for r in range(ints[_N_RUN]):
        i = qs[_Q_RUNNING, r]
        if ri[_R_DONE, i] >= ri[_R_TARGET, i]:
            qs[_Q_DECODES, n_dec] = i
            n_dec += 1
        else:
            qs[_Q_PARTIAL, n_part] = i
            n_part += 1
    need = 0.0
    for d in range(n_dec):
        i = qs[_Q_DECODES, d]
        need += _seq_bytes(ri[_R_CTX, i] + 1, s.bpt, s.bptw, s.kv_window, s.half_block) - rf[_F_KV, i]
    while need > (s.capacity - floats[_KV_USED]) + 1e-6 and ints[_N_RUN] > 0:
        victim = qs[_Q_RUNNING, ints[_N_RUN] - 1]
        if n_dec > 0 and qs[_Q_DECODES, n_dec - 1] == victim:
            need -= _grow_bytes(victim, 1, ri, rf, s)
            n_dec -= 1
        else:
            n_part -= 1
        _preempt(state, s)
    ints[_N_DEC] = n_dec
    ints[_N_PART] = n_part
    return need


@njit(cache=True, inline="always", error_model="numpy")
def _chunk(qs: np.ndarray, ints: np.ndarray, i: int, c: int) -> None:
    """Add `c` prompt tokens of request i to the batch being formed."""
    qs[_Q_CHUNK_I, ints[_N_CHUNKS]] = i
    qs[_Q_CHUNK_C, ints[_N_CHUNKS]] = c
    ints[_N_CHUNKS] += 1


@_helper
def _continue_prefills(state: State, s: Settings, budget: int, free: float) -> tuple[int, float]:
    """Replica._start_step: the next chunks of partial prefills, in order, while the token
    budget and KV allow. Returns the budget and free bytes left."""
    ri, rf, qs, ints, _, _ = state
    n_dec = ints[_N_DEC]
    for p in range(ints[_N_PART]):
        i = qs[_Q_PARTIAL, p]
        done = ri[_R_DONE, i]
        left = ri[_R_TARGET, i] - done
        c = min(left, budget) if s.chunked else left
        if c <= 0 or (not s.chunked and c > budget and (ints[_N_CHUNKS] > 0 or n_dec > 0)):
            break
        grow = _seq_bytes(done + c, s.bpt, s.bptw, s.kv_window, s.half_block) - rf[_F_KV, i]
        if grow > free:
            break
        free -= grow
        budget -= c
        _chunk(qs, ints, i, c)
    return budget, free


@_helper
def _admit(state: State, s: Settings, budget: int, free: float) -> float:
    """Replica._start_step: admit waiting requests, oldest first, while the batch has room (a
    whole prompt under static batching, which reserves the whole sequence); each first skips
    the prefill of its hits. Returns the free bytes left."""
    ri, rf, qs, ints, floats, px = state
    cap = qs.shape[1]
    while ints[_W_COUNT] > 0 and ints[_N_RUN] < s.max_num_seqs:
        i = qs[_Q_WAITING, ints[_W_HEAD]]
        if s.prefix:
            _evict_to(px.cache, free)  # the lookup sees what the steps so far left
        start = _hit_tokens(i, ri, px, s)
        left = ri[_R_TARGET, i] - start
        if s.chunked:
            c = min(left, budget)
            if c <= 0:
                break
        elif not s.admit_while_running:
            c = left
        else:
            c = left
            if c > budget and (ints[_N_CHUNKS] > 0 or ints[_N_DEC] > 0):
                break
        if not s.admit_while_running:
            reserve = ri[_R_PROMPT, i] + ri[_R_OUTPUT, i] - 1
        else:
            reserve = start + c
        shared = _shared(i, start, px, s)
        grow = _seq_bytes(reserve, s.bpt, s.bptw, s.kv_window, s.half_block) - shared
        if grow > free:
            break
        ints[_W_HEAD] = (ints[_W_HEAD] + 1) % cap
        ints[_W_COUNT] -= 1
        qs[_Q_RUNNING, ints[_N_RUN]] = i
        ints[_N_RUN] += 1
        ri[_R_STATE, i] = _RUNNING
        ri[_R_DONE, i] = start
        ri[_R_HITS, i] = start
        _set_ctx(i, start, ri, rf, floats, s)
        if s.prefix and start > 0:
            lo = px.off[i]
            k = start // s.block_tokens
            _acquire(px.cache, px.blocks, lo, lo + k)
            floats[_KV_USED] -= shared
            for j in range(lo, lo + k):
                px.held[j] = px.blocks[j]
            ri[_R_N_HELD, i] = k
            ri[_R_N_SEEN, i] = k
        free -= grow
        budget -= c
        _chunk(qs, ints, i, c)
    return free


@_helper
def _hits_evictable(state: State, s: Settings) -> bool:
    """Replica._can_stretch's prefix rule: True when the request at the head of the queue
    could join and some of its hits are cached blocks no sequence references, which a stretch's
    growth could evict (and so shrink what the request needs): no stretch then."""
    ri, _, qs, ints, _, px = state
    if not s.prefix or ints[_W_COUNT] == 0:
        return False
    if not s.admit_while_running or ints[_N_RUN] >= s.max_num_seqs:
        return False
    i = qs[_Q_WAITING, ints[_W_HEAD]]
    start = _hit_tokens(i, ri, px, s)
    if start == 0:
        return False
    lo = px.off[i]
    return _any_free(px.cache, px.blocks, lo, lo + start // s.block_tokens)


@_helper
def _start_stretch(
    state: State, s: Settings, co: Coefficients, rec: Record, wk: Work
) -> float:
    """Replica._start_stretch: many decode steps of the whole batch at once, as many as every
    sequence has tokens left and the KV allows, cut at the next arrival that could join.
    Returns their time (s), or -1.0 when fewer than two steps would do."""
    ri, rf, qs, ints, floats, px = state
    n_dec = ints[_N_DEC]
    first = qs[_Q_DECODES, 0]
    left = ri[_R_OUTPUT, first] - ri[_R_GENERATED, first]
    min_ctx = ri[_R_CTX, first]
    for d in range(1, n_dec):
        i = qs[_Q_DECODES, d]
        left = min(left, ri[_R_OUTPUT, i] - ri[_R_GENERATED, i])
        min_ctx = min(min_ctx, ri[_R_CTX, i])
    per_step = s.bpt * n_dec
    if s.kv_window > 0 and s.bptw > 0 and min_ctx < s.kv_window:
        per_step += s.bptw * n_dec
    k = left
    if per_step > 0:
        k = min(k, int((s.capacity - floats[_KV_USED]) // per_step))
    if k < 2:
        return -1.0
    k, dt, kv_dt = _plan_stretch(
        k, floats[_NOW], _next_arrival(state),
        s.admit_while_running and ints[_N_RUN] < s.max_num_seqs, state, s, co, wk,
    )
    for d in range(n_dec):
        i = qs[_Q_DECODES, d]
        _set_ctx(i, ri[_R_CTX, i] + k, ri, rf, floats, s)
    if s.prefix:  # as Replica._end_stretch: no lookup comes before the stretch's end
        _evict_to(px.cache, s.capacity - floats[_KV_USED])
    st = rec.stats
    st[_ST_STEPS] += k
    st[_ST_BUSY] += dt
    st[_ST_SEQ_S] += ints[_N_RUN] * dt
    st[_ST_KV_S] += kv_dt
    st[_ST_PEAK] = max(st[_ST_PEAK], floats[_KV_USED])
    st[_ST_DECODE] += k * n_dec
    st[_ST_STRETCHES] += 1.0
    ints[_N_CHUNKS] = 0
    ints[_STEP_K] = k
    return dt
@njit(cache=True, inline="always", error_model="numpy")
def _step_s(
    x: np.ndarray,
    co: Coefficients,
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
) -> float:
    """RooflineStepModel.step_time for one batch's aggregates (`fill_features`, then each
    operator's time is the larger of its compute and memory times); `eager`: 1 when the step
    carries a prompt chunk."""
    _features(
        x, tokens, n_logits, dctx, dwin, dmax, n_dec, p_att, p_win, p_tok, units, big_tok,
        big_att, big_win, co.depth, co.window, co.n_experts, co.top_k,
    )
    flops, nbytes, rate, bw, comm = co.flops, co.nbytes, co.rate, co.bw, co.comm
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
    return (
        ops + cm + co.latency + co.step_overhead + co.seq_overhead * n_seqs
        + co.prefill_overhead * eager
    )




@_helper
def _batch_time(state: State, s: Settings, co: Coefficients, x: np.ndarray) -> tuple[float, int, int]:
    """Replica._run_step's timing: the batch's aggregates (`BatchShape.of`) and its step time,
    a speculative one when the model drafts (`_speculative_s`). Returns the time (s), the
    prefill tokens and the sequences sampling a token."""
    ri, _, qs, ints, _, _ = state
    n_dec = ints[_N_DEC]
    n_chunks = ints[_N_CHUNKS]
    window = float(s.kv_window)
    dctx = 0.0
    dwin = 0.0
    dmax = 0.0
    for d in range(n_dec):
        cx = float(ri[_R_CTX, qs[_Q_DECODES, d]] + 1)
        dctx += cx
        if s.kv_window > 0:
            dwin += min(cx, window)
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
        i = qs[_Q_CHUNK_I, q]
        c = qs[_Q_CHUNK_C, q]
        span = ri[_R_DONE, i] + (c + 1) / 2.0
        att = c * span
        win = c * min(span, window) if s.kv_window > 0 else 0.0
        p_att += att
        p_win += win
        p_tok += c
        if c > big_tok:
            big_tok = c
            big_att = att
            big_win = win
        if ri[_R_DONE, i] + c >= ri[_R_TARGET, i]:
            n_logits += 1
    n_seqs = float(n_dec + n_chunks)
    eager = 1.0 if big_tok > 1 else 0.0  # a prompt chunk (one token: a decode)
    if co.spec_k == 0 or n_dec == 0:
        units = n_dec + max(float(n_chunks), p_tok / co.prefill_unit)
        dt = _step_s(
            x, co, float(n_dec + p_tok), float(n_logits), dctx, dwin, dmax, float(n_dec), p_att,
            p_win, float(p_tok), float(big_tok), big_att, big_win, units, n_seqs, eager,
        )
    else:
        dt = _speculative_s(
            x, co, n_dec, n_chunks, n_logits, dctx, dwin, dmax, p_att, p_win, p_tok, big_tok,
            big_att, big_win, n_seqs, eager,
        )
    return dt, p_tok, n_logits
@njit(cache=True, inline="always", error_model="numpy")
def _speculative_s(
    x: np.ndarray,
    co: Coefficients,
    n_dec: int,
    n_chunks: int,
    n_logits: int,
    dctx: float,
    dwin: float,
    dmax: float,
    p_att: float,
    p_win: float,
    p_tok: int,
    big_tok: int,
    big_att: float,
    big_win: float,
    n_seqs: float,
    eager: float,
) -> float:
    """SpeculativeStepModel.step_time: a verify pass over k + 1 tokens per decoding sequence
    (the extra ones priced as a chunk; pipelined verify: the cheaper of that and k + 1 decode
    passes), plus k drafts, per token accepted."""
    fk = float(co.spec_k)
    fdec = float(n_dec)
    extra_tok = n_dec * co.spec_k
    span = (fk + 1.0) / 2.0
    v_tok = p_tok + extra_tok
    v_win = p_win + (fk * (dwin + fdec * span) if co.window > 0 else 0.0)
    dt = _step_s(
        x, co, float(n_dec + v_tok), float(n_logits + extra_tok), dctx, dwin, dmax, fdec,
        p_att + fk * (dctx + fdec * span), v_win, float(v_tok), float(big_tok), big_att, big_win,
        n_dec + max(float(n_chunks), v_tok / co.prefill_unit), n_seqs, eager,
    )
    if co.spec_pipelined:
        pd = n_dec * (co.spec_k + 1)
        pspan = fdec * fk * (fk + 1.0) / 2.0
        piped = _step_s(
            x, co, float(pd + p_tok), float(n_logits + extra_tok), (fk + 1.0) * dctx + pspan,
            (fk + 1.0) * dwin + (pspan if co.window > 0 else 0.0), dmax + fk, float(pd), p_att,
            p_win, float(p_tok), float(big_tok), big_att, big_win,
            pd + max(float(n_chunks), p_tok / co.prefill_unit), float(pd + n_chunks), eager,
        )
        dt = min(dt, piped)
    draft = _step_s(
        x, co, fdec, fdec, dctx, dwin, dmax, fdec, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, fdec, fdec, 0.0
    )
    return (dt + co.spec_cost * fk * draft) / co.spec_tokens


@_helper
def _run_step(
    state: State, s: Settings, co: Coefficients, opt: Options, rec: Record, wk: Work
) -> float:
    """Replica._run_step: time one step of the batch formed, reserve the KV it writes (so
    arrivals during the step see it taken) and record it. Returns its time (s)."""
    ri, rf, qs, ints, floats, _ = state
    dt, p_tok, n_logits = _batch_time(state, s, co, wk.x)
    kv_used = floats[_KV_USED]
    for d in range(ints[_N_DEC]):
        i = qs[_Q_DECODES, d]
        ctx = ri[_R_CTX, i] + 1
        new = _seq_bytes(ctx, s.bpt, s.bptw, s.kv_window, s.half_block)
        kv_used += new - rf[_F_KV, i]
        rf[_F_KV, i] = new
        ri[_R_CTX, i] = ctx
    for q in range(ints[_N_CHUNKS]):
        i = qs[_Q_CHUNK_I, q]
        ctx = ri[_R_DONE, i] + qs[_Q_CHUNK_C, q]
        new = _seq_bytes(ctx, s.bpt, s.bptw, s.kv_window, s.half_block)
        kv_used += new - rf[_F_KV, i]
        rf[_F_KV, i] = new
        ri[_R_CTX, i] = ctx
    floats[_KV_USED] = kv_used
    n_run = ints[_N_RUN]
    st = rec.stats
    st[_ST_STEPS] += 1.0
    st[_ST_BUSY] += dt
    st[_ST_SEQ_S] += n_run * dt
    st[_ST_KV_S] += kv_used * dt
    st[_ST_PEAK] = max(st[_ST_PEAK], kv_used)
    st[_ST_PREFILL] += p_tok
    st[_ST_DECODE] += ints[_N_DEC]
    if not opt.stretch:
        now = floats[_NOW]
        _timeline_add(rec.bins, rec.meta, opt.start_s, now, now + dt, n_run, kv_used, n_logits)
    ints[_STEP_K] = 1
    return dt


@_helper
def _start_step(
    state: State, s: Settings, co: Coefficients, opt: Options, rec: Record, wk: Work
) -> float:
    """Replica._start_step: form the next batch (decodes first, preempting the newest while
    their tokens do not fit; then prefill chunks; then admissions) and start it, as a decode
    stretch when it can. Returns its time (s), or -1.0 when the replica goes idle."""
    ints, floats = state.ints, state.floats
    while True:
        if ints[_N_RUN] == 0 and ints[_W_COUNT] == 0:
            return -1.0
        need = _make_room(state, s)
        ints[_N_CHUNKS] = 0
        budget, free = _continue_prefills(
            state, s, s.max_tokens - ints[_N_DEC], (s.capacity - floats[_KV_USED]) - need
        )
        if s.admit_while_running or ints[_N_RUN] == 0:
            free = _admit(state, s, budget, free)
        if ints[_N_DEC] == 0 and ints[_N_CHUNKS] == 0:
            if ints[_N_RUN] == 0:
                return -1.0
            _preempt(state, s)  # nothing fits (partial prefills hold the cache): the newest goes
            continue
        if s.prefix:
            _evict_to(state.px.cache, free)
        if (
            opt.stretch
            and co.spec_k == 0
            and ints[_N_CHUNKS] == 0
            and ints[_N_DEC] == ints[_N_RUN]
            and not opt.has_until
            and not _hits_evictable(state, s)
        ):
            dt = _start_stretch(state, s, co, rec, wk)
            if dt >= 0.0:
                return dt
        return _run_step(state, s, co, opt, rec, wk)


@_helper
def _next_arrival(state: State) -> float:
    """When the next request arrives (s; inf when none is known): the earlier of the table's
    next arrival (the roots from `_AI` on) and the first of the issued turns on the heap."""
    _, rf, qs, ints, _, _ = state
    ai = ints[_AI]
    t = rf[_F_ARRIVAL, qs[_Q_ROOTS, ai]] if ai < ints[_N_ROOTS] else math.inf
    if ints[_N_HEAP] > 0 and rf[_F_HEAP_T, 0] < t:
        return float(rf[_F_HEAP_T, 0])
    return t


@_helper
def _settled(i: int, now: float, state: State) -> None:
    """Request i completed or was rejected at `now`: a closed loop issues its next request (it
    arrives its issue delay later, in issue order); a session turn issues its next turns, rows
    kids[kid_start[i]:kid_start[i + 1]], each to arrive its gap later: onto the heap of
    (arrival, issue number), with their rows by issue number."""
    _, rf, qs, ints, _, _ = state
    issued = ints[_ISSUED]
    if issued < ints[_N]:
        rf[_F_ARRIVAL, issued] = max(now + rf[_F_DELAY, issued], rf[_F_ARRIVAL, issued - 1])
        ints[_ISSUED] = issued + 1
    if ints[_HAS_TURNS]:
        heap_t = rf[_F_HEAP_T]
        heap_q = qs[_Q_HEAP_Q]
        for j in range(qs[_Q_KID_START, i], qs[_Q_KID_START, i + 1]):
            c = qs[_Q_KIDS, j]
            rf[_F_ARRIVAL, c] = now + rf[_F_GAP, c]
            qs[_Q_BY_ISSUE, ints[_N_ISSUED]] = c
            ints[_N_HEAP] = _heap_push(
                heap_t, heap_q, ints[_N_HEAP], rf[_F_ARRIVAL, c], ints[_N_ISSUED]
            )
            ints[_N_ISSUED] += 1


@_helper
def _intake(state: State, limit: float) -> int:
    """Replica.submit for every arrival up to `limit` (s), in event order: at one time the
    table's arrivals come first, then issued turns by issue number; a rejection may issue turns
    that arrive by then too. Returns how many joined the queue."""
    ri, rf, qs, ints, floats, _ = state
    n_roots = ints[_N_ROOTS]
    joined = 0
    while True:
        ai = ints[_AI]
        t = rf[_F_ARRIVAL, qs[_Q_ROOTS, ai]] if ai < n_roots else math.inf
        turn = ints[_N_HEAP] > 0 and rf[_F_HEAP_T, 0] < t
        if turn:
            t = rf[_F_HEAP_T, 0]
        if not t <= limit:
            return joined
        floats[_NOW] = t
        if turn:
            i = qs[_Q_BY_ISSUE, qs[_Q_HEAP_Q, 0]]
            ints[_N_HEAP] = _heap_pop(rf[_F_HEAP_T], qs[_Q_HEAP_Q], ints[_N_HEAP])
        else:
            i = qs[_Q_ROOTS, ai]
            if ai == n_roots - 1:
                ints[_BACKLOG] = ints[_W_COUNT]
            ints[_AI] = ai + 1
        if ri[_R_OVERSIZED, i]:  # it can never fit: rejected
            ri[_R_STATE, i] = _REJECTED
            rf[_F_FINISH, i] = t
            _settled(i, t, state)
        else:
            qs[_Q_WAITING, (ints[_W_HEAD] + ints[_W_COUNT]) % qs.shape[1]] = i
            ints[_W_COUNT] += 1
            joined += 1


@_helper
def _end_step(state: State, s: Settings) -> None:
    """Replica._end_step (and _end_stretch): the step's tokens are out; prompts that finished
    their prefill give their first token; requests that have all their tokens finish."""
    ri, rf, qs, ints, floats, px = state
    now = floats[_NOW]
    k = ints[_STEP_K]
    n_fin = 0
    for d in range(ints[_N_DEC]):
        i = qs[_Q_DECODES, d]
        ri[_R_GENERATED, i] += k
        if ri[_R_GENERATED, i] >= ri[_R_OUTPUT, i]:
            qs[_Q_FINISHED, n_fin] = i
            n_fin += 1
    for q in range(ints[_N_CHUNKS]):
        i = qs[_Q_CHUNK_I, q]
        ri[_R_DONE, i] += qs[_Q_CHUNK_C, q]
        if s.prefix:
            _register_blocks(i, ri, px, s)
        if ri[_R_DONE, i] >= ri[_R_TARGET, i]:
            ri[_R_GENERATED, i] += 1
            if math.isnan(rf[_F_FIRST, i]):
                rf[_F_FIRST, i] = now
            if ri[_R_GENERATED, i] >= ri[_R_OUTPUT, i]:
                qs[_Q_FINISHED, n_fin] = i
                n_fin += 1
    if n_fin == 0:
        return
    for f in range(n_fin):
        ri[_R_STATE, qs[_Q_FINISHED, f]] = _DONE
    kept = 0
    for r in range(ints[_N_RUN]):
        i = qs[_Q_RUNNING, r]
        if ri[_R_STATE, i] != _DONE:
            qs[_Q_RUNNING, kept] = i
            kept += 1
    ints[_N_RUN] = kept
    for f in range(n_fin):
        i = qs[_Q_FINISHED, f]
        _release(i, ri, rf, floats, px, s)
        rf[_F_FINISH, i] = now
        _settled(i, now, state)


@njit(cache=True, error_model="numpy")
def _run(
    load: Load, s: Settings, co: Coefficients, opt: Options, px: Prefix, abort: np.ndarray
) -> tuple[State, Record, np.ndarray, np.ndarray, bool]:
    """One replica's run (see the module docstring). Returns its state (`_NOW`: the run's end),
    what it recorded, its ITL samples (seconds; tokens each) and whether it stopped early: it
    does, at once, when `abort` is set. The table's arrivals come in the order of `load.roots`;
    in sessions, each issued turn waits on a heap until it arrives, and its arrival is written
    at issue."""
    state = _new_state(load, s, opt, px)
    ints, floats = state.ints, state.floats
    rec = Record(
        np.zeros(8, np.float64), np.zeros((4, opt.max_bins), np.float64),
        np.array([opt.bin_s, 0.0, opt.start_s]),
    )
    wk = Work(
        np.zeros(co.flops.shape[1], np.float64), np.zeros(17, np.float64),
        np.zeros((6, co.flops.shape[0]), np.float64), np.zeros(load.arrival.shape[0] + 1),
        np.zeros(4, np.float64),
    )
    itl_s = np.zeros(1 if opt.stretch else 1024, np.float64)  # stretch mode keeps no ITL
    itl_n = np.zeros(itl_s.shape[0], np.int64)
    n_itl = 0
    while True:
        if _aborted(abort):
            return state, rec, itl_s[:n_itl].copy(), itl_n[:n_itl].copy(), True
        if ints[_START_NOW]:
            ints[_START_NOW] = 0
            ints[_PENDING] = 0
            dt = _start_step(state, s, co, opt, rec, wk)
            ints[_BUSY] = 1 if dt >= 0.0 else 0
            if dt >= 0.0:
                if ints[_N_DEC] > 0 and not opt.stretch:
                    if n_itl == itl_s.shape[0]:
                        itl_s = np.concatenate((itl_s, np.zeros(n_itl)))
                        itl_n = np.concatenate((itl_n, np.zeros(n_itl, np.int64)))
                    itl_s[n_itl] = dt
                    itl_n[n_itl] = ints[_N_DEC]
                    n_itl += 1
                ints[_PENDING] = 1
                floats[_T_END] = floats[_NOW] + dt
            continue
        # Arrivals: during a step, those up to its end (they run before a step end that ties);
        # when idle, those of the next instant with any (the step starts after all of them).
        if ints[_PENDING]:
            limit = min(floats[_T_END], opt.until_s)
        else:
            limit = _next_arrival(state)
            if limit == math.inf or limit > opt.until_s:
                break
        joined = _intake(state, limit)
        if not ints[_PENDING]:
            if joined > 0 and not ints[_BUSY]:
                ints[_BUSY] = 1
                ints[_START_NOW] = 1
            continue
        if opt.has_until and floats[_T_END] > opt.until_s:
            break
        floats[_NOW] = floats[_T_END]
        ints[_PENDING] = 0
        _end_step(state, s)
        ints[_START_NOW] = 1
    if opt.has_until:
        floats[_NOW] = opt.until_s
    return state, rec, itl_s[:n_itl].copy(), itl_n[:n_itl].copy(), False


@njit(cache=True, error_model="numpy")
def _run_replicas(
    arrival: np.ndarray,
    prompt: np.ndarray,
    output: np.ndarray,
    cached: np.ndarray,
    offsets: np.ndarray,
    s: Settings,
    co: Coefficients,
    px: Prefix,
    abort: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """Independent replicas, replica r serving rows offsets[r] .. offsets[r + 1] - 1, each
    run to completion in stretch mode: first token and finish times and rejections per row,
    busy seconds per replica, and whether the run was aborted. `px`: no prefix cache."""
    n = arrival.shape[0]
    first = np.full(n, np.nan)
    finish = np.full(n, np.nan)
    rejected = np.zeros(n, np.bool_)
    busy = np.zeros(offsets.shape[0] - 1, np.float64)
    none = np.zeros(0, np.int64)
    for r in range(offsets.shape[0] - 1):
        a = offsets[r]
        e = offsets[r + 1]
        if e <= a:
            continue
        load = Load(
            arrival[a:e], prompt[a:e], output[a:e], cached[a:e], np.zeros(0), np.arange(e - a),
            none, none, np.zeros(0),
        )
        opt = Options(min(0.0, arrival[a]), False, math.inf, 1.0, 1, True, 0)
        state, rec, _, _, aborted = _run(load, s, co, opt, px, abort)
        if aborted:
            return first, finish, rejected, busy, True
        ri, rf = state.ri, state.rf
        for t in range(e - a):
            first[a + t] = rf[_F_FIRST, t]
            if ri[_R_STATE, t] == _DONE or ri[_R_STATE, t] == _REJECTED:
                finish[a + t] = rf[_F_FINISH, t]
            rejected[a + t] = ri[_R_STATE, t] == _REJECTED
        busy[r] = rec.stats[_ST_BUSY]
    return first, finish, rejected, busy, False


def _prefix(
    kv: KvBudget,
    prompt_tokens: np.ndarray,
    prefix_blocks: Sequence[np.ndarray] | None = None,
    block_tokens: int = PREFIX_BLOCK_TOKENS,
) -> Prefix:
    """The kernel's prefix cache over the requests' hashed prompt blocks (as `Replica` keeps
    it: blocks of `block_tokens` tokens, each taking `bytes_per_token * block_tokens`), or an
    empty one when there are none."""
    if prefix_blocks is None:
        none = np.zeros(0, np.int64)
        return Prefix(none, np.zeros(1, np.int64), none, new_state(0, 0.0))
    flat, off, n_blocks = dense_blocks(prefix_blocks, prompt_tokens, block_tokens)
    cache = new_state(n_blocks, kv.bytes_per_token * block_tokens)
    return Prefix(flat, off, np.zeros(flat.size, np.int64), cache)


def _replica_args(
    coefficients: StepCoefficients,
    kv: KvBudget,
    scheduler: str | SchedulerPolicy,
    max_num_seqs: int,
    max_num_batched_tokens: int,
    block_tokens: int = 0,
) -> tuple[Settings, Coefficients]:
    """The kernel's records that describe the replica: its scheduler, KV budget and hashed
    prefix cache (blocks of `block_tokens` tokens; 0: none), and its step model."""
    if max_num_seqs < 1 or max_num_batched_tokens < 1:
        raise InputError(
            "max_num_seqs and max_num_batched_tokens must be >= 1; got "
            f"{max_num_seqs} and {max_num_batched_tokens}."
        )
    pol = scheduler_named(scheduler) if isinstance(scheduler, str) else scheduler
    c = coefficients
    settings = Settings(
        bool(pol.chunked_prefill),
        bool(pol.admit_while_running),
        int(max_num_seqs),
        int(max_num_batched_tokens),
        float(kv.capacity_bytes),
        float(kv.bytes_per_token),
        float(kv.bytes_per_token_windowed),
        int(kv.window_tokens or 0),
        kv.block_tokens / 2.0,
        block_tokens > 0,
        max(int(block_tokens), 1),
    )
    model = Coefficients(
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
    return settings, model


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
    settings, model = _replica_args(coefficients, kv, scheduler, max_num_seqs, max_num_batched_tokens)
    columns = (
        np.ascontiguousarray(arrival_s, dtype=np.float64),
        np.ascontiguousarray(prompt_tokens, dtype=np.int64),
        np.ascontiguousarray(output_tokens, dtype=np.int64),
        np.ascontiguousarray(cached_tokens, dtype=np.int64),
        np.ascontiguousarray(offsets, dtype=np.int64),
    )
    while True:  # again only if a held signal's handler chose not to stop the run
        with held_signals() as abort:
            first, finish, rejected, busy, aborted = _run_replicas(
                *columns, settings, model, _prefix(kv, np.zeros(0, np.int64)), abort
            )
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
    prefix_blocks: Sequence[np.ndarray] | None = None,
    prefix_block_tokens: int = PREFIX_BLOCK_TOKENS,
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
    the arrivals (NaN for turns never issued); `backlog` is 0.

    `prefix_blocks` (per request, the hash ids of its prompt's blocks of `prefix_block_tokens`
    tokens) gives the replica a hashed prefix cache in place of the `cached_tokens` column, as
    the Python `Replica` keeps it."""
    if n_in_flight < 0:
        raise InputError(f"n_in_flight must be >= 0 (0: open loop); got {n_in_flight}.")
    n = len(requests)
    delay = np.zeros(n) if issue_delay_s is None else np.asarray(issue_delay_s, dtype=np.float64)
    if delay.shape != (n,) or not (np.isfinite(delay).all() and (delay >= 0).all()):
        raise InputError("issue_delay_s must hold one finite delay >= 0 per request.")
    if prefix_blocks is not None and prefix_block_tokens < 1:
        raise InputError(f"prefix_block_tokens must be >= 1; got {prefix_block_tokens}.")
    settings, model = _replica_args(
        coefficients, kv, scheduler, max_num_seqs, max_num_batched_tokens,
        prefix_block_tokens if prefix_blocks is not None else 0,
    )
    prompt = np.asarray(requests.prompt_tokens)
    px = _prefix(kv, prompt, prefix_blocks, prefix_block_tokens)  # checks the blocks
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
    opt = Options(
        float(start_s),
        until_s is not None,
        float(until_s) if until_s is not None else math.inf,
        float(timeline_bin_s),
        1 if stretch else DEFAULT_MAX_BINS,
        bool(stretch),
        int(n_in_flight),
    )
    while True:  # again only if a held signal's handler chose not to stop the run
        load = Load(
            arrival.copy(),
            np.array(requests.prompt_tokens, dtype=np.int64),
            np.array(requests.output_tokens, dtype=np.int64),
            np.array(requests.cached_tokens, dtype=np.int64),
            np.array(delay, dtype=np.float64),
            roots,
            kids,
            kid_start,
            gap,
        )
        with held_signals() as abort:
            state, rec, itl_s, itl_n, aborted = _run(load, settings, model, opt, px, abort)
        if not aborted:
            break
        px = _prefix(kv, prompt, prefix_blocks, prefix_block_tokens)  # an empty cache again
    if not stretch:
        timeline.bins[:] = rec.bins
        timeline.meta[:] = rec.meta
    st = rec.stats
    stats = ReplicaStats(
        busy_s=float(st[_ST_BUSY]),
        n_steps=int(st[_ST_STEPS]),
        n_stretches=int(st[_ST_STRETCHES]),
        seq_seconds=float(st[_ST_SEQ_S]),
        kv_byte_seconds=float(st[_ST_KV_S]),
        prefill_tokens=int(st[_ST_PREFILL]),
        decode_tokens=int(st[_ST_DECODE]),
        peak_kv_bytes=float(st[_ST_PEAK]),
        prefix_evicted_blocks=int(n_evicted(state.px.cache)),
    )
    ri, rf = state.ri, state.rf
    rejected = ri[_R_STATE] == _REJECTED
    return RunResult(
        arrival_s=rf[_F_ARRIVAL, :n] if n_in_flight or sessions else np.asarray(requests.arrival_s),
        first_token_s=rf[_F_FIRST, :n],
        finish_s=np.where((ri[_R_STATE] == _DONE) | rejected, rf[_F_FINISH, :n], np.nan),
        prompt_tokens=np.asarray(requests.prompt_tokens),
        output_tokens=np.asarray(requests.output_tokens),
        cached_tokens=ri[_R_HITS],
        preemptions=ri[_R_PREEMPTIONS],
        rejected=rejected,
        class_id=np.asarray(requests.class_id),
        class_names=requests.class_names,
        stats=stats,
        end_s=float(state.floats[_NOW]),
        itl_s=itl_s,
        itl_n=itl_n if itl_n.size else np.zeros(0),
        backlog=0 if n_in_flight or sessions else int(state.ints[_BACKLOG]),
        timeline_bins=None if stretch else timeline,
    )
