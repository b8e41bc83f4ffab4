"""Sessions routed across a pool's replicas, with and without session affinity: k replicas of one
configuration simulated jointly, each turn of a session sent to a replica by a router policy.

`route_sessions` replays a session table (`workload.sessions`) on `k` Python replicas in one event
loop: a first turn arrives at its session's start, a later turn is issued when the turn before
completes (or is rejected) and arrives `gap_s` later, as `serving.drivers.sessions` does on one
replica. Each turn is routed when it arrives at the router (after its gap: the client sends it
once the tool or the user is done) by a policy of `SESSION_ROUTERS`:

- `sticky`: session affinity; a first turn goes to the least-outstanding replica, every later
  turn to the replica of the turn before it;
- `least_outstanding`: every turn to the replica with the fewest requests waiting or running;
- `random`: every turn to a replica drawn uniformly (seeded).

Where the re-sent context is cached is what affinity buys, in one of two models (`CACHE_MODELS`):

- `hashed` (the default, physical): every replica keeps its own prefix cache over hashed blocks
  (`serving.prefix`, LRU eviction of unreferenced blocks under memory pressure). A turn whose
  table row reuses its context (`cached_tokens > 0`) carries its parent's block ids for the whole
  blocks of the parent's context (prompt and output) and new ids past them (`session_blocks`),
  so a session's context is the same blocks on every turn and the replica a turn lands on finds
  what its own cache still holds. The table's `cached_tokens` then only says whether a turn
  reuses its context (0: it does not, e.g. after compaction), not how much of it is cached.
- `ideal`: the table's `cached_tokens` on the replica of the turn before, 0 elsewhere (an
  infinite cache per replica: no eviction).

`affinity_gain` runs the policies on one table and reports task times, the cached share of
prompt tokens and turns' TTFT for each.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from megawatt.errors import InputError
from megawatt.serving import PREFIX_BLOCK_TOKENS, ReplicaConfig, RunResult
from megawatt.sim import Environment
from megawatt.workload import Requests
from megawatt.workload.sessions import SessionTable, check_sessions, session_links, task_times

__all__ = [
    "CACHE_MODELS",
    "SESSION_ROUTERS",
    "AffinityGain",
    "RoutedSessions",
    "RouterFigures",
    "SessionRouter",
    "affinity_gain",
    "route_sessions",
    "session_blocks",
    "session_router",
]

CACHE_MODELS = ("hashed", "ideal")
"""Where re-sent context is cached (see the module docstring)."""

_JOINT_LIMIT = 50_000_000  # replicas x turns: every replica keeps a row per turn
_BLOCKS_LIMIT = 50_000_000  # replicas x block ids: each replica numbers every turn's ids (int64)


class SessionRouter(Protocol):
    """Picks the replica of a turn when it arrives."""

    def pick(self, previous: int, outstanding: Sequence[int]) -> int:
        """The replica (index) for a turn: `previous` is the replica of the turn before it in its
        session (-1 for a first turn), `outstanding` each replica's requests waiting or running."""


def _least(outstanding: Sequence[int]) -> int:
    """The replica with the fewest outstanding requests, ties to the lowest index."""
    return min(range(len(outstanding)), key=outstanding.__getitem__)


@dataclass(frozen=True)
class Sticky:
    """Session affinity: a first turn to the least-outstanding replica, later turns where the
    turn before went."""

    def pick(self, previous: int, outstanding: Sequence[int]) -> int:
        return previous if previous >= 0 else _least(outstanding)


@dataclass(frozen=True)
class LeastOutstanding:
    """Every turn to the replica with the fewest requests waiting or running (no affinity)."""

    def pick(self, previous: int, outstanding: Sequence[int]) -> int:
        return _least(outstanding)


@dataclass(frozen=True)
class RandomTurn:
    """Every turn to a replica drawn uniformly from `rng` (no affinity)."""

    rng: np.random.Generator

    def pick(self, previous: int, outstanding: Sequence[int]) -> int:
        return int(self.rng.integers(len(outstanding)))


