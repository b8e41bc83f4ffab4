"""`megawatt calibrate`: the estimator contract, fitting that moves predictions towards the
measurements, groups without rows keeping their prior, and a file regenerated bit for bit."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from megawatt.calibration import COLUMNS, Calibrator, fit_rows, newest_date, parse_measurements, validate
from megawatt.cli import main
from megawatt.errors import NotFittedError
from megawatt.hardware import load_catalog
from megawatt.perf import efficiencies_for, efficiency_key, prior
from megawatt.perf.efficiency import FITTED_FIELDS, WAFER_FITTED_FIELDS, fitted_from

CATALOG = load_catalog()
HEADER = ",".join([*COLUMNS, "date", "notes"])
# Four H200/H100 TRT-LLM rows (one group, gpu/nvidia-fp8/trtllm) that are quick to replay, one
# vLLM row (a group with too few rows to fit) and a wafer row (its group, Cerebras's launch
# software by its date, has one row: fewer than the two a wafer group needs).
LINES = [
    "C1,h200-sxm,1,llama-3.1-8b,fp8,trtllm,offline,128,128,fixed,,40,,,no,"
    "output_tokens_per_s,9000,2025-01,TP1",
    "C2,h200-sxm,1,llama-3.1-8b,fp8,trtllm,offline,1000,100,fixed,,40,,,no,"
    "output_tokens_per_s,4000,2025-03-02,TP1",
    "C3,h200-sxm,1,llama-3.1-8b,fp8,trtllm,single_user,128,64,fixed,1,3,,,no,"
    "output_tokens_per_s_per_user,250,2025,",
    "C4,h100-sxm,1,llama-3.1-8b,fp8,trtllm,single_user,500,64,fixed,1,3,,,no,"
    "output_tokens_per_s_per_user,200,2025-02 (undated),",
    "C5,h100-sxm,1,llama-3.1-8b,fp8,vllm,single_user,128,64,fixed,1,3,,,no,"
    "output_tokens_per_s_per_user,150,2025-03,",
    "C6,wse3,1,llama-3.1-8b,bf16,cerebras,single_user,128,64,fixed,1,3,,,unknown,"
    "output_tokens_per_s_per_user,1800,2024,",
]
KEY = efficiency_key(CATALOG.device("h200-sxm"), "trtllm")


def small_csv() -> str:
    return "\n".join([HEADER, *LINES]) + "\n"


ROWS = parse_measurements(small_csv(), "small.csv", CATALOG)


@pytest.fixture(scope="module")
def fitted() -> Calibrator:
    return Calibrator(workers=1, catalog=CATALOG).fit(ROWS)


# -- the estimator contract ---------------------------------------------------------------------
def test_an_unfitted_calibrator_says_to_fit_it_first() -> None:
    cal = Calibrator()
    with pytest.raises(NotFittedError, match=r"call Calibrator\(\)\.fit\(measurements\) first"):
        _ = cal.efficiencies_
    with pytest.raises(NotFittedError, match="not fitted yet"):
        cal.predict(ROWS)
    with pytest.raises(NotFittedError):
        cal.document(inputs=[("x", "0")], data_date="2025")
    assert not hasattr(cal, "fit_mape_")


def test_fit_returns_self_and_learned_attributes_end_in_underscore() -> None:
    cal = Calibrator(workers=1, catalog=CATALOG, iterations=1)
    params = set(vars(cal))
    assert params == {"min_rows", "iterations", "workers", "catalog"}
    assert cal.fit(ROWS[:4]) is cal
    learned = set(vars(cal)) - params
    assert learned and all(name.endswith("_") for name in learned)


def test_parameters_are_checked_at_fit() -> None:
    with pytest.raises(ValueError, match="min_rows >= 1"):
        Calibrator(min_rows=0).fit(ROWS)


# -- what fitting does ------------------------------------------------------------------------------
def test_fitting_moves_predictions_towards_the_measurements(fitted: Calibrator) -> None:
    before = validate(ROWS[:4], efficiencies={KEY: prior("gpu", "trtllm")}, catalog=CATALOG)
    prior_mape = before.summary()["mape"]
    assert fitted.fit_mape_ is not None and fitted.fit_mape_ < prior_mape
    assert fitted.groups_[KEY].status == "fitted" and fitted.groups_[KEY].n_rows == 4
    assert set(fitted.efficiencies_) == {KEY}
    values = fitted.groups_[KEY].values
    assert set(values) == set(FITTED_FIELDS)
    assert 0.05 <= values["compute"] <= 0.9 and 0.05 <= values["memory"] <= 0.95
    # Leave-one-out predictions exist for every fitted row and differ from the fit.
    assert [r.id for r in fitted.residuals_] == ["C1", "C2", "C3", "C4", "C5", "C6"]
    assert fitted.cv_mape_ is not None and fitted.cv_mape_ >= fitted.fit_mape_ * 0.5


def test_groups_with_too_few_rows_or_wafers_keep_their_prior(fitted: Calibrator) -> None:
    vllm = fitted.groups_[efficiency_key(CATALOG.device("h100-sxm"), "vllm")]
    assert vllm.status == "prior" and "fewer than 3" in vllm.reason
    assert vllm.values["compute"] == prior("gpu", "vllm").compute
    wafer = fitted.groups_[efficiency_key(CATALOG.device("wse3"), "cerebras-2024-08")]
    assert wafer.status == "prior" and "fewer than 2" in wafer.reason
    assert set(wafer.values) == set(WAFER_FITTED_FIELDS)


def test_fit_rows_take_gpu_rows_with_stated_lengths_and_wafer_speed_rows(fitted: Calibrator) -> None:
    index = fit_rows(ROWS, fitted.validation_.rows)
    assert [ROWS[i].id for i in index] == ["C1", "C2", "C3", "C4", "C5", "C6"]


def test_wafer_groups_fit_their_mesh_parameters_from_two_rows() -> None:
    lines = [
        "W1,wse3,1,llama-3.1-8b,bf16,cerebras,single_user,,,unknown,,,,,unknown,"
        "output_tokens_per_s_per_user,1800,2024-08-27,",
        "W2,wse3,4,llama-3.1-70b,bf16,cerebras,single_user,,,unknown,,,,,unknown,"
        "output_tokens_per_s_per_user,446,2024-08,",
        "W3,wse3,4,llama-3.1-70b,bf16,cerebras,single_user,,,unknown,,,,,unknown,"
        "ttft_ms,170,2024-08,",
    ]
    rows = parse_measurements("\n".join([HEADER, *lines]) + "\n", "w.csv", CATALOG)
    cal = Calibrator(workers=1, catalog=CATALOG, iterations=2).fit(rows)
    key = efficiency_key(CATALOG.device("wse3"), "cerebras-2024-08")
    group = cal.groups_[key]
    assert group.status == "fitted" and group.n_rows == 3  # speeds and the TTFT row
    assert set(group.values) == set(WAFER_FITTED_FIELDS)
    assert group.fit_mape is not None and group.fit_mape < 0.1
    before = validate(rows, efficiencies={key: prior("wafer", "cerebras")}, catalog=CATALOG)
    assert group.fit_mape < before.summary()["mape"]


def test_the_document_reads_back_as_the_fitted_efficiencies(fitted: Calibrator) -> None:
    doc = fitted.document(inputs=[("small.csv", "abc")], data_date=newest_date(ROWS))
    assert doc["input"] == {
        "files": [{"file": "small.csv", "sha256": "abc"}], "newest_measurement": "2025-03-02"
    }
    back = fitted_from(json.loads(json.dumps(doc)))
    assert set(back) == {KEY}
    assert back[KEY].memory == pytest.approx(fitted.efficiencies_[KEY].memory, rel=1e-5)
    assert "fitted by `megawatt calibrate`" in back[KEY].source
    assert fitted_from({**doc, "format": 99}) == {}  # another layout is ignored


def test_groups_without_a_fitted_value_use_the_documented_prior() -> None:
    wafer = CATALOG.device("wse3")
    assert efficiencies_for(wafer, "other") == prior("wafer", "other")


# -- the file -----------------------------------------------------------------------------------------
def test_calibrate_regenerates_its_file_bit_for_bit(tmp_path: Path) -> None:
    data = tmp_path / "small.csv"
    data.write_text(small_csv())
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["calibrate", "--data", str(data), "--out", str(a), "--workers", "1"]) == 0
    assert main(["calibrate", "--data", str(data), "--out", str(b), "--workers", "1"]) == 0
    assert a.read_bytes() == b.read_bytes()
    doc = json.loads(a.read_text())
    assert doc["format"] == 2
    assert doc["input"]["files"] == [
        {"file": "small.csv", "sha256": hashlib.sha256(data.read_bytes()).hexdigest()}
    ]
    assert doc["groups"][KEY]["status"] == "fitted"
    assert {r["id"] for r in doc["residuals"]} == {"C1", "C2", "C3", "C4", "C5", "C6"}
    for value in doc["groups"][KEY]["values"].values():
        assert float(f"{value:.6g}") == value  # saved to 6 significant digits


# -- unpublished dataset lengths ----------------------------------------------------------------
def test_calibration_estimates_an_mlperf_datasets_mean_input_from_its_rows() -> None:
    # Rows of two models simulated with the prior efficiencies and CNN/DailyMail prompts of
    # 1,600 tokens on average (the assumption says ~990): the fit moves the dataset's mean most
    # of the way there, in log terms, while the fixed-length rows hold the efficiencies.
    lines = [
        "D1,h200-sxm,1,llama-3.1-8b,fp8,trtllm,offline,,128,mlperf-cnndm,,,,,no,"
        "output_tokens_per_s,1,2025-09,TP1",
        "D2,h100-sxm,1,llama-3.1-8b,fp8,trtllm,offline,,100,mlperf-cnndm,,,,,no,"
        "output_tokens_per_s,1,2025-09,TP1",
        "D3,h200-sxm,2,llama-3-8b,fp8,trtllm,offline,,128,mlperf-cnndm,,,,,no,"
        "output_tokens_per_s,1,2025-09,TP2",
        "D4,h200-sxm,1,llama-3.1-8b,fp8,trtllm,offline,1000,100,fixed,,40,,,no,"
        "output_tokens_per_s,1,2025-03,TP1",
        "D5,h200-sxm,1,llama-3.1-8b,fp8,trtllm,offline,128,128,fixed,,40,,,no,"
        "output_tokens_per_s,1,2025-03,TP1",
    ]
    rows = parse_measurements("\n".join([HEADER, *lines]) + "\n", "d.csv", CATALOG)
    truth = validate(
        rows, efficiencies={KEY: prior("gpu", "trtllm")}, catalog=CATALOG,
        input_means={"mlperf-cnndm": 1600.0},
    )
    rows = tuple(replace(m, value=r.predicted) for m, r in zip(rows, truth.rows, strict=True))
    assert all(r.length_dataset == "mlperf-cnndm" for r in truth.rows[:3])
    cal = Calibrator(workers=1, catalog=CATALOG, iterations=2).fit(rows)
    fit = cal.datasets_["mlperf-cnndm"]
    assert fit.status == "fitted" and fit.n_rows == 3
    moved = math.log(fit.input_mean / fit.prior_input_mean) / math.log(1600 / fit.prior_input_mean)
    assert 0.6 < moved < 1.2
    assert cal.datasets_["mlperf-openorca"].status == "prior"  # no rows: the assumption kept
    doc = cal.document(inputs=[("d.csv", "abc")], data_date="2025-09")
    assert doc["datasets"]["mlperf-cnndm"]["input_mean"] == pytest.approx(fit.input_mean, rel=1e-5)
    # Predictions with the estimate use it; the per-row sensitivity to it is negative for a
    # prefill-heavy throughput.
    with_fit = cal.predict(rows)
    assert with_fit.rows[0].predicted != truth.rows[0].predicted
    assert cal.validation_.rows[0].length_sensitivity is not None
    assert cal.validation_.rows[0].length_sensitivity < 0


def test_a_dataset_only_one_model_replays_keeps_its_assumed_length() -> None:
    # Its mean would be a parameter of that model, soaking up the model's own error.
    lines = [
        f"E{i},h200-sxm,1,llama-3.1-8b,fp8,trtllm,offline,,{out},mlperf-cnndm,,,,,no,"
        f"output_tokens_per_s,{value},2025-09,TP1"
        for i, (out, value) in enumerate([(128, 3000), (100, 2500), (120, 2800)])
    ]
    rows = parse_measurements("\n".join([HEADER, *lines]) + "\n", "e.csv", CATALOG)
    cal = Calibrator(workers=1, catalog=CATALOG, iterations=1).fit(rows)
    fit = cal.datasets_["mlperf-cnndm"]
    assert fit.status == "prior" and fit.input_mean == fit.prior_input_mean
    assert "of 1 model(s)" in fit.reason
    assert cal.input_means_ == {}


def test_calibrate_fits_several_files_together_and_refuses_repeated_ids(tmp_path: Path) -> None:
    first, second = tmp_path / "one.csv", tmp_path / "two.csv"
    first.write_text("\n".join([HEADER, *LINES[:2]]) + "\n")
    second.write_text("\n".join([HEADER, *LINES[2:4]]) + "\n")
    out = tmp_path / "c.json"
    args = ["calibrate", "--data", str(first), "--data", str(second), "--out", str(out)]
    assert main([*args, "--workers", "1"]) == 0
    doc = json.loads(out.read_text())
    assert [f["file"] for f in doc["input"]["files"]] == ["one.csv", "two.csv"]
    assert {r["id"] for r in doc["residuals"]} == {"C1", "C2", "C3", "C4"}
    assert main(["calibrate", "--data", str(first), "--data", str(first), "--out", str(out)]) == 2


def test_the_draft_acceptance_of_benchmark_mtp_rows_is_fitted_from_them() -> None:
    """Speculative rows of the serving benchmarks' random dataset, measured as the model predicts
    them at acceptance 0.45: calibration moves from its 0.8 prior to about that rate (six rows
    leave the prior a little pull) and predicts them with it."""
    notes = '"ISL/OSL 1024/256; TP1 EP1; random lengths uniform in [0.8L, L]"'
    lines = [
        f"M{c},h200-sxm,1,llama-3.1-8b,fp8,sglang,max_throughput_concurrency,921.5,230.5,unknown,"
        f"{c},{10 * c},,,yes,output_tokens_per_s,1,2026-02,{notes}"
        for c in (1, 2, 4, 8, 16, 32)
    ]
    rows = parse_measurements("\n".join([HEADER, *lines]) + "\n", "mtp.csv", CATALOG)
    key = efficiency_key(CATALOG.device("h200-sxm"), "sglang-2026-01")
    # The group has no fit rows (speculative rows are not in the groups' fit): its prior.
    truth = validate(rows, efficiencies={key: prior("gpu", "sglang-2026-01")}, catalog=CATALOG,
                     acceptance=0.45)
    rows = tuple(replace(m, value=r.predicted) for m, r in zip(rows, truth.rows, strict=True))
    cal = Calibrator(workers=1, catalog=CATALOG, iterations=1).fit(rows)
    fit = cal.speculation_["random"]
    assert fit.status == "fitted" and fit.n_rows == 6
    assert 0.44 <= fit.acceptance <= 0.5
    assert all(x.abs_pct_error < 0.05 for x in cal.spec_residuals_)
    doc = cal.document(inputs=[("mtp.csv", "abc")], data_date="2026-02")
    assert doc["speculation"]["random"]["acceptance"] == fit.acceptance
    assert {r["id"] for r in doc["residuals"] if r.get("fits") == "draft acceptance"} == {
        "M1", "M2", "M4", "M8", "M16", "M32"
    }
