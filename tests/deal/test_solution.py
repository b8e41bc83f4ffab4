"""What a solved plan says, on tiny hand-made problems: demand is served, overflowed or unserved
and nothing is lost; no more is used than installed, no site above its power, no overflow above
its cap; cash per calendar year, installed MW and costs per period worked out by hand; the
constraints met with no slack are named per period; impossible purchases are one-line errors."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from megawatt.deal.optimise import Solution, binding, cash, installed, npv, solve
from megawatt.deal.problem import Problem
from megawatt.errors import PlanError

from .test_optimise import HOURS, make_problem


def two_years(*, budget: tuple[float, float] = (math.inf, math.inf), **options: object) -> Problem:
    """Six quarters, the first four in one calendar year."""
    p = make_problem(n_t=6, demand=np.array([[1e6, 1.5e6, 2e6, 2.5e6, 3e6, 3.5e6]]), **options)  # type: ignore[arg-type]
    return replace(p, period_labels=("2026Q1", "2026Q2", "2026Q3", "2026Q4", "2027Q1", "2027Q2"),
                   year_of_period=np.array([0, 0, 0, 0, 1, 1]), budget=np.array(budget))


# -- conservation and limits ---------------------------------------------------------------------
@pytest.mark.parametrize("options", [{}, {"site_mw": 1.3}, {"cap": 0.6}, {"max_blocks": 1}])
def test_demand_is_served_overflowed_or_unserved_and_nothing_is_lost(options: dict[str, object]) -> None:
    p = make_problem(**options)  # type: ignore[arg-type]
    got = solve(p)
    assert np.all(got.served + got.overflow + got.unserved >= p.demand * (1 - 1e-9))
    # The cloud and the penalty only take what the fleet leaves (a contract MW may serve more
    # than the demand at no extra cost, never less than it could).
    left = np.maximum(p.demand - got.served, 0.0)
    np.testing.assert_allclose(got.overflow + got.unserved, left, rtol=1e-6, atol=1e-3)
    assert np.all(got.overflow <= p.overflow_max_share * p.demand * (1 + 1e-9))
    np.testing.assert_allclose(got.served, np.einsum("sgct,sgct->ct", got.served_mw, p.rate))


@pytest.mark.parametrize("options", [{}, {"site_mw": 1.3}, {"cap": 0.6}])
def test_no_more_is_used_than_installed_and_no_site_above_its_power(options: dict[str, object]) -> None:
    p = make_problem(**options)  # type: ignore[arg-type]
    got = solve(p)
    used = got.served_mw.sum(axis=2)  # (S, G, T)
    assert np.all(used <= got.installed_mw + 1e-6)
    owned = ~p.hosted
    np.testing.assert_allclose(got.site_mw.sum(axis=2)[owned], got.installed_mw[owned], atol=1e-6)
    assert np.all(got.site_mw.sum(axis=(0, 1)) * p.site_pue[:, None] <= p.site_mw + 1e-6)


def test_stranded_capacity_is_what_is_installed_and_serves_nothing() -> None:
    """Two purchased MW forced in the first quarter, at 1e6 tokens/s per MW: demand of 1e6,
    2e6 and 3.5e6 tokens/s uses 1, 2 and 2 of them (a MW in use draws more power than an idle
    one, so no more is used than needed)."""
    p = make_problem(charge=(1e9, 1e6), site_mw=20.0)
    forced = solve(p, fixed_blocks=np.array([[0, 0, 0], [2, 0, 0]]))
    np.testing.assert_allclose(forced.served_mw[1, 0, 0], [1.0, 2.0, 2.0], atol=1e-6)
    np.testing.assert_allclose(forced.stranded_mw, [1.0, 0.0, 0.0], atol=1e-6)


# -- money by hand -------------------------------------------------------------------------------
def test_costs_per_period_add_the_capacity_power_site_and_overflow() -> None:
    p = make_problem(site_mw=20.0)
    got = solve(p, fixed_blocks=np.array([[1, 0, 0], [0, 1, 0]]))
    # Capacity: the contract's 1 MW from Q1 at 3e6, the purchase's 1 MW from Q2 at 1e6.
    np.testing.assert_allclose(got.capacity_cost, [[3e6, 3e6, 3e6], [0.0, 1e6, 1e6]])
    # The site: the purchased MW x PUE pays the site charge from Q2.
    np.testing.assert_allclose(got.site_cost, [0.0, 1.2 * 0.5e6, 1.2 * 0.5e6])
    # Power: idle (0.3 of peak) on the installed MW, and 0.5 more on the MW in use.
    in_use = got.served_mw[1].sum(axis=(0, 1))
    expected = 1.2 * 70.0 * HOURS * (0.3 * np.array([0.0, 1.0, 1.0]) + 0.5 * in_use)
    np.testing.assert_allclose(got.power_cost, expected)


def test_the_objective_is_the_npv_of_cost_and_penalty() -> None:
    p = make_problem()
    got = solve(p)
    assert got.objective == pytest.approx(npv(p, got.period_cost + got.penalty), rel=1e-9)
    assert npv(p, np.ones(3)) == pytest.approx(float(p.discount.sum()))


def test_the_price_of_a_token_is_the_periods_cost_over_its_tokens() -> None:
    p = make_problem()
    got = solve(p)
    tokens = ((got.served + got.overflow) * p.tokens_per_rate[:, None]).sum(axis=0)
    np.testing.assert_allclose(got.delivered_tokens, tokens)
    np.testing.assert_allclose(got.usd_per_m_tokens(), got.period_cost / (tokens / 1e6))


def test_a_period_that_delivers_nothing_has_no_price_per_token() -> None:
    p = make_problem(demand=np.array([[0.0, 1e6, 1e6]]))
    got = solve(p)
    prices = got.usd_per_m_tokens()
    assert math.isnan(prices[0]) and np.isfinite(prices[1:]).all()


def test_shortfall_marks_the_periods_with_demand_left_unserved() -> None:
    p = make_problem(max_blocks=0)  # nothing can be bought: only the overflow serves
    got = solve(p)
    np.testing.assert_allclose(got.overflow, 0.25 * p.demand)
    np.testing.assert_allclose(got.unserved, 0.75 * p.demand)
    assert got.shortfall(p.demand).tolist() == [True, True, True]
    assert solve(make_problem(site_mw=20.0, max_blocks=4)).shortfall(p.demand).tolist() == [False] * 3


def test_penalty_is_the_unserved_tokens_at_their_price() -> None:
    p = make_problem(max_blocks=0)
    got = solve(p)
    tokens = p.tokens_per_rate[0]
    np.testing.assert_allclose(got.penalty, 0.75 * p.demand[0] * tokens * 20.0 / 1e6)
    np.testing.assert_allclose(got.overflow_cost, 0.25 * p.demand[0] * tokens * 2.0 / 1e6)


# -- installed and cash --------------------------------------------------------------------------
def test_installed_mw_accumulates_blocks_from_their_delivery() -> None:
    p = replace(make_problem(block=(2.0, 0.5)), slip=np.array([0, 1]))
    mw = installed(p, np.array([[1, 0, 2], [2, 1, 0]]))
    np.testing.assert_allclose(mw[0, 0], [2.0, 2.0, 6.0])
    np.testing.assert_allclose(mw[1, 0], [0.0, 1.0, 1.5])  # each block a quarter late


def test_an_order_slipping_past_the_horizon_never_arrives_nor_costs() -> None:
    p = replace(make_problem(site_mw=20.0), slip=np.array([0, 1]))
    got = solve(p, fixed_blocks=np.array([[0, 0, 0], [0, 0, 2]]))
    assert got.installed_mw.sum() == 0.0 and got.capacity_cost.sum() == 0.0


def test_cash_pays_capex_in_the_delivery_year_and_contracts_as_they_run() -> None:
    """The purchase (capex 20e6 per MW) is paid when ordered; the contract (3e6 per MW and
    quarter) in every quarter it runs, each in its calendar year."""
    p = two_years()
    blocks = np.zeros((2, 6), np.int64)
    blocks[0, 2] = 1  # a contract MW from 2026Q3: 2 quarters in 2026, 2 in 2027
    blocks[1, 3] = 2  # 2 purchased MW in 2026Q4
    np.testing.assert_allclose(cash(p, blocks), [2 * 3e6 + 2 * 20e6, 2 * 3e6])


def test_a_budget_limits_each_years_cash() -> None:
    p = two_years(budget=(45e6, math.inf), site_mw=20.0)
    got = solve(p)
    assert cash(p, got.blocks)[0] <= 45e6 * (1 + 1e-9)
    free = solve(two_years(site_mw=20.0))
    assert got.objective >= free.objective * (1 - 1e-9)


# -- what binds ----------------------------------------------------------------------------------
def test_a_supply_cap_that_binds_is_named_in_its_period() -> None:
    p = make_problem(charge=(0.0, 2e6), demand=np.array([[5e6, 8e6, 12e6]]), site_mw=20.0)
    got = solve(p)
    tight = binding(p, got)
    assert all("S0 supply cap" in tight[label] for label in p.period_labels)


def test_a_full_site_binds_its_power_and_a_forced_block_does_not_bind_its_cap() -> None:
    p = make_problem(site_mw=1.2, charge=(9e6, 1e6))  # one purchased MW fills the site
    got = solve(p)
    assert got.installed_mw[1, 0, -1] == pytest.approx(1.0)
    tight = binding(p, got)
    assert "site power" in tight[p.period_labels[-1]]
    forced = replace(p, min_blocks=np.array([[2, 0, 0], [0, 0, 0]]),
                     max_blocks=np.array([[2, 0, 0], [2, 2, 2]]))
    assert "S0 supply cap" not in binding(forced, solve(forced))["2026Q1"]  # forced, not chosen


def test_the_share_cap_and_the_budget_are_named_where_they_bind() -> None:
    p = make_problem(charge=(0.0, 2e6), demand=np.array([[5e6, 8e6, 12e6]]), site_mw=20.0, cap=0.5,
                     max_blocks=6)
    tight = binding(p, solve(p))
    assert any("S0 share cap" in v for v in tight.values())
    # The contract priced out: the budget buys exactly two purchased MW (20e6 of capex each).
    b = make_problem(budget=40e6, site_mw=20.0, charge=(1e9, 1e6), demand=np.array([[5e6, 8e6, 12e6]]))
    got = solve(b)
    assert cash(b, got.blocks)[0] == pytest.approx(40e6)
    assert "budget" in binding(b, got)[b.period_labels[-1]]


def test_an_overflow_at_its_cap_is_named_with_its_class() -> None:
    p = make_problem(max_blocks=0)
    tight = binding(p, solve(p))
    assert tight == {label: ["overflow cap (c0)"] for label in p.period_labels}


# -- errors --------------------------------------------------------------------------------------
def test_more_forced_blocks_than_a_supplier_delivers_is_named() -> None:
    p = make_problem()
    bad = replace(p, min_blocks=np.array([[0, 3, 0], [0, 0, 0]]))
    with pytest.raises(PlanError, match=r"^plan: S0 must take 3 blocks in 2026Q2 but can deliver at most 2; "
                                         r"check its tranches and supply cap\.$"):
        solve(bad)


def test_purchases_too_big_for_the_site_cannot_be_operated() -> None:
    p = make_problem(site_mw=1.0)
    with pytest.raises(PlanError, match=r"the given purchases cannot be operated .*a site may be too small"):
        solve(p, fixed_blocks=np.array([[0, 0, 0], [2, 0, 0]]))


def test_forced_tranches_over_the_budget_name_the_budget() -> None:
    p = make_problem(budget=10e6, site_mw=20.0)
    forced = replace(p, min_blocks=np.array([[0, 0, 0], [1, 0, 0]]))  # 20e6 of capex
    with pytest.raises(PlanError, match=r"no plan satisfies every constraint .*Relax "
                                         r"constraints\.budget_usd_per_year"):
        solve(forced)


def test_the_solution_reports_its_status_gap_and_time() -> None:
    got: Solution = solve(make_problem())
    assert got.status == "optimal" and 0.0 <= got.gap <= 1e-6 and got.solve_s >= 0.0
    assert got.blocks.dtype == np.int64
