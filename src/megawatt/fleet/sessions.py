"""Sessions on a replica and on a fleet: task time, tasks per day per MW, cost and value per task.

`session_capacity` is the MLPerf server search over sessions: Poisson session starts at rate
lambda on one replica, every turn waiting for the one before (`serving.sessions`), and the
highest lambda at which every turn meets the SLO's p99 TTFT and TPOT. At that rate it reports
the task time (a session's start to its last turn's end, tool and think time included) at p50
and p99, the tokens a task takes, and every rate the search tried with its task times: the
task-time-against-load curve, which `SessionOutcome` turns into task time against cost per task.

`SessionOutcome` is one class of sessions served by one pool of an option: tasks per day per MW
(the session capacity spread over the mean load, like the option's prompts per day), cost per
task (the pool's yearly cost per replica over the tasks it serves), and revenue per task from the
price tier the pool's per-user speed earns (`PriceTier`), so revenue per MW next to cost per MW.
`serving_pool` routes by latency class: `fast` sessions to the pool with the fastest single
stream, `batch` ones to the cheapest per token, `standard` ones to the largest pool. Every turn of
a session stays on one replica (session affinity: its prefix cache is there), which is what
`session_capacity` simulates.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from megawatt.errors import InputError
from megawatt.serving import ReplicaConfig, RunResult, Slo
from megawatt.serving.drivers import sessions
from megawatt.units import SECONDS_PER_DAY, SECONDS_PER_YEAR
from megawatt.workload import Diurnal, Mix, Poisson, Requests
from megawatt.workload.sessions import SessionClass, SessionTable, sample_sessions

__all__ = [
    "PriceTier",
    "SessionCapacity",
    "SessionOutcome",
    "pick_tier",
    "serving_pool",
    "session_capacity",
    "session_outcome",
]

MW = 1e6


@dataclass(frozen=True)
class SessionCapacity:
    """One class of sessions on one replica at the highest start rate within the SLO.

    `users` work through tasks at once (each starts its next task when the last ends), finishing
    `rate_per_s` tasks per second. Times in seconds, tokens per task (a session); `frontier`
    holds, for every user count tried (sorted), (users, tasks per s, task time p50, task time
    p99, turns' p99 TTFT, p99 TPOT).
    """

    class_name: str
    latency: str
    users: int
    rate_per_s: float
    task_p50_s: float
    task_p99_s: float
    turns_per_task: float
    prompt_tokens_per_task: float
    cached_tokens_per_task: float
    output_tokens_per_task: float
    per_user_tokens_per_s: float
    alone_task_p50_s: float
    frontier: tuple[tuple[float, float, float, float, float, float], ...]
    limited_by: tuple[str, ...] = ()
    reason: str = ""

    @property
    def turns_per_hour(self) -> float:
        """Turns a user (or agent) gets through per hour of its own task time, at capacity."""
        return self.turns_per_task / self.task_p50_s * 3600.0 if self.task_p50_s > 0 else math.nan


@dataclass(frozen=True)
class _Run:
    ok: bool
    limited_by: tuple[str, ...]
    point: tuple[float, float, float, float, float, float]
    result: RunResult
    table: SessionTable


def in_slots(table: SessionTable, n_slots: int, stagger_s: float = 0.0) -> SessionTable:
    """The sessions worked through by `n_slots` users (or agents) at once, each starting its next
    task the moment its last one ends: sessions go to the slot with the fewest turns so far,
    longest first (so the slots end together and the load stays at `n_slots` to the end), and
    each slot's first task starts at 0. Rows are reordered (k-th task of every slot, then the
    (k+1)-th); `session` keeps each row's session index in `table`."""
    m = table.n_sessions
    n_slots = max(1, min(n_slots, m))
    turns = np.bincount(table.session, minlength=m)
    work = turns + np.bincount(table.session, weights=table.gap_s, minlength=m)
    order = np.argsort(-work, kind="stable")
    load = [(0.0, s) for s in range(n_slots)]
    slot_of = np.zeros(m, np.int64)
    rank = np.zeros(m, np.int64)
    count = np.zeros(n_slots, np.int64)
    for j in order:
        w, s = heapq.heappop(load)
        slot_of[j], rank[j] = s, count[s]
        count[s] += 1
        heapq.heappush(load, (w + float(work[j]), s))
    seq = np.lexsort((slot_of, rank))  # sessions by (rank in slot, slot)
    offsets = np.r_[0, np.cumsum(turns)]
    spans = [np.arange(offsets[j], offsets[j + 1]) for j in seq]
    rows = np.concatenate(spans) if m else np.zeros(0, np.int64)
    new_index = np.empty_like(rows)
    new_index[rows] = np.arange(len(rows))
    parent = np.where(table.parent[rows] >= 0, new_index[np.maximum(table.parent[rows], 0)], -1)
    gap = table.gap_s[rows].copy()
    last_row: dict[int, int] = {}
    first_rows = new_index[offsets[:-1]]
    last_rows = new_index[offsets[1:] - 1]
    for j in seq:  # chain each slot's tasks: the first turn waits for the slot's task before
        s = int(slot_of[j])
        if s in last_row:
            parent[first_rows[j]] = last_row[s]
        last_row[s] = int(last_rows[j])
    starts = np.zeros(m)
    firsts = seq[:n_slots]  # rank 0 of every slot, in slot order
    starts[firsts] = np.arange(len(firsts)) / n_slots * stagger_s
    arrival = np.where(parent < 0, starts[table.session[rows]], 0.0)
    arrival = np.maximum.accumulate(arrival) if len(arrival) else arrival
    reqs = table.requests.subset(rows).with_arrivals(arrival)
    return SessionTable(reqs, parent, gap, table.session[rows], starts, table.session_class)


