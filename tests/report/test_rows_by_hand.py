"""The results rows and tables from a hand-made study (pools written by hand, nothing simulated):
each pool's plan in words for every kind of parallelism, speculation and wafer mapping; figures
in SI units as the option computes them; the demand columns from a hand-made demand result;
missing figures shown as '-' in the terminal tables."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
from rich.console import Console
from rich.table import Table

# tests/ is on the path (its conftest.py has no package above it): the fleet tests' fakes.
from fleet.fakes import pool_result, run_result
from megawatt.fleet import Economics
from megawatt.fleet.economics import AnnualCost
from megawatt.fleet.pool import DemandResult, option_result
from megawatt.fleet.pools import PoolRun
from megawatt.hardware import load_catalog
from megawatt.model import load_model
from megawatt.perf import Deployment
from megawatt.perf.deployment import Speculation
from megawatt.report.table import demand_table, option_rows, results_table
from megawatt.scenario import load_scenario
from megawatt.study import StudyResult

SMALL = Path(__file__).parents[1] / "golden" / "small.yaml"
CATALOG = load_catalog()
RUN = run_result([0.0, 1.0], [0.5, 1.2], [2.0, 3.2], [10, 20], busy_s=2.0)


def dep(system_id: str, model_id: str, **settings: object) -> Deployment:
    system = CATALOG.system(system_id)
    return Deployment(model=load_model(model_id), system=system, device=CATALOG.device(system.device_id),
                      **settings)  # type: ignore[arg-type]


def study(*pools_of_options: list[object], demand: DemandResult | None = None) -> StudyResult:
    options = tuple(
        option_result(f"option {i}", "llama-3.1-8b", pools, Economics(), 1.25, 1 / 1.5)  # type: ignore[arg-type]
        for i, pools in enumerate(pools_of_options)
    )
    if demand is not None:
        from dataclasses import replace

        options = tuple(replace(o, demand=demand) for o in options)
    return StudyResult(load_scenario(SMALL), options, (), 0.0)


def plan_of(deployment: Deployment) -> str:
    system_id = deployment.system.id
    pool = pool_result("p", system_id, n_systems=max(4, deployment.pp), result=RUN, deployment=deployment)
    return str(option_rows(study([pool]))[0]["plan"])


# -- plans in words ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("deployment", "words"),
    [
        (dep("hgx-h200", "llama-3.1-8b", tp=1, weight_dtype="fp8"), "p: TP1 fp8 vllm"),
        (dep("hgx-h200", "llama-3.1-70b", tp=2, pp=2, weight_dtype="fp8"), "p: TP2 PP2 fp8 vllm"),
        (dep("hgx-h200", "gpt-oss-120b", tp=4, ep=4, attention_dp=True), "p: TP4 EP4 DP-attention fp4 vllm"),
        (dep("hgx-h200", "llama-3.1-70b", tp=4, weight_dtype="bf16", engine="trtllm",
             speculation=Speculation(3, 0.8, 0.1)), "p: TP4 spec k=3 bf16 trtllm"),
        (dep("cs-3", "llama-3.1-70b", pp=4, engine="cerebras"), "p: 4 wafers bf16 cerebras"),
        (dep("cs-3", "llama-3.1-70b", pp=1, engine="cerebras", weight_streaming=True),
         "p: 1 wafer, streamed weights bf16 cerebras"),
        (dep("cs-3", "llama-3.1-70b", pp=6, engine="cerebras", speculation=Speculation(4, 0.7, 0.1),
             draft_model=load_model("llama-3.1-8b")), "p: 6 wafers spec k=4 llama-3.1-8b bf16 cerebras"),
    ],
    ids=["tp", "tp and pp", "ep and dp attention", "gpu speculation", "wafers", "streaming", "wafer draft"],
)
def test_each_pools_plan_is_said_in_words(deployment: Deployment, words: str) -> None:
    assert plan_of(deployment) == words


def test_the_plans_of_several_pools_are_joined_in_order() -> None:
    gpu = pool_result("gpu", "hgx-h200", result=RUN)
    wafer = pool_result("wafer", "cs-3", n_systems=4, devices_per_replica=2, result=RUN)
    assert option_rows(study([gpu, wafer]))[0]["plan"] == "gpu: TP1 fp8 vllm; wafer: 2 wafers bf16 cerebras"


def test_a_single_wafer_is_said_in_the_singular() -> None:
    assert plan_of(dep("cs-3", "llama-3.1-8b", pp=1, engine="cerebras")) == "p: 1 wafer bf16 cerebras"


# -- figures -------------------------------------------------------------------------------------
def test_the_rows_figures_are_the_options_in_si_units() -> None:
    gpu = pool_result("gpu", "hgx-h200", n_systems=10, rate_per_replica=2.0, result=RUN)
    s = study([gpu])
    o, r = s.options[0], option_rows(s)[0]
    assert (r["option"], r["model"], r["systems"]) == ("option 0", "llama-3.1-8b", 10)
    assert r["it_mw"] == pytest.approx(0.102) and r["leftover_it_mw"] == 0.0
    assert r["capacity_requests_per_s"] == pytest.approx(160.0)
    assert r["output_tokens_per_s"] == pytest.approx(160.0 * 15)
    assert r["ttft_p99_s"] == pytest.approx(0.5) and r["ttft_p50_s"] == pytest.approx(0.2)
    assert r["prompts_per_day"] == pytest.approx(160.0 / 1.5 * 86_400)
    assert r["usd_per_million_output_tokens"] == o.usd_per_million_tokens
    assert r["annual_cost_usd"] == o.annual_cost.total
    assert r["per_class"] == o.class_latency() and set(r["per_class"]) == {"chat"}
    assert r["limited_by"] == [] and r["at_demand"] is None


def test_limits_of_every_pool_are_listed_once_and_sorted() -> None:
    from dataclasses import replace

    a = pool_result("a", result=RUN)
    b = pool_result("b", result=RUN)
    a = replace(a, capacity=replace(a.capacity, limited_by=("tpot", "kv")))
    b = replace(b, capacity=replace(b.capacity, limited_by=("kv",)))
    assert option_rows(study([a, b]))[0]["limited_by"] == ["kv", "tpot"]


def demand_result(over: tuple[str, ...] = ()) -> DemandResult:
    runs = (PoolRun("gpu", 80, (run_result([0.0], [0.25], [1.0], [4]),), (RUN.completed[:1],), 10.0),)
    return DemandResult(40.0, (40.0,), (None,) if over else runs, over, 60_000.0, 75_000.0,
                        AnnualCost(1e6, 0.0, 0.0, 0.0), 1 / 1.5)


def test_the_demand_columns_come_from_the_demand_result() -> None:
    gpu = pool_result("gpu", "hgx-h200", n_systems=10, rate_per_replica=2.0, result=RUN)
    d = option_rows(study([gpu], demand=demand_result()))[0]["at_demand"]
    assert d["peak_requests_per_s"] == 40.0 and d["pool_requests_per_s"] == [40.0]
    assert d["load_share_of_capacity"] == pytest.approx(40.0 / 160.0)
    assert d["ttft_p50_s"] == pytest.approx(0.25) and d["over_capacity"] == []
    assert (d["it_mw"], d["facility_mw"]) == (pytest.approx(0.06), pytest.approx(0.075))
    assert d["simulated_requests"] == 1


def test_an_option_without_capacity_has_no_load_share() -> None:
    failed = pool_result("gpu", rate_per_replica=0.0, result=None)
    d = option_rows(study([failed], demand=demand_result(over=("gpu",))))[0]["at_demand"]
    assert d["load_share_of_capacity"] is None and d["over_capacity"] == ["gpu"]
    assert math.isnan(d["ttft_p99_s"]) and d["simulated_requests"] == 0


# -- tables --------------------------------------------------------------------------------------
def text(table: Table) -> str:
    out = io.StringIO()
    Console(file=out, width=320).print(table)
    return out.getvalue()


def test_a_missing_figure_is_a_dash_in_the_results_table() -> None:
    failed = pool_result("gpu", rate_per_replica=0.0, result=None)
    line = text(results_table(study([failed])))
    assert "NaN" not in line and "nan" not in line and "inf" not in line
    assert "-/-" in line and "$-" in line  # no latency, no cost per token
    assert "- (100 solo)" in line  # no median decode speed, the single stream's still known


def test_the_results_table_rounds_each_figure_to_its_unit() -> None:
    gpu = pool_result("gpu", "hgx-h200", n_systems=10, rate_per_replica=2.0, result=RUN)
    s = study([gpu])
    line = text(results_table(s))
    assert "0.1" in line and "0.00M" in line  # 0.102 IT MW; 2,400 tokens/s in millions
    assert f"{160.0 / 1.5 * 86_400 / 1e9:.2f}B" in line
    assert "0.20/0.50" in line  # TTFT p50/p99 s
    assert f"${s.options[0].usd_per_million_tokens:.2f}" in line


def test_the_demand_table_names_pools_over_capacity_and_dashes_their_figures() -> None:
    gpu = pool_result("gpu", "hgx-h200", n_systems=10, rate_per_replica=2.0, result=RUN)
    table = demand_table(study([gpu], demand=demand_result(over=("gpu",))))
    assert table is not None
    line = text(table)
    assert "over capacity: gpu" in line and "-/-" in line and "$-" in line
    assert "25.0%" in line  # 40 of 160 requests/s
