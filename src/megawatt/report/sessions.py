"""Sessions and images in the report: per option and session class, task time, tasks per day per
MW, cost and revenue per task; the task-time-against-cost chart; the headline comparison of the
fastest option's task time with the others'; and the image fleet."""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go
from rich.table import Table

from megawatt.study import StudyResult, session_classes
from megawatt.units import MW


def session_rows(study: StudyResult) -> list[dict[str, Any]]:
    """One row per (option, session class), plain numbers in SI units."""
    rows = []
    for o in study.options:
        for s in o.sessions:
            c = s.capacity
            rows.append(
                {
                    "option": o.name,
                    "model": o.model_id,
                    "class": s.class_name,
                    "latency_class": c.latency,
                    "pool": s.pool,
                    "users_per_replica": c.users,
                    "task_p50_s": c.task_p50_s,
                    "task_p99_s": c.task_p99_s,
                    "alone_task_p50_s": c.alone_task_p50_s,
                    "turns_per_task": c.turns_per_task,
                    "turns_per_hour_per_user": c.turns_per_hour,
                    "prompt_tokens_per_task": c.prompt_tokens_per_task,
                    "cached_tokens_per_task": c.cached_tokens_per_task,
                    "output_tokens_per_task": c.output_tokens_per_task,
                    "per_user_tokens_per_s": c.per_user_tokens_per_s,
                    "tasks_per_day_per_mw": s.tasks_per_day_per_mw,
                    "usd_per_task": s.usd_per_task,
                    "price_tier": s.tier,
                    "revenue_per_task": s.revenue_per_task,
                    "revenue_per_mw_year": s.revenue_per_mw_year,
                    "cost_per_mw_year": s.cost_per_mw_year,
                    "wait_usd_per_task": s.wait_usd_per_task,
                    "limited_by": list(c.limited_by),
                    "note": c.reason,
                    "curve": [list(pt) for pt in s.curve()],
                }
            )
    return rows


def _num(value: float, fmt: str) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, fmt)


def _minutes(seconds: float) -> str:
    return _num(seconds / 60.0, ".1f")


def sessions_table(study: StudyResult) -> Table | None:
    """The sessions of every option (None when the scenario has none)."""
    rows = session_rows(study)
    if not rows:
        return None
    t = Table(
        title="Sessions (each class on the pool its latency class routes to; users per replica at the SLO)",
        title_justify="left",
        header_style="bold",
    )
    for name in (
        "Option", "Class", "Users/replica", "Task p50/p99 min", "Alone p50 min", "Turns/task",
        "Tokens/task in/out", "Tasks/day/MW", "$/task", "Revenue/task (tier)", "Revenue/cost per MW-yr",
    ):
        t.add_column(name, justify="left" if name in ("Option", "Class") else "right")
    for r in rows:
        t.add_row(
            r["option"],
            r["class"],
            f"{r['users_per_replica']:,}"
            + (f" ({r['note']}: {', '.join(r['limited_by'])})" if r["users_per_replica"] == 0 else ""),
            f"{_minutes(r['task_p50_s'])}/{_minutes(r['task_p99_s'])}",
            _minutes(r["alone_task_p50_s"]),
            _num(r["turns_per_task"], ".0f"),
            _num(r["prompt_tokens_per_task"] / 1e6, ".2f") + "M/"
            + _num(r["output_tokens_per_task"] / 1e3, ".0f") + "k",
            _num(r["tasks_per_day_per_mw"], ",.0f"),
            "$" + _num(r["usd_per_task"], ".3f"),
            "$" + _num(r["revenue_per_task"], ".3f") + f" ({r['price_tier']})",
            f"${_num(r['revenue_per_mw_year'] / 1e6, '.1f')}M/${_num(r['cost_per_mw_year'] / 1e6, '.1f')}M",
        )
    return t


