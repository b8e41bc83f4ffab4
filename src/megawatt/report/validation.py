"""Rendering of `megawatt validate` and `megawatt calibrate`: per-row tables, the error
summaries with the acceptance figures, the fitted parameters against their priors."""

from __future__ import annotations

import json
import math
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from megawatt.calibration import Calibrator, ImageValidation, Validation, assumptions
from megawatt.perf.efficiency import FITTED_FIELDS, WAFER_FITTED_FIELDS

_UNITS = {
    "output_tokens_per_s": "tok/s",
    "output_tokens_per_s_per_user": "tok/s/user",
    "input_tokens_per_s": "tok/s in",
    "ttft_ms": "ms",
    "ratio": "x",
}


def _pct(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x * 100:.1f}%"


def _num(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.3g}"


ROWS_SHOWN = 150
"""`validate --rows auto` lists every row up to this many, else the `WORST_SHOWN` worst."""
WORST_SHOWN = 25


def validation_table(v: Validation, rows: str = "auto") -> Table:
    """One line per row: measured, predicted, signed error and the plan (or why skipped).
    `rows`: `all`, `worst` (the `WORST_SHOWN` largest errors), `auto` (all up to `ROWS_SHOWN`
    rows, else the worst)."""
    shown = list(v.rows)
    title = "Measurements replayed"
    if rows == "worst" or (rows == "auto" and len(shown) > ROWS_SHOWN):
        done = [r for r in shown if r.predicted is not None]
        shown = sorted(done, key=lambda r: -(r.abs_pct_error or 0.0))[:WORST_SHOWN]
        title += (
            f": the {len(shown)} largest errors of {len(v.rows)} rows (--rows all lists every "
            "row, --json writes them)"
        )
    t = Table(title=title, title_justify="left", header_style="bold")
    for name, justify in [
        ("id", "left"),
        ("hardware", "left"),
        ("model", "left"),
        ("scenario", "left"),
        ("measured", "right"),
        ("predicted", "right"),
        ("error", "right"),
        ("plan / reason", "left"),
    ]:
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in shown:
        unit = _UNITS.get(r.metric, "")
        if r.predicted is None:
            t.add_row(
                r.id,
                r.hardware,
                r.model or "-",
                r.scenario,
                f"{_num(r.measured)} {unit}",
                "-",
                "-",
                Text(f"skipped: {r.skipped_reason}", style="dim"),
            )
            continue
        signed = r.predicted / r.measured - 1.0
        style = "green" if abs(signed) <= 0.15 else ("yellow" if abs(signed) <= 0.3 else "red")
        notes = f" [{'; '.join(r.notes)}]" if r.notes else ""
        t.add_row(
            r.id,
            r.hardware,
            r.model,
            r.scenario,
            f"{_num(r.measured)} {unit}",
            f"{_num(r.predicted)} {unit}",
            Text(f"{signed * 100:+.0f}%", style=style),
            r.plan + notes,
        )
    return t


