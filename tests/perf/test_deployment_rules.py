"""The rest of a deployment's rules (wafer-only options, streaming, grids, speculation), its
label and derived sizes, and the communication of its parallel plan worked out by hand: ring
all-reduces of tensor parallelism, pipeline hand-offs and the expert all-to-all."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import Any

import pytest

from megawatt.errors import InputError
from megawatt.hardware import load_catalog
from megawatt.model import load_model
from megawatt.perf import Deployment, RooflineStepModel
from megawatt.perf.roofline import F_ONE, F_TOKENS
from megawatt.perf.speculative import Speculation

CATALOG = load_catalog()


def dep(model_id: str, system_id: str = "hgx-h200", **settings: Any) -> Deployment:
    system = CATALOG.system(system_id)
    return Deployment(load_model(model_id), system, CATALOG.device(system.device_id), **settings)


def wafer(**settings: Any) -> Deployment:
    return dep("llama-3.1-8b", "cs-3", weight_dtype="bf16", engine="cerebras", **settings)


# -- rules --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"weight_streaming": True},
         "deployment.weight_streaming applies to wafer-scale engines only; got it on h200-sxm (gpu)"),
        ({"draft_model": load_model("llama-3.1-8b")},
         "deployment.draft_model applies to wafer-scale engines only; got it on h200-sxm (gpu)"),
        ({"grid_side": 100}, "deployment.grid_side is a wafer core-grid side >= 1 (layer-grid "
                             "engines); got 100 on h200-sxm"),
        ({"ep": 2}, "deployment.ep must be <= tp x pp = 1; got 2"),
        ({"max_num_batched_tokens": 8192.0},
         "deployment.max_num_batched_tokens must be an integer >= 1; got 8192.0"),
        ({"gpu_memory_utilization": 0.05}, "deployment.gpu_memory_utilization must be in [0.1, 1.0]; "
                                           "got 0.05"),
    ],
)
def test_gpu_settings_that_cannot_apply_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        dep("llama-3.1-8b", **settings)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"weight_streaming": True, "pp": 2}, "deployment.pp must be 1 with weight_streaming"),
        ({"speculation": Speculation()}, "deployment.speculation on wafer-scale engines needs "
                                         "deployment.draft_model"),
        ({"grid_side": 0}, "deployment.grid_side is a wafer core-grid side >= 1"),
    ],
)
def test_wafer_settings_that_cannot_apply_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        wafer(**settings)


def test_tensor_parallelism_across_domains_needs_wide_expert_parallelism() -> None:
    """tp = 16 on 8-GPU systems: only with data-parallel attention and ep over all 16."""
    with pytest.raises(InputError, match="unless attention is data-parallel and ep spans every device"):
        dep("deepseek-v3", "dgx-h100", tp=16, ep=8, attention_dp=True)
    wide = dep("deepseek-v3", "dgx-h100", tp=16, ep=16, attention_dp=True)
    assert wide.wide_ep
    assert not dep("deepseek-v3", "dgx-h100", tp=8, ep=8, attention_dp=True).wide_ep


# -- label and sizes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "label"),
    [
        (lambda: dep("deepseek-v3", "gb200-nvl72", tp=8, ep=8, attention_dp=True),
         "deepseek-v3 on gb200 x8 tp8 ep8 attention-dp native"),
        (lambda: dep("llama-3.1-8b"), "llama-3.1-8b on h200-sxm x1 tp1 native"),
        (lambda: wafer(weight_streaming=True), "llama-3.1-8b on wse3 x1 1 wafer weight-streaming bf16"),
        (lambda: dep("llama-3.1-70b", "cs-3", pp=4, weight_dtype="bf16", engine="cerebras",
                     draft_model=load_model("llama-3.1-8b")),
         "llama-3.1-70b on wse3 x4 4 wafers +draft llama-3.1-8b bf16"),
    ],
)
def test_the_label_names_the_plan(make: Any, label: str) -> None:
    assert make().label == label


def test_replicas_per_system_divide_its_devices() -> None:
    assert dep("llama-3.1-8b", tp=2).replicas_per_system == 4.0
    assert dep("llama-3.1-405b", "dgx-h100", tp=8, pp=2).replicas_per_system == 0.5
    assert dep("llama-3.1-8b", kv_dtype="fp8").kv_bytes_per_element == 1.0
    assert dep("llama-3.1-8b").kv_bytes_per_element == 2.0
    assert dep("llama-3.1-8b").activation_bytes == 2.0


def test_explicit_efficiencies_win_over_the_defaults() -> None:
    base = dep("llama-3.1-8b")
    mine = base.eff.with_values(compute=0.123)
    assert replace(base, efficiencies=mine).eff.compute == 0.123


# -- communication by hand ------------------------------------------------------------------------


def test_tensor_parallel_all_reduces_by_hand() -> None:
    """Llama 3.1 8B on tp 2 of an HGX H200: two all-reduces a layer (64), each a ring moving
    2 (tp - 1) / tp = 1 hidden vector of 4,096 BF16 values per token over NVLink at 450 GB/s
    x the link efficiency; latency two tree hops (2 log2 2) of 2 us per all-reduce."""
    d = dep("llama-3.1-8b", tp=2, weight_dtype="fp8")
    c = RooflineStepModel(d).coefficients()
    assert c.comm_s[F_TOKENS] == pytest.approx(64 * 1.0 * 4_096 * 2 / (450e9 * d.eff.link), rel=1e-12)
    assert c.latency_s == pytest.approx(64 * 2 * 1 * 2e-6, rel=1e-12)
    assert c.comm_s[F_ONE] == 0.0


def test_tp8_rings_move_seven_quarters_of_a_vector_over_three_hops() -> None:
    d = dep("llama-3.1-70b", tp=8, weight_dtype="fp8")
    c = RooflineStepModel(d).coefficients()
    assert c.comm_s[F_TOKENS] == pytest.approx(
        160 * (2 * 7 / 8) * 8_192 * 2 / (450e9 * d.eff.link), rel=1e-12
    )
    assert c.latency_s == pytest.approx(160 * 2 * 3 * 2e-6, rel=1e-12)


def test_one_device_communicates_nothing() -> None:
    c = RooflineStepModel(dep("llama-3.1-8b", weight_dtype="fp8")).coefficients()
    assert not c.comm_s.any()
    assert c.latency_s == 0.0


def test_a_pipeline_hands_the_hidden_state_on_at_each_stage_boundary() -> None:
    """pp 2 on one node: tp 1, so no all-reduce; one hand-off of 4,096 BF16 values per token
    over NVLink, and its latency."""
    d = dep("llama-3.1-8b", pp=2, weight_dtype="fp8")
    c = RooflineStepModel(d).coefficients()
    assert c.comm_s[F_TOKENS] == pytest.approx(4_096 * 2 / (450e9 * d.eff.link), rel=1e-12)
    assert c.latency_s == pytest.approx(2e-6, rel=1e-12)
    assert c.pipeline_depth == 2


def test_a_pipeline_across_systems_hands_off_over_the_scale_out_network() -> None:
    """405B on tp 8 x pp 2 of 8-GPU systems spans two: hand-offs at 50 GB/s and 5 us."""
    d = dep("llama-3.1-405b", "dgx-h100", tp=8, pp=2, weight_dtype="fp8")
    c = RooflineStepModel(d).coefficients()
    ring = 2 * 126 * (2 * 7 / 8) * 16_384 * 2 / (450e9 * d.eff.link)
    handoff = 16_384 * 2 / (50e9 * d.eff.link)
    assert c.comm_s[F_TOKENS] == pytest.approx(ring + handoff, rel=1e-12)
    assert c.latency_s == pytest.approx(2 * 126 * 2 * 3 * 2e-6 + 5e-6, rel=1e-12)


def test_expert_parallelism_skips_the_moe_layers_all_reduce_and_adds_an_all_to_all() -> None:
    """Qwen3-235B (94 MoE layers, top-8, hidden 4,096) on tp 8 = ep 8 in FP8: 94 all-reduces
    (attention only), and per MoE layer each token's 8 experts get it in FP8 and send it back
    in BF16, 7 of 8 experts on other GPUs of the node."""
    d = dep("qwen3-235b-a22b", tp=8, ep=8, weight_dtype="fp8")
    c = RooflineStepModel(d).coefficients()
    link = 450e9 * d.eff.link
    ring = 94 * (2 * 7 / 8) * 4_096 * 2 / link
    a2a = 94 * 8 * 4_096 * (1 + 2) / 8 * max(7 / 8 / link, 0.0)
    assert c.comm_s[F_TOKENS] == pytest.approx(ring + a2a, rel=1e-12)
    assert c.latency_s == pytest.approx(94 * 2 * 3 * 2e-6 + 94 * 2 * 2e-6, rel=1e-12)


def test_the_per_sequence_overhead_is_shared_by_data_parallel_ranks() -> None:
    d = dep("deepseek-v3", "gb200-nvl72", tp=8, ep=8, attention_dp=True)
    c = RooflineStepModel(d).coefficients()
    assert c.seq_overhead_s == pytest.approx(d.eff.seq_overhead_s / 8, rel=1e-12)
    assert c.step_overhead_s == d.eff.step_overhead_s


def test_eager_steps_dispatch_every_layer_of_a_stage() -> None:
    d = dep("llama-3.1-8b", pp=3, weight_dtype="fp8")
    c = RooflineStepModel(d).coefficients()
    assert c.prefill_overhead_s == pytest.approx(
        d.eff.prefill_layer_overhead_s * math.ceil(32 / 3), rel=1e-12
    )
