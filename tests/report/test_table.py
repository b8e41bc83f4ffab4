"""The results table: one row per option with every figure in SI units and its name; the
terminal tables round them, show a missing figure as `-`, and name the pools over capacity."""

from __future__ import annotations

import io
import math
from dataclasses import replace

import pytest
from rich.console import Console
from rich.table import Table

from megawatt.report.table import demand_table, option_rows, results_table
from megawatt.study import StudyResult


def _text(table: Table) -> str:
    out = io.StringIO()
    Console(file=out, width=300).print(table)
    return out.getvalue()


def test_one_row_per_option_in_scenario_order(small_study: StudyResult) -> None:
    rows = option_rows(small_study)
    assert [r["option"] for r in rows] == ["H200 TP1", "CS-3 x1", "Half and half"]
    assert {r["model"] for r in rows} == {"llama-3.1-8b"}


def test_each_figure_is_the_option_s_own_in_si_units(small_study: StudyResult) -> None:
    for o, r in zip(small_study.options, option_rows(small_study), strict=True):
        assert r["systems"] == o.n_systems
        assert r["it_mw"] == o.it_peak_w / 1e6 and r["leftover_it_mw"] == o.leftover_w / 1e6
        assert r["capacity_requests_per_s"] == o.rate_per_s > 0
        assert r["output_tokens_per_s"] == o.output_tokens_per_s
        assert r["annual_cost_usd"] == o.annual_cost.total
        assert r["ttft_p50_s"] <= r["ttft_p99_s"] and r["tpot_p50_s"] <= r["tpot_p99_s"]
        assert r["limited_by"] == sorted(r["limited_by"])
        assert set(r["per_class"]) == {"chat", "docs"}


def test_the_plan_names_each_pool_s_parallelism_format_and_engine(small_study: StudyResult) -> None:
    plans = {r["option"]: r["plan"] for r in option_rows(small_study)}
    assert plans["H200 TP1"] == "hgx-h200: TP1 fp8 vllm"
    assert plans["CS-3 x1"].startswith("cs-3: 1 wafer") and plans["CS-3 x1"].endswith(" cerebras")
    assert plans["Half and half"] == f"{plans['H200 TP1']}; {plans['CS-3 x1']}"


def test_at_demand_the_load_is_the_peak_rate_over_capacity(small_study: StudyResult) -> None:
    for r in option_rows(small_study):
        d = r["at_demand"]
        assert d is not None
        assert d["load_share_of_capacity"] == d["peak_requests_per_s"] / r["capacity_requests_per_s"]
        assert sum(d["pool_requests_per_s"]) == pytest.approx(d["peak_requests_per_s"])
        if d["over_capacity"]:  # a pool that cannot keep up is not simulated: no latency
            assert math.isnan(d["ttft_p99_s"]) and d["simulated_requests"] == 0
        else:
            assert d["ttft_p50_s"] <= d["ttft_p99_s"] and d["simulated_requests"] > 0


def test_the_results_table_has_a_row_per_option_and_the_slo_in_its_title(small_study: StudyResult) -> None:
    table = results_table(small_study)
    assert table.row_count == len(small_study.options) and len(table.columns) == 13
    text = _text(table)
    assert "small example: 2 MW facility, PUE 1.25, SLO p99 TTFT <= 2 s, p99 TPOT <= 50 ms" in text
    for r in option_rows(small_study):
        assert f"{r['output_tokens_per_s'] / 1e6:.2f}M" in text
        assert f"{r['prompts_per_day'] / 1e9:.2f}B" in text
        assert ", ".join(r["limited_by"]) in text


def test_the_demand_table_says_how_it_was_simulated_and_dashes_what_was_not(
    small_study: StudyResult,
) -> None:
    table = demand_table(small_study)
    assert table is not None and table.row_count == len(small_study.options)
    text = _text(table)
    peak = 1e9 / 86_400 * 1.5
    assert f"At demand: 1B prompts/day, peak hour {peak:,.0f} requests/s" in text
    assert "(sampled, 4 replicas per pool, 300 s)" in text
    over = [r for r in option_rows(small_study) if r["at_demand"]["over_capacity"]]
    for r in over:
        assert "over capacity: " + ", ".join(r["at_demand"]["over_capacity"]) in text
    if over:
        assert "-/-" in text and "$-" in text


def test_no_demand_table_when_demand_was_not_simulated(small_study: StudyResult) -> None:
    options = tuple(replace(o, demand=None) for o in small_study.options)
    assert demand_table(replace(small_study, options=options)) is None
    assert all(r["at_demand"] is None for r in option_rows(replace(small_study, options=options)))