def validation_summary(v: Validation, cv_predicted: dict[tuple[str, float], float] | None) -> Group:
    """MAPE overall, per hardware and per metric; the acceptance figures (GPU output tokens/s,
    with the calibration's cross-validated MAPE beside the fit); skipped rows and why."""
    s = v.summary(cv_predicted)
    lines: list[Any] = []
    n_ok, n_all = s["throughput_ttft_predicted"]
    lines.append(
        Text(
            f"Rows: {s['n_rows']}, predicted {s['n_predicted']}; throughput/TTFT rows "
            f"predicted {n_ok}/{n_all} ({n_ok / max(n_all, 1):.0%}, wafer rows apart: see "
            "below). MAPE over all predicted rows: "
            f"{_pct(s['mape'])}",
            style="bold",
        )
    )
    g = s["gpu_output_tokens_per_s"]
    cv = (
        f"; cross-validated (leave-one-out, calibration file) {_pct(g['cv_mape'])} over its "
        f"{g['cv_n']} fitted rows (fit {_pct(g['cv_fit_mape'])} on the same rows)"
        if "cv_mape" in g
        else "; no calibration file: cross-validated MAPE unavailable"
    )
    lines.append(Text(f"GPU output_tokens_per_s rows: {g['n']}, MAPE {_pct(g['mape'])}{cv}", style="bold"))
    w = s["wafer"]
    if w.get("n_predicted"):
        wcv = (
            f"; cross-validated (leave-one-out) median {_pct(w['cv_median'])}, max "
            f"{_pct(w['cv_max'])} over {w['cv_n']} fitted rows"
            if "cv_median" in w
            else ""
        )
        lines.append(
            Text(
                f"Wafer rows (per-user speed, TTFT): {w['n_predicted']}/{w['n']} predicted, median "
                f"|error| {_pct(w['median'])}, max {_pct(w['max'])} ({w['max_id']}), MAPE "
                f"{_pct(w['mape'])}{wcv}",
                style="bold",
            )
        )
    t = Table(header_style="bold", title="MAPE by hardware (all metrics / GPU output tok/s)")
    for col in ("hardware", "MAPE", "GPU tok/s rows", "GPU tok/s MAPE"):
        t.add_column(col, justify="left" if col == "hardware" else "right")
    for hw, mape in s["mape_by_hardware"].items():
        n, gm = g["by_hardware"].get(hw, (0, None))
        t.add_row(hw, _pct(mape), str(n), _pct(gm))
    lines += [t, _figures_table("By metric", [{"metric": k, **v} for k, v in s["metrics"].items()],
                                ("metric",))]
    if len(s["breakdown"]) > len(s["metrics"]):
        lines.append(_figures_table(
            "By hardware, engine release and metric", s["breakdown"], ("hardware", "engine", "metric")
        ))
    if s["skipped"]:
        k = Table(header_style="bold", title="Not predicted")
        reasons: dict[str, list[str]] = {}
        for rid, reason in s["skipped"]:
            reasons.setdefault(reason, []).append(rid)
        if len(reasons) < len(s["skipped"]):  # many rows, few reasons: count them
            k.add_column("rows", justify="right")
            k.add_column("ids")
            k.add_column("reason")
            for reason, ids in sorted(reasons.items(), key=lambda kv: -len(kv[1])):
                shown = ", ".join(ids[:4]) + (", ..." if len(ids) > 4 else "")
                k.add_row(str(len(ids)), shown, reason)
        else:
            k.add_column("id")
            k.add_column("reason")
            for rid, reason in s["skipped"]:
                k.add_row(rid, reason)
        lines.append(k)
    lines.append(Text("Assumptions:", style="bold"))
    lines += [Text(f"  - {a}") for a in assumptions()]
    return Group(*lines)


def _figures_table(title: str, rows: list[dict[str, Any]], keys: tuple[str, ...]) -> Table:
    """Rows, MAPE, leave-one-out MAPE (calibration file; its rows) and median predicted /
    measured per group."""
    t = Table(header_style="bold", title=title, title_justify="left")
    for k in keys:
        t.add_column(k)
    for col in ("rows", "MAPE", "LOO MAPE", "LOO rows", "median pred/meas"):
        t.add_column(col, justify="right")
    for row in rows:
        ratio = row.get("median_ratio")
        t.add_row(
            *(str(row[k]) for k in keys),
            str(row["n"]),
            _pct(row["mape"]),
            _pct(row.get("cv_mape")),
            str(row.get("cv_n", "-")),
            "-" if ratio is None else f"{ratio:.2f}",
        )
    return t


def image_validation_table(iv: ImageValidation) -> Group:
    """The image-generation section of `megawatt validate`: each row measured against predicted
    images/s, the leave-one-out prediction, the batch and bound; the fitted efficiency, MAPE,
    leave-one-out and leave-one-system-out MAPE."""
    t = Table(
        title=f"Image generation ({iv.data}; * = figure recalled from memory, to verify)",
        title_justify="left",
        header_style="bold",
    )
    for name, justify in [
        ("id", "left"), ("system", "left"), ("model", "left"), ("scenario", "left"),
        ("round", "left"), ("measured", "right"), ("predicted", "right"), ("error", "right"),
        ("leave-one-out", "right"), ("batch / bound", "left"),
    ]:
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in iv.rows:
        signed = r.predicted / r.measured - 1.0
        style = "green" if abs(signed) <= 0.15 else ("yellow" if abs(signed) <= 0.3 else "red")
        t.add_row(
            r.id + ("*" if r.recalled else ""),
            f"{r.system} ({r.n_devices}x {r.hardware})",
            r.image_model,
            r.scenario,
            r.round,
            f"{r.measured:,.3g} img/s",
            f"{r.predicted:,.3g} img/s",
            Text(f"{signed * 100:+.0f}%", style=style),
            f"{r.loo_predicted:,.3g} img/s",
            f"{r.batch} per device, {r.bound}-bound ({r.batch_limit})",
        )
    n_recalled = sum(r.recalled for r in iv.rows)
    summary = Text(
        f"Image rows: {len(iv.rows)} ({n_recalled} recalled, to verify); one compute efficiency "
        f"fitted: {iv.compute_efficiency:.3g} of dense peak. MAPE {_pct(iv.mape)}, leave-one-out "
        f"{_pct(iv.loo_mape)}, leave-one-system-out {_pct(iv.loso_mape)}",
        style="bold",
    )
    return Group(t, summary)


