"""A whole file replayed: the wafer rows within their acceptance bounds, the JSON schema of
`--json`, the CLI skipping a bad row with its line, and the assumptions in words."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from megawatt.calibration import ASSUMPTIONS, assumptions, load_measurements, validate
from megawatt.cli import main

from .conftest import CATALOG, MICRO, PRIORS, SOLO, csv_text, rows


def test_every_wafer_row_is_predicted_within_the_acceptance_bounds() -> None:
    wafer_rows = [m for m in load_measurements() if m.hardware in ("wse2", "wse3")]
    v = validate(wafer_rows, catalog=CATALOG)
    summary = v.summary()["wafer"]
    assert summary["n_predicted"] == summary["n"] == 9  # P146/P147 are GEMV ratios
    assert summary["median"] <= 0.20
    assert summary["max"] <= 0.40


def test_the_json_has_exactly_the_issue_schema() -> None:
    v = validate(rows(SOLO, MICRO), efficiencies=PRIORS, catalog=CATALOG)
    doc = v.to_json()
    assert set(doc) == {"summary", "rows"}
    assert set(doc["summary"]) == {
        "n_rows", "n_predicted", "mape", "mape_by_hardware", "mape_by_metric"
    }
    assert doc["summary"]["n_rows"] == 2 and doc["summary"]["n_predicted"] == 1
    keys = {"id", "hardware", "metric", "measured", "predicted", "abs_pct_error", "plan",
            "skipped_reason"}
    assert all(set(r) == keys for r in doc["rows"])
    solo, micro = doc["rows"]
    assert solo["abs_pct_error"] == pytest.approx(abs(solo["predicted"] / 300 - 1))  # a fraction
    assert doc["summary"]["mape"] == solo["abs_pct_error"]
    assert doc["summary"]["mape_by_hardware"] == {"h200-sxm": solo["abs_pct_error"]}
    assert micro["predicted"] is None and micro["skipped_reason"].startswith("microbenchmark")
    json.dumps(doc)  # serialisable as is


def test_the_cli_writes_the_json_and_skips_a_bad_row_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "m.csv"
    good.write_text(csv_text(SOLO, MICRO))
    out = tmp_path / "v.json"
    assert main(["validate", "--data", str(good), "--json", str(out), "--workers", "1"]) == 0
    doc = json.loads(out.read_text())
    assert [r["id"] for r in doc["rows"]] == ["T1", "T3"]
    printed = capsys.readouterr().out
    assert "MAPE" in printed and "Image generation" in printed and "leave-one-out" in printed
    images = doc["image_generation"]
    assert isinstance(images["mape"], float) and isinstance(images["loo_mape"], float)
    assert {r["id"] for r in images["rows"]} >= {"I001", "I003", "I005"}
    bad = tmp_path / "bad.csv"
    bad.write_text(csv_text(SOLO, MICRO.replace("wse2", "wse9")))
    assert main(["validate", "--data", str(bad), "--json", str(out), "--workers", "1"]) == 0
    assert "not read: " in capsys.readouterr().out
    (skipped,) = [r for r in json.loads(out.read_text())["rows"] if r["id"] == "T3"]
    assert skipped["predicted"] is None and skipped["measured"] is None
    assert "not read: " in skipped["skipped_reason"]
    assert "line 3 (id T3): hardware" in skipped["skipped_reason"]
    worse = tmp_path / "worse.csv"
    worse.write_text(csv_text(MICRO.replace("wse2", "wse9")))
    assert main(["validate", "--data", str(worse)]) == 2
    err = capsys.readouterr().err
    assert "no row of" in err and "line 2 (id T3): hardware" in err and err.count("\n") == 1


def test_assumptions_state_the_estimated_dataset_means() -> None:
    assert assumptions({}) == ASSUMPTIONS
    lines = assumptions({"mlperf-openorca": 400.0})
    (orca,) = [a for a in lines if a.startswith("mlperf-openorca:")]
    assert "input mean 400 tokens ESTIMATED by `megawatt calibrate`" in orca
    assert "median 500" in orca  # the prior and the shape are still stated