SESSION_ROUTERS: Mapping[str, Callable[[np.random.Generator], SessionRouter]] = {
    "least_outstanding": lambda rng: LeastOutstanding(),
    "random": RandomTurn,
    "sticky": lambda rng: Sticky(),
}
"""Router policies by name, each built from a random generator (only `random` draws from it)."""


def session_router(name: str, seed: int | Sequence[int] = 0) -> SessionRouter:
    """The session router registered under `name`, seeded by `seed`."""
    try:
        make = SESSION_ROUTERS[name]
    except KeyError:
        raise InputError(
            f"session router must be one of {', '.join(sorted(SESSION_ROUTERS))}; got {name!r}."
        ) from None
    return make(np.random.default_rng(seed))


def session_blocks(
    requests: Requests, parent: np.ndarray, block_tokens: int = PREFIX_BLOCK_TOKENS
) -> list[np.ndarray]:
    """Per turn, the hash ids of its prompt's whole blocks of `block_tokens` tokens, such that a
    session's context is the same blocks on every turn: a turn that reuses its context (its
    `cached_tokens` > 0, its prompt at least its parent's prompt plus output) carries its parent's
    ids for the whole blocks of that context and new ids past it (the parent's output blocks get
    ids once, shared by all its children); any other turn (a first turn, a compacted one, a class
    without reuse) has new ids only. Ids are unique across sessions (no cross-session sharing)."""
    if block_tokens < 1:
        raise InputError(f"block_tokens must be >= 1; got {block_tokens}.")
    n = len(requests)
    par, _ = check_sessions(n, parent, np.zeros(n))
    prompt = requests.prompt_tokens
    output = requests.output_tokens
    cached = requests.cached_tokens
    ids: list[np.ndarray] = []
    context: dict[int, np.ndarray] = {}  # a parent's ids over its prompt and output, once
    fresh = 0
    for i in range(n):
        p = int(par[i])
        whole = int(prompt[i]) // block_tokens
        carried = int(prompt[p] + output[p]) if p >= 0 else 0
        if p >= 0 and cached[i] > 0 and prompt[i] >= carried:
            base = context.get(p)
            if base is None:
                own = ids[p]
                extra = carried // block_tokens - own.size
                base = np.concatenate((own, np.arange(fresh, fresh + extra, dtype=np.int64)))
                fresh += extra
                context[p] = base
            k = min(base.size, whole)
            row = np.concatenate((base[:k], np.arange(fresh, fresh + whole - k, dtype=np.int64)))
            fresh += whole - k
        else:
            row = np.arange(fresh, fresh + whole, dtype=np.int64)
            fresh += whole
        ids.append(row)
    return ids


@dataclass(frozen=True)
class RoutedSessions:
    """Sessions served by `k` replicas under one router. Per turn (the table's rows): `replica`
    (-1 for a turn never issued), `arrival_s`, `first_token_s`, `finish_s` (s; NaN where none),
    `cached_tokens` (prompt tokens found cached when it was admitted), `prompt_tokens`,
    `rejected`; per session `task_s` (its last turn's finish minus its start, s; NaN if
    unfinished); per replica its `RunResult` (`replicas`: every row, those of other replicas
    never submitted; its `stats` hold busy seconds, prefill tokens and evicted blocks)."""

    router: str
    cache: str
    replica: np.ndarray
    arrival_s: np.ndarray
    first_token_s: np.ndarray
    finish_s: np.ndarray
    cached_tokens: np.ndarray
    prompt_tokens: np.ndarray
    rejected: np.ndarray
    task_s: np.ndarray
    replicas: tuple[RunResult, ...]
    end_s: float

    @property
    def k(self) -> int:
        """Replicas in the pool."""
        return len(self.replicas)

    @property
    def ttft_s(self) -> np.ndarray:
        """Time to first token per turn, s (inf when it got none, NaN for turns never issued)."""
        t = self.first_token_s - self.arrival_s
        return np.where(np.isnan(self.arrival_s), np.nan, np.where(np.isfinite(t), t, np.inf))

    @property
    def prefilled(self) -> np.ndarray:
        """Mask of turns admitted and prefilled (a first token), not rejected."""
        mask: np.ndarray = np.isfinite(self.first_token_s) & ~self.rejected
        return mask

    @property
    def cache_hit_share(self) -> float:
        """Prompt tokens found in the prefix cache over prompt tokens, of the prefilled turns."""
        keep = self.prefilled
        total = float(self.prompt_tokens[keep].sum())
        return float(self.cached_tokens[keep].sum()) / total if total > 0 else math.nan

    @property
    def turns_per_replica(self) -> np.ndarray:
        """Turns each replica was sent."""
        out: np.ndarray = np.bincount(self.replica[self.replica >= 0], minlength=self.k)
        return out

    @property
    def busy_s(self) -> np.ndarray:
        """Seconds each replica's engine was busy."""
        return np.array([r.stats.busy_s for r in self.replicas])

    @property
    def prefill_tokens(self) -> np.ndarray:
        """Prompt tokens each replica computed (cache misses and recomputes after preemption)."""
        return np.array([r.stats.prefill_tokens for r in self.replicas], dtype=np.int64)

    def ttft_percentile(self, q: float) -> float:
        """The q-th percentile of turns' TTFT (s) over the turns issued and not rejected."""
        t = self.ttft_s[~np.isnan(self.arrival_s) & ~self.rejected]
        return float(np.percentile(t, q, method="inverted_cdf")) if t.size else math.nan

    def task_percentile(self, q: float) -> float:
        """The q-th percentile of task time (s) over finished sessions."""
        t = self.task_s[np.isfinite(self.task_s)]
        return float(np.percentile(t, q)) if t.size else math.nan


