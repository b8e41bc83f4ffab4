"""An option at the traffic's demand: the router's split adds up, over-capacity pools are named,
power lies between idle and peak, and tokens cost what the year costs over the year's tokens."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from megawatt.fleet.demand import simulate_demand
from megawatt.model import load_model
from megawatt.scenario import load_scenario
from megawatt.study import run_study, traffic_mix
from megawatt.units import SECONDS_PER_YEAR

GOLDEN = Path(__file__).parents[1] / "golden"


@pytest.fixture(scope="module")
def study():
    sc = load_scenario(GOLDEN / "small.yaml", ["simulation.n_requests=300", "fleet.duration_s=60"])
    return run_study(sc, workers=1)


def test_pool_rates_add_up_to_the_peak_demand(study) -> None:
    for option in study.options:
        d = option.demand
        assert sum(d.pool_rates) == pytest.approx(d.rate_per_s)
        assert d.rate_per_s == pytest.approx(1e9 / 86_400 * 1.5)


def test_a_pool_asked_for_more_than_its_capacity_is_named_not_simulated(study) -> None:
    cs3 = study.options[1].demand
    assert cs3.over_capacity == ("cs-3",) and not cs3.ok
    assert math.isnan(cs3.percentile("ttft_s", 99)) and cs3.usd_per_million_tokens == math.inf


def test_power_at_demand_lies_between_idle_and_peak(study) -> None:
    for option in study.options:
        idle = sum(p.size.n_systems * p.power_curve.idle_w for p in option.pools)
        assert idle <= option.demand.it_w <= option.it_peak_w + 1e-6


def test_cost_per_token_at_demand(study) -> None:
    d = study.options[0].demand
    tokens = d.output_tokens_per_s * d.mean_to_peak * SECONDS_PER_YEAR
    assert d.usd_per_million_tokens == pytest.approx(d.annual.total / tokens * 1e6)


def test_class_aware_routing_keeps_reasoning_off_the_fast_pool() -> None:
    sc = load_scenario(GOLDEN / "small.yaml", ["simulation.n_requests=300", "fleet.duration_s=30",
                                               "options.2.router=class_aware",
                                               "traffic.demand_prompts_per_day=2e8"])
    d = run_study(sc, workers=1).options[2].demand
    assert d.ok and sum(d.pool_rates) == pytest.approx(d.rate_per_s)


def test_each_pool_of_a_mixed_option_runs_its_own_scheduler(study) -> None:
    option = study.options[2]  # half H200, half CS-3
    sc = study.scenario
    mix = traffic_mix(sc, load_model(sc.models[0]))

    def at(policies: list[str]) -> list[float]:
        d = simulate_demand(
            option.pools, mix, 100.0, router="proportional", economics=option.economics, pue=option.pue,
            mean_to_peak=1 / 1.5, duration_s=30.0, k=2, scheduler=policies, seed=(1,),
        )
        return [r.percentile("ttft_s", 99) if r is not None else math.nan for r in d.runs]

    base, other = at(["vllm", "vllm"]), at(["vllm", "static"])
    assert base[0] == other[0]  # the first pool's scheduler is unchanged
    assert base[1] != other[1]  # the second pool runs its own
