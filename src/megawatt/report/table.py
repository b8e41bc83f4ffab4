"""The results table: one row per (option, model), every figure with its unit."""

from __future__ import annotations

import math
from typing import Any

from rich.table import Table

from megawatt.fleet import OptionResult
from megawatt.study import StudyResult
from megawatt.units import MW


def _plan(option: OptionResult) -> str:
    parts = []
    for p in option.pools:
        d = p.deployment
        if d.family == "wafer":
            wafers = f"{d.pp} wafer{'s' if d.pp > 1 else ''}"
            plan = "1 wafer, streamed weights" if d.weight_streaming else wafers
        else:
            plan = f"TP{d.tp}" + (f" PP{d.pp}" if d.pp > 1 else "")
            plan += (f" EP{d.ep}" if d.ep > 1 else "") + (" DP-attention" if d.attention_dp else "")
        if d.speculation is not None:
            draft = f" {d.draft_model.id}" if d.draft_model is not None else ""
            plan += f" spec k={d.speculation.draft_tokens}{draft}"
        dtype = d.weight_dtype_of("experts" if d.model.is_moe else "mlp")
        parts.append(f"{p.name}: {plan} {dtype} {d.engine}")
    return "; ".join(parts)


def option_rows(study: StudyResult) -> list[dict[str, Any]]:
    """The figures of every option as plain numbers (SI units, named)."""
    rows = []
    for o in study.options:
        rows.append(
            {
                "option": o.name,
                "model": o.model_id,
                "plan": _plan(o),
                "systems": o.n_systems,
                "it_mw": o.it_peak_w / MW,
                "leftover_it_mw": o.leftover_w / MW,
                "capacity_requests_per_s": o.rate_per_s,
                "output_tokens_per_s": o.output_tokens_per_s,
                "per_user_tokens_per_s": o.per_user_tokens_per_s,
                "single_stream_tokens_per_s": o.single_stream_tokens_per_s,
                "ttft_p50_s": o.ttft_s(50),
                "ttft_p99_s": o.ttft_s(99),
                "tpot_p50_s": o.tpot_s(50),
                "tpot_p99_s": o.tpot_s(99),
                "prompts_per_day": o.prompts_per_day,
                "concurrent_requests": o.concurrent_requests,
                "joules_per_output_token": o.joules_per_token,
                "usd_per_million_output_tokens": o.usd_per_million_tokens,
                "usd_per_request": o.usd_per_request,
                "annual_cost_usd": o.annual_cost.total,
                "limited_by": sorted({v for p in o.pools for v in p.capacity.limited_by}),
                "per_class": o.class_latency(),
                "at_demand": _demand(o),
            }
        )
    return rows


def _demand(o: OptionResult) -> dict[str, Any] | None:
    d = o.demand
    if d is None:
        return None
    return {
        "peak_requests_per_s": d.rate_per_s,
        "pool_requests_per_s": list(d.pool_rates),
        "over_capacity": list(d.over_capacity),
        "load_share_of_capacity": d.rate_per_s / o.rate_per_s if o.rate_per_s > 0 else None,
        "ttft_p50_s": d.percentile("ttft_s", 50),
        "ttft_p99_s": d.percentile("ttft_s", 99),
        "tpot_p50_s": d.percentile("tpot_s", 50),
        "tpot_p99_s": d.percentile("tpot_s", 99),
        "it_mw": d.it_w / MW,
        "facility_mw": d.facility_w / MW,
        "joules_per_output_token": d.joules_per_token,
        "usd_per_million_output_tokens": d.usd_per_million_tokens,
        "simulated_requests": sum(r.n_requests for r in d.runs if r is not None),
    }


def demand_table(study: StudyResult) -> Table | None:
    """The options at the traffic's peak-hour demand (None when not simulated)."""
    rows = [r for r in option_rows(study) if r["at_demand"] is not None]
    if not rows:
        return None
    sc = study.scenario
    peak = rows[0]["at_demand"]["peak_requests_per_s"]
    t = Table(
        title=f"At demand: {sc.traffic.demand_prompts_per_day / 1e9:g}B prompts/day, peak hour "
        f"{peak:,.0f} requests/s ("
        + ("exact: every replica" if sc.fleet.mode == "exact" else f"sampled, {sc.fleet.k} replicas per pool")
        + f", {sc.fleet.duration_s:g} s)",
        title_justify="left",
        header_style="bold",
    )
    for name in (
        "Option",
        "Model",
        "Load / capacity",
        "TTFT p50/p99 s",
        "TPOT p50/p99 ms",
        "IT MW drawn",
        "J/token",
        "$/M tokens",
        "Note",
    ):
        t.add_column(name, justify="left" if name in ("Option", "Model", "Note") else "right")
    for r in rows:
        d = r["at_demand"]
        note = ("over capacity: " + ", ".join(d["over_capacity"])) if d["over_capacity"] else ""
        t.add_row(
            r["option"],
            r["model"],
            _num(d["load_share_of_capacity"] or math.nan, ".1%"),
            f"{_num(d['ttft_p50_s'], '.2f')}/{_num(d['ttft_p99_s'], '.2f')}",
            f"{_num(d['tpot_p50_s'] * 1e3, '.0f')}/{_num(d['tpot_p99_s'] * 1e3, '.0f')}",
            _num(d["it_mw"], ".1f"),
            _num(d["joules_per_output_token"], ".2f"),
            "$" + _num(d["usd_per_million_output_tokens"], ".2f"),
            note,
        )
    return t


def _num(value: float, fmt: str) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and not math.isfinite(value))
        else format(value, fmt)
    )


def results_table(study: StudyResult) -> Table:
    """A rich table of the study's answers."""
    sc = study.scenario
    t = Table(
        title=f"{sc.name}: {sc.budget.describe()}, "
        f"SLO p99 TTFT <= {sc.slo.ttft_p99_s:g} s, p99 TPOT <= {sc.slo.tpot_p99_s * 1e3:g} ms",
        title_justify="left",
        header_style="bold",
    )
    for name, justify in [
        ("Option", "left"),
        ("Model", "left"),
        ("Plan", "left"),
        ("Systems", "right"),
        ("IT MW", "right"),
        ("Output tok/s", "right"),
        ("Per-user tok/s", "right"),
        ("TTFT p50/p99 s", "right"),
        ("TPOT p50/p99 ms", "right"),
        ("Prompts/day", "right"),
        ("J/token", "right"),
        ("$/M tokens", "right"),
        ("Limited by", "left"),
    ]:
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in option_rows(study):
        t.add_row(
            r["option"],
            r["model"],
            r["plan"],
            f"{r['systems']:,}",
            _num(r["it_mw"], ".1f"),
            _num(r["output_tokens_per_s"] / 1e6, ".2f") + "M",
            _num(r["per_user_tokens_per_s"], ".0f")
            + f" ({_num(r['single_stream_tokens_per_s'], '.0f')} solo)",
            f"{_num(r['ttft_p50_s'], '.2f')}/{_num(r['ttft_p99_s'], '.2f')}",
            f"{_num(r['tpot_p50_s'] * 1e3, '.0f')}/{_num(r['tpot_p99_s'] * 1e3, '.0f')}",
            _num(r["prompts_per_day"] / 1e9, ".2f") + "B",
            _num(r["joules_per_output_token"], ".2f"),
            "$" + _num(r["usd_per_million_output_tokens"], ".2f"),
            ", ".join(r["limited_by"]) or "-",
        )
    return t
