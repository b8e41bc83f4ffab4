"""A GPU replica's memory plan worked out by hand from `plan_memory`'s docstring: usable HBM,
weights per device under tp, pp, attention data parallelism and wide expert parallelism, the
workspace estimate, the KV left and how tensor parallelism replicates it, and the FitError's
way out."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest

from megawatt.errors import FitError
from megawatt.hardware import load_catalog
from megawatt.model import load_model
from megawatt.perf import Deployment, plan_memory, weight_bytes
from megawatt.perf.memory import wafer_activation_bytes
from megawatt.units import GIB

CATALOG = load_catalog()


def gpu(model_id: str, system_id: str = "hgx-h200", **settings: Any) -> Deployment:
    system = CATALOG.system(system_id)
    return Deployment(load_model(model_id), system, CATALOG.device(system.device_id), **settings)


def workspace(dep: Deployment) -> float:
    """The docstring's estimate: 1 GiB, 16 bytes per hidden element of a full token budget,
    FP32 logits of a full batch split over tp."""
    m = dep.model
    return (
        GIB + dep.max_num_batched_tokens * m.hidden_size * 16.0
        + dep.max_num_seqs * m.vocab_size * 4.0 / dep.tp
    )


# -- weight bytes -------------------------------------------------------------------------------


def test_weight_bytes_are_parameters_times_their_format() -> None:
    """Llama 3.1 8B in FP8: linear layers one byte a weight, embedding and LM head BF16, norms
    BF16."""
    dep = gpu("llama-3.1-8b", weight_dtype="fp8")
    c = dep.model.param_counts()
    wb = weight_bytes(dep)
    assert wb.attention == c.attention * 1.0
    assert wb.dense_mlp == c.dense_mlp * 1.0
    assert wb.embedding == c.embedding * 2.0
    assert wb.lm_head == c.lm_head * 2.0
    assert wb.other == c.norms * 2.0
    assert wb.routed_experts == wb.shared_experts == 0.0
    assert wb.layers == wb.attention + wb.dense_mlp + wb.other
    assert wb.total == wb.layers + wb.embedding + wb.lm_head


def test_bf16_weights_of_the_linear_layers_are_twice_fp8() -> None:
    fp8 = weight_bytes(gpu("qwen3-235b-a22b", tp=8, weight_dtype="fp8"))
    bf16 = weight_bytes(gpu("qwen3-235b-a22b", tp=8, weight_dtype="bf16"))
    for name in ("attention", "routed_experts"):
        assert getattr(bf16, name) == 2 * getattr(fp8, name), name
    assert bf16.embedding == fp8.embedding  # embeddings stay BF16
    assert bf16.other == fp8.other  # routers and norms too


def test_native_weights_keep_the_published_formats() -> None:
    """gpt-oss-120b ships MXFP4 experts (4.25 bits with scales) and BF16 elsewhere."""
    dep = gpu("gpt-oss-120b", "gb200-nvl72")
    c = dep.model.param_counts()
    wb = weight_bytes(dep)
    assert wb.attention == c.attention * 2.0
    assert wb.routed_experts == pytest.approx(c.routed_experts * 4.25 / 8, rel=1e-12)
    assert wb.other == (c.router + c.norms) * 2.0


# -- the plan on one GPU ------------------------------------------------------------------------


def test_one_h200_holds_llama_8b_and_the_rest_is_kv() -> None:
    dep = gpu("llama-3.1-8b", weight_dtype="fp8")
    plan = plan_memory(dep)
    wb = weight_bytes(dep)
    usable = dep.device.mem_capacity_bytes * 0.90
    assert plan.memory == "HBM"
    assert plan.usable_bytes_per_device == usable
    assert plan.weight_bytes_per_device == pytest.approx(wb.total, rel=1e-12)
    assert plan.workspace_bytes_per_device == pytest.approx(workspace(dep), rel=1e-12)
    assert plan.kv_bytes_per_device == pytest.approx(usable - wb.total - workspace(dep), rel=1e-12)
    assert plan.kv_bytes == plan.kv_bytes_per_device
    assert plan.kv_replication == 1.0
    # 32 layers x 8 KV heads x 128 x (K and V) x 2 bytes.
    assert plan.kv_bytes_per_token == 32 * 8 * 128 * 2 * 2
    assert (plan.window_tokens, plan.kv_bytes_per_token_windowed) == (None, 0.0)
    assert plan.layers_per_stage == 32


def test_memory_utilisation_moves_only_the_kv_cache() -> None:
    low = plan_memory(gpu("llama-3.1-8b", weight_dtype="fp8", gpu_memory_utilization=0.5))
    high = plan_memory(gpu("llama-3.1-8b", weight_dtype="fp8", gpu_memory_utilization=0.9))
    capacity = CATALOG.device("h200-sxm").mem_capacity_bytes
    assert high.weight_bytes_per_device == low.weight_bytes_per_device
    assert high.kv_bytes_per_device - low.kv_bytes_per_device == pytest.approx(0.4 * capacity)


def test_a_bigger_batch_cap_takes_its_logits_from_the_kv_cache() -> None:
    """256 more sequences: 256 x vocabulary x 4 bytes of FP32 logits, over tp = 2."""
    a = plan_memory(gpu("llama-3.1-8b", tp=2, weight_dtype="fp8", max_num_seqs=256))
    b = plan_memory(gpu("llama-3.1-8b", tp=2, weight_dtype="fp8", max_num_seqs=512))
    assert a.kv_bytes_per_device - b.kv_bytes_per_device == pytest.approx(256 * 128_256 * 4 / 2)


def test_a_bigger_token_budget_takes_its_activations_from_the_kv_cache() -> None:
    a = plan_memory(gpu("llama-3.1-8b", weight_dtype="fp8", max_num_batched_tokens=8_192))
    b = plan_memory(gpu("llama-3.1-8b", weight_dtype="fp8", max_num_batched_tokens=16_384))
    assert a.kv_bytes_per_device - b.kv_bytes_per_device == pytest.approx(8_192 * 4_096 * 16.0)


def test_fp8_kv_holds_twice_the_tokens_of_bf16_kv() -> None:
    bf16 = plan_memory(gpu("llama-3.1-8b", weight_dtype="fp8"))
    fp8 = plan_memory(gpu("llama-3.1-8b", weight_dtype="fp8", kv_dtype="fp8"))
    assert fp8.kv_bytes_per_token * 2 == bf16.kv_bytes_per_token
    assert fp8.kv_bytes == bf16.kv_bytes
    assert fp8.kv_tokens == pytest.approx(2 * bf16.kv_tokens, abs=1)


# -- tensor and pipeline parallelism ------------------------------------------------------------


def test_tensor_parallelism_splits_weights_and_sums_kv_over_devices() -> None:
    dep = gpu("llama-3.1-70b", tp=8, weight_dtype="fp8")
    plan = plan_memory(dep)
    wb = weight_bytes(dep)
    assert plan.weight_bytes_per_device == pytest.approx(wb.total / 8, rel=1e-12)
    kv_dev = dep.device.mem_capacity_bytes * 0.9 - wb.total / 8 - workspace(dep)
    assert plan.kv_bytes_per_device == pytest.approx(kv_dev, rel=1e-12)
    assert plan.kv_bytes == pytest.approx(8 * kv_dev, rel=1e-12)  # 8 KV heads: no copies


def test_more_tensor_ranks_than_kv_heads_replicate_the_cache() -> None:
    """Qwen3-235B has 4 KV heads: on tp = 8 every head is cached on two devices."""
    plan = plan_memory(gpu("qwen3-235b-a22b", tp=8, weight_dtype="fp8"))
    assert plan.kv_replication == 2.0
    assert plan.kv_bytes == pytest.approx(plan.kv_bytes_per_device * 8 / 2, rel=1e-12)


def test_mla_latents_are_replicated_on_every_tensor_rank_but_not_with_dp_attention() -> None:
    tp = plan_memory(gpu("deepseek-v3", "gb200-nvl72", tp=8, ep=8))
    dp = plan_memory(gpu("deepseek-v3", "gb200-nvl72", tp=8, ep=8, attention_dp=True))
    assert tp.kv_replication == 8.0
    assert tp.kv_bytes == pytest.approx(tp.kv_bytes_per_device, rel=1e-12)
    assert dp.kv_replication == 1.0
    assert dp.kv_bytes == pytest.approx(dp.kv_bytes_per_device * 8, rel=1e-12)


def test_data_parallel_attention_keeps_every_attention_weight_on_every_device() -> None:
    """The stage's attention weights are whole on each rank: (1 - 1/tp) of them more per
    device than with tensor-parallel attention."""
    dep = gpu("deepseek-v3", "gb200-nvl72", tp=8, ep=8, attention_dp=True)
    tp = plan_memory(gpu("deepseek-v3", "gb200-nvl72", tp=8, ep=8))
    dp = plan_memory(dep)
    extra = weight_bytes(dep).attention * (1 - 1 / 8)
    assert dp.weight_bytes_per_device - tp.weight_bytes_per_device == pytest.approx(extra, rel=1e-9)


def test_wide_expert_parallelism_holds_all_but_the_other_ranks_experts() -> None:
    dep = gpu("deepseek-v3", "dgx-h100", tp=32, ep=32, attention_dp=True, weight_dtype="fp8")
    wb = weight_bytes(dep)
    plan = plan_memory(dep)
    assert dep.wide_ep
    assert plan.weight_bytes_per_device == pytest.approx(
        wb.total - wb.routed_experts * 31 / 32, rel=1e-12
    )


def test_pipeline_stages_hold_whole_layers_and_the_larger_table() -> None:
    """Llama 3.1 405B on tp 8 x pp 2: 63 layers a stage; the first holds the embedding, the
    last the LM head, equal in size, so each stage holds one table."""
    dep = gpu("llama-3.1-405b", "dgx-h100", tp=8, pp=2, weight_dtype="fp8")
    plan = plan_memory(dep)
    wb = weight_bytes(dep)
    assert plan.layers_per_stage == 63
    per_device = (63 * wb.layers / 126 + max(wb.embedding, wb.lm_head)) / 8
    assert plan.weight_bytes_per_device == pytest.approx(per_device, rel=1e-12)
    assert plan.kv_bytes == pytest.approx(plan.kv_bytes_per_device * 16, rel=1e-12)


def test_an_uneven_pipeline_sizes_devices_for_the_fuller_stage() -> None:
    """32 layers over 3 stages: 11 on the fullest."""
    plan = plan_memory(gpu("llama-3.1-8b", pp=3, weight_dtype="fp8"))
    assert plan.layers_per_stage == math.ceil(32 / 3) == 11


# -- windows ----------------------------------------------------------------------------------


def test_windowed_layers_cost_a_fixed_share_once_past_the_window() -> None:
    """gpt-oss-120b: 18 of 36 layers attend a 128-token window."""
    dep = gpu("gpt-oss-120b", "gb200-nvl72")
    plan = plan_memory(dep)
    per_layer = dep.model.kv_elements_per_token_per_layer() * dep.kv_bytes_per_element
    assert plan.window_tokens == 128
    assert plan.kv_bytes_per_token_windowed == 18 * per_layer
    assert plan.kv_bytes_per_token == 18 * per_layer
    assert plan.sequence_kv_bytes(10_000) == 10_000 * 18 * per_layer + 128 * 18 * per_layer


# -- not fitting --------------------------------------------------------------------------------


def test_a_model_too_big_names_itself_the_device_and_a_way_out_that_fits() -> None:
    dep = gpu("llama-3.1-405b", "dgx-h100", weight_dtype="bf16")
    with pytest.raises(FitError) as err:
        plan_memory(dep)
    text = str(err.value)
    assert text.startswith("llama-3.1-405b does not fit on 1x h100-sxm")
    assert "leave no room for the KV cache" in text
    hit = re.search(r"Use tp x pp >= (\d+)", text)
    assert hit is not None
    n = int(hit.group(1))
    # The suggested count spreads the weights within usable memory, and no smaller count
    # could; a plan of 16 devices exists.
    usable = dep.device.mem_capacity_bytes * 0.9
    assert weight_bytes(dep).total / n < usable
    assert n >= math.ceil(weight_bytes(dep).total / usable)
    assert plan_memory(gpu("llama-3.1-405b", "dgx-h100", weight_dtype="bf16", tp=8, pp=2)).kv_bytes > 0


def test_the_wafer_activation_estimate_is_four_hidden_vectors_a_token() -> None:
    system = CATALOG.system("cs-3")
    dep = Deployment(load_model("llama-3.1-8b"), system, CATALOG.device(system.device_id),
                     weight_dtype="bf16", engine="cerebras", max_num_batched_tokens=1_000)
    assert wafer_activation_bytes(dep) == 4.0 * 1_000 * 4_096 * 2.0
