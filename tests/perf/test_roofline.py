"""The roofline step model: invariants any step time must keep (Hypothesis), what bounds a step,
and the vectorised decode path agreeing with single steps."""

from __future__ import annotations

import dataclasses
import math
from functools import cache
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megawatt.hardware import load_catalog
from megawatt.model import load_model
from megawatt.perf import BatchShape, Deployment, RooflineStepModel

CATALOG = load_catalog()

# name -> (model, system, settings)
DEPLOYMENTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "h200-tp1-8b-fp8": ("llama-3.1-8b", "hgx-h200", {"weight_dtype": "fp8"}),
    "h200-tp1-70b-fp8": ("llama-3.1-70b", "hgx-h200", {"weight_dtype": "fp8"}),
    "h200-tp8-70b-fp8": ("llama-3.1-70b", "hgx-h200", {"tp": 8, "weight_dtype": "fp8"}),
    "gb200-gpt-oss-120b": ("gpt-oss-120b", "gb200-nvl72", {}),
    "cs3-8b-bf16": ("llama-3.1-8b", "cs-3", {"weight_dtype": "bf16", "engine": "cerebras"}),
    # Wider coverage: chunked attention, MLA with expert parallelism, a GPU pipeline.
    "h200-tp4-scout-fp8": ("llama-4-scout", "hgx-h200", {"tp": 4, "weight_dtype": "fp8"}),
    "gb200-tp8-ep8-deepseek": ("deepseek-v3", "gb200-nvl72", {"tp": 8, "ep": 8}),
    "h100-tp8-pp2-405b-fp8": (
        "llama-3.1-405b",
        "dgx-h100",
        {"tp": 8, "pp": 2, "weight_dtype": "fp8"},
    ),
    # Wide expert parallelism: data-parallel attention and EP over four 8-GPU nodes.
    "h100-wide-ep32-deepseek": (
        "deepseek-v3",
        "dgx-h100",
        {"tp": 32, "ep": 32, "attention_dp": True, "weight_dtype": "fp8"},
    ),
}
NAMES = list(DEPLOYMENTS)
GPU_DENSE = ["h200-tp1-8b-fp8", "h200-tp1-70b-fp8", "h200-tp8-70b-fp8", "h100-tp8-pp2-405b-fp8"]


@cache
def deployment(name: str) -> Deployment:
    model_id, system_id, plan = DEPLOYMENTS[name]
    system = CATALOG.system(system_id)
    return Deployment(load_model(model_id), system, CATALOG.device(system.device_id), **plan)


@cache
def step_model(name: str) -> RooflineStepModel:
    return RooflineStepModel(deployment(name))


def faster(name: str, **device_changes: Any) -> RooflineStepModel:
    dep = deployment(name)
    device = dep.device.model_copy(update=device_changes)
    return RooflineStepModel(dataclasses.replace(dep, device=device))


contexts = st.lists(st.integers(0, 60_000), min_size=0, max_size=48)
chunks = st.lists(st.tuples(st.integers(1, 8192), st.integers(0, 30_000)), max_size=3)
names = st.sampled_from(NAMES)
PROPERTY = settings(max_examples=60, deadline=None)


def shape(name: str, decode: list[int], prefill: list[tuple[int, int]]) -> BatchShape:
    return BatchShape.of(decode, prefill, step_model(name).window_tokens)


def close(a: float, b: float, rel: float = 1e-9) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-15)


def at_most(a: float, b: float) -> bool:
    """a <= b up to float rounding."""
    return a <= b * (1 + 1e-12) + 1e-15


# -- invariants ---------------------------------------------------------------------------------


@PROPERTY
@given(name=names, decode=contexts, prefill=chunks)
def test_a_step_with_work_takes_positive_finite_time(
    name: str, decode: list[int], prefill: list[tuple[int, int]]
) -> None:
    t = step_model(name).step_time(shape(name, decode, prefill))
    if decode or prefill:
        assert 0.0 < t < math.inf
    else:
        assert t == 0.0


@PROPERTY
@given(name=names, context=st.integers(0, 60_000), n=st.integers(1, 128), more=st.integers(1, 64))
def test_more_sequences_never_make_a_decode_step_faster(name: str, context: int, n: int, more: int) -> None:
    sm = step_model(name)
    assert at_most(
        sm.step_time(shape(name, [context] * n, [])),
        sm.step_time(shape(name, [context] * (n + more), [])),
    )


