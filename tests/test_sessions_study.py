"""Sessions and images in a study: every option gets its session rows, a class made of the
mix's requests is simulated at the peak hour, the image fleet comes off the budget and shows in
the power breakdown, and bad session or image settings are refused before simulating."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from megawatt.errors import ScenarioError
from megawatt.report import html_report
from megawatt.report.files import results_json
from megawatt.report.sessions import demand_rows, headline, session_rows
from megawatt.scenario import load_scenario
from megawatt.study import check_plans, run_study

SMALL = Path(__file__).parent / "golden" / "small.yaml"
AGENTIC_MIX = [
    "traffic.mix=[{name: chat, share: 0.9, prompt: {kind: lognormal, median: 800, sigma: 0.8, "
    "max_tokens: 8000}, output: {kind: lognormal, median: 120, sigma: 0.8, max_tokens: 2000}}, "
    "{name: agentic, share: 0.1, prompt: {kind: lognormal, median: 900, sigma: 0.5, max_tokens: 4000}, "
    "output: {kind: lognormal, median: 200, sigma: 0.5, max_tokens: 2000}}]",
]
SESSIONS = [
    "sessions={classes: [coding-agent], n_requests: 2000, max_requests: 8000, usd_per_wait_hour: 60, "
    "tiers: [{name: std, input_usd_per_m: 0.15, cached_input_usd_per_m: 0.015, output_usd_per_m: 0.6}]}",
    "images={model: sdxl, images_per_day: 1.0e5, system: hgx-h200}",
]
# A tenth of small.yaml's demand: each replica's day at demand is a tenth as long to simulate
# (and no longer overloaded), while every class still sees more than a day's minimum of tasks.
DEMAND = "traffic.demand_prompts_per_day=1.0e8"


@pytest.fixture(scope="module")
def study():  # type: ignore[no-untyped-def]
    sc = load_scenario(SMALL, [*AGENTIC_MIX, *SESSIONS, "budget.facility_mw=4", DEMAND])
    return run_study(sc, workers=1)


def test_every_option_reports_its_sessions_and_the_fastest_one_is_named(study) -> None:  # type: ignore[no-untyped-def]
    rows = session_rows(study)
    assert {r["option"] for r in rows} == {o.name for o in study.options}
    served = [r for r in rows if r["users_per_replica"] >= 1]
    assert served
    for r in rows:
        if r["users_per_replica"] == 0:  # one CS-3 wafer holds too little KV for agent contexts
            assert r["note"] and r["tasks_per_day_per_mw"] == 0
            continue
        assert r["task_p99_s"] >= r["task_p50_s"] > 0
        assert r["tasks_per_day_per_mw"] > 0 and r["usd_per_task"] > 0
        assert r["revenue_per_task"] > 0 and r["price_tier"] == "std"
        assert r["wait_usd_per_task"] == pytest.approx(r["task_p50_s"] / 60.0)
    line = headline(study)
    assert line is not None and "Inputs:" in line and "tool gap median 3.8 s" in line


def test_the_agentic_requests_run_as_sessions_over_a_day(study) -> None:  # type: ignore[no-untyped-def]
    rows = demand_rows(study)
    assert rows and {r["class"] for r in rows} == {"coding-agent"}
    for r in rows:
        assert r["other_requests_per_day_per_replica"] > 0 and r["task_p50_s"] > 0
        assert r["tasks_simulated"] > 0


def test_images_come_off_the_budget_and_show_in_the_outputs(study) -> None:  # type: ignore[no-untyped-def]
    assert study.images is not None and study.images.n_systems >= 1
    plain = run_study(load_scenario(SMALL, ["budget.facility_mw=4", DEMAND]), workers=1)
    h200 = next(o for o in study.options if o.name == "H200 TP1")
    h200_plain = next(o for o in plain.options if o.name == "H200 TP1")
    assert h200.n_systems == h200_plain.n_systems - study.images.n_systems
    doc = json.loads(results_json(study))
    assert doc["images"]["systems"] == study.images.n_systems and doc["sessions"]
    assert "IT for images (sdxl)" in html_report(study)
    assert "Task time against cost per task" in html_report(study)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sessions={classes: [gaming]}", "sessions.classes[0]: unknown session class 'gaming'"),
        ("sessions={model: llama-3.3-70b}", "sessions.model: 'llama-3.3-70b' is not one of models"),
        ("images={images_per_day: 1.0e9, system: hgx-h200}", "images: images_per_day 1e+09 needs"),
        ("images={images_per_day: 10, system: no-such}", "images: system:"),
    ],
)
def test_bad_session_and_image_settings_are_refused_before_simulating(override: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=re.escape(message)):
        check_plans(load_scenario(SMALL, [override]))
