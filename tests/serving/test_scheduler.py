"""Scheduler policies: the registry, and one conformance suite that every registered policy must
pass (no request lost, KV never over capacity, time never runs back, tokens conserved,
deterministic, too-large requests rejected, preemption survivable, prefix hits honoured)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megawatt.errors import InputError
from megawatt.serving import (
    SCHEDULERS,
    KvBudget,
    Replica,
    ReplicaConfig,
    RunResult,
    SchedulerPolicy,
    concurrency,
    offline,
    scheduler,
    simulate,
)
from megawatt.sim import Environment
from megawatt.workload import Requests

from .conftest import ConstantStep, LinearStep, kv_for_tokens, make_requests, random_requests

POLICIES = sorted(SCHEDULERS)


# -- the registry -----------------------------------------------------------------------------
def test_the_registry_holds_the_three_documented_policies() -> None:
    assert set(SCHEDULERS) == {"vllm", "fcfs", "static"}
    for name, policy in SCHEDULERS.items():
        assert isinstance(policy, SchedulerPolicy)
        assert policy.name == name
        assert policy.description
        assert scheduler(name) is policy


def test_an_unknown_scheduler_lists_the_known_ones() -> None:
    with pytest.raises(InputError, match=r"must be one of fcfs, static, vllm; got 'sglang'"):
        scheduler("sglang")


def test_a_replica_takes_a_policy_by_name_or_by_value(
    linear_step: LinearStep, tiny_kv: KvBudget, small_requests: Requests
) -> None:
    custom = SchedulerPolicy(
        "mine", chunked_prefill=False, admit_while_running=True, description="fcfs by another name"
    )
    by_value = Replica(Environment(), linear_step, tiny_kv, small_requests, scheduler=custom)
    assert by_value.scheduler is custom
    with pytest.raises(InputError, match="scheduler must be one of"):
        Replica(Environment(), linear_step, tiny_kv, small_requests, scheduler="nope")


# -- a replica watched after every event ------------------------------------------------------
@dataclass
class Watched:
    """A run stepped by hand, with the invariants checked after every event."""

    replica: Replica
    result: RunResult


def watch(cfg: ReplicaConfig, requests: Requests) -> Watched:
    """Run `requests` open loop like `simulate`, checking after every event that the clock is
    monotone, the KV in use is within capacity and adds up, the batch cap holds and every
    request is in exactly one place."""
    env = Environment()
    rep = Replica(
        env,
        cfg.step_model,
        cfg.kv,
        requests,
        scheduler=cfg.scheduler,
        max_num_seqs=cfg.max_num_seqs,
        max_num_batched_tokens=cfg.max_num_batched_tokens,
    )
    arrived = np.zeros(len(requests), dtype=bool)

    def arrive(i: int) -> None:
        arrived[i] = True
        rep.submit(i)

    for i, t in enumerate(requests.arrival_s):
        env.schedule_at(float(t), arrive, i, priority=-1)
    capacity = cfg.kv.capacity_bytes
    last = env.now
    while len(env):
        env.step()
        assert env.now >= last, "time ran backward"
        last = env.now
        assert rep.kv_used <= capacity + 1e-6, f"KV {rep.kv_used} over capacity {capacity}"
        assert math.isclose(rep.kv_used, sum(rep.kv_bytes), rel_tol=1e-9, abs_tol=1e-3)
        assert len(rep.running) <= rep.max_num_seqs
        assert not set(rep.running) & set(rep.waiting)
        assert sorted(rep.running) == [i for i, s in enumerate(rep.state) if s == 1]
        placed = np.array(rep.state) != 0  # running, done or rejected
        placed[list(rep.waiting)] = True
        assert (placed == arrived).all(), "a request that arrived is nowhere"
    assert not rep.busy and not rep.waiting and not rep.running
    return Watched(rep, RunResult.of(rep, env.now))


def cfg_for(
    policy: str, kv_tokens: float = 2000, max_num_seqs: int = 8, max_num_batched_tokens: int = 256
) -> ReplicaConfig:
    """The linear fake under `policy` with a cache of `kv_tokens` tokens."""
    return ReplicaConfig(LinearStep(), kv_for_tokens(kv_tokens), policy, max_num_seqs, max_num_batched_tokens)


# -- the conformance suite --------------------------------------------------------------------
@pytest.fixture(params=POLICIES)
def policy(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_the_watched_run_is_the_simulated_run(policy: str, small_requests: Requests) -> None:
    cfg = cfg_for(policy)
    assert watch(cfg, small_requests).result.table().equals(simulate(cfg, small_requests).table())


def test_every_request_completes_or_is_rejected(policy: str, small_requests: Requests) -> None:
    too_big = kv_for_tokens(250)  # some of the up to 300 + 60 token requests cannot fit
    watched = watch(replace(cfg_for(policy), kv=too_big), small_requests)
    res = watched.result
    assert res.rejected.any() and res.completed.any()
    assert (res.completed ^ res.rejected).all()
    assert np.isfinite(res.finish_s).all()
    # Rejected exactly when the whole sequence (prompt and output but the last token) could
    # never be held: 1 kB a token plus half a block.
    whole_kb = res.prompt_tokens + res.output_tokens - 1 + too_big.block_tokens / 2
    assert (res.rejected == (whole_kb > 250)).all()


def test_kv_in_use_never_exceeds_capacity(policy: str, small_requests: Requests) -> None:
    cfg = cfg_for(policy, kv_tokens=700)  # tight: a couple of requests at a time
    res = watch(cfg, small_requests).result
    assert 0 < res.stats.peak_kv_bytes <= cfg.kv.capacity_bytes
    assert res.completed.all()


def test_time_never_runs_backward(policy: str, small_requests: Requests) -> None:
    res = watch(cfg_for(policy, kv_tokens=900), small_requests).result
    assert (res.first_token_s >= res.arrival_s).all()
    assert (res.finish_s >= res.first_token_s).all()
    assert res.end_s == np.nanmax(res.finish_s)
    # The first token needs a step, and the rest a step per token.
    assert (res.first_token_s > res.arrival_s).all()
    many = res.output_tokens > 1
    assert (res.finish_s[many] > res.first_token_s[many]).all()


def test_tokens_are_conserved_without_preemption(policy: str, small_requests: Requests) -> None:
    res = watch(cfg_for(policy, kv_tokens=50_000), small_requests).result
    assert res.completed.all() and res.preemptions.sum() == 0
    st_ = res.stats
    assert st_.decode_tokens == (res.output_tokens - 1).sum()
    assert st_.prefill_tokens == res.prompt_tokens.sum()
    assert res.itl_n.sum() == st_.decode_tokens
    assert res.itl_s.size == len(res.itl_n)


def test_tokens_are_accounted_for_under_preemption(policy: str, small_requests: Requests) -> None:
    """A recompute re-prefills prompt + generated tokens and samples the next token from that
    prefill, so each preemption of a decoding sequence turns one decode into a prefill token:
    decodes lie between sum(output - 1) - preemptions and sum(output - 1)."""
    res = watch(cfg_for(policy, kv_tokens=500), small_requests).result
    assert res.completed.all()
    st_ = res.stats
    planned = int((res.output_tokens - 1).sum())
    assert planned - res.preemptions.sum() <= st_.decode_tokens <= planned
    assert st_.prefill_tokens >= res.prompt_tokens.sum()
    assert res.itl_n.sum() == st_.decode_tokens


def test_the_same_seed_gives_the_same_table(policy: str) -> None:
    cfg = cfg_for(policy, kv_tokens=800)
    first = simulate(cfg, random_requests(11, cached_fraction=0.5)).table()
    again = simulate(cfg, random_requests(11, cached_fraction=0.5)).table()
    other = simulate(cfg, random_requests(12, cached_fraction=0.5)).table()
    assert first.equals(again)
    assert not first.equals(other)


def test_a_request_too_large_for_the_cache_is_rejected_not_lost(policy: str) -> None:
    cfg = cfg_for(policy, kv_tokens=1000)
    requests = make_requests([100, 2000, 100], [10, 10, 10], arrival_s=[0.0, 0.1, 0.2])
    for res in (simulate(cfg, requests), offline(cfg, requests), concurrency(cfg, requests, 1)):
        assert res.rejected.tolist() == [False, True, False]
        assert res.completed.tolist() == [True, False, True]
        assert res.ttft_s[1] == math.inf
        assert res.summary()["rejected"] == 1
    # Open loop: turned away on arrival.
    assert simulate(cfg, requests).finish_s[1] == 0.1


def test_kv_pressure_preempts_and_the_preempted_still_complete(policy: str) -> None:
    """Six requests that each fit alone but not all at once. Continuous batchers admit on the
    prompt and preempt when decodes outgrow the cache; static batching reserves every
    sequence's whole length up front, so it never needs to."""
    cfg = cfg_for(policy, kv_tokens=600, max_num_batched_tokens=1024)
    requests = make_requests([100] * 6, [200] * 6)
    res = watch(cfg, requests).result
    assert res.completed.all()
    if SCHEDULERS[policy].admit_while_running:
        assert res.preemptions.sum() > 0
        assert res.completed[res.preemptions > 0].all()
        assert res.stats.decode_tokens < (res.output_tokens - 1).sum()  # some recomputed
    else:
        assert res.preemptions.sum() == 0


