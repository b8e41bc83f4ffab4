"""An option's accounting from hand-made pools (nothing simulated): systems, power, tokens and
money add up over the pools as worked out here from the catalog's figures; latency percentiles
across pools weight each request by the traffic its pool carries; an option or a demand that
serves nothing costs infinity per token rather than dividing by zero."""

from __future__ import annotations

import math

import numpy as np
import pytest

from megawatt.fleet import Economics
from megawatt.fleet.pool import DemandResult, OptionResult, option_result
from megawatt.fleet.pools import PoolRun
from megawatt.units import HOURS_PER_YEAR, SECONDS_PER_DAY, SECONDS_PER_YEAR

from .fakes import pool_result, run_result

NAN = math.nan

# Pool "gpu": 10 HGX H200 (8 replicas of one GPU each), 2 requests/s per replica; its run at
# that rate: two requests of 10 and 20 output tokens.
GPU_RUN = run_result([0.0, 1.0], [0.5, 1.2], [2.0, 3.2], [10, 20], busy_s=2.0)
# Pool "wafer": 4 CS-3 (a replica each), 5 requests/s per replica; one request of 100 tokens.
WAFER_RUN = run_result([0.0], [1.0], [2.0], [100], busy_s=1.5)


def option(load_fraction: float = 0.5, economics: Economics | None = None) -> OptionResult:
    pools = [
        pool_result("gpu", "hgx-h200", n_systems=10, rate_per_replica=2.0, result=GPU_RUN,
                    single_stream_tokens_per_s=150.0),
        pool_result("wafer", "cs-3", n_systems=4, rate_per_replica=5.0, result=WAFER_RUN,
                    single_stream_tokens_per_s=900.0),
    ]
    return option_result("mix", "llama-3.1-8b", pools, economics or Economics(), 1.2, load_fraction)


def linear_w(system_id: str, load: float) -> float:
    """The catalog's prior: idle power plus the load's share of the way to the maximum."""
    from .fakes import CATALOG

    s = CATALOG.system(system_id)
    return s.idle_power_w + (s.power_w - s.idle_power_w) * load


def crf(rate: float, years: float) -> float:
    return rate * (1 + rate) ** years / ((1 + rate) ** years - 1)


# -- sizes, rates and tokens ---------------------------------------------------------------------
def test_systems_power_and_replicas_add_up_over_the_pools() -> None:
    o = option()
    gpu, wafer = o.pools
    assert (gpu.size.n_replicas, wafer.size.n_replicas) == (80, 4)  # 8 GPUs per HGX, 1 wafer
    assert o.n_systems == 14
    assert o.it_peak_w == pytest.approx(10 * 10_200.0 + 4 * 23_000.0)
    assert o.leftover_w == 0.0  # bought by count, nothing left over


def test_rates_and_tokens_are_per_replica_figures_times_replicas() -> None:
    o = option()
    assert o.rate_per_s == pytest.approx(80 * 2.0 + 4 * 5.0)
    # Output tokens/s: rate x mean output of the served requests, per replica.
    assert o.pools[0].output_tokens_per_s == pytest.approx(80 * 2.0 * 15.0)
    assert o.pools[1].output_tokens_per_s == pytest.approx(4 * 5.0 * 100.0)
    assert o.output_tokens_per_s == pytest.approx(2400.0 + 2000.0)


@pytest.mark.parametrize("load_fraction", [0.25, 0.5, 1.0])
def test_prompts_per_day_are_the_peak_rate_at_the_mean_load_over_a_day(load_fraction: float) -> None:
    assert option(load_fraction).prompts_per_day == pytest.approx(180.0 * load_fraction * SECONDS_PER_DAY)


def test_the_fastest_pool_sets_the_single_stream_speed() -> None:
    assert option().single_stream_tokens_per_s == 900.0
    empty = option_result("none", "m", [], Economics(), 1.2, 0.5)
    assert math.isnan(empty.single_stream_tokens_per_s)
    assert empty.n_systems == 0 and empty.rate_per_s == 0.0


# -- power, energy and money ---------------------------------------------------------------------
@pytest.mark.parametrize("load_fraction", [0.0, 0.3, 0.5, 1.0])
def test_mean_facility_power_is_each_pools_curve_at_the_mean_load_times_pue(load_fraction: float) -> None:
    o = option(load_fraction)
    it_w = 10 * linear_w("hgx-h200", load_fraction) + 4 * linear_w("cs-3", load_fraction)
    assert o.facility_mean_w == pytest.approx(it_w * 1.2)


def test_energy_per_token_is_mean_facility_power_over_mean_tokens() -> None:
    o = option(0.5)
    it_w = 10 * linear_w("hgx-h200", 0.5) + 4 * linear_w("cs-3", 0.5)
    assert o.joules_per_token == pytest.approx(it_w * 1.2 / (4400.0 * 0.5))


