"""Validation summaries from hand-made row results: MAPE overall, per hardware, per metric and per
(hardware, engine, metric); the GPU throughput acceptance figures; the share of throughput and
TTFT rows predicted (wafers apart); the wafer figures; skipped rows with their reasons; and the
calibration's cross-validated errors matched to rows by id and measured value."""

from __future__ import annotations

import pytest

from megawatt.calibration.measurements import RowResult
from megawatt.calibration.validation import Validation, summarize


def r(id: str, hardware: str, metric: str, measured: float, predicted: float | None, *,
      family: str = "gpu", engine: str = "vllm", reason: str = "") -> RowResult:
    return RowResult(id, hardware, "m", "offline", metric, measured, predicted, "TP1", reason,
                     group=f"{family}/{engine}", family=family)


ROWS = (
    r("A", "h100-sxm", "output_tokens_per_s", 100.0, 110.0),  # +10%
    r("B", "h100-sxm", "output_tokens_per_s", 200.0, 150.0),  # -25%
    r("C", "mi355x", "output_tokens_per_s", 400.0, 420.0, engine="sglang"),  # +5%
    r("D", "mi355x", "ttft_ms", 50.0, 60.0, engine="sglang"),  # +20%
    r("E", "h100-sxm", "ttft_ms", 80.0, None, reason="no plan fits"),
    r("W1", "wse3", "output_tokens_per_s_per_user", 1000.0, 900.0, family="wafer", engine="cerebras"),  # -10%
    r("W2", "wse3", "ttft_ms", 200.0, 260.0, family="wafer", engine="cerebras"),  # +30%
    r("W3", "wse2", "ratio", 600.0, None, family="wafer", engine="waferllm", reason="microbenchmark"),
)


def test_mape_is_the_mean_absolute_error_of_the_predicted_rows() -> None:
    s = summarize(ROWS)
    assert (s["n_rows"], s["n_predicted"]) == (8, 6)
    assert s["mape"] == pytest.approx((0.10 + 0.25 + 0.05 + 0.20 + 0.10 + 0.30) / 6)


def test_mape_per_hardware_and_per_metric() -> None:
    s = summarize(ROWS)
    assert s["mape_by_hardware"] == {
        "h100-sxm": pytest.approx((0.10 + 0.25) / 2),
        "mi355x": pytest.approx((0.05 + 0.20) / 2),
        "wse3": pytest.approx((0.10 + 0.30) / 2),
    }
    assert s["mape_by_metric"]["output_tokens_per_s"] == pytest.approx((0.10 + 0.25 + 0.05) / 3)
    assert s["mape_by_metric"]["ttft_ms"] == pytest.approx((0.20 + 0.30) / 2)
    assert list(s["mape_by_hardware"]) == sorted(s["mape_by_hardware"])


def test_the_gpu_throughput_acceptance_figures() -> None:
    g = summarize(ROWS)["gpu_output_tokens_per_s"]
    assert g["n"] == 3 and g["mape"] == pytest.approx((0.10 + 0.25 + 0.05) / 3)
    assert g["by_hardware"] == {"h100-sxm": (2, pytest.approx(0.175)), "mi355x": (1, pytest.approx(0.05))}
    assert "cv_mape" not in g


def test_the_share_of_throughput_and_ttft_rows_predicted_leaves_wafers_apart() -> None:
    """GPU rows of throughput or TTFT: A, B, C, D predicted and E skipped."""
    assert summarize(ROWS)["throughput_ttft_predicted"] == (4, 5)


def test_the_wafer_figures_are_their_median_worst_and_mean() -> None:
    w = summarize(ROWS)["wafer"]
    assert (w["n"], w["n_predicted"]) == (2, 2)  # the ratio row is no speed or TTFT
    assert w["median"] == pytest.approx(0.20) and w["max"] == pytest.approx(0.30)
    assert w["max_id"] == "W2" and w["mape"] == pytest.approx(0.20)


def test_skipped_rows_keep_their_reasons() -> None:
    assert summarize(ROWS)["skipped"] == [("E", "no plan fits"), ("W3", "microbenchmark")]


def test_each_metric_and_breakdown_has_its_count_mape_and_median_ratio() -> None:
    s = summarize(ROWS)
    tput = s["metrics"]["output_tokens_per_s"]
    assert tput["n"] == 3 and tput["median_ratio"] == pytest.approx(1.05)  # of 1.1, 0.75, 1.05
    rows = {(b["hardware"], b["engine"], b["metric"]): b for b in s["breakdown"]}
    assert rows[("mi355x", "sglang", "ttft_ms")]["median_ratio"] == pytest.approx(1.2)
    assert rows[("h100-sxm", "vllm", "output_tokens_per_s")]["n"] == 2
    assert ("h100-sxm", "vllm", "ttft_ms") not in rows  # only predicted rows are broken down


def test_cross_validated_errors_are_matched_by_id_and_measured_value() -> None:
    """The calibration file keys its leave-one-out predictions by (id, measured to 6 digits)."""
    cv = {("A", 100.0): 120.0, ("C", 400.0): 380.0, ("B", 999.0): 1.0, ("W1", 1000.0): 700.0}
    s = summarize(ROWS, cv)
    g = s["gpu_output_tokens_per_s"]
    assert g["cv_n"] == 2  # B's measured value differs: no match
    assert g["cv_mape"] == pytest.approx((0.20 + 0.05) / 2)
    assert g["cv_fit_mape"] == pytest.approx((0.10 + 0.05) / 2)  # the fit's own error, same rows
    w = s["wafer"]
    assert w["cv_n"] == 1 and w["cv_median"] == pytest.approx(0.30) and w["cv_max"] == pytest.approx(0.30)
    assert s["metrics"]["output_tokens_per_s"]["cv_n"] == 2


def test_a_validation_with_nothing_predicted_has_no_mape() -> None:
    s = summarize((r("E", "h100-sxm", "ttft_ms", 80.0, None, reason="x"),))
    assert s["mape"] is None and s["mape_by_hardware"] == {} and s["gpu_output_tokens_per_s"]["mape"] is None
    assert s["wafer"] == {"n": 0, "n_predicted": 0}


def test_the_json_document_lists_every_row_with_its_error() -> None:
    v = Validation(ROWS)
    doc = v.to_json()
    assert doc["summary"]["n_rows"] == 8 and doc["summary"]["mape"] == pytest.approx(summarize(ROWS)["mape"])
    rows = {row["id"]: row for row in doc["rows"]}
    assert rows["B"]["abs_pct_error"] == pytest.approx(0.25) and rows["B"]["predicted"] == 150.0
    assert rows["E"]["predicted"] is None and rows["E"]["skipped_reason"] == "no plan fits"
    assert len(v.predicted) == 6