@PROPERTY
@given(
    name=st.sampled_from([n for n in NAMES if step_model(n).pipeline_depth == 1]),
    decode=contexts,
    prefill=chunks,
    extra=st.integers(0, 60_000),
)
def test_without_a_pipeline_any_added_sequence_never_makes_a_step_faster(
    name: str, decode: list[int], prefill: list[tuple[int, int]], extra: int
) -> None:
    sm = step_model(name)
    assert at_most(
        sm.step_time(shape(name, decode, prefill)),
        sm.step_time(shape(name, [*decode, extra], prefill)),
    )


def test_on_a_pipeline_a_short_sequence_joining_never_speeds_up_a_long_one() -> None:
    sm = step_model("cs3-8b-bf16")
    assert sm.step_time(shape("cs3-8b-bf16", [20_000], [])) <= sm.step_time(
        shape("cs3-8b-bf16", [20_000, 10], [])
    )


@PROPERTY
@given(
    name=names,
    decode=contexts,
    prefill=chunks,
    grow=st.lists(st.integers(0, 10_000), min_size=51, max_size=51),
)
def test_longer_contexts_never_make_a_step_faster(
    name: str, decode: list[int], prefill: list[tuple[int, int]], grow: list[int]
) -> None:
    longer_decode = [c + g for c, g in zip(decode, grow, strict=False)]
    longer_prefill = [(c, cached + g) for (c, cached), g in zip(prefill, grow[-3:], strict=False)]
    sm = step_model(name)
    assert at_most(
        sm.step_time(shape(name, decode, prefill)),
        sm.step_time(shape(name, longer_decode, longer_prefill)),
    )


@PROPERTY
@given(name=names, chunk=st.integers(1, 16_384), cached=st.integers(0, 30_000), grow=st.integers(1, 4096))
def test_a_bigger_prefill_chunk_never_makes_a_step_faster(
    name: str, chunk: int, cached: int, grow: int
) -> None:
    sm = step_model(name)
    assert at_most(
        sm.step_time(shape(name, [], [(chunk, cached)])),
        sm.step_time(shape(name, [], [(chunk + grow, cached)])),
    )


@PROPERTY
@given(
    name=st.sampled_from([n for n in NAMES if step_model(n).pipeline_depth == 1]),
    decode=contexts,
    chunk=st.integers(1, 8192),
    cached=st.integers(0, 30_000),
    grow=st.integers(1, 4096),
)
def test_a_bigger_chunk_beside_decodes_never_makes_a_step_faster(
    name: str, decode: list[int], chunk: int, cached: int, grow: int
) -> None:
    sm = step_model(name)
    assert at_most(
        sm.step_time(shape(name, decode, [(chunk, cached)])),
        sm.step_time(shape(name, decode, [(chunk + grow, cached)])),
    )


@PROPERTY
@given(name=names, decode=contexts, prefill=chunks, factor=st.floats(1.0, 10.0))
def test_more_memory_bandwidth_never_makes_a_step_slower(
    name: str, decode: list[int], prefill: list[tuple[int, int]], factor: float
) -> None:
    base = deployment(name).device
    quicker = faster(name, mem_bandwidth_bytes_per_s=base.mem_bandwidth_bytes_per_s * factor)
    batch = shape(name, decode, prefill)
    assert at_most(quicker.step_time(batch), step_model(name).step_time(batch))


@PROPERTY
@given(name=names, decode=contexts, prefill=chunks, factor=st.floats(1.0, 10.0))
def test_more_flops_never_make_a_step_slower(
    name: str, decode: list[int], prefill: list[tuple[int, int]], factor: float
) -> None:
    base = deployment(name).device
    peaks = {dtype: rate * factor for dtype, rate in base.peak_flops_per_s.items()}
    quicker = faster(name, peak_flops_per_s=peaks)
    batch = shape(name, decode, prefill)
    assert at_most(quicker.step_time(batch), step_model(name).step_time(batch))


