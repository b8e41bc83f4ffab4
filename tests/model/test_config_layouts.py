"""Tiny hand-written config.json files for each family's layout rules (Qwen2 and Mistral windows,
Llama 4 chunks and interleaved experts, DeepSeek's dense-then-MoE layers and MLA, Qwen-MoE's
sparse steps), with parameters counted by hand from the formulas in `ModelSpec`."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megawatt.errors import InputError
from megawatt.model import LayerSpec, model_from_config

H, V = 64, 100  # hidden size and vocabulary of every tiny model here


def config(**changes: Any) -> dict[str, Any]:
    """Four layers, four heads of 16, two KV heads, a 128-wide MLP; `None` drops a key."""
    cfg: dict[str, Any] = {
        "num_hidden_layers": 4,
        "hidden_size": H,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": V,
        "intermediate_size": 128,
    }
    cfg.update(changes)
    return {k: v for k, v in cfg.items() if v is not None}


def kinds(cfg: dict[str, Any]) -> list[tuple[str, int | None, str]]:
    return [(layer.attention, layer.window_tokens, layer.mlp)
            for layer in model_from_config(cfg, "t").layers]


# -- attention parameters by hand ---------------------------------------------------------------


def test_gqa_attention_counts_q_k_v_and_o() -> None:
    """q: 64 x 4 x 16; k and v: 64 x 2 x 16 each; o: 4 x 16 x 64."""
    m = model_from_config(config(), "t")
    assert m.attention_params_per_layer() == 4096 + 2 * 2048 + 4096
    assert m.kv_elements_per_token_per_layer() == 2 * 2 * 16


def test_biases_norms_and_sinks_add_their_few_weights() -> None:
    base = model_from_config(config(), "t").attention_params_per_layer()
    # q/k/v/o biases: (4 + 2 x 2) heads x 16, plus o's 64.
    assert model_from_config(config(attention_bias=True), "t").attention_params_per_layer() == (
        base + 8 * 16 + 64
    )
    # Qwen2: q/k/v biases only.
    assert model_from_config(config(model_type="qwen2"), "t").attention_params_per_layer() == (
        base + 8 * 16
    )
    # Qwen3: a q and a k RMSNorm of head_dim each.
    assert model_from_config(config(model_type="qwen3"), "t").attention_params_per_layer() == (
        base + 2 * 16
    )


def test_gpt_oss_adds_a_sink_per_head_and_expert_biases() -> None:
    m = model_from_config(
        config(model_type="gpt_oss", num_local_experts=4, num_experts_per_tok=2), "t"
    )
    base = model_from_config(config(), "t").attention_params_per_layer()
    assert m.attention_sinks and m.expert_bias
    assert m.attention_params_per_layer() == base + 4
    # A gated expert of width 128 with biases on gate/up (2 x 128) and down (64).
    assert m.expert_params() == 3 * H * 128 + 2 * 128 + H
    assert m.router_params_per_layer() == H * 4 + 4


def mla(**changes: Any) -> dict[str, Any]:
    return config(
        num_key_value_heads=None, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8,
        v_head_dim=16, **changes,
    )


def test_mla_caches_one_latent_and_counts_its_projections() -> None:
    """Without a query rank: q 64 x 4 x 24; kv_a 64 x (32 + 8) + 32 (its norm); kv_b
    32 x 4 x (16 + 16); o 4 x 16 x 64."""
    m = model_from_config(mla(), "t")
    assert m.attention_type == "mla"
    assert m.q_lora_rank is None
    assert m.q_dim == 4 * 24
    assert m.attention_params_per_layer() == 64 * 96 + (64 * 40 + 32) + 32 * 128 + 64 * 64
    assert m.kv_elements_per_token_per_layer() == 32 + 8
    assert m.kv_bytes_per_token(1.0) == 4 * 40


def test_mla_with_a_query_rank_compresses_the_query_too() -> None:
    """q_lora_rank 24: q_a 64 x 24 + its norm 24, q_b 24 x 4 x 24."""
    without = model_from_config(mla(), "t").attention_params_per_layer()
    m = model_from_config(mla(q_lora_rank=24), "t")
    assert m.q_lora_rank == 24
    assert m.attention_params_per_layer() == without - 64 * 96 + (64 * 24 + 24 + 24 * 96)


# -- windows ------------------------------------------------------------------------------------


def test_mistral_slides_every_layer() -> None:
    assert kinds(config(sliding_window=32)) == [("sliding", 32, "dense")] * 4


def test_a_window_switched_off_is_full_attention() -> None:
    assert kinds(config(sliding_window=32, use_sliding_window=False)) == [("full", None, "dense")] * 4


def test_qwen2_slides_only_from_max_window_layers_up() -> None:
    assert kinds(config(sliding_window=32, use_sliding_window=True, max_window_layers=3)) == [
        ("full", None, "dense"), ("full", None, "dense"), ("full", None, "dense"),
        ("sliding", 32, "dense"),
    ]


def test_layer_types_name_each_layers_attention() -> None:
    cfg = config(
        layer_types=["sliding_attention", "full_attention", "chunked_attention", "attention"],
        sliding_window=16, attention_chunk_size=64,
    )
    assert kinds(cfg) == [
        ("sliding", 16, "dense"), ("full", None, "dense"), ("chunked", 64, "dense"),
        ("full", None, "dense"),
    ]


def test_a_sliding_layer_without_a_window_names_the_missing_field() -> None:
    with pytest.raises(InputError, match=r"config\.json field 'sliding_window' is required"):
        model_from_config(config(layer_types=["sliding_attention"] * 4), "t")


def test_llama_4_chunks_all_but_every_fourth_layer_by_default() -> None:
    assert [k for k, _, _ in kinds(config(attention_chunk_size=64))] == [
        "chunked", "chunked", "chunked", "full",
    ]
    assert [k for k, _, _ in kinds(config(attention_chunk_size=64, no_rope_layer_interval=2))] == [
        "chunked", "full", "chunked", "full",
    ]


def test_llama_4_no_rope_layers_mark_the_global_ones_with_zero() -> None:
    cfg = config(attention_chunk_size=64, no_rope_layers=[0, 1, 1, 0])
    assert [k for k, _, _ in kinds(cfg)] == ["full", "chunked", "chunked", "full"]


def test_a_no_rope_list_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(InputError, match="'no_rope_layers' must be a list of 4 whole numbers"):
        model_from_config(config(attention_chunk_size=64, no_rope_layers=[0, 1]), "t")


def test_kv_bytes_of_mixed_layers_by_hand() -> None:
    """Two full and two 16-token sliding layers of 64 elements a token, 2 bytes each: a
    100-token sequence holds 2 x 100 x 128 + 2 x 16 x 128 bytes."""
    m = model_from_config(config(
        layer_types=["full_attention", "sliding_attention"] * 2, sliding_window=16,
    ), "t")
    assert m.kv_bytes_per_token() == 4 * 128
    assert m.kv_bytes_per_token_full() == 2 * 128
    assert m.windowed_layers() == (16, 16)
    assert m.kv_bytes(100) == 2 * 100 * 128 + 2 * 16 * 128
    assert m.kv_bytes(10) == 4 * 10 * 128


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 10_000), st.integers(1, 4), st.integers(1, 512))
def test_kv_bytes_sit_between_the_full_layers_alone_and_every_layer_in_full(
    context: int, n_sliding: int, window: int
) -> None:
    types = ["sliding_attention"] * n_sliding + ["full_attention"] * (4 - n_sliding)
    m = model_from_config(config(layer_types=types, sliding_window=window), "t")
    got = m.kv_bytes(context)
    assert m.kv_bytes_per_token_full() * context <= got <= m.kv_bytes_per_token() * context
    assert got == m.kv_bytes_per_token_full() * context + n_sliding * min(context, window) * 128


# -- mixture-of-experts layouts -----------------------------------------------------------------


def test_deepseek_keeps_its_first_layers_dense_and_then_every_freq_th_moe() -> None:
    cfg = config(
        n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=32, n_shared_experts=1,
        first_k_dense_replace=1, moe_layer_freq=1,
    )
    m = model_from_config(cfg, "t")
    assert [layer.mlp for layer in m.layers] == ["dense", "moe", "moe", "moe"]
    c = m.param_counts()
    assert c.dense_mlp == 1 * 3 * H * 128
    assert c.routed_experts == 3 * 8 * 3 * H * 32
    assert c.shared_experts == 3 * 1 * 3 * H * 32  # shared experts as wide as routed ones
    assert c.router == 3 * H * 8
    assert c.active_routed_experts == 3 * 2 * 3 * H * 32
    every_other = model_from_config({**cfg, "first_k_dense_replace": 0, "moe_layer_freq": 2}, "t")
    assert [layer.mlp for layer in every_other.layers] == ["moe", "dense", "moe", "dense"]


def test_llama_4_interleaves_moe_layers_with_a_shared_expert() -> None:
    cfg = config(
        num_local_experts=4, num_experts_per_tok=1, interleave_moe_layer_step=2,
        intermediate_size=48, intermediate_size_mlp=96,
    )
    m = model_from_config(cfg, "t")
    assert [layer.mlp for layer in m.layers] == ["dense", "moe", "dense", "moe"]
    assert (m.expert_intermediate_size, m.intermediate_size) == (48, 96)
    assert m.n_shared_experts == 1
    assert m.shared_expert_params_per_layer() == 3 * H * 48
    assert m.param_counts().dense_mlp == 2 * 3 * H * 96


def test_qwen_moe_skips_its_mlp_only_layers() -> None:
    cfg = config(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
                 decoder_sparse_step=1, mlp_only_layers=[0, 2])
    m = model_from_config(cfg, "t")
    assert [layer.mlp for layer in m.layers] == ["dense", "moe", "dense", "moe"]
    assert m.n_shared_experts == 0
    shared = model_from_config({**cfg, "shared_expert_intermediate_size": 80}, "t")
    assert shared.shared_expert_params_per_layer() == 3 * H * 80


def test_mixtral_makes_every_layer_moe_with_experts_of_the_mlp_width() -> None:
    m = model_from_config(config(num_local_experts=8, num_experts_per_tok=2), "t")
    assert m.n_moe_layers == 4 and m.n_dense_layers == 0
    assert m.expert_params() == 3 * H * 128
    c = m.param_counts()
    assert c.dense_mlp == 0
    # Active: everything but 6 of 8 experts per layer and the input table.
    assert c.active == c.total - 4 * 6 * 3 * H * 128 - V * H


def test_more_experts_per_token_than_experts_is_refused() -> None:
    with pytest.raises(InputError, match=r"'num_experts_per_tok' \(9\) must be at most the number "
                       r"of routed experts \(8\)"):
        model_from_config(config(num_local_experts=8, num_experts_per_tok=9), "t")


def test_kv_heads_must_divide_the_heads() -> None:
    with pytest.raises(InputError, match=r"'num_key_value_heads' \(3\) must divide "
                       r"num_attention_heads \(4\)"):
        model_from_config(config(num_key_value_heads=3), "t")


# -- published formats ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, {"attention": "bf16", "mlp": "bf16", "experts": "bf16", "embedding": "bf16"}),
        ({"torch_dtype": "float16"}, {"attention": "fp16", "mlp": "fp16", "experts": "fp16",
                                      "embedding": "fp16"}),
        ({"quantization_config": {"quant_method": "fp8"}},
         {"attention": "fp8", "mlp": "fp8", "experts": "fp8", "embedding": "bf16"}),
        ({"quantization_config": {"quant_method": "mxfp4"}},
         {"attention": "bf16", "mlp": "bf16", "experts": "fp4", "embedding": "bf16"}),
        ({"quantization_config": "not a mapping"},
         {"attention": "bf16", "mlp": "bf16", "experts": "bf16", "embedding": "bf16"}),
    ],
)
def test_published_formats_come_from_the_dtype_and_quantisation(
    changes: dict[str, Any], expected: dict[str, str]
) -> None:
    assert dict(model_from_config(config(**changes), "t").native_weight_dtype) == expected


def test_a_multimodal_wrapper_is_read_through_its_text_config() -> None:
    m = model_from_config({"text_config": config(), "architectures": ["Wrapper"]}, "t")
    assert m.architecture == "Wrapper"
    assert m.layers == (LayerSpec("full", None, "dense"),) * 4