def test_the_yearly_cost_is_amortised_capex_facility_and_electricity_of_every_pool() -> None:
    o = option(0.5)
    gpu, wafer = o.pools
    it_capex = (10 * gpu.system.price_usd + 4 * wafer.system.price_usd) * crf(0.08, 4)
    facility = 15e6 * (10 * 10_200.0 + 4 * 23_000.0) / 1e6 * crf(0.08, 15)
    mean_mw = (10 * linear_w("hgx-h200", 0.5) + 4 * linear_w("cs-3", 0.5)) * 1.2 / 1e6
    cost = o.annual_cost
    assert cost.it_capex == pytest.approx(it_capex)
    assert cost.facility_capex == pytest.approx(facility)
    assert cost.electricity == pytest.approx(70.0 * mean_mw * HOURS_PER_YEAR)
    assert cost.contract == 0.0
    assert cost.total == pytest.approx(it_capex + facility + 70.0 * mean_mw * HOURS_PER_YEAR)


def test_a_contract_charges_the_provisioned_facility_megawatts_and_nothing_else() -> None:
    o = option(0.5, Economics(contract_usd_per_mw_year=9e6))
    mw = (10 * 10_200.0 + 4 * 23_000.0) * 1.2 / 1e6  # peak IT x PUE, whatever the load
    assert o.annual_cost.total == pytest.approx(9e6 * mw)
    assert o.annual_cost.it_capex == o.annual_cost.electricity == 0.0
    assert option(0.9, Economics(contract_usd_per_mw_year=9e6)).annual_cost == o.annual_cost


def test_cost_per_request_and_per_token_spread_the_year_over_the_mean_load() -> None:
    o = option(0.5)
    year = o.annual_cost.total
    assert o.usd_per_request == pytest.approx(year / (180.0 * 0.5 * SECONDS_PER_YEAR))
    assert o.usd_per_million_tokens == pytest.approx(year / (4400.0 * 0.5 * SECONDS_PER_YEAR) * 1e6)


def test_an_option_that_serves_nothing_costs_infinity_per_token_and_request() -> None:
    pool = pool_result("gpu", n_systems=2, rate_per_replica=0.0, result=None)
    idle = option_result("idle", "m", [pool], Economics(), 1.2, 0.5)
    assert idle.output_tokens_per_s == 0.0
    assert idle.joules_per_token == math.inf
    assert idle.usd_per_request == math.inf and idle.usd_per_million_tokens == math.inf
    assert idle.annual_cost.total > 0  # the systems still cost money


def test_more_load_never_lowers_power_or_raises_energy_per_token() -> None:
    """The prior curve rises with the load, and its idle part is spread over more tokens."""
    loads = [0.1, 0.3, 0.5, 0.8, 1.0]
    options = [option(u) for u in loads]
    power = [o.facility_mean_w for o in options]
    energy = [o.joules_per_token for o in options]
    assert power == sorted(power)
    assert energy == sorted(energy, reverse=True)


# -- latency across pools ------------------------------------------------------------------------
def test_percentiles_across_pools_weight_each_request_by_its_pools_traffic() -> None:
    """gpu: TTFTs 0.5 and 0.2 s, each standing for 160/2 = 80 requests/s; wafer: 1.0 s for 20.
    Sorted with cumulative shares: 0.2 (80/180), 0.5 (160/180), 1.0 (180/180)."""
    o = option()
    assert o.ttft_s(40) == pytest.approx(0.2)
    assert o.ttft_s(50) == pytest.approx(0.5)
    assert o.ttft_s(88) == pytest.approx(0.5)
    assert o.ttft_s(90) == pytest.approx(1.0)
    assert o.ttft_s(100) == pytest.approx(1.0)


def test_the_median_user_decodes_at_one_over_the_median_tpot() -> None:
    """TPOT = (finish - first token) / (output - 1): gpu 1.5/9 and 2.0/19 s, wafer 1.0/99 s."""
    o = option()
    # Sorted with cumulative shares: 1/99 s (20/180), 2/19 s (100/180, the median), 1.5/9 s.
    assert o.tpot_s(10) == pytest.approx(1.0 / 99)
    assert o.tpot_s(100) == pytest.approx(1.5 / 9)
    assert o.tpot_s(50) == pytest.approx(2.0 / 19)
    assert o.per_user_tokens_per_s == pytest.approx(19 / 2.0)


def test_rejected_requests_and_pools_without_traffic_are_left_out_of_percentiles() -> None:
    rejected = run_result([0.0, 0.0], [0.1, NAN], [0.2, NAN], [2, 2], rejected=[False, True])
    pools = [
        pool_result("a", rate_per_replica=1.0, result=rejected),
        pool_result("b", rate_per_replica=0.0, result=run_result([0.0], [9.0], [9.5], [2])),
        pool_result("c", rate_per_replica=1.0, result=None),
    ]
    o = option_result("o", "m", pools, Economics(), 1.2, 0.5)
    assert o.ttft_s(100) == pytest.approx(0.1)  # neither the rejected one nor pool b's 9 s


def test_with_nothing_served_the_latency_is_nan_and_the_decode_speed_too() -> None:
    o = option_result("o", "m", [pool_result("a", rate_per_replica=0.0, result=None)], Economics(), 1.2, 0.5)
    assert math.isnan(o.ttft_s(50)) and math.isnan(o.tpot_s(99))
    assert math.isnan(o.per_user_tokens_per_s)
    assert o.class_names == () and o.class_latency() == {}
    assert o.concurrent_requests == 0.0


