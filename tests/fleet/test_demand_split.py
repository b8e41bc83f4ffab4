"""An option at its demand, from hand-made pools and a fake step model (no roofline): the router's
split gives each pool its rate, the rates add up to the demand, a pool asked for more than its
capacity is named and drawn at full power rather than simulated, an idle pool draws idle power,
power and money follow each pool's load, and each pool runs its own scheduler. The expected
request counts and the mix a pool sees are worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from megawatt.errors import InputError
from megawatt.fleet import Economics
from megawatt.fleet.demand import pool_mix, pool_split, simulate_demand, simulated_requests
from megawatt.fleet.pool import PoolResult
from megawatt.fleet.pools import PoolRun
from megawatt.perf import Deployment
from megawatt.serving import ReplicaConfig
from megawatt.units import HOURS_PER_YEAR
from megawatt.workload import Fixed, Mix, RequestClass

from .fakes import CATALOG, LinearStep, kv_for_tokens, pool_result, run_result

MIX = Mix((
    RequestClass("chat", 0.75, Fixed(200), Fixed(20)),
    RequestClass("docs", 0.25, Fixed(2000), Fixed(50)),
))


def gpu(name: str = "gpu", *, n_systems: int = 2, rate: float = 1.0, tpot_s: float = 0.02) -> PoolResult:
    """`n_systems` HGX H200 (8 replicas each) of `rate` requests/s per replica; their run at that
    rate decodes at `tpot_s` a token."""
    result = run_result([0.0], [0.1], [0.1 + 10 * tpot_s], [11])
    return pool_result(name, "hgx-h200", n_systems=n_systems, rate_per_replica=rate, result=result)


def linear_w(system_id: str, load: float) -> float:
    s = CATALOG.system(system_id)
    return s.idle_power_w + (s.power_w - s.idle_power_w) * load


@pytest.fixture
def fake_replicas(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Replicas of the linear fake step model in place of each pool's roofline; records the
    (system, scheduler) each pool's replicas were built with."""
    built: list[tuple[str, str]] = []

    class Fake:
        @staticmethod
        def of(dep: Deployment, scheduler: str = "vllm") -> ReplicaConfig:
            built.append((dep.system.id, scheduler))
            return ReplicaConfig(LinearStep(), kv_for_tokens(200_000), scheduler=scheduler)

    monkeypatch.setattr("megawatt.fleet.demand.ReplicaConfig", Fake)
    return built


def at_demand(pools: list[PoolResult], rate: float, **options: object) -> object:
    settings: dict[str, object] = {
        "router": "proportional", "economics": Economics(), "pue": 1.25, "mean_to_peak": 0.5,
        "duration_s": 20.0, "k": 2, "seed": (1,),
    }
    settings.update(options)
    return simulate_demand(pools, MIX, rate, **settings)  # type: ignore[arg-type]


# -- the split -----------------------------------------------------------------------------------
def test_the_proportional_split_follows_the_pools_capacities() -> None:
    pools = [gpu("a", n_systems=1, rate=1.0), gpu("b", n_systems=3, rate=1.0)]  # 8 and 24 requests/s
    split = pool_split(pools, MIX, router="proportional", economics=Economics(), pue=1.25)
    np.testing.assert_allclose(split, [[0.25, 0.75], [0.25, 0.75]])


def test_the_class_aware_split_reads_each_pools_median_decode_time() -> None:
    """chat is latency-sensitive: it fills the pool with the lower median TPOT first."""
    pools = [gpu("slow", tpot_s=0.05), gpu("quick", tpot_s=0.01)]  # equal capacities
    split = pool_split(pools, MIX, router="class_aware", economics=Economics(), pue=1.25)
    # Room 0.5 each: chat (0.75) fills "quick" and 0.25 of "slow"; docs (0.25) the rest of "slow".
    np.testing.assert_allclose(split[0], [0.25 / 0.75, 0.5 / 0.75])
    np.testing.assert_allclose(split[1], [1.0, 0.0])