def route_sessions(
    cfg: ReplicaConfig,
    table: SessionTable,
    k: int,
    router: str = "sticky",
    *,
    seed: int | Sequence[int] = 0,
    cache: str = "hashed",
    block_tokens: int = PREFIX_BLOCK_TOKENS,
    until_s: float | None = None,
) -> RoutedSessions:
    """Serve `table`'s sessions on `k` replicas of `cfg` in one event loop, each turn routed on
    arrival by `router` (see `SESSION_ROUTERS`; `random` draws from `seed`), the re-sent context
    cached as `cache` says (`CACHE_MODELS`; `hashed` uses blocks of `block_tokens` tokens). Stops
    when every turn is done, or at `until_s`. With k = 1 every router gives the run of
    `serving.drivers.sessions` (`cache="ideal"`: the same per-turn times)."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise InputError(f"k (replicas) must be a whole number >= 1; got {k!r}.")
    if cache not in CACHE_MODELS:
        raise InputError(f"cache must be one of {', '.join(CACHE_MODELS)}; got {cache!r}.")
    pick = session_router(router, seed).pick
    requests = table.requests
    n = len(requests)
    par, gap = check_sessions(n, table.parent, table.gap_s)
    if k * n > _JOINT_LIMIT:
        raise InputError(
            f"{k} replicas x {n:,} turns is too large to simulate jointly (limit "
            f"{_JOINT_LIMIT:,} replica-turns); use fewer sessions or fewer replicas."
        )
    blocks = session_blocks(requests, par, block_tokens) if cache == "hashed" else None
    if blocks is not None and k * sum(b.size for b in blocks) > _BLOCKS_LIMIT:
        raise InputError(
            f"{k} replicas x {sum(b.size for b in blocks):,} prompt blocks is too large to "
            f"simulate jointly (limit {_BLOCKS_LIMIT:,} replica-blocks, up to 32 bytes each); use "
            "fewer sessions, fewer replicas, a larger block_tokens or cache='ideal'."
        )
    first, children, arrival = session_links(requests.arrival_s, par)
    owner = np.full(n, -1, dtype=np.int64)
    env = Environment(min(0.0, float(arrival[first[0]])) if len(first) else 0.0)

    def submit(i: int) -> None:
        p = int(par[i])
        previous = int(owner[p]) if p >= 0 else -1
        r = pick(previous, [rep.outstanding for rep in replicas])
        if not 0 <= r < k:
            raise InputError(f"router {router!r} picked replica {r}; there are {k}.")
        owner[i] = r
        rep = replicas[r]
        if blocks is None and 0 <= previous != r:
            rep.cached[i] = 0  # the idealised cache holds the context on the parent's replica only
        rep.submit(i)

    def arrive(j: int) -> None:
        if j + 1 < len(first):
            env.schedule_at(float(arrival[first[j + 1]]), arrive, j + 1, priority=-1)
        submit(int(first[j]))

    def on_finish(i: int) -> None:
        for c in children.get(i, ()):
            arrival[c] = env.now + gap[c]
            env.schedule_at(float(arrival[c]), submit, c)

    replicas = [cfg.build(env, requests, on_finish, blocks, block_tokens) for _ in range(k)]
    if len(first):
        env.schedule_at(float(arrival[first[0]]), arrive, 0, priority=-1)
    env.run(until=until_s)
    results = []
    for rep in replicas:
        rep.settle()
        results.append(RunResult.of(rep, env.now))
    first_token = np.full(n, np.nan)
    finish = np.full(n, np.nan)
    hits = np.zeros(n, dtype=np.int64)
    rejected = np.zeros(n, dtype=bool)
    for r, res in enumerate(results):
        rows = owner == r
        first_token[rows] = res.first_token_s[rows]
        finish[rows] = res.finish_s[rows]
        hits[rows] = res.cached_tokens[rows]
        rejected[rows] = res.rejected[rows]
    return RoutedSessions(
        router, cache, owner, arrival, first_token, finish, hits,
        np.asarray(requests.prompt_tokens), rejected, task_times(table, finish), tuple(results),
        env.now,
    )


@dataclass(frozen=True)
class RouterFigures:
    """One router's figures on a session table: task time p50 and p99 (s), the cached share of
    prompt tokens, turns' TTFT p50 and p99 (s), prompt tokens computed (all replicas), the
    busiest replica's turns over the mean (1: balanced), and the run itself."""

    router: str
    task_p50_s: float
    task_p99_s: float
    cache_hit_share: float
    ttft_p50_s: float
    ttft_p99_s: float
    prefill_tokens: int
    turn_imbalance: float
    run: RoutedSessions

    @staticmethod
    def of(run: RoutedSessions) -> RouterFigures:
        """The figures of a run."""
        turns = run.turns_per_replica
        mean = float(turns.mean()) if turns.size else 0.0
        return RouterFigures(
            run.router,
            run.task_percentile(50),
            run.task_percentile(99),
            run.cache_hit_share,
            run.ttft_percentile(50),
            run.ttft_percentile(99),
            int(run.prefill_tokens.sum()),
            float(turns.max()) / mean if mean > 0 else math.nan,
            run,
        )


