"""A whole measurements file replayed (the rows of each run together, in parallel processes) and
its summaries: MAPE overall, per hardware and per metric, the acceptance figures, and the
calibration's cross-validated errors matched to the rows."""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import as_completed
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from megawatt.calibration.datasets import InputMeans
from megawatt.calibration.deployment import EffTable
from megawatt.calibration.measurements import THROUGHPUT_METRICS, Measurement, RowResult, runs_of
from megawatt.calibration.replay import predict_rows
from megawatt.hardware import Catalog, load_catalog
from megawatt.interrupts import worker_pool
from megawatt.perf.efficiency import calibration_document

__all__ = [
    "Progress",
    "Validation",
    "calibration_cv",
    "summarize",
    "validate",
]


@dataclass(frozen=True)
class Validation:
    """Every row's result and the summaries (errors are fractions: 0.12 = 12%)."""

    rows: tuple[RowResult, ...]

    @property
    def predicted(self) -> tuple[RowResult, ...]:
        """Rows with a prediction."""
        return tuple(r for r in self.rows if r.predicted is not None)

    def summary(
        self, cv_predicted: Mapping[tuple[str, float], float] | None = None
    ) -> dict[str, Any]:
        """`n_rows`, `n_predicted`, `mape`, `mape_by_hardware`, `mape_by_metric` and the
        acceptance figures (see `summarize`)."""
        return summarize(self.rows, cv_predicted)

    def to_json(self) -> dict[str, Any]:
        """The `--json` document: `{"summary": {...}, "rows": [...]}`."""
        s = self.summary()
        return {
            "summary": {
                "n_rows": s["n_rows"],
                "n_predicted": s["n_predicted"],
                "mape": s["mape"],
                "mape_by_hardware": s["mape_by_hardware"],
                "mape_by_metric": s["mape_by_metric"],
            },
            "rows": [
                {
                    "id": r.id,
                    "hardware": r.hardware,
                    "metric": r.metric,
                    "measured": r.measured,
                    "predicted": r.predicted,
                    "abs_pct_error": r.abs_pct_error,
                    "plan": r.plan,
                    "skipped_reason": r.skipped_reason,
                }
                for r in self.rows
            ],
        }


def _mape(rows: Sequence[RowResult]) -> float | None:
    errs = [r.abs_pct_error for r in rows if r.abs_pct_error is not None]
    return float(np.mean(errs)) if errs else None


def summarize(
    rows: Sequence[RowResult], cv_predicted: Mapping[tuple[str, float], float] | None = None
) -> dict[str, Any]:
    """MAPE overall, per hardware and per metric (fractions), and the acceptance figures: the
    GPU `output_tokens_per_s` rows overall and per hardware, and the share of throughput/TTFT
    rows predicted (wafer rows apart). `cv_predicted` ((id, measured) -> the calibration's
    leave-one-out prediction) adds the cross-validated MAPE of the GPU rows it covers."""
    done = [r for r in rows if r.predicted is not None]
    by_hw: dict[str, list[RowResult]] = {}
    by_metric: dict[str, list[RowResult]] = {}
    for r in done:
        by_hw.setdefault(r.hardware, []).append(r)
        by_metric.setdefault(r.metric, []).append(r)
    gpu_tps = [r for r in done if r.family == "gpu" and r.metric == "output_tokens_per_s"]
    gpu_by_hw: dict[str, list[RowResult]] = {}
    for r in gpu_tps:
        gpu_by_hw.setdefault(r.hardware, []).append(r)
    countable = [
        r for r in rows
        if r.family != "wafer" and (r.metric in THROUGHPUT_METRICS or r.metric == "ttft_ms")
    ]
    return {
        "n_rows": len(rows),
        "n_predicted": len(done),
        "mape": _mape(done),
        "mape_by_hardware": {k: _mape(v) for k, v in sorted(by_hw.items())},
        "mape_by_metric": {k: _mape(v) for k, v in sorted(by_metric.items())},
        "gpu_output_tokens_per_s": {
            "n": len(gpu_tps),
            "mape": _mape(gpu_tps),
            "by_hardware": {k: (len(v), _mape(v)) for k, v in sorted(gpu_by_hw.items())},
            **_cv(gpu_tps, cv_predicted),
        },
        "throughput_ttft_predicted": (
            sum(1 for r in countable if r.predicted is not None),
            len(countable),
        ),
        "wafer": _wafer_summary(rows, cv_predicted),
        "skipped": [(r.id, r.skipped_reason) for r in rows if r.predicted is None],
        "metrics": {
            metric: _figures(mine, cv_predicted) for metric, mine in sorted(by_metric.items())
        },
        "breakdown": [
            {"hardware": hw, "engine": engine, "metric": metric, **_figures(mine, cv_predicted)}
            for (hw, engine, metric), mine in sorted(_by_hw_engine_metric(done).items())
        ],
    }


def _by_hw_engine_metric(rows: Sequence[RowResult]) -> dict[tuple[str, str, str], list[RowResult]]:
    out: dict[tuple[str, str, str], list[RowResult]] = {}
    for r in rows:
        out.setdefault((r.hardware, r.group.split("/")[-1], r.metric), []).append(r)
    return out