def test_the_cost_aware_split_prices_a_request_at_each_pools_capacity() -> None:
    """The same systems at twice the rate serve a request at half the cost: that pool fills first."""
    pools = [gpu("dear", rate=1.0), gpu("cheap", rate=2.0)]  # room 1/3 and 2/3
    split = pool_split(pools, MIX, router="cost_aware", economics=Economics(), pue=1.25)
    np.testing.assert_allclose(split[0], [0.75 - 2 / 3, 2 / 3] / np.float64(0.75))
    np.testing.assert_allclose(split[1], [1.0, 0.0])


def test_a_pools_mix_renormalises_the_classes_it_takes_and_drops_the_others() -> None:
    half = pool_mix(MIX, np.array([0.5, 1.0]))  # half the chat, all the docs: 0.375 and 0.25
    assert half.class_names == ("chat", "docs")
    assert list(half.shares) == pytest.approx([0.6, 0.4])
    only_docs = pool_mix(MIX, np.array([0.0, 0.3]))
    assert only_docs.class_names == ("docs",) and list(only_docs.shares) == [1.0]


def test_the_expected_requests_are_the_pools_share_over_the_window() -> None:
    """Pool a: 16 replicas, 25 requests/s of the 100: sampled mode simulates k = 2 of them, 2/16 of
    its traffic; exact mode all of it. Pool b is asked for more than its capacity: nothing."""
    pools = [gpu("a", n_systems=2, rate=10.0), gpu("b", n_systems=1, rate=1.0)]  # 160 and 8 /s
    split = np.array([[0.25, 0.75], [0.25, 0.75]])
    sampled = simulated_requests(pools, MIX, 100.0, split, duration_s=30.0, mode="sampled", k=2)
    exact = simulated_requests(pools, MIX, 100.0, split, duration_s=30.0, mode="exact", k=2)
    assert sampled == pytest.approx([25.0 * 30.0 * 2 / 16, 0.0])
    assert exact == pytest.approx([25.0 * 30.0, 0.0])


def test_a_pool_without_traffic_expects_no_requests() -> None:
    pools = [gpu("a"), gpu("b")]
    split = np.array([[1.0, 0.0], [1.0, 0.0]])
    assert simulated_requests(pools, MIX, 4.0, split, duration_s=10.0, mode="sampled", k=4)[1] == 0.0


# -- simulated at demand -------------------------------------------------------------------------
def test_the_pools_rates_add_up_to_the_demand_and_each_is_simulated(fake_replicas: list) -> None:
    pools = [gpu("a", n_systems=1, rate=2.0), gpu("b", n_systems=3, rate=2.0)]  # 16 and 48 /s
    d = at_demand(pools, 8.0)
    assert d.pool_rates == pytest.approx((2.0, 6.0))  # type: ignore[attr-defined]
    assert d.ok and d.over_capacity == ()  # type: ignore[attr-defined]
    assert all(isinstance(r, PoolRun) for r in d.runs)  # type: ignore[attr-defined]
    assert [r.n_replicas for r in d.runs] == [8, 24]  # type: ignore[attr-defined]
    assert len(fake_replicas) == 2


def test_power_and_money_follow_each_pools_load(fake_replicas: list) -> None:
    """Loads: 2/16 and 6/48 of capacity (1/8 each); the year averages half of that."""
    pools = [gpu("a", n_systems=1, rate=2.0), gpu("b", n_systems=3, rate=2.0)]
    d = at_demand(pools, 8.0)
    assert d.it_w == pytest.approx(4 * linear_w("hgx-h200", 1 / 8))  # type: ignore[attr-defined]
    assert d.facility_w == pytest.approx(d.it_w * 1.25)  # type: ignore[attr-defined]
    mean_mw = 4 * linear_w("hgx-h200", 1 / 16) * 1.25 / 1e6
    assert d.annual.electricity == pytest.approx(70.0 * mean_mw * HOURS_PER_YEAR)  # type: ignore[attr-defined]
    assert d.mean_to_peak == 0.5  # type: ignore[attr-defined]


