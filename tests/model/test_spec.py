"""Architectures from config.json: parsing, layer patterns, parameter counts of a tiny model and
exact KV-cache bytes per token (GQA, MLA, sliding and chunked windows)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from megawatt.errors import InputError
from megawatt.model import LayerSpec, load_model, load_model_file, model_from_config


def tiny_config(**changes: Any) -> dict[str, Any]:
    """A two-layer dense model small enough to count by hand."""
    config: dict[str, Any] = {
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "num_attention_heads": 4,
        "vocab_size": 100,
        "intermediate_size": 128,
    }
    config.update(changes)
    return {k: v for k, v in config.items() if v is not None}


# -- parsing ------------------------------------------------------------------------------------


def test_a_minimal_dense_config_parses_and_counts_by_hand() -> None:
    model = model_from_config(tiny_config(), "tiny")
    assert model.attention_type == "gqa"
    assert (model.n_heads, model.n_kv_heads, model.head_dim) == (4, 4, 16)  # MHA by default
    assert model.layers == (LayerSpec("full", None, "dense"),) * 2
    assert not model.is_moe
    counts = model.param_counts()
    assert counts.embedding == counts.lm_head == 100 * 64
    assert counts.attention == 2 * 4 * 64 * 64  # q, k, v, o per layer
    assert counts.dense_mlp == 2 * 3 * 64 * 128  # gate, up, down per layer
    assert counts.norms == 2 * 2 * 64 + 64
    assert counts.total == 6400 + 6400 + 32768 + 49152 + 320
    assert model_from_config(tiny_config(tie_word_embeddings=True), "t").param_counts().lm_head == 0


@pytest.mark.parametrize("key", ["num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size"])
def test_a_missing_required_key_is_named(key: str) -> None:
    with pytest.raises(InputError, match=f"tiny: config.json field '{key}' is required"):
        model_from_config(tiny_config(**{key: None}), "tiny")


def test_a_dense_model_without_intermediate_size_is_an_input_error() -> None:
    with pytest.raises(InputError, match="'intermediate_size'"):
        model_from_config(tiny_config(intermediate_size=None), "tiny")


def test_a_moe_model_without_top_k_is_an_input_error() -> None:
    with pytest.raises(InputError, match="'num_experts_per_tok'"):
        model_from_config(tiny_config(num_local_experts=8), "tiny")


@pytest.mark.parametrize("bad", [0, -2, 2.5, "64", True])
def test_sizes_must_be_positive_integers(bad: object) -> None:
    with pytest.raises(InputError, match="'hidden_size' must be a positive integer"):
        model_from_config(tiny_config(hidden_size=bad), "tiny")


def test_layer_types_must_match_the_layer_count_and_be_known() -> None:
    with pytest.raises(InputError, match="layer_types has 1 entries but num_hidden_layers is 2"):
        model_from_config(tiny_config(layer_types=["full_attention"]), "tiny")
    with pytest.raises(InputError, match="'local_attention' is not one of"):
        model_from_config(tiny_config(layer_types=["full_attention", "local_attention"]), "tiny")
    with pytest.raises(InputError, match="'sliding_window'"):
        model_from_config(tiny_config(layer_types=["sliding_attention"] * 2), "tiny")


def test_a_mixtral_style_config_is_moe_on_every_layer() -> None:
    model = model_from_config(tiny_config(num_local_experts=8, num_experts_per_tok=2), "tiny")
    assert model.n_moe_layers == 2 and model.n_experts == 8 and model.n_experts_per_token == 2
    counts = model.param_counts()
    assert counts.routed_experts == 2 * 8 * 3 * 64 * 128
    assert counts.active_routed_experts == 2 * 2 * 3 * 64 * 128
    assert counts.router == 2 * 64 * 8


def test_a_config_file_loads_and_bad_files_are_input_errors(tmp_path: Path) -> None:
    good = tmp_path / "config.json"
    good.write_text(json.dumps(tiny_config()))
    assert load_model_file(good, "mine").id == "mine"
    assert load_model_file(good).id == "config"

    broken = tmp_path / "broken.json"
    broken.write_text('{"hidden_size": 64,\n')
    with pytest.raises(InputError, match=r"broken\.json line 2, column 1: not valid JSON"):
        load_model_file(broken)

    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(InputError, match="must hold a JSON object; got list"):
        load_model_file(listed)


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"num_key_value_heads": "eight"}, "'num_key_value_heads' must be a whole number from 1 to"),
        ({"num_key_value_heads": 3}, "'num_key_value_heads' (3) must divide num_attention_heads (4)"),
        ({"head_dim": 0}, "'head_dim' must be a whole number from 1 to"),
        ({"hidden_size": 2, "num_attention_heads": 4}, "hidden_size // num_attention_heads = 2 // 4"),
        ({"max_position_embeddings": 1.5}, "'max_position_embeddings' must be a whole number"),
        ({"text_config": [1]}, "'text_config' must be an object; got list"),
        ({"layer_types": "full_attention"}, "'layer_types' must be a list of layer kinds"),
        ({"sliding_window": "big"}, "'sliding_window' must be a positive integer"),
        ({"attention_chunk_size": 8, "no_rope_layers": [1]}, "'no_rope_layers' must be a list of 2"),
        ({"num_local_experts": 4, "num_experts_per_tok": 9}, "'num_experts_per_tok' (9) must be at most"),
        ({"num_local_experts": 2.5, "num_experts_per_tok": 1}, "'num_local_experts' must be a whole"),
        ({"_published_params": "70B"}, "'_published_params' must be an object; got str"),
        ({"head_dim": 1e308}, "'head_dim' must be a whole number from 1 to 2,147,483,647; got 1e+308"),
        ({"vocab_size": 10**30}, "'vocab_size' must be a positive integer up to 2,147,483,647"),
    ],
)
def test_a_malformed_field_is_an_input_error_naming_it(changes: dict[str, Any], needle: str) -> None:
    with pytest.raises(InputError) as caught:
        model_from_config(tiny_config(**changes), "tiny")
    assert needle in str(caught.value) and str(caught.value).startswith("tiny: ")


def test_a_whole_float_is_read_as_the_integer_hugging_face_meant() -> None:
    model = model_from_config(tiny_config(num_key_value_heads=2.0, head_dim=16.0), "tiny")
    assert (model.n_kv_heads, model.head_dim) == (2, 16)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff", "is not UTF-8 text (byte 0 is 0x89)"),
        (b'{"hidden_size": NaN}', "NaN is not a number JSON allows"),
        (b'{"hidden_size": -Infinity}', "-Infinity is not a number JSON allows"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
    ids=["binary", "NaN", "Infinity", "deep"],
)
def test_a_file_that_is_not_a_json_config_is_an_input_error(
    tmp_path: Path, content: bytes, needle: str
) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(content)
    with pytest.raises(InputError, match=re.escape(needle)):
        load_model_file(path)


def test_a_folder_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a folder; give the path of a file in it"):
        load_model_file(tmp_path)


# -- layer patterns of the presets --------------------------------------------------------------


def test_gpt_oss_alternates_sliding_and_full_attention() -> None:
    model = load_model("gpt-oss-120b")
    assert model.n_layers == 36
    assert [layer.attention for layer in model.layers[:4]] == [
        "sliding",
        "full",
        "sliding",
        "full",
    ]
    assert model.windowed_layers() == (128,) * 18
    assert all(layer.mlp == "moe" for layer in model.layers)


@pytest.mark.parametrize("model_id", ["llama-4-scout", "llama-4-maverick"])
def test_llama_4_attends_globally_on_every_4th_layer(model_id: str) -> None:
    model = load_model(model_id)
    assert model.n_layers == 48
    full = [i for i, layer in enumerate(model.layers) if layer.attention == "full"]
    assert full == list(range(3, 48, 4))
    assert all(layer.window_tokens == 8192 for layer in model.layers if layer.attention == "chunked")


def test_llama_4_maverick_is_moe_on_every_2nd_layer_and_scout_on_all() -> None:
    maverick = load_model("llama-4-maverick")
    assert [i for i, layer in enumerate(maverick.layers) if layer.mlp == "moe"] == list(range(1, 48, 2))
    assert maverick.intermediate_size == 16384  # dense layers use intermediate_size_mlp
    assert maverick.n_shared_experts == 1 and maverick.n_experts == 128
    assert load_model("llama-4-scout").n_moe_layers == 48


def test_deepseek_v3_has_3_dense_layers_then_moe_and_mla() -> None:
    model = load_model("deepseek-v3")
    assert model.n_layers == 61
    assert [layer.mlp for layer in model.layers[:4]] == ["dense", "dense", "dense", "moe"]
    assert model.n_moe_layers == 58
    assert (model.n_experts, model.n_experts_per_token, model.n_shared_experts) == (256, 8, 1)
    assert model.attention_type == "mla"
    assert model.native_weight_dtype["experts"] == "fp8"


def test_gpt_oss_ships_mxfp4_experts_and_bf16_elsewhere() -> None:
    dtypes = load_model("gpt-oss-120b").native_weight_dtype
    assert dtypes["experts"] == "fp4"
    assert dtypes["attention"] == dtypes["embedding"] == "bf16"


# -- KV cache -----------------------------------------------------------------------------------

KV_BYTES_PER_TOKEN_16BIT = [
    ("llama-3.1-8b", 32 * 2 * 8 * 128 * 2),  # 131,072 (128 KiB)
    ("llama-3.1-70b", 80 * 2 * 8 * 128 * 2),  # 327,680 (320 KiB)
    ("llama-3.1-405b", 126 * 2 * 8 * 128 * 2),  # 516,096
    ("llama-2-7b", 32 * 2 * 32 * 128 * 2),  # MHA: every head cached
    ("deepseek-v3", 61 * (512 + 64) * 2),  # MLA latent: 70,272
    ("gpt-oss-120b", 36 * 2 * 8 * 64 * 2),
    ("llama-4-scout", 48 * 2 * 8 * 128 * 2),
]


@pytest.mark.parametrize(("model_id", "expected"), KV_BYTES_PER_TOKEN_16BIT)
def test_kv_bytes_per_token_are_exact(model_id: str, expected: int) -> None:
    model = load_model(model_id)
    assert model.kv_bytes_per_token() == expected
    assert model.kv_bytes_per_token(1.0) == expected / 2  # FP8 cache


def test_gpt_oss_sliding_layers_stop_growing_at_128_tokens() -> None:
    model = load_model("gpt-oss-120b")
    per_layer = 2 * 8 * 64 * 2
    assert model.kv_bytes(100) == 36 * per_layer * 100  # below the window: every layer grows
    assert model.kv_bytes(10_000) == 18 * per_layer * 10_000 + 18 * per_layer * 128
    assert model.kv_bytes_per_token_full() == 18 * per_layer


def test_llama_4_chunked_layers_stop_growing_at_8192_tokens() -> None:
    model = load_model("llama-4-scout")
    per_layer = 2 * 8 * 128 * 2
    assert model.kv_bytes(1000) == 48 * per_layer * 1000
    assert model.kv_bytes(100_000) == 12 * per_layer * 100_000 + 36 * per_layer * 8192


@given(context=st.integers(0, 1_000_000), extra=st.integers(0, 1_000_000))
def test_kv_bytes_never_shrink_and_never_exceed_full_attention(context: int, extra: int) -> None:
    for model in (load_model("gpt-oss-20b"), load_model("llama-4-maverick")):
        assert model.kv_bytes(context) <= model.kv_bytes(context + extra)
        assert model.kv_bytes(context) <= model.kv_bytes_per_token() * context
        assert model.kv_bytes(context) >= model.kv_bytes_per_token_full() * context
