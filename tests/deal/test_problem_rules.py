"""A plan's coefficients worked out by hand: demand from prompts per day, growth and the drift of
the mix; a purchase's charge per period (its price per IT MW as an annuity over its life), a
contract's (its price per facility MW-year); discounting at each period's midpoint; sites
energised by steps; budgets per calendar year; which generation and which model serve when;
overflow prices that carry the input tokens; and the deal taken as announced, as options or not
at all."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from megawatt.deal.capacity import TableCapacity
from megawatt.deal.problem import (
    DemandModel,
    Problem,
    build_problem,
    capacity_tasks,
    cohorts,
    earliest_period,
    generation_at,
    model_at,
)
from megawatt.deal.spec import Plan, load_plan
from megawatt.errors import PlanError
from megawatt.fleet.economics import capital_recovery_factor
from megawatt.hardware import load_catalog
from megawatt.units import SECONDS_PER_DAY, SECONDS_PER_YEAR

TINY = Path(__file__).parent / "tiny.yaml"
RATES = {
    ("hgx-h200", "gpt-oss-20b", "chat"): 8e6,
    ("cs-3", "gpt-oss-20b", "chat"): 2e6,
    ("cs-3", "gpt-oss-20b", "fast"): 3e6,
}
FIXED = ["classes.0.prompt={kind: fixed, n_tokens: 500}", "classes.0.output={kind: fixed, n_tokens: 100}",
         "classes.1.prompt={kind: fixed, n_tokens: 1000}", "classes.1.output={kind: fixed, n_tokens: 250}"]


def problem(*overrides: str) -> Problem:
    plan = load_plan(TINY, list(overrides))
    return build_problem(plan, TableCapacity(RATES)(plan, capacity_tasks(plan)))


def plan(*overrides: str) -> Plan:
    return load_plan(TINY, list(overrides))


# -- demand --------------------------------------------------------------------------------------
def demand_model(**changes: object) -> DemandModel:
    base: dict[str, object] = {
        "prompts_per_day": 8.64e6,  # 100 prompts a second
        "growth_per_year": 2.0,
        "drift_per_year": 0.0,
        "shares": np.array([0.75, 0.25]),
        "drifts": np.array([False, True]),
        "mean_output_tokens": np.array([100.0, 400.0]),
        "peak_to_mean": np.array([1.5, 2.0]),
        "years": np.array([0.0, 0.5, 1.0]),
    }
    base.update(changes)
    return DemandModel(**base)  # type: ignore[arg-type]


def test_demand_is_prompts_per_second_times_share_output_and_peak() -> None:
    d = demand_model().demand(growth=1.0)
    np.testing.assert_allclose(d[:, 0], [100 * 0.75 * 100 * 1.5, 100 * 0.25 * 400 * 2.0])
    np.testing.assert_allclose(d, np.repeat(d[:, :1], 3, axis=1))  # no growth, no drift: flat


def test_demand_compounds_its_yearly_growth_at_each_periods_midpoint() -> None:
    d = demand_model().demand()
    np.testing.assert_allclose(d[:, 1] / d[:, 0], math.sqrt(2.0))
    np.testing.assert_allclose(d[:, 2] / d[:, 0], 2.0)


def test_the_mix_drifts_toward_the_drift_classes_and_keeps_the_prompts() -> None:
    """After a year at drift 1.0 the docs share doubles before renormalising: 0.75 : 0.5."""
    model = demand_model(drift_per_year=1.0)
    d = model.demand(growth=1.0)
    chat, docs = d[0, 2] / (100 * 1.5), d[1, 2] / (400 * 2.0)  # prompts/s per class
    assert (chat, docs) == pytest.approx((0.75 / 1.25 * 100, 0.5 / 1.25 * 100))
    assert chat + docs == pytest.approx(100.0)
    assert np.allclose(model.demand(growth=1.0, drift=0.0), demand_model().demand(growth=1.0))


def test_the_plan_demand_grows_from_the_tiny_plans_figures() -> None:
    p = problem(*FIXED)
    # 2e8 prompts a day, 0.8 chat of 100 output tokens and 0.2 fast of 250, peak 1.5, growth 2 a
    # year, the first quarter's midpoint 1/8 of a year in.
    first = 2e8 * 2.0 ** (1 / 8) / SECONDS_PER_DAY * 1.5
    np.testing.assert_allclose(p.demand[:, 0], [first * 0.8 * 100, first * 0.2 * 250])


# -- money ---------------------------------------------------------------------------------------
def test_a_purchase_is_charged_its_price_per_it_mw_as_an_annuity_each_quarter() -> None:
    p = problem()
    gpu = p.suppliers.index("GPU")
    h200 = load_catalog().system("hgx-h200")
    price = h200.price_usd / (h200.power_w / 1e6)
    np.testing.assert_allclose(p.capex[gpu], price)
    np.testing.assert_allclose(p.charge[gpu], price * capital_recovery_factor(0.08, 4.0) * 0.25)


def test_a_stated_price_and_life_replace_the_catalogs() -> None:
    p = problem("suppliers.0.generations.0.usd_per_it_mw=2.0e7", "suppliers.0.life_years=6")
    gpu = p.suppliers.index("GPU")
    np.testing.assert_allclose(p.capex[gpu], 2e7)
    np.testing.assert_allclose(p.charge[gpu], 2e7 * capital_recovery_factor(0.08, 6.0) * 0.25)


def test_a_contract_is_charged_per_facility_mw_year_and_needs_no_capital() -> None:
    p = problem()
    wafer = p.suppliers.index("Wafer")
    np.testing.assert_allclose(p.charge[wafer], 15e6 * 1.2 * 0.25)  # per IT MW: x PUE
    assert p.capex[wafer].sum() == 0.0
    assert p.hosted.tolist() == [False, True]
    assert p.block_it_mw.tolist() == pytest.approx([1.0, 1 / 1.2])


def test_yearly_periods_charge_a_whole_year() -> None:
    p = problem("period=year", "start=2026", "n_periods=2", "deal.tranches=[{period: 2026Q1, mw: 3}]")
    wafer = p.suppliers.index("Wafer")
    np.testing.assert_allclose(p.charge[wafer], 15e6 * 1.2)
    assert p.period_years == 1.0 and p.hours_per_period == pytest.approx(8766.0)


@pytest.mark.parametrize("rate", [0.0, 0.08, 0.2])
def test_periods_are_discounted_at_their_midpoints(rate: float) -> None:
    p = problem(f"discount_rate={rate}")
    np.testing.assert_allclose(p.discount, (1 + rate) ** -(np.arange(4) * 0.25 + 0.125))


def test_a_periods_tokens_per_token_per_second_at_the_peak_are_its_seconds_over_the_peak() -> None:
    p = problem("classes.1.peak_to_mean=3")
    quarter_s = 0.25 * SECONDS_PER_YEAR
    np.testing.assert_allclose(p.tokens_per_rate, [quarter_s / 1.5, quarter_s / 3])


def test_systems_in_use_draw_their_curve_at_the_mean_over_peak_load() -> None:
    """Both classes peak at 1.5 x their mean: a system runs at 2/3 of its capacity on average,
    drawing (on the linear prior) its idle power plus 2/3 of the way to its maximum."""
    p = problem()
    gpu = p.suppliers.index("GPU")
    s = load_catalog().system("hgx-h200")
    idle = s.idle_power_w / s.power_w
    assert p.idle_share[gpu, 0] == pytest.approx(idle)
    assert p.power_share[gpu, 0] == pytest.approx(idle + (1 - idle) * 2 / 3)


def test_the_load_weighs_each_classs_peak_by_its_output_tokens() -> None:
    """mean / peak = sum(share x output) / sum(share x output x peak): with chat (0.8 x 100
    tokens) at peak 1 and fast (0.2 x 250) at peak 3: 130 / 230."""
    p = problem(*FIXED, "classes.0.peak_to_mean=1", "classes.1.peak_to_mean=3")
    gpu = p.suppliers.index("GPU")
    s = load_catalog().system("hgx-h200")
    idle = s.idle_power_w / s.power_w
    assert p.power_share[gpu, 0] == pytest.approx(idle + (1 - idle) * 130 / 230)


# -- sites and budgets ---------------------------------------------------------------------------
def test_a_site_is_energised_in_steps_that_replace_each_other() -> None:
    p = problem("sites.0.energised=[{start: 2026Q1, mw: 40}, {start: 2026Q3, mw: 60}, "
                "{start: 2026Q4, mw: 10}]")
    assert p.site_mw[0].tolist() == [40, 40, 60, 10]


def test_a_step_before_the_start_applies_from_the_first_period() -> None:
    p = problem("sites.0.energised=[{start: 2025Q2, mw: 5}, {start: 2026Q2, mw: 9}]")
    assert p.site_mw[0].tolist() == [5, 9, 9, 9]


def test_a_sites_facility_is_an_annuity_over_its_life_per_period() -> None:
    p = problem("sites.0.facility_capex_usd_per_mw=1.2e7", "sites.0.facility_life_years=20")
    assert p.site_charge[0] == pytest.approx(1.2e7 * capital_recovery_factor(0.08, 20.0) * 0.25)
    assert p.site_pue.tolist() == [1.2] and p.electricity.tolist() == [70.0]


def test_budgets_are_per_calendar_year_and_unlimited_where_unsaid() -> None:
    p = problem("n_periods=6", "constraints.budget_usd_per_year={2027: 5.0e8}")
    year_of, budget = p.budgets()
    assert year_of.tolist() == [0, 0, 0, 0, 1, 1]
    assert budget.tolist() == [math.inf, 5e8]


def test_without_a_budget_every_period_is_one_unlimited_year() -> None:
    year_of, budget = Problem.budgets(problem())
    assert year_of.tolist() == [0, 0, 0, 0] and budget.tolist() == [math.inf]


def test_the_concentration_cap_starts_at_its_period() -> None:
    p = problem("constraints.concentration_cap=0.6", "constraints.concentration_from=2026Q3")
    assert (p.concentration_cap, p.concentration_from) == (0.6, 2)
    assert problem().concentration_from == 0


# -- who delivers what, when ---------------------------------------------------------------------
def test_the_earliest_period_is_the_later_of_first_delivery_and_orders_plus_lead_time() -> None:
    tiny = plan("suppliers.0.first_delivery=2026Q2", "suppliers.0.lead_time_quarters=2")
    gpu = tiny.suppliers[0]
    assert earliest_period(tiny, gpu) == 2  # ordered 2026Q1, delivered 2026Q3
    tiny = plan("suppliers.0.first_delivery=2026Q4", "suppliers.0.lead_time_quarters=1")
    assert earliest_period(tiny, tiny.suppliers[0]) == 3
    tiny = plan("suppliers.0.lead_time_quarters=3", "orders_from=2025Q2")
    assert earliest_period(tiny, tiny.suppliers[0]) == 0  # ordered early enough


def test_yearly_periods_round_a_first_delivery_up_to_the_next_year() -> None:
    tiny = plan("period=year", "start=2026", "n_periods=3", "suppliers.0.first_delivery=2026Q2",
                "deal.tranches=[{period: 2026Q1, mw: 3}]")
    assert earliest_period(tiny, tiny.suppliers[0]) == 1


def test_each_period_gets_the_newest_generation_started_by_its_end() -> None:
    tiny = plan("suppliers.0.generations=[{system: hgx-h200, engine: trtllm, start: 2026Q1}, "
                "{system: gb200-nvl72, engine: trtllm, start: 2026Q3}]")
    gpu = tiny.suppliers[0]
    assert [generation_at(tiny, gpu, t) for t in range(4)] == [0, 0, 1, 1]
    yearly = plan("period=year", "start=2026", "n_periods=2", "deal.tranches=[{period: 2026Q1, mw: 3}]",
                  "suppliers.0.generations=[{system: hgx-h200, engine: trtllm, start: 2026Q1}, "
                  "{system: gb200-nvl72, engine: trtllm, start: 2026Q3}]")
    assert generation_at(yearly, yearly.suppliers[0], 0) == 1  # starts within the year


def test_cohorts_mark_the_periods_a_supplier_cannot_deliver_in() -> None:
    tiny = plan("suppliers.0.first_delivery=2026Q3")
    assert cohorts(tiny).tolist() == [[-1, -1, 0, 0], [0, 0, 0, 0]]
    p = problem("suppliers.0.first_delivery=2026Q3")
    assert p.max_blocks[0].tolist() == [0, 0, 20, 20]
    assert p.rate[0, 0, 0].tolist() == [0.0, 0.0, 8e6, 8e6]  # no rates before it can deliver


def test_the_roadmaps_latest_step_serves_and_may_name_its_classes() -> None:
    steps = ("roadmap=[{start: 2026Q1, model: gpt-oss-20b}, "
             "{start: 2026Q3, model: gpt-oss-120b, classes: [fast]}]")
    prices = ("overflow.prices={gpt-oss-20b: {input_usd_per_m_tokens: 0.1, output_usd_per_m_tokens: 0.5}, "
              "gpt-oss-120b: {input_usd_per_m_tokens: 0.2, output_usd_per_m_tokens: 1.0}}")
    tiny = plan(steps, prices)
    assert [model_at(tiny, "chat", t) for t in range(4)] == ["gpt-oss-20b"] * 4
    assert [model_at(tiny, "fast", t) for t in range(4)] == ["gpt-oss-20b"] * 2 + ["gpt-oss-120b"] * 2
    tasks = capacity_tasks(tiny)
    assert len(tasks) == len(set(tasks))
    assert {(t.model, t.class_name) for t in tasks} == {
        ("gpt-oss-20b", "chat"), ("gpt-oss-20b", "fast"), ("gpt-oss-120b", "fast")
    }


def test_a_class_without_a_model_is_named_with_its_period() -> None:
    tiny = plan("roadmap=[{start: 2026Q1, model: gpt-oss-20b, classes: [chat]}]")
    with pytest.raises(PlanError, match=r"no model serves class 'fast' in 2026Q1; add a roadmap step"):
        model_at(tiny, "fast", 0)


def test_capacity_runs_start_at_each_generations_first_delivery() -> None:
    tiny = plan("suppliers.0.first_delivery=2026Q3", "suppliers.0.generations=[{system: hgx-h200, "
                "engine: trtllm, start: 2026Q1}, {system: gb200-nvl72, engine: trtllm, start: 2026Q4}]")
    systems = {t.system for t in capacity_tasks(tiny)}
    assert systems == {"hgx-h200", "gb200-nvl72", "cs-3"}
    only_first = plan("suppliers.0.generations=[{system: hgx-h200, engine: trtllm, start: 2026Q1}, "
                      "{system: gb200-nvl72, engine: trtllm, start: 2027Q2}]")  # after the horizon
    assert "gb200-nvl72" not in {t.system for t in capacity_tasks(only_first)}


# -- overflow ------------------------------------------------------------------------------------
def test_an_overflow_token_carries_the_price_of_its_input() -> None:
    """chat: $0.50 per M output plus $0.10 per M input x 500/100 input per output token."""
    p = problem(*FIXED)
    np.testing.assert_allclose(p.overflow_price[0], 0.5 + 0.1 * 500 / 100)
    np.testing.assert_allclose(p.overflow_price[1], 0.5 + 0.1 * 1000 / 250)
    np.testing.assert_allclose(p.unserved_price, 20.0)
    assert p.overflow_max_share == 0.2


def test_cached_input_is_priced_at_its_discount() -> None:
    p = problem(*FIXED, "classes.0.cached_prefix={kind: fixed, n_tokens: 1000}",
                "overflow.cached_input_discount=0.75")
    np.testing.assert_allclose(p.overflow_price[0], 0.5 + 0.1 * (500 + 1000 * 0.25) / 100)


# -- the deal ------------------------------------------------------------------------------------
def test_tranches_are_counted_in_the_suppliers_blocks() -> None:
    p = problem("deal.tranches=[{period: 2026Q2, mw: 2}, {period: 2026Q4, mw: 4}]",
                "deal.supplier.tranche_mw=2")
    assert p.deal_blocks.tolist() == [0, 1, 0, 2]


def test_a_deal_of_options_is_never_forced_even_as_announced() -> None:
    p = problem("deal.terms=option")
    fixed = p.with_deal("fixed")
    assert fixed.min_blocks[p.deal].tolist() == [0, 0, 0, 0]
    assert fixed.max_blocks[p.deal].tolist() == [3, 0, 3, 0]


def test_other_suppliers_are_untouched_by_the_deals_mode() -> None:
    p = problem()
    for mode in ("fixed", "optimised", "alternative"):
        q = p.with_deal(mode)
        assert q.max_blocks[0].tolist() == p.max_blocks[0].tolist()
        assert q.min_blocks[0].tolist() == [0, 0, 0, 0]


def test_an_unknown_deal_mode_lists_the_known_ones() -> None:
    with pytest.raises(PlanError, match="must be one of fixed, optimised, alternative; got 'maybe'"):
        problem().with_deal("maybe")


def test_without_a_deal_every_mode_is_the_same_problem() -> None:
    p = problem("deal=null")
    assert p.deal == -1 and p.suppliers == ("GPU",)
    assert p.with_deal("fixed") is p and p.with_deal("alternative") is p
    assert p.slips().tolist() == [0]
