"""What `megawatt plan` writes: plan.json with every plan, the Monte Carlo, the tornado, the
verdict, the capacities and every input with its source; a self-contained HTML page with the
charts and the table of what to buy when and why; the three files all at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from megawatt.deal.capacity import TableCapacity
from megawatt.deal.planner import PlanResult, run_plan
from megawatt.deal.spec import load_plan
from megawatt.report.plan import build_table, plan_document, plan_html, verdict_lines, write_plan_outputs

TINY = Path(__file__).parents[1] / "deal" / "tiny.yaml"


@pytest.fixture(scope="module")
def result() -> PlanResult:
    table = TableCapacity(
        {
            ("hgx-h200", "gpt-oss-20b", "chat"): 8e6,
            ("cs-3", "gpt-oss-20b", "chat"): 2e6,
            ("cs-3", "gpt-oss-20b", "fast"): 3e6,
        }
    )
    return run_plan(load_plan(TINY), capacity=table, draws=8)


def test_the_document_holds_every_plan_and_the_verdict(result: PlanResult) -> None:
    doc = plan_document(result)
    assert set(doc["plans"]) == {"optimised", "fixed", "alternative"}
    opt = doc["plans"]["optimised"]
    assert len(opt["monte_carlo"]["p_shortfall"]) == 4 and opt["monte_carlo"]["draws"] == 8
    assert all(b["reason"] for b in opt["buys"])
    assert doc["verdict"]["break_even_usd_per_mw_year"] > 0
    assert doc["tornado"]["bars"][0]["swing_usd"] >= doc["tornado"]["bars"][-1]["swing_usd"]
    assert {f["field"] for f in doc["inputs"]} >= {
        "demand.prompts_per_day",
        "deal.supplier.contract_usd_per_mw_year",
    }
    assert len(doc["capacities"]) == 4
    json.dumps(doc, allow_nan=False)  # NaN and infinities became null


def test_the_page_has_the_charts_and_the_table_of_purchases(result: PlanResult) -> None:
    page = plan_html(result)
    for needle in (
        "IT MW installed by supplier",
        "Demand against the fleet",
        "Cost per million output tokens",
        "Tornado",
        "What to buy when, and why",
        "take-or-pay tranche",
        "Inputs and their sources",
    ):
        assert needle in page
    assert page.count("<script") >= 5


def test_the_terminal_gives_the_build_plan_and_the_verdict(result: PlanResult) -> None:
    table = build_table(result.main)
    assert table.row_count == 4
    lines = verdict_lines(result)
    assert lines[0].startswith("Is Wafer deal better than the best alternative?")
    assert lines[-1].startswith("Inputs that move the answer most")


def test_the_outputs_are_written_together(result: PlanResult, tmp_path: Path) -> None:
    paths = write_plan_outputs(result, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "plan.html",
        "plan.json",
        "plan.resolved.yaml",
    ]
    assert json.loads(paths["json"].read_text())["plan"] == "tiny plan"
    assert load_plan(paths["plan"]).name == "tiny plan"