def _task_times(table: SessionTable, res: RunResult, rows: np.ndarray | None = None) -> np.ndarray:
    """Each session's task time in a run: its last turn's end minus its first turn's arrival.
    `rows` are the table's rows' places in the run (default: the run is the table)."""
    m = table.n_sessions
    at = np.arange(len(table.session)) if rows is None else rows
    first = np.full(m, -1, np.int64)
    last = np.full(m, -1, np.int64)
    first[table.session[::-1]] = at[::-1]
    last[table.session] = at
    out: np.ndarray = np.asarray(res.finish_s)[last] - np.asarray(res.arrival_s)[first]
    return out


def _run_slots(
    cfg: ReplicaConfig, table: SessionTable, n: int, slo: Slo, backend: str, stagger_s: float
) -> _Run:
    """The table worked through by `n` slots: whether every turn meets `slo`, and (slots,
    tasks per s, task time p50, p99, turns' p99 TTFT, p99 TPOT). Tasks per s is Little's law:
    n over the mean task time (every slot is always busy with a task)."""
    linked = in_slots(table, n, stagger_s)
    res = sessions(cfg, linked.requests, linked.parent, linked.gap_s, backend=backend, stretch=True)
    times = _task_times(linked, res)
    done = times[np.isfinite(times)]
    p50 = float(np.percentile(done, 50)) if done.size else math.nan
    p99 = float(np.percentile(done, 99)) if done.size else math.nan
    ttft, tpot = res.percentile("ttft_s", 99), res.percentile("tpot_s", 99)
    bad = tuple(
        name for name, value, limit in (("TTFT", ttft, slo.ttft_p99_s), ("TPOT", tpot, slo.tpot_p99_s))
        if not value <= limit
    )
    if done.size < times.size:
        bad += ("rejected",) if res.rejected.any() else ("unfinished",)
    tasks_per_s = min(n, linked.n_sessions) / float(done.mean()) if done.size and done.mean() > 0 else 0.0
    return _Run(not bad, bad, (float(n), tasks_per_s, p50, p99, ttft, tpot), res, linked)


_TASKS_PER_SLOT = 4


