"""Routers in detail: the pool routers' splits worked out by hand (capacity shares, the fast pool
first for latency-sensitive classes, the cheapest pool first), their invariants for any pools and
classes (rows sum to one, no pool over its share of the capacity while others have room), and the
replica routers' streams (a random split scales the rate; round robin sums N gaps)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megawatt.errors import InputError
from megawatt.fleet.routing import (
    POOL_ROUTERS,
    ClassAware,
    CostAware,
    LeastOutstanding,
    PoolTarget,
    Proportional,
    RandomReplica,
    RoundRobin,
    pool_router,
    scaled,
)
from megawatt.workload import Diurnal, Gamma, Poisson

FAST = PoolTarget("fast", 100.0, usd_per_request=3e-4, tpot_s=0.002)
CHEAP = PoolTarget("cheap", 300.0, usd_per_request=1e-4, tpot_s=0.030)


# -- pool routers by hand ------------------------------------------------------------------------
def test_proportional_gives_every_class_the_capacity_shares() -> None:
    m = Proportional().shares(["a", "b"], [0.5, 0.5], [FAST, CHEAP])
    np.testing.assert_allclose(m, [[0.25, 0.75], [0.25, 0.75]])


def test_class_aware_fills_the_fast_pool_with_fast_classes_and_the_slow_pool_with_the_rest() -> None:
    """Room: fast 0.25, cheap 0.75 of the traffic. chat (0.6) takes fast's 0.25 and 0.35 of cheap;
    reasoning (0.3) prefers the slow pool and takes 0.3 of it; coding (0.1) finds fast full and
    takes the last 0.1 of cheap."""
    m = ClassAware().shares(["chat", "reasoning", "coding"], [0.6, 0.3, 0.1], [FAST, CHEAP])
    np.testing.assert_allclose(m[0], [0.25 / 0.6, 0.35 / 0.6])
    np.testing.assert_allclose(m[1], [0.0, 1.0])
    np.testing.assert_allclose(m[2], [0.0, 1.0])


def test_class_aware_sends_a_slow_class_to_the_fast_pool_only_when_the_slow_one_is_full() -> None:
    """A batch class of 0.9 of the traffic prefers the slow pool (room 0.75) and spills 0.15
    onto the fast one."""
    m = ClassAware().shares(["batch", "chat"], [0.9, 0.1], [FAST, CHEAP])
    np.testing.assert_allclose(m[0], [0.15 / 0.9, 0.75 / 0.9])
    np.testing.assert_allclose(m[1], [1.0, 0.0])


def test_the_fast_classes_are_a_setting_of_the_class_aware_router() -> None:
    m = ClassAware(fast_classes=("batch",)).shares(["batch", "chat"], [0.2, 0.8], [FAST, CHEAP])
    np.testing.assert_allclose(m[0], [1.0, 0.0])  # batch now goes to the fast pool first
    np.testing.assert_allclose(m[1], [0.05 / 0.8, 0.75 / 0.8])


def test_cost_aware_fills_the_cheapest_pool_then_the_next() -> None:
    """cheap has room 0.75: the first class (0.6) fits, the second (0.3) takes 0.15 there and
    0.15 of the dearer pool, the third (0.1) only the dearer one."""
    m = CostAware().shares(["a", "b", "c"], [0.6, 0.3, 0.1], [FAST, CHEAP])
    np.testing.assert_allclose(m[0], [0.0, 1.0])
    np.testing.assert_allclose(m[1], [0.5, 0.5])
    np.testing.assert_allclose(m[2], [1.0, 0.0])


def test_the_order_of_the_pools_does_not_change_where_traffic_goes() -> None:
    for name in ("proportional", "class_aware", "cost_aware"):
        router = pool_router(name)
        a = router.shares(["chat", "batch"], [0.7, 0.3], [FAST, CHEAP])
        b = router.shares(["chat", "batch"], [0.7, 0.3], [CHEAP, FAST])
        np.testing.assert_allclose(a, b[:, ::-1], err_msg=name)


def test_a_class_with_no_traffic_is_split_by_capacity() -> None:
    """Nothing to place: its row falls back to the capacity shares, so it still sums to one."""
    m = CostAware().shares(["a", "none"], [1.0, 0.0], [FAST, CHEAP])
    np.testing.assert_allclose(m[1], [0.25, 0.75])


@pytest.mark.parametrize("name", ["proportional", "class_aware", "cost_aware"])
def test_pools_without_any_capacity_are_an_error(name: str) -> None:
    dead = [PoolTarget("a", 0.0), PoolTarget("b", 0.0)]
    with pytest.raises(InputError, match="no pool has capacity: every pool failed its SLO"):
        pool_router(name).shares(["chat"], [1.0], dead)


def test_a_pool_without_capacity_gets_no_traffic_while_others_have_room() -> None:
    pools = [PoolTarget("dead", 0.0, usd_per_request=0.0, tpot_s=0.0), CHEAP]
    for name in ("proportional", "class_aware", "cost_aware"):
        m = pool_router(name).shares(["chat", "batch"], [0.5, 0.5], pools)
        np.testing.assert_allclose(m[:, 0], 0.0, atol=1e-12, err_msg=name)


# -- pool routers, for any pools -----------------------------------------------------------------
pool_lists = st.lists(
    st.tuples(
        st.floats(0.1, 1e4),  # capacity per s
        st.floats(1e-6, 1e-2),  # usd per request
        st.floats(1e-3, 0.1),  # tpot
    ),
    min_size=1,
    max_size=5,
)
class_lists = st.lists(
    st.tuples(st.sampled_from(["chat", "coding", "agentic", "batch", "docs"]), st.floats(0.01, 1.0)),
    min_size=1,
    max_size=5,
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(pools=pool_lists, classes=class_lists, name=st.sampled_from(sorted(POOL_ROUTERS)))
def test_every_split_sends_each_class_somewhere_and_no_pool_past_its_capacity_share(
    pools: list[tuple[float, float, float]], classes: list[tuple[str, float]], name: str
) -> None:
    targets = [PoolTarget(f"p{i}", c, usd_per_request=u, tpot_s=t) for i, (c, u, t) in enumerate(pools)]
    names = [c for c, _ in classes]
    raw = np.array([s for _, s in classes])
    shares = raw / raw.sum()
    m = pool_router(name).shares(names, list(shares), targets)
    assert m.shape == (len(classes), len(pools))
    assert np.all(m >= -1e-12)
    np.testing.assert_allclose(m.sum(axis=1), 1.0, rtol=1e-9)
    cap = np.array([c for c, _, _ in pools])
    load = shares @ m  # the share of all traffic each pool takes
    np.testing.assert_allclose(load, cap / cap.sum(), rtol=1e-6, atol=1e-9)  # filled exactly full


# -- replica routers -----------------------------------------------------------------------------
def test_a_random_split_scales_poisson_gamma_and_diurnal_rates() -> None:
    assert scaled(Poisson(12.0), 0.25) == Poisson(3.0)
    g = scaled(Gamma(10.0, 2.0), 0.1)
    assert isinstance(g, Gamma) and g.rate_per_s == pytest.approx(1.0) and g.cv == 2.0  # cv kept
    d = Diurnal(6.0, 3.0, 14.0, 0.0, 0.0)
    half = scaled(d, 0.5)
    assert isinstance(half, Diurnal) and half.rate_per_s == pytest.approx(3.0)
    assert (half.peak_to_trough, half.peak_hour) == (d.peak_to_trough, d.peak_hour)


@pytest.mark.parametrize("factor", [0.0, -0.5])
def test_a_share_of_the_traffic_must_be_positive(factor: float) -> None:
    with pytest.raises(InputError, match=f"a traffic share must be > 0; got {factor}"):
        scaled(Poisson(1.0), factor)


def test_the_random_router_splits_the_stream_n_ways_and_draws_nothing() -> None:
    rng = np.random.default_rng(3)
    state = rng.bit_generator.state
    process, first = RandomReplica().replica_stream(rng, Poisson(40.0), 8, 5)
    assert process == Poisson(5.0) and first is None
    assert rng.bit_generator.state == state


def test_random_targets_are_uniform_over_the_replicas() -> None:
    targets = RandomReplica().targets(np.random.default_rng(0), 40_000, 4)
    counts = np.bincount(targets, minlength=4)
    assert counts.sum() == 40_000
    # Each count is binomial(40000, 1/4): sd ~ 87; 5 sd either side.
    assert np.all(np.abs(counts - 10_000) < 5 * math.sqrt(40_000 * 0.25 * 0.75))


@pytest.mark.parametrize(("arrivals", "cv"), [(Poisson(30.0), 1.0), (Gamma(30.0, 2.0), 2.0)])
def test_round_robin_gives_each_replica_the_sum_of_n_gaps(arrivals: Poisson | Gamma, cv: float) -> None:
    """Every N-th arrival: the gaps are sums of N of the pool's gaps, so the rate is 1/N of the
    pool's and the gap CV 1/sqrt(N) of its CV."""
    process, first = RoundRobin().replica_stream(np.random.default_rng(1), arrivals, 3, 0)
    assert isinstance(process, Gamma)
    assert process.rate_per_s == pytest.approx(10.0)
    assert process.cv == pytest.approx(cv / math.sqrt(3))
    assert first is not None and first > 0


