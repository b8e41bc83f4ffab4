"""Uncertainty becomes risk: a seeded Latin hypercube, the model's own leave-one-out error per
hardware as each pool's spread, shortfall probabilities that are 0 or 1 without uncertainty, and
a tornado ordered by swing."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from megawatt.deal.capacity import TableCapacity
from megawatt.deal.planner import run_plan
from megawatt.deal.problem import build_problem, capacity_tasks
from megawatt.deal.risk import apply, error_spread, inputs, sample
from megawatt.deal.spec import load_plan
from megawatt.hardware import load_catalog

TINY = Path(__file__).parent / "tiny.yaml"
TABLE = TableCapacity(
    {
        ("hgx-h200", "gpt-oss-20b", "chat"): 8e6,
        ("cs-3", "gpt-oss-20b", "chat"): 2e6,
        ("cs-3", "gpt-oss-20b", "fast"): 3e6,
    }
)
CERTAIN = [
    "uncertainty.demand_growth_per_year={low: 2, base: 2, high: 2}",
    "uncertainty.electricity_price_factor={low: 1, base: 1, high: 1}",
    "uncertainty.delivery_slip_quarters={}",
    "uncertainty.model_error_scale=0",
]


@pytest.mark.parametrize("growth", ["2.0", "3.0"])
def test_without_uncertainty_p_shortfall_is_0_or_1(growth: str) -> None:
    plan = load_plan(TINY, [*CERTAIN, f"demand.growth_per_year={growth}"])
    result = run_plan(plan, capacity=TABLE)
    for o in result.outcomes.values():
        p = o.p_shortfall()
        assert set(np.unique(p)) <= {0.0, 1.0}
        assert p.tolist() == o.base.shortfall.astype(float).tolist()
    assert result.outcomes["alternative"].p_shortfall().tolist() == [1.0] * 4  # nobody serves 'fast'
    assert result.bars == ()


def test_the_hypercube_is_seeded_and_stratified() -> None:
    plan = load_plan(TINY)
    problem = build_problem(plan, TABLE(plan, capacity_tasks(plan)))
    unc = inputs(plan, problem, [error_spread("h200-sxm", load_catalog())])
    draws = sample(unc, len(problem.suppliers), 16, plan.seed)
    assert draws == sample(unc, len(problem.suppliers), 16, plan.seed)
    assert draws != sample(unc, len(problem.suppliers), 16, plan.seed + 1)
    growth = np.array([d.growth for d in draws])
    assert 1.5 <= growth.min() and growth.max() <= 3.0
    cdf = np.array([unc[0].value_at(q) for q in np.arange(17) / 16])  # one draw per stratum
    assert (np.histogram(growth, bins=cdf)[0] == 1).all()
    assert {d.slip[0] for d in draws} == {0, 1} and {d.slip[1] for d in draws} == {0}


def _loo_sigma(hardware: set[str], metric: str = "output_tokens_per_s") -> float:
    doc = json.loads(resources.files("megawatt").joinpath("data/calibration/efficiencies.json").read_text())
    logs = [
        np.log(r["cv_predicted"] / r["measured"])
        for r in doc["residuals"]
        if r["hardware"] in hardware and r["metric"] == metric and r.get("cv_predicted")
    ]
    return float(np.sqrt(np.mean(np.square(logs))))


def test_the_model_error_is_validates_leave_one_out_error_per_hardware() -> None:
    catalog = load_catalog()
    own = error_spread("mi355x", catalog)
    assert own.basis == "device" and own.n_rows > 100
    assert own.sigma == pytest.approx(_loo_sigma({"mi355x"}))
    vendor = error_spread("gb300", catalog)  # no rows of its own: NVIDIA's
    assert vendor.basis == "vendor NVIDIA" and vendor.sigma == pytest.approx(
        _loo_sigma({"b200", "gb200", "h100-sxm", "h200-sxm", "gh200"})
    )
    assert error_spread("tpu-v7", catalog).basis == "family gpu"
    wafer = error_spread("wse3", catalog)
    assert wafer.basis == "family wafer (per-user speed)"  # nine rows: fewer than MIN_ROWS
    assert wafer.sigma == pytest.approx(_loo_sigma({"wse2", "wse3"}, "output_tokens_per_s_per_user"))


def test_a_draw_moves_demand_throughput_prices_and_deliveries() -> None:
    plan = load_plan(TINY)
    problem = build_problem(plan, TABLE(plan, capacity_tasks(plan)))
    unc = inputs(plan, problem, [error_spread(d, load_catalog()) for d in problem.devices])
    draw = sample(unc, len(problem.suppliers), 4, plan.seed)[0]
    drawn = apply(problem, draw)
    ratio = drawn.demand.sum(axis=0) / problem.demand.sum(axis=0)
    years = (np.arange(4) + 0.5) / 4
    assert ratio == pytest.approx((draw.growth / 2.0) ** years)
    gpu = problem.suppliers.index("GPU")
    assert drawn.rate[gpu, 0, 0, 0] == pytest.approx(8e6 * draw.error[problem.device_of[gpu, 0]])
    assert drawn.electricity_factor == draw.electricity and drawn.slip.tolist() == list(draw.slip)


def test_the_tornado_is_ordered_by_swing() -> None:
    result = run_plan(load_plan(TINY), capacity=TABLE)
    swings = [b.swing for b in result.bars]
    assert swings == sorted(swings, reverse=True) and len(swings) >= 3
    names = {b.name for b in result.bars}
    assert "demand growth per year" in names and "mix drift per year" not in names  # it does not vary
