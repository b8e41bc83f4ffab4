"""Closed-loop sessions: chains of turns, each waiting for the one before (agents, chat, research).

A session is what a user or an agent calls one task. Its first turn sends a first prompt (system
prompt, tools, task); every later turn re-sends the whole context so far (the prompt and the
output of the turn before) plus new tokens (a tool result or the user's next message), and
reads the part of that context still in the replica's prefix cache from the cache. Each turn
generates reasoning plus answer tokens; the next turn is issued a gap later (tool time or human
think time). When the next turn would overflow the model's context window, the agent compacts:
the context restarts from the first prompt (and is not in the cache).

`sample_sessions` draws a session table: a `Requests` table whose rows are turns, grouped by
session in start order (every row carries its session's start as `arrival_s`), plus each row's
`parent` (the turn before, -1 for a first turn) and `gap_s`, which `serving.sessions` replays.
Task time is the last turn's finish minus the session's start (`task_times`).

The default classes (`default_session_classes`) come from sourced statistics, named in each
class's `source`; numbers we had to estimate say so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from megawatt.errors import InputError
from megawatt.workload.lengths import LengthDistribution, Lognormal
from megawatt.workload.requests import Requests

__all__ = [
    "LATENCY_CLASSES",
    "MOONCAKE_CHAT_FIT",
    "SessionClass",
    "SessionTable",
    "check_sessions",
    "default_session_classes",
    "sample_sessions",
    "session_links",
    "sigma_of_p90",
    "task_times",
]

LATENCY_CLASSES = ("fast", "standard", "batch")
"""How much a class's user waits on each turn: `fast` (an agent or a person blocked on every
call), `standard` (chat) or `batch` (automation nobody watches). The class-aware router sends
`fast` sessions to the fastest pool and `batch` ones to the cheapest."""

_Z90 = 1.2815515655446004  # the standard normal's 90th percentile


def sigma_of_p90(median: float, p90: float) -> float:
    """The sigma (of ln x) of a lognormal with this median and 90th percentile."""
    if not 0 < median < p90:
        raise InputError(f"a lognormal needs 0 < median < p90; got median {median}, p90 {p90}.")
    return math.log(p90 / median) / _Z90


@dataclass(frozen=True)
class SessionClass:
    """One kind of session. Token counts are per turn; `gap_median_s` and `gap_sigma` give the
    lognormal gap between a turn's end and the next turn's issue (clipped at `gap_max_s`);
    `cache_hit` is the share of the re-sent context read from the prefix cache; `latency` is one
    of `LATENCY_CLASSES`; `share` is the class's share of sessions."""

    name: str
    share: float
    latency: str
    turns: LengthDistribution
    first_prompt: LengthDistribution
    new_tokens: LengthDistribution
    output: LengthDistribution
    gap_median_s: float
    gap_sigma: float
    cache_hit: float
    gap_max_s: float = 3600.0
    source: str = ""
    mix_class: str | None = None
    """The request class of a traffic mix whose requests are this class's turns (the
    `agentic` requests of the ChatGPT-like mix are coding-agent turns), or None."""

    def __post_init__(self) -> None:
        where = f"session class {self.name!r}"
        if self.latency not in LATENCY_CLASSES:
            raise InputError(
                f"{where}: latency must be one of {', '.join(LATENCY_CLASSES)}; got {self.latency!r}."
            )
        for name, value, low, high in (
            ("share", self.share, 0.0, 1.0),
            ("cache_hit", self.cache_hit, 0.0, 1.0),
            ("gap_median_s", self.gap_median_s, 0.0, math.inf),
            ("gap_sigma", self.gap_sigma, 0.0, 20.0),
            ("gap_max_s", self.gap_max_s, 0.0, math.inf),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
                raise InputError(
                    f"{where}: {name} must be a number in [{low:g}, {high:g}]; got {value!r}."
                )
        if self.gap_median_s > 0 and self.gap_max_s < self.gap_median_s:
            raise InputError(
                f"{where}: gap_max_s ({self.gap_max_s}) must be >= gap_median_s ({self.gap_median_s})."
            )

    def gaps(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """`n` gaps, seconds."""
        if self.gap_median_s == 0:
            return np.zeros(n)
        draws = rng.lognormal(math.log(self.gap_median_s), self.gap_sigma, n)
        return np.minimum(draws, self.gap_max_s)


def check_sessions(n: int, parent: np.ndarray, gap_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`parent` and `gap_s` as int64 and float64 arrays, checked (see `serving.sessions`)."""
    par = np.asarray(parent, dtype=np.int64)
    gap = np.asarray(gap_s, dtype=np.float64)
    if par.shape != (n,) or gap.shape != (n,):
        raise InputError(f"parent and gap_s must hold one value per request ({n}).")
    if not ((par < np.arange(n)).all() and (par >= -1).all()):
        raise InputError("parent[i] must be -1 (a session's first turn) or an earlier row's index.")
    if not (np.isfinite(gap).all() and (gap >= 0).all()):
        raise InputError("gap_s must hold one finite delay >= 0 per request.")
    return par, gap


def session_links(
    arrival_s: np.ndarray, parent: np.ndarray
) -> tuple[np.ndarray, dict[int, list[int]], np.ndarray]:
    """How an event loop replays checked session links (`check_sessions`): the first turns in
    arrival order (stable), each row's children (the turns issued when it ends), and the
    arrivals known before the run (first turns' `arrival_s`; NaN for the rest)."""
    first = np.flatnonzero(parent < 0)
    first = first[np.argsort(np.asarray(arrival_s)[first], kind="stable")]
    children: dict[int, list[int]] = {}
    for i in np.flatnonzero(parent >= 0):
        children.setdefault(int(parent[i]), []).append(int(i))
    arrival = np.full(len(parent), np.nan)
    arrival[first] = np.asarray(arrival_s)[first]
    return first, children, arrival


@dataclass(frozen=True, eq=False)
class SessionTable:
    """Sessions as turns: `requests` (rows grouped by session, sessions in start order, each
    row's `arrival_s` its session's start, `class_id` its session class), each row's `parent`
    (the turn before, -1 for a first turn), `gap_s` (after the parent ends), `session` (index),
    and per session its `start_s` and `class_id`."""

    requests: Requests
    parent: np.ndarray
    gap_s: np.ndarray
    session: np.ndarray
    start_s: np.ndarray
    session_class: np.ndarray

    @property
    def n_sessions(self) -> int:
        return len(self.start_s)

    def last_turns(self) -> np.ndarray:
        """The row of each session's last turn."""
        if not len(self.session):
            return np.zeros(0, np.int64)
        return np.flatnonzero(np.r_[self.session[1:] != self.session[:-1], True])

    def with_starts(self, start_s: np.ndarray) -> SessionTable:
        """The same sessions starting at `start_s` (one per session, non-decreasing)."""
        start = np.asarray(start_s, dtype=np.float64)
        if start.shape != self.start_s.shape:
            raise InputError(f"start_s must hold one start per session ({self.n_sessions}).")
        return SessionTable(
            self.requests.with_arrivals(start[self.session]),
            self.parent, self.gap_s, self.session, start, self.session_class,
        )

    def subset(self, sessions: np.ndarray) -> SessionTable:
        """The table of the given sessions (indices, increasing)."""
        keep = np.isin(self.session, sessions)
        rows = np.flatnonzero(keep)
        renumber = np.full(len(self.session), -1, np.int64)
        renumber[rows] = np.arange(len(rows))
        parent = np.where(self.parent[rows] >= 0, renumber[np.maximum(self.parent[rows], 0)], -1)
        new_session = np.searchsorted(np.asarray(sessions), self.session[rows])
        return SessionTable(
            self.requests.subset(rows), parent, self.gap_s[rows], new_session,
            self.start_s[sessions], self.session_class[sessions],
        )


def sample_sessions(
    classes: Sequence[SessionClass],
    rng: np.random.Generator,
    start_s: np.ndarray,
    *,
    max_context_tokens: int,
    max_turns: int = 2000,
    class_id: np.ndarray | None = None,
) -> SessionTable:
    """Sessions starting at `start_s` (non-decreasing), each of a class drawn by share (or given
    by `class_id`), on a model whose context window is `max_context_tokens`. Turns per session
    are capped at `max_turns`; a turn's output is capped at a quarter of the window and its
    prompt at the rest (a longer one compacts, see the module docstring)."""
    classes = tuple(classes)
    if not classes:
        raise InputError("sample_sessions needs at least one session class.")
    start = np.asarray(start_s, dtype=np.float64)
    m = len(start)
    if m and ((np.diff(start) < 0).any() or not np.isfinite(start).all()):
        raise InputError("session starts must be finite and non-decreasing.")
    if class_id is None:
        shares = np.array([c.share for c in classes])
        if shares.sum() <= 0:
            raise InputError("session classes' shares must not all be 0.")
        cls = rng.choice(len(classes), size=m, p=shares / shares.sum())
    else:
        cls = np.asarray(class_id, dtype=np.int64)
        if cls.shape != (m,) or (cls < 0).any() or (cls >= len(classes)).any():
            raise InputError(f"class_id must hold one class index (0..{len(classes) - 1}) per session.")
    out_cap = max(max_context_tokens // 4, 1)
    prompt_cap = max(max_context_tokens - out_cap, 1)
    turns = np.zeros(m, np.int64)
    for k, c in enumerate(classes):
        sel = np.flatnonzero(cls == k)
        turns[sel] = np.clip(c.turns.sample(rng, len(sel)), 1, max_turns)
    n = int(turns.sum())
    session = np.repeat(np.arange(m), turns)
    offsets = np.r_[0, np.cumsum(turns)]
    turn = np.arange(n) - offsets[session]
    first = np.zeros(n, np.int64)
    new = np.zeros(n, np.int64)
    out = np.zeros(n, np.int64)
    gap = np.zeros(n)
    hit = np.zeros(n)
    for k, c in enumerate(classes):
        rows = np.flatnonzero(cls[session] == k)
        first[rows] = np.minimum(c.first_prompt.sample(rng, len(rows)), prompt_cap)
        new[rows] = np.minimum(c.new_tokens.sample(rng, len(rows)), prompt_cap)
        out[rows] = np.minimum(c.output.sample(rng, len(rows)), out_cap)
        gap[rows] = c.gaps(rng, len(rows))
        hit[rows] = c.cache_hit
    prompt, cached = _contexts(turn, first, new, out, hit, prompt_cap)
    parent = np.where(turn > 0, np.arange(n) - 1, -1)
    gap = np.where(turn > 0, gap, 0.0)
    requests = Requests(
        arrival_s=start[session],
        prompt_tokens=prompt,
        output_tokens=out,
        cached_tokens=cached,
        class_id=cls[session].astype(np.int32),
        class_names=tuple(c.name for c in classes),
    )
    return SessionTable(requests, parent, gap, session, start, cls)


def _contexts(
    turn: np.ndarray, first: np.ndarray, new: np.ndarray, out: np.ndarray, hit: np.ndarray, cap: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each turn's prompt and cached tokens: the first turn sends its first prompt; a later one
    re-sends the prompt and output before it plus its new tokens, `hit` of the re-sent part
    cached; past `cap` it compacts to its session's first prompt plus the new tokens, uncached."""
    n = len(turn)
    prompt = np.zeros(n, np.int64)
    cached = np.zeros(n, np.int64)
    base = 0
    for i in range(n):  # a sequential recurrence over turns (n is a few hundred thousand at most)
        if turn[i] == 0:
            base = int(first[i])
            prompt[i] = base
            continue
        carried = int(prompt[i - 1] + out[i - 1])
        grown = carried + int(new[i])
        if grown <= cap:
            prompt[i] = grown
            cached[i] = min(int(hit[i] * carried), grown - 1)
        else:
            prompt[i] = min(base + int(new[i]), cap)
    return prompt, cached


def task_times(table: SessionTable, finish_s: np.ndarray) -> np.ndarray:
    """Each session's task time: its last turn's finish minus its start (NaN if unfinished)."""
    out: np.ndarray = np.asarray(finish_s)[table.last_turns()] - table.start_s
    return out


# -- the default classes ------------------------------------------------------------------------
_AGENT_SOURCE = (
    "coding agent: turns per session p50 25, p90 324; gap between requests p50 3.8 s, p90 28.9 s "
    "(unit not stated, read as seconds); 95.9 % of prompt tokens from the prefix cache; about "
    "184k prompt and 823 output tokens per request (SemiAnalysis InferenceX agent-traffic proxy, "
    "13,735 sessions, 2.89 M requests, as quoted in megawatt issue 13); new input per step "
    "median 875 (TraceLab, FACTS.md B.5), mean 7.5k = 4.1 % of 184k (derived), so sigma 2.07; "
    "output per step median 214, p90 1.7k (TraceLab, FACTS.md B.5; mean 790, near the 823 "
    "above); first prompt (system prompt, tools, task) median 16k: ESTIMATE"
)
MOONCAKE_CHAT_FIT: Mapping[str, float] = MappingProxyType(
    {
        "turns_median": 1.0,
        "turns_sigma": 0.8573,
        "first_prompt_median": 5642.0,
        "first_prompt_sigma": 1.2082,
        "new_tokens_median": 28.5,
        "new_tokens_sigma": 2.7619,
        "output_median": 347.0,
        "output_sigma": 0.4325,
        "gap_median_s": 130.1707,
        "gap_sigma": 1.1320,
    }
)
"""The chat class's lognormals fitted to the sessions of the Mooncake (Kimi) conversation trace:
`megawatt.workload.trace_sessions.mooncake_chat_fit()` computes them (medians = sample medians,
sigmas from the sample p90s, new tokens' sigma from the sample mean; the statistics are tabled
in that module's docstring), rounded to 4 decimals; tests/workload/test_sessions_mooncake.py
recomputes them. Token counts; gap in seconds."""

_CHAT_SOURCE = (
    "chat: fitted to 2,525 conversations (4,342 turns) recovered from the Mooncake / Kimi "
    "conversation trace's prefix blocks (FAST 2025; megawatt.workload.trace_sessions, "
    "MOONCAKE_CHAT_FIT): turns per session p50 1, p90 3 (mean 1.7); first prompt p50 5,642, "
    "p90 26,538; new tokens per next turn p50 28.5, p90 4,133, mean 1,292 (bimodal: typed "
    "messages and pasted documents; sigma fitted to the mean so the tokens added are right); "
    "output p50 347, p90 604; think time p50 130 s, p90 555 s (arrival gaps minus output / "
    "41 tok/s, an ESTIMATE; "
    "p90 cut by the 1 h window). Kept from before: the caps (200 turns, 8,192 output tokens, "
    "gap 3,600 s) and prefix reuse 0.9 of the history, an ESTIMATE (the trace does not measure "
    "a cache). Literature values this replaces: 2.5-4.6 turns (FACTS.md B.1), first prompt "
    "1,000 and output 130 (FACTS.md B.7), new 300 (WildChat, B.1), think time p50 86 s, p90 "
    "21 min (TraceLab, B.5)"
)
_RESEARCH_SOURCE = (
    "deep research / reasoning: output per turn median 800, sigma 1.1 (ServeGen DeepSeek-R1, "
    "FACTS.md B.7 reasoning); first prompt median 210, sigma 1.8 (same); 10 search-and-read "
    "turns (median, sigma 0.8), 3,000 new tokens of search results per turn (sigma 0.8) and a "
    "tool gap of 2 s (sigma 0.8): ESTIMATES; cache hit 0.959 as the coding agent"
)
_AUTOMATION_SOURCE = (
    "enterprise automation (batch-like pipelines): 3 turns (median, sigma 0.7), first prompt "
    "4,000 (sigma 1.0), new 1,000 (sigma 1.0), output 300 (sigma 1.0), gap 1 s (sigma 0.5): "
    "ESTIMATES, shaped as the document and extraction requests of FACTS.md B.7 long-context "
    "class; cache hit 0.959 as the coding agent"
)


def default_session_classes() -> tuple[SessionClass, ...]:
    """Chat, coding agent, deep research and automation, from the sources in their `source`.
    Shares (of sessions) are an ESTIMATE: chat 80 %, coding agent 10 %, research 5 %,
    automation 5 % (FACTS.md B.7 puts agents at 7 % of requests; one agent session makes tens
    of requests). Chat is fitted to the Mooncake conversation trace (`MOONCAKE_CHAT_FIT`)."""
    chat = MOONCAKE_CHAT_FIT
    return (
        SessionClass(
            "chat", 0.80, "standard",
            turns=Lognormal(chat["turns_median"], chat["turns_sigma"], max_tokens=200),
            first_prompt=Lognormal(chat["first_prompt_median"], chat["first_prompt_sigma"]),
            new_tokens=Lognormal(chat["new_tokens_median"], chat["new_tokens_sigma"]),
            output=Lognormal(chat["output_median"], chat["output_sigma"], max_tokens=8192),
            gap_median_s=chat["gap_median_s"], gap_sigma=chat["gap_sigma"], cache_hit=0.9,
            gap_max_s=3600.0, source=_CHAT_SOURCE,
        ),
        SessionClass(
            "coding-agent", 0.10, "fast",
            turns=Lognormal(25, sigma_of_p90(25, 324), max_tokens=2000),
            first_prompt=Lognormal(16000, 0.5),
            new_tokens=Lognormal(875, 2.07, max_tokens=32768),
            output=Lognormal(214, sigma_of_p90(214, 1700), max_tokens=8192),
            gap_median_s=3.8, gap_sigma=sigma_of_p90(3.8, 28.9), cache_hit=0.959,
            gap_max_s=600.0, source=_AGENT_SOURCE, mix_class="agentic",
        ),
        SessionClass(
            "deep-research", 0.05, "fast",
            turns=Lognormal(10, 0.8, max_tokens=200),
            first_prompt=Lognormal(210, 1.8),
            new_tokens=Lognormal(3000, 0.8),
            output=Lognormal(800, 1.1, max_tokens=32768),
            gap_median_s=2.0, gap_sigma=0.8, cache_hit=0.959,
            gap_max_s=120.0, source=_RESEARCH_SOURCE,
        ),
        SessionClass(
            "automation", 0.05, "batch",
            turns=Lognormal(3, 0.7, max_tokens=50),
            first_prompt=Lognormal(4000, 1.0),
            new_tokens=Lognormal(1000, 1.0),
            output=Lognormal(300, 1.0, max_tokens=8192),
            gap_median_s=1.0, gap_sigma=0.5, cache_hit=0.959,
            gap_max_s=60.0, source=_AUTOMATION_SOURCE,
        ),
    )