def validation_json(v: Validation, images: ImageValidation | None = None) -> str:
    """The `--json` document (errors as fractions), with NaN written as null; `images` adds the
    image-generation section under `image_generation`."""

    def clean(x: object) -> object:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(y) for k, y in x.items()}
        if isinstance(x, list):
            return [clean(y) for y in x]
        return x

    doc = v.to_json()
    if images is not None:
        doc["image_generation"] = images.to_json()
    return json.dumps(clean(doc), indent=1) + "\n"


def calibration_table(cal: Calibrator) -> Group:
    """The fitted parameters of every group against the prior, with fit and cross-validated
    MAPE; groups left at the prior say why."""
    t = Table(title="Calibrated efficiencies (value / prior)", header_style="bold")
    t.add_column("group")
    t.add_column("status")
    t.add_column("rows", justify="right")
    for p in FITTED_FIELDS:
        t.add_column(p, justify="right")
    gpu_like = [(k, g) for k, g in cal.groups_.items() if not k.startswith("wafer/")]
    t.add_column("fit MAPE", justify="right")
    t.add_column("CV MAPE", justify="right")
    for key, g in gpu_like:
        cells = []
        for p in FITTED_FIELDS:
            if p not in g.values:
                cells.append("-")
                continue
            scale = 1e3 if p.endswith("_s") else 1.0
            unit = " ms" if p.endswith("overhead_s") and p != "seq_overhead_s" else (
                " us" if p == "seq_overhead_s" else ""
            )
            if p == "seq_overhead_s":
                scale = 1e6
            cells.append(f"{g.values[p] * scale:.3g} / {g.prior[p] * scale:.3g}{unit}")
        t.add_row(
            key,
            g.status if not g.reason else f"{g.status}: {g.reason}",
            str(g.n_rows),
            *cells,
            _pct(g.fit_mape),
            _pct(g.cv_mape),
        )
    head = Text(
        f"Fitted rows: {len(cal.residuals_)}; MAPE of the fit {_pct(cal.fit_mape_)}, "
        f"cross-validated (leave-one-out) {_pct(cal.cv_mape_)} over the fitted groups' rows.",
        style="bold",
    )
    spec = [
        Text(
            f"Draft acceptance, {name} dataset: {f.acceptance:.3f} "
            + (f"fitted on {f.n_rows} speculative rows (k={f.draft_tokens}, draft cost "
               f"{f.draft_cost:.0%}; prior {f.prior_acceptance}), MAPE {_pct(f.fit_mape)}, "
               f"leave-one-out {_pct(f.cv_mape)}" if f.status == "fitted" else f"kept: {f.reason}"),
        )
        for name, f in cal.__dict__.get("speculation_", {}).items()
    ]
    return Group(head, t, *spec, _dataset_table(cal), _wafer_calibration_table(cal))


def _dataset_table(cal: Calibrator) -> Table:
    """The mean input length of each MLPerf dataset: estimated (or assumed) and the prior."""
    t = Table(title="MLPerf datasets: mean input tokens (not published)", header_style="bold")
    for name, justify in [
        ("dataset", "left"), ("status", "left"), ("rows", "right"), ("mean input", "right"),
        ("assumed (prior)", "right"),
    ]:
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    for name, d in cal.datasets_.items():
        status = d.status if not d.reason else f"{d.status}: {d.reason}"
        t.add_row(name, status, str(d.n_rows), f"{d.input_mean:,.0f}", f"{d.prior_input_mean:,.0f}")
    return t


def _wafer_calibration_table(cal: Calibrator) -> Table:
    """The mesh parameters of the wafer groups (value / prior) and every wafer row's fit and
    leave-one-out prediction."""
    t = Table(title="Wafer mesh parameters (value / prior)", header_style="bold")
    t.add_column("group")
    t.add_column("rows", justify="right")
    units = {
        "compute": ("MAC % of SIMD", 100.0),
        "memory": ("GEMV % of SRAM port", 100.0),
        "prefill_compute": ("prefill % of SIMD", 100.0),
        "layer_fixed_cycles": ("fixed cycles/layer", 1.0),
        "reduce_stage_cycles": ("beta cycles/stage", 1.0),
        "handoff_s": ("hand-off us", 1e6),
    }
    for p in WAFER_FITTED_FIELDS:
        t.add_column(units[p][0], justify="right")
    t.add_column("rows: measured / fit / leave-one-out")
    for key, g in cal.groups_.items():
        if not key.startswith("wafer/") or not g.values:
            continue
        cells = [
            f"{g.values[p] * units[p][1]:.3g} / {g.prior[p] * units[p][1]:.3g}" for p in WAFER_FITTED_FIELDS
        ]
        rows = "; ".join(
            f"{r.id} {_num(r.measured)} / {_num(r.predicted)} / {_num(r.cv_predicted)}"
            for r in cal.residuals_
            if r.group == key
        )
        t.add_row(f"{key} ({g.status})", str(g.n_rows), *cells, rows)
    return t
