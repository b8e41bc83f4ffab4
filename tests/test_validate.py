"""`megawatt validate`: a measurements file becomes one prediction per row. Tiny files with rows
that can be checked by hand, the errors a bad file gives (with its line number), the skip
reasons, and the JSON schema of `--json`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from megawatt.cli import main
from megawatt.errors import InputError
from megawatt.hardware import load_catalog
from megawatt.model import load_model
from megawatt.perf import Deployment, RooflineStepModel, efficiency_key, prior
from megawatt.perf.efficiency import engine_release
from megawatt.validate import (
    COLUMNS,
    Measurement,
    load_measurements,
    parse_measurement_rows,
    parse_measurements,
    predict_row,
    read_measurements,
    validate,
    validate_images,
)

CATALOG = load_catalog()
HEADER = ",".join([*COLUMNS, "notes"])


def csv_text(*rows: str) -> str:
    return "\n".join([HEADER, *rows]) + "\n"


# id,hardware,n_devices,model,weight_dtype,engine,scenario,input_len,output_len,dataset,
# concurrency,n_requests,ttft_p99_limit_ms,tpot_p99_limit_ms,spec_decode,metric,value,notes
SOLO = (
    "T1,h200-sxm,1,llama-3.1-8b,fp8,trtllm,single_user,128,64,fixed,1,,,,no,"
    "output_tokens_per_s_per_user,300,"
)
OFFLINE = "T2,h200-sxm,1,llama-3.1-8b,fp8,trtllm,offline,128,128,fixed,,40,,,no,output_tokens_per_s,9000,TP1"
MICRO = "T3,wse2,1,,bf16,waferllm,microbenchmark,,,unknown,,,,,unknown,ratio,606,"
CLOUD = "T4,h100-sxm,,llama-3.1-8b,,other,offline,,,unknown,,,,,unknown,output_tokens_per_s,5000,"
GROQ = "T5,groq-lpu,,llama-2-70b,,groq,single_user,,,unknown,,,,,unknown,output_tokens_per_s_per_user,300,"

PRIORS = {
    efficiency_key(CATALOG.device("h200-sxm"), engine_release("trtllm")): prior("gpu", "trtllm"),
    efficiency_key(CATALOG.device("h100-sxm"), "other"): prior("gpu", "other"),
}


def rows(*lines: str) -> tuple[Measurement, ...]:
    return parse_measurements(csv_text(*lines), "tiny.csv", CATALOG)


# -- reading ------------------------------------------------------------------------------------
def test_the_packaged_file_is_the_shared_one_and_reads_clean() -> None:
    ms = load_measurements()
    assert len(ms) == 102
    assert ms[0].id == "P001" and ms[0].line == 2
    assert ms[0].n_devices == 8 and ms[0].input_len is None and ms[0].output_len == 290.3


def test_a_missing_column_names_it_and_the_header_line() -> None:
    text = csv_text(SOLO).replace(",tpot_p99_limit_ms", "", 1)
    with pytest.raises(InputError, match=r"tiny.csv: line 1 \(header\): missing column\(s\) tpot_p99"):
        parse_measurements(text, "tiny.csv", CATALOG)


def test_an_unknown_hardware_id_names_the_line_and_the_closest_id() -> None:
    bad = SOLO.replace("T1,h200-sxm", "T9,h200")
    with pytest.raises(InputError, match=r"tiny.csv: line 3 \(id T9\): hardware: .*h200") as err:
        parse_measurements(csv_text(OFFLINE, bad), "tiny.csv", CATALOG)
    assert "h200-sxm" in str(err.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("single_user,128", "single_user,many"), r"line 2 \(id T1\): input_len must be a number"),
        (("T1,h200-sxm,1", "T1,h200-sxm,1.5"), r"n_devices must be a whole number"),
        (("single_user", "burst"), r"scenario must be one of offline"),
        ((",300,", ",,"), r"value must be a number > 0; got blank"),
        (("llama-3.1-8b", "llama-9"), r"line 2 \(id T1\): model: .*llama-9"),
    ],
)
def test_bad_values_are_input_errors_with_line_and_column(
    change: tuple[str, str], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        parse_measurements(csv_text(SOLO.replace(*change, 1)), "tiny.csv", CATALOG)


def test_repeated_ids_are_an_error() -> None:
    with pytest.raises(InputError, match=r"line 3 \(id T1\): id T1 repeats line 2"):
        rows(SOLO, SOLO)


# -- predicting ---------------------------------------------------------------------------------
def test_a_fixed_length_single_user_row_is_the_step_models_decode_speed() -> None:
    """Batch 1, 128-token prompt, 64 output tokens: the first comes from the prefill, the other
    63 from decode steps over contexts 129..191, so speed = 63 / their summed step times."""
    (m,) = rows(SOLO)
    got = predict_row(m, CATALOG, PRIORS)
    system = CATALOG.system("hgx-h200")
    dep = Deployment(
        load_model("llama-3.1-8b"), system, CATALOG.device("h200-sxm"), weight_dtype="fp8",
        kv_dtype="fp8", engine="trtllm", max_num_seqs=16, efficiencies=prior("gpu", "trtllm"),
    )
    decode_s = RooflineStepModel(dep).decode_times(np.array([129.0]), 63).sum()
    assert got.predicted == pytest.approx(63 / decode_s, rel=1e-9)
    assert got.plan.startswith("1x tp1 fp8 kv fp8")
    assert got.abs_pct_error == pytest.approx(abs(got.predicted / 300 - 1))


def test_an_offline_row_uses_the_stated_plan_and_its_request_count() -> None:
    (m,) = rows(OFFLINE)
    got = predict_row(m, CATALOG, PRIORS)
    assert got.predicted is not None and got.predicted > 0
    assert got.plan.startswith("1x tp1 ")


def test_expert_parallelism_beyond_a_node_is_wide_ep_with_data_parallel_attention() -> None:
    # EP32 over four 8-GPU H100 nodes, no TP stated: DeepSeek-style wide EP, not a pipeline.
    (m,) = rows(
        "T6,h100-sxm,32,deepseek-v3,fp8,sglang,max_throughput_concurrency,1000,,fixed,512,,,,no,"
        "output_tokens_per_s,50000,decode-only: EP32 across 4 nodes"
    )
    got = predict_row(m, CATALOG)
    assert got.predicted is not None and got.predicted > 0
    assert got.plan.startswith("1x tp32 ep32 attention-dp fp8")


def test_a_b300_row_is_predicted_on_a_dgx_b300_in_the_blackwell_fp4_group() -> None:
    # InferenceX benchmarks hardware `b300`: it needs a device and a system in the catalog.
    (m,) = rows(
        "T7,b300,8,llama-3.1-8b,fp4,trtllm,offline,1024,1024,fixed,,64,,,no,output_tokens_per_s,50000,TP1"
    )
    got = predict_row(m, CATALOG)
    assert got.predicted is not None and got.predicted > 0
    assert got.group == "gpu/nvidia-fp4/" + engine_release("trtllm")  # undated: the newest


def test_plan_choice_runs_offline_candidates_long_enough_to_reach_steady_state() -> None:
    # Mixtral on 8 H200s offline and server: both pick the same tensor-parallel width (short
    # plan-choice runs used to favour the plan with fewer replicas offline).
    offline, server = (
        next(r for r in load_measurements() if r.id == rid) for rid in ("P007", "P008")
    )
    width = [predict_row(m, CATALOG).plan.split()[1] for m in (offline, server)]
    assert width[0] == width[1]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (MICRO, "microbenchmark"),
        (CLOUD, "system size not published"),
        (GROQ, "no performance model for engine 'groq'"),
    ],
)
def test_rows_that_cannot_be_predicted_say_why(line: str, reason: str) -> None:
    (m,) = rows(line)
    got = predict_row(m, CATALOG, PRIORS)
    assert got.predicted is None and got.abs_pct_error is None
    assert reason in got.skipped_reason


def test_speculative_rows_are_faster_per_user_than_plain_ones() -> None:
    plain, spec = rows(SOLO, SOLO.replace("T1", "T6").replace(",no,", ",yes,"))
    a = predict_row(plain, CATALOG, PRIORS)
    b = predict_row(spec, CATALOG, PRIORS)
    assert a.predicted is not None and b.predicted is not None
    assert b.predicted > 1.5 * a.predicted
    assert "spec-decode" in b.plan


# -- wafer rows (the wafer-scale issue's acceptance) --------------------------------------------


def test_every_wafer_row_is_predicted_within_the_acceptance_bounds() -> None:
    wafer_rows = [m for m in load_measurements() if m.hardware in ("wse2", "wse3")]
    v = validate(wafer_rows, catalog=CATALOG)
    summary = v.summary()["wafer"]
    assert summary["n_predicted"] == summary["n"] == 9  # P146/P147 are GEMV ratios
    assert summary["median"] <= 0.20
    assert summary["max"] <= 0.40


def test_a_cerebras_row_after_october_2024_runs_the_new_release_with_speculation() -> None:
    launch, later = rows(
        "W1,wse3,4,llama-3.1-70b,bf16,cerebras,single_user,,,unknown,,,,,unknown,"
        "output_tokens_per_s_per_user,446,",
        "W2,wse3,,llama-3.1-70b,,cerebras,single_user,,,unknown,,,,,unknown,"
        "output_tokens_per_s_per_user,2148,",
    )
    launch = Measurement(**{**launch.__dict__, "date": "2024-08"})
    a = predict_row(launch, CATALOG)
    b = predict_row(later, CATALOG)  # undated: the newest release
    assert a.group.endswith("/cerebras-2024-08") and "spec-decode" not in a.plan
    assert b.group.endswith("/cerebras") and "spec-decode" in b.plan
    assert "5 wafers" in b.plan  # the 8B draft's SRAM pushes 70B onto a fifth wafer
    assert b.predicted is not None and a.predicted is not None and b.predicted > 2 * a.predicted


def test_a_wafer_row_whose_stated_wafers_cannot_hold_the_model_uses_enough() -> None:
    (m,) = rows(
        "W3,wse2,1,qwen2-72b,bf16,waferllm,single_user,,,unknown,1,,,,unknown,"
        "output_tokens_per_s_per_user,840,"
    )
    got = predict_row(m, CATALOG)
    assert got.predicted is not None
    assert "cannot hold the model: 5 assumed" in got.plan


# -- the summary and the JSON schema --------------------------------------------------------------
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


def test_reading_skips_bad_rows_with_reasons_and_strict_parsing_stops_at_the_first() -> None:
    text = csv_text(SOLO, MICRO.replace("wse2", "wse9"), SOLO)
    rows, rejected = parse_measurement_rows(text, "tiny.csv", CATALOG)
    assert [m.id for m in rows] == ["T1"]
    assert [(r.line, r.id) for r in rejected] == [(3, "T3"), (4, "T1")]
    assert "hardware" in rejected[0].reason and "repeats line 2" in rejected[1].reason
    with pytest.raises(InputError, match="line 3 \\(id T3\\): hardware"):
        parse_measurements(text, "tiny.csv", CATALOG)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (",".join(COLUMNS) + "\n", "no measurement rows after the header"),
        ("id,hardware\nT1,h100-sxm\n", "missing column(s)"),
        (",".join(COLUMNS) + "\nT1," + "x" * 200_000 + "\n", "not a CSV file megawatt can read"),
    ],
    ids=["header only", "missing columns", "a huge field"],
)
def test_a_file_that_is_not_a_measurements_file_is_refused(text: str, fragment: str) -> None:
    with pytest.raises(InputError, match=re.escape(fragment)):
        parse_measurement_rows(text, "tiny.csv", CATALOG)


def test_a_binary_file_is_refused_with_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(b"id,hardware\n\xff\xfe\x00garbage")
    with pytest.raises(InputError, match="not UTF-8 text \\(byte 12 is 0xff\\)"):
        read_measurements(path)


def test_assumptions_state_the_estimated_dataset_means() -> None:
    from megawatt.validate import ASSUMPTIONS, assumptions

    assert assumptions({}) == ASSUMPTIONS
    lines = assumptions({"mlperf-openorca": 400.0})
    (orca,) = [a for a in lines if a.startswith("mlperf-openorca:")]
    assert "input mean 400 tokens ESTIMATED by `megawatt calibrate`" in orca
    assert "median 500" in orca  # the prior and the shape are still stated


def test_an_mlperf_row_follows_the_dataset_mean_it_is_given() -> None:
    line = (
        "T7,h200-sxm,1,llama-3.1-8b,fp8,trtllm,offline,,128,mlperf-cnndm,,,,,no,"
        "output_tokens_per_s,5000,TP1"
    )
    (m,) = rows(line)
    short, long = (
        predict_row(m, CATALOG, PRIORS, input_means={"mlperf-cnndm": mean}).predicted
        for mean in (500.0, 2000.0)
    )
    assert short is not None and long is not None and long < short


# -- InferenceX: closed loops, three metrics per run, disaggregated runs ------------------------
IX_NOTES = (
    '"InferenceX test ISL/OSL 1024/256; TP1 EP1; framework sglang; random lengths uniform in '
    '[0.8L, L] (means 921.5/230.5), ignore_eos, 10x conc prompts; run https://example/runs/1"'
)
IX = [
    f"X1,h200-sxm,1,llama-3.1-8b,fp8,sglang,max_throughput_concurrency,921.5,230.5,unknown,8,80,,,"
    f"no,{metric},{value},{IX_NOTES}"
    for metric, value in (
        ("output_tokens_per_s", 2000), ("output_tokens_per_s_per_user", 200), ("ttft_ms", 100)
    )
]


def test_a_benchmark_run_is_replayed_as_its_client_ran_it() -> None:
    """Lengths uniform in [int(0.8 L), L] from the notes, 10 x concurrency requests in a closed
    loop; the three metrics of a run come from one simulation, so they agree with each other:
    the closed loop's Little's law ties throughput to concurrency, output and per-request time."""
    from megawatt.validate import _lengths, predict_rows, run_key, runs_of
    from megawatt.workload import Uniform

    ms = rows(*[line.replace("X1,", f"X{i},", 1) for i, line in enumerate(IX, start=1)])
    assert _lengths(ms[0])[:2] == (Uniform(819, 1024), Uniform(204, 256))
    assert len({run_key(m) for m in ms}) == 1 and runs_of(ms) == [[0, 1, 2]]
    tput, per_user, ttft = predict_rows(ms, CATALOG)
    assert tput.plan == per_user.plan == ttft.plan
    assert all(r.predicted is not None and r.predicted > 0 for r in (tput, per_user, ttft))
    # Little's law over the run: 8 clients, each request ~ TTFT + 229 tokens at the per-user speed.
    e2e = ttft.predicted / 1e3 + 229.5 / per_user.predicted
    assert tput.predicted == pytest.approx(8 * 230.5 / e2e, rel=0.15)


def test_disaggregated_runs_are_replayed_on_prefill_and_decode_workers() -> None:
    notes = (
        '"InferenceX test ISL/OSL 1024/256; prefill 1 worker(s) x TP1 EP1 = 1 GPUs, decode 2 '
        "worker(s) x TP1 EP1 = 2 GPUs; framework dynamo-sglang (NVIDIA Dynamo + SGLang); random "
        'lengths uniform in [0.8L, L] (means 921.5/230.5); run https://example/runs/2"'
    )
    (m,) = rows(
        f"D1,h200-sxm,3,llama-3.1-8b,fp8,other,max_throughput_concurrency,921.5,230.5,unknown,16,,,,"
        f"no,output_tokens_per_s,3000,{notes}"
    )
    got = predict_row(m, CATALOG)
    assert got.predicted is not None and got.predicted > 0
    assert got.plan.startswith("prefill 1x [tp1") and "decode 2x [tp1" in got.plan
    assert got.group.endswith("/" + engine_release("sglang"))  # Dynamo drives SGLang: its group


def test_a_stated_plan_gets_the_memory_fraction_its_concurrency_needs() -> None:
    """DeepSeek-R1 in FP8 on 4 B200 at 32 concurrent 8k-token prompts (InferenceX ran it): at
    the default 90% the KV cache holds ~3.7 GB per device, too little for them; at 96% it
    holds them. At concurrency 4 the default does."""
    def row(concurrency: int) -> Measurement:
        (m,) = rows(
            f"F1,b200,4,deepseek-r1,fp8,sglang,max_throughput_concurrency,7372.5,921.5,unknown,"
            f'{concurrency},{10 * concurrency},,,no,output_tokens_per_s,400,"ISL/OSL 8192/1024; '
            'TP4 EP1; random lengths uniform in [0.8L, L]"'
        )
        return m

    raised = predict_row(row(32), CATALOG)
    assert raised.predicted is not None
    assert "memory fraction 0.96 assumed" in raised.plan
    assert "memory fraction" not in predict_row(row(4), CATALOG).plan


# -- image generation ---------------------------------------------------------------------------


def test_the_image_rows_are_predicted_with_one_fitted_efficiency_and_cross_validated() -> None:
    iv = validate_images(catalog=CATALOG)
    assert len(iv.rows) >= 6 and 0.05 < iv.compute_efficiency < 1
    assert 0 < iv.mape <= iv.loo_mape < 1 and np.isfinite(iv.loso_mape)
    assert iv.mape == pytest.approx(np.mean([r.abs_pct_error for r in iv.rows]))
    doc = iv.to_json()
    assert doc["n_recalled"] == sum(r.recalled for r in iv.rows)
    assert all(r["predicted"] > 0 and r["bound"] == "compute" for r in doc["rows"])
    json.dumps(doc)


def test_a_bad_images_file_fails_before_the_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "images.csv"
    bad.write_text("id,system\nX1,dgx-h100\n")
    assert main(["validate", "--images", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "image measurements file images.csv lacks the columns" in err and err.count("\n") == 1
