"""FLOPs and bytes of a decode step, counted by hand from the published configs and checked
against the roofline's breakdown: Llama-3.1-70B (dense GQA), DeepSeek-V3 (MLA, MoE with a
shared expert, 3 dense layers) and gpt-oss-120b (MoE with biases, alternating 128-token sliding
windows). KV bytes per token are checked exactly in tests/model/test_spec.py; here the step must
read that many bytes per token of context."""

from __future__ import annotations

import pytest

from megawatt.hardware import load_catalog
from megawatt.model import load_model
from megawatt.perf import BatchShape, Deployment, RooflineStepModel, StepBreakdown

CATALOG = load_catalog()
CONTEXT = 1000


def decode_step(model_id: str, system_id: str, **plan: object) -> tuple[StepBreakdown, int]:
    """Breakdown of a batch-1 decode step at CONTEXT tokens, and the plan's TP."""
    system = CATALOG.system(system_id)
    dep = Deployment(load_model(model_id), system, CATALOG.device(system.device_id), **plan)  # type: ignore[arg-type]
    sm = RooflineStepModel(dep)
    return sm.breakdown(BatchShape.of([CONTEXT], [], sm.window_tokens)), dep.tp


def op(bd: StepBreakdown, name: str) -> tuple[float, float]:
    """(FLOPs, bytes) of one operator, per device."""
    found = [o for o in bd.operators if o.name == name]
    return (found[0].flops, found[0].bytes) if found else (0.0, 0.0)


LINEAR_OPS = ("attention projections", "dense MLP", "routed experts", "shared experts", "LM head")


def linear_flops(bd: StepBreakdown, tp: int) -> float:
    """Matrix FLOPs of the whole model for the step (the router is not sharded over TP)."""
    return sum(op(bd, n)[0] for n in LINEAR_OPS) * tp + op(bd, "router")[0]


# -- Llama-3.1-70B: h 8192, 80 layers, 64 heads / 8 KV heads of 128, MLP 28672, vocab 128256 --
def test_llama_3_1_70b_decode_flops_and_bytes() -> None:
    bd, tp = decode_step("llama-3.1-70b", "hgx-h200", weight_dtype="fp8", kv_dtype="bf16")
    attention = 8192 * 8192 + 2 * 8192 * 1024 + 8192 * 8192  # Q, K, V, O = 150,994,944
    mlp = 3 * 8192 * 28672  # 704,643,072
    head = 128256 * 8192  # untied LM head, 1,050,673,152
    assert attention == 150_994_944 and mlp == 704_643_072
    assert linear_flops(bd, tp) == 2 * (80 * (attention + mlp) + head) == 139_003_428_864
    # Attention over the cache: QK^T and PV, 2 x 2 x 64 heads x 128 per token of context.
    assert op(bd, "attention (decode)")[0] == 4 * 64 * 128 * 80 * CONTEXT
    # Bytes: FP8 weights (1 byte), BF16 LM head, 16-bit KV cache (80 x 2 x 8 x 128 x 2 B/token).
    assert op(bd, "dense MLP")[1] == 80 * mlp * 1.0
    assert op(bd, "LM head")[1] == head * 2.0
    assert op(bd, "attention (decode)")[1] == 327_680 * CONTEXT
    act = 2 * 8192 * 2 * 80  # the token's activations in and out of the projections (BF16)
    assert op(bd, "attention projections")[1] == 80 * attention * 1.0 + act


# -- DeepSeek-V3: h 7168, 61 layers (3 dense, 58 MoE), MLA (q rank 1536, kv rank 512, rope 64,
#    128 heads of 128 nope + 128 v), 256 experts of 2048 top-8 + 1 shared, vocab 129280 --------
def test_deepseek_v3_decode_flops_and_bytes() -> None:
    bd, tp = decode_step("deepseek-v3", "gb200-nvl72", tp=8, kv_dtype="bf16")
    q = 7168 * 1536 + 1536 + 1536 * 128 * (128 + 64)  # down, its norm, up
    kv = 7168 * (512 + 64) + 512 + 512 * 128 * (128 + 128)  # down (latent + rope key), norm, up
    o = 128 * 128 * 7168
    attention = q + kv + o
    expert = 3 * 7168 * 2048
    dense = 3 * 7168 * 18432
    router = 7168 * 256
    head = 129280 * 7168
    assert attention == 187_107_328
    active = 61 * attention + 3 * dense + 58 * (8 * expert + expert + router) + head
    assert active == 36_624_721_920  # the "37B activated" of the model card
    assert linear_flops(bd, tp) == pytest.approx(2 * active, rel=1e-12)
    # Absorbed MLA attends over the latent: 2 x 128 heads x (2 x 512 + 64) per context token.
    assert op(bd, "attention (decode)")[0] * tp == 2 * 128 * (2 * 512 + 64) * 61 * CONTEXT
    # The latent is not split over TP: every device reads all of it, (512 + 64) x 2 B x 61.
    assert op(bd, "attention (decode)")[1] == 70_272 * CONTEXT
    # One token touches top-8 routed experts per layer (FP8 native weights, 1 byte each),
    # sharded over the 8 devices.
    assert op(bd, "routed experts")[1] * tp == pytest.approx(58 * 8 * expert * 1.0)


# -- gpt-oss-120b: h 2880, 36 layers alternating full / 128-token sliding attention, 64 heads
#    and 8 KV heads of 64 with biases and sinks, 128 experts of 2880 top-4 (MXFP4), vocab 201088
def test_gpt_oss_120b_decode_flops_and_bytes() -> None:
    bd, tp = decode_step("gpt-oss-120b", "gb200-nvl72", kv_dtype="bf16")
    attention = 2880 * 4096 + 2 * 2880 * 512 + 4096 * 2880 + (4096 + 2 * 512) + 2880 + 64
    expert = 3 * 2880 * 2880 + 2 * 2880 + 2880  # gate/up/down with biases
    router = 2880 * 128 + 128
    head = 201088 * 2880
    assert attention == 26_550_144
    active = 36 * (attention + 4 * expert + router) + head
    assert active == 5_132_639_232  # "5.1B active"
    assert linear_flops(bd, tp) == 2 * active
    per_ctx = 4 * 64 * 64
    assert op(bd, "attention (decode)")[0] == per_ctx * 18 * CONTEXT  # full layers
    assert op(bd, "windowed attention (decode)")[0] == per_ctx * 18 * 128  # capped at the window
    kv_layer = 2 * 8 * 64 * 2  # bytes per token per layer, 16-bit
    assert op(bd, "attention (decode)")[1] == kv_layer * 18 * CONTEXT
    assert op(bd, "windowed attention (decode)")[1] == kv_layer * 18 * 128
    # MXFP4 experts: 4 bits plus one 8-bit scale per 32 weights = 4.25 bits.
    assert op(bd, "routed experts")[1] == pytest.approx(36 * 4 * expert * 4.25 / 8)
