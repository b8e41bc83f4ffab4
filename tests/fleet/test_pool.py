"""Pool and option accounting on a small study: energy is bounded by idle and peak power, money
and tokens are consistent, and capacity scales with the budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from megawatt.fleet.power import fitted_families
from megawatt.scenario import load_scenario
from megawatt.study import run_study
from megawatt.units import SECONDS_PER_YEAR

GOLDEN = Path(__file__).parents[1] / "golden"


@pytest.fixture(scope="module")
def study():
    return run_study(load_scenario(GOLDEN / "small.yaml", ["simulation.n_requests=150"]), workers=1)


def test_mean_power_lies_between_idle_and_peak(study) -> None:
    for option in study.options:
        idle = sum(p.size.n_systems * p.power_curve.idle_w for p in option.pools) * option.pue
        peak = option.it_peak_w * option.pue
        assert idle <= option.facility_mean_w <= peak


def test_prior_pools_draw_power_linearly_from_idle_to_peak(study) -> None:
    for pool in study.options[2].pools:
        s, n = pool.system, pool.size.n_systems
        assert not pool.power_curve.fitted
        assert pool.mean_it_power_w(0.5) == pytest.approx(n * (s.idle_power_w + s.power_w) / 2)


def test_an_mi355x_pool_draws_power_along_its_fitted_curve() -> None:
    sc = load_scenario(GOLDEN / "small.yaml",
                       ["simulation.n_requests=150", "options.0.pools.0.system=mi355x-8"])
    pool = run_study(sc, workers=1).options[0].pools[0]
    fit = fitted_families()["gpu/amd"]
    n, max_w = pool.size.n_systems, pool.system.power_w
    assert pool.power_curve.fitted
    assert pool.mean_it_power_w(0.0) == pytest.approx(n * max_w * fit.idle_fraction)
    assert pool.mean_it_power_w(1.0) == pytest.approx(n * max_w * fit.full_load_fraction)
    # Concave: half the load draws more than half-way between idle and full load.
    assert pool.mean_it_power_w(0.5) > (pool.mean_it_power_w(0.0) + pool.mean_it_power_w(1.0)) / 2


def test_energy_per_token_is_mean_power_over_mean_tokens(study) -> None:
    for o in study.options:
        tokens = o.output_tokens_per_s * o.load_fraction
        assert o.joules_per_token == pytest.approx(o.facility_mean_w / tokens)


def test_cost_per_million_tokens_is_annual_cost_over_tokens(study) -> None:
    for o in study.options:
        tokens = o.output_tokens_per_s * o.load_fraction * SECONDS_PER_YEAR
        assert o.usd_per_million_tokens == pytest.approx(o.annual_cost.total / tokens * 1e6)


def test_it_power_never_exceeds_the_budget(study) -> None:
    it_budget = study.scenario.budget.facility_mw * 1e6 / study.scenario.budget.pue
    for o in study.options:
        assert o.it_peak_w + o.leftover_w == pytest.approx(it_budget)


def test_prompts_per_day_follow_the_peak_to_mean_ratio(study) -> None:
    for o in study.options:
        assert o.prompts_per_day == pytest.approx(o.rate_per_s / 1.5 * 86_400)


def test_per_class_latency_of_a_one_pool_option_is_that_class_alone(study) -> None:
    option = study.options[0]
    res = option.pools[0].capacity.result
    for name, figures in option.class_latency().items():
        mask = res.class_id == res.class_names.index(name)
        assert figures["ttft_p99_s"] == pytest.approx(res.percentile("ttft_s", 99, mask))
        assert figures["tpot_p50_s"] == pytest.approx(res.percentile("tpot_s", 50, mask))


def test_concurrent_requests_follow_littles_law(study) -> None:
    option = study.options[0]
    pool = option.pools[0]
    res = pool.capacity.result
    assert option.concurrent_requests == pytest.approx(pool.rate_per_s * res.e2e_s[res.completed].mean())
