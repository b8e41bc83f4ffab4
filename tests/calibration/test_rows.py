"""What a measurement row says beyond its columns, and the rules its columns obey: the plan and
the disaggregated worker layout its notes state, the engine that ran it (an orchestrator is the
engine it drives), which rows report on one run (three metrics of one benchmark run share it),
the scenario rules (a concurrency for closed loops, a limit for server rows, lengths for fixed
rows), and an error per bad cell naming the line, the column and the value."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from megawatt.calibration.measurements import (
    Measurement,
    RowResult,
    Workers,
    data_name,
    disagg_topology,
    phase,
    row_engine,
    run_key,
    runs_of,
    stated_plan,
)
from megawatt.errors import InputError
from megawatt.perf.efficiency import engine_release

from .conftest import CATALOG, OFFLINE, SOLO, csv_text, rows


def row(notes: str = "", **changes: object) -> Measurement:
    base = Measurement(
        line=2, id="R1", hardware="mi355x", n_devices=8, model="deepseek-r1", weight_dtype="fp8",
        engine="other", scenario="max_throughput_concurrency", input_len=1024.0, output_len=1024.0,
        dataset="fixed", concurrency=64, n_requests=None, ttft_p99_limit_ms=None,
        tpot_p99_limit_ms=None, spec_decode="no", metric="output_tokens_per_s", value=1000.0,
        date="2026-01-15", notes=notes,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


# -- notes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("notes", "plan"),
    [
        ("TP8", {"tp": 8}),
        ("tp 4, pp 2", {"tp": 4, "pp": 2}),
        ("TP8 EP8 attention-DP", {"tp": 8, "ep": 8, "adp": 1}),
        ("TP4 with DP attention", {"tp": 4, "adp": 1}),
        ("8 GPUs, no plan stated", {}),
        ("STEP12", {}),  # a word that ends in TP is no plan
    ],
)
def test_the_notes_state_a_plan(notes: str, plan: dict[str, int]) -> None:
    assert stated_plan(row(notes)) == plan


def test_a_disaggregated_run_states_its_prefill_and_decode_workers() -> None:
    m = row("prefill 1 worker(s) x TP4 EP4 attention-DP = 4 GPUs, decode 5 worker(s) x TP8 EP8 = 40 GPUs")
    assert disagg_topology(m) == (Workers(1, 4, 4, 4, True), Workers(5, 8, 8, 8, False))
    assert disagg_topology(row("TP8")) is None


def test_a_workers_size_is_its_roles_gpus_over_its_workers() -> None:
    m = row("prefill 3 worker(s) x TP2 EP1 = 6 GPUs, decode 2 worker(s) x TP4 EP4 = 8 GPUs")
    prefill, decode = disagg_topology(m)  # type: ignore[misc]
    assert (prefill.n, prefill.gpus) == (3, 2) and (decode.n, decode.gpus) == (2, 4)


@pytest.mark.parametrize(
    ("notes", "phase_"),
    [("decode-only at batch 64", "decode-only"), ("Prefill-only, 8k", "prefill-only"),
     ("a run after decode-only warmup", "")],
)
def test_the_phase_is_what_the_notes_start_with(notes: str, phase_: str) -> None:
    assert phase(row(notes)) == phase_


# -- engines -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("notes", "engine"),
    [
        ("framework dynamo-trt, TP8", "trtllm"),
        ("framework dynamo-sglang", "sglang"),
        ("framework mori-sglang, prefill ...", "sglang"),
        ("framework dynamo-vllm", "vllm"),
        ("ATOM engine, TP8", "atom"),
        ("a custom stack", "other"),
    ],
)
def test_an_orchestrator_is_the_engine_it_drives(notes: str, engine: str) -> None:
    assert row_engine(row(notes)) == engine_release(engine, "2026-01-15")


def test_a_named_engine_is_kept_and_resolved_by_the_rows_date() -> None:
    m = row("ATOM engine", engine="vllm", date="2024-06-01")
    assert row_engine(m) == engine_release("vllm", "2024-06-01")


# -- runs ----------------------------------------------------------------------------------------
def test_the_three_metrics_of_one_benchmark_run_share_their_run() -> None:
    url = "run https://example.org/runs/17; TP8 EP8"
    tput = row(f"{url}; statistic: mean", id="A")
    ttft = row(f"{url}; statistic: p99 TTFT", id="B", metric="ttft_ms", value=900.0)
    other = row("run https://example.org/runs/18; TP8 EP8", id="C")
    assert run_key(tput) == run_key(ttft) != run_key(other)
    assert runs_of([tput, other, ttft]) == [[0, 2], [1]]


def test_without_a_run_address_the_statistic_sentence_is_set_aside() -> None:
    a = row("statistic: median; TP8", id="A")
    b = row("statistic: p99; TP8", id="B", metric="ttft_ms")
    assert run_key(a) == run_key(b)
    assert run_key(a) != run_key(row("TP4", id="C"))


def test_rows_differing_in_a_setting_are_different_runs() -> None:
    base = row("TP8")
    changes = ({"concurrency": 128}, {"input_len": 8192.0}, {"spec_decode": "yes"}, {"date": "2026-02-01"})
    for change in changes:
        assert run_key(replace(base, **change)) != run_key(base)  # type: ignore[arg-type]


# -- results -------------------------------------------------------------------------------------
def test_a_results_errors_are_relative_and_logarithmic() -> None:
    r = RowResult("R", "h", "m", "s", "output_tokens_per_s", 200.0, 250.0, "TP1", "")
    assert r.abs_pct_error == pytest.approx(0.25)
    assert r.log_error == pytest.approx(math.log(1.25))
    low = replace(r, predicted=150.0)
    assert low.abs_pct_error == pytest.approx(0.25) and low.log_error == pytest.approx(math.log(0.75))
    skipped = replace(r, predicted=None)
    assert skipped.abs_pct_error is None and skipped.log_error is None
    assert replace(r, predicted=0.0).log_error is None


def test_data_names_are_the_packaged_path_or_the_file_name() -> None:
    assert data_name(None) == "data/validation/measurements.csv"
    assert data_name("inferencex") == "data/validation/inferencex/inferencex.csv"
    assert data_name("/some/where/mine.csv") == "mine.csv"


# -- the columns' rules --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("row_text", "message"),
    [
        (OFFLINE.replace(",offline,", ",max_throughput_concurrency,"),
         "line 2 (id T2): scenario max_throughput_concurrency needs a concurrency."),
        (OFFLINE.replace(",offline,", ",server,"),
         "line 2 (id T2): scenario server needs ttft_p99_limit_ms or tpot_p99_limit_ms."),
        (OFFLINE.replace(",128,128,fixed,", ",128,,fixed,"),
         "line 2 (id T2): dataset fixed needs input_len and output_len."),
        (OFFLINE.replace(",fixed,", ",sharegpt,"),
         "line 2 (id T2): dataset must be one of mlperf-openorca"),
        (OFFLINE.replace(",fp8,", ",fp6,"), "line 2 (id T2): weight_dtype must be one of"),
        (OFFLINE.replace(",no,", ",maybe,"), "line 2 (id T2): spec_decode must be one of"),
        (OFFLINE.replace(",output_tokens_per_s,", ",joules,"), "line 2 (id T2): metric must be one of"),
        (OFFLINE.replace(",9000,", ",-5,"), "line 2 (id T2): value must be a number > 0 or blank; got '-5'."),
        (OFFLINE.replace(",9000,", ",inf,"), "value must be a number > 0 or blank; got 'inf'."),
        (OFFLINE.replace(",40,", ",0,"), "n_requests must be a whole number >= 1 or blank; got '0'."),
        (OFFLINE.replace("T2,", ",", 1), "line 2 (id ?): id must not be blank."),
        (OFFLINE + ",extra", "line 2: expected 18 fields; got a different count."),
    ],
    ids=["closed loop without concurrency", "server without limits", "fixed without output",
         "unknown dataset", "unknown dtype", "unknown spec decode", "unknown metric", "negative value",
         "infinite value", "zero requests", "blank id", "too many fields"],
)
def test_each_rule_is_one_error_naming_the_line_and_column(row_text: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        rows(row_text)
    assert caught.value.args[0].startswith("tiny.csv: ")
    assert message in str(caught.value)


def test_a_decode_only_row_needs_only_its_context() -> None:
    decode = OFFLINE.replace(",128,128,fixed,", ",4096,,fixed,").replace(",TP1", ",decode-only at 4k")
    (m,) = rows(decode)
    assert m.input_len == 4096.0 and m.output_len is None and phase(m) == "decode-only"


def test_blank_optional_cells_are_none_and_an_engine_left_blank_is_other() -> None:
    (m,) = rows(OFFLINE.replace(",trtllm,", ",,").replace(",1,llama", ",,llama", 1))
    assert m.engine == "other" and m.n_devices is None
    assert m.ttft_p99_limit_ms is None and m.tpot_p99_limit_ms is None and m.notes == "TP1"


def test_rows_keep_their_line_numbers_and_text_fields() -> None:
    solo, offline = rows(SOLO, OFFLINE)
    assert (solo.line, offline.line) == (2, 3)
    assert solo.metric == "output_tokens_per_s_per_user" and solo.value == 300.0
    assert offline.n_requests == 40 and offline.concurrency is None
    assert csv_text(SOLO).count("\n") == 2 and CATALOG.device(solo.hardware).id == "h200-sxm"
