"""Closed-form checks: where queueing theory or arithmetic knows the answer, the simulator gives
it. One request on constant steps has TTFT and TPOT exactly; a replica serving one request at a
time with fixed lengths is an M/D/1 queue, whose mean wait is rho / (2 mu (1 - rho))."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from megawatt.perf import BatchShape
from megawatt.perf.roofline import N_FEATURES, StepCoefficients
from megawatt.serving import SCHEDULERS, ReplicaConfig, simulate, single_user
from megawatt.workload import Requests

from .conftest import ConstantStep, kv_for_tokens, make_requests


@dataclass(frozen=True)
class CompiledConstantStep(ConstantStep):
    """`ConstantStep` with coefficients, so the compiled engine runs it too: no operators, no
    communication, every step its overhead alone."""

    def step_time(self, batch: BatchShape) -> float:
        return self.dt_s

    def coefficients(self) -> StepCoefficients:
        none = np.zeros((0, N_FEATURES))
        return StepCoefficients(
            flops=none,
            bytes=none,
            rate_flops_per_s=np.zeros(0),
            bandwidth_bytes_per_s=np.zeros(0),
            comm_s=np.zeros(N_FEATURES),
            latency_s=0.0,
            step_overhead_s=self.dt_s,
            seq_overhead_s=0.0,
            pipeline_depth=1,
            window_tokens=None,
            n_experts=0,
            top_k=0,
        )


DT = 0.125


@pytest.mark.parametrize("engine", ["python", "fast"])
@pytest.mark.parametrize("policy", sorted(SCHEDULERS))
@pytest.mark.parametrize(("prompt", "output"), [(1, 1), (100, 2), (1000, 17), (5000, 300)])
def test_one_request_on_constant_steps_has_the_analytic_ttft_and_tpot(
    engine: str, policy: str, prompt: int, output: int
) -> None:
    """TTFT is the prefill's steps (ceil(prompt / budget) with chunked prefill, one without)
    times the step; TPOT is one step; the end is the arrival plus (prefill steps + output - 1)
    steps. Exactly: 1/8 s steps are exact in binary."""
    budget = 512
    cfg = ReplicaConfig(
        CompiledConstantStep(DT), kv_for_tokens(10_000), policy, max_num_batched_tokens=budget
    )
    res = simulate(cfg, make_requests([prompt], [output], arrival_s=[3.0]), backend=engine)
    steps = math.ceil(prompt / budget) if SCHEDULERS[policy].chunked_prefill else 1
    assert res.ttft_s[0] == steps * DT
    assert res.tpot_s[0] == (DT if output > 1 else 0.0)
    assert res.finish_s[0] == 3.0 + (steps + output - 1) * DT
    assert res.stats.n_steps == steps + output - 1
    if output > 1:
        assert res.itl_percentile(50) == res.itl_percentile(99) == DT


def test_a_single_user_sees_the_analytic_figures_request_after_request() -> None:
    cfg = ReplicaConfig(ConstantStep(DT), kv_for_tokens(10_000))
    res = single_user(cfg, make_requests([64] * 5, [9] * 5))
    assert (res.ttft_s == DT).all() and (res.tpot_s == DT).all()
    assert res.finish_s.tolist() == [9 * DT * (k + 1) for k in range(5)]


def md1_workload(n: int, rho: float, service_s: float, output: int, seed: int) -> Requests:
    """`n` requests of fixed lengths, Poisson arrivals at `rho / service_s` per second."""
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(service_s / rho, n))
    return Requests(
        arrival_s=arrival,
        prompt_tokens=np.full(n, 16, dtype=np.int64),
        output_tokens=np.full(n, output, dtype=np.int64),
        cached_tokens=np.zeros(n, dtype=np.int64),
        class_id=np.zeros(n, dtype=np.int64),
        class_names=("chat",),
    )


def test_one_sequence_at_a_time_is_an_md1_queue() -> None:
    """max_num_seqs = 1, a 16-token prompt (one step) and 8 output tokens on 1/8 s steps: each
    request holds the replica for exactly 8 steps = 1 s, and the next starts the instant it
    ends. At rho = 0.5 the M/D/1 mean wait is rho / (2 mu (1 - rho)) = 0.5 s. A million
    Poisson arrivals put the sample mean within about 0.3% (one standard error) of it."""
    output, rho = 8, 0.5
    service_s = output * DT
    cfg = ReplicaConfig(CompiledConstantStep(DT), kv_for_tokens(1000), max_num_seqs=1)
    requests = md1_workload(1_000_000, rho, service_s, output, seed=1)
    res = simulate(cfg, requests, backend="fast")
    assert res.completed.all()
    # Deterministic service (to the rounding of clocks that reach 2e6 s).
    np.testing.assert_allclose(res.finish_s - res.first_token_s, service_s - DT, rtol=0, atol=1e-6)
    wait = res.ttft_s - DT
    analytic = rho * service_s / (2.0 * (1.0 - rho))
    assert wait.mean() == pytest.approx(analytic, rel=0.02)
    assert (wait < 1e-6).mean() == pytest.approx(1.0 - rho, abs=0.01)  # P(no wait) = 1 - rho
    # The Python replica tells the same story (FCFS: the first requests' waits do not depend
    # on the later ones).
    head = requests.subset(np.arange(5_000))
    python = simulate(cfg, head, backend="python")
    np.testing.assert_array_equal(python.ttft_s, res.ttft_s[:5_000])
