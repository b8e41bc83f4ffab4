"""plan.json's figures against the result they come from (a tiny plan on a capacity table):
money per period adds up to the NPV, bought MW are blocks times the block, the Monte Carlo
quantiles are the draws', every input appears with its source; and the cleaning rules that keep
the file stable (nine significant digits, NaN and infinities as null, numpy as plain Python)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from megawatt.deal.capacity import TableCapacity
from megawatt.deal.planner import PlanResult, run_plan
from megawatt.deal.spec import load_plan
from megawatt.report.plan import _clean, _q, plan_document, plan_json

TINY = Path(__file__).parents[1] / "deal" / "tiny.yaml"


@pytest.fixture(scope="module")
def result() -> PlanResult:
    table = TableCapacity({
        ("hgx-h200", "gpt-oss-20b", "chat"): 8e6,
        ("cs-3", "gpt-oss-20b", "chat"): 2e6,
        ("cs-3", "gpt-oss-20b", "fast"): 3e6,
    })
    return run_plan(load_plan(TINY), capacity=table, draws=5)


@pytest.fixture(scope="module")
def doc(result: PlanResult) -> dict:  # type: ignore[type-arg]
    return plan_document(result)


# -- cleaning ------------------------------------------------------------------------------------
def test_floats_keep_nine_significant_digits_and_non_finite_ones_become_null() -> None:
    assert _clean(1.23456789012345) == 1.23456789
    assert _clean(np.float32(0.5)) == 0.5 and type(_clean(np.float32(0.5))) is float
    assert _clean([math.nan, math.inf, -math.inf]) == [None, None, None]


def test_numpy_becomes_plain_python_all_the_way_down() -> None:
    cleaned = _clean({1: np.array([[1, 2], [3, 4]]), "b": (np.bool_(True), np.int64(7)), "s": "x"})
    assert cleaned == {"1": [[1, 2], [3, 4]], "b": [True, 7], "s": "x"}
    assert type(cleaned["b"][0]) is bool and type(cleaned["b"][1]) is int
    json.dumps(cleaned)  # plain data


def test_quantiles_are_the_draws_p10_p50_p90_and_mean() -> None:
    values = np.arange(11.0)
    q = _q(values)
    assert (q["p10"], q["p50"], q["p90"], q["mean"]) == (1.0, 5.0, 9.0, 5.0)
    per_period = _q(np.array([[1.0, 10.0], [3.0, 30.0]]))
    np.testing.assert_allclose(per_period["p50"], [2.0, 20.0])
    assert _q(np.zeros(0)) == {}


# -- the document against its result -------------------------------------------------------------
def test_the_document_is_json_that_reads_back_the_same(result: PlanResult, doc: dict) -> None:  # type: ignore[type-arg]
    assert json.loads(plan_json(result)) == doc
    assert plan_json(result) == plan_json(result)


def test_each_plans_money_per_period_discounts_to_its_npv(result: PlanResult, doc: dict) -> None:  # type: ignore[type-arg]
    for name, o in result.outcomes.items():
        d = doc["plans"][name]
        cost = d["cost_usd"]
        per_period = np.array([sum(cost[k][t] for k in ("capacity", "power", "site", "overflow"))
                               for t in range(4)])
        penalty = np.array(cost["unserved_penalty"])
        disc = o.problem.discount
        assert d["npv_cost_usd"] == pytest.approx(float(np.sum(disc * per_period)), rel=1e-7)
        assert d["npv_penalty_usd"] == pytest.approx(float(np.sum(disc * penalty)), rel=1e-7, abs=1e-3)
        assert d["npv_total_usd"] == pytest.approx(d["npv_cost_usd"] + d["npv_penalty_usd"], rel=1e-7)


def test_bought_and_installed_mw_are_blocks_times_the_block(result: PlanResult, doc: dict) -> None:  # type: ignore[type-arg]
    for name, o in result.outcomes.items():
        d, p = doc["plans"][name], o.problem
        for s, supplier in enumerate(p.suppliers):
            bought = np.array(d["bought_it_mw"][supplier])
            np.testing.assert_allclose(bought, o.solution.blocks[s] * p.block_it_mw[s], rtol=1e-8)
            np.testing.assert_allclose(d["installed_it_mw"][supplier], np.cumsum(bought), rtol=1e-8)
        assert sum(b["it_mw"] for b in d["buys"]) == pytest.approx(
            sum(sum(v) for v in d["bought_it_mw"].values()), rel=1e-8)


def test_demand_is_served_overflowed_or_unserved_in_the_document(doc: dict) -> None:  # type: ignore[type-arg]
    for d in doc["plans"].values():
        for c, demand in d["demand_tokens_per_s"].items():
            parts = sum(np.array(d[f"{k}_tokens_per_s"][c]) for k in ("served", "overflow", "unserved"))
            assert np.all(parts >= np.array(demand) * (1 - 1e-6))


def test_the_monte_carlo_quantiles_are_the_draws(result: PlanResult, doc: dict) -> None:  # type: ignore[type-arg]
    for name, o in result.outcomes.items():
        mc = doc["plans"][name]["monte_carlo"]
        totals = o.npv_totals()
        assert mc["draws"] == 5
        assert mc["npv_total_usd"]["p50"] == pytest.approx(float(np.percentile(totals, 50)), rel=1e-8)
        assert mc["npv_total_usd"]["mean"] == pytest.approx(float(totals.mean()), rel=1e-8)
        assert mc["npv_total_usd"]["p10"] <= mc["npv_total_usd"]["p50"] <= mc["npv_total_usd"]["p90"]
        np.testing.assert_allclose(mc["p_shortfall"], o.p_shortfall())


def test_the_verdict_and_tornado_are_the_results(result: PlanResult, doc: dict) -> None:  # type: ignore[type-arg]
    v, dv = result.verdict, doc["verdict"]
    assert v is not None
    assert dv["value_of_deal_usd"] == pytest.approx(v.value, rel=1e-8)
    assert dv["value_of_flexibility_usd"] == pytest.approx(v.flexibility, rel=1e-8)
    assert dv["p_deal_better"] == v.p_better and dv["better_until"] == v.better_until
    bars = doc["tornado"]["bars"]
    assert [b["input"] for b in bars] == [b.name for b in result.bars]
    for b in bars:
        swing = abs(b["answer_at_high_usd"] - b["answer_at_low_usd"])
        assert b["swing_usd"] == pytest.approx(swing, rel=1e-8)
    assert doc["tornado"]["base_usd"] == pytest.approx(result.answer, rel=1e-8)


def test_the_deal_capacities_and_inputs_are_listed(result: PlanResult, doc: dict) -> None:  # type: ignore[type-arg]
    assert doc["deal"] == {"name": "Wafer deal", "supplier": "Wafer", "facility_mw": 6.0,
                           "tranches": [{"period": "2026Q1", "mw": 3.0}, {"period": "2026Q3", "mw": 3.0}]}
    assert doc["periods"] == ["2026Q1", "2026Q2", "2026Q3", "2026Q4"] and doc["seed"] == 7
    caps = {(c["system"], c["class"]): c for c in doc["capacities"]}
    assert caps[("hgx-h200", "chat")]["output_tokens_per_s_per_it_mw"] == 8e6
    assert caps[("hgx-h200", "fast")]["output_tokens_per_s_per_it_mw"] == 0.0  # not in the table
    fields = {i["field"]: i for i in doc["inputs"]}
    assert fields["demand.prompts_per_day"]["value"] == 2e8
    assert fields["demand.prompts_per_day"]["source"] == "ASSUMED: test figures"
    assert "seed" not in fields and "uncertainty.draws" not in fields  # structural, not figures


def test_a_plan_without_a_deal_has_no_deal_and_no_verdict() -> None:
    table = TableCapacity({("hgx-h200", "gpt-oss-20b", "chat"): 8e6})
    plain = plan_document(run_plan(load_plan(TINY, ["deal=null", "uncertainty.delivery_slip_quarters={}"]),
                                   capacity=table, draws=1))
    assert plain["deal"] is None and "verdict" not in plain and set(plain["plans"]) == {"optimised"}