def test_round_robin_delays_replica_r_by_r_plus_one_gaps_on_average() -> None:
    """Replica r's first request is the pool's (r + 1)-th: gamma with (r + 1) x the shape, mean
    (r + 1) / rate."""
    rng = np.random.default_rng(11)
    for r in (0, 2):
        firsts = [RoundRobin().replica_stream(rng, Poisson(4.0), 5, r)[1] for _ in range(4000)]
        mean = float(np.mean(firsts))  # type: ignore[arg-type]
        expected = (r + 1) / 4.0
        sd = math.sqrt(r + 1) / 4.0 / math.sqrt(4000)
        assert abs(mean - expected) < 5 * sd


def test_round_robin_targets_do_not_use_the_generator() -> None:
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    assert RoundRobin().targets(rng, 5, 2).tolist() == [0, 1, 0, 1, 0]
    assert rng.bit_generator.state == state


def test_round_robin_of_diurnal_arrivals_is_refused_with_the_way_out() -> None:
    with pytest.raises(InputError, match=r"takes Poisson or gamma arrivals; got Diurnal\. Use the random"):
        RoundRobin().replica_stream(np.random.default_rng(0), Diurnal(1.0), 2, 0)


def test_least_outstanding_cannot_route_ahead_of_the_run() -> None:
    router = LeastOutstanding()
    assert router.joint and not RandomReplica().joint and not RoundRobin().joint
    with pytest.raises(InputError, match="simulate them jointly"):
        router.targets(np.random.default_rng(0), 3, 2)
    with pytest.raises(InputError, match="simulate them jointly"):
        router.replica_stream(np.random.default_rng(0), Poisson(1.0), 2, 0)
