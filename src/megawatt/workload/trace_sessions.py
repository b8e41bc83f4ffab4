"""Conversations recovered from a trace's prefix blocks (Mooncake sessions), their statistics and
the chat session class fitted to them.

`mooncake_sessions` chains each request to the earlier one whose context it continues (the chain
rule is in its docstring), `session_statistics` measures the sessions (handling the trace
window's ends), and `fit_chat` turns the statistics into the chat class's lognormals, which
`sessions.MOONCAKE_CHAT_FIT` stores (`mooncake_chat_fit` recomputes them, about 0.5 s).

The built-in Mooncake conversation trace (Kimi, 12,031 requests in 59 min) holds 7,373
sessions and 4,658 later turns (3,980 plain next turns, 678 branches). Measured, by
`statistics_table(mooncake_chat_fit()[0])` (the lower bound of the window is the p90
arrival-to-arrival gap, the upper one half the span; see `session_statistics`):

Sessions whose first turn arrives in [498 s, 1,768 s): 2,525 sessions, 4,342 turns.

| per | quantity | p50 | p90 | mean | n |
|---|---|---|---|---|---|
| session | turns | 1.0 | 3.0 | 1.7 | 2,525 |
| session | first prompt, tokens | 5,642.0 | 26,537.8 | 11,068.7 | 2,525 |
| plain next turn | new tokens | 28.5 | 4,132.8 | 1,291.9 | 1,514 |
| turn | output tokens | 347.0 | 604.0 | 335.5 | 4,342 |
| later turn | think gap (estimate), s | 130.2 | 555.4 | 247.1 | 1,817 |
| later turn | arrival-to-arrival gap, s | 138.0 | 564.0 | 255.1 | 1,817 |

| share | % |
|---|---|
| prompt tokens re-sent (blocks shared with the turn before) | 34.5 |
| later turns that branch | 16.7 |
| plain next turns with new tokens <= 0 | 11.0 |
| sessions of one turn | 67.1 |

Branches keep only part of the parent's context (an edited or trimmed history); new tokens <= 0
mean the parent's answer was not carried back whole (or the prompt was trimmed).

Caveats. A first prompt of at most two blocks (<= 1,024 tokens; 18 % of first turns) has one
block beyond the shared system prompt and that block is partial, so its next turn shares only
the system prompt and is counted as a new session: turns are undercounted. Left censoring is
reduced, not removed (see `session_statistics`); turns and gaps longer than the rest of the
window are cut, so their p90s are lower bounds. Timestamps are quantised to about 3 s.
`tests/workload/test_sessions_mooncake.py` checks the tables against a recomputation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from megawatt.errors import InputError
from megawatt.workload.requests import Requests
from megawatt.workload.sessions import sigma_of_p90
from megawatt.workload.traces import MOONCAKE_BLOCK_TOKENS, builtin_trace_with_prefixes

__all__ = [
    "DECODE_TOKENS_PER_S",
    "ChatFit",
    "Quantiles",
    "SessionStatistics",
    "TraceSessions",
    "fit_chat",
    "mooncake_chat_fit",
    "mooncake_sessions",
    "session_statistics",
    "statistics_table",
]

DECODE_TOKENS_PER_S = 41.0
"""Decode speed used to estimate how long a turn's answer took to stream, tokens per second:
the median per-stream decode speed TraceLab observed for Claude Code / Codex (FACTS.md B.5),
applied to Kimi as an ESTIMATE (the Mooncake trace carries no finish times)."""


@dataclass(frozen=True, eq=False)
class TraceSessions:
    """A trace's requests grouped into sessions (conversations). Per request, in trace order:
    `parent` (the earlier request it continues, -1 for a session's first turn), `session` (index,
    sessions numbered by their first turn), `turn` (0 for a first turn, else the parent's + 1),
    `shared_blocks` (leading prefix blocks shared with the parent, 0 for a first turn),
    `extends` (the parent's blocks, but perhaps its last, partial one, are a prefix of this
    request's: a plain next turn; False for a first turn and for a branch, a turn that keeps
    only part of its parent's context), `new_tokens` (prompt minus the parent's prompt and
    output, may be <= 0; a first turn: its whole prompt), `resent_tokens` (prompt tokens in the
    blocks shared with the parent), `gap_arrival_s` (arrival minus the parent's arrival, NaN for
    a first turn) and `gap_s` (that minus the parent's estimated answer time, at least 0: think
    time). Per session: `start_s` (its first turn's arrival) and `n_turns`. `span_s` is the
    trace's last arrival minus its first."""

    requests: Requests
    parent: np.ndarray
    session: np.ndarray
    turn: np.ndarray
    shared_blocks: np.ndarray
    extends: np.ndarray
    new_tokens: np.ndarray
    resent_tokens: np.ndarray
    gap_arrival_s: np.ndarray
    gap_s: np.ndarray
    start_s: np.ndarray
    n_turns: np.ndarray

    @property
    def n_sessions(self) -> int:
        return len(self.start_s)

    @property
    def span_s(self) -> float:
        arrival = self.requests.arrival_s
        return float(arrival[-1] - arrival[0]) if len(arrival) else 0.0


def _checked_ids(hash_ids: Sequence[np.ndarray], n: int) -> list[list[int]]:
    """The block lists as Python lists, refusing a wrong count, an empty list, or an id that
    names two different prefixes (found at two positions or after two different ids)."""
    if len(hash_ids) != n:
        raise InputError(
            f"hash_ids must hold one block list per request ({n}); got {len(hash_ids)}."
        )
    where: dict[int, tuple[int, int]] = {}  # id -> (position, id before it, -1 at position 0)
    lists: list[list[int]] = []
    for row, ids in enumerate(hash_ids):
        blocks = np.asarray(ids)
        if blocks.ndim != 1 or not len(blocks) or blocks.dtype.kind not in "iu":
            raise InputError(
                f"hash_ids[{row}] must be a non-empty 1-D array of whole block ids; got {ids!r:.60}."
            )
        listed = blocks.tolist()
        before = -1
        for position, block in enumerate(listed):
            seen = where.setdefault(block, (position, before))
            if seen != (position, before):
                raise InputError(
                    f"hash_ids[{row}]: block id {block} at position {position} named another "
                    f"prefix earlier (position {seen[0]}); ids must name whole prefixes, as "
                    "Mooncake's do."
                )
            before = block
        lists.append(listed)
    return lists


def mooncake_sessions(
    requests: Requests,
    hash_ids: Sequence[np.ndarray],
    *,
    common_share: float = 0.5,
    decode_tokens_per_s: float = DECODE_TOKENS_PER_S,
    block_tokens: int = MOONCAKE_BLOCK_TOKENS,
) -> TraceSessions:
    """Sessions of a trace with prefix-block ids (Mooncake's `hash_ids`, one list per request).

    A Mooncake block id names a whole prefix (a block's KV depends on every token before it), so
    two requests share their first k blocks exactly when they share the id at position k - 1.
    Ids held by more than `common_share` of the requests are common (in the conversation trace
    id 0, a 512-token system prompt held by all 12,031 requests; the next most common id is in
    43): sharing only those links nothing. The chain rule: a request continues the earlier
    request that shares the most leading blocks with it beyond its common ones; of several, the
    one with the fewest blocks (closest to being a prefix of it), then the latest. A request
    sharing nothing beyond the common blocks starts a session. The parent's last block is
    usually partial, so the next turn (which appends to it) shares all but that block.

    Answer time of the parent, for `gap_s`: its output tokens / `decode_tokens_per_s` (default
    `DECODE_TOKENS_PER_S`, an ESTIMATE); prefill and queueing are ignored, so `gap_s` still
    overstates the think time by the parent's time to first token.
    """
    if not isinstance(requests, Requests):
        raise InputError(f"requests must be a Requests table; got {type(requests).__name__}.")
    n = len(requests.arrival_s)
    lists = _checked_ids(hash_ids, n)
    if not 0.0 < common_share <= 1.0:
        raise InputError(f"common_share must be in (0, 1]; got {common_share!r}.")
    if not decode_tokens_per_s > 0 or not math.isfinite(decode_tokens_per_s):
        raise InputError(f"decode_tokens_per_s must be > 0; got {decode_tokens_per_s!r}.")
    if isinstance(block_tokens, bool) or not isinstance(block_tokens, int) or block_tokens < 1:
        raise InputError(f"block_tokens must be a whole number >= 1; got {block_tokens!r}.")

    holders: dict[int, int] = {}
    for blocks in lists:
        for block in set(blocks):
            holders[block] = holders.get(block, 0) + 1
    common = {block for block, count in holders.items() if count > common_share * n}

    parent = np.full(n, -1, np.int64)
    shared = np.zeros(n, np.int64)
    best: dict[int, int] = {}  # id -> the earlier request holding it with the fewest blocks, latest
    for row, blocks in enumerate(lists):
        lead = 0
        while lead < len(blocks) and blocks[lead] in common:
            lead += 1
        k = 0
        while k < len(blocks) and blocks[k] in best:
            k += 1
        if k > lead:
            parent[row] = best[blocks[k - 1]]
            shared[row] = k
        size = len(blocks)
        for block in blocks:
            held = best.get(block)
            if held is None or len(lists[held]) >= size:
                best[block] = row

    linked = parent >= 0
    up = np.maximum(parent, 0)
    sizes = np.array([len(blocks) for blocks in lists], np.int64)
    session = np.zeros(n, np.int64)
    turn = np.zeros(n, np.int64)
    roots = np.flatnonzero(~linked)
    session[roots] = np.arange(len(roots))
    for child in np.flatnonzero(linked).tolist():  # parents come first: one pass suffices
        session[child] = session[parent[child]]
        turn[child] = turn[parent[child]] + 1
    prompt = requests.prompt_tokens
    output = requests.output_tokens
    arrival = requests.arrival_s
    extends = linked & (sizes[up] - shared <= 1)
    new = np.where(linked, prompt - prompt[up] - output[up], prompt)
    resent = np.where(linked, np.minimum(block_tokens * shared, prompt), 0)
    gap_arrival = np.where(linked, arrival - arrival[up], np.nan)
    gap = np.where(linked, np.maximum(gap_arrival - output[up] / decode_tokens_per_s, 0.0), np.nan)
    return TraceSessions(
        requests, parent, session, turn, shared, extends, new, resent, gap_arrival, gap,
        arrival[roots], np.bincount(session, minlength=len(roots)),
    )


@dataclass(frozen=True)
class Quantiles:
    """The median (`p50`), 90th percentile (`p90`, linear interpolation) and `mean` of `n` values."""

    p50: float
    p90: float
    mean: float
    n: int

    @classmethod
    def of(cls, values: np.ndarray, what: str) -> Quantiles:
        x = np.asarray(values, dtype=np.float64)
        if not len(x):
            raise InputError(f"no {what} to measure: the sessions counted have none. Widen the window.")
        return cls(float(np.median(x)), float(np.percentile(x, 90)), float(x.mean()), len(x))


@dataclass(frozen=True)
class SessionStatistics:
    """What a trace's sessions measure, over the sessions whose first turn arrives in
    [`from_s`, `before_s`) and all their turns: `turns` per session; `first_prompt` tokens;
    `new_tokens` per plain next turn (prompt minus the parent's prompt and output; branches
    left out); `output` tokens per turn; `gap_s` (think time, estimated: see `mooncake_sessions`)
    and `gap_arrival_s` (arrival to arrival, its upper bound) per later turn. `resent_share`:
    prompt tokens in blocks shared with the parent over all prompt tokens; `branch_share`: later
    turns that keep only part of their parent's context; `nonpositive_new_share`: plain next
    turns whose prompt grew by no more than the parent's output; `single_turn_share`: sessions
    of one turn."""

    from_s: float
    before_s: float
    n_sessions: int
    n_turns: int
    turns: Quantiles
    first_prompt: Quantiles
    new_tokens: Quantiles
    output: Quantiles
    gap_s: Quantiles
    gap_arrival_s: Quantiles
    resent_share: float
    branch_share: float
    nonpositive_new_share: float
    single_turn_share: float


def session_statistics(
    sessions: TraceSessions, *, from_s: float | None = None, before_s: float | None = None
) -> SessionStatistics:
    """Statistics of the sessions whose first turn arrives in [`from_s`, `before_s`) (arrival
    times, seconds).

    The trace is a window: a session cut by its end shows too few turns, and one already running
    at its start shows a later turn as its first (with the longer prompt of a grown context).
    Defaults: `before_s` is half the span, so every session counted had at least half the trace
    to go on (right censoring is then left in the tails only: turns and gaps longer than the
    remaining time are still cut, so their p90s are lower bounds); `from_s` is the 90th
    percentile of the arrival-to-arrival gap of all later turns in the trace, since a session
    that began before the trace shows up one gap after its start (most such sessions are then
    left out; those with a longer gap are not)."""
    linked = sessions.parent >= 0
    first_s = float(sessions.requests.arrival_s[0]) if len(linked) else 0.0
    if from_s is None:
        lead = float(np.percentile(sessions.gap_arrival_s[linked], 90)) if linked.any() else 0.0
        from_s = first_s + lead
    if before_s is None:
        before_s = first_s + sessions.span_s / 2.0
    if not first_s <= from_s < before_s:
        raise InputError(
            f"session_statistics needs first arrival ({first_s:g} s) <= from_s < before_s; got "
            f"from_s {from_s}, before_s {before_s}."
        )
    counted = np.flatnonzero((sessions.start_s >= from_s) & (sessions.start_s < before_s))
    rows = np.isin(sessions.session, counted)
    later = rows & linked
    plain = rows & sessions.extends
    prompt = sessions.requests.prompt_tokens
    new = sessions.new_tokens[plain]
    n_later = int(later.sum())
    return SessionStatistics(
        from_s=float(from_s),
        before_s=float(before_s),
        n_sessions=len(counted),
        n_turns=int(rows.sum()),
        turns=Quantiles.of(sessions.n_turns[counted], "sessions"),
        first_prompt=Quantiles.of(prompt[rows & ~linked], "first turns"),
        new_tokens=Quantiles.of(new, "plain next turns"),
        output=Quantiles.of(sessions.requests.output_tokens[rows], "turns"),
        gap_s=Quantiles.of(sessions.gap_s[later], "later turns"),
        gap_arrival_s=Quantiles.of(sessions.gap_arrival_s[later], "later turns"),
        resent_share=float(sessions.resent_tokens[rows].sum() / prompt[rows].sum()),
        branch_share=float((later & ~sessions.extends).sum() / n_later) if n_later else 0.0,
        nonpositive_new_share=float((new <= 0).mean()) if len(new) else 0.0,
        single_turn_share=float((sessions.n_turns[counted] == 1).mean()) if len(counted) else 0.0,
    )


@dataclass(frozen=True)
class ChatFit:
    """Lognormal chat-session parameters fitted to `SessionStatistics` (`fit_chat`): per
    quantity a median (the sample median) and a sigma (`sigma_of_p90` of the sample median and
    p90). Turns per session, first prompt, new and output tokens per turn; gap in seconds."""

    turns_median: float
    turns_sigma: float
    first_prompt_median: float
    first_prompt_sigma: float
    new_tokens_median: float
    new_tokens_sigma: float
    output_median: float
    output_sigma: float
    gap_median_s: float
    gap_sigma: float


def fit_chat(stats: SessionStatistics) -> ChatFit:
    """The chat session class's lognormals from measured statistics: median = the sample
    median, sigma from the sample p90 (`sigma_of_p90`). New tokens per turn are bimodal (typed
    messages and pasted documents: p50 28.5, p90 4,133, mean 1,292), and a lognormal through
    their p50 and p90 has a mean about 40 times the sample's; their sigma is fitted to the
    sample mean instead (`sigma_of_mean`), so the tokens the turns add are right. The gap is the
    think-time estimate `gap_s`, the class's gap after a turn ends."""

    def fit(q: Quantiles) -> tuple[float, float]:
        return q.p50, sigma_of_p90(q.p50, q.p90)

    turns, first, output, gap = (
        fit(q) for q in (stats.turns, stats.first_prompt, stats.output, stats.gap_s)
    )
    q = stats.new_tokens
    new = (q.p50, sigma_of_mean(q.p50, q.mean))
    return ChatFit(*turns, *first, *new, *output, *gap)


def sigma_of_mean(median: float, mean: float) -> float:
    """The sigma (of ln x) of a lognormal with this median and mean (mean > median)."""
    if not 0 < median < mean:
        raise InputError(f"a lognormal by its mean needs 0 < median < mean; got {median}, {mean}.")
    return math.sqrt(2.0 * math.log(mean / median))


def mooncake_chat_fit() -> tuple[SessionStatistics, ChatFit]:
    """The built-in Mooncake conversation trace's session statistics (default window) and the
    chat fit to them: what `sessions.MOONCAKE_CHAT_FIT` stores (about 0.3 s)."""
    requests, hash_ids = builtin_trace_with_prefixes("mooncake-conversation")
    stats = session_statistics(mooncake_sessions(requests, hash_ids))
    return stats, fit_chat(stats)


def statistics_table(stats: SessionStatistics) -> str:
    """`stats` as Markdown (the tables in this module's docstring)."""
    lines = [
        f"Sessions whose first turn arrives in [{stats.from_s:,.0f} s, {stats.before_s:,.0f} s): "
        f"{stats.n_sessions:,} sessions, {stats.n_turns:,} turns.",
        "",
        "| per | quantity | p50 | p90 | mean | n |",
        "|---|---|---|---|---|---|",
    ]
    for per, name, q in (
        ("session", "turns", stats.turns),
        ("session", "first prompt, tokens", stats.first_prompt),
        ("plain next turn", "new tokens", stats.new_tokens),
        ("turn", "output tokens", stats.output),
        ("later turn", "think gap (estimate), s", stats.gap_s),
        ("later turn", "arrival-to-arrival gap, s", stats.gap_arrival_s),
    ):
        lines.append(f"| {per} | {name} | {q.p50:,.1f} | {q.p90:,.1f} | {q.mean:,.1f} | {q.n:,} |")
    lines += ["", "| share | % |", "|---|---|"]
    for name, share in (
        ("prompt tokens re-sent (blocks shared with the turn before)", stats.resent_share),
        ("later turns that branch", stats.branch_share),
        ("plain next turns with new tokens <= 0", stats.nonpositive_new_share),
        ("sessions of one turn", stats.single_turn_share),
    ):
        lines.append(f"| {name} | {100 * share:.1f} |")
    return "\n".join(lines)