def test_one_token_outputs_have_no_decode_speed() -> None:
    """Their TPOT is 0 by definition, so 1 / TPOT would be infinite: NaN instead."""
    one_token = run_result([0.0, 1.0], [0.3, 1.3], [0.3, 1.3], [1, 1])
    o = option_result("o", "m", [pool_result("a", result=one_token)], Economics(), 1.2, 0.5)
    assert o.tpot_s(50) == 0.0 and math.isnan(o.per_user_tokens_per_s)


def test_each_class_gets_its_own_percentiles_across_the_pools_that_serve_it() -> None:
    both = run_result([0.0, 0.0, 0.0], [0.1, 0.2, 3.0], [1.0, 1.0, 4.0], [5, 5, 5],
                      class_id=[0, 0, 1], class_names=("chat", "docs"))
    chat_only = run_result([0.0], [0.4], [1.0], [5], class_names=("chat",))
    o = option_result("o", "m", [pool_result("a", result=both), pool_result("b", result=chat_only)],
                      Economics(), 1.2, 0.5)
    assert o.class_names == ("chat", "docs")
    latency = o.class_latency()
    assert set(latency) == {"chat", "docs"}
    assert latency["docs"]["ttft_p50_s"] == pytest.approx(3.0)  # pool b has no docs requests
    # chat: 0.1 and 0.2 s stand for 160/3 requests/s each, 0.4 s for 160/1.
    assert latency["chat"]["ttft_p50_s"] == pytest.approx(0.4)
    assert latency["chat"]["ttft_p99_s"] == pytest.approx(0.4)
    # All classes: 0.1, 0.2 and 3.0 s at 160/3 each, 0.4 s at 160: shares 1/6, 1/3, 5/6, 1.
    assert [o.ttft_s(q) for q in (15, 20, 50, 90)] == pytest.approx([0.1, 0.2, 0.4, 3.0])


def test_requests_in_flight_follow_littles_law_pool_by_pool() -> None:
    """L = lambda x W: gpu 160/s x mean(2.0, 2.2) s, wafer 20/s x 2.0 s."""
    assert option().concurrent_requests == pytest.approx(160.0 * 2.1 + 20.0 * 2.0)


# -- an option at its demand ---------------------------------------------------------------------
def pool_run(name: str, n_replicas: int, *runs: object, duration_s: float = 10.0) -> PoolRun:
    results = tuple(runs)
    return PoolRun(name, n_replicas, results, tuple(np.ones(r.n, dtype=bool) for r in results),  # type: ignore[attr-defined]
                   duration_s)


def demand(runs: tuple[PoolRun | None, ...], over: tuple[str, ...] = (), total: float = 1e6) -> DemandResult:
    from megawatt.fleet.economics import AnnualCost

    return DemandResult(100.0, (60.0, 40.0), runs, over, 5e5, 6e5, AnnualCost(total, 0.0, 0.0, 0.0), 0.5)


def test_demand_tokens_and_costs_come_from_the_simulated_pools() -> None:
    a = pool_run("a", 8, run_result([0.0, 1.0], [0.1, 1.1], [1.0, 2.0], [30, 10]),
                 run_result([0.0], [0.2], [1.0], [20]))  # 2 of 8 replicas: scale 4
    b = pool_run("b", 1, run_result([0.0], [0.3], [1.0], [50]))
    d = demand((a, b))
    assert d.ok
    tokens = (60 / 10.0 * 4) + (50 / 10.0)  # completed tokens / duration x scale
    assert d.output_tokens_per_s == pytest.approx(tokens)
    assert d.joules_per_token == pytest.approx(6e5 / tokens)
    assert d.usd_per_million_tokens == pytest.approx(1e6 / (tokens * 0.5 * SECONDS_PER_YEAR) * 1e6)
    # Pool a's requests each stand for 4 replicas, pool b's for 1: weights 4, 4, 4, 1.
    assert d.percentile("ttft_s", 50) == pytest.approx(0.1)
    assert d.percentile("ttft_s", 100) == pytest.approx(0.3)
    assert d.percentile("ttft_s", 90) == pytest.approx(0.2)


def test_a_demand_with_a_pool_over_capacity_has_no_latency_and_infinite_costs() -> None:
    a = pool_run("a", 1, run_result([0.0], [0.1], [1.0], [30]))
    d = demand((a, None), over=("b",))
    assert not d.ok
    assert math.isnan(d.percentile("ttft_s", 50))
    assert d.joules_per_token == math.inf and d.usd_per_million_tokens == math.inf
    assert d.output_tokens_per_s == pytest.approx(3.0)  # what was simulated is still counted


def test_a_demand_with_no_pool_simulated_serves_no_tokens() -> None:
    d = demand((None, None))
    assert d.ok and d.output_tokens_per_s == 0.0
    assert d.joules_per_token == math.inf and d.usd_per_million_tokens == math.inf
    assert math.isnan(d.percentile("e2e_s", 99))
