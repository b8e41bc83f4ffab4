"""Sessions and images in the report, on hand-made results: a row per (option, session class),
task times in minutes, the value of a user's hour at which the faster option pays, the headline
comparison, the task-time-against-cost chart (each pool once), the day at demand and the images
line."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console
from rich.table import Table

from megawatt.fleet.image import ImageFleet
from megawatt.fleet.sessions import SessionCapacity, SessionOutcome, SessionsAtDemand
from megawatt.report.sessions import (
    breakeven_usd_per_hour,
    demand_rows,
    demand_sessions_table,
    headline,
    images_line,
    images_row,
    session_rows,
    sessions_table,
    task_cost_figure,
)
from megawatt.scenario import Scenario, load_scenario
from megawatt.study import StudyResult

SMALL = Path(__file__).parents[1] / "golden" / "small.yaml"


@pytest.fixture(scope="module")
def plain() -> Scenario:
    return load_scenario(SMALL)


@pytest.fixture(scope="module")
def with_agents() -> Scenario:
    return load_scenario(SMALL, ["sessions={classes: [coding-agent]}"])


def capacity(users: int = 4, p50: float = 600.0, alone: float = 300.0, **changes: Any) -> SessionCapacity:
    """A coding-agent class on one replica: `users` at once, each task `p50` s at the median.
    The search tried 1, 2, 4 and 8 users; 8 broke the SLO."""
    fields: dict[str, Any] = {
        "class_name": "coding-agent",
        "latency": "interactive",
        "users": users,
        "rate_per_s": users / p50,
        "task_p50_s": p50,
        "task_p99_s": 1.5 * p50,
        "turns_per_task": 20.0,
        "prompt_tokens_per_task": 2e6,
        "cached_tokens_per_task": 1.8e6,
        "output_tokens_per_task": 8e3,
        "per_user_tokens_per_s": 50.0,
        "alone_task_p50_s": alone,
        "frontier": tuple(
            (float(u), u / (p50 * f), p50 * f, 1.5 * p50 * f, 0.5, 0.02)
            for u, f in ((1, 0.6), (2, 0.8), (4, 1.0), (8, 3.0))
        ),
    }
    fields.update(changes)
    return SessionCapacity(**fields)


def outcome(cap: SessionCapacity, pool: str, usd: float, tasks_per_day_per_mw: float = 1e3) -> SessionOutcome:
    return SessionOutcome(cap.class_name, pool, cap, tasks_per_day_per_mw, usd, 2 * usd, "std", 0.0)


def option(name: str, sessions: Sequence[SessionOutcome], at_demand: Sequence[SessionsAtDemand] = ()) -> Any:
    """What the report reads of an `OptionResult`."""
    return SimpleNamespace(name=name, model_id="llama-3.1-8b", sessions=tuple(sessions),
                           sessions_at_demand=tuple(at_demand))


def study(scenario: Scenario, *options: Any, images: ImageFleet | None = None) -> StudyResult:
    return StudyResult(scenario=scenario, options=tuple(options), assumptions=(), wall_s=0.0, images=images)


def day(pool: str, p50: float) -> SessionsAtDemand:
    return SessionsAtDemand("coding-agent", pool, 500.0, 40_000.0, 7200.0, 3, p50, 2 * p50, 1.2 * p50,
                            0.8, 0.04, 240)


def _text(table: Table) -> str:
    out = io.StringIO()
    Console(file=out, width=300).print(table)
    return out.getvalue()


# fast: 10 min a task at $0.20; slow: 70 min at $0.10 -> an hour saved for $0.10.
FAST = outcome(capacity(p50=600.0, alone=300.0), "cs-3", usd=0.20)
SLOW = outcome(capacity(p50=4200.0, alone=900.0), "hgx-h200", usd=0.10)


def test_one_row_per_option_and_class_with_its_figures(plain: Scenario) -> None:
    rows = session_rows(study(plain, option("A", [FAST]), option("B", [SLOW])))
    assert [(r["option"], r["class"], r["pool"]) for r in rows] == [
        ("A", "coding-agent", "cs-3"), ("B", "coding-agent", "hgx-h200"),
    ]
    a = rows[0]
    assert (a["users_per_replica"], a["task_p50_s"], a["usd_per_task"]) == (4, 600.0, 0.2)
    assert a["price_tier"] == "std" and a["note"] == "" and a["limited_by"] == []
    assert a["turns_per_hour_per_user"] == 20.0 / 600.0 * 3600.0
    assert a["revenue_per_mw_year"] == pytest.approx(0.4 * 1000.0 * 365.0)
    assert a["cost_per_mw_year"] == pytest.approx(0.2 * 1000.0 * 365.0)
    assert len(a["curve"]) == 3  # 1, 2 and 4 users; 8 is past the capacity


def test_the_sessions_table_shows_minutes_and_why_a_pool_serves_none(plain: Scenario) -> None:
    none = outcome(capacity(users=0, p50=math.nan, rate_per_s=0.0, reason="KV cache too small",
                            limited_by=("kv",)), "cs-3", usd=math.inf, tasks_per_day_per_mw=0.0)
    table = sessions_table(study(plain, option("A", [FAST]), option("B", [none])))
    assert table is not None and table.row_count == 2
    text = _text(table)
    assert "10.0/15.0" in text and "5.0" in text  # task p50/p99 and alone, minutes
    assert "0 (KV cache too small: kv)" in text and "-/-" in text and "$inf" not in text


def test_no_sessions_no_tables(plain: Scenario) -> None:
    empty = study(plain, option("A", []))
    assert sessions_table(empty) is None and demand_sessions_table(empty) is None
    assert headline(empty) is None and not task_cost_figure(empty).data


@pytest.mark.parametrize(
    ("fast_usd", "fast_p50", "expected"),
    [
        (0.20, 600.0, 0.10),  # an hour saved for $0.10
        (0.05, 600.0, 0.0),  # faster and cheaper
        (0.20, 4200.0, math.nan),  # not faster
        (0.20, math.nan, math.nan),  # no task time
    ],
)
def test_the_hour_above_which_the_faster_option_pays(
    fast_usd: float, fast_p50: float, expected: float
) -> None:
    fast = {"task_p50_s": fast_p50, "usd_per_task": fast_usd}
    slow = {"task_p50_s": 4200.0, "usd_per_task": 0.10}
    got = breakeven_usd_per_hour(fast, slow)
    assert got == pytest.approx(expected) if math.isfinite(expected) else math.isnan(got)


def test_the_headline_names_the_fastest_option_first_with_the_inputs(with_agents: Scenario) -> None:
    line = headline(study(with_agents, option("Slow", [SLOW]), option("Fast", [FAST])))
    assert line is not None
    assert line.startswith(
        "coding-agent task time p50 at each option's capacity: Fast 10.0 min (alone 5.0 min) against Slow "
        "70.0 min (7.0x; alone 3.0x; worth its extra $0.100 a task once a user's hour is worth $0.10)."
    )
    assert "Inputs: 20 turns a task on average" in line and "(90% cached)" in line
    assert "tool gap median 3.8 s" in line and "on llama-3.1-8b" in line


def test_the_headline_says_when_the_faster_option_is_cheaper_too(plain: Scenario) -> None:
    cheap_fast = outcome(capacity(p50=600.0), "cs-3", usd=0.05)
    line = headline(study(plain, option("A", [cheap_fast]), option("B", [SLOW])))
    assert line is not None and "; cheaper per task too)" in line
    assert "Inputs:" not in line  # the scenario names no session classes


def test_the_headline_adds_the_day_at_demand(plain: Scenario) -> None:
    line = headline(study(plain, option("A", [FAST], [day("cs-3", 720.0)]),
                          option("B", [SLOW], [day("hgx-h200", 5040.0)])))
    assert line is not None
    assert "Over a day at the scenario's demand: A 12.0 min against B 84.0 min (7.0x)." in line


def test_the_day_at_demand_table(plain: Scenario) -> None:
    s = study(plain, option("A", [FAST], [day("cs-3", 720.0)]))
    (row,) = demand_rows(s)
    assert (row["hours_simulated"], row["replica_days"], row["tasks_simulated"]) == (2.0, 3, 240)
    table = demand_sessions_table(s)
    assert table is not None
    text = _text(table)
    assert "2.0 x 3" in text and "12.0/24.0" in text and "14.4" in text and "40" in text


def test_the_chart_draws_each_pool_and_class_once_in_minutes(plain: Scenario) -> None:
    mixed = option("Half and half", [FAST, SLOW])  # reuses the two pools' sessions
    fig = task_cost_figure(study(plain, option("A", [FAST]), option("B", [SLOW]), mixed))
    assert [t.name for t in fig.data] == ["cs-3 / coding-agent", "hgx-h200 / coding-agent"]
    fast = fig.data[0]
    assert list(fast.x) == pytest.approx([6.0, 8.0, 10.0])  # 360, 480, 600 s
    assert list(fast.y)[-1] == pytest.approx(0.20)  # at capacity: the outcome's cost per task
    assert list(fast.y) == sorted(fast.y, reverse=True)  # fewer users: dearer tasks


def test_images_only_when_the_scenario_serves_them(plain: Scenario) -> None:
    assert images_row(study(plain)) is None and images_line(study(plain)) is None
    cap = SimpleNamespace(image_model="sdxl", system="hgx-h200", images_per_s=10.0, latency_s=2.5, batch=8,
                          binding="compute", joules_per_image=300.0)
    fleet = ImageFleet(cap, 1e8, 1.5, 20, 2e6, 1.5e6, 3.65e6)  # type: ignore[arg-type]
    row = images_row(study(plain, images=fleet))
    assert row is not None and row["usd_per_image"] == pytest.approx(1e-4) and row["it_peak_mw"] == 2.0
    assert images_line(study(plain, images=fleet)) == (
        "Images: 100M/day of sdxl on 20 hgx-h200 systems (2.0 MW IT peak, taken from every option's "
        "budget); 10.0 images/s per system, 2.5 s an image at batch 8 (compute-bound), $0.0001 an image."
    )
