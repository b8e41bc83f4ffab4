"""Load generators with MLPerf LoadGen's meaning (offline, server, single user, concurrency), the
capacity search, and the invariants a serving simulator owes its users: more cache or faster
steps never hurt offline latency, a busier replica never answers sooner."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megawatt.errors import InputError
from megawatt.hardware import load_catalog
from megawatt.model import load_model
from megawatt.perf import Deployment, RooflineStepModel
from megawatt.serving import (
    SCHEDULERS,
    ReplicaConfig,
    RunResult,
    Slo,
    capacity,
    concurrency,
    offline,
    offline_rate_hint,
    simulate,
    single_user,
    unit_poisson,
)
from megawatt.serving.drivers import sessions, with_scheduler
from megawatt.workload import Requests

from .conftest import ConstantStep, LinearStep, kv_for_tokens, make_requests, random_requests

CONTINUOUS = sorted(name for name, p in SCHEDULERS.items() if p.admit_while_running)


# -- offline and open loop --------------------------------------------------------------------
def test_offline_queues_every_request_at_zero(config: ReplicaConfig, small_requests: Requests) -> None:
    res = offline(config, small_requests)
    assert (res.arrival_s == 0).all()
    assert res.completed.all()
    assert res.output_tokens_per_s == pytest.approx(res.output_tokens.sum() / res.finish_s.max())


@pytest.mark.parametrize("policy", sorted(SCHEDULERS))
def test_requests_that_arrive_together_share_the_first_step(policy: str, constant_step: ConstantStep) -> None:
    """Offline means all queued at once: the first step sees them all (it once saw only the
    first, and static batching then ran that one alone to completion)."""
    cfg = ReplicaConfig(constant_step, kv_for_tokens(5000), policy)
    res = offline(cfg, make_requests([10, 10, 10], [4, 4, 4]))
    assert res.first_token_s.tolist() == [0.25, 0.25, 0.25]
    assert res.stats.n_steps == 4


def test_simulate_serves_requests_at_their_arrival(config: ReplicaConfig) -> None:
    requests = make_requests([50, 50], [3, 3], arrival_s=[2.0, 10.0])
    res = simulate(config, requests)
    assert res.arrival_s.tolist() == [2.0, 10.0]
    assert (res.first_token_s > res.arrival_s).all()
    assert res.finish_s[0] < 10.0  # the first was done before the second came
    assert res.backlog == 0 and res.keeps_up()


def test_simulate_can_stop_early_and_leaves_the_rest_unfinished(
    config: ReplicaConfig, small_requests: Requests
) -> None:
    res = simulate(config, small_requests, until_s=1.0)
    assert res.end_s == 1.0
    assert (res.finish_s[res.completed] <= 1.0).all()
    unfinished = ~res.completed
    assert unfinished.any()
    assert np.isnan(res.finish_s[unfinished]).all()
    assert np.isinf(res.e2e_s[unfinished]).all()
    assert res.duration_s == 1.0 - res.arrival_s.min()


def test_arrivals_before_zero_are_served_from_their_own_time(config: ReplicaConfig) -> None:
    early = simulate(config, make_requests([50], [3], arrival_s=[-5.0]))
    on_time = simulate(config, make_requests([50], [3], arrival_s=[0.0]))
    assert early.ttft_s[0] == pytest.approx(on_time.ttft_s[0])
    assert early.first_token_s[0] == pytest.approx(on_time.first_token_s[0] - 5.0)


def test_an_empty_workload_is_an_empty_result(config: ReplicaConfig) -> None:
    for res in (
        simulate(config, Requests.empty()),
        offline(config, Requests.empty()),
        concurrency(config, Requests.empty(), 4),
    ):
        assert res.n == 0
        assert res.duration_s == 0.0
        assert res.output_tokens_per_s == 0.0


def test_an_overloaded_replica_leaves_a_backlog(config: ReplicaConfig) -> None:
    flood = random_requests(1, 200, rate_per_s=10_000)
    res = simulate(config, flood)
    assert res.backlog > 5 and not res.keeps_up()
    assert "backlog" in res.violations(Slo())


# -- closed loops -----------------------------------------------------------------------------
def in_flight(arrival: np.ndarray, finish: np.ndarray, t: float) -> int:
    return int(((arrival <= t) & (t < finish)).sum())


@pytest.mark.parametrize("n_in_flight", [1, 3, 7])
def test_concurrency_keeps_at_most_n_in_flight(
    n_in_flight: int, config: ReplicaConfig, small_requests: Requests
) -> None:
    res = concurrency(config, small_requests, n_in_flight)
    assert res.completed.all()
    assert (res.arrival_s[:n_in_flight] == 0).all()
    counts = [in_flight(res.arrival_s, res.finish_s, t) for t in res.arrival_s]
    assert max(counts) == n_in_flight
    # Closed loop: every later request arrives the instant an earlier one finishes.
    assert set(res.arrival_s[n_in_flight:]) <= set(res.finish_s)


def test_concurrency_needs_at_least_one_in_flight(config: ReplicaConfig) -> None:
    with pytest.raises(InputError, match="concurrency must be >= 1; got 0"):
        concurrency(config, make_requests([1], [1]), 0)


def test_single_user_tpot_is_the_decode_step_time(constant_step: ConstantStep) -> None:
    cfg = ReplicaConfig(constant_step, kv_for_tokens(5000))
    res = single_user(cfg, make_requests([100, 30, 60], [9, 5, 1]))
    assert res.tpot_s.tolist() == [0.25, 0.25, 0.0]  # one token: no time per output token
    assert res.ttft_s.tolist() == [0.25, 0.25, 0.25]  # one prefill step each
    # One at a time: each starts when the one before it ends.
    assert res.arrival_s[1:].tolist() == res.finish_s[:-1].tolist()


def test_single_user_tpot_follows_context_on_the_linear_model(linear_step: LinearStep) -> None:
    cfg = ReplicaConfig(linear_step, kv_for_tokens(5000))
    prompt, output = 100, 11
    res = single_user(cfg, make_requests([prompt], [output]))
    contexts = np.arange(prompt + 1, prompt + output)  # decode j attends the prompt + j tokens
    steps = linear_step.base_s + linear_step.per_token_s + linear_step.per_context_s * contexts
    assert res.tpot_s[0] == pytest.approx(steps.mean(), rel=1e-12)


# -- the capacity search ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def server() -> tuple[ReplicaConfig, Requests, np.ndarray]:
    """A replica, 80 requests and unit-rate Poisson arrivals for the server scenario."""
    cfg = ReplicaConfig(LinearStep(), kv_for_tokens(4000), max_num_seqs=16, max_num_batched_tokens=512)
    requests = random_requests(21, 80, max_prompt=200, max_output=40)
    return cfg, requests, unit_poisson(np.random.default_rng(21), len(requests))


def test_capacity_finds_the_highest_rate_that_meets_the_slo(
    server: tuple[ReplicaConfig, Requests, np.ndarray],
) -> None:
    cfg, requests, unit = server
    slo = Slo(ttft_p99_s=0.5, tpot_p99_s=0.05)
    cap = capacity(cfg, requests, unit, slo, rel_tol=0.02)
    assert cap.rate_per_s > 0 and cap.result is not None and cap.reason == ""
    assert cap.result.meets(slo)
    assert simulate(cfg, requests.with_arrivals(unit / cap.rate_per_s)).meets(slo)
    # The bracket closed: some rate at most rel_tol above fails, and fails for a named reason.
    failing = [rate for rate, ok in cap.evaluations if not ok and rate > cap.rate_per_s]
    assert min(failing) <= cap.rate_per_s * (1 + cap.rel_tol)
    above = simulate(cfg, requests.with_arrivals(unit / min(failing)))
    assert not above.meets(slo)
    assert cap.limited_by == above.violations(slo) != ()
    assert set(cap.limited_by) <= {"rejected", "backlog", "TTFT", "TPOT"}
    # Common random numbers make the outcome monotone: every pass lies below every failure.
    passes = [rate for rate, ok in cap.evaluations if ok]
    assert max(passes) < min(rate for rate, ok in cap.evaluations if not ok)
    assert cap.output_tokens_per_s == pytest.approx(cap.rate_per_s * cap.result.output_tokens.mean())


def test_a_tighter_slo_never_finds_more_capacity(
    server: tuple[ReplicaConfig, Requests, np.ndarray],
) -> None:
    cfg, requests, unit = server
    hint = offline_rate_hint(cfg, requests)
    loose = capacity(cfg, requests, unit, Slo(0.5, 0.05), rate_hint=hint)
    tight = capacity(cfg, requests, unit, Slo(0.1, 0.05), rate_hint=hint)
    assert tight.rate_per_s <= loose.rate_per_s * (1 + loose.rel_tol)


@pytest.mark.parametrize(
    ("slo", "limit"),
    [(Slo(ttft_p99_s=1e-6), "TTFT"), (Slo(tpot_p99_s=1e-6), "TPOT")],
)
def test_an_impossible_slo_gives_zero_and_says_why(
    slo: Slo, limit: str, server: tuple[ReplicaConfig, Requests, np.ndarray]
) -> None:
    cfg, requests, unit = server
    cap = capacity(cfg, requests, unit, slo, rate_hint=10.0, max_evaluations=6)
    assert cap.rate_per_s == 0.0 and cap.result is None
    assert "not met even at low load" in cap.reason
    assert cap.limited_by == (limit,)
    assert cap.output_tokens_per_s == 0.0
    assert len(cap.evaluations) == 6 and not any(ok for _, ok in cap.evaluations)


def test_a_request_that_never_fits_makes_any_rate_fail(
    server: tuple[ReplicaConfig, Requests, np.ndarray],
) -> None:
    cfg, requests, unit = server
    cap = capacity(
        replace(cfg, kv=kv_for_tokens(150)), requests, unit, Slo(), rate_hint=1.0, max_evaluations=3
    )
    assert cap.rate_per_s == 0.0
    assert "rejected" in cap.limited_by


def test_a_search_that_never_fails_says_it_did_not_saturate(
    server: tuple[ReplicaConfig, Requests, np.ndarray],
) -> None:
    cfg, requests, unit = server
    cap = capacity(cfg, requests, unit, Slo(), rate_hint=1e-3, max_evaluations=3)
    assert cap.reason == "not saturated"
    assert cap.rate_per_s == pytest.approx(1e-3 * 1.25 * 4)
    assert all(ok for _, ok in cap.evaluations)


@pytest.mark.parametrize("rel_tol", [0.0, 1.0, -0.1])
def test_capacity_needs_a_relative_tolerance_below_one(
    rel_tol: float, server: tuple[ReplicaConfig, Requests, np.ndarray]
) -> None:
    cfg, requests, unit = server
    with pytest.raises(InputError, match=r"rel_tol must be in \(0, 1\)"):
        capacity(cfg, requests, unit, Slo(), rel_tol=rel_tol)


def test_unit_poisson_has_rate_one(config: ReplicaConfig) -> None:
    gaps = np.diff(unit_poisson(np.random.default_rng(0), 20_000), prepend=0.0)
    assert (gaps > 0).all()
    assert gaps.mean() == pytest.approx(1.0, rel=0.03)


def test_the_rate_hint_is_offline_throughput_in_requests(
    config: ReplicaConfig, small_requests: Requests
) -> None:
    res = offline(config, small_requests)
    assert offline_rate_hint(config, small_requests) == pytest.approx(
        res.output_tokens_per_s / res.output_tokens.mean()
    )


# -- configuration ----------------------------------------------------------------------------
def test_a_deployment_gives_its_roofline_replica() -> None:
    catalog = load_catalog()
    system = catalog.system("hgx-h200")
    deployment = Deployment(
        load_model("llama-3.1-8b"),
        system,
        catalog.device(system.device_id),
        max_num_seqs=64,
        max_num_batched_tokens=4096,
    )
    cfg = ReplicaConfig.of(deployment, scheduler="fcfs")
    assert isinstance(cfg.step_model, RooflineStepModel)
    assert (cfg.scheduler, cfg.max_num_seqs, cfg.max_num_batched_tokens) == ("fcfs", 64, 4096)
    assert cfg.kv.capacity_bytes > 0
    assert with_scheduler(cfg, "static").scheduler == "static"
    res = offline(cfg, random_requests(2, 20, max_prompt=1000, max_output=100))
    assert res.completed.all()


# -- invariants -------------------------------------------------------------------------------
def mean_latency(res: RunResult) -> float:
    return float(np.mean(res.e2e_s))


workloads = st.builds(
    random_requests,
    seed=st.integers(0, 10_000),
    n=st.integers(2, 14),
    max_prompt=st.integers(10, 500),
    max_output=st.integers(1, 60),
    cached_fraction=st.sampled_from([0.0, 0.3]),
)


@settings(max_examples=100, deadline=None)
@given(
    requests=workloads,
    policy=st.sampled_from(CONTINUOUS),
    slack_tokens=st.floats(0, 300),
    max_num_seqs=st.integers(1, 9),
    max_tokens=st.integers(16, 600),
)
def test_an_ample_kv_cache_never_raises_offline_mean_latency(
    requests: Requests, policy: str, slack_tokens: float, max_num_seqs: int, max_tokens: int
) -> None:
    """More KV capacity never raises mean latency -- narrowed to where it is true:

    - steps whose time does not depend on the batch (memory-bound). When a step costs more per
      sequence, a bigger batch slows every member: with no per-step overhead, serving two
      requests together takes longer on average than one after the other.
    - a cache that holds every request whole, against any cache that holds the largest one.
      Between two tight caches, greedy admission and preemption by recompute (and chunked
      prefill sharing the token budget) make small anomalies: a little more room admits a
      prompt that later gets preempted or delays another.
    - continuous batching. Static batching runs a batch to its longest member, so a larger
      cache can put a long request into an early batch and delay everything after it.
    """
    constant = ConstantStep(0.01)
    largest = float((requests.prompt_tokens + requests.output_tokens).max()) + 16
    tight = ReplicaConfig(constant, kv_for_tokens(largest + slack_tokens), policy, max_num_seqs, max_tokens)
    everything = float((requests.prompt_tokens + requests.output_tokens + 16).sum())
    ample = replace(tight, kv=kv_for_tokens(everything))
    a, b = offline(tight, requests), offline(ample, requests)
    assert a.completed.all() and b.completed.all()
    assert b.preemptions.sum() == 0
    assert mean_latency(b) <= mean_latency(a) * (1 + 1e-12)


@settings(max_examples=100, deadline=None)
@given(
    requests=workloads,
    policy=st.sampled_from(sorted(SCHEDULERS)),
    kv_tokens=st.floats(600, 3000),
    speedups=st.tuples(*[st.floats(0.1, 1.0)] * 3),
)
def test_faster_steps_never_delay_any_request_offline(
    requests: Requests, policy: str, kv_tokens: float, speedups: tuple[float, float, float]
) -> None:
    """Offline, what the scheduler does never depends on the clock, only on the state, so a
    model that is faster for every batch makes every event happen no later: every request's
    first token and finish, and so the mean latency. Uniformly faster scales every time."""
    slow = LinearStep()
    fast = LinearStep(
        slow.base_s * speedups[0], slow.per_token_s * speedups[1], slow.per_context_s * speedups[2]
    )
    cfg = ReplicaConfig(slow, kv_for_tokens(max(kv_tokens, 600.0)), policy, 8, 256)
    a, b = offline(cfg, requests), offline(replace(cfg, step_model=fast), requests)
    assert (a.rejected == b.rejected).all()
    done = a.completed
    assert (b.first_token_s[done] <= a.first_token_s[done] * (1 + 1e-12)).all()
    assert (b.finish_s[done] <= a.finish_s[done] * (1 + 1e-12)).all()
    assert mean_latency(b) <= mean_latency(a) * (1 + 1e-12)
    uniform = LinearStep(
        slow.base_s * speedups[0], slow.per_token_s * speedups[0], slow.per_context_s * speedups[0]
    )
    c = offline(replace(cfg, step_model=uniform), requests)
    np.testing.assert_allclose(c.finish_s[done], a.finish_s[done] * speedups[0], rtol=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(20, 40),
    policy=st.sampled_from(CONTINUOUS),
    constant=st.booleans(),
    max_num_seqs=st.integers(1, 8),
    overload=st.floats(3.0, 6.0),
    more=st.floats(1.0, 4.0),
)
def test_a_higher_rate_never_lowers_p99_ttft_at_saturation(
    seed: int,
    n: int,
    policy: str,
    constant: bool,
    max_num_seqs: int,
    overload: float,
    more: float,
) -> None:
    """With the same requests and the same unit-rate arrivals scaled to a higher rate, p99 TTFT
    does not fall -- narrowed to where it is true:

    - saturation: at least 3x the offline request rate, so the queue grows and waiting
      dominates TTFT. Below that the phase of arrivals against step boundaries decides a
      step more or less of waiting either way.
    - continuous batching. Under static batching who is in the last batch depends on who
      happened to be waiting when the replica emptied, at any rate.
    """
    requests = random_requests(seed, n, max_prompt=300, max_output=40)
    model = ConstantStep(0.01) if constant else LinearStep()
    cfg = ReplicaConfig(model, kv_for_tokens(2000), policy, max_num_seqs, 256)
    unit = unit_poisson(np.random.default_rng(seed), n)
    rate = offline_rate_hint(cfg, requests) * overload
    busy = simulate(cfg, requests.with_arrivals(unit / rate))
    busier = simulate(cfg, requests.with_arrivals(unit / (rate * more)))
    assert busier.percentile("ttft_s", 99) >= busy.percentile("ttft_s", 99) * (1 - 1e-12)
    assert math.isfinite(busier.percentile("ttft_s", 99))


def test_capacity_keeps_the_throughput_latency_points_it_tried() -> None:
    from .conftest import ConstantStep, kv_for_tokens, make_requests

    cfg = ReplicaConfig(ConstantStep(0.015625), kv_for_tokens(10**7), max_num_seqs=8)
    reqs = make_requests([100] * 400, [20] * 400)
    unit = np.cumsum(np.random.default_rng(0).exponential(1.0, 400))
    cap = capacity(cfg, reqs, unit, Slo(1.0, 0.05), rel_tol=0.05)
    rates = [p[0] for p in cap.frontier]
    assert rates == sorted(rates) and len(rates) == len(cap.evaluations)
    assert all(tok == pytest.approx(rate * 20) for rate, tok, _, _ in cap.frontier)
    assert cap.rate_per_s in rates


# -- sessions -----------------------------------------------------------------------------------
def test_sessions_issue_each_turn_a_gap_after_the_turn_before(constant_step: ConstantStep) -> None:
    cfg = ReplicaConfig(constant_step, kv_for_tokens(5000))
    # Two sessions: rows 0, 1, 2 (gaps 1 s and 0 s) and row 3 alone, starting at 0.5 s.
    reqs = make_requests([10, 30, 40, 20], [3, 4, 1, 2], arrival_s=[0.0, 0.0, 0.0, 0.5])
    res = sessions(cfg, reqs, np.array([-1, 0, 1, -1]), np.array([0.0, 1.0, 0.0, 0.0]))
    assert res.completed.all()
    assert res.arrival_s[3] == 0.5
    assert res.arrival_s[1] == res.finish_s[0] + 1.0
    assert res.arrival_s[2] == res.finish_s[1]


def test_sessions_of_one_turn_each_are_the_open_loop_run(
    config: ReplicaConfig, small_requests: Requests
) -> None:
    n = len(small_requests)
    res = sessions(config, small_requests, np.full(n, -1), np.zeros(n), backend="python")
    ref = simulate(config, small_requests, backend="python")
    np.testing.assert_array_equal(res.finish_s, ref.finish_s)
    np.testing.assert_array_equal(res.first_token_s, ref.first_token_s)


def test_sessions_refuse_a_parent_after_its_child(config: ReplicaConfig) -> None:
    with pytest.raises(InputError, match="parent"):
        sessions(config, make_requests([1, 1], [1, 1]), np.array([1, -1]), np.zeros(2))
    with pytest.raises(InputError, match="gap_s"):
        sessions(config, make_requests([1, 1], [1, 1]), np.array([-1, 0]), np.array([0.0, -1.0]))
