"""The uncertain inputs one by one: triangular ranges (their ends, their mode, a range of one
value), slips rounded to whole periods, the model's error as a log-normal multiplier that is 1 at
the median and off at scale 0; the base draw; a draw applied to a problem; an outcome's figures
worked out from its solution; draws whose results do not depend on how they are chunked; a
tornado without the inputs that do not vary."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

from megawatt.deal.capacity import TableCapacity
from megawatt.deal.optimise import solve
from megawatt.deal.problem import DemandModel, build_problem, capacity_tasks
from megawatt.deal.risk import (
    Bar,
    Draw,
    ErrorSpread,
    Outcome,
    _triangular,
    apply,
    base_draw,
    inputs,
    operate,
    outcome,
    run_draws,
    sample,
    tornado,
)
from megawatt.deal.spec import RangeSpec, load_plan

from .test_optimise import make_problem

TINY = Path(__file__).parent / "tiny.yaml"
TABLE = TableCapacity({
    ("hgx-h200", "gpt-oss-20b", "chat"): 8e6,
    ("cs-3", "gpt-oss-20b", "chat"): 2e6,
    ("cs-3", "gpt-oss-20b", "fast"): 3e6,
})


def tiny(*overrides: str):  # type: ignore[no-untyped-def]
    plan = load_plan(TINY, list(overrides))
    return plan, build_problem(plan, TABLE(plan, capacity_tasks(plan)))


# -- one input at a time -------------------------------------------------------------------------
def test_a_triangular_range_runs_from_low_to_high_with_its_mode_most_likely() -> None:
    q = _triangular(RangeSpec(low=1.0, base=2.0, high=5.0))
    assert q(0.0) == pytest.approx(1.0) and q(1.0) == pytest.approx(5.0)
    # The CDF at the mode is (base - low) / (high - low) = 1/4.
    assert q(0.25) == pytest.approx(2.0)
    values = [q(u) for u in np.linspace(0, 1, 21)]
    assert values == sorted(values)


def test_a_symmetric_range_has_its_base_as_median_and_a_point_range_is_its_value() -> None:
    assert _triangular(RangeSpec(low=0.8, base=1.0, high=1.2))(0.5) == pytest.approx(1.0)
    point = _triangular(RangeSpec(low=3.0, base=3.0, high=3.0))
    assert {point(u) for u in (0.0, 0.3, 1.0)} == {3.0}


def test_inputs_come_in_the_hypercubes_column_order() -> None:
    plan, problem = tiny()
    spreads = [ErrorSpread("h200-sxm", 0.1, 20, "device"), ErrorSpread("wse3", 0.2, 9, "family")]
    names = [u.name for u in inputs(plan, problem, spreads)]
    assert names == ["demand growth per year", "mix drift per year", "electricity price factor",
                     "GPU delivery slip", "Wafer delivery slip", "h200-sxm model error", "wse3 model error"]


def test_slips_are_whole_periods_rounded_to_the_nearest() -> None:
    plan, problem = tiny("uncertainty.delivery_slip_quarters={GPU: {low: 0, base: 2, high: 4}}")
    slip = inputs(plan, problem, [])[3]
    assert [slip.value_at(u) for u in (0.0, 0.5, 1.0)] == [0.0, 2.0, 4.0]
    yearly, problem = tiny("period=year", "start=2026", "n_periods=2",
                           "deal.tranches=[{period: 2026Q1, mw: 3}]",
                           "uncertainty.delivery_slip_quarters={GPU: {low: 0, base: 2, high: 6}}")
    slip = inputs(yearly, problem, [])[3]
    assert slip.value_at(0.0) == 0.0 and slip.value_at(1.0) == 2.0  # 6 quarters: 1.5 years -> 2
    assert slip.value_at(0.1) == 0.0  # about 1.1 quarters: 0.28 years -> 0


def test_the_model_error_is_log_normal_around_one() -> None:
    plan, problem = tiny()
    error = inputs(plan, problem, [ErrorSpread("h200-sxm", 0.2, 50, "device")])[-1]
    assert error.value_at(0.5) == pytest.approx(1.0)
    assert error.value_at(float(norm.cdf(1.0))) == pytest.approx(math.exp(0.2))
    assert error.value_at(float(norm.cdf(-2.0))) == pytest.approx(math.exp(-0.4))
    assert math.isfinite(error.value_at(0.0)) and math.isfinite(error.value_at(1.0))  # clipped tails


@pytest.mark.parametrize(("scale", "sigma"), [(0.0, 0.2), (3.0, 0.0)])
def test_no_spread_or_scale_zero_turns_the_model_error_off(scale: float, sigma: float) -> None:
    plan, problem = tiny(f"uncertainty.model_error_scale={scale}")
    error = inputs(plan, problem, [ErrorSpread("h200-sxm", sigma, 50, "device")])[-1]
    assert {error.value_at(u) for u in (0.01, 0.5, 0.99)} == {1.0}


def test_the_scale_multiplies_the_spread() -> None:
    plan, problem = tiny("uncertainty.model_error_scale=2")
    error = inputs(plan, problem, [ErrorSpread("h200-sxm", 0.1, 50, "device")])[-1]
    assert error.value_at(float(norm.cdf(1.0))) == pytest.approx(math.exp(0.2))


def test_the_base_draw_holds_every_input_at_its_base() -> None:
    plan, problem = tiny("uncertainty.delivery_slip_quarters={GPU: {low: 0, base: 1, high: 3}}")
    unc = inputs(plan, problem, [ErrorSpread("h200-sxm", 0.3, 50, "device")])
    base = base_draw(plan, unc, len(problem.suppliers))
    assert base == Draw(2.0, 0.0, 1.0, (1, 0), (1.0,))


def test_draws_stay_inside_their_ranges() -> None:
    plan, problem = tiny()
    unc = inputs(plan, problem, [])
    for d in sample(unc, len(problem.suppliers), 40, 3):
        assert 1.5 <= d.growth <= 3.0 and d.drift == 0.0 and 0.8 <= d.electricity <= 1.2
        assert d.slip[0] in (0, 1) and d.slip[1] == 0 and d.error == ()


# -- a draw applied ------------------------------------------------------------------------------
def test_a_draw_changes_only_what_it_draws() -> None:
    _, problem = tiny()
    same = apply(problem, Draw(2.0, 0.0, 1.0, (0, 0), ()))
    np.testing.assert_allclose(same.demand, problem.demand)
    np.testing.assert_allclose(same.rate, problem.rate)
    assert same.charge is problem.charge and same.site_mw is problem.site_mw
    slow = apply(problem, Draw(2.0, 0.0, 1.5, (2, 0), tuple(0.5 for _ in problem.devices)))
    np.testing.assert_allclose(slow.rate, problem.rate * 0.5)
    assert slow.electricity_factor == 1.5 and slow.slip.tolist() == [2, 0]


# -- outcomes ------------------------------------------------------------------------------------
def hand_problem():  # type: ignore[no-untyped-def]
    p = make_problem(site_mw=20.0)
    model = DemandModel(8.64e6, 1.0, 0.0, np.array([1.0]), np.array([False]), np.array([100.0]),
                        np.array([1.5]), (np.arange(3) + 0.5) * 0.25)
    return replace(p, demand=model.demand(), demand_model=model, devices=("d0",),
                   device_of=np.zeros((2, 1), np.int64))


def test_an_outcome_sums_its_solution_over_suppliers_and_classes() -> None:
    p = hand_problem()
    sol = solve(p, fixed_blocks=np.array([[1, 0, 0], [0, 2, 0]]))
    out = outcome(p, sol)
    np.testing.assert_allclose(out.installed_mw, [1.0, 3.0, 3.0])
    np.testing.assert_allclose(out.used_mw, sol.served_mw.sum(axis=(0, 1, 2)))
    assert np.all(out.served + out.overflow + sol.unserved.sum(axis=0) >= out.demand * (1 - 1e-9))
    assert out.npv_total == pytest.approx(sol.objective, rel=1e-9)
    assert out.npv_cost == pytest.approx(float(np.sum(p.discount * sol.period_cost)))


def test_capacity_adds_the_idle_mw_at_the_tokens_per_mw_served() -> None:
    o = Outcome(npv_cost=0.0, npv_penalty=0.0, period_cost=np.ones(2), penalty=np.zeros(2),
                delivered_tokens=np.array([2e6, 0.0]), shortfall=np.zeros(2, bool),
                stranded_mw=np.array([1.0, 3.0]), installed_mw=np.array([3.0, 3.0]),
                used_mw=np.array([2.0, 0.0]), demand=np.ones(2), served=np.array([4e6, 0.0]),
                overflow=np.zeros(2))
    np.testing.assert_allclose(o.capacity, [4e6 + 1.0 * 2e6, 0.0])  # nothing in use: no estimate
    prices = o.period_usd_per_m_tokens
    assert prices[0] == pytest.approx(0.5) and math.isnan(prices[1])
    assert o.usd_per_m_tokens == pytest.approx(2 / 2.0)
    assert math.isnan(replace(o, delivered_tokens=np.zeros(2)).usd_per_m_tokens)


def test_operating_under_a_draw_is_solving_the_drawn_problem() -> None:
    p = hand_problem()
    blocks = np.array([[1, 0, 0], [0, 1, 0]])
    draw = Draw(1.0, 0.0, 1.3, (0, 1), (0.8,))
    got = operate(p, blocks, draw)
    drawn = apply(p, draw)
    assert got.npv_total == pytest.approx(solve(drawn, fixed_blocks=blocks).objective, rel=1e-9)
    assert got.installed_mw.tolist() == [1.0, 1.0, 2.0]  # the purchase a quarter late


def test_results_do_not_depend_on_how_draws_are_chunked_and_progress_counts_them() -> None:
    p = hand_problem()
    plans = {"a": np.array([[1, 0, 0], [0, 1, 0]]), "b": np.array([[0, 0, 0], [2, 0, 0]])}
    draws = [Draw(1.0 + 0.1 * i, 0.0, 1.0, (0, i % 2), (1.0,)) for i in range(5)]
    seen: list[tuple[int, int]] = []
    whole = run_draws(p, plans, draws, chunk=8)
    parts = run_draws(p, plans, draws, chunk=2, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(2, 5), (4, 5), (5, 5)]
    for name in plans:
        assert [o.npv_total for o in whole[name]] == [o.npv_total for o in parts[name]]
    assert len(whole["a"]) == 5


def test_more_demand_never_costs_less_for_the_same_purchases() -> None:
    p = hand_problem()
    blocks = np.array([[1, 0, 0], [0, 1, 0]])
    totals = [operate(p, blocks, Draw(g, 0.0, 1.0, (0, 0), (1.0,))).npv_total for g in (1.0, 2.0, 4.0)]
    assert totals == sorted(totals)


def test_the_tornado_leaves_out_inputs_that_do_not_vary_and_swings_each_alone() -> None:
    plan, problem = tiny(
        "uncertainty.mix_drift_per_year={low: 0, base: 0, high: 0}",
        "uncertainty.delivery_slip_quarters={}",
    )
    problem = problem.with_deal("alternative")  # nobody serves 'fast': its penalty follows demand
    unc = inputs(plan, problem, [])
    base = base_draw(plan, unc, len(problem.suppliers))
    blocks = solve(problem).blocks
    answer, bars = tornado(plan, problem, blocks, unc, base)
    assert answer == pytest.approx(operate(problem, blocks, base).npv_total)
    assert {b.name for b in bars} == {"demand growth per year", "electricity price factor"}
    growth = next(b for b in bars if b.name == "demand growth per year")
    lo, hi = (unc[0].value_at(q) for q in (0.1, 0.9))
    assert (growth.low_value, growth.high_value) == pytest.approx((lo, hi))
    assert growth.answer_low < answer < growth.answer_high  # more demand costs more to serve
    assert [b.swing for b in bars] == sorted((b.swing for b in bars), reverse=True)


def test_a_bars_swing_is_the_distance_between_its_answers() -> None:
    assert Bar("x", 1.0, 2.0, 7.0, 3.0).swing == 4.0