def test_a_pool_over_its_capacity_is_named_drawn_at_full_power_and_not_simulated(
    fake_replicas: list,
) -> None:
    pools = [gpu("big", n_systems=4, rate=2.0), gpu("small", n_systems=1, rate=0.1)]  # 64 and 0.8 /s
    d = at_demand(pools, 64.8, router="proportional")  # each at exactly capacity...
    assert d.ok and len(fake_replicas) == 2  # type: ignore[attr-defined]
    fake_replicas.clear()
    d = at_demand(pools, 70.0, router="proportional")  # ...and now above
    assert d.over_capacity == ("big", "small") and not d.ok  # type: ignore[attr-defined]
    assert d.runs == (None, None) and fake_replicas == []  # type: ignore[attr-defined]
    assert d.it_w == pytest.approx(5 * CATALOG.system("hgx-h200").power_w)  # type: ignore[attr-defined]
    assert math.isnan(d.percentile("ttft_s", 99))  # type: ignore[attr-defined]


def test_a_pool_that_failed_its_slo_gets_no_traffic_and_draws_idle_power(fake_replicas: list) -> None:
    """Every router fills each pool to its share of the capacity, so a pool without capacity (no
    rate met the SLO) gets nothing, is not simulated and idles."""
    pools = [gpu("failed", n_systems=1, rate=0.0), gpu("fine", n_systems=1, rate=4.0)]  # 0 and 32 /s
    for router in ("proportional", "class_aware", "cost_aware"):
        fake_replicas.clear()
        d = at_demand(pools, 4.0, router=router)
        assert d.pool_rates == pytest.approx((0.0, 4.0))  # type: ignore[attr-defined]
        assert d.runs[0] is None and d.runs[1] is not None  # type: ignore[attr-defined]
        expected = linear_w("hgx-h200", 0.0) + linear_w("hgx-h200", 4.0 / 32.0)
        assert d.it_w == pytest.approx(expected)  # type: ignore[attr-defined]
        assert len(fake_replicas) == 1


def test_each_pool_runs_its_own_scheduler_and_the_count_must_match(fake_replicas: list) -> None:
    pools = [gpu("a"), gpu("b")]
    at_demand(pools, 4.0, scheduler=["vllm", "static"])
    assert [s for _, s in fake_replicas] == ["vllm", "static"]
    fake_replicas.clear()
    at_demand(pools, 4.0, scheduler="static")
    assert [s for _, s in fake_replicas] == ["static", "static"]
    with pytest.raises(InputError, match=r"scheduler: give one or one per pool \(2\); got 3"):
        at_demand(pools, 4.0, scheduler=["vllm", "vllm", "vllm"])


def test_the_same_seed_gives_the_same_demand_run(fake_replicas: list) -> None:
    pools = [gpu("a"), gpu("b")]
    one, two = at_demand(pools, 6.0), at_demand(pools, 6.0)
    other = at_demand(pools, 6.0, seed=(2,))
    assert one.percentile("e2e_s", 90) == two.percentile("e2e_s", 90)  # type: ignore[attr-defined]
    assert one.output_tokens_per_s == two.output_tokens_per_s  # type: ignore[attr-defined]
    assert one.output_tokens_per_s != other.output_tokens_per_s  # type: ignore[attr-defined]


def test_exact_mode_simulates_every_replica_and_counts_the_traffic(fake_replicas: list) -> None:
    pools = [gpu("a", n_systems=1, rate=2.0)]
    d = at_demand(pools, 4.0, mode="exact", duration_s=30.0)
    run = d.runs[0]  # type: ignore[attr-defined]
    assert run.n_simulated == 8
    assert abs(run.n_requests - 120) < 6 * math.sqrt(120)
    # Every request completes at this light load: tokens are 20 (chat) or 50 (docs) a request.
    assert run.n_completed == run.n_requests and run.n_rejected == 0
    assert 20 * run.n_requests <= run.output_tokens <= 50 * run.n_requests
