"""Prefix caching over hashed prompt blocks (Mooncake's `hash_ids`): repeated prefixes hit, a
cache too small evicts the least recently used, hits are whole leading blocks and never the
whole prompt, sharers hold one copy, and every scheduler's invariants still hold."""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megawatt.errors import InputError
from megawatt.serving import (
    SCHEDULERS,
    PrefixCache,
    Replica,
    ReplicaConfig,
    RunResult,
    concurrency,
    offline,
    prefix,
    simulate,
)
from megawatt.serving.prefix import dense_blocks
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


# -- dense block ids ---------------------------------------------------------------------------
def test_dense_blocks_number_equal_hash_ids_alike_and_keep_whole_prompt_blocks_only() -> None:
    """Hash 7 opens all three prompts: one dense block. The first prompt's third block is
    partial (2B + 10 tokens), so its id 99 is dropped and counts in no block; the third request
    has fewer ids than whole blocks and keeps what it has."""
    ids = [blocks(7, 8, 99), blocks(7, 5), blocks(7, 8)]
    flat, offsets, n_blocks = dense_blocks(ids, np.array([2 * B + 10, 2 * B, 5 * B]), B)
    assert offsets.tolist() == [0, 2, 4, 6] and n_blocks == 3
    assert flat.dtype == np.int64 and offsets.dtype == np.int64
    per_request = [flat[offsets[i] : offsets[i + 1]].tolist() for i in range(3)]
    seven, eight, five = per_request[0][0], per_request[0][1], per_request[1][1]
    assert per_request == [[seven, eight], [seven, five], [seven, eight]]
    assert sorted({seven, eight, five}) == [0, 1, 2]
    short = dense_blocks([blocks(1, 2)], np.array([B - 1]), B)  # not one whole block
    assert short[0].size == 0 and short[1].tolist() == [0, 0] and short[2] == 0
    empty = dense_blocks([], np.zeros(0, dtype=np.int64), B)
    assert empty[0].size == 0 and empty[1].tolist() == [0] and empty[2] == 0


