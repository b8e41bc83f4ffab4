"""What `megawatt plan` shows and writes: the terminal summary (the build plan per period, NPV,
P(shortfall), the deal's verdict and the top tornado inputs), `plan.json` (every figure, SI
units and USD, no timings: the same seed gives the same bytes) and `plan.html` (MW by supplier
over time, demand against capacity with bands, $/M tokens over time, the tornado, what to buy
when and why, the capacities behind it and every input with its source)."""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from rich.table import Table

from megawatt.deal.planner import PlanOutcome, PlanResult
from megawatt.report.files import write_named

_BAND = (10.0, 50.0, 90.0)


def _clean(v: Any) -> Any:
    """JSON-safe: numpy to Python, NaN and infinities to null, floats to 9 significant digits
    (so the file does not depend on the last bits of a solver's arithmetic)."""
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    if isinstance(v, np.ndarray):
        return _clean(v.tolist())
    if isinstance(v, np.bool_ | bool):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, float | np.floating):
        x = float(v)
        return float(f"{x:.9g}") if math.isfinite(x) else None
    return v


def _q(values: np.ndarray, axis: int = 0) -> dict[str, Any]:
    """P10, P50, P90 (and the mean) of draws."""
    if values.size == 0:
        return {}
    with np.errstate(all="ignore"):
        p = np.nanpercentile(values, _BAND, axis=axis)
        return {"p10": p[0], "p50": p[1], "p90": p[2], "mean": np.nanmean(values, axis=axis)}


def _draws(o: PlanOutcome, attr: str) -> np.ndarray:
    return np.array([getattr(d, attr) for d in o.draws], float)


def outcome_document(o: PlanOutcome) -> dict[str, Any]:
    """One plan's figures: purchases, fleet per period, money, and its draws' quantiles."""
    p, sol = o.problem, o.solution
    labels = list(p.period_labels)
    per_supplier = sol.installed_mw.sum(axis=1)
    served_by_class = sol.served_mw.sum(axis=(0, 1))
    doc: dict[str, Any] = {
        "name": o.name,
        "label": o.label,
        "npv_cost_usd": o.base.npv_cost,
        "npv_penalty_usd": o.base.npv_penalty,
        "npv_total_usd": o.base.npv_total,
        "usd_per_million_output_tokens": o.base.usd_per_m_tokens,
        "solver_gap": sol.gap,
        "solver_status": sol.status,
        "buys": [
            {
                "period": b.period,
                "supplier": b.supplier,
                "generation": b.generation,
                "it_mw": b.it_mw,
                "usd": b.usd,
                "reason": b.reason,
            }
            for b in o.buys
        ],
        "periods": labels,
        "installed_it_mw": {s: per_supplier[i] for i, s in enumerate(p.suppliers)},
        "bought_it_mw": {s: sol.blocks[i] * p.block_it_mw[i] for i, s in enumerate(p.suppliers)},
        "served_it_mw_by_class": {c: served_by_class[j] for j, c in enumerate(p.classes)},
        "demand_tokens_per_s": {c: p.demand[j] for j, c in enumerate(p.classes)},
        "served_tokens_per_s": {c: sol.served[j] for j, c in enumerate(p.classes)},
        "overflow_tokens_per_s": {c: sol.overflow[j] for j, c in enumerate(p.classes)},
        "unserved_tokens_per_s": {c: sol.unserved[j] for j, c in enumerate(p.classes)},
        "cost_usd": {
            "capacity": sol.capacity_cost.sum(axis=0),
            "power": sol.power_cost,
            "site": sol.site_cost,
            "overflow": sol.overflow_cost,
            "unserved_penalty": sol.penalty,
        },
        "usd_per_million_output_tokens_by_period": o.base.period_usd_per_m_tokens,
        "stranded_it_mw": sol.stranded_mw,
        "binding": o.binding,
    }
    if o.draws:
        doc["monte_carlo"] = {
            "draws": len(o.draws),
            "p_shortfall": o.p_shortfall(),
            "npv_total_usd": _q(o.npv_totals()),
            "npv_cost_usd": _q(_draws(o, "npv_cost")),
            "usd_per_million_output_tokens": _q(_draws(o, "usd_per_m_tokens")),
            "usd_per_million_output_tokens_by_period": _q(
                np.array([d.period_usd_per_m_tokens for d in o.draws])
            ),
            "stranded_it_mw": _q(np.array([d.stranded_mw for d in o.draws])),
            "demand_tokens_per_s": _q(np.array([d.demand for d in o.draws])),
            "capacity_tokens_per_s": _q(np.array([d.capacity for d in o.draws])),
            "served_tokens_per_s": _q(np.array([d.served for d in o.draws])),
        }
    return doc


