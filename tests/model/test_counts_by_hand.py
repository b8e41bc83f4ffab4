"""Tiny configs of every family, counted by hand: grouped-query attention with biases, q/k norms
and sinks; DeepSeek's latent attention with and without a query low-rank; the MoE layouts of
DeepSeek (dense first layers, shared experts), Llama 4 (interleaved, a shared expert), Qwen
(sparse steps, MLP-only layers) and Mixtral (every layer); active parameters under both
conventions; and the KV cache of windowed layers."""

from __future__ import annotations

from typing import Any

import pytest

from megawatt.errors import InputError
from megawatt.model import model_from_config

H, V = 64, 100


def config(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"num_hidden_layers": 4, "hidden_size": H, "num_attention_heads": 4,
                            "num_key_value_heads": 2, "vocab_size": V, "intermediate_size": 128}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


# -- attention -----------------------------------------------------------------------------------
def test_grouped_query_attention_counts_q_and_o_per_head_and_k_v_per_kv_head() -> None:
    m = model_from_config(config(), "gqa")
    head = H // 4
    assert m.head_dim == head
    assert m.attention_params_per_layer() == H * 4 * head + 2 * H * 2 * head + 4 * head * H


def test_biases_norms_and_sinks_add_their_few_weights() -> None:
    plain = model_from_config(config(), "p").attention_params_per_layer()
    head = H // 4
    qwen2 = model_from_config(config(model_type="qwen2"), "q").attention_params_per_layer()
    assert qwen2 - plain == (4 + 2 * 2) * head  # q, k, v biases
    biased = model_from_config(config(attention_bias=True), "a").attention_params_per_layer()
    assert biased - plain == (4 + 2 * 2) * head + H  # and the output's
    qwen3 = model_from_config(config(model_type="qwen3"), "q3").attention_params_per_layer()
    assert qwen3 - plain == 2 * head  # a q and a k norm of one head's width
    assert model_from_config(config(), "n").param_counts().norms == 2 * 4 * H + H


def test_gpt_oss_has_attention_sinks_and_expert_and_router_biases() -> None:
    plain = model_from_config(config(num_local_experts=4, num_experts_per_tok=2), "mix")
    oss = model_from_config(config(num_local_experts=4, num_experts_per_tok=2, model_type="gpt_oss"), "oss")
    assert oss.attention_params_per_layer() - plain.attention_params_per_layer() == 4  # a sink per head
    assert oss.expert_params() - plain.expert_params() == 2 * 128 + H  # gate/up and down biases
    assert oss.router_params_per_layer() - plain.router_params_per_layer() == 4


def test_an_explicit_head_dim_is_kept_apart_from_hidden_over_heads() -> None:
    m = model_from_config(config(head_dim=32), "wide")
    assert m.head_dim == 32 and m.q_dim == 4 * 32
    assert m.attention_params_per_layer() == H * 128 + 2 * H * 64 + 128 * H
    assert m.kv_bytes_per_token() == 4 * 2 * 2 * 32 * 2  # layers x K,V x kv heads x dim x bf16


def mla(**changes: Any) -> dict[str, Any]:
    latent: dict[str, Any] = {"kv_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8,
                              "v_head_dim": 16, "q_lora_rank": 24}
    latent.update(changes)
    return config(**latent)


def test_latent_attention_counts_its_low_rank_projections() -> None:
    m = model_from_config(mla(), "mla")
    assert m.attention_type == "mla" and m.q_dim == 4 * (16 + 8)
    q = H * 24 + 24 + 24 * 4 * 24  # down, its norm, up to every head's nope + rope
    kv_a = H * (32 + 8) + 32  # latent and shared rope key, the latent's norm
    kv_b = 32 * 4 * (16 + 16)  # latent up to every head's key (nope) and value
    o = 4 * 16 * H
    assert m.attention_params_per_layer() == q + kv_a + kv_b + o


def test_latent_attention_without_a_query_low_rank_projects_queries_directly() -> None:
    m = model_from_config(mla(q_lora_rank=None), "mla-q")
    q = H * 4 * 24
    assert m.attention_params_per_layer() == q + (H * 40 + 32) + 32 * 4 * 32 + 4 * 16 * H


def test_latent_attention_caches_one_latent_and_rope_key_per_token() -> None:
    m = model_from_config(mla(), "mla")
    assert m.kv_elements_per_token_per_layer() == 32 + 8
    assert m.kv_bytes_per_token(1.0) == 4 * 40
    assert m.kv_bytes(1000, 2.0) == 1000 * 4 * 40 * 2


# -- MoE layouts ---------------------------------------------------------------------------------
def test_deepseek_layers_are_dense_first_then_moe_with_shared_experts() -> None:
    m = model_from_config(mla(n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
                              first_k_dense_replace=1, n_shared_experts=1), "ds")
    assert [layer.mlp for layer in m.layers] == ["dense", "moe", "moe", "moe"]
    c = m.param_counts()
    expert = 3 * H * 32
    assert c.dense_mlp == 1 * 3 * H * 128
    assert c.routed_experts == 3 * 8 * expert
    assert c.shared_experts == 3 * 1 * expert
    assert c.router == 3 * H * 8
    assert c.active_routed_experts == 3 * 2 * expert