def test_prefix_cache_hits_reduce_prefill_work(policy: str) -> None:
    cfg = cfg_for(policy, kv_tokens=5000)
    cold = make_requests([200, 200, 200], [5, 5, 5])
    warm = make_requests([200, 200, 200], [5, 5, 5], cached=[150, 0, 199])
    a, b = offline(cfg, cold), offline(cfg, warm)
    assert b.cached_tokens.tolist() == [150, 0, 199]
    assert a.stats.prefill_tokens - b.stats.prefill_tokens == 150 + 199
    # Alone, a cached prefix shortens the prefill and so the time to the first token. (In a
    # batch it may instead let another prompt share the step, which can delay this one.)
    alone_cold = offline(cfg, make_requests([200], [5]))
    alone_warm = offline(cfg, make_requests([200], [5], cached=[150]))
    assert alone_warm.ttft_s[0] < alone_cold.ttft_s[0]
    assert alone_warm.stats.prefill_tokens == 50


def test_the_batch_cap_bounds_the_batch(policy: str, small_requests: Requests) -> None:
    all_at_once = small_requests.with_arrivals(np.zeros(len(small_requests)))
    watched = watch(cfg_for(policy, kv_tokens=50_000, max_num_seqs=2), all_at_once)
    assert watched.result.completed.all()
    stats = watched.replica.stats
    assert stats.seq_seconds <= 2 * stats.busy_s * (1 + 1e-12)  # mean batch <= 2