@dataclass(frozen=True)
class AffinityGain:
    """The routers' figures on one table and pool (`rows`, in the order asked), and the table's
    idealised cached share of prompt tokens (every turn where its context is, nothing evicted)."""

    k: int
    cache: str
    rows: tuple[RouterFigures, ...]
    table_cached_share: float

    def row(self, router: str) -> RouterFigures:
        """The figures of one router."""
        for r in self.rows:
            if r.router == router:
                return r
        raise InputError(f"no figures for router {router!r}; have {', '.join(r.router for r in self.rows)}.")


def affinity_gain(
    cfg: ReplicaConfig,
    table: SessionTable,
    k: int,
    *,
    routers: Sequence[str] = ("sticky", "least_outstanding", "random"),
    seed: int | Sequence[int] = 0,
    cache: str = "hashed",
    block_tokens: int = PREFIX_BLOCK_TOKENS,
) -> AffinityGain:
    """Run `table` on `k` replicas of `cfg` under each of `routers` (the same table and seed for
    each) and report each one's task times, cached share of prompt tokens and TTFT."""
    if not routers:
        raise InputError(f"routers must name at least one of {', '.join(sorted(SESSION_ROUTERS))}.")
    rows = tuple(
        RouterFigures.of(
            route_sessions(cfg, table, k, name, seed=seed, cache=cache, block_tokens=block_tokens)
        )
        for name in routers
    )
    prompt = float(table.requests.prompt_tokens.sum())
    share = float(table.requests.cached_tokens.sum()) / prompt if prompt > 0 else math.nan
    return AffinityGain(k, cache, rows, share)
