"""What validation assumes where the measurements are silent, in words (printed with every
validation), with the dataset means calibration estimated in place of the assumed ones."""

from __future__ import annotations

from megawatt.calibration.datasets import (
    DATASETS,
    DECODE_ONLY_OUTPUT,
    UNKNOWN_LENGTHS,
    InputMeans,
    fitted_input_means,
)
from megawatt.calibration.speculation import SPECULATION, WAFER_DRAFT_MODEL

__all__ = [
    "ASSUMPTIONS",
    "assumptions",
]

ASSUMPTIONS: tuple[str, ...] = (
    *(f"{name}: {d.note}" for name, d in DATASETS.items()),
    "fixed: every request has exactly input_len / output_len tokens",
    "unknown: the row's mean lengths as fixed lengths; "
    f"{UNKNOWN_LENGTHS[0]:,} / {UNKNOWN_LENGTHS[1]:,} tokens when blank (as TRT-LLM's 1k/1k table)",
    "n_devices blank (cloud APIs): one system when it holds the weights, else the fewest "
    "whole systems that do; throughput rows without a system size are skipped",
    "weight_dtype blank: the published format (FP8 for 16-bit models on GPUs with an FP8 rate)",
    "KV cache: FP8 when the weights are FP8/FP4 on a device with an FP8 rate (MLPerf harnesses "
    "quantise the cache), else 16-bit; a row whose notes say 'FP16 KV' keeps 16-bit",
    "plan: a TPn/PPn/EPn (and attention-DP) stated in the notes is used as given; otherwise the throughput "
    "scenarios search power-of-two TP inside the scale-up domain (PP beyond) and keep the "
    "best output tokens/s per device; single_user spans every device with the widest TP; MoE "
    "models put experts in parallel over the replica's devices",
    "batch: up to 1,024 sequences per replica (concurrency rows: the row's concurrency), "
    "8,192 tokens per step (server/interactive: the better of 2,048 and 8,192); the KV cache "
    "bounds it further",
    f"spec_decode=yes: k={SPECULATION.draft_tokens} drafted tokens, acceptance "
    f"{SPECULATION.acceptance} per token (DeepSeek-V3 report: 85-90% for the first MTP token; "
    f"lower further out) -> {SPECULATION.tokens_per_step:.2f} tokens per verify step; each "
    f"drafted token costs {SPECULATION.draft_cost:.0%} of a decode step",
    "spec_decode on wafers: the same k and acceptance; the draft is "
    f"{WAFER_DRAFT_MODEL}, kept on the same wafers (its weights and KV take SRAM) and timed on "
    "its own core regions",
    "engine releases: a row's date picks its engine's release, each its own calibration group "
    "(README caveat 8, software drift): cerebras before 2024-10 is the launch software "
    "`cerebras-2024-08`, from 2024-10 rewritten kernels and speculative decoding; TensorRT-LLM "
    "and vLLM before 2025 (MLPerf v4.1) are `trtllm-2024` and `vllm-2024`, TensorRT-LLM from "
    "2025-11 as InferenceX runs it `trtllm-2025-11`, SGLang from 2026-01 `sglang-2026-01`, AMD's "
    "ATOM (engine other, notes ATOM) `atom`, a disaggregated run's orchestrator (Dynamo, MoRI) "
    "the engine it drives; rows of a speculative release whose spec_decode is unknown are "
    "replayed with speculative decoding",
    "closed-loop concurrency rows (InferenceX): the benchmark client replayed as it runs - "
    "n_requests (blank: 10 x concurrency) issued concurrency at a time, each completion sending "
    "the next, ramp and drain included; lengths as the notes state (the serving benchmark's "
    "random dataset: uniform in [int(0.8 L), L], outputs forced by ignore_eos); throughput over "
    "the whole run, per-user speed 1 / median TPOT and median TTFT over its requests. Warm-up "
    "requests (from 2026-01-21) only warm the server, which the simulator never needs; runs "
    "without them may include start-up costs the simulator does not model",
    "InferenceX MTP rows: k=3 drafts (SGLang's and TensorRT-LLM's DeepSeek recipes), each at "
    "10% of a decode step, accepted at the rate `megawatt calibrate` fits to those rows (the "
    "random dataset's prompts are random tokens; `calibration.speculation.fitted_acceptance`)",
    "memory: GPU vendors' HBM figures are binary (an 80 GB H100 holds 80 GiB); a plan a row "
    "states that at the 90% memory fraction does not hold the weights, or not the row's "
    "concurrency of its longest requests, runs at 96 or 98% where that holds them (operators "
    "raise SGLang's --mem-fraction-static and vLLM's --gpu-memory-utilization so)",
    "disaggregated rows: prefill and decode workers as the notes state (TP, EP, attention-DP; "
    "TP beyond one scale-up domain as TP inside it and pipeline stages across), KV over the "
    "prefill worker's NICs (its scale-up links when the whole run fits one NVLink domain), "
    "round-robin routing; the closed loop is estimated by symmetry (one worker of each side "
    "on the compiled engine, iterated: serving.closed_loop_by_symmetry); records whose split "
    "into workers is not stated are skipped",
    "wafer rows whose stated wafer count cannot hold the model (WaferLLM timed a subset of "
    "layers and scaled by the layer count) are predicted on the fewest wafers that do",
    "decode-only rows: the prompt is already cached (prefill assumed unlimited), "
    f"{DECODE_ONLY_OUTPUT} output tokens per request",
    "offline rows without n_requests: the steady state between the first completion and the "
    "last admission of a short run (MLPerf runs last >= 600 s, so their ramp and drain vanish)",
    "server/interactive: the highest Poisson rate whose p99 TTFT and TPOT meet the row's "
    "limits in a short run, per replica, times the replicas",
)


def assumptions(input_means: InputMeans | None = None) -> tuple[str, ...]:
    """`ASSUMPTIONS`, with the mean input length of each MLPerf dataset that calibration
    estimated (`input_means`; default: the calibration file's) in place of the assumed one."""
    means = fitted_input_means() if input_means is None else input_means
    out = []
    for line in ASSUMPTIONS:
        name = line.split(":", 1)[0]
        if name in means:
            line = (
                f"{name}: input mean {means[name]:,.0f} tokens ESTIMATED by `megawatt calibrate` "
                "from the rows that replay the dataset (the mean is not published); its prior "
                f"and the shape: {DATASETS[name].note}"
            )
        out.append(line)
    return tuple(out)