def _figures(
    rows: Sequence[RowResult], cv_predicted: Mapping[tuple[str, float], float] | None
) -> dict[str, Any]:
    """n, MAPE, median predicted/measured, and (where the calibration file has them) the
    leave-one-out MAPE over the rows it fitted (`cv_n`)."""
    ratios = [r.predicted / r.measured for r in rows if r.predicted is not None]
    out: dict[str, Any] = {
        "n": len(rows),
        "mape": _mape(rows),
        "median_ratio": float(np.median(ratios)) if ratios else None,
    }
    cv = _cv(rows, cv_predicted)
    if cv:
        out |= {"cv_n": cv["cv_n"], "cv_mape": cv["cv_mape"]}
    return out


def _cv(
    rows: Sequence[RowResult], cv_predicted: Mapping[tuple[str, float], float] | None
) -> dict[str, Any]:
    if not cv_predicted:
        return {}
    hit = [
        (r, cv_predicted[(r.id, _sig6(r.measured))])
        for r in rows
        if (r.id, _sig6(r.measured)) in cv_predicted
    ]
    if not hit:
        return {}
    errors = [abs(p - r.measured) / r.measured for r, p in hit]
    fit = [r.abs_pct_error or 0.0 for r, _ in hit]
    return {"cv_n": len(hit), "cv_mape": float(np.mean(errors)), "cv_fit_mape": float(np.mean(fit))}


def _wafer_summary(
    rows: Sequence[RowResult], cv_predicted: Mapping[tuple[str, float], float] | None
) -> dict[str, Any]:
    """The wafer-scale acceptance figures: per-user speed and TTFT rows of wafers, their median
    and largest absolute error (fractions), and the same for the calibration's leave-one-out
    predictions where the calibration file has them."""
    mine = [r for r in rows if r.family == "wafer" and r.metric != "ratio"]
    done = [r for r in mine if r.abs_pct_error is not None]
    out: dict[str, Any] = {"n": len(mine), "n_predicted": len(done)}
    if done:
        errors = [r.abs_pct_error or 0.0 for r in done]
        worst = max(done, key=lambda r: r.abs_pct_error or 0.0)
        out |= {
            "median": float(np.median(errors)),
            "max": float(max(errors)),
            "max_id": worst.id,
            "mape": float(np.mean(errors)),
        }
    if cv_predicted:
        cv = [
            abs(cv_predicted[key] - r.measured) / r.measured
            for r in done
            if (key := (r.id, _sig6(r.measured))) in cv_predicted
        ]
        if cv:
            out |= {"cv_n": len(cv), "cv_median": float(np.median(cv)), "cv_max": float(max(cv))}
    return out


def _sig6(x: float) -> float:
    return float(f"{x:.6g}")


def calibration_cv() -> dict[tuple[str, float], float]:
    """(id, measured to 6 digits) -> the leave-one-out prediction of the packaged calibration
    file (the calibration's cross-validation, matched to rows of any measurements file)."""
    document = calibration_document()
    if not document:
        return {}
    return {
        (str(r["id"]), _sig6(float(r["measured"]))): float(r["cv_predicted"])
        for r in document.get("residuals", [])
    }


@cache
def _worker_catalog() -> Catalog:
    return load_catalog()


def _predict_task(
    args: tuple[
        Sequence[Measurement],
        EffTable | None,
        bool,
        InputMeans | None,
        Collection[str] | None,
        float | None,
    ],
) -> tuple[RowResult, ...]:
    rows, eff, record, means, lengths, acceptance = args
    return predict_rows(
        rows, _worker_catalog(), eff, record=record, input_means=means, length_datasets=lengths,
        acceptance=acceptance,
    )


Progress = Callable[[int, int, str], None]


def validate(
    measurements: Sequence[Measurement],
    *,
    efficiencies: EffTable | None = None,
    catalog: Catalog | None = None,
    workers: int | None = None,
    record: bool = False,
    progress: Progress | None = None,
    input_means: InputMeans | None = None,
    length_datasets: Collection[str] | None = None,
    acceptance: float | None = None,
) -> Validation:
    """Predict every row, the rows of one run (`run_key`) from one simulation (in parallel
    processes when `workers` > 1; results are the same). `efficiencies`, `input_means`,
    `record` and `acceptance`: as `predict_rows`."""
    n = len(measurements)
    runs = runs_of(measurements)
    workers = min(workers or os.cpu_count() or 1, max(len(runs), 1))
    out: list[RowResult | None] = [None] * n
    if progress:
        progress(0, n, "")
    done = 0
    if workers <= 1 or catalog is not None:
        cat = catalog or load_catalog()
        for run in runs:
            got = predict_rows(
                [measurements[i] for i in run], cat, efficiencies, record=record,
                input_means=input_means, length_datasets=length_datasets, acceptance=acceptance,
            )
            for i, r in zip(run, got, strict=True):
                out[i] = r
            done += len(run)
            if progress:
                progress(done, n, measurements[run[-1]].id)
    else:
        # Slowest runs first keeps both processes busy to the end.
        order = sorted(runs, key=lambda run: _cost_rank(measurements[run[0]]))
        with worker_pool(workers) as pool:
            futures = {
                pool.submit(
                    _predict_task,
                    (
                        [measurements[i] for i in run], efficiencies, record, input_means,
                        length_datasets, acceptance,
                    ),
                ): run
                for run in order
            }
            for future in as_completed(futures):
                run = futures[future]
                for i, r in zip(run, future.result(), strict=True):
                    out[i] = r
                done += len(run)
                if progress:
                    progress(done, n, measurements[run[-1]].id)
    return Validation(tuple(r for r in out if r is not None))


def _cost_rank(m: Measurement) -> int:
    return {"server": 0, "interactive": 0, "max_throughput_concurrency": 1, "offline": 2}.get(
        m.scenario, 3
    )