def demand_rows(study: StudyResult) -> list[dict[str, Any]]:
    """Session classes over a day at the scenario's demand, next to the rest of the traffic."""
    return [
        {
            "option": o.name,
            "model": o.model_id,
            "class": d.class_name,
            "pool": d.pool,
            "tasks_per_day_per_replica": d.tasks_per_day,
            "other_requests_per_day_per_replica": d.other_requests_per_day,
            "hours_simulated": d.window_s / 3600.0,
            "replica_days": d.days,
            "task_p50_s": d.task_p50_s,
            "task_p99_s": d.task_p99_s,
            "peak_hour_task_p50_s": d.peak_hour_task_p50_s,
            "ttft_p99_s": d.ttft_p99_s,
            "tpot_p99_s": d.tpot_p99_s,
            "tasks_simulated": d.n_tasks,
        }
        for o in study.options
        for d in o.sessions_at_demand
    ]


def demand_sessions_table(study: StudyResult) -> Table | None:
    """Task times over a day at demand (None when none was simulated)."""
    rows = demand_rows(study)
    if not rows:
        return None
    t = Table(
        title="Sessions at demand: a day on a replica of the serving pool, the rest of its traffic "
        "alongside, both following the day",
        title_justify="left",
        header_style="bold",
    )
    for name in ("Option", "Class", "Tasks/day/replica", "Other req/day/replica", "Hours x days",
                 "Task p50/p99 min", "Peak-hour p50 min", "TTFT p99 s", "TPOT p99 ms"):
        t.add_column(name, justify="left" if name in ("Option", "Class") else "right")
    for r in rows:
        t.add_row(
            r["option"],
            r["class"],
            _num(r["tasks_per_day_per_replica"], ",.0f"),
            _num(r["other_requests_per_day_per_replica"], ",.0f"),
            f"{_num(r['hours_simulated'], '.1f')} x {r['replica_days']}",
            f"{_minutes(r['task_p50_s'])}/{_minutes(r['task_p99_s'])}",
            _minutes(r["peak_hour_task_p50_s"]),
            _num(r["ttft_p99_s"], ".2f"),
            _num(r["tpot_p99_s"] * 1e3, ".0f"),
        )
    return t


def breakeven_usd_per_hour(fast: dict[str, Any], slow: dict[str, Any]) -> float:
    """The value of a user's hour at which the faster option's task, its cost plus the user's
    wait (task time p50), costs as much as the slower one's: above it the faster option is
    cheaper per task. 0 when the faster one is also cheaper; NaN when it is not faster."""
    saved_h = float(slow["task_p50_s"] - fast["task_p50_s"]) / 3600.0
    extra = float(fast["usd_per_task"] - slow["usd_per_task"])
    if not (math.isfinite(saved_h) and saved_h > 0 and math.isfinite(extra)):
        return math.nan
    return max(extra, 0.0) / saved_h


def _breakeven(fast: dict[str, Any], slow: dict[str, Any]) -> str:
    value = breakeven_usd_per_hour(fast, slow)
    if not math.isfinite(value):
        return ""
    if value == 0:
        return "; cheaper per task too"
    extra = fast["usd_per_task"] - slow["usd_per_task"]
    return f"; worth its extra ${extra:.3f} a task once a user's hour is worth ${value:,.2f}"