def _concat(a: SessionTable, b: SessionTable) -> SessionTable:
    """Two session tables of one class as one (b's sessions after a's)."""
    n_a, m_a = len(a.session), a.n_sessions
    return SessionTable(
        Requests.concat([a.requests, b.requests]),  # all arrivals 0: the order is kept
        np.r_[a.parent, np.where(b.parent >= 0, b.parent + n_a, -1)],
        np.r_[a.gap_s, b.gap_s],
        np.r_[a.session, b.session + m_a],
        np.r_[a.start_s, b.start_s],
        np.r_[a.session_class, b.session_class],
    )


def session_capacity(
    cfg: ReplicaConfig,
    cls: SessionClass,
    slo: Slo,
    *,
    max_context_tokens: int,
    seed: Sequence[int],
    n_requests: int = 20_000,
    max_requests: int = 400_000,
    min_sessions: int = 64,
    rel_tol: float = 0.05,
    max_evaluations: int = 24,
    backend: str = "auto",
) -> SessionCapacity:
    """The session capacity of `cfg` for class `cls` (see the module docstring): the most users
    (or agents) working through tasks at once, back to back (`in_slots`), at which every turn
    meets `slo`'s p99 TTFT and TPOT; tasks per s is the tasks done over the run's span. The
    sessions, about `n_requests` turns (at least `min_sessions` sessions), are drawn once
    (seeded by `seed`) and replayed at every count (common random numbers); one user alone
    gives the latency floor."""
    if n_requests < 1:
        raise InputError(f"n_requests must be >= 1; got {n_requests}.")
    rng = np.random.default_rng(list(seed))
    mean_turns = max(float(cls.turns.mean), 1.0)
    n_sessions = max(min_sessions, int(n_requests / mean_turns))

    def draw(m: int) -> SessionTable:
        return sample_sessions(
            (cls,), rng, np.zeros(m), max_context_tokens=max_context_tokens,
            class_id=np.zeros(m, np.int64),
        )

    table = draw(n_sessions)
    runs: dict[int, _Run] = {}
    stagger = [0.0]

    def run(n: int) -> bool:
        if n not in runs:
            runs[n] = _run_slots(cfg, table, n, slo, backend, stagger[0])
        return runs[n].ok

    lo, hi = 0, 0
    if run(1):
        stagger[0] = runs[1].point[2]  # one task's median length alone: slots start within it
        lo, n = 1, 1
        while len(runs) < max_evaluations:
            if n * 2 > table.n_sessions // _TASKS_PER_SLOT:
                if len(table.requests) * 2 > max_requests:
                    break
                more = draw(table.n_sessions)  # a slot needs a few tasks for its load to hold
                table = _concat(table, more)
            n *= 2
            if not run(n):
                hi = n
                break
            lo = n
        while hi and hi - lo > max(1, int(rel_tol * lo)) and len(runs) < max_evaluations:
            mid = (lo + hi) // 2
            if run(mid):
                lo = mid
            else:
                hi = mid
    frontier = tuple(sorted(r.point for r in runs.values()))
    alone = runs[1].point[2]
    if not lo:
        return SessionCapacity(
            cls.name, cls.latency, 0, 0.0, math.nan, math.nan, math.nan, math.nan, math.nan,
            math.nan, math.nan, alone, frontier, runs[1].limited_by, "SLO not met by one user alone",
        )
    best = runs[lo]
    res = best.result
    served = ~res.rejected
    per = 1.0 / best.table.n_sessions
    tpot = res.percentile("tpot_s", 50)
    return SessionCapacity(
        cls.name,
        cls.latency,
        lo,
        best.point[1],
        best.point[2],
        best.point[3],
        len(res.prompt_tokens) * per,
        float(res.prompt_tokens[served].sum()) * per,
        float(res.cached_tokens[served].sum()) * per,
        float(res.output_tokens[served].sum()) * per,
        1.0 / tpot if tpot > 0 else math.nan,
        alone,
        frontier,
        runs[hi].limited_by if hi else (),
        "" if hi else f"not saturated at {lo} users (max_requests: {max_requests} turns)",
    )


