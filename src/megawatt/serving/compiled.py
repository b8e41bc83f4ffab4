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
small heap until they arrive). It keeps a hashed prefix cache by the very functions of
`serving.prefix`, and takes requests prefilled elsewhere (`_submit_decode`): `run_pair_fast`
runs a whole prefill/decode pair (`serving.disagg`) as the Python pair's events, in the same
order, each replica stepped by the same helpers. The first call compiles the kernel (tens of
seconds; cached on disk after that).

The kernel's arguments are packed records (`Settings`, `Coefficients`, `Options`, `Load`) and its
state (`State`) seven arrays with named rows and slots, so each helper takes a handful of records.
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
from megawatt.perf.speculative import pipelined_decodes, verify_chunk
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


def _inlined(fn: _F) -> _F:
    """`_helper` for one called once per step from another helper: inlined there (numba's IR
    inlining; compiling everything inline takes minutes, this little costs seconds)."""
    return cast(_F, njit(cache=True, inline="always", error_model="numpy", **_NO_RUNTIME)(fn))


# The shared arithmetic, compiled (see the module docstring).
_seq_bytes = njit(cache=True, inline="always", error_model="numpy")(sequence_bytes)
_features = njit(cache=True, inline="always", error_model="numpy")(fill_features)
_timeline_add = njit(cache=True, inline="always", error_model="numpy")(add_step)
_verify_chunk = njit(cache=True, inline="always", error_model="numpy")(verify_chunk)
_pipelined_decodes = njit(cache=True, inline="always", error_model="numpy")(pipelined_decodes)

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
# loop), flags, requests prefilled elsewhere whose KV arrived (a ring: head, count) and those of
# them joining the step being formed, requests the last step finished.
(
    _N, _N_RUN, _W_HEAD, _W_COUNT, _N_DEC, _N_PART, _N_CHUNKS, _STEP_K, _N_ROOTS, _AI, _BACKLOG,
    _N_HEAP, _N_ISSUED, _ISSUED, _HAS_TURNS, _BUSY, _PENDING, _START_NOW, _A_HEAD, _A_COUNT,
    _N_FRESH, _N_FIN, _N_INTS,
) = range(23)
# A run's float state (`floats`): the clock, KV in use (bytes), the end of the step in progress.
_NOW, _KV_USED, _T_END, _N_FLOATS = range(4)
# Per request, integer rows (`ri`, n wide): as `Replica`'s lists (state, prefill target, prompt
# tokens in cache, KV context, tokens generated, preemptions, cache hits), whether it can never
# fit the cache, its prompt, output and cached tokens, and in a hashed prefix cache the blocks
# it references and the leading blocks it has hit or computed (`_px_cache`).
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
# numbers and each issue's row, requests whose KV arrived from a prefill replica (a ring) and
# those joining the step being formed (`Replica.kv_arrived`, `Replica._fresh`).
(
    _Q_WAITING, _Q_RUNNING, _Q_DECODES, _Q_PARTIAL, _Q_CHUNK_I, _Q_CHUNK_C, _Q_FINISHED,
    _Q_ROOTS, _Q_KIDS, _Q_KID_START, _Q_HEAP_Q, _Q_BY_ISSUE, _Q_ARRIVED, _Q_FRESH, _Q_ROWS,
) = range(15)
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
    whether it keeps a hashed prefix cache of blocks of `block_tokens` tokens (`_px_cache`)."""

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


def _px_cache(pxi: np.ndarray, pxf: np.ndarray) -> PrefixState:
    """The prefix cache's state (`serving.prefix`) inside a run's packed prefix arrays: `pxi`
    holds B and F (blocks, and whole prompt blocks of all requests), then refs, older and newer
    (B each), the cache's counts (3), request i's whole prompt blocks as dense ids
    (`_px_blocks`), the blocks it references (`_px_held`: from the same offset, `_R_N_HELD` of
    them) and the requests' offsets into both (`_px_off`, n + 1); `pxf` the cache's sizes. One
    pair of arrays, not eight, for the loop's helpers to take (plain slicing: Python reads them
    the same way)."""
    b = pxi[0]
    return PrefixState(
        pxi[2 : 2 + b], pxi[2 + b : 2 + 2 * b], pxi[2 + 2 * b : 2 + 3 * b],
        pxi[2 + 3 * b : 5 + 3 * b], pxf,
    )


def _px_blocks(pxi: np.ndarray) -> np.ndarray:
    """Every request's whole prompt blocks, dense ids (see `_px_cache`)."""
    start = 5 + 3 * pxi[0]
    out: np.ndarray = pxi[start : start + pxi[1]]
    return out


def _px_held(pxi: np.ndarray) -> np.ndarray:
    """The blocks each request references (see `_px_cache`)."""
    start = 5 + 3 * pxi[0] + pxi[1]
    out: np.ndarray = pxi[start : start + pxi[1]]
    return out


def _px_off(pxi: np.ndarray) -> np.ndarray:
    """Request i's blocks are `_px_blocks(pxi)[off[i]:off[i + 1]]` (see `_px_cache`)."""
    out: np.ndarray = pxi[5 + 3 * pxi[0] + 2 * pxi[1] :]
    return out


_px_cache_c = njit(cache=True, inline="always", error_model="numpy")(_px_cache)
_px_blocks_c = njit(cache=True, inline="always", error_model="numpy")(_px_blocks)
_px_held_c = njit(cache=True, inline="always", error_model="numpy")(_px_held)
_px_off_c = njit(cache=True, inline="always", error_model="numpy")(_px_off)


class State(NamedTuple):
    """A run's state: per request (`_R_*`, `_F_*` rows), its queues (`_Q_*`), its scalars
    (`_N_RUN` ..., `_NOW` ...) and its hashed prefix cache (`_px_cache`): few arrays, each
    holding many rows, indexed by name."""

    ri: np.ndarray
    rf: np.ndarray
    qs: np.ndarray
    ints: np.ndarray
    floats: np.ndarray
    pxi: np.ndarray
    pxf: np.ndarray


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
    ri, rf, qs, ints, floats, _, _ = state
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
def _new_state(
    load: Load, s: Settings, opt: Options, pxi: np.ndarray, pxf: np.ndarray
) -> State:
    """A run's state at its start (`_init_state`)."""
    n = load.arrival.shape[0]
    state = State(
        np.zeros((_R_ROWS, n), np.int64), np.zeros((_F_ROWS, n + 1), np.float64),
        np.zeros((_Q_ROWS, n + 1), np.int64), np.zeros(_N_INTS, np.int64),
        np.zeros(_N_FLOATS, np.float64), pxi, pxf,
    )
    _init_state(state, load, s, opt)
    return state


