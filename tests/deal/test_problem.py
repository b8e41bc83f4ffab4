"""A plan's coefficients: rates from the capacities (times a modelled generation's perf/W),
when each supplier can deliver, the deal's tranches, demand growth and overflow prices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from megawatt.deal.capacity import TableCapacity
from megawatt.deal.problem import build_problem, capacity_tasks
from megawatt.deal.spec import Plan, load_plan

TINY = Path(__file__).parent / "tiny.yaml"
TABLE = {
    ("hgx-h200", "gpt-oss-20b", "chat"): 8e6,
    ("cs-3", "gpt-oss-20b", "chat"): 2e6,
    ("cs-3", "gpt-oss-20b", "fast"): 3e6,
}


def _problem(plan: Plan):  # type: ignore[no-untyped-def]
    return build_problem(plan, TableCapacity(TABLE)(plan, capacity_tasks(plan)))


def test_rates_come_from_the_capacities_and_a_modelled_generation_scales_them() -> None:
    plan = load_plan(
        TINY,
        [
            "suppliers.0.generations=[{system: hgx-h200, engine: trtllm, start: 2026Q1}, "
            "{name: next, system: hgx-h200, engine: trtllm, start: 2026Q3, perf_per_watt: 1.5}]",
        ],
    )
    p = _problem(plan)
    gpu, wafer = p.suppliers.index("GPU"), p.suppliers.index("Wafer")
    assert p.rate[gpu, 0, 0, 0] == 8e6 and p.rate[gpu, 1, 0, 2] == pytest.approx(12e6)
    assert p.rate[gpu, 0, 1].max() == 0.0 and p.rate[wafer, 0, 1, 0] == 3e6
    assert p.cohort[gpu].tolist() == [0, 0, 1, 1]


def test_lead_times_and_first_deliveries_bound_the_purchases() -> None:
    p = _problem(load_plan(TINY, ["suppliers.0.lead_time_quarters=2"]))
    assert p.max_blocks[p.suppliers.index("GPU")].tolist() == [0, 0, 20, 20]
    p = _problem(load_plan(TINY, ["suppliers.0.lead_time_quarters=2", "orders_from=2025Q4"]))
    assert p.max_blocks[p.suppliers.index("GPU")].tolist() == [0, 20, 20, 20]


def test_the_deal_is_taken_as_announced_as_options_or_not_at_all() -> None:
    p = _problem(load_plan(TINY))
    row = p.deal
    assert p.block_it_mw[row] == pytest.approx(1 / 1.2)  # facility MW at the supplier's PUE
    fixed, option, none = (p.with_deal(m) for m in ("fixed", "optimised", "alternative"))
    assert fixed.min_blocks[row].tolist() == fixed.max_blocks[row].tolist() == [3, 0, 3, 0]
    assert option.min_blocks[row].tolist() == [0, 0, 0, 0] and option.max_blocks[row].tolist() == [3, 0, 3, 0]
    assert none.max_blocks[row].tolist() == [0, 0, 0, 0]


def test_demand_grows_and_the_overflow_price_carries_the_input_tokens() -> None:
    p = _problem(load_plan(TINY))
    total = p.demand.sum(axis=0)
    assert total[1] / total[0] == pytest.approx(2.0**0.25)
    assert p.overflow_price[0, 0] > 0.5  # output $0.50 plus ~5x as many input tokens at $0.10
    model = p.demand_model
    assert model is not None
    assert np.allclose(model.demand(), p.demand)