@dataclass(frozen=True)
class PriceTier:
    """What a provider charges per million tokens (USD) when its per-user speed is at least
    `min_tokens_per_s`; cached input is billed at `cached_input_usd_per_m`."""

    name: str
    min_tokens_per_s: float
    input_usd_per_m: float
    cached_input_usd_per_m: float
    output_usd_per_m: float
    source: str = ""

    def revenue(self, prompt: float, cached: float, output: float) -> float:
        """USD for a task of these tokens."""
        return (
            (prompt - cached) * self.input_usd_per_m
            + cached * self.cached_input_usd_per_m
            + output * self.output_usd_per_m
        ) / 1e6


def pick_tier(tiers: Sequence[PriceTier], tokens_per_s: float) -> PriceTier | None:
    """The dearest tier whose speed floor the per-user speed meets (None: no tier)."""
    ok = [t for t in tiers if math.isfinite(tokens_per_s) and tokens_per_s >= t.min_tokens_per_s]
    return max(ok, key=lambda t: t.min_tokens_per_s) if ok else None


@dataclass(frozen=True)
class SessionOutcome:
    """One class of sessions served by one pool of an option, at the option's mean load."""

    class_name: str
    pool: str
    capacity: SessionCapacity
    tasks_per_day_per_mw: float
    usd_per_task: float
    revenue_per_task: float
    tier: str
    wait_usd_per_task: float

    @property
    def revenue_per_mw_year(self) -> float:
        return self.revenue_per_task * self.tasks_per_day_per_mw * 365.0

    @property
    def cost_per_mw_year(self) -> float:
        return self.usd_per_task * self.tasks_per_day_per_mw * 365.0

    def curve(self) -> list[tuple[float, float, float]]:
        """(task time p50 s, task time p99 s, USD per task) at every user count the search tried
        up to the capacity: fewer users per replica buy shorter tasks at a higher cost per task."""
        c = self.capacity
        if c.rate_per_s <= 0 or not math.isfinite(self.usd_per_task):
            return []
        return [
            (p50, p99, self.usd_per_task * c.rate_per_s / rate)
            for users, rate, p50, p99, _, _ in c.frontier
            if users <= c.users and rate > 0 and math.isfinite(p50)
        ]


def session_outcome(
    cap: SessionCapacity,
    pool: str,
    *,
    replica_facility_w: float,
    replica_usd_per_year: float,
    load_fraction: float,
    tiers: Sequence[PriceTier],
    usd_per_wait_hour: float,
) -> SessionOutcome:
    """What a pool's session capacity gives at the option's mean load: tasks per day per MW of
    facility power, the pool's yearly cost per replica spread over its tasks, the revenue the
    tier of its per-user speed earns, and the users' wait (task time p50) at `usd_per_wait_hour`."""
    tasks_per_s = cap.rate_per_s * load_fraction
    per_day_mw = tasks_per_s * SECONDS_PER_DAY / (replica_facility_w / MW) if replica_facility_w > 0 else 0.0
    usd = replica_usd_per_year / (tasks_per_s * SECONDS_PER_YEAR) if tasks_per_s > 0 else math.inf
    tier = pick_tier(tiers, cap.per_user_tokens_per_s)
    revenue = (
        tier.revenue(cap.prompt_tokens_per_task, cap.cached_tokens_per_task, cap.output_tokens_per_task)
        if tier is not None and tasks_per_s > 0
        else 0.0
    )
    wait = cap.task_p50_s / 3600.0 * usd_per_wait_hour if math.isfinite(cap.task_p50_s) else math.nan
    return SessionOutcome(
        cap.class_name, pool, cap, per_day_mw, usd, revenue, tier.name if tier else "none", wait
    )


def serving_pool(
    latency: str, speeds: Sequence[float], usd_per_token: Sequence[float], sizes: Sequence[float]
) -> int:
    """The index of the pool a session of this latency class goes to: `fast` to the fastest
    single stream, `batch` to the cheapest per token, `standard` to the largest pool."""
    if not speeds:
        raise InputError("an option needs at least one pool to serve sessions.")
    if latency == "fast":
        return int(np.nanargmax(np.asarray(speeds, dtype=float))) if np.isfinite(speeds).any() else 0
    if latency == "batch":
        return int(np.argmin(np.asarray(usd_per_token, dtype=float)))
    return int(np.argmax(np.asarray(sizes, dtype=float)))