@PROPERTY
@given(
    name=names,
    decode=st.lists(st.integers(0, 60_000), min_size=1, max_size=32),
    n_steps=st.integers(1, 12),
)
def test_decode_times_agree_with_single_steps(name: str, decode: list[int], n_steps: int) -> None:
    sm = step_model(name)
    times = sm.decode_times(np.array(decode, dtype=np.float64), n_steps)
    assert times.shape == (n_steps,)
    for j in range(n_steps):
        single = sm.step_time(shape(name, [c + j for c in decode], []))
        assert close(float(times[j]), single), (j, float(times[j]), single)


@PROPERTY
@given(name=names, decode=contexts, prefill=chunks)
def test_the_breakdown_explains_the_whole_step(
    name: str, decode: list[int], prefill: list[tuple[int, int]]
) -> None:
    if not (decode or prefill):
        return
    sm = step_model(name)
    batch = shape(name, decode, prefill)
    bd = sm.breakdown(batch)
    assert close(bd.total_s, sm.step_time(batch))
    assert close(sum(bd.by_bound.values()), bd.total_s)
    assert close(
        sum(op.time_s for op in bd.operators) + bd.communication_s + bd.latency_s + bd.overhead_s,
        bd.total_s,
    )
    assert 1 <= bd.microbatches <= sm.pipeline_depth
    assert bd.bound in bd.by_bound


# -- what bounds a step -------------------------------------------------------------------------

WEIGHT_STREAMS = ("attention projections", "dense MLP", "LM head")


@pytest.mark.parametrize("name", GPU_DENSE)
def test_batch_1_decode_of_a_dense_model_on_a_gpu_is_memory_bound(name: str) -> None:
    bd = step_model(name).breakdown(shape(name, [2048], []))
    assert bd.by_bound["memory"] > 10 * bd.by_bound["compute"]
    for op in bd.operators:
        if op.name in WEIGHT_STREAMS:
            assert op.bound == "memory", op


@pytest.mark.parametrize("name", [n for n in NAMES if "deepseek" not in n])  # EP: all-to-all
def test_a_large_prefill_chunk_is_compute_bound(name: str) -> None:
    bd = step_model(name).breakdown(shape(name, [], [(8192, 0)]))
    assert bd.bound == "compute"
    for op in bd.operators:
        # Wafers time prefill GEMMs in their own "(prefill)" rows; the GEMV rows only read
        # the weights once (the LM head samples one token: memory-bound).
        base = op.name.removesuffix(" (prefill)")
        if base in ("attention projections", "dense MLP", "routed experts", "shared experts"):
            if op.flops > 0:
                assert op.bound == "compute", op


def test_expert_parallel_prefill_spends_its_time_on_compute_and_communication() -> None:
    bd = step_model("gb200-tp8-ep8-deepseek").breakdown(shape("gb200-tp8-ep8-deepseek", [], [(8192, 0)]))
    # Of the device time: the engine's fixed overheads (eager dispatch of a prefill step) apart.
    device_s = bd.total_s - bd.overhead_s
    assert bd.by_bound["compute"] + bd.by_bound["communication"] > 0.9 * device_s
    assert bd.by_bound["memory"] < bd.by_bound["compute"]


def test_a_step_with_a_prompt_chunk_pays_the_eager_dispatch_of_every_layer() -> None:
    """Decode steps replay CUDA graphs; steps with prefill run eagerly: per layer of a stage."""
    name = "gb200-tp8-ep8-deepseek"
    model = step_model(name)
    eff = model.deployment.eff
    layers = model.deployment.model.n_layers
    with_chunk = model.breakdown(shape(name, [1000] * 4, [(16, 0)]))
    decode = model.breakdown(shape(name, [1000] * 4, []))
    seq = eff.seq_overhead_s
    assert decode.overhead_s == pytest.approx(eff.step_overhead_s + 4 * seq)
    assert with_chunk.overhead_s - decode.overhead_s == pytest.approx(
        eff.prefill_layer_overhead_s * layers + seq
    )
    assert model.coefficients().prefill_overhead_s == pytest.approx(
        eff.prefill_layer_overhead_s * layers
    )