def plan_document(result: PlanResult) -> dict[str, Any]:
    """Every figure of a plan result as plain data (see the module docstring)."""
    plan = result.plan
    verdict = result.verdict
    doc: dict[str, Any] = {
        "plan": plan.name,
        "seed": plan.seed,
        "periods": list(plan.period_labels),
        "deal": None
        if plan.deal is None
        else {
            "name": plan.deal.name,
            "supplier": plan.deal.supplier.name,
            "facility_mw": plan.deal.total_mw,
            "tranches": [t.model_dump() for t in plan.deal.tranches],
        },
        "plans": {name: outcome_document(o) for name, o in result.outcomes.items()},
        "tornado": {
            "answer": "optimised plan: NPV of cost and unserved penalty (USD)",
            "base_usd": result.answer,
            "bars": [
                {
                    "input": b.name,
                    "low_value": b.low_value,
                    "high_value": b.high_value,
                    "answer_at_low_usd": b.answer_low,
                    "answer_at_high_usd": b.answer_high,
                    "swing_usd": b.swing,
                }
                for b in result.bars
            ],
        },
        "capacities": [
            {
                "system": c.task.system,
                "engine": c.task.engine,
                "model": c.task.model,
                "class": c.task.class_name,
                "output_tokens_per_s_per_system": c.tokens_per_s_per_system,
                "output_tokens_per_s_per_it_mw": c.tokens_per_s_per_it_mw,
                "deployment": c.plan,
                "note": c.reason,
            }
            for c in result.capacities
        ],
        "model_error": [
            {"device": s.device, "sigma_log": s.sigma, "rows": s.n_rows, "basis": s.basis}
            for s in result.spreads
        ],
        "inputs": [{"field": f.path, "value": f.value, "source": f.source} for f in result.figures],
    }
    if verdict is not None:
        doc["verdict"] = {
            "value_of_deal_usd": verdict.value,
            "value_of_deal_draws_usd": _q(verdict.value_draws),
            "p_deal_better": verdict.p_better,
            "value_of_flexibility_usd": verdict.flexibility,
            "value_of_flexibility_draws_usd": _q(verdict.flexibility_draws),
            "advantage_per_period_usd": verdict.advantage_per_period,
            "advantage_per_period_median_usd": verdict.advantage_per_period_median,
            "break_even_usd_per_mw_year": verdict.break_even_usd_per_mw_year,
            "better_until": verdict.better_until,
        }
    return _clean(doc)  # type: ignore[no-any-return]


def plan_json(result: PlanResult) -> str:
    """`plan.json`: the plan document, indented."""
    return json.dumps(plan_document(result), indent=1) + "\n"


# -- terminal ---------------------------------------------------------------------------------


def _usd(x: float) -> str:
    if not math.isfinite(x):
        return "-"
    sign = "-" if x < 0 else ""
    x = abs(x)
    if x >= 1e9:
        return f"{sign}${x / 1e9:,.2f}B"
    return f"{sign}${x / 1e6:,.0f}M"


def build_table(o: PlanOutcome) -> Table:
    """Per period: IT MW bought per supplier, the fleet, demand, how it is served, P(shortfall)."""
    p, sol = o.problem, o.solution
    t = Table(
        title=f"Build plan: {o.label} (IT MW bought per period)", title_justify="left", header_style="bold"
    )
    t.add_column("Period")
    bought = sol.blocks * p.block_it_mw[:, None]
    shown = [i for i in range(len(p.suppliers)) if bought[i].any()]
    for i in shown:
        t.add_column(p.suppliers[i], justify="right")
    for name in (
        "Fleet IT MW",
        "Idle MW",
        "Demand M tok/s",
        "Fleet / overflow / unserved",
        "P(shortfall)",
        "Binding",
    ):
        t.add_column(name, justify="left" if name == "Binding" else "right")
    demand = p.demand.sum(axis=0)
    installed = sol.installed_mw.sum(axis=(0, 1))
    shortfall = o.p_shortfall()
    for k, label in enumerate(p.period_labels):
        d = max(demand[k], 1e-9)
        split = (
            f"{sol.served[:, k].sum() / d:.0%} / {sol.overflow[:, k].sum() / d:.0%} / "
            f"{sol.unserved[:, k].sum() / d:.0%}"
        )
        t.add_row(
            label,
            *(f"{bought[i, k]:,.0f}" if bought[i, k] else "" for i in shown),
            f"{installed[k]:,.0f}",
            f"{sol.stranded_mw[k]:,.0f}",
            f"{demand[k] / 1e6:,.1f}",
            split,
            f"{shortfall[k]:.0%}" if o.draws else "-",
            ", ".join(dict.fromkeys(o.binding[label])) or "",
        )
    return t