@dataclass(frozen=True)
class SessionsAtDemand:
    """One class of sessions over a day on a replica of the pool serving it, next to the rest of
    that replica's traffic: both arrive by the day's diurnal process (sessions start open loop,
    every turn waiting for the one before). Times in seconds; task times over the day's
    sessions, and the median of those starting within an hour of the peak."""

    class_name: str
    pool: str
    tasks_per_day: float
    other_requests_per_day: float
    window_s: float
    days: int
    task_p50_s: float
    task_p99_s: float
    peak_hour_task_p50_s: float
    ttft_p99_s: float
    tpot_p99_s: float
    n_tasks: int


def with_other_traffic(
    linked: SessionTable, other: Requests
) -> tuple[Requests, np.ndarray, np.ndarray, np.ndarray]:
    """A slot table (`in_slots`) merged with independent requests (sessions of one turn each):
    the rows, their parents and gaps, and which rows are the sessions' (True), in an order the
    session driver takes. Each slot's first task and the other requests come by start time;
    the later tasks, which wait for a turn before them, come at the end."""
    n_s, n_o = len(linked.session), len(other)
    first_row = np.r_[True, linked.session[1:] != linked.session[:-1]] if n_s else np.zeros(0, bool)
    block = np.cumsum(first_row) - 1  # the session block of each row, in table order
    opens = (linked.parent < 0) & first_row  # rows that start a slot's first task
    starts = np.where(opens, np.asarray(linked.requests.arrival_s), np.inf)
    block_start = np.full(int(block.max()) + 1 if n_s else 0, np.inf)
    np.minimum.at(block_start, block, starts)
    key = np.r_[block_start[block], np.asarray(other.arrival_s)]
    tie = np.r_[block, np.arange(n_o) + (block.max() + 1 if n_s else 0)]
    order = np.lexsort((np.arange(n_s + n_o), tie, key))  # stable within a block
    new_index = np.empty(n_s + n_o, np.int64)
    new_index[order] = np.arange(n_s + n_o)
    parent_all = np.r_[linked.parent, np.full(n_o, -1, np.int64)]
    parent = np.where(parent_all[order] >= 0, new_index[np.maximum(parent_all[order], 0)], -1)
    own = np.where(np.isfinite(block_start[block]), block_start[block], 0.0)
    arrival = np.r_[own, other.arrival_s][order]
    arrival = np.maximum.accumulate(arrival) if len(arrival) else arrival
    both = Requests.concat([linked.requests, other])
    cols = {
        "prompt_tokens": np.r_[linked.requests.prompt_tokens, other.prompt_tokens][order],
        "output_tokens": np.r_[linked.requests.output_tokens, other.output_tokens][order],
        "cached_tokens": np.r_[linked.requests.cached_tokens, other.cached_tokens][order],
    }
    names = both.class_names
    ids = np.r_[
        [names.index(linked.requests.class_names[c]) for c in linked.requests.class_id],
        [names.index(other.class_names[c]) for c in other.class_id],
    ].astype(np.int32)[order]
    reqs = Requests(arrival_s=arrival, class_id=ids, class_names=names, **cols)
    gap = np.r_[linked.gap_s, np.zeros(n_o)][order]
    mine = np.r_[np.ones(n_s, bool), np.zeros(n_o, bool)][order]
    return reqs, parent, gap, mine


_DAY_S = SECONDS_PER_DAY


def _day_starts(rng: np.random.Generator, per_day: float, process: Diurnal, window_s: float) -> np.ndarray:
    """Arrival times in the first `window_s` seconds of a diurnal process of `per_day` a day."""
    n = int(per_day * window_s / _DAY_S * 2.0) + 16  # enough candidates: at most twice the mean
    times = process.sample(rng, n)
    return times[times < window_s]


