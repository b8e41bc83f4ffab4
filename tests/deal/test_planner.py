"""A plan end to end: the same seed gives identical plan.json with one or two workers; the
verdict's break-even price is where the deal stops being better."""

from __future__ import annotations

from pathlib import Path

import pytest

from megawatt.deal.capacity import SimulatedCapacity, TableCapacity
from megawatt.deal.planner import run_plan
from megawatt.deal.spec import load_plan
from megawatt.report.plan import plan_json

TINY = Path(__file__).parent / "tiny.yaml"
TABLE = TableCapacity(
    {
        ("hgx-h200", "gpt-oss-20b", "chat"): 8e6,
        ("cs-3", "gpt-oss-20b", "chat"): 2e6,
        ("cs-3", "gpt-oss-20b", "fast"): 3e6,
    }
)


def test_the_same_seed_gives_identical_plan_json_with_one_or_two_workers() -> None:
    plan = load_plan(TINY)
    one = run_plan(plan, capacity=SimulatedCapacity(1), workers=1)
    two = run_plan(plan, capacity=SimulatedCapacity(2), workers=2)
    assert plan_json(one) == plan_json(two)
    other = run_plan(load_plan(TINY, ["seed=8"]), capacity=TABLE, draws=4)
    assert plan_json(other) != plan_json(run_plan(plan, capacity=TABLE, draws=4))


def test_at_the_break_even_price_the_deal_is_as_good_as_the_alternative() -> None:
    plan = load_plan(TINY, ["uncertainty.draws=1"])
    verdict = run_plan(plan, capacity=TABLE).verdict
    assert verdict is not None and verdict.value > 0  # only the wafers serve the fast class
    price = verdict.break_even_usd_per_mw_year
    assert price > 15e6
    at = run_plan(
        load_plan(TINY, ["uncertainty.draws=1", f"deal.supplier.contract_usd_per_mw_year={price}"]),
        capacity=TABLE,
    ).verdict
    assert at is not None and at.value == pytest.approx(0.0, abs=1e-6 * abs(verdict.value) + 1.0)


def test_a_deal_of_options_is_its_own_optimised_plan() -> None:
    result = run_plan(load_plan(TINY, ["deal.terms=option"]), capacity=TABLE, draws=2)
    assert result.verdict is not None and result.verdict.flexibility == pytest.approx(0.0, abs=1.0)
    assert all("take-or-pay" not in b.reason for b in result.outcomes["fixed"].buys)


def test_taking_the_tranches_as_options_never_costs_more() -> None:
    result = run_plan(load_plan(TINY), capacity=TABLE)
    assert result.verdict is not None and result.verdict.flexibility >= -1e-6
    fixed = result.outcomes["fixed"]
    assert [b.reason.startswith("take-or-pay tranche") for b in fixed.buys if b.supplier == "Wafer"] == [
        True,
        True,
    ]