def test_expert_parallel_all_to_all_sends_each_devices_share_of_the_tokens() -> None:
    # deepseek-v3 on 8 GB200s, tp8 ep8: per token, 64 ring all-reduces (2 per layer, less the
    # 58 MoE ones that EP replaces) plus dispatch (FP8 for 8-bit experts: 1 byte) and combine
    # (BF16: 2 bytes) of 8 experts x 7168, 7/8 of them remote, each device sending for 1/8 of
    # the tokens.
    dep = deployment("gb200-tp8-ep8-deepseek")
    assert dep.compute_dtype_of("experts") in ("fp8", "fp4")
    link = dep.system.scaleup_bandwidth_bytes_per_s * dep.eff.link
    per_token = (64 * (2 * 7 / 8) * 7168 * 2 + 58 * 8 * 7168 * (1 + 2) * (7 / 8) / 8) / link
    bd = step_model("gb200-tp8-ep8-deepseek").breakdown(shape("gb200-tp8-ep8-deepseek", [], [(4096, 0)]))
    assert bd.communication_s == pytest.approx(4096 * per_token, rel=1e-12)


def test_wide_expert_parallelism_sends_remote_experts_over_the_scale_out_network() -> None:
    # 32 H100s in 4 nodes: of each token's 8 experts, 7/32 sit on the 7 other GPUs of its node
    # (NVLink) and 24/32 in other nodes (400 Gb/s NICs); both at once, the slower sets the time.
    # Dense MLPs run data-parallel too: no all-reduce at all.
    name = "h100-wide-ep32-deepseek"
    dep = deployment(name)
    assert dep.wide_ep
    sysm = dep.system
    link = sysm.scaleup_bandwidth_bytes_per_s * dep.eff.link
    out = sysm.scaleout_bandwidth_bytes_per_s * dep.eff.link
    per_token = 58 * 8 * 7168 * (1 + 2) / 32 * max(7 / 32 / link, 24 / 32 / out)
    bd = step_model(name).breakdown(shape(name, [], [(4096, 0)]))
    assert bd.communication_s == pytest.approx(4096 * per_token, rel=1e-12)
    assert 24 / 32 / out > 7 / 32 / link  # the network, not NVLink, is the bottleneck


def test_wide_expert_parallelism_keeps_all_but_the_experts_on_every_device() -> None:
    from megawatt.perf.memory import weight_bytes

    dep = deployment("h100-wide-ep32-deepseek")
    plan = step_model("h100-wide-ep32-deepseek").memory
    wb = weight_bytes(dep)
    assert plan.weight_bytes_per_device == pytest.approx(
        wb.total - wb.routed_experts * (1 - 1 / 32)
    )
    assert plan.kv_replication == 1.0  # each device caches only its own sequences


def test_data_parallel_attention_ranks_share_the_per_sequence_overhead() -> None:
    # Each attention-DP rank schedules and samples its own sequences: 64 sequences over 32
    # ranks cost 2 sequences' overhead per step.
    name = "h100-wide-ep32-deepseek"
    eff = deployment(name).eff
    bd = step_model(name).breakdown(shape(name, [100] * 64, []))
    assert bd.overhead_s == pytest.approx(eff.step_overhead_s + eff.seq_overhead_s * 64 / 32)


def test_mla_prefills_in_multi_head_form_and_decodes_absorbed() -> None:
    # DeepSeek-V3 (128 heads; qk 128 + 64 rope, v 128; latent 512): a fresh 1,000-token prompt
    # attends to 1000 x 1001 / 2 pairs at 2 x 128 x (128 + 64 + 128) FLOPs per pair and layer;
    # a decode token reads its context at 2 x 128 x (2 x 512 + 64) FLOPs per cached token.
    name = "gb200-tp8-ep8-deepseek"
    pairs = 1000 * 1001 / 2
    pre = step_model(name).breakdown(shape(name, [], [(1000, 0)]))
    op = next(o for o in pre.operators if o.name == "attention (prefill)")
    assert op.flops == pytest.approx(pairs * 2 * 128 * 320 * 61 / 8)
    dec = step_model(name).breakdown(shape(name, [1000], []))
    op = next(o for o in dec.operators if o.name == "attention (decode)")
    assert op.flops == pytest.approx(1000 * 2 * 128 * 1088 * 61 / 8)