@njit(cache=True, error_model="numpy")
def _init_state(state: State, load: Load, s: Settings, opt: Options) -> None:
    """Fill a zeroed state for a run's start: every request waiting to arrive (a closed loop's
    first `n_in_flight` issued, each `issue_delay` after the start, in issue order), those that
    can never fit the cache marked."""
    ri, rf, qs, ints, floats, _, _ = state
    n = load.arrival.shape[0]
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
    i: int,
    ri: np.ndarray,
    rf: np.ndarray,
    floats: np.ndarray,
    pxi: np.ndarray,
    pxf: np.ndarray,
    s: Settings,
) -> None:
    """Replica._release: free request i's KV; the cached blocks it references that others
    still use stay counted, now against them."""
    floats[_KV_USED] -= rf[_F_KV, i]
    rf[_F_KV, i] = 0.0
    ri[_R_CTX, i] = 0
    if s.prefix:
        n = ri[_R_N_HELD, i]
        if n > 0:
            lo = _px_off_c(pxi)[i]
            floats[_KV_USED] += _release_blocks(_px_cache_c(pxi, pxf), _px_held_c(pxi), lo, lo + n)
            ri[_R_N_HELD, i] = 0
        ri[_R_N_SEEN, i] = 0


@njit(cache=True, inline="always", error_model="numpy")
def _hit_tokens(i: int, ri: np.ndarray, pxi: np.ndarray, pxf: np.ndarray, s: Settings) -> int:
    """Replica._hit_tokens: prompt tokens of request i already cached, were it admitted now
    (at most target - 1): its `cached` column, or its leading blocks in the prefix cache."""
    if not s.prefix:
        hits: int = min(ri[_R_CACHED, i], ri[_R_TARGET, i] - 1)
        return hits
    off = _px_off_c(pxi)
    lo = off[i]
    hi = min(lo + (ri[_R_TARGET, i] - 1) // s.block_tokens, off[i + 1])
    return s.block_tokens * _leading_hits(_px_cache_c(pxi, pxf), _px_blocks_c(pxi), lo, hi)


@njit(cache=True, inline="always", error_model="numpy")
def _shared(i: int, start: int, pxi: np.ndarray, pxf: np.ndarray, s: Settings) -> float:
    """Replica._shared_bytes: bytes of request i's first `start` tokens that running
    sequences already hold."""
    if not s.prefix or start == 0:
        return 0.0
    lo = _px_off_c(pxi)[i]
    return _shared_bytes(
        _px_cache_c(pxi, pxf), _px_blocks_c(pxi), lo, lo + start // s.block_tokens
    )


@njit(cache=True, inline="always", error_model="numpy")
def _register_blocks(
    i: int, ri: np.ndarray, pxi: np.ndarray, pxf: np.ndarray, s: Settings
) -> None:
    """Replica._register_blocks: cache the whole prompt blocks request i has computed by now
    (those cached already it keeps a private copy of)."""
    off = _px_off_c(pxi)
    lo = off[i]
    end = min(off[i + 1] - lo, ri[_R_DONE, i] // s.block_tokens)
    n = ri[_R_N_SEEN, i]
    if n >= end:
        return
    m = ri[_R_N_HELD, i]
    blocks, held, cache = _px_blocks_c(pxi), _px_held_c(pxi), _px_cache_c(pxi, pxf)
    for k in range(lo + n, lo + end):
        h = blocks[k]
        if _register(cache, h):
            held[lo + m] = h
            m += 1
    ri[_R_N_HELD, i] = m
    ri[_R_N_SEEN, i] = end


@_helper
def _preempt(state: State, s: Settings) -> None:
    """Replica._preempt (recompute) of the newest running request: free its KV and put it back
    at the head of the waiting queue."""
    ri, rf, qs, ints, floats, pxi, pxf = state
    ints[_N_RUN] -= 1
    i = qs[_Q_RUNNING, ints[_N_RUN]]
    _release(i, ri, rf, floats, pxi, pxf, s)
    ri[_R_TARGET, i] = ri[_R_PROMPT, i] + ri[_R_GENERATED, i]
    ri[_R_DONE, i] = 0
    ri[_R_STATE, i] = _WAITING
    ri[_R_PREEMPTIONS, i] += 1
    ints[_W_HEAD] = (ints[_W_HEAD] - 1) % qs.shape[1]
    qs[_Q_WAITING, ints[_W_HEAD]] = i
    ints[_W_COUNT] += 1


@_inlined
def _make_room(state: State, s: Settings) -> float:
    """Replica._start_step's first part: sort the running requests into decodes and partial
    prefills, then preempt the newest while the decodes' next tokens do not fit. Returns the
    KV bytes the decodes need."""
    ri, rf, qs, ints, floats, _, _ = state
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


@_inlined
def _continue_prefills(state: State, s: Settings, budget: int, free: float) -> tuple[int, float]:
    """Replica._start_step: the next chunks of partial prefills, in order, while the token
    budget and KV allow. Returns the budget and free bytes left."""
    ri, rf, qs, ints, _, _, _ = state
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


@_inlined
def _admit(state: State, s: Settings, budget: int, free: float) -> float:
    """Replica._start_step: admit waiting requests, oldest first, while the batch has room (a
    whole prompt under static batching, which reserves the whole sequence); each first skips
    the prefill of its hits. Returns the free bytes left."""
    ri, rf, qs, ints, floats, pxi, pxf = state
    cap = qs.shape[1]
    while ints[_W_COUNT] > 0 and ints[_N_RUN] < s.max_num_seqs:
        i = qs[_Q_WAITING, ints[_W_HEAD]]
        if s.prefix:
            _evict_to(_px_cache_c(pxi, pxf), free)  # the lookup sees what the steps so far left
        start = _hit_tokens(i, ri, pxi, pxf, s)
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
        shared = _shared(i, start, pxi, pxf, s)
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
            lo = _px_off_c(pxi)[i]
            k = start // s.block_tokens
            blocks, held = _px_blocks_c(pxi), _px_held_c(pxi)
            _acquire(_px_cache_c(pxi, pxf), blocks, lo, lo + k)
            floats[_KV_USED] -= shared
            for j in range(lo, lo + k):
                held[j] = blocks[j]
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
    ri, _, qs, ints, _, pxi, pxf = state
    if not s.prefix or ints[_W_COUNT] == 0:
        return False
    if not s.admit_while_running or ints[_N_RUN] >= s.max_num_seqs:
        return False
    i = qs[_Q_WAITING, ints[_W_HEAD]]
    start = _hit_tokens(i, ri, pxi, pxf, s)
    if start == 0:
        return False
    lo = _px_off_c(pxi)[i]
    return _any_free(_px_cache_c(pxi, pxf), _px_blocks_c(pxi), lo, lo + start // s.block_tokens)


@_helper
def _start_stretch(
    state: State, s: Settings, co: Coefficients, rec: Record, wk: Work
) -> float:
    """Replica._start_stretch: many decode steps of the whole batch at once, as many as every
    sequence has tokens left and the KV allows, cut at the next arrival that could join.
    Returns their time (s), or -1.0 when fewer than two steps would do."""
    ri, rf, qs, ints, floats, pxi, pxf = state
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
        _evict_to(_px_cache_c(pxi, pxf), s.capacity - floats[_KV_USED])
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




@_inlined
def _batch_time(state: State, s: Settings, co: Coefficients, x: np.ndarray) -> tuple[float, int, int]:
    """Replica._run_step's timing: the batch's aggregates (`BatchShape.of`) and its step time,
    a speculative one when the model drafts (`_speculative_s`). Returns the time (s), the
    prefill tokens and the sequences sampling a token."""
    ri, _, qs, ints, _, _, _ = state
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
    windowed = co.window > 0
    v_tok, v_att, v_win, v_logits = _verify_chunk(
        co.spec_k, n_dec, dctx, dwin, p_tok, p_att, p_win, n_logits, windowed
    )
    dt = _step_s(
        x, co, float(n_dec + v_tok), float(v_logits), dctx, dwin, dmax, fdec, v_att, v_win,
        float(v_tok), float(big_tok), big_att, big_win,
        n_dec + max(float(n_chunks), v_tok / co.prefill_unit), n_seqs, eager,
    )
    if co.spec_pipelined:
        pd, p_ctx, p_win_ctx, p_max, p_logits = _pipelined_decodes(
            co.spec_k, n_dec, dctx, dwin, dmax, n_logits, windowed
        )
        piped = _step_s(
            x, co, float(pd + p_tok), float(p_logits), p_ctx, p_win_ctx, p_max, float(pd), p_att,
            p_win, float(p_tok), float(big_tok), big_att, big_win,
            pd + max(float(n_chunks), p_tok / co.prefill_unit), float(pd + n_chunks), eager,
        )
        dt = min(dt, piped)
    draft = _step_s(
        x, co, fdec, fdec, dctx, dwin, dmax, fdec, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, fdec, fdec, 0.0
    )
    return (dt + co.spec_cost * fk * draft) / co.spec_tokens


@_inlined
def _run_step(
    state: State, s: Settings, co: Coefficients, opt: Options, rec: Record, wk: Work
) -> float:
    """Replica._run_step: time one step of the batch formed, reserve the KV it writes (so
    arrivals during the step see it taken) and record it. Returns its time (s)."""
    ri, rf, qs, ints, floats, _, _ = state
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
        if ints[_N_RUN] == 0 and ints[_W_COUNT] == 0 and ints[_A_COUNT] == 0:
            return -1.0
        need = _make_room(state, s)
        ints[_N_CHUNKS] = 0
        free = (s.capacity - floats[_KV_USED]) - need
        if ints[_A_COUNT] > 0 and ints[_W_COUNT] == 0 and (s.admit_while_running or ints[_N_RUN] == 0):
            free = _join_arrived(state, s, free)
        budget, free = _continue_prefills(state, s, s.max_tokens - ints[_N_DEC], free)
        if s.admit_while_running or ints[_N_RUN] == 0:
            free = _admit(state, s, budget, free)
        if ints[_N_DEC] == 0 and ints[_N_CHUNKS] == 0:
            if ints[_N_RUN] == 0:
                return -1.0
            _preempt(state, s)  # nothing fits (partial prefills hold the cache): the newest goes
            continue
        if s.prefix:
            _evict_to(_px_cache_c(state.pxi, state.pxf), free)
        if (
            opt.stretch
            and co.spec_k == 0
            and ints[_N_FRESH] == 0
            and ints[_N_CHUNKS] == 0
            and ints[_N_DEC] == ints[_N_RUN]
            and not opt.has_until
            and not _hits_evictable(state, s)
        ):
            dt = _start_stretch(state, s, co, rec, wk)
            if dt >= 0.0:
                return dt
        return _run_step(state, s, co, opt, rec, wk)


@_inlined
def _next_arrival(state: State) -> float:
    """When the next request arrives (s; inf when none is known): the earlier of the table's
    next arrival (the roots from `_AI` on) and the first of the issued turns on the heap."""
    _, rf, qs, ints, _, _, _ = state
    ai = ints[_AI]
    t = rf[_F_ARRIVAL, qs[_Q_ROOTS, ai]] if ai < ints[_N_ROOTS] else math.inf
    if ints[_N_HEAP] > 0 and rf[_F_HEAP_T, 0] < t:
        return float(rf[_F_HEAP_T, 0])
    return t


@_inlined
def _settled(i: int, now: float, state: State) -> None:
    """Request i completed or was rejected at `now`: a closed loop issues its next request (it
    arrives its issue delay later, in issue order); a session turn issues its next turns, rows
    kids[kid_start[i]:kid_start[i + 1]], each to arrive its gap later: onto the heap of
    (arrival, issue number), with their rows by issue number."""
    _, rf, qs, ints, _, _, _ = state
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


@_inlined
def _submit(state: State, i: int, now: float) -> bool:
    """Replica.submit: request i arrives at `now` and queues; False when it can never fit the
    cache (it is rejected then)."""
    ri, rf, qs, ints, _, _, _ = state
    if ri[_R_OVERSIZED, i]:
        ri[_R_STATE, i] = _REJECTED
        rf[_F_FINISH, i] = now
        return False
    qs[_Q_WAITING, (ints[_W_HEAD] + ints[_W_COUNT]) % qs.shape[1]] = i
    ints[_W_COUNT] += 1
    return True


@_helper
def _submit_decode(state: State, s: Settings, i: int, first_s: float, now: float) -> bool:
    """Replica.submit_decode: request i arrives at `now` with its prompt's KV and its first
    token (at `first_s`), computed elsewhere, and waits to join the batch as a decode. False
    when it is over at once: it can never fit (rejected) or wants no more tokens (done)."""
    ri, rf, qs, ints, _, _, _ = state
    need = _seq_bytes(
        ri[_R_PROMPT, i] + ri[_R_OUTPUT, i] - 1, s.bpt, s.bptw, s.kv_window, s.half_block
    )
    rf[_F_FIRST, i] = first_s
    ri[_R_GENERATED, i] = 1
    if need > s.capacity or ri[_R_OUTPUT, i] <= 1:
        ri[_R_STATE, i] = _REJECTED if need > s.capacity else _DONE
        rf[_F_FINISH, i] = now
        return False
    ri[_R_DONE, i] = ri[_R_PROMPT, i]
    ri[_R_TARGET, i] = ri[_R_PROMPT, i]
    qs[_Q_ARRIVED, (ints[_A_HEAD] + ints[_A_COUNT]) % qs.shape[1]] = i
    ints[_A_COUNT] += 1
    return True


@_inlined
def _join_arrived(state: State, s: Settings, free: float) -> float:
    """Replica._start_step: requests whose KV arrived join as decodes of this very step, in
    arrival order, while they fit (static batching reserves the whole sequence); returns the
    free bytes left."""
    ri, rf, qs, ints, floats, _, _ = state
    cap = qs.shape[1]
    while ints[_A_COUNT] > 0 and ints[_N_RUN] < s.max_num_seqs:
        i = qs[_Q_ARRIVED, ints[_A_HEAD]]
        reserve = ri[_R_PROMPT, i] + (ri[_R_OUTPUT, i] - 1 if not s.admit_while_running else 1)
        grow = _seq_bytes(reserve, s.bpt, s.bptw, s.kv_window, s.half_block)
        if grow > free:
            break
        ints[_A_HEAD] = (ints[_A_HEAD] + 1) % cap
        ints[_A_COUNT] -= 1
        qs[_Q_RUNNING, ints[_N_RUN]] = i
        ints[_N_RUN] += 1
        ri[_R_STATE, i] = _RUNNING
        _set_ctx(i, ri[_R_PROMPT, i], ri, rf, floats, s)
        free -= grow
        qs[_Q_DECODES, ints[_N_DEC]] = i
        ints[_N_DEC] += 1
        qs[_Q_FRESH, ints[_N_FRESH]] = i
        ints[_N_FRESH] += 1
    return free


@_helper
def _intake(state: State, limit: float) -> int:
    """Replica.submit for every arrival up to `limit` (s), in event order: at one time the
    table's arrivals come first, then issued turns by issue number; a rejection may issue turns
    that arrive by then too. Returns how many joined the queue."""
    _, rf, qs, ints, floats, _, _ = state
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
        if _submit(state, i, t):
            joined += 1
        else:
            _settled(i, t, state)


@_helper
def _end_step(state: State, s: Settings) -> None:
    """Replica._end_step (and _end_stretch): the step's tokens are out; prompts that finished
    their prefill give their first token; requests that have all their tokens finish."""
    ri, rf, qs, ints, floats, pxi, pxf = state
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
            _register_blocks(i, ri, pxi, pxf, s)
        if ri[_R_DONE, i] >= ri[_R_TARGET, i]:
            ri[_R_GENERATED, i] += 1
            if math.isnan(rf[_F_FIRST, i]):
                rf[_F_FIRST, i] = now
            if ri[_R_GENERATED, i] >= ri[_R_OUTPUT, i]:
                qs[_Q_FINISHED, n_fin] = i
                n_fin += 1
    ints[_N_FIN] = n_fin
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
        _release(i, ri, rf, floats, pxi, pxf, s)
        rf[_F_FINISH, i] = now
        _settled(i, now, state)


@njit(cache=True, error_model="numpy")
def _run(
    load: Load,
    s: Settings,
    co: Coefficients,
    opt: Options,
    pxi: np.ndarray,
    pxf: np.ndarray,
    abort: np.ndarray,
) -> tuple[State, Record, np.ndarray, np.ndarray, bool]:
    """One replica's run (see the module docstring). Returns its state (`_NOW`: the run's end),
    what it recorded, its ITL samples (seconds; tokens each) and whether it stopped early: it
    does, at once, when `abort` is set. The table's arrivals come in the order of `load.roots`;
    in sessions, each issued turn waits on a heap until it arrives, and its arrival is written
    at issue."""
    state = _new_state(load, s, opt, pxi, pxf)
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
    pxi: np.ndarray,
    pxf: np.ndarray,
    abort: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """Independent replicas, replica r serving rows offsets[r] .. offsets[r + 1] - 1, each
    run to completion in stretch mode: first token and finish times and rejections per row,
    busy seconds per replica, and whether the run was aborted. `pxi`, `pxf`: no prefix cache."""
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
        state, rec, _, _, aborted = _run(load, s, co, opt, pxi, pxf, abort)
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


# -- a disaggregated pair ---------------------------------------------------------------------
# Events of a pair (`_run_pair`), ordered as `sim.Environment` orders them: by time, priority,
# then the order they were scheduled in. A heap key packs priority, sequence and the event's
# slot in the payload (kind and two arguments).
_E_ARRIVE, _E_START, _E_END, _E_DELIVER = range(4)
_SLOT_BITS = 20
_SEQ_BITS = 36
MAX_PAIR_EVENTS = (1 << _SLOT_BITS) - 1
"""Events a compiled pair can hold pending at once (about two per request)."""
# A pair's integer state: events scheduled so far, pending, free payload slots, picks of each
# side, requests issued (closed loop), ITL samples.
_PR_SEQ, _PR_PENDING, _PR_FREE, _PR_PICK_P, _PR_PICK_D, _PR_ISSUED, _PR_N_ITL, _PR_INTS = range(8)
# Per request of a pair: integer rows (prefill and decode replica, finishes of each side,
# rejected, no decode replica can ever hold it) and float rows (arrival, first token, finish,
# KV ready on the decode side, bytes to move).
_PQ_PREFILL, _PQ_DECODE, _PQ_N_PREFILLED, _PQ_N_DECODED, _PQ_REJECTED, _PQ_ROWS = range(6)
_PF_ARRIVAL, _PF_FIRST, _PF_FINISH, _PF_READY, _PF_MOVED, _PF_ROWS = range(6)


class Pair(NamedTuple):
    """A disaggregated pair's shape and clock: replicas of each side, the router (least
    outstanding, else round robin), each prefill replica's link (bytes/s, s), the closed loop's
    requests in flight (0: open loop), and an optional stop (s)."""

    n_prefill: int
    n_decode: int
    least_outstanding: bool
    bandwidth: float
    latency: float
    n_in_flight: int
    has_until: bool
    until_s: float


class Pool(NamedTuple):
    """The replicas of a pair (prefill ones first): their states stacked (`State`'s arrays with
    a leading replica axis; an empty prefix cache shared), and their records (`Record`'s)."""

    ri: np.ndarray
    rf: np.ndarray
    qs: np.ndarray
    ints: np.ndarray
    floats: np.ndarray
    pxi: np.ndarray
    pxf: np.ndarray
    stats: np.ndarray
    bins: np.ndarray
    meta: np.ndarray


class PairState(NamedTuple):
    """A pair's own state: its scalars (`_PR_*`), per request rows (`_PQ_*`, `_PF_*`), the
    event heap (times, keys), the events' payloads (3 x slots: kind and two arguments) and the
    free slots, each prefill replica's link (busy until, s), each decode replica's requests on
    their way, and the ITL samples of the step just started (seconds, tokens; `_PR_N_ITL`)."""

    ints: np.ndarray
    rq: np.ndarray
    rfp: np.ndarray
    heap_t: np.ndarray
    heap_k: np.ndarray
    payload: np.ndarray
    free_slots: np.ndarray
    link_free: np.ndarray
    inbound: np.ndarray
    itl_s: np.ndarray
    itl_n: np.ndarray


class Sides(NamedTuple):
    """A pair's two sides (prefill, decode): each side's settings, step model and run options,
    and the scratch arrays their steps share."""

    settings: tuple[Settings, Settings]
    models: tuple[Coefficients, Coefficients]
    options: tuple[Options, Options]
    work: Work


@njit(cache=True, inline="always", error_model="numpy")
def _replica(pool: Pool, r: int) -> State:
    """Replica r's state as the replica's helpers take it (views)."""
    return State(pool.ri[r], pool.rf[r], pool.qs[r], pool.ints[r], pool.floats[r], pool.pxi, pool.pxf)


@njit(cache=True, inline="always", error_model="numpy")
def _schedule(ps: PairState, t: float, priority: int, kind: int, a: int, b: int) -> None:
    """Environment.schedule_at(t, kind(a, b), priority=priority)."""
    ints = ps.ints
    ints[_PR_FREE] -= 1
    slot = ps.free_slots[ints[_PR_FREE]]
    ps.payload[0, slot] = kind
    ps.payload[1, slot] = a
    ps.payload[2, slot] = b
    key = ((priority + 1) << (_SEQ_BITS + _SLOT_BITS)) | (ints[_PR_SEQ] << _SLOT_BITS) | slot
    ints[_PR_SEQ] += 1
    ints[_PR_PENDING] = _heap_push(ps.heap_t, ps.heap_k, ints[_PR_PENDING], t, key)


@njit(cache=True, inline="always", error_model="numpy")
def _pick(pool: Pool, ps: PairState, pair: Pair, first: int, count: int, k: int) -> int:
    """The router's pick among replicas first .. first + count - 1 (the `k`th pick): least
    outstanding requests (waiting, running, KV arrived, on their way; the lowest on ties), else
    in turn."""
    if not pair.least_outstanding:
        return k % count
    best = 0
    best_load = -1
    for j in range(count):
        r = first + j
        ints = pool.ints[r]
        load = ints[_W_COUNT] + ints[_N_RUN] + ints[_A_COUNT]
        if r >= pair.n_prefill:
            load += ps.inbound[j]
        if best_load < 0 or load < best_load:
            best = j
            best_load = load
    return best


@njit(cache=True, inline="always", error_model="numpy")
def _wake(pool: Pool, ps: PairState, r: int, now: float) -> None:
    """Replica._wake: an idle replica starts a step once this instant's arrivals are in."""
    if not pool.ints[r, _BUSY]:
        pool.ints[r, _BUSY] = 1
        _schedule(ps, now, 1, _E_START, r, 0)


@njit(cache=True, inline="always", error_model="numpy")
def _decoded(ps: PairState, i: int, now: float) -> None:
    """disaggregated's `decoded`: the decode side is done with request i."""
    ps.rq[_PQ_N_DECODED, i] += 1
    ps.rfp[_PF_FINISH, i] = now
    _pair_settled(ps, now)


@njit(cache=True, inline="always", error_model="numpy")
def _pair_settled(ps: PairState, now: float) -> None:
    """A request is done or turned away: a closed loop's client sends the next one."""
    issued = ps.ints[_PR_ISSUED]
    if issued < ps.rq.shape[1]:
        ps.ints[_PR_ISSUED] = issued + 1
        ps.rfp[_PF_ARRIVAL, issued] = now
        _schedule(ps, now + 0.0, -1, _E_ARRIVE, issued, 0)


@_helper
def _prefilled(pool: Pool, ps: PairState, pair: Pair, p: int, i: int, now: float) -> None:
    """disaggregated's `prefilled`: prefill replica p is done with request i (or turned it
    away); its KV crosses p's link to a decode replica picked now."""
    rq, rfp = ps.rq, ps.rfp
    rq[_PQ_N_PREFILLED, i] += 1
    first = pool.rf[p, _F_FIRST, i]
    if math.isnan(first):  # turned away: the prompt can never fit
        rq[_PQ_REJECTED, i] = 1
        rfp[_PF_FINISH, i] = now
        _pair_settled(ps, now)
        return
    rfp[_PF_FIRST, i] = first
    if pool.ri[pair.n_prefill, _R_OUTPUT, i] <= 1:
        rfp[_PF_FINISH, i] = now
        _pair_settled(ps, now)
        return
    start = max(now, ps.link_free[p])
    ps.link_free[p] = start + rfp[_PF_MOVED, i] / pair.bandwidth
    d = _pick(pool, ps, pair, pair.n_prefill, pair.n_decode, ps.ints[_PR_PICK_D])
    ps.ints[_PR_PICK_D] += 1
    rq[_PQ_DECODE, i] = d
    ps.inbound[d] += 1
    _schedule(ps, ps.link_free[p] + pair.latency, -1, _E_DELIVER, d, i)


@_helper
def _pair_step(
    pool: Pool,
    ps: PairState,
    pair: Pair,
    r: int,
    now: float,
    sd: Sides,
) -> None:
    """Replica r's `_start_step` at `now`: its next step, or idle; a decode replica's ITL
    samples (a request prefilled elsewhere: its first gap runs from its first token there)."""
    state = _replica(pool, r)
    side = 0 if r < pair.n_prefill else 1
    state.floats[_NOW] = now
    rec = Record(pool.stats[r], pool.bins[r], pool.meta[r])
    dt = _start_step(state, sd.settings[side], sd.models[side], sd.options[side], rec, sd.work)
    if dt < 0.0:
        state.ints[_BUSY] = 0
        return
    state.ints[_BUSY] = 1
    ps.ints[_PR_N_ITL] = 0
    if side == 1:
        ints, n_dec, n_fresh = state.ints, state.ints[_N_DEC], state.ints[_N_FRESH]
        for q in range(n_fresh):
            i = state.qs[_Q_FRESH, q]
            _itl_push(ps, now + dt - state.rf[_F_FIRST, i], 1)
        if n_fresh > 0 and n_dec > n_fresh:
            _itl_push(ps, dt, n_dec - n_fresh)
        elif n_fresh == 0 and n_dec > 0:
            _itl_push(ps, dt, n_dec)
        ints[_N_FRESH] = 0
    _schedule(ps, now + dt, 0, _E_END, r, 0)


@njit(cache=True, inline="always", error_model="numpy")
def _itl_push(ps: PairState, dt: float, n: int) -> None:
    """One ITL sample of the step just started (at most one per sequence and one more)."""
    k = ps.ints[_PR_N_ITL]
    ps.itl_s[k] = dt
    ps.itl_n[k] = n
    ps.ints[_PR_N_ITL] = k + 1



@_helper
def _pair_event(
    pool: Pool,
    ps: PairState,
    pair: Pair,
    kind: int,
    a: int,
    b: int,
    now: float,
    sd: Sides,
) -> None:
    """One event of a pair at `now` (see `disaggregated`'s closures): an arrival (a: the
    request; b: 1 when it schedules the next), a replica's step start or end (a: the replica),
    a KV delivery (a: the decode replica, b: the request)."""
    rq, rfp = ps.rq, ps.rfp
    n_p = pair.n_prefill
    if kind == _E_ARRIVE:
        i = a
        if b and i + 1 < rq.shape[1]:
            _schedule(ps, rfp[_PF_ARRIVAL, i + 1], -1, _E_ARRIVE, i + 1, 1)
        if pool.ri[n_p, _R_OVERSIZED, i]:  # no decode replica can ever hold it
            rq[_PQ_REJECTED, i] = 1
            rfp[_PF_FINISH, i] = now
            _pair_settled(ps, now)
            return
        p = _pick(pool, ps, pair, 0, n_p, ps.ints[_PR_PICK_P])
        ps.ints[_PR_PICK_P] += 1
        rq[_PQ_PREFILL, i] = p
        if _submit(_replica(pool, p), i, now):
            _wake(pool, ps, p, now)
        else:
            _prefilled(pool, ps, pair, p, i, now)
    elif kind == _E_START:
        _pair_step(pool, ps, pair, a, now, sd)
    elif kind == _E_END:
        r = a
        state = _replica(pool, r)
        state.floats[_NOW] = now
        _end_step(state, sd.settings[0 if r < n_p else 1])
        for f in range(state.ints[_N_FIN]):
            i = state.qs[_Q_FINISHED, f]
            if r < n_p:
                _prefilled(pool, ps, pair, r, i, now)
            else:
                _decoded(ps, i, now)
        _pair_step(pool, ps, pair, r, now, sd)
    else:  # _E_DELIVER
        d, i = a, b
        ps.inbound[d] -= 1
        rfp[_PF_READY, i] = now
        r = n_p + d
        if _submit_decode(_replica(pool, r), sd.settings[1], i, rfp[_PF_FIRST, i], now):
            _wake(pool, ps, r, now)
        else:
            _decoded(ps, i, now)


@njit(cache=True, error_model="numpy")
def _run_pair(
    pool: Pool,
    ps: PairState,
    pair: Pair,
    sides: tuple[tuple[Settings, Settings], tuple[Coefficients, Coefficients], tuple[Options, Options]],
    abort: np.ndarray,
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, bool]:
    """A disaggregated pair's run (`serving.disagg.disaggregated`, compiled): events in the
    Environment's order until none is left or the next lies after `until`. Returns the clock at
    the end, the decode side's ITL samples (seconds, tokens, replica) and whether a held signal
    stopped it."""
    n = ps.rq.shape[1]
    ss, cs, opts = sides
    start = opts[0].start_s
    if pair.n_in_flight > 0:
        ps.ints[_PR_ISSUED] = min(pair.n_in_flight, n)
        for i in range(ps.ints[_PR_ISSUED]):
            _schedule(ps, 0.0, -1, _E_ARRIVE, i, 0)
    else:
        ps.ints[_PR_ISSUED] = n
        if n:
            _schedule(ps, ps.rfp[_PF_ARRIVAL, 0], -1, _E_ARRIVE, 0, 1)
    sd = Sides(ss, cs, opts, Work(
        np.zeros(cs[0].flops.shape[1], np.float64), np.zeros(17, np.float64),
        np.zeros((6, max(cs[0].flops.shape[0], cs[1].flops.shape[0])), np.float64),
        np.zeros(n + 1), np.zeros(4, np.float64),
    ))
    itl_s = np.zeros(1024, np.float64)
    itl_n = np.zeros(1024, np.int64)
    itl_r = np.zeros(1024, np.int64)
    n_itl = 0
    now = start
    abort_flag = np.zeros(1, np.bool_)
    while ps.ints[_PR_PENDING] > 0:
        if _aborted(abort):
            abort_flag[0] = True
            break
        t = ps.heap_t[0]
        if pair.has_until and t > pair.until_s:
            break
        key = ps.heap_k[0]
        ps.ints[_PR_PENDING] = _heap_pop(ps.heap_t, ps.heap_k, ps.ints[_PR_PENDING])
        slot = key & ((1 << _SLOT_BITS) - 1)
        kind, a, b = ps.payload[0, slot], ps.payload[1, slot], ps.payload[2, slot]
        ps.free_slots[ps.ints[_PR_FREE]] = slot
        ps.ints[_PR_FREE] += 1
        now = t
        ps.ints[_PR_N_ITL] = 0
        _pair_event(pool, ps, pair, kind, a, b, now, sd)
        k = ps.ints[_PR_N_ITL]
        if k > 0:
            if n_itl + k > itl_s.shape[0]:
                grow = max(itl_s.shape[0], k)
                itl_s = np.concatenate((itl_s, np.zeros(grow)))
                itl_n = np.concatenate((itl_n, np.zeros(grow, np.int64)))
                itl_r = np.concatenate((itl_r, np.zeros(grow, np.int64)))
            itl_s[n_itl : n_itl + k] = ps.itl_s[:k]
            itl_n[n_itl : n_itl + k] = ps.itl_n[:k]
            itl_r[n_itl : n_itl + k] = a  # the replica whose step started
            n_itl += k
    if pair.has_until:
        now = pair.until_s
    return now, itl_s[:n_itl].copy(), itl_n[:n_itl].copy(), itl_r[:n_itl].copy(), bool(abort_flag[0])



class PairRun(NamedTuple):
    """What a compiled pair's run leaves (see `run_pair_fast`): the clock at the end, per
    request the replica of each side (-1: none), how many times each side finished it, whether
    it was rejected, its arrival, first token, finish and KV-ready times (s; NaN where none) and
    the bytes its KV moved (0 where it moved none); per replica its requests' preemptions and
    cache hits, stats and timeline; the decode side's ITL samples and their replica."""

    end_s: float
    prefill_of: np.ndarray
    decode_of: np.ndarray
    n_prefilled: np.ndarray
    n_decoded: np.ndarray
    rejected: np.ndarray
    arrival_s: np.ndarray
    first_token_s: np.ndarray
    finish_s: np.ndarray
    kv_ready_s: np.ndarray
    moved_bytes: np.ndarray
    preemptions: np.ndarray
    cache_hits: np.ndarray
    stats: tuple[ReplicaStats, ...]
    timelines: tuple[Timeline, ...]
    itl_s: np.ndarray
    itl_n: np.ndarray
    itl_replica: np.ndarray


def run_pair_fast(
    sides: tuple[tuple[StepCoefficients, KvBudget, str | SchedulerPolicy, int, int, float], ...],
    requests: Requests,
    arrival_s: np.ndarray,
    moved_bytes: np.ndarray,
    pair: Pair,
    start_s: float,
) -> PairRun:
    """A disaggregated pair on the compiled engine (`serving.disagg.disaggregated` builds the
    arguments and reads the result): `sides` gives each side's step coefficients, KV budget,
    scheduler, batch limits and timeline bin (prefill first); per request, its arrival (s;
    ignored by a closed loop) and the KV bytes its transfer moves. Prefill replicas serve the
    requests up to their first token, decode replicas the rest; a request no decode replica can
    ever hold (the decode side's `_R_OVERSIZED`) is turned away on arrival."""
    n = len(requests)
    n_rep = pair.n_prefill + pair.n_decode
    if 2 * n + 2 * n_rep + 4 > MAX_PAIR_EVENTS:
        raise InputError(
            f"a compiled pair holds at most {MAX_PAIR_EVENTS:,} pending events (about two per "
            f"request); got {n:,} requests on {n_rep} replicas. Use backend='python' or split the run."
        )
    args = [_replica_args(c, kv, sched, seqs, tokens) for c, kv, sched, seqs, tokens, _ in sides]
    prefill_opt, decode_opt = (
        Options(float(start_s), False, math.inf, float(side[5]), DEFAULT_MAX_BINS, False, 0)
        for side in sides
    )
    opts = (prefill_opt, decode_opt)
    pxi, pxf = _prefix(sides[0][1], np.zeros(0, np.int64))
    prompt = np.array(requests.prompt_tokens, dtype=np.int64)
    loads = (
        Load(np.array(arrival_s, dtype=np.float64), prompt, np.ones(n, np.int64),
             np.array(requests.cached_tokens, dtype=np.int64), np.zeros(n), np.zeros(0, np.int64),
             np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)),
        Load(np.array(arrival_s, dtype=np.float64), prompt,
             np.array(requests.output_tokens, dtype=np.int64),
             np.array(requests.cached_tokens, dtype=np.int64), np.zeros(n), np.zeros(0, np.int64),
             np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)),
    )
    side_of = [0 if r < pair.n_prefill else 1 for r in range(n_rep)]
    while True:  # again only if a held signal's handler chose not to stop the run
        pool = Pool(
            np.zeros((n_rep, _R_ROWS, n), np.int64), np.zeros((n_rep, _F_ROWS, n + 1)),
            np.zeros((n_rep, _Q_ROWS, n + 1), np.int64), np.zeros((n_rep, _N_INTS), np.int64),
            np.zeros((n_rep, _N_FLOATS)), pxi, pxf, np.zeros((n_rep, 8)),
            np.zeros((n_rep, 4, DEFAULT_MAX_BINS)),
            np.array([[opts[side].bin_s, 0.0, start_s] for side in side_of]),
        )
        for r, side in enumerate(side_of):
            _init_replica(pool, r, loads[side], args[side][0], opts[side])
        ps = _new_pair_state(n, n_rep, pair, arrival_s, moved_bytes)
        with held_signals() as abort:
            end_s, itl_s, itl_n, itl_r, aborted = _run_pair(
                pool, ps, pair, ((args[0][0], args[1][0]), (args[0][1], args[1][1]), opts), abort
            )
        if not aborted:
            break
    stats = tuple(_replica_stats(pool.stats[r]) for r in range(n_rep))
    timelines = []
    for r, side in enumerate(side_of):
        t = Timeline(start_s, sides[side][1].capacity_bytes, opts[side].bin_s, DEFAULT_MAX_BINS)
        t.bins[:] = pool.bins[r]
        t.meta[:] = pool.meta[r]
        timelines.append(t)
    rq, rf = ps.rq, ps.rfp
    return PairRun(
        float(end_s), rq[_PQ_PREFILL], rq[_PQ_DECODE], rq[_PQ_N_PREFILLED], rq[_PQ_N_DECODED],
        rq[_PQ_REJECTED].astype(bool), rf[_PF_ARRIVAL], rf[_PF_FIRST], rf[_PF_FINISH],
        rf[_PF_READY], np.where(rq[_PQ_DECODE] >= 0, rf[_PF_MOVED], 0.0),
        pool.ri[:, _R_PREEMPTIONS], pool.ri[:, _R_HITS], stats, tuple(timelines), itl_s, itl_n,
        itl_r,
    )


@njit(cache=True, error_model="numpy")
def _init_replica(pool: Pool, r: int, load: Load, s: Settings, opt: Options) -> None:
    """Replica r of a pair at the start: every request still to come."""
    _init_state(_replica(pool, r), load, s, opt)


def _new_pair_state(
    n: int,
    n_rep: int,
    pair: Pair,
    arrival_s: np.ndarray,
    moved_bytes: np.ndarray,
) -> PairState:
    """A pair's own state at the start (see `PairState`)."""
    slots = 2 * n + 2 * n_rep + 4
    rq = np.zeros((_PQ_ROWS, n), np.int64)
    rq[_PQ_PREFILL] = -1
    rq[_PQ_DECODE] = -1
    rfp = np.full((_PF_ROWS, n), np.nan)
    rfp[_PF_ARRIVAL] = arrival_s
    rfp[_PF_MOVED] = moved_bytes
    ints = np.zeros(_PR_INTS, np.int64)
    ints[_PR_FREE] = slots
    return PairState(
        ints, rq, rfp, np.zeros(slots), np.zeros(slots, np.int64), np.zeros((3, slots), np.int64),
        np.arange(slots, dtype=np.int64), np.zeros(pair.n_prefill), np.zeros(pair.n_decode, np.int64),
        np.zeros(n + 2), np.zeros(n + 2, np.int64),
    )


def _replica_stats(st: np.ndarray) -> ReplicaStats:
    """A replica's stats from the kernel's record (`_ST_*`)."""
    return ReplicaStats(
        busy_s=float(st[_ST_BUSY]),
        n_steps=int(st[_ST_STEPS]),
        n_stretches=int(st[_ST_STRETCHES]),
        seq_seconds=float(st[_ST_SEQ_S]),
        kv_byte_seconds=float(st[_ST_KV_S]),
        prefill_tokens=int(st[_ST_PREFILL]),
        decode_tokens=int(st[_ST_DECODE]),
        peak_kv_bytes=float(st[_ST_PEAK]),
    )


def _prefix(
    kv: KvBudget,
    prompt_tokens: np.ndarray,
    prefix_blocks: Sequence[np.ndarray] | None = None,
    block_tokens: int = PREFIX_BLOCK_TOKENS,
) -> tuple[np.ndarray, np.ndarray]:
    """The kernel's packed prefix cache (`_px_cache`) over the requests' hashed prompt blocks
    (as `Replica` keeps it: blocks of `block_tokens` tokens, each taking `bytes_per_token *
    block_tokens`), or an empty one when there are none."""
    if prefix_blocks is None:
        flat, off, n_blocks = np.zeros(0, np.int64), np.zeros(1, np.int64), 0
    else:
        flat, off, n_blocks = dense_blocks(prefix_blocks, prompt_tokens, block_tokens)
    cache = new_state(n_blocks, kv.bytes_per_token * block_tokens)
    parts = (cache.refs, cache.older, cache.newer, cache.counts)
    pxi = np.concatenate((
        np.array([n_blocks, flat.size]), *(np.asarray(a) for a in parts), flat,
        np.zeros(flat.size, np.int64), off,
    )).astype(np.int64)
    return pxi, np.asarray(cache.sizes, dtype=np.float64)


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
                *columns, settings, model, *_prefix(kv, np.zeros(0, np.int64)), abort
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
    pxi, pxf = _prefix(kv, prompt, prefix_blocks, prefix_block_tokens)  # checks the blocks
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
            state, rec, itl_s, itl_n, aborted = _run(load, settings, model, opt, pxi, pxf, abort)
        if not aborted:
            break
        pxi, pxf = _prefix(kv, prompt, prefix_blocks, prefix_block_tokens)  # empty again
    if not stretch:
        timeline.bins[:] = rec.bins
        timeline.meta[:] = rec.meta
    closed_or_sessions = bool(n_in_flight) or sessions
    return _run_result(requests, state, rec, itl_s, itl_n, None if stretch else timeline, closed_or_sessions)


def _run_result(
    requests: Requests,
    state: State,
    rec: Record,
    itl_s: np.ndarray,
    itl_n: np.ndarray,
    timeline: Timeline | None,
    issued: bool,
) -> RunResult:
    """A single replica's run as a `RunResult` (`issued`: a closed loop's or sessions' run,
    whose arrivals are the kernel's and which has no backlog)."""
    n = len(requests)
    stats = _replica_stats(rec.stats)
    stats.prefix_evicted_blocks = int(n_evicted(_px_cache(state.pxi, state.pxf)))
    ri, rf = state.ri, state.rf
    rejected = ri[_R_STATE] == _REJECTED
    return RunResult(
        arrival_s=rf[_F_ARRIVAL, :n] if issued else np.asarray(requests.arrival_s),
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
        backlog=0 if issued else int(state.ints[_BACKLOG]),
        timeline_bins=timeline,
    )
