"""Pool simulation: every request is served by exactly one replica, sampled mode agrees with
exact mode within its confidence interval, exact mode's streamed tally gives the per-request
percentiles within the histograms' stated error in bounded memory, and the same seed gives the
same run."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from megawatt.errors import InputError
from megawatt.fleet.histogram import RELATIVE_ERROR
from megawatt.fleet.pools import (
    BATCH_REQUESTS,
    METRICS,
    PoolRun,
    PoolTally,
    batch_size,
    pooled_percentile,
    replica_batches,
    simulate_pool,
)
from megawatt.fleet.routing import replica_router as router_named
from megawatt.hardware import load_catalog
from megawatt.model import load_model
from megawatt.perf import Deployment
from megawatt.serving import ReplicaConfig, simulate
from megawatt.workload import Diurnal, Lognormal, Mix, Poisson, RequestClass, Requests


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


@pytest.mark.parametrize("replica_router", ["random", "round_robin", "least_outstanding"])
def test_every_request_is_served_by_exactly_one_replica(config: ReplicaConfig, replica_router: str) -> None:
    run = simulate_pool("p", config, 6, MIX, Poisson(6 * 4.0), 30.0, k=6, replica_router=replica_router)
    assert isinstance(run, PoolRun) and run.n_simulated == 6
    counts = sum(m.astype(int) for m in run.served) if replica_router == "least_outstanding" else None
    if counts is not None:
        assert np.all(counts == 1)
    assert run.n_requests == sum(len(r.arrival_s[m]) for r, m in zip(run.replicas, run.served, strict=True))
    for res, mask in zip(run.replicas, run.served, strict=True):
        assert np.all(res.completed[mask] | res.rejected[mask])
    tally = simulate_pool(
        "p", config, 6, MIX, Poisson(6 * 4.0), 30.0, mode="exact", replica_router=replica_router
    )
    assert isinstance(tally, PoolTally) and tally.n_simulated == 6
    assert tally.n_requests == tally.n_completed + tally.n_rejected > 0
    assert tally.histograms.n("e2e_s") == tally.n_requests - tally.n_rejected


def _per_request(
    config: ReplicaConfig,
    n_replicas: int,
    rate: float,
    duration_s: float,
    replica_router: str,
    seed: tuple[int, ...],
) -> dict[str, np.ndarray]:
    """Exact mode's requests, replica by replica, simulated step by step and kept whole."""
    out: dict[str, list[np.ndarray]] = {m: [] for m in (*METRICS, "tokens")}
    batches = replica_batches(MIX, Poisson(rate), n_replicas, duration_s, router_named(replica_router), seed)
    for arrival, offsets, reqs in batches:
        for a, e in itertools.pairwise(offsets):
            rows = np.arange(a, e)
            res = simulate(config, Requests(arrival[rows], reqs.prompt_tokens[rows], reqs.output_tokens[rows],
                                            reqs.cached_tokens[rows], reqs.class_id[rows], reqs.class_names))
            for m in METRICS:
                out[m].append(getattr(res, m)[~res.rejected])
            out["tokens"].append(res.output_tokens[res.completed])
    return {k: np.concatenate(v) for k, v in out.items()}


@pytest.mark.parametrize("replica_router", ["random", "round_robin"])
def test_exact_mode_tallies_the_per_request_percentiles_within_the_stated_error(
    config: ReplicaConfig, replica_router: str
) -> None:
    """The same requests kept whole and run step by step, against the streamed tally (decode
    stretches in closed form, latencies in histograms)."""
    tally = simulate_pool(
        "p", config, 30, MIX, Poisson(30 * 3.0), 60.0, mode="exact", replica_router=replica_router, seed=(5,)
    )
    whole = _per_request(config, 30, 30 * 3.0, 60.0, replica_router, (5,))
    assert tally.n_requests - tally.n_rejected == whole["ttft_s"].size > 4000
    assert tally.output_tokens == whole["tokens"].sum()
    for metric in METRICS:
        for q in (0, 10, 50, 90, 99, 99.9, 100):
            exact = float(np.percentile(whole[metric], q, method="inverted_cdf"))
            assert tally.percentile(metric, q) == pytest.approx(exact, rel=RELATIVE_ERROR * (1 + 1e-6))
    assert pooled_percentile([tally], "ttft_s", 99) == tally.percentile("ttft_s", 99)


def test_exact_mode_is_deterministic_and_its_memory_does_not_grow_with_the_traffic(
    config: ReplicaConfig,
) -> None:
    def run(duration_s: float) -> PoolTally:
        out = simulate_pool("p", config, 20, MIX, Poisson(40.0), duration_s, mode="exact", seed=(9,))
        assert isinstance(out, PoolTally)
        return out

    a, b, long = run(20.0), run(20.0), run(200.0)
    for metric in METRICS:
        np.testing.assert_array_equal(a.histograms.counts[metric], b.histograms.counts[metric])
    assert (a.n_requests, a.output_tokens) == (b.n_requests, b.output_tokens)
    assert a.busy_fraction == b.busy_fraction
    assert long.n_requests > 8 * a.n_requests
    size = sum(c.nbytes for c in a.histograms.counts.values())
    assert size == sum(c.nbytes for c in long.histograms.counts.values())


def test_exact_mode_draws_a_bounded_batch_of_requests_at_a_time() -> None:
    assert batch_size(1_000_000, Poisson(1_000.0), 3600.0) * 1_000.0 / 1e6 * 3600.0 <= BATCH_REQUESTS
    assert batch_size(4, Poisson(1e6), 3600.0) == 1  # one replica at a time, however busy
    assert batch_size(10, Poisson(1.0), 1.0) == 10


def test_exact_mode_reports_its_progress_in_requests(config: ReplicaConfig) -> None:
    seen: list[int] = []
    run = simulate_pool("p", config, 8, MIX, Poisson(16.0), 20.0, mode="exact", progress=seen.append)
    assert seen and sum(seen) == run.n_requests


def test_round_robin_in_exact_mode_needs_poisson_or_gamma_arrivals(config: ReplicaConfig) -> None:
    with pytest.raises(InputError, match="round_robin"):
        simulate_pool("p", config, 4, MIX, Diurnal(4.0), 10.0, mode="exact", replica_router="round_robin")


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