@pytest.mark.parametrize(
    ("ids", "prompt", "block_tokens", "message"),
    [
        ([blocks(1)], [10, 10], B, r"one id array per request \(2\); got 1"),
        ([blocks(1)], [10], 0, "prefix_block_tokens must be >= 1; got 0"),
        ([np.array([[1, 2]])], [10], B, r"prefix_blocks\[0\] must be a 1-D array of integer .* shape \(1, 2"),
        ([blocks(1), np.array([1.5])], [10, 10], B, r"prefix_blocks\[1\] must be .* of float64"),
        ([blocks(1)], [-1], B, r"prompt_tokens must .* >= 0; got shape \(1,\) of int64, least -1"),
        ([blocks(1)], [1.0], B, "prompt_tokens must be a 1-D array of whole numbers >= 0; got .* of float64"),
    ],
)
def test_dense_blocks_refuse_what_they_cannot_number(
    ids: list[np.ndarray], prompt: list[float], block_tokens: int, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        dense_blocks(ids, np.array(prompt), block_tokens)


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


def lru(state: prefix.PrefixState) -> list[int]:
    """The evictable blocks of `state`, least recent first, walked both ways (they must agree)."""
    forward, h = [], int(state.counts[prefix._HEAD])
    while h != -1:
        forward.append(h)
        h = int(state.newer[h])
    backward, h = [], int(state.counts[prefix._TAIL])
    while h != -1:
        backward.append(h)
        h = int(state.older[h])
    assert backward == forward[::-1]
    return forward


def test_released_requests_queue_for_eviction_tail_first_in_release_order() -> None:
    """A releases blocks 0 1 2, then B releases 3 4: the LRU order is 2 1 0 4 3. A hit on the
    head, a middle block and the tail unlinks each; eviction then takes the least recent."""
    state = prefix.new_state(6, 1.0)
    a, b = blocks(0, 1, 2), blocks(3, 4)
    for h in (0, 1, 2, 3, 4):
        assert prefix.register(state, h)
    assert prefix.release(state, a, 0, 3) == 0.0
    assert prefix.release(state, b, 0, 2) == 0.0
    assert lru(state) == [2, 1, 0, 4, 3] and state.sizes[prefix._FREE_BYTES] == 5.0
    for h, left in ((2, [1, 0, 4, 3]), (0, [1, 4, 3]), (3, [1, 4])):  # head, middle, tail
        prefix.acquire(state, blocks(h), 0, 1)
        assert lru(state) == left and state.refs[h] == 1
    assert state.sizes[prefix._FREE_BYTES] == 2.0
    prefix.evict_to(state, 1.0)  # one block too many: the least recent goes
    assert lru(state) == [4] and state.refs[1] == -1 and state.counts[prefix._N_EVICTED] == 1
    prefix.evict_to(state, 1.0)  # within the room: nothing to do
    assert lru(state) == [4] and state.counts[prefix._N_EVICTED] == 1


def test_references_count_sharers_and_release_returns_the_shared_bytes() -> None:
    state = prefix.new_state(4, 8.0)
    ids = blocks(0, 1, 2)
    assert prefix.register(state, 0) and prefix.register(state, 1)
    assert not prefix.register(state, 1)  # cached and referenced
    assert prefix.leading_hits(state, ids, 0, 3) == 2
    assert prefix.shared_bytes(state, ids, 0, 2) == 16.0
    prefix.acquire(state, ids, 0, 2)  # a second sequence hits both
    assert state.refs[0] == state.refs[1] == 2
    assert prefix.release(state, ids, 0, 2) == 16.0  # the other still holds both
    assert prefix.release(state, ids, 0, 1) == 0.0  # block 0: nobody now, evictable
    assert prefix.any_free(state, ids, 0, 2) and not prefix.any_free(state, ids, 1, 2)
    assert prefix.shared_bytes(state, ids, 0, 2) == 8.0  # block 1 only
    assert not prefix.register(state, 0)  # cached and evictable: still cached
    assert prefix.leading_hits(state, ids, 1, 1) == 0 and prefix.shared_bytes(state, ids, 2, 2) == 0.0


def test_the_free_bytes_tolerate_rounding_and_drop_to_exactly_zero_when_nothing_is_evictable() -> None:
    """Three blocks of 0.1 bytes sum to a hair over 0.3: room for 0.3 bytes evicts none of them
    (a micro-byte of slack). Hit again, they leave rounding in the sum: an eviction pass over an
    empty list resets it, as the dict version did."""
    state = prefix.new_state(3, 0.1)
    ids = blocks(0, 1, 2)
    for h in ids:
        prefix.register(state, int(h))
    prefix.release(state, ids, 0, 3)
    assert state.sizes[prefix._FREE_BYTES] > 0.3
    prefix.evict_to(state, 0.3)
    assert lru(state) == [2, 1, 0]
    prefix.acquire(state, ids, 0, 3)
    assert lru(state) == [] and state.sizes[prefix._FREE_BYTES] != 0.0  # 0.1 + 0.1 + 0.1 - ...
    prefix.evict_to(state, 1e9)
    assert state.sizes[prefix._FREE_BYTES] == 0.0 and state.counts[prefix._N_EVICTED] == 0


class Reference:
    """The cache as it was before the arrays (a dict of references and an OrderedDict of the
    evictable blocks), the semantics the functions must keep."""

    def __init__(self, block_bytes: float) -> None:
        self.block_bytes = block_bytes
        self.refs: dict[int, int] = {}
        self.free: OrderedDict[int, None] = OrderedDict()
        self.free_bytes = 0.0
        self.n_evicted = 0

    def leading_hits(self, ids: list[int]) -> int:
        k = 0
        for h in ids:
            if h not in self.refs:
                break
            k += 1
        return k

    def any_free(self, ids: list[int]) -> bool:  # the replica's query before a decode stretch
        return any(self.refs[h] == 0 for h in ids)

    def shared_bytes(self, ids: list[int]) -> float:
        return self.block_bytes * sum(1 for h in ids if self.refs[h] > 0)

    def acquire(self, ids: list[int]) -> None:
        for h in ids:
            if self.refs[h] == 0:
                del self.free[h]
                self.free_bytes -= self.block_bytes
            self.refs[h] += 1

    def register(self, h: int) -> bool:
        if h in self.refs:
            return False
        self.refs[h] = 1
        return True

    def release(self, ids: list[int]) -> float:
        shared = 0.0
        for h in reversed(ids):
            self.refs[h] -= 1
            if self.refs[h] == 0:
                self.free[h] = None
                self.free_bytes += self.block_bytes
            else:
                shared += self.block_bytes
        return shared

    def evict_to(self, room_bytes: float) -> None:
        while self.free and self.free_bytes > room_bytes + 1e-6:
            h, _ = self.free.popitem(last=False)
            del self.refs[h]
            self.free_bytes -= self.block_bytes
            self.n_evicted += 1
        if not self.free:
            self.free_bytes = 0.0

    def summary(self) -> list[object]:
        refs = [self.refs.get(h, -1) for h in range(N_DENSE)]
        return [refs, list(self.free), self.free_bytes, self.n_evicted]


class OnLists:
    """A `PrefixCache` called as `Reference` is: on whole lists of ids."""

    def __init__(self, cache: PrefixCache) -> None:
        self.cache = cache

    def leading_hits(self, ids: list[int]) -> int:
        return self.cache.leading_hits(ids, 0, len(ids))

    def any_free(self, ids: list[int]) -> bool:
        return self.cache.any_free(ids, 0, len(ids))

    def shared_bytes(self, ids: list[int]) -> float:
        return self.cache.shared_bytes(ids, 0, len(ids))

    def acquire(self, ids: list[int]) -> None:
        self.cache.acquire(ids, 0, len(ids))

    def register(self, h: int) -> bool:
        return self.cache.register(h)

    def release(self, ids: list[int]) -> float:
        return self.cache.release(ids, 0, len(ids))

    def evict_to(self, room_bytes: float) -> None:
        self.cache.evict_to(room_bytes)

    def summary(self) -> list[object]:
        c = self.cache
        return [c.refs.tolist(), c.free, c.free_bytes, c.n_evicted]


N_DENSE = 8  # blocks in the differential runs


def replay(cache: OnLists | Reference, ops: list[tuple[int, int, list[int], float]]) -> list[object]:
    """Drive a cache as a replica does: sequences admitted with their leading hits, computing and
    registering their blocks one by one, released; evictions and queries between. Returns what
    every call returned and the free bytes after each operation, then the final references,
    LRU order, free bytes and evictions."""
    seen: list[object] = []
    prompts: dict[int, list[int]] = {}  # running sequence -> its blocks
    held: dict[int, list[int]] = {}  # running sequence -> the blocks it references
    n_seen: dict[int, int] = {}
    for kind, seq, ids, room in ops:
        running = seq in prompts
        if kind == 0 and not running:  # admit: take the leading hits
            k = cache.leading_hits(ids)
            hits = ids[:k]
            seen += [k, cache.shared_bytes(hits), cache.any_free(hits)]
            cache.acquire(hits)
            prompts[seq], held[seq], n_seen[seq] = ids, list(hits), k
        elif kind == 1 and running and n_seen[seq] < len(prompts[seq]):  # compute the next block
            h = prompts[seq][n_seen[seq]]
            n_seen[seq] += 1
            fresh = cache.register(h)
            seen.append(fresh)
            if fresh:
                held[seq].append(h)
        elif kind == 2 and running:  # finish or preemption
            del prompts[seq], n_seen[seq]
            seen.append(cache.release(held.pop(seq)))
        elif kind == 3:
            cache.evict_to(room)
        seen.append(cache.free_bytes if isinstance(cache, Reference) else cache.cache.free_bytes)
    return [*seen, *cache.summary()]


OPS = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.integers(0, 3),
        st.lists(st.integers(0, N_DENSE - 1), max_size=6),
        st.sampled_from([0.0, 0.25, 0.3, 0.5, 1.0, 10.0]),
    ),
    max_size=60,
)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(ops=OPS, block_bytes=st.sampled_from([0.1, 0.125, 1.0]))
def test_the_arrays_behave_as_the_dict_and_ordered_dict_did(
    ops: list[tuple[int, int, list[int], float]], block_bytes: float
) -> None:
    """Random admissions (repeated blocks within a prompt included), computations, releases and
    evictions: every return value, the references, the LRU order, the free bytes (bit for bit:
    the same float operations in the same order) and the evictions agree."""
    assert replay(OnLists(PrefixCache(block_bytes, N_DENSE)), ops) == replay(Reference(block_bytes), ops)


