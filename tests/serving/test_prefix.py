"""Prefix caching over hashed prompt blocks (Mooncake's `hash_ids`): repeated prefixes hit, a
cache too small evicts the least recently used, hits are whole leading blocks and never the
whole prompt, sharers hold one copy, and every scheduler's invariants still hold."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megawatt.errors import InputError
from megawatt.hardware import load_catalog
from megawatt.model import load_model
from megawatt.perf import Deployment
from megawatt.serving import (
    SCHEDULERS,
    PrefixCache,
    Replica,
    ReplicaConfig,
    RunResult,
    concurrency,
    offline,
    simulate,
)
from megawatt.sim import Environment
from megawatt.workload import Requests, builtin_trace_with_prefixes

from .conftest import ConstantStep, LinearStep, kv_for_tokens, make_requests

POLICIES = sorted(SCHEDULERS)
B = 64  # tokens per hashed block in these stories (Mooncake's are 512)


def blocks(*ids: int) -> np.ndarray:
    return np.array(ids, dtype=np.int64)


def cfg_for(policy: str = "vllm", kv_tokens: float = 20_000, **kwargs: int) -> ReplicaConfig:
    return ReplicaConfig(LinearStep(), kv_for_tokens(kv_tokens), policy, **kwargs)


def run(cfg: ReplicaConfig, requests: Requests, ids: list[np.ndarray]) -> RunResult:
    return simulate(cfg, requests, prefix_blocks=ids, prefix_block_tokens=B)


# -- the cache on its own ---------------------------------------------------------------------
def test_the_cache_counts_references_and_evicts_the_least_recently_released() -> None:
    cache = PrefixCache(block_bytes=10.0, n_blocks=10)
    for h in (1, 2, 3):
        assert cache.register(h)
    assert not cache.register(2)  # cached already: the second computer keeps a private copy
    assert cache.leading_hits([1, 2, 9, 3], 0, 4) == 2
    assert cache.shared_bytes([1, 2], 0, 2) == 20.0  # referenced by the sequence that computed them
    assert cache.release([1, 2, 3], 0, 3) == 0.0
    assert cache.free_bytes == 30.0
    assert cache.free == [3, 2, 1]  # a request's tail goes first, as vLLM frees it
    cache.acquire([1], 0, 1)  # a hit takes block 1 out of the evictable ones
    assert cache.refs[1] == 1 and cache.free == [3, 2] and cache.free_bytes == 20.0
    cache.evict_to(10.0)  # room for one unreferenced block: evicts 3
    assert cache.refs[3] == -1 and cache.n_evicted == 1 and cache.free_bytes == 10.0
    assert cache.release([1], 0, 1) == 0.0
    cache.evict_to(0.0)
    assert len(cache) == 0 and cache.free_bytes == 0.0


# -- hits -------------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", POLICIES)
def test_a_repeated_prefix_hits_and_skips_its_prefill(policy: str) -> None:
    """Three requests one after another: a shared system prompt of two blocks, then their own.
    The first computes everything; the others find the shared blocks (and the third the second
    one's next block too)."""
    requests = make_requests([300, 300, 300], [4, 4, 4], arrival_s=[0.0, 5.0, 10.0])
    ids = [blocks(1, 2, 3, 4), blocks(1, 2, 5, 6), blocks(1, 2, 5, 7)]
    res = run(cfg_for(policy), requests, ids)
    assert res.cached_tokens.tolist() == [0, 2 * B, 3 * B]
    assert res.stats.prefill_tokens == 900 - 5 * B
    assert res.ttft_s[2] < res.ttft_s[1] < res.ttft_s[0]
    # The idealised column is ignored when hashes are given.
    noisy = make_requests([300] * 3, [4] * 3, arrival_s=[0.0, 5.0, 10.0], cached=[299, 299, 299])
    assert run(cfg_for(policy), noisy, ids).cached_tokens.tolist() == [0, 2 * B, 3 * B]


def test_hits_are_whole_leading_blocks_and_never_the_whole_prompt() -> None:
    """A prompt of exactly two blocks seen before hits one block: at least one token must be
    computed, and only whole blocks are cached (vLLM drops the last block then). A partial
    last block is never cached; a miss ends the hits even if later blocks are cached."""
    requests = make_requests([2 * B, 2 * B, 2 * B + 10, 3 * B], [3] * 4, arrival_s=[0.0, 5.0, 10.0, 15.0])
    ids = [blocks(1, 2), blocks(1, 2), blocks(1, 2, 3), blocks(9, 2, 3)]
    res = run(cfg_for(), requests, ids)
    assert res.cached_tokens.tolist() == [0, B, 2 * B, 0]
    assert (res.cached_tokens < res.prompt_tokens).all()


def test_a_block_size_is_a_parameter() -> None:
    requests = make_requests([300, 300], [2, 2], arrival_s=[0.0, 5.0])
    ids = [blocks(1, 2, 3), blocks(1, 2, 4)]
    for size, hit in ((64, 128), (100, 200), (512, 0)):  # 512: no whole block in 300 tokens
        res = simulate(cfg_for(), requests, prefix_blocks=ids, prefix_block_tokens=size)
        assert res.cached_tokens.tolist() == [0, hit]


def test_requests_admitted_together_cannot_hit_each_others_blocks() -> None:
    """Offline, both prompts prefill in the first step: neither block is computed yet when the
    other is admitted, as in vLLM."""
    res = offline(cfg_for(), make_requests([200, 200], [2, 2]), prefix_blocks=[blocks(1, 2), blocks(1, 2)],
                  prefix_block_tokens=B)
    assert res.cached_tokens.tolist() == [0, 0]


# -- eviction ---------------------------------------------------------------------------------
def test_a_cache_too_small_evicts_the_least_recently_used_blocks() -> None:
    """Prefixes A, B, C (four blocks each), then A again, one at a time. An ample cache keeps
    A; one of nine blocks holds A's and B's unreferenced blocks after B, but C's prompt needs
    room: A's go (the least recently released), and A misses when it comes back."""
    requests = make_requests([4 * B + 1] * 4, [2] * 4, arrival_s=[0.0, 5.0, 10.0, 15.0])
    a, b, c = blocks(1, 2, 3, 4), blocks(5, 6, 7, 8), blocks(9, 10, 11, 12)
    ids = [a, b, c, a]
    ample = run(cfg_for(kv_tokens=100_000), requests, ids)
    assert ample.cached_tokens.tolist() == [0, 0, 0, 4 * B]
    assert ample.stats.prefix_evicted_blocks == 0
    small = run(cfg_for(kv_tokens=9 * B), requests, ids)
    assert small.cached_tokens.tolist() == [0, 0, 0, 0]
    assert small.stats.prefix_evicted_blocks > 0
    assert small.stats.prefill_tokens > ample.stats.prefill_tokens


def test_eviction_takes_a_requests_tail_blocks_first() -> None:
    """After B, eight unreferenced blocks fill 512 of 552 tokens; C's prompt needs 137 (129
    tokens and half a block): the two least recent go, which are A's last two blocks (vLLM frees
    a request's blocks tail first), so A, back, finds its first two."""
    prompts = [4 * B + 1, 4 * B + 1, 2 * B + 1, 4 * B + 1]
    requests = make_requests(prompts, [2] * 4, arrival_s=[0.0, 5.0, 10.0, 15.0])
    ids = [blocks(1, 2, 3, 4), blocks(5, 6, 7, 8), blocks(9, 10), blocks(1, 2, 3, 4)]
    res = run(cfg_for(kv_tokens=8 * B + 40), requests, ids)
    assert res.cached_tokens[3] == 2 * B


# -- sharing ----------------------------------------------------------------------------------
def test_sequences_sharing_a_prefix_hold_one_copy_of_it() -> None:
    """B arrives while A decodes and shares A's four blocks: the replica holds them once."""
    requests = make_requests([4 * B + 10, 4 * B + 10], [200, 50], arrival_s=[0.0, 1.0])
    shared = [blocks(1, 2, 3, 4), blocks(1, 2, 3, 4)]
    alone = [blocks(1, 2, 3, 4), blocks(5, 6, 7, 8)]
    with_sharing, without = run(cfg_for(), requests, shared), run(cfg_for(), requests, alone)
    assert with_sharing.cached_tokens.tolist() == [0, 4 * B]
    saved = without.stats.peak_kv_bytes - with_sharing.stats.peak_kv_bytes
    assert saved == pytest.approx(4 * B * 1000.0)  # four blocks of 1 kB tokens


# -- the engines ------------------------------------------------------------------------------
def test_hashes_take_the_python_replica(monkeypatch: pytest.MonkeyPatch) -> None:
    import megawatt.serving.compiled as fast

    catalog = load_catalog()
    system = catalog.system("dgx-h100")
    cfg = ReplicaConfig.of(
        Deployment(load_model("llama-3.1-8b"), system, catalog.device(system.device_id), max_num_seqs=8)
    )
    calls: list[int] = []
    monkeypatch.setattr(fast, "simulate_fast", lambda *a, **k: calls.append(1))
    requests = make_requests([300, 300], [2, 2], arrival_s=[0.0, 5.0])
    ids = [blocks(1, 2), blocks(1, 2)]
    res = simulate(cfg, requests, prefix_blocks=ids, prefix_block_tokens=B)  # auto
    assert calls == [] and res.cached_tokens.tolist() == [0, 2 * B]
    with pytest.raises(InputError, match="backend 'fast' has no hashed prefix cache"):
        simulate(cfg, requests, prefix_blocks=ids, backend="fast")


def test_hashes_must_come_one_array_per_request() -> None:
    with pytest.raises(InputError, match=r"prefix_blocks must hold one id array per request \(2\); got 1"):
        run(cfg_for(), make_requests([10, 10], [2, 2]), [blocks(1)])
    with pytest.raises(InputError, match="prefix_block_tokens must be >= 1; got 0"):
        simulate(cfg_for(), make_requests([10], [2]), prefix_blocks=[blocks(1)], prefix_block_tokens=0)


def test_the_mooncake_trace_hits_no_more_than_its_idealised_cache() -> None:
    """The first 150 requests of Mooncake's synthetic trace on an ample replica: a real cache
    holds at most what the idealised column (every block seen before, infinite) says, and with
    room for everything it finds most of it."""
    requests, ids = builtin_trace_with_prefixes("mooncake-synthetic")
    n = 150
    sub = requests.subset(np.arange(n))
    kv = kv_for_tokens(5e6, bytes_per_token=1.0)
    cfg = ReplicaConfig(ConstantStep(0.001), kv, max_num_batched_tokens=4096)
    res = simulate(cfg, sub, prefix_blocks=ids[:n])
    assert res.completed.all()
    assert (res.cached_tokens <= sub.cached_tokens).all()
    assert (res.cached_tokens % 512 == 0).all()
    assert res.cached_tokens.sum() > 0.5 * sub.cached_tokens.sum()


# -- invariants under every policy ------------------------------------------------------------
def watch(cfg: ReplicaConfig, requests: Requests, ids: list[np.ndarray]) -> RunResult:
    """An open-loop run with the invariants checked after every event: KV within capacity
    counting the evictable blocks, KV in use = the sequences' bytes less the copies they share,
    the references the requests hold are the cache's counts, hits are whole blocks."""
    env = Environment()
    rep = Replica(
        env, cfg.step_model, cfg.kv, requests, scheduler=cfg.scheduler, max_num_seqs=cfg.max_num_seqs,
        max_num_batched_tokens=cfg.max_num_batched_tokens, prefix_blocks=ids, prefix_block_tokens=B,
    )
    for i, t in enumerate(requests.arrival_s):
        env.schedule_at(float(t), rep.submit, i, priority=-1)
    cache = rep.cache
    assert cache is not None
    capacity = cfg.kv.capacity_bytes
    while len(env):
        env.step()
        assert rep.kv_used <= capacity + 1e-6
        assert rep.kv_used + cache.free_bytes <= capacity + 1e-6
        refs = cache.refs.tolist()
        held = Counter(h for refs_i in rep.refs for h in refs_i)
        assert held == Counter({h: r for h, r in enumerate(refs) if r > 0})
        assert set(cache.free) == {h for h, r in enumerate(refs) if r == 0}
        shared = sum(max(r - 1, 0) for r in refs) * cache.block_bytes
        assert math.isclose(rep.kv_used, sum(rep.kv_bytes) - shared, rel_tol=1e-9, abs_tol=1e-3)
        assert math.isclose(cache.free_bytes, len(cache.free) * cache.block_bytes, abs_tol=1e-3)
    return RunResult.of(rep, env.now)


def hashed_workload(seed: int, n: int, rate: float, n_prefixes: int) -> tuple[Requests, list[np.ndarray]]:
    """`n` requests whose prompts start with one of `n_prefixes` shared prefixes of up to four
    blocks, then blocks of their own."""
    rng = np.random.default_rng(seed)
    prompt = rng.integers(1, 8 * B, n)
    output = rng.integers(1, 60, n)
    prefixes = [list(range(1000 * k, 1000 * k + int(rng.integers(0, 5)))) for k in range(n_prefixes)]
    ids = []
    for i in range(n):
        own = prefixes[int(rng.integers(n_prefixes))] + [10**6 + 100 * i + j for j in range(8)]
        ids.append(np.array(own[: -(-int(prompt[i]) // B)], dtype=np.int64))
    arrival = np.cumsum(rng.exponential(1.0 / rate, n))
    none = np.zeros(n, dtype=np.int64)
    requests = Requests(arrival, prompt, output, none, none, ("chat",))
    return requests, ids


@settings(max_examples=80, deadline=None)
@given(
    policy=st.sampled_from(POLICIES),
    seed=st.integers(0, 10_000),
    n=st.integers(1, 25),
    kv_tokens=st.floats(300, 4000),
    max_num_seqs=st.integers(1, 8),
    max_tokens=st.integers(16, 600),
    rate=st.floats(1.0, 100.0),
    n_prefixes=st.integers(1, 4),
)
def test_conformance_holds_with_a_hashed_prefix_cache(
    policy: str, seed: int, n: int, kv_tokens: float, max_num_seqs: int, max_tokens: int,
    rate: float, n_prefixes: int,
) -> None:
    requests, ids = hashed_workload(seed, n, rate, n_prefixes)
    cfg = cfg_for(policy, kv_tokens, max_num_seqs=max_num_seqs, max_num_batched_tokens=max_tokens)
    res = watch(cfg, requests, ids)
    assert (res.completed ^ res.rejected).all()
    # Hits never exceed the prompt; they cover all of it only for a recompute after a
    # preemption, which still computes the tokens generated before (as vLLM).
    assert (res.cached_tokens <= res.prompt_tokens).all()
    assert (res.cached_tokens[res.preemptions == 0] < res.prompt_tokens[res.preemptions == 0]).all()
    assert (res.cached_tokens % B == 0).all()
    again = run(cfg, requests, ids).table()  # the watched run is the run
    for name, column in res.table().to_pydict().items():
        np.testing.assert_array_equal(np.array(column), np.array(again[name].to_pylist()), err_msg=name)


@settings(max_examples=80, deadline=None)
@given(
    policy=st.sampled_from(POLICIES),
    seed=st.integers(0, 10_000),
    n=st.integers(1, 20),
    kv_tokens=st.floats(400, 4000),
    max_num_seqs=st.integers(1, 8),
    rate=st.floats(0.5, 50.0),
    grid=st.booleans(),
)
def test_stretches_agree_with_step_by_step_with_a_hashed_prefix_cache(
    policy: str, seed: int, n: int, kv_tokens: float, max_num_seqs: int, rate: float, grid: bool
) -> None:
    requests, ids = hashed_workload(seed, n, rate, 3)
    model: ConstantStep | LinearStep = LinearStep()
    if grid:  # constant 1/8 s steps and arrivals on that grid: every arrival is a tie
        model = ConstantStep(0.125)
        requests = requests.with_arrivals(np.round(requests.arrival_s * 8) / 8)
    cfg = replace(cfg_for(policy, kv_tokens, max_num_seqs=max_num_seqs), step_model=model)
    stretched = run(cfg, requests, ids)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Replica, "_can_stretch", lambda self: False)
        steps = run(cfg, requests, ids)
    np.testing.assert_allclose(stretched.first_token_s, steps.first_token_s, rtol=1e-9)
    np.testing.assert_allclose(stretched.finish_s, steps.finish_s, rtol=1e-9)
    assert stretched.cached_tokens.tolist() == steps.cached_tokens.tolist()
    assert stretched.stats.n_steps == steps.stats.n_steps
    assert stretched.stats.prefix_evicted_blocks == steps.stats.prefix_evicted_blocks


def test_closed_loop_runs_take_hashes_too() -> None:
    requests = make_requests([300] * 4, [3] * 4)
    ids = [blocks(1, 2, 3, 4)] * 4
    res = concurrency(cfg_for(), requests, 1, prefix_blocks=ids, prefix_block_tokens=B)
    assert res.cached_tokens.tolist() == [0, 4 * B, 4 * B, 4 * B]


@pytest.mark.parametrize("policy", [p for p in POLICIES if SCHEDULERS[p].admit_while_running])
def test_preemption_under_kv_pressure_keeps_the_invariants_and_the_prefix(policy: str) -> None:
    """Six requests sharing a one-block prefix that each fit alone but not all at once: decodes
    outgrow the cache, the newest are preempted, and every request still completes. A
    preempted request's blocks stay cached while unreferenced, so its recompute finds them."""
    requests = make_requests([100] * 6, [200] * 6)
    ids = [blocks(1, 10 + i) for i in range(6)]
    res = watch(cfg_for(policy, 600, max_num_batched_tokens=1024), requests, ids)
    assert res.completed.all()
    assert res.preemptions.sum() > 0
    assert (res.cached_tokens[res.preemptions > 0] == B).all()