def plans_table(result: PlanResult) -> Table:
    """NPV of each plan at the base inputs and across the draws."""
    n = len(result.draws)
    t = Table(
        title=f"NPV over {result.plan.period_labels[0]}-{result.plan.period_labels[-1]} at "
        f"{result.plan.discount_rate:.0%} (cost, and penalty of unserved demand); {n} draws",
        title_justify="left",
        header_style="bold",
    )
    for name in (
        "Plan",
        "Cost",
        "Penalty",
        "Total",
        "Total P10/P50/P90",
        "$/M tokens P10/P50/P90",
        "Max P(shortfall)",
        "Stranded MW P50 (max)",
    ):
        t.add_column(name, justify="left" if name == "Plan" else "right")
    for o in result.outcomes.values():
        totals = _q(o.npv_totals())
        per_m = _q(_draws(o, "usd_per_m_tokens"))
        stranded = np.median([d.stranded_mw for d in o.draws], axis=0) if o.draws else o.solution.stranded_mw
        t.add_row(
            o.label,
            _usd(o.base.npv_cost),
            _usd(o.base.npv_penalty),
            _usd(o.base.npv_total),
            " / ".join(_usd(totals[k]) for k in ("p10", "p50", "p90")) if totals else "-",
            " / ".join(f"${per_m[k]:.2f}" for k in ("p10", "p50", "p90")) if per_m else "-",
            f"{o.p_shortfall().max():.0%}" if o.draws else "-",
            f"{float(np.max(stranded)):,.0f}",
        )
    return t


def verdict_lines(result: PlanResult) -> list[str]:
    """The deal's verdict and the inputs that move the answer most, as sentences."""
    lines = []
    v, plan = result.verdict, result.plan
    if v is not None and plan.deal is not None:
        better = "better" if v.value > 0 else "worse"
        lines.append(
            f"Is {plan.deal.name} better than the best alternative? {better.capitalize()}, by "
            f"{_usd(abs(v.value))} of NPV at the base inputs; better in {v.p_better:.0%} of draws "
            f"(P10/P50/P90 {' / '.join(_usd(x) for x in np.percentile(v.value_draws, _BAND))})."
            if len(v.value_draws)
            else f"Is {plan.deal.name} better than the best alternative? "
            f"{better.capitalize()}, by {_usd(abs(v.value))} of NPV at the base inputs."
        )
        periods = [lbl for lbl, a in zip(plan.period_labels, v.advantage_per_period, strict=True) if a > 0]
        if v.better_until:
            when = f"it stops being better after {v.better_until}"
        elif periods:
            when = f"it is better in {', '.join(periods)}"
        else:
            when = "it is better in no period"
        if math.isfinite(v.break_even_usd_per_mw_year) and plan.deal.supplier.contract_usd_per_mw_year:
            when += (
                f"; it stops being better above ${v.break_even_usd_per_mw_year / 1e6:.1f}M per MW-year "
                f"(now ${plan.deal.supplier.contract_usd_per_mw_year / 1e6:.1f}M)"
            )
        lines.append(f"When: {when}.")
        lines.append(
            f"Value of flexibility (the deal's tranches as options instead of take-or-pay): "
            f"{_usd(v.flexibility)} at the base inputs"
            + (
                f", P10/P50/P90 {' / '.join(_usd(x) for x in np.percentile(v.flexibility_draws, _BAND))}."
                if len(v.flexibility_draws)
                else "."
            )
        )
    top = result.bars[:3]
    if top:
        lines.append(
            "Inputs that move the answer most (optimised plan's NPV, P10 -> P90): "
            + "; ".join(f"{b.name} {_usd(b.answer_low)} -> {_usd(b.answer_high)}" for b in top)
            + "."
        )
    return lines


# -- HTML -------------------------------------------------------------------------------------