def sessions_at_demand(
    cfg: ReplicaConfig,
    cls: SessionClass,
    pool: str,
    *,
    tasks_per_day: float,
    other: Mix,
    other_requests_per_day: float,
    peak_to_trough: float,
    max_context_tokens: int,
    seed: Sequence[int],
    peak_hour: float = 14.0,
    max_requests: int = 1_000_000,
    min_tasks: int = 200,
    max_days: int = 200,
    backend: str = "auto",
) -> SessionsAtDemand:
    """A day of `cls` sessions (`tasks_per_day` of them on average) on one replica, next to
    `other_requests_per_day` requests of the `other` mix, both arriving by a diurnal process
    (`workload.Diurnal`, peaking at `peak_hour`, `peak_to_trough` between peak and trough). The
    day starts at the trough, where the sessions of the day before, which it leaves out, weigh
    least; sessions run to their end. When the day holds more than `max_requests` requests
    (turns and others), a window of the day centred on the peak hour, as long as fits, stands
    for it (its start then leaves out the sessions already running). Replicas' days (independent
    draws) are added until `min_tasks` tasks are seen, at most `max_days` of them and about
    `max_requests` requests in all."""
    if not (math.isfinite(tasks_per_day) and tasks_per_day > 0):
        raise InputError(f"tasks_per_day must be a number > 0; got {tasks_per_day}.")
    if not (math.isfinite(other_requests_per_day) and other_requests_per_day >= 0):
        raise InputError(f"other_requests_per_day must be a number >= 0; got {other_requests_per_day}.")
    rng = np.random.default_rng(list(seed))
    per_day = tasks_per_day * max(float(cls.turns.mean), 1.0) + other_requests_per_day
    window = min(_DAY_S, _DAY_S * max_requests / per_day)
    start_hour = (peak_hour - window / 7200.0) % 24.0 if window < _DAY_S else (peak_hour + 12.0) % 24.0

    def day(per_day: float) -> np.ndarray:
        process = Diurnal(per_day / _DAY_S, peak_to_trough, peak_hour, 0.0, start_hour)
        return _day_starts(rng, per_day, process, window)

    times: list[np.ndarray] = []
    peak_times: list[np.ndarray] = []
    ttft: list[np.ndarray] = []
    tpot: list[np.ndarray] = []
    simulated, days = 0, 0
    while days < max_days and (sum(t.size for t in times) < min_tasks or not days):
        days += 1  # another replica's day (independent draws), until enough tasks are seen
        starts = day(tasks_per_day)
        table = sample_sessions(
            (cls,), rng, starts, max_context_tokens=max_context_tokens,
            class_id=np.zeros(len(starts), np.int64),
        )
        rest = day(other_requests_per_day) if other_requests_per_day > 0 else np.zeros(0)
        others = other.sample(rng, len(rest), Poisson(1.0)).with_arrivals(rest)
        reqs, parent, gap, mine = with_other_traffic(table, others)
        res = sessions(cfg, reqs, parent, gap, backend=backend, stretch=True)
        simulated += len(reqs)
        task = _task_times(table, res, np.flatnonzero(mine))
        ok = np.isfinite(task)
        clock = (start_hour + table.start_s / 3600.0) % 24.0
        near_peak = ok & (np.abs((clock - peak_hour + 12.0) % 24.0 - 12.0) <= 1.0)
        times.append(task[ok])
        peak_times.append(task[near_peak])
        done = res.completed
        ttft.append(res.ttft_s[done])
        tpot.append(res.tpot_s[done & (res.output_tokens > 1)])
        if simulated >= max_requests:
            break
    done_all = np.concatenate(times)
    peak_all = np.concatenate(peak_times)
    return SessionsAtDemand(
        cls.name,
        pool,
        tasks_per_day,
        other_requests_per_day,
        window,
        days,
        _pct(done_all, 50),
        _pct(done_all, 99),
        _pct(peak_all, 50),
        _pct(np.concatenate(ttft), 99),
        _pct(np.concatenate(tpot), 99),
        int(done_all.size),
    )


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else math.nan
