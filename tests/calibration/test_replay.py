"""Predicting a row: the deployment an expert would run, the scenario replayed, the metric read
off the run; rows that cannot be predicted say why; InferenceX's closed loops and disaggregated
runs."""

from __future__ import annotations

import numpy as np
import pytest

from megawatt.calibration import Measurement, load_measurements, predict_row, predict_rows, run_key, runs_of
from megawatt.calibration.lengths import row_lengths
from megawatt.model import load_model
from megawatt.perf import Deployment, RooflineStepModel, prior
from megawatt.perf.efficiency import engine_release
from megawatt.workload import Uniform

from .conftest import CATALOG, CLOUD, GROQ, MICRO, OFFLINE, PRIORS, SOLO, rows


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
    ms = rows(*[line.replace("X1,", f"X{i},", 1) for i, line in enumerate(IX, start=1)])
    assert row_lengths(ms[0])[:2] == (Uniform(819, 1024), Uniform(204, 256))
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