def headline(study: StudyResult, class_name: str = "coding-agent") -> str | None:
    """The fastest option's task time for `class_name` against each other option's, with the
    inputs it rests on; None when the class was not evaluated."""
    rows = [
        r for r in session_rows(study) if r["class"] == class_name and math.isfinite(r["task_p50_s"])
    ]
    if len(rows) < 2:
        return None
    fast = min(rows, key=lambda r: r["task_p50_s"])
    others = [r for r in rows if r is not fast]
    parts = [
        f"{r['option']} {_minutes(r['task_p50_s'])} min ({r['task_p50_s'] / fast['task_p50_s']:.1f}x; "
        f"alone {r['alone_task_p50_s'] / fast['alone_task_p50_s']:.1f}x"
        + _breakeven(fast, r)
        + ")"
        for r in others
    ]
    cls = {c.name: c for c in session_classes(study.scenario)}.get(class_name)
    inputs = ""
    if cls is not None:
        turns = max(fast["turns_per_task"], 1.0)
        prompt = fast["prompt_tokens_per_task"]
        cached = fast["cached_tokens_per_task"] / max(prompt, 1.0)
        median = getattr(cls.turns, "median", math.nan)
        inputs = (
            f" Inputs: {turns:.0f} turns a task on average (median {median:g}, sourced), "
            f"{prompt / turns / 1e3:.0f}k prompt tokens a turn ({cached:.0%} cached), "
            f"{fast['output_tokens_per_task'] / turns:.0f} output tokens a turn, tool gap median "
            f"{cls.gap_median_s:g} s; each option at its own session capacity (users per replica "
            f"at the SLO) on {fast['model']}."
        )
    at_peak = {r["option"]: r for r in demand_rows(study) if r["class"] == class_name}
    peak = ""
    if fast["option"] in at_peak and len(at_peak) > 1:
        base = at_peak[fast["option"]]["task_p50_s"]
        rest = "; ".join(
            f"{name} {_minutes(r['task_p50_s'])} min ({r['task_p50_s'] / base:.1f}x)"
            for name, r in at_peak.items()
            if name != fast["option"]
        )
        peak = (
            f" Over a day at the scenario's demand: {fast['option']} {_minutes(base)} min against "
            f"{rest}."
        )
    return (
        f"{class_name} task time p50 at each option's capacity: {fast['option']} "
        f"{_minutes(fast['task_p50_s'])} min (alone {_minutes(fast['alone_task_p50_s'])} min) against "
        + "; ".join(parts) + "." + peak + inputs
    )


def task_cost_figure(study: StudyResult) -> go.Figure:
    """Task time against cost per task, per option and session class: the users-per-replica
    counts the capacity search tried (fewer users: shorter tasks, dearer tasks), up to the SLO."""
    fig = go.Figure()
    seen: set[tuple[str, str, str]] = set()
    for r in session_rows(study):
        pts = r["curve"]
        key = (r["model"], r["pool"], r["class"])
        if not pts or key in seen:  # a mixed option reuses its pools' sessions
            continue
        seen.add(key)
        fig.add_scatter(
            name=f"{r['pool']} / {r['class']}",
            mode="lines+markers",
            x=[p[0] / 60.0 for p in pts],
            y=[p[2] for p in pts],
            customdata=[p[1] / 60.0 for p in pts],
            hovertemplate="task p50 %{x:.1f} min, p99 %{customdata:.1f} min, $%{y:.4f}/task",
        )
    fig.update_layout(
        title="Task time against cost per task (each point: users per replica; rightmost at the SLO)",
        xaxis_title="task time p50 (minutes)",
        yaxis_title="USD per task (infrastructure, at mean load)",
        xaxis_type="log",
        yaxis_type="log",
    )
    return fig


def images_row(study: StudyResult) -> dict[str, Any] | None:
    """The image fleet's figures (None without one)."""
    f = study.images
    if f is None:
        return None
    c = f.capacity
    return {
        "model": c.image_model,
        "system": c.system,
        "images_per_day": f.images_per_day,
        "systems": f.n_systems,
        "it_peak_mw": f.it_peak_w / MW,
        "it_mean_mw": f.it_mean_w / MW,
        "images_per_s_per_system": c.images_per_s,
        "seconds_per_image": c.latency_s,
        "batch": c.batch,
        "binding": c.binding,
        "joules_per_image": c.joules_per_image,
        "usd_per_image": f.usd_per_image,
    }


def images_line(study: StudyResult) -> str | None:
    """One line on the image fleet for the terminal."""
    r = images_row(study)
    if r is None:
        return None
    return (
        f"Images: {r['images_per_day'] / 1e6:,.0f}M/day of {r['model']} on {r['systems']:,} {r['system']} "
        f"systems ({r['it_peak_mw']:.1f} MW IT peak, taken from every option's budget); "
        f"{r['images_per_s_per_system']:.1f} images/s per system, {r['seconds_per_image']:.1f} s an "
        f"image at batch {r['batch']} ({r['binding']}-bound), ${r['usd_per_image']:.4f} an image."
    )
