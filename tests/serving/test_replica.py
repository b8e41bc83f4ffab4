"""One replica: its KV budget, its admission, and decode stretches (many decode steps in one
event) that must agree with simulating the same steps one at a time."""

from __future__ import annotations

import math
from collections.abc import Callable
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
    KvBudget,
    Replica,
    ReplicaConfig,
    RunResult,
    concurrency,
    offline,
    simulate,
)
from megawatt.sim import Environment
from megawatt.workload import Requests

from .conftest import (
    ConstantStep,
    LinearStep,
    assert_same_timeline,
    kv_for_tokens,
    make_requests,
    random_requests,
)

Driver = Callable[[ReplicaConfig, Requests], RunResult]


# -- the KV budget ----------------------------------------------------------------------------
def test_a_sequence_holds_its_tokens_plus_half_a_block() -> None:
    kv = KvBudget(capacity_bytes=1e6, bytes_per_token=100.0, block_tokens=16)
    assert kv.sequence_bytes(0) == 0.0
    assert kv.sequence_bytes(10) == 100.0 * (10 + 8)


def test_windowed_layers_hold_at_most_a_window() -> None:
    kv = KvBudget(1e6, 100.0, bytes_per_token_windowed=50.0, window_tokens=64, block_tokens=16)
    assert kv.sequence_bytes(10) == 100.0 * 18 + 50.0 * 10
    assert kv.sequence_bytes(1000) == 100.0 * 1008 + 50.0 * 64


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"capacity_bytes": 0.0, "bytes_per_token": 1.0}, "KV capacity must be > 0 bytes; got 0.0"),
        ({"capacity_bytes": 1.0, "bytes_per_token": -1.0}, "bytes per token must be >= 0"),
    ],
)
def test_a_broken_budget_is_refused(fields: dict[str, float], message: str) -> None:
    with pytest.raises(InputError, match=message):
        KvBudget(**fields)


def test_a_replica_needs_room_for_a_sequence_and_a_token(
    linear_step: LinearStep, tiny_kv: KvBudget, small_requests: Requests
) -> None:
    with pytest.raises(InputError, match="must be >= 1; got 0 and 8192"):
        Replica(Environment(), linear_step, tiny_kv, small_requests, max_num_seqs=0)


# -- one request, told step by step -----------------------------------------------------------
def test_a_lone_request_prefills_in_one_step_then_decodes_a_token_a_step(
    constant_step: ConstantStep,
) -> None:
    cfg = ReplicaConfig(constant_step, kv_for_tokens(1000))
    res = simulate(cfg, make_requests([100], [5], arrival_s=[1.0]))
    assert res.first_token_s[0] == 1.25
    assert res.finish_s[0] == 1.25 + 4 * 0.25
    assert res.stats.n_steps == 5
    assert res.stats.prefill_tokens == 100 and res.stats.decode_tokens == 4


def test_a_long_prompt_is_chunked_under_vllm_and_whole_under_fcfs(
    constant_step: ConstantStep,
) -> None:
    requests = make_requests([1000], [2])
    for policy, prefill_steps in (("vllm", 4), ("fcfs", 1), ("static", 1)):
        cfg = ReplicaConfig(constant_step, kv_for_tokens(5000), policy, max_num_batched_tokens=256)
        assert offline(cfg, requests).first_token_s[0] == prefill_steps * 0.25


def test_on_finish_hears_of_every_completion_and_rejection(
    linear_step: LinearStep, small_requests: Requests
) -> None:
    heard: list[int] = []
    env = Environment()
    rep = Replica(env, linear_step, kv_for_tokens(250), small_requests, on_finish=heard.append)
    for i in range(len(small_requests)):
        env.schedule_at(float(small_requests.arrival_s[i]), rep.submit, i, priority=-1)
    env.run()
    assert sorted(heard) == list(range(len(small_requests)))
    assert rep.outstanding == 0


def test_outstanding_counts_waiting_and_running(constant_step: ConstantStep) -> None:
    env = Environment()
    rep = Replica(env, constant_step, kv_for_tokens(1000), make_requests([10] * 3, [4] * 3), max_num_seqs=1)
    for i in range(3):
        rep.submit(i)
    assert rep.outstanding == 3
    assert len(rep.waiting) == 3  # the step starts once every arrival of the instant is in
    env.step()
    assert rep.outstanding == 3
    assert len(rep.running) == 1 and len(rep.waiting) == 2
    env.run()
    assert rep.outstanding == 0