def test_a_wafer_prefills_mla_in_multi_head_form_too() -> None:
    model = load_model("deepseek-v3")
    system = CATALOG.system("cs-3")
    dep = Deployment(model, system, CATALOG.device(system.device_id), pp=21, engine="cerebras")
    batch = BatchShape.of([], [(1000, 0)])
    bd = RooflineStepModel(dep).breakdown(batch)
    op = next(o for o in bd.operators if o.name == "attention (prefill)")
    # Operator rows are one micro-batch's pass: 1000 / 256 of the prompt.
    pairs = 1000 * 1001 / 2
    assert op.flops * batch.pipeline_units == pytest.approx(pairs * 2 * 128 * 320 * 61)


def test_with_data_parallel_attention_a_prompt_is_prefilled_by_one_rank() -> None:
    # 32 attention-DP ranks: 320 decode tokens spread 10 per rank; a 320-token prompt is all
    # on its owner's rank, whose projections then do 32x the work.
    name = "h100-wide-ep32-deepseek"
    p = load_model("deepseek-v3").attention_params_per_layer() * 61

    def proj(bd: Any) -> float:
        return float(next(o.flops for o in bd.operators if o.name == "attention projections"))

    decode = step_model(name).breakdown(shape(name, [100] * 320, []))
    prefill = step_model(name).breakdown(shape(name, [], [(320, 0)]))
    assert proj(decode) == pytest.approx(2 * p * 320 / 32)
    assert proj(prefill) == pytest.approx(2 * p * 320)
    # Several prompts: the busiest rank does the largest and its share of the others.
    three = step_model(name).breakdown(shape(name, [], [(320, 0), (64, 0), (64, 0)]))
    assert proj(three) == pytest.approx(2 * p * (320 + 128 / 32))


def test_the_experts_efficiency_times_the_routed_experts_only() -> None:
    def slower_experts(name: str) -> RooflineStepModel:
        dep = deployment(name)
        eff = dep.eff.with_values(experts=dep.eff.experts / 2)
        return RooflineStepModel(dataclasses.replace(dep, efficiencies=eff))

    chunk = [(4096, 0)]
    for name in ("gb200-tp8-ep8-deepseek", "h200-tp1-70b-fp8"):
        base = step_model(name).breakdown(shape(name, [], chunk))
        half = slower_experts(name).breakdown(shape(name, [], chunk))
        routed = [op for op in base.operators if op.name == "routed experts"]
        if routed:  # MoE: the experts' GEMMs take twice as long, nothing else changes
            slow = next(op for op in half.operators if op.name == "routed experts")
            assert slow.compute_s == pytest.approx(2 * routed[0].compute_s)
            assert half.total_s > base.total_s
        else:
            assert half.total_s == base.total_s


# -- pipelines and windows ----------------------------------------------------------------------


def test_a_wafer_pipelines_its_layers_and_a_gpu_its_stages() -> None:
    assert step_model("cs3-8b-bf16").pipeline_depth == 32
    assert step_model("h100-tp8-pp2-405b-fp8").pipeline_depth == 2
    assert step_model("h200-tp8-70b-fp8").pipeline_depth == 1


def test_the_window_is_the_models_attention_window() -> None:
    assert step_model("gb200-gpt-oss-120b").window_tokens == 128
    assert step_model("h200-tp4-scout-fp8").window_tokens == 8192
    assert step_model("h200-tp1-8b-fp8").window_tokens is None


def test_windowed_layers_stop_costing_more_past_the_window() -> None:
    # gpt-oss: half the layers slide over 128 tokens, so decode attention grows at half the rate
    # once every sequence is past the window.
    sm = step_model("gb200-gpt-oss-120b")
    bd = {c: sm.breakdown(shape("gb200-gpt-oss-120b", [c] * 64, [])) for c in (1000, 2000)}
    windowed = [{op.name: op for op in bd[c].operators}["windowed attention (decode)"] for c in bd]
    assert windowed[0].bytes == windowed[1].bytes


def test_a_wafer_decodes_llama_3_1_8b_at_a_plausible_per_layer_time() -> None:
    # NOTES g.4.3: 1,800 tok/s on one CS-3 is ~17 us per layer; a model predicting ~1 us per layer
    # (the bandwidth roofline) or 100 us per layer is wrong.
    per_layer = step_model("cs3-8b-bf16").step_time(shape("cs3-8b-bf16", [4096], [])) / 32
    assert 5e-6 < per_layer < 50e-6