@settings(max_examples=120, deadline=None)
@given(
    policy=st.sampled_from(POLICIES),
    seed=st.integers(0, 10_000),
    n=st.integers(1, 25),
    kv_tokens=st.floats(50, 3000),
    max_num_seqs=st.integers(1, 8),
    max_tokens=st.integers(1, 400),
    rate=st.floats(1.0, 200.0),
    cached_fraction=st.sampled_from([0.0, 0.5]),
    dt=st.sampled_from([None, 0.25, 0.1]),
)
def test_conformance_holds_for_any_small_workload(
    policy: str,
    seed: int,
    n: int,
    kv_tokens: float,
    max_num_seqs: int,
    max_tokens: int,
    rate: float,
    cached_fraction: float,
    dt: float | None,
) -> None:
    """Any workload, cache, caps and policy: every request that arrives completes or is
    rejected, and the invariants hold after every event."""
    requests = random_requests(seed, n, rate_per_s=rate, cached_fraction=cached_fraction)
    if dt is not None:  # arrivals on a grid of the step time: exact ties
        requests = requests.with_arrivals(np.round(requests.arrival_s / dt) * dt)
    cfg = ReplicaConfig(
        ConstantStep(dt) if dt else LinearStep(),
        kv_for_tokens(kv_tokens),
        policy,
        max_num_seqs,
        max_tokens,
    )
    res = watch(cfg, requests).result
    assert (res.completed ^ res.rejected).all()
    assert (res.first_token_s[res.completed] >= res.arrival_s[res.completed]).all()
    assert (res.finish_s[res.completed] >= res.first_token_s[res.completed]).all()
