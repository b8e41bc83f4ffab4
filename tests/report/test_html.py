"""The HTML report: one self-contained page (plotly.js inlined once) with the figures, the
results, the latency per class, every assumption with its source and every deployment searched;
text from the scenario is escaped."""

from __future__ import annotations

import html
import re
from dataclasses import replace

import pytest

from megawatt.report import html_report
from megawatt.report.table import option_rows
from megawatt.study import StudyResult


@pytest.fixture(scope="module")
def page(small_study: StudyResult) -> str:
    return html_report(small_study)


def test_the_page_is_self_contained_with_plotly_inlined_once(page: str) -> None:
    assert page.startswith("<!doctype html>") and page.endswith("</html>\n")
    assert page.count("plotly.js v") == 1  # the library's banner: one copy for every figure
    assert page.count('class="plotly-graph-div"') >= 5
    assert "<script src=" not in page  # nothing fetched from a CDN


def test_the_sections_come_in_order_and_sessions_and_images_only_when_present(page: str) -> None:
    assert re.findall(r"<h2>([^<]*)</h2>", page) == [
        "Results", "Latency per request class at capacity", "Assumptions", "Deployments searched",
    ]


def test_the_results_table_has_a_row_per_option(page: str, small_study: StudyResult) -> None:
    results = page.split("<h2>Results</h2>")[1].split("<h2>")[0]
    rows = option_rows(small_study)
    assert results.count("<tr>") == 1 + len(rows)
    assert "<th>per_class</th>" not in results and "<th>at_demand</th>" not in results
    for r in rows:
        assert f"<td>{html.escape(r['plan'])}</td>" in results


def test_latency_is_listed_per_option_and_request_class(page: str, small_study: StudyResult) -> None:
    classes = page.split("<h2>Latency per request class at capacity</h2>")[1].split("<h2>")[0]
    assert classes.count("<tr>") == 1 + 2 * len(small_study.options)  # chat and docs


def test_every_assumption_and_every_deployment_searched_is_shown(page: str, small_study: StudyResult) -> None:
    for a in small_study.assumptions:
        assert f"<td>{html.escape(a.name)}</td>" in page and html.escape(a.source) in page
    searched = page.split("<h2>Deployments searched</h2>")[1]
    for o in small_study.options:
        for p in o.pools:
            for label, score in p.candidates:
                assert f"<td>{html.escape(label)}</td><td>{score:,.0f}</td>" in searched


def test_the_scenario_s_name_and_description_are_escaped(small_study: StudyResult) -> None:
    scenario = small_study.scenario.model_copy(update={"name": "<b>Tom & Jerry</b>", "description": "a<b"})
    page = html_report(replace(small_study, scenario=scenario))
    assert "<title>&lt;b&gt;Tom &amp; Jerry&lt;/b&gt;</title>" in page
    assert "<p>a&lt;b</p>" in page and "<b>Tom" not in page