def test_a_moe_layer_frequency_skips_layers() -> None:
    m = model_from_config(mla(n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
                              first_k_dense_replace=0, moe_layer_freq=2), "ds2")
    assert [layer.mlp for layer in m.layers] == ["moe", "dense", "moe", "dense"]


def test_llama_4_interleaves_moe_layers_with_a_shared_expert_each() -> None:
    m = model_from_config(config(num_local_experts=4, num_experts_per_tok=1, interleave_moe_layer_step=2,
                                 intermediate_size_mlp=256), "l4")
    assert [layer.mlp for layer in m.layers] == ["dense", "moe", "dense", "moe"]
    c = m.param_counts()
    assert c.dense_mlp == 2 * 3 * H * 256  # the dense layers' own width
    assert c.routed_experts == 2 * 4 * 3 * H * 128
    assert c.shared_experts == 2 * 1 * 3 * H * 128


def test_qwen_moe_steps_and_mlp_only_layers() -> None:
    m = model_from_config(config(num_experts=6, num_experts_per_tok=2, moe_intermediate_size=16,
                                 decoder_sparse_step=1, mlp_only_layers=[2],
                                 shared_expert_intermediate_size=48), "qwen")
    assert [layer.mlp for layer in m.layers] == ["moe", "moe", "dense", "moe"]
    c = m.param_counts()
    assert c.routed_experts == 3 * 6 * 3 * H * 16
    assert c.shared_experts == 3 * 3 * H * 48
    assert c.dense_mlp == 3 * H * 128


def test_mixtral_is_moe_on_every_layer_without_shared_experts() -> None:
    m = model_from_config(config(num_local_experts=8, num_experts_per_tok=2), "mix")
    assert m.n_moe_layers == 4 and m.n_dense_layers == 0
    c = m.param_counts()
    assert c.shared_experts == 0 and c.dense_mlp == 0
    assert c.routed_experts == 4 * 8 * 3 * H * 128


def test_active_parameters_follow_both_conventions() -> None:
    m = model_from_config(config(num_local_experts=8, num_experts_per_tok=2), "mix")
    c = m.param_counts()
    per_token = c.total - c.routed_experts + c.active_routed_experts
    assert c.active == per_token - V * H  # without the input embedding (OpenAI, DeepSeek)
    assert c.active_with_embedding == per_token  # with it (Meta, Mistral)
    assert c.active < c.total


def test_more_experts_per_token_than_experts_is_refused() -> None:
    with pytest.raises(InputError, match=r"'num_experts_per_tok' \(9\) must be at most the number of "
                                         r"routed experts \(8\)"):
        model_from_config(config(num_local_experts=8, num_experts_per_tok=9), "bad")


# -- windows -------------------------------------------------------------------------------------
def test_qwen2_style_windows_start_at_max_window_layers() -> None:
    m = model_from_config(config(sliding_window=512, use_sliding_window=True, max_window_layers=2), "q2")
    assert [layer.window_tokens for layer in m.layers] == [None, None, 512, 512]
    per_layer = 2 * 2 * 16 * 2  # K and V x 2 kv heads x 16 x bf16
    assert m.kv_bytes(100) == 4 * 100 * per_layer
    assert m.kv_bytes(2000) == (2 * 2000 + 2 * 512) * per_layer


def test_mistral_style_windows_slide_on_every_layer_and_can_be_turned_off() -> None:
    sliding = model_from_config(config(sliding_window=256), "mistral")
    assert sliding.windowed_layers() == (256, 256, 256, 256)
    assert sliding.kv_bytes_per_token_full() == 0.0
    off = model_from_config(config(sliding_window=256, use_sliding_window=False), "off")
    assert off.windowed_layers() == ()


def test_llama_4_no_rope_layers_pick_the_global_ones() -> None:
    m = model_from_config(config(attention_chunk_size=64, no_rope_layers=[1, 0, 1, 0]), "l4")
    assert [layer.attention for layer in m.layers] == ["chunked", "full", "chunked", "full"]
    every_third = model_from_config(config(attention_chunk_size=64, no_rope_layer_interval=3), "l4b")
    assert [layer.attention for layer in every_third.layers] == ["chunked", "chunked", "full", "chunked"]


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"layer_types": "sliding_attention"}, "'layer_types' must be a list of layer kinds; got str"),
        ({"layer_types": ["full_attention"] * 3}, "layer_types has 3 entries but num_hidden_layers is 4"),
        ({"layer_types": ["full_attention", "local", "full_attention", "full_attention"]},
         "layer_types entry 'local' is not one of sliding_attention, full_attention, chunked_attention"),
    ],
)
def test_a_bad_layer_pattern_is_named(changes: dict[str, Any], needle: str) -> None:
    with pytest.raises(InputError) as caught:
        model_from_config(config(**changes), "bad")
    assert needle in str(caught.value)


def test_published_formats_come_from_the_quantisation_config() -> None:
    gpt_oss = model_from_config(config(quantization_config={"quant_method": "mxfp4"}), "g")
    assert dict(gpt_oss.native_weight_dtype) == {"attention": "bf16", "mlp": "bf16", "experts": "fp4",
                                                 "embedding": "bf16"}
    ds = model_from_config(config(quantization_config={"quant_method": "fp8"}, torch_dtype="float16"), "d")
    assert dict(ds.native_weight_dtype) == {"attention": "fp8", "mlp": "fp8", "experts": "fp8",
                                            "embedding": "fp16"}
