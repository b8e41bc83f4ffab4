"""A whole plan on the tiny plan and a capacity table (no simulation), as rules: the optimised
plan is never dearer than the deal as announced nor than the best plan without it; the verdict's
value and flexibility are those differences; the deal as announced buys exactly its tranches;
each purchase's MW and price are worked out by hand; the break-even price is the contract price
that cancels the value; the deal is 'better until' the last period of its lead."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from megawatt.deal.capacity import TableCapacity
from megawatt.deal.optimise import npv
from megawatt.deal.planner import LABELS, PlanResult, _better_until, run_plan
from megawatt.deal.spec import load_plan

TINY = Path(__file__).parent / "tiny.yaml"
TABLE = TableCapacity({
    ("hgx-h200", "gpt-oss-20b", "chat"): 8e6,
    ("cs-3", "gpt-oss-20b", "chat"): 2e6,
    ("cs-3", "gpt-oss-20b", "fast"): 3e6,
})
DRAWS = 4


@pytest.fixture(scope="module")
def result() -> PlanResult:
    return run_plan(load_plan(TINY), capacity=TABLE, draws=DRAWS)


def test_three_plans_with_their_labels_and_the_draws_asked_for(result: PlanResult) -> None:
    assert set(result.outcomes) == {"optimised", "fixed", "alternative"}
    assert result.main is result.outcomes["optimised"]
    assert {o.label for o in result.outcomes.values()} == set(LABELS.values())
    assert len(result.draws) == DRAWS
    for o in result.outcomes.values():
        assert len(o.draws) == DRAWS and o.npv_totals().shape == (DRAWS,)
        p = o.p_shortfall()
        assert p.shape == (4,) and np.all((p >= 0) & (p <= 1))
        assert set(np.round(p * DRAWS, 9)) <= set(range(DRAWS + 1))  # shares of 4 draws


def test_the_optimised_plan_is_never_dearer_than_the_others(result: PlanResult) -> None:
    """It may take the deal's tranches in part or not at all: the other two are among its
    choices."""
    opt = result.outcomes["optimised"].base.npv_total
    assert opt <= result.outcomes["fixed"].base.npv_total * (1 + 1e-6)
    assert opt <= result.outcomes["alternative"].base.npv_total * (1 + 1e-6)
    assert result.answer == pytest.approx(opt, rel=1e-9)


def test_the_verdict_is_the_differences_of_the_plans(result: PlanResult) -> None:
    v = result.verdict
    assert v is not None
    fixed, alt, opt = (result.outcomes[k] for k in ("fixed", "alternative", "optimised"))
    assert v.value == pytest.approx(alt.base.npv_total - fixed.base.npv_total)
    assert v.flexibility == pytest.approx(fixed.base.npv_total - opt.base.npv_total)
    assert v.flexibility >= -1e-6 * abs(fixed.base.npv_total)
    np.testing.assert_allclose(v.value_draws, alt.npv_totals() - fixed.npv_totals())
    assert v.p_better == pytest.approx(float(np.mean(v.value_draws > 0)))
    per_period = (alt.solution.period_cost + alt.solution.penalty) - (
        fixed.solution.period_cost + fixed.solution.penalty)
    np.testing.assert_allclose(v.advantage_per_period, per_period)
    assert npv(fixed.problem, v.advantage_per_period) == pytest.approx(v.value, rel=1e-6)


def test_the_deal_as_announced_buys_exactly_its_tranches(result: PlanResult) -> None:
    fixed = result.outcomes["fixed"]
    deal = fixed.problem.deal
    assert fixed.solution.blocks[deal].tolist() == [3, 0, 3, 0]  # 3 MW facility in 1 MW blocks
    assert result.outcomes["alternative"].solution.blocks[deal].sum() == 0
    opt = result.outcomes["optimised"].solution.blocks[deal]
    assert np.all(opt <= np.array([3, 0, 3, 0]))  # options: any part of each tranche


def test_each_purchase_is_its_blocks_at_its_price(result: PlanResult) -> None:
    """A contract pays its charge for the periods left in the horizon; a purchase its capex."""
    for o in result.outcomes.values():
        p, sol = o.problem, o.solution
        by_key = {(b.period, b.supplier): b for b in o.buys}
        assert len(by_key) == len(o.buys)
        for s in range(len(p.suppliers)):
            for t in range(4):
                n = int(sol.blocks[s, t])
                buy = by_key.get((p.period_labels[t], p.suppliers[s]))
                assert (buy is None) == (n == 0)
                if buy is None:
                    continue
                mw = n * p.block_it_mw[s]
                assert buy.it_mw == pytest.approx(mw)
                price = mw * p.charge[s, t] * (4 - t) if p.hosted[s] else mw * p.capex[s, t]
                assert buy.usd == pytest.approx(price)


def test_the_deals_tranches_are_named_take_or_pay_and_say_what_they_serve(result: PlanResult) -> None:
    fixed = result.outcomes["fixed"]
    wafer = [b for b in fixed.buys if b.supplier == "Wafer"]
    assert [b.period for b in wafer] == ["2026Q1", "2026Q3"]
    assert all(b.reason.startswith("take-or-pay tranche") for b in wafer)
    assert all("serves" in b.reason for b in wafer)
    # A contract MW bought in 2026Q1 pays 15M x 1.2 a year for the whole year left.
    assert wafer[0].usd == pytest.approx(2.5 * 15e6 * 1.2 * 0.25 * 4)


def test_the_break_even_price_cancels_the_deals_value(result: PlanResult) -> None:
    """Value / NPV of the deal's facility MW-years, added to the contract price."""
    v = result.verdict
    assert v is not None
    fixed = result.outcomes["fixed"]
    p = fixed.problem
    installed_it_mw = np.cumsum(fixed.solution.blocks[p.deal] * p.block_it_mw[p.deal])
    facility_mw_years = float(np.sum(p.discount * installed_it_mw * 0.25)) * 1.2
    assert v.break_even_usd_per_mw_year == pytest.approx(15e6 + v.value / facility_mw_years)