def test_the_functions_compile_with_numba_to_the_same_results() -> None:
    """The compiled replica's way: every function inlined into one nopython loop over arrays. A
    short sequence of operations gives the plain-Python results (same arrays, same returns)."""
    numba = pytest.importorskip("numba")

    def driver(fns: tuple[Callable[..., Any], ...]) -> Callable[..., None]:
        leading_hits, any_free, shared_bytes, acquire, register, release, evict_to = fns

        def run(state: prefix.PrefixState, ids: np.ndarray, ops: np.ndarray, out: np.ndarray) -> None:
            for j in range(ops.shape[0]):
                kind, lo, hi = ops[j, 0], ops[j, 1], ops[j, 2]
                if kind == 0:
                    k = leading_hits(state, ids, lo, hi)
                    out[j] = shared_bytes(state, ids, lo, lo + k) + any_free(state, ids, lo, lo + k)
                    acquire(state, ids, lo, lo + k)
                elif kind == 1:
                    out[j] = register(state, ids[lo])
                elif kind == 2:
                    out[j] = release(state, ids, lo, hi)
                else:
                    evict_to(state, 0.5 * lo)

        return run

    fns = (prefix.leading_hits, prefix.any_free, prefix.shared_bytes, prefix.acquire, prefix.register,
           prefix.release, prefix.evict_to)
    compiled = numba.njit(driver(tuple(numba.njit(inline="always")(f) for f in fns)))
    ids = blocks(0, 1, 2, 3, 0, 1, 4, 2, 3)
    # (kind, lo, hi): 0 admit ids[lo:hi], 1 register ids[lo], 2 release ids[lo:hi], 3 evict to lo / 2 bytes
    ops = np.array([
        [1, 0, 0], [1, 1, 0], [1, 2, 0], [1, 3, 0], [0, 4, 6], [1, 6, 0], [2, 0, 4], [3, 4, 0],
        [1, 4, 0], [2, 4, 7], [0, 7, 9], [3, 1, 0], [3, 0, 0], [2, 7, 9], [0, 4, 9], [3, 0, 0],
    ], dtype=np.int64)
    results = []
    for run in (driver(fns), compiled):
        state = prefix.new_state(5, 0.25)
        out = np.zeros(len(ops))
        run(state, ids, ops, out)
        results.append((out, state))
    (out_py, state_py), (out_nb, state_nb) = results
    np.testing.assert_array_equal(out_nb, out_py)
    assert out_py.any()
    for a, b in zip(state_nb, state_py, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


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
def shared_prefix_requests(seed: int, n: int = 60) -> tuple[Requests, list[np.ndarray]]:
    """`n` requests whose prompts open with blocks drawn from a few shared prefixes (some
    extended by their own blocks), arriving as a Poisson stream: hits, misses, blocks shared by
    running sequences and blocks evicted when the cache is small."""
    rng = np.random.default_rng(seed)
    roots = [list(rng.integers(1_000 * k, 1_000 * k + 999, 6)) for k in range(4)]
    ids, prompt = [], []
    for i in range(n):
        base = roots[int(rng.integers(0, 4))][: int(rng.integers(1, 7))]
        own = list(10_000 + 10 * i + np.arange(int(rng.integers(0, 3))))
        ids.append(np.array(base + own, dtype=np.int64))
        prompt.append((len(base) + len(own)) * B + int(rng.integers(0, B)))
    output = rng.integers(1, 40, n)
    arrival = np.cumsum(rng.exponential(1 / 30.0, n))
    return make_requests(prompt, output.tolist(), arrival_s=arrival.tolist()), ids


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(("model", "kv_tokens"), [("h100-llama-8b", None), ("h100-llama-8b", 2_500.0),
                                                  ("h100-gpt-oss-20b", 3_000.0), ("cs3-llama-8b", 2_500.0)])
def test_the_compiled_replica_keeps_the_same_hashed_prefix_cache(
    policy: str, model: str, kv_tokens: float | None
) -> None:
    """Write once, compile twice: the compiled kernel runs the prefix cache's own functions, so
    open and closed loops give the Python replica's per-request table (hits included), stats,
    evictions, ITL samples and timeline, on real step models (sliding windows, a wafer) with
    caches small enough to evict and preempt; its stretch mode gives the same table."""
    from .test_compiled import assert_same_requests, assert_same_run, roofline, with_kv_tokens

    cfg = replace(with_kv_tokens(roofline(model), kv_tokens), scheduler=policy)
    for seed in (0, 1):
        requests, ids = shared_prefix_requests(seed)
        runs = [
            simulate(cfg, requests, prefix_blocks=ids, prefix_block_tokens=B, backend=backend)
            for backend in ("fast", "python")
        ]
        assert_same_run(*runs)
        assert runs[0].stats.prefix_evicted_blocks == runs[1].stats.prefix_evicted_blocks
        assert runs[0].cached_tokens.sum() > 0
        closed = [
            concurrency(cfg, requests, 6, prefix_blocks=ids, prefix_block_tokens=B, backend=backend,
                        stretch=stretch)
            for backend, stretch in (("fast", False), ("python", False), ("fast", True))
        ]
        assert_same_run(closed[0], closed[1])
        assert_same_requests(closed[0], closed[2])


def test_the_compiled_replica_evicts_as_the_python_one_on_mooncake() -> None:
    """Mooncake's synthetic trace (512-token blocks) on a cache of a few prompts: both engines
    hit, share and evict the same blocks."""
    from .test_compiled import assert_same_run, roofline, with_kv_tokens

    requests, ids = builtin_trace_with_prefixes("mooncake-synthetic")
    n = 300
    sub = requests.subset(np.arange(n))
    cfg = replace(with_kv_tokens(roofline("h100-llama-8b"), 60_000), max_num_batched_tokens=4096)
    fast, slow = (
        simulate(cfg, sub, prefix_blocks=ids[:n], backend=backend) for backend in ("fast", "python")
    )
    assert_same_run(fast, slow)
    assert fast.stats.prefix_evicted_blocks == slow.stats.prefix_evicted_blocks > 0
    assert fast.cached_tokens.sum() > 0


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