# -- decode stretches agree with step-by-step simulation --------------------------------------
def stepwise(driver: Driver, cfg: ReplicaConfig, requests: Requests) -> RunResult:
    """The same run with stretching disabled: every decode step is its own event."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Replica, "_can_stretch", lambda self: False)
        return driver(cfg, requests)


def assert_same_run(stretched: RunResult, steps: RunResult, rtol: float = 1e-9) -> None:
    assert stretched.stats.n_stretches > 0, "nothing was stretched: the test tests nothing"
    assert steps.stats.n_stretches == 0
    np.testing.assert_allclose(stretched.first_token_s, steps.first_token_s, rtol=rtol)
    np.testing.assert_allclose(stretched.finish_s, steps.finish_s, rtol=rtol)
    assert (stretched.preemptions == steps.preemptions).all()
    assert (stretched.rejected == steps.rejected).all()
    a, b = stretched.stats, steps.stats
    assert (a.n_steps, a.prefill_tokens, a.decode_tokens) == (b.n_steps, b.prefill_tokens, b.decode_tokens)
    assert a.peak_kv_bytes == b.peak_kv_bytes
    for name in ("busy_s", "seq_seconds", "kv_byte_seconds"):
        assert math.isclose(getattr(a, name), getattr(b, name), rel_tol=rtol), name
    np.testing.assert_allclose(np.sort(stretched.itl_s), np.sort(steps.itl_s), rtol=rtol)
    assert stretched.itl_n.sum() == steps.itl_n.sum()
    assert_same_timeline(stretched, steps, rtol)


WINDOWED = ReplicaConfig(
    LinearStep(per_window_s=2e-6, window_tokens=128),
    kv_for_tokens(3000, bytes_per_token_windowed=700.0, window_tokens=128),
    max_num_seqs=8,
    max_num_batched_tokens=256,
)


@pytest.mark.parametrize("policy", sorted(SCHEDULERS))
@pytest.mark.parametrize(
    "cfg",
    [
        pytest.param(replace(WINDOWED, step_model=LinearStep(), kv=kv_for_tokens(3000)), id="linear"),
        pytest.param(replace(WINDOWED, step_model=LinearStep(), kv=kv_for_tokens(700)), id="tight-kv"),
        pytest.param(WINDOWED, id="windowed"),
    ],
)
def test_stretches_agree_with_step_by_step_open_loop(policy: str, cfg: ReplicaConfig) -> None:
    cfg = replace(cfg, scheduler=policy)
    requests = random_requests(3, 50, rate_per_s=10, max_output=150)
    assert_same_run(simulate(cfg, requests), stepwise(simulate, cfg, requests))


@pytest.mark.parametrize("policy", sorted(SCHEDULERS))
def test_stretches_agree_with_step_by_step_closed_loop(policy: str, config: ReplicaConfig) -> None:
    cfg = replace(config, scheduler=policy)
    requests = random_requests(4, 30, max_output=120)

    def closed(c: ReplicaConfig, r: Requests) -> RunResult:
        return concurrency(c, r, 3)

    assert_same_run(closed(cfg, requests), stepwise(closed, cfg, requests))


@pytest.mark.parametrize("policy", sorted(SCHEDULERS))
def test_an_arrival_on_a_step_boundary_joins_at_that_boundary(
    policy: str, constant_step: ConstantStep
) -> None:
    """Steps of 0.25 s are exact in binary, so an arrival at t = 1.0 ties with the end of the
    fourth decode step: arrivals run first, so it joins the batch right then, stretched or not
    (a stretch once let it wait a step more)."""
    cfg = ReplicaConfig(constant_step, kv_for_tokens(5000), policy)
    requests = make_requests([8, 8, 8], [40, 10, 10], arrival_s=[0.0, 1.0, 1.1])
    stretched, steps = simulate(cfg, requests), stepwise(simulate, cfg, requests)
    assert stretched.first_token_s.tolist() == steps.first_token_s.tolist()
    assert stretched.finish_s.tolist() == steps.finish_s.tolist()
    if SCHEDULERS[policy].admit_while_running:
        # Joins at 1.0, prefills in [1.0, 1.25); the next arrival waits for the step at 1.25.
        assert stretched.first_token_s.tolist() == [0.25, 1.25, 1.5]
    else:
        assert stretched.first_token_s[1] == stretched.finish_s[0] + 0.25


def test_stretches_end_exactly_where_step_by_step_steps_end() -> None:
    """0.1 s steps are not exact in binary: the end of each stretched step is summed one step
    at a time, as step-by-step simulation sums it, so arrivals placed exactly on the
    step-by-step boundaries still tie."""
    cfg = ReplicaConfig(ConstantStep(0.1), kv_for_tokens(10_000))
    boundaries = np.cumsum(np.full(40, 0.1))  # where a lone request's steps end
    for j in range(3, 38, 5):
        for lag in (1, 2, 3):
            requests = make_requests(
                [5, 5, 5],
                [100, 20, 20],
                arrival_s=[0.0, boundaries[j - lag] + 0.05, boundaries[j]],
            )
            stretched, steps = simulate(cfg, requests), stepwise(simulate, cfg, requests)
            assert stretched.first_token_s.tolist() == steps.first_token_s.tolist()
            assert stretched.finish_s.tolist() == steps.finish_s.tolist()


@settings(max_examples=150, deadline=None)
@given(
    policy=st.sampled_from(sorted(SCHEDULERS)),
    seed=st.integers(0, 10_000),
    n=st.integers(1, 20),
    kv_tokens=st.floats(400, 4000),
    max_num_seqs=st.integers(1, 8),
    max_tokens=st.integers(16, 512),
    rate=st.floats(0.5, 50.0),
    windowed=st.booleans(),
    grid=st.booleans(),
)
def test_stretches_agree_with_step_by_step_for_any_small_workload(
    policy: str,
    seed: int,
    n: int,
    kv_tokens: float,
    max_num_seqs: int,
    max_tokens: int,
    rate: float,
    windowed: bool,
    grid: bool,
) -> None:
    requests = random_requests(seed, n, rate_per_s=rate, max_output=80, cached_fraction=0.3)
    if grid:  # constant 1/8 s steps and arrivals on that grid: every arrival is a tie
        model: ConstantStep | LinearStep = ConstantStep(0.125)
        requests = requests.with_arrivals(np.round(requests.arrival_s * 8) / 8)
    elif windowed:
        model = LinearStep(per_window_s=2e-6, window_tokens=64)
    else:
        model = LinearStep()
    kv = kv_for_tokens(
        kv_tokens,
        bytes_per_token_windowed=500.0 if windowed else 0.0,
        window_tokens=64 if windowed else None,
    )
    cfg = ReplicaConfig(model, kv, policy, max_num_seqs, max_tokens)
    stretched, steps = simulate(cfg, requests), stepwise(simulate, cfg, requests)
    np.testing.assert_allclose(stretched.first_token_s, steps.first_token_s, rtol=1e-9)
    np.testing.assert_allclose(stretched.finish_s, steps.finish_s, rtol=1e-9)
    assert stretched.stats.n_steps == steps.stats.n_steps
    assert math.isclose(stretched.stats.kv_byte_seconds, steps.stats.kv_byte_seconds, rel_tol=1e-9)
    assert_same_timeline(stretched, steps)


@pytest.mark.parametrize("model_id", ["llama-3.1-8b", "gpt-oss-20b"])
def test_stretches_agree_with_step_by_step_on_the_roofline_model(model_id: str) -> None:
    """The real step model behind the seam: its vectorised `decode_times` must agree with its
    `step_time` (gpt-oss has sliding-window layers)."""
    catalog = load_catalog()
    system = catalog.system("hgx-h200")
    deployment = Deployment(
        load_model(model_id),
        system,
        catalog.device(system.device_id),
        max_num_seqs=16,
        max_num_batched_tokens=2048,
    )
    cfg = ReplicaConfig.of(deployment)
    requests = random_requests(5, 40, rate_per_s=30, max_prompt=3000, max_output=300)

    def python(c: ReplicaConfig, r: Requests) -> RunResult:
        return simulate(c, r, backend="python")  # auto would take the compiled engine

    assert_same_run(python(cfg, requests), stepwise(python, cfg, requests))