def test_a_plan_without_a_deal_has_one_plan_and_no_verdict() -> None:
    result = run_plan(load_plan(TINY, ["deal=null", "uncertainty.delivery_slip_quarters={}"]),
                      capacity=TABLE, draws=2)
    assert set(result.outcomes) == {"optimised"} and result.verdict is None
    assert result.capacities and all(c.task.system == "hgx-h200" for c in result.capacities)


def test_a_purchased_deal_has_no_break_even_contract_price() -> None:
    plan = load_plan(TINY, ["deal.supplier={name: Wafer, terms: purchase, generations: [{system: cs-3, "
                            "engine: cerebras, start: 2026Q1}], first_delivery: 2026Q1, tranche_mw: 1, "
                            "max_tranches_per_period: 5}"])
    result = run_plan(plan, capacity=TABLE, draws=1)
    assert result.verdict is not None and math.isnan(result.verdict.break_even_usd_per_mw_year)


def test_without_draws_no_period_falls_short() -> None:
    result = run_plan(load_plan(TINY), capacity=TABLE, draws=1)
    empty = replace(result.main, draws=())
    assert empty.p_shortfall().tolist() == [0.0] * 4 and empty.npv_totals().size == 0


@pytest.mark.parametrize(
    ("advantage", "until"),
    [
        ([1.0, 2.0, -1.0, -3.0], "2026Q2"),
        ([1.0, -1.0, 2.0, -3.0], "2026Q3"),  # the last period the deal leads in
        ([-1.0, -2.0, -1.0, -3.0], None),  # never better
        ([-1.0, 2.0, -1.0, 3.0], None),  # better at the end
        ([0.0, 0.0, 0.0, 0.0], None),  # a tie is not better
    ],
)
def test_better_until_is_the_last_period_the_deal_leads_in_when_it_leads_no_more(
    advantage: list[float], until: str | None
) -> None:
    assert _better_until(np.array(advantage), ("2026Q1", "2026Q2", "2026Q3", "2026Q4")) == until


def test_progress_counts_the_draws() -> None:
    seen: dict[str, list[tuple[int, int]]] = {}
    run_plan(load_plan(TINY), capacity=TABLE, draws=3,
             progress=lambda phase, done, total, label: seen.setdefault(phase, []).append((done, total)))
    assert seen["draws"][-1] == (3, 3)
