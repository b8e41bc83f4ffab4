"""Sessions routed across a pool's replicas: on one replica every router is the single-replica
session driver; sticky routing keeps a session on one replica and its context in that replica's
cache; per-turn routing scatters a session's turns and loses cache hits; a session's context is
the same blocks on every turn; runs are deterministic for a seed."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from megawatt.errors import InputError
from megawatt.fleet import affinity
from megawatt.fleet.affinity import (
    SESSION_ROUTERS,
    affinity_gain,
    route_sessions,
    session_blocks,
    session_router,
)
from megawatt.serving import KvBudget, ReplicaConfig
from megawatt.serving.drivers import sessions
from megawatt.workload.lengths import Lognormal
from megawatt.workload.sessions import SessionClass, SessionTable, sample_sessions

from .fakes import LinearStep

ROUTERS = ("sticky", "least_outstanding", "random")
BLOCK = 64


def config(kv_tokens: float = 200_000) -> ReplicaConfig:
    """The linear fake with a cache of `kv_tokens` tokens (1 kB each), 16 sequences, 512 tokens
    a step."""
    return ReplicaConfig(LinearStep(), KvBudget(kv_tokens * 1000.0, 1000.0), max_num_seqs=16,
                         max_num_batched_tokens=512)


def agent(cache_hit: float = 0.9) -> SessionClass:
    """Sessions of about 6 turns: an 800-token first prompt growing by ~100 tokens a turn."""
    return SessionClass(
        "agent", 1.0, "fast", turns=Lognormal(6, 0.5, max_tokens=20), first_prompt=Lognormal(800, 0.3),
        new_tokens=Lognormal(60, 0.5), output=Lognormal(40, 0.5), gap_median_s=0.3, gap_sigma=0.5,
        cache_hit=cache_hit,
    )


def table(seed: int = 1, n_sessions: int = 24, *, cache_hit: float = 0.9, rate_per_s: float = 4.0,
          max_context_tokens: int = 8192) -> SessionTable:
    """`n_sessions` agent sessions with Poisson starts."""
    rng = np.random.default_rng(seed)
    starts = np.cumsum(rng.exponential(1.0 / rate_per_s, n_sessions))
    return sample_sessions((agent(cache_hit),), rng, starts, max_context_tokens=max_context_tokens)


@pytest.mark.parametrize("router", ROUTERS)
def test_one_replica_is_the_session_driver(router: str) -> None:
    cfg, tab = config(), table()
    alone = sessions(cfg, tab.requests, tab.parent, tab.gap_s, backend="python")
    run = route_sessions(cfg, tab, 1, router, cache="ideal")
    np.testing.assert_array_equal(run.arrival_s, alone.arrival_s)
    np.testing.assert_array_equal(run.first_token_s, alone.first_token_s)
    np.testing.assert_array_equal(run.finish_s, alone.finish_s)
    np.testing.assert_array_equal(run.cached_tokens, alone.cached_tokens)
    assert (run.replica == 0).all()


def test_one_replica_with_hashed_blocks_is_the_same_for_every_router() -> None:
    cfg, tab = config(), table()
    runs = [route_sessions(cfg, tab, 1, router, block_tokens=BLOCK) for router in ROUTERS]
    for run in runs[1:]:
        np.testing.assert_array_equal(run.finish_s, runs[0].finish_s)
        np.testing.assert_array_equal(run.cached_tokens, runs[0].cached_tokens)


def test_sticky_keeps_every_session_on_one_replica_and_spreads_sessions() -> None:
    tab = table()
    run = route_sessions(config(), tab, 3, "sticky", block_tokens=BLOCK)
    for s in range(tab.n_sessions):
        assert len(set(run.replica[tab.session == s].tolist())) == 1
    assert (run.turns_per_replica > 0).all()
    assert run.turns_per_replica.sum() == len(tab.requests)
    assert np.isfinite(run.finish_s).all() and np.isfinite(run.task_s).all()


def test_per_turn_routing_moves_sessions_between_replicas() -> None:
    tab = table()
    for router in ("least_outstanding", "random"):
        run = route_sessions(config(), tab, 3, router, block_tokens=BLOCK)
        moved = sum(len(set(run.replica[tab.session == s].tolist())) > 1 for s in range(tab.n_sessions))
        assert moved > tab.n_sessions // 2, router


@pytest.mark.parametrize("cache", ["hashed", "ideal"])
def test_without_prefix_reuse_no_router_finds_anything_cached(cache: str) -> None:
    tab = table(cache_hit=0.0)
    shares = [route_sessions(config(), tab, 3, r, cache=cache, block_tokens=BLOCK).cache_hit_share
              for r in ("sticky", "least_outstanding")]
    assert shares == [0.0, 0.0]


@pytest.mark.parametrize("cache", ["hashed", "ideal"])
def test_per_turn_routing_lowers_the_cached_share(cache: str) -> None:
    gain = affinity_gain(config(), table(), 3, cache=cache, block_tokens=BLOCK)
    sticky = gain.row("sticky").cache_hit_share
    assert sticky > 0.5
    for router in ("least_outstanding", "random"):
        assert gain.row(router).cache_hit_share < 0.75 * sticky, router
        assert gain.row(router).prefill_tokens > gain.row("sticky").prefill_tokens
    assert [r.router for r in gain.rows] == list(ROUTERS)


def test_ideal_sticky_keeps_the_tables_cached_share() -> None:
    gain = affinity_gain(config(), table(), 3, routers=("sticky",), cache="ideal")
    assert gain.row("sticky").cache_hit_share == pytest.approx(gain.table_cached_share, rel=1e-12)


def test_hashed_sticky_with_room_hits_every_whole_block_of_the_turn_before() -> None:
    tab = table()
    blocks = session_blocks(tab.requests, tab.parent, BLOCK)
    run = route_sessions(config(kv_tokens=1e7), tab, 2, "sticky", block_tokens=BLOCK)
    later = np.flatnonzero(tab.parent >= 0)
    expected = [BLOCK * blocks[int(tab.parent[i])].size for i in later]
    np.testing.assert_array_equal(run.cached_tokens[later], expected)
    assert run.replicas[0].stats.prefix_evicted_blocks == 0


def test_a_small_cache_evicts_contexts_between_turns() -> None:
    tab = table(n_sessions=40, rate_per_s=20.0)
    roomy = route_sessions(config(kv_tokens=1e6), tab, 2, "sticky", block_tokens=BLOCK)
    tight = route_sessions(config(kv_tokens=6_000), tab, 2, "sticky", block_tokens=BLOCK)
    assert tight.cache_hit_share < roomy.cache_hit_share
    assert sum(r.stats.prefix_evicted_blocks for r in tight.replicas) > 0


def test_a_sessions_context_is_the_same_blocks_on_every_turn() -> None:
    tab = table(max_context_tokens=2400)  # small window: some sessions compact
    blocks = session_blocks(tab.requests, tab.parent, BLOCK)
    prompt, out, cached = tab.requests.prompt_tokens, tab.requests.output_tokens, tab.requests.cached_tokens
    compacted = 0
    for i, p in enumerate(tab.parent):
        assert blocks[i].size == prompt[i] // BLOCK
        if p < 0 or cached[i] == 0:
            compacted += int(p >= 0)
            seen = np.concatenate([blocks[j] for j in range(i)]) if i else np.zeros(0)
            assert not np.isin(blocks[i], seen).any()  # all new
        else:
            shared = min((prompt[p] + out[p]) // BLOCK, blocks[i].size)
            np.testing.assert_array_equal(blocks[i][: blocks[p].size], blocks[p])
            assert shared >= blocks[p].size
    assert compacted > 0
    firsts = np.flatnonzero(tab.parent < 0)
    ids = np.concatenate([blocks[i] for i in firsts])
    assert np.unique(ids).size == ids.size  # no two sessions share a block


def test_children_of_one_turn_share_its_output_blocks() -> None:
    tab = table(n_sessions=1)
    req = tab.requests.subset(np.array([0, 1, 1]))
    # Row 0 is a first turn; rows 1 and 2 both continue it (a tree).
    blocks = session_blocks(
        replace(req, prompt_tokens=np.array([640, 900, 1000]), output_tokens=np.array([200, 5, 5]),
                cached_tokens=np.array([0, 600, 600])),
        np.array([-1, 0, 0]), BLOCK,
    )
    assert blocks[0].size == 10
    np.testing.assert_array_equal(blocks[1][:13], blocks[2][:13])  # 840 // 64 = 13 shared
    assert not np.isin(blocks[1][13:], blocks[2]).any()


def test_a_seed_gives_the_same_run_and_another_seed_another() -> None:
    cfg, tab = config(), table()
    a = route_sessions(cfg, tab, 3, "random", seed=5, block_tokens=BLOCK)
    b = route_sessions(cfg, tab, 3, "random", seed=5, block_tokens=BLOCK)
    c = route_sessions(cfg, tab, 3, "random", seed=6, block_tokens=BLOCK)
    np.testing.assert_array_equal(a.replica, b.replica)
    np.testing.assert_array_equal(a.finish_s, b.finish_s)
    assert (a.replica != c.replica).any()


def test_a_pool_too_large_to_hold_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    tab = table(n_sessions=2)
    n_blocks = sum(b.size for b in session_blocks(tab.requests, tab.parent, BLOCK))
    monkeypatch.setattr(affinity, "_BLOCKS_LIMIT", 2 * n_blocks)
    route_sessions(config(), tab, 2, block_tokens=BLOCK)
    with pytest.raises(InputError, match="too large to simulate jointly"):
        route_sessions(config(), tab, 3, block_tokens=BLOCK)
    route_sessions(config(), tab, 3, cache="ideal")


def test_bad_input_is_one_clear_error() -> None:
    tab = table(n_sessions=2)
    with pytest.raises(InputError, match="session router must be one of"):
        route_sessions(config(), tab, 2, "nearest")
    with pytest.raises(InputError, match="cache must be one of"):
        route_sessions(config(), tab, 2, cache="infinite")
    with pytest.raises(InputError, match="k \\(replicas\\)"):
        route_sessions(config(), tab, 0)
    with pytest.raises(InputError, match="routers must name"):
        affinity_gain(config(), tab, 2, routers=())
    with pytest.raises(InputError, match="block_tokens"):
        session_blocks(tab.requests, tab.parent, 0)
    assert sorted(SESSION_ROUTERS) == sorted(ROUTERS)
    assert session_router("sticky").pick(-1, [3, 1, 1]) == 1


def test_a_run_stopped_early_leaves_later_turns_unfinished() -> None:
    tab = table()
    full = route_sessions(config(), tab, 2, "sticky", block_tokens=BLOCK)
    stop = float(np.median(full.finish_s))
    cut = route_sessions(config(), tab, 2, "sticky", block_tokens=BLOCK, until_s=stop)
    assert cut.end_s < full.end_s
    assert np.isnan(cut.finish_s).any() and np.isnan(cut.task_s).any()
    done = np.isfinite(cut.finish_s)
    np.testing.assert_array_equal(cut.finish_s[done], full.finish_s[done])
