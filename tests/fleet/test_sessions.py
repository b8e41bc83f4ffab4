"""Sessions on a replica: task time, the slots of users working back to back, the capacity
search, and what a pool's sessions earn and cost."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from megawatt.fleet.sessions import (
    PriceTier,
    SessionCapacity,
    SessionsAtDemand,
    in_slots,
    pick_tier,
    serving_pool,
    session_capacity,
    session_outcome,
    sessions_at_demand,
    with_other_traffic,
)
from megawatt.serving import ReplicaConfig, Slo
from megawatt.serving.drivers import sessions
from megawatt.workload import Mix, RequestClass
from megawatt.workload.lengths import Fixed, Lognormal
from megawatt.workload.sessions import SessionClass, sample_sessions, task_times

from .fakes import LinearStep, kv_for_tokens


def _agent(gap_s: float) -> SessionClass:
    return SessionClass(
        "agent", 1.0, "fast", turns=Lognormal(8, 0.5, max_tokens=30), first_prompt=Lognormal(800, 0.3),
        new_tokens=Lognormal(60, 0.5), output=Lognormal(40, 0.5), gap_median_s=gap_s, gap_sigma=0.0,
        cache_hit=0.9,
    )


def _task_time(step: LinearStep, gap_s: float) -> float:
    cfg = ReplicaConfig(step, kv_for_tokens(50_000))
    t = sample_sessions([_agent(gap_s)], np.random.default_rng(5), np.zeros(1), max_context_tokens=8192)
    res = sessions(cfg, t.requests, t.parent, t.gap_s, backend="python")
    return float(task_times(t, res.finish_s)[0])


def test_halving_per_token_latency_with_no_tool_time_halves_task_time() -> None:
    step = LinearStep(base_s=2e-2, per_token_s=2e-4, per_context_s=2e-6)
    half = LinearStep(base_s=1e-2, per_token_s=1e-4, per_context_s=1e-6)
    assert _task_time(half, 0.0) / _task_time(step, 0.0) == pytest.approx(0.5, rel=0.05)
    # With tool time the task is not all tokens: halving the latency saves less than half.
    with_tools = _task_time(half, 5.0) / _task_time(step, 5.0)
    assert 0.5 < with_tools < 0.95


def test_slots_chain_each_users_tasks_and_keep_every_turn() -> None:
    t = sample_sessions([_agent(1.0)], np.random.default_rng(1), np.zeros(12), max_context_tokens=8192)
    linked = in_slots(t, 3, stagger_s=6.0)
    assert len(linked.requests) == len(t.requests)
    assert sorted(linked.requests.prompt_tokens.tolist()) == sorted(t.requests.prompt_tokens.tolist())
    assert (linked.parent < np.arange(len(linked.parent))).all()
    assert (linked.parent == -1).sum() == 3  # one first task per user; the rest wait
    assert sorted(linked.start_s[linked.start_s > 0].tolist()) == [2.0, 4.0]
    cfg = ReplicaConfig(LinearStep(), kv_for_tokens(50_000))
    res = sessions(cfg, linked.requests, linked.parent, linked.gap_s, backend="python")
    assert res.completed.all()


def test_session_capacity_finds_more_users_on_a_faster_replica() -> None:
    slo = Slo(ttft_p99_s=2.0, tpot_p99_s=0.05)

    def users(base_s: float) -> SessionCapacity:
        cfg = ReplicaConfig(LinearStep(base_s=base_s), kv_for_tokens(50_000))
        return session_capacity(
            cfg, _agent(1.0), slo, max_context_tokens=8192, seed=(3,), n_requests=600,
            max_requests=2400, backend="python",
        )

    slow, fast = users(2e-2), users(1e-2)
    assert 1 <= slow.users <= fast.users
    assert fast.alone_task_p50_s < slow.alone_task_p50_s
    assert slow.task_p50_s >= slow.alone_task_p50_s * 0.99
    assert slow.turns_per_task > 1 and slow.output_tokens_per_task > 0
    users = [int(p[0]) for p in slow.frontier]
    assert users == sorted(users) and users[0] == 1


def test_outcomes_price_by_speed_and_route_by_latency_class() -> None:
    standard = PriceTier("standard", 0.0, 0.15, 0.075, 0.60)
    fast = PriceTier("fast", 1000.0, 0.35, 0.175, 0.75)
    assert pick_tier([standard, fast], 500.0) is standard
    assert pick_tier([standard, fast], 2000.0) is fast
    assert pick_tier([fast], 10.0) is None
    assert fast.revenue(1e6, 5e5, 1e6) == pytest.approx(0.5 * 0.35 + 0.5 * 0.175 + 0.75)
    assert serving_pool("fast", [100.0, 2000.0], [1.0, 9.0], [5.0, 1.0]) == 1
    assert serving_pool("batch", [100.0, 2000.0], [1.0, 9.0], [5.0, 1.0]) == 0
    assert serving_pool("standard", [100.0, 2000.0], [1.0, 9.0], [1.0, 5.0]) == 1
    cap = session_capacity(
        ReplicaConfig(LinearStep(), kv_for_tokens(50_000)), _agent(1.0), Slo(2.0, 0.05),
        max_context_tokens=8192, seed=(1,), n_requests=400, max_requests=800, backend="python",
    )
    out = session_outcome(
        cap, "pool", replica_facility_w=1e5, replica_usd_per_year=1e6, load_fraction=0.5,
        tiers=[standard, fast], usd_per_wait_hour=60.0,
    )
    tasks_per_day = cap.rate_per_s * 0.5 * 86_400
    assert out.tasks_per_day_per_mw == pytest.approx(tasks_per_day / 0.1)
    assert out.usd_per_task == pytest.approx(1e6 / (tasks_per_day * 365.0), rel=1e-3)
    assert out.wait_usd_per_task == pytest.approx(cap.task_p50_s / 60.0)
    doubled = session_outcome(
        replace(cap, rate_per_s=2 * cap.rate_per_s), "pool", replica_facility_w=1e5,
        replica_usd_per_year=1e6, load_fraction=0.5, tiers=[standard], usd_per_wait_hour=0.0,
    )
    assert doubled.usd_per_task == pytest.approx(out.usd_per_task / 2)
    assert [c[2] for c in out.curve()] == sorted((c[2] for c in out.curve()), reverse=True)


def test_a_class_with_fixed_lengths_gives_whole_tokens_per_task() -> None:
    cls = replace(_agent(0.0), turns=Fixed(3), first_prompt=Fixed(100), new_tokens=Fixed(10), output=Fixed(5))
    cap = session_capacity(
        ReplicaConfig(LinearStep(), kv_for_tokens(50_000)), cls, Slo(2.0, 0.05),
        max_context_tokens=8192, seed=(1,), n_requests=300, max_requests=600, backend="python",
    )
    assert cap.turns_per_task == 3
    assert cap.output_tokens_per_task == 15
    assert cap.prompt_tokens_per_task == 100 + 115 + 130


def test_other_traffic_merges_by_start_and_keeps_every_chain() -> None:
    t = sample_sessions([_agent(1.0)], np.random.default_rng(4), np.zeros(8), max_context_tokens=8192)
    linked = in_slots(t, 2, stagger_s=3.0)
    other = sample_sessions([replace(_agent(0.0), turns=Fixed(1))], np.random.default_rng(5),
                            np.array([0.5, 1.0, 2.5, 4.0]), max_context_tokens=8192).requests
    reqs, parent, gap, mine = with_other_traffic(linked, other)
    assert len(reqs) == len(linked.requests) + 4 and mine.sum() == len(linked.requests)
    assert (parent < np.arange(len(parent))).all()
    assert (parent[~mine] == -1).all()
    starts = np.asarray(reqs.arrival_s)[parent < 0]
    assert sorted(starts.tolist()) == sorted([0.0, 1.5, 0.5, 1.0, 2.5, 4.0])
    # The chains are the slot table's: the same turns follow the same turns.
    rows = np.flatnonzero(mine)
    back = {int(r): k for k, r in enumerate(rows)}
    assert [back.get(int(p), -1) if p >= 0 else -1 for p in parent[rows]] == linked.parent.tolist()
    cfg = ReplicaConfig(LinearStep(), kv_for_tokens(50_000))
    assert sessions(cfg, reqs, parent, gap, backend="python").completed.all()


def test_tasks_take_longer_next_to_more_other_traffic_over_a_day() -> None:
    cfg = ReplicaConfig(LinearStep(base_s=2e-2), kv_for_tokens(50_000))
    cls = _agent(1.0)
    background = Mix((RequestClass("chat", 1.0, Lognormal(800, 0.3), Lognormal(40, 0.5)),))

    def day(other_per_day: float, seed: int = 2) -> SessionsAtDemand:
        return sessions_at_demand(
            cfg, cls, "pool", tasks_per_day=150, other=background, other_requests_per_day=other_per_day,
            peak_to_trough=3.0, max_context_tokens=8192, seed=(seed,), min_tasks=1, backend="python",
        )

    quiet, busy = day(1_000), day(20_000)  # under 0.4 requests/s at the peak: under capacity
    assert quiet.n_tasks == busy.n_tasks > 100  # the same sessions (the seed draws them first)
    assert quiet.window_s == 86_400.0
    assert quiet.task_p50_s < busy.task_p50_s
    assert busy.peak_hour_task_p50_s >= busy.task_p50_s * 0.9  # the peak hour is the busiest
    assert day(1_000) == quiet  # seeded


def test_the_breakeven_hour_prices_the_wait_the_faster_task_saves() -> None:
    from megawatt.report.sessions import breakeven_usd_per_hour

    fast = {"task_p50_s": 600.0, "usd_per_task": 0.60}
    slow = {"task_p50_s": 1200.0, "usd_per_task": 0.10}
    value = breakeven_usd_per_hour(fast, slow)
    assert value == pytest.approx(0.50 / (600 / 3600))  # $3 an hour
    # At that value of an hour, cost plus wait is the same for both.
    with_wait = [r["usd_per_task"] + value * r["task_p50_s"] / 3600 for r in (fast, slow)]
    assert with_wait[0] == pytest.approx(with_wait[1])
    assert breakeven_usd_per_hour({**fast, "usd_per_task": 0.05}, slow) == 0.0
    assert math.isnan(breakeven_usd_per_hour(slow, fast))


def test_a_day_too_big_to_simulate_is_the_hours_around_its_peak() -> None:
    cfg = ReplicaConfig(LinearStep(), kv_for_tokens(50_000))
    background = Mix((RequestClass("chat", 1.0, Lognormal(200, 0.3), Lognormal(20, 0.5)),))
    d = sessions_at_demand(
        cfg, _agent(1.0), "pool", tasks_per_day=100, other=background, other_requests_per_day=20_000,
        peak_to_trough=3.0, max_context_tokens=8192, seed=(1,), max_requests=4_000, min_tasks=1,
        backend="python",
    )
    per_day = 100 * _agent(1.0).turns.mean + 20_000
    assert d.window_s == pytest.approx(86_400 * 4_000 / per_day)
    assert 0 < d.n_tasks < 100 and d.peak_hour_task_p50_s > 0


def test_replica_days_are_added_until_enough_tasks_are_seen() -> None:
    cfg = ReplicaConfig(LinearStep(), kv_for_tokens(50_000))
    background = Mix((RequestClass("chat", 1.0, Lognormal(200, 0.3), Lognormal(20, 0.5)),))
    d = sessions_at_demand(
        cfg, _agent(1.0), "pool", tasks_per_day=5, other=background, other_requests_per_day=100,
        peak_to_trough=3.0, max_context_tokens=8192, seed=(1,), min_tasks=40, backend="python",
    )
    assert d.n_tasks >= 40 and d.days >= 5
