"""Plan files: the embedded default reproduces the seed deal and sources every figure; bad
input is one line naming the field, the rule and the value."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from megawatt.deal.spec import figures, load_deal, load_plan, quarter_of, with_deal
from megawatt.errors import PlanError

TINY = Path(__file__).parent / "tiny.yaml"


def test_the_default_plan_is_the_seed_deal() -> None:
    plan = load_plan()
    assert plan.deal is not None
    assert plan.deal.supplier.name == "Cerebras" and plan.deal.total_mw == 750
    assert plan.period_labels[0] == "2026Q1" and plan.period_labels[-1] == "2028Q4"
    assert len(plan.all_suppliers) == 6 and len(plan.classes) == 5
    assert {s.model for s in plan.roadmap} == {"gpt-oss-120b", "deepseek-v3"}


def test_every_figure_of_the_default_plan_has_a_source_or_is_an_assumption() -> None:
    found = figures(load_plan())
    unsourced = [f.path for f in found if not f.source.strip()]
    assert not unsourced, unsourced
    assert len(found) > 100
    assert any(f.assumed for f in found) and any("FACTS.md" in f.source for f in found)


def test_a_figure_without_a_source_is_found() -> None:
    plan = load_plan(TINY, ["source=", "demand.source=", "demand.sources={growth_per_year: ASSUMED}"])
    paths = {f.path for f in figures(plan) if not f.source}
    assert "demand.prompts_per_day" in paths and "demand.growth_per_year" not in paths
    assert "discount_rate" in paths  # a default the file leaves unsaid has no source either


def test_dates_are_quarters() -> None:
    assert quarter_of("2026Q3") - quarter_of("2026") == 2
    plan = load_plan(TINY, ["period=year", "n_periods=2", "start=2026"])
    assert plan.period_labels == ("2026", "2027") and plan.period_index("2027Q3") == 1


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("colour=blue", "colour: unknown key (known keys here: source, sources, name"),
        ("start=2026Q5", "start: a date is YYYYQn or YYYY"),
        ("demand.drift_classes=[poetry]", "demand.drift_classes must name classes of the plan"),
        (
            "deal.tranches.0.mw=2.5",
            "tranches[0].mw must be a whole number of the supplier's 1 MW blocks; got 2.5",
        ),
        ("roadmap.0.model=gpt-7", "overflow.prices needs a price for every roadmap model; got none for"),
        ("suppliers.0.generations.0.system=h9000", "suppliers[0].generations[0].system: unknown system"),
        ("suppliers.0.generations.0.engine=cerebras", "engine: must be one of"),
        ("uncertainty.delivery_slip_quarters={Nobody: {low: 0, base: 0, high: 1}}", "got ['Nobody']"),
        ("demand.sources={colour: x}", "sources must name fields of this object"),
        ("deal.supplier.pue=null", "terms contract needs contract_usd_per_mw_year"),
        ("overflow.prices={}", "overflow.prices needs a price for every roadmap model"),
        ("uncertainty.demand_growth_per_year={low: 3, base: 2, high: 4}", "needs low <= base <= high"),
        ("demand.growth_per_year=.inf", "is not a finite number"),
    ],
)
def test_bad_input_is_one_line_naming_the_field(override: str, needle: str) -> None:
    with pytest.raises(PlanError) as err:
        load_plan(TINY, [override])
    message = str(err.value)
    assert needle in message and "\n" not in message


def test_an_unknown_model_is_named() -> None:
    with pytest.raises(PlanError, match=r"roadmap\[0\].model: unknown model id 'gpt-7'"):
        load_plan(
            TINY,
            [
                "roadmap.0.model=gpt-7",
                "overflow.prices={gpt-7: {input_usd_per_m_tokens: 1, output_usd_per_m_tokens: 1}}",
            ],
        )


def test_a_missing_file_or_bad_yaml_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="does not exist"):
        load_plan(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: a\nname: b\n")
    with pytest.raises(PlanError, match="duplicate key 'name'"):
        load_plan(bad)


def test_a_deal_file_replaces_the_plan_deal(tmp_path: Path) -> None:
    data = yaml.safe_load(TINY.read_text())["deal"]
    data["name"] = "Bigger wafer deal"
    data["tranches"] = [{"period": "2026Q2", "mw": 6}]
    path = tmp_path / "deal.yaml"
    path.write_text(yaml.safe_dump(data))
    plan = with_deal(load_plan(TINY), load_deal(path))
    assert plan.deal is not None and plan.deal.name == "Bigger wafer deal" and plan.deal.total_mw == 6
    data["tranches"] = [{"period": "2026Q2", "mw": 6, "price": 1}]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(PlanError, match=r"tranches\[0\].price: unknown key"):
        load_deal(path)
