"""Pool simulation: every request is served by exactly one replica, sampled mode agrees with
exact mode within its confidence interval, and the same seed gives the same run."""

from __future__ import annotations

import numpy as np
import pytest

from megawatt.errors import InputError
from megawatt.fleet.sim import simulate_pool
from megawatt.hardware import load_catalog
from megawatt.model import load_model
from megawatt.perf import Deployment
from megawatt.serving import ReplicaConfig
from megawatt.workload import Lognormal, Mix, Poisson, RequestClass


@pytest.fixture(scope="module")
def config() -> ReplicaConfig:
    cat = load_catalog()
    system = cat.system("hgx-h200")
    dep = Deployment(
        model=load_model("llama-3.1-8b"),
        system=system,
        device=cat.device(system.device_id),
        tp=1,
        weight_dtype="fp8",
    )
    return ReplicaConfig.of(dep)


MIX = Mix(
    (RequestClass("chat", 1.0, Lognormal(800, 0.6, max_tokens=4000), Lognormal(150, 0.6, max_tokens=1000)),)
)


@pytest.mark.parametrize("router", ["random", "round_robin", "least_outstanding"])
def test_every_request_is_served_by_exactly_one_replica(config: ReplicaConfig, router: str) -> None:
    run = simulate_pool("p", config, 6, MIX, Poisson(6 * 4.0), 30.0, mode="exact", router=router)
    counts = sum(m.astype(int) for m in run.served) if router == "least_outstanding" else None
    if counts is not None:
        assert np.all(counts == 1)
    assert run.n_requests == sum(len(r.arrival_s[m]) for r, m in zip(run.replicas, run.served, strict=True))
    for res, mask in zip(run.replicas, run.served, strict=True):
        assert np.all(res.completed[mask] | res.rejected[mask])


def test_sampled_mode_agrees_with_exact_within_its_interval(config: ReplicaConfig) -> None:
    exact = simulate_pool("p", config, 40, MIX, Poisson(40 * 5.0), 120.0, mode="exact", seed=(3,))
    sampled = simulate_pool("p", config, 40, MIX, Poisson(40 * 5.0), 120.0, mode="sampled", k=10, seed=(4,))
    lo, hi = sampled.interval("throughput")
    assert lo <= exact.output_tokens_per_s <= hi
    lo, hi = sampled.interval("ttft_s", 50)
    assert lo * 0.97 <= exact.percentile("ttft_s", 50) <= hi * 1.03
    assert sampled.output_tokens_per_s == pytest.approx(exact.output_tokens_per_s, rel=0.05)


def test_the_same_seed_gives_the_same_pool_run(config: ReplicaConfig) -> None:
    a = simulate_pool("p", config, 20, MIX, Poisson(40.0), 20.0, k=4, seed=(9,))
    b = simulate_pool("p", config, 20, MIX, Poisson(40.0), 20.0, k=4, seed=(9,))
    assert all(x.table().equals(y.table()) for x, y in zip(a.replicas, b.replicas, strict=True))


def test_bad_modes_and_sizes_are_errors(config: ReplicaConfig) -> None:
    with pytest.raises(InputError, match="mode"):
        simulate_pool("p", config, 4, MIX, Poisson(1.0), 10.0, mode="approximate")
    with pytest.raises(InputError, match="n_replicas"):
        simulate_pool("p", config, 0, MIX, Poisson(1.0), 10.0)