_TEMPLATE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1300px}}
table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top}}
th{{background:#f3f3f3}}</style></head><body>
<h1>{title}</h1><p>{description}</p>
<p>Seed {seed}; {draws} Monte Carlo draws (a Latin hypercube). Capacity per system and class comes
from megawatt's own capacity runs (the numbers of <code>megawatt run</code> for the class alone at
its SLO); purchases are chosen by a mixed-integer program (HiGHS) minimising the NPV of cost plus the
penalty of unserved demand. Money: purchases as annuities over their life at the discount rate,
contracts at their price per facility MW-year (power and site included), owned systems' power at
each system's power curve at the mean load and their site's facility capex as an annuity, overflow
at pay-as-you-go prices (input tokens included). Demand is output tokens/s at the peak hour at each
period's midpoint.</p>
<h2>Verdict</h2><ul>{verdict}</ul>
{figures}
<h2>What to buy when, and why</h2>{buys}
<h2>Plans</h2>{plans}
<h2>Binding constraints per period (optimised plan)</h2>{binding}
<h2>Capacity per system at each class's SLO (simulated)</h2>{capacities}
<h2>Model error used as each pool's throughput spread</h2>{spreads}
<h2>Inputs and their sources</h2>{inputs}
</body></html>
"""


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _band(fig: go.Figure, x: list[str], q: dict[str, Any], name: str, scale: float, color: str) -> None:
    if not q:
        return
    fig.add_scatter(
        x=x,
        y=np.asarray(q["p90"]) * scale,
        mode="lines",
        line={"width": 0},
        showlegend=False,
        name=f"{name} P90",
        line_color=color,
    )
    fig.add_scatter(
        x=x,
        y=np.asarray(q["p10"]) * scale,
        mode="lines",
        line={"width": 0},
        fill="tonexty",
        name=f"{name} P10-P90",
        line_color=color,
        opacity=0.3,
    )
    fig.add_scatter(
        x=x, y=np.asarray(q["p50"]) * scale, mode="lines+markers", name=f"{name} median", line_color=color
    )


_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _supply_figures(result: PlanResult, x: list[str]) -> list[go.Figure]:
    """Stacked IT MW by supplier over time, for the optimised plan and the deal as announced."""
    figs = []
    for name, o in result.outcomes.items():
        if name == "alternative":
            continue
        fig = go.Figure(layout={"title": f"IT MW installed by supplier: {o.label}", "yaxis_title": "IT MW"})
        installed = o.solution.installed_mw.sum(axis=1)
        for i, s in enumerate(o.problem.suppliers):
            if installed[i].any():
                fig.add_scatter(x=x, y=installed[i], name=s, stackgroup="mw", mode="lines")
        figs.append(fig)
    return figs


def _band_figure(
    result: PlanResult, doc: dict[str, Any], x: list[str], key: str, scale: float, layout: dict[str, str]
) -> go.Figure:
    """One P10-P90 band per plan of a per-period figure of the Monte Carlo (demand first when
    the figure is capacity)."""
    fig = go.Figure(layout=layout)
    for i, (name, o) in enumerate(result.outcomes.items()):
        mc = doc["plans"][name].get("monte_carlo", {})
        if key == "capacity_tokens_per_s":
            if i == 0:
                _band(fig, x, mc.get("demand_tokens_per_s", {}), "demand", scale, "#444444")
            if name == "alternative":
                continue
        _band(fig, x, mc.get(key, {}), o.label, scale, _COLORS[i])
    return fig


def _tornado(result: PlanResult) -> go.Figure:
    """The optimised plan's NPV with one input at its P10 or P90, largest swing on top."""
    bars = list(result.bars)[:12][::-1]
    base = result.answer / 1e9
    fig = go.Figure(
        layout={
            "title": "Tornado: the optimised plan's NPV (cost and penalty, $B), one input at its P10 or P90",
            "barmode": "overlay",
            "xaxis_title": "$B",
        }
    )
    for name, answers in (("P10", [b.answer_low for b in bars]), ("P90", [b.answer_high for b in bars])):
        fig.add_bar(
            y=[b.name for b in bars],
            x=[a / 1e9 - base for a in answers],
            base=base,
            orientation="h",
            name=f"input at {name}",
        )
    return fig


def _draw_figures(result: PlanResult, x: list[str]) -> list[go.Figure]:
    """Across draws: P(shortfall) per period, $/M tokens, and the values of the deal and of
    flexibility."""
    with_draws = [o for o in result.outcomes.values() if o.draws]
    short = go.Figure(
        [go.Bar(x=x, y=o.p_shortfall(), name=o.label) for o in with_draws],
        layout={"title": "P(shortfall): share of draws with unserved demand", "yaxis_tickformat": ".0%"},
    )
    spread = go.Figure(
        [go.Histogram(x=_draws(o, "usd_per_m_tokens"), name=o.label, opacity=0.6) for o in with_draws],
        layout={
            "title": "$/M output tokens over the horizon, across draws",
            "barmode": "overlay",
            "xaxis_title": "$ / M tokens",
        },
    )
    figs = [short, spread]
    v = result.verdict
    if v is not None and len(v.flexibility_draws):
        figs.append(
            go.Figure(
                [
                    go.Histogram(x=v.value_draws / 1e9, name="value of the deal", opacity=0.6),
                    go.Histogram(x=v.flexibility_draws / 1e9, name="value of flexibility", opacity=0.6),
                ],
                layout={
                    "title": "Across draws: value of the deal (best alternative - deal as announced) and "
                    "of flexibility (as announced - optimised), $B NPV",
                    "barmode": "overlay",
                    "xaxis_title": "$B",
                },
            )
        )
    return figs


def _figures(result: PlanResult, doc: dict[str, Any]) -> list[go.Figure]:
    x = list(result.plan.period_labels)
    demand = _band_figure(
        result,
        doc,
        x,
        "capacity_tokens_per_s",
        1e-6,
        {
            "title": "Demand against the fleet's capacity (peak hour; bands P10-P90 over draws)",
            "yaxis_title": "M output tokens/s",
        },
    )
    cost = _band_figure(
        result,
        doc,
        x,
        "usd_per_million_output_tokens_by_period",
        1.0,
        {
            "title": "Cost per million output tokens delivered, per period (bands P10-P90)",
            "yaxis_title": "$ / M tokens",
        },
    )
    return [*_supply_figures(result, x), demand, cost, _tornado(result), *_draw_figures(result, x)]


def plan_html(result: PlanResult) -> str:
    """The report as one self-contained HTML page (plotly.js inlined once)."""
    doc = plan_document(result)
    figs = _figures(result, doc)
    parts = [f.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, f in enumerate(figs)]
    buys = "".join(
        f"<h3>{html.escape(o.label)}</h3>"
        + _table(
            ["period", "supplier", "generation", "IT MW", "cost", "reason"],
            [[b.period, b.supplier, b.generation, f"{b.it_mw:,.0f}", _usd(b.usd), b.reason] for b in o.buys],
        )
        for o in result.outcomes.values()
    )
    plans = _table(
        ["plan", "NPV cost", "NPV penalty", "NPV total", "P10/P50/P90 total", "$/M tokens P50"],
        [
            [
                o.label,
                _usd(o.base.npv_cost),
                _usd(o.base.npv_penalty),
                _usd(o.base.npv_total),
                " / ".join(_usd(v) for v in np.percentile(o.npv_totals(), _BAND)) if o.draws else "-",
                f"${np.nanmedian(_draws(o, 'usd_per_m_tokens')):.2f}" if o.draws else "-",
            ]
            for o in result.outcomes.values()
        ],
    )
    binding = _table(
        ["period", "binding"], [[k, ", ".join(dict.fromkeys(v))] for k, v in result.main.binding.items()]
    )
    capacities = _table(
        [
            "system",
            "engine",
            "model",
            "class",
            "tokens/s per system",
            "tokens/s per IT MW",
            "deployment",
            "note",
        ],
        [
            [
                c.task.system,
                c.task.engine,
                c.task.model,
                c.task.class_name,
                f"{c.tokens_per_s_per_system:,.0f}",
                f"{c.tokens_per_s_per_it_mw:,.0f}",
                c.plan,
                c.reason,
            ]
            for c in result.capacities
        ],
    )
    spreads = _table(
        ["device", "sigma of log error", "rows", "basis"],
        [[s.device, f"{s.sigma:.3f}", str(s.n_rows), s.basis] for s in result.spreads],
    )
    inputs = _table(
        ["field", "value", "source"],
        [[f.path, json.dumps(_clean(f.value)), f.source] for f in result.figures],
    )
    verdict = "".join(f"<li>{html.escape(line)}</li>" for line in verdict_lines(result))
    return _TEMPLATE.format(
        title=html.escape(result.plan.name),
        description=html.escape(result.plan.description),
        seed=result.plan.seed,
        draws=len(result.draws),
        verdict=verdict,
        figures="\n".join(parts),
        buys=buys,
        plans=plans,
        binding=binding,
        capacities=capacities,
        spreads=spreads,
        inputs=inputs,
    )


def write_plan_outputs(result: PlanResult, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write `plan.json`, `plan.html` and `plan.resolved.yaml` under `out_dir`, all or none
    (see `write_folder`); keys `json`, `html`, `plan`."""
    return write_named(
        out_dir,
        {
            "plan": ("plan.resolved.yaml", result.plan.dump()),
            "json": ("plan.json", plan_json(result)),
            "html": ("plan.html", plan_html(result)),
        },
    )
