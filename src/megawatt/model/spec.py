"""A language model's architecture as data: parsed from a Hugging Face `config.json`, with exact
parameter counts and KV-cache bytes per token derived from it (dense, GQA, MLA, MoE, windows)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from megawatt._files import read_user_text
from megawatt.errors import InputError

_MAX_CONFIG_BYTES = 4 * 1024 * 1024  # a config.json is a few KB

AttentionKind = Literal["full", "sliding", "chunked"]
MlpKind = Literal["dense", "moe"]


@dataclass(frozen=True)
class LayerSpec:
    """One decoder layer: how it attends and which MLP it has.

    `window_tokens` is the attention span of a sliding or chunked layer (tokens attended and
    cached); `None` for full attention.
    """

    attention: AttentionKind
    window_tokens: int | None
    mlp: MlpKind


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of a model, by component (numbers of weights, not bytes)."""

    embedding: int
    lm_head: int
    attention: int  # all layers: projections, biases, norms inside attention, sinks
    dense_mlp: int  # all dense-MLP layers
    routed_experts: int  # all layers, all routed experts
    shared_experts: int  # all layers
    router: int  # all MoE layers
    norms: int  # layer norms and the final norm
    active_routed_experts: int  # routed-expert weights one token touches (top-k per MoE layer)

    @property
    def total(self) -> int:
        """All weights of the model."""
        return (
            self.embedding
            + self.lm_head
            + self.attention
            + self.dense_mlp
            + self.routed_experts
            + self.shared_experts
            + self.router
            + self.norms
        )

    @property
    def active(self) -> int:
        """Weights one token computes with: all but the routed experts it is not sent to and the
        input embedding table (a lookup reads one row). OpenAI (gpt-oss) and DeepSeek count
        active parameters this way."""
        return self.total - self.routed_experts + self.active_routed_experts - self.embedding

    @property
    def active_with_embedding(self) -> int:
        """`active` plus the input embedding table, the convention of Meta (Llama 4) and
        Mistral (Mixtral) model cards."""
        return self.active + self.embedding


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer's architecture (all sizes in elements, not bytes).

    Attention is `gqa` (MHA and MQA are special cases) or `mla` (DeepSeek's multi-head latent
    attention, whose cache holds one compressed latent per token per layer).
    """

    id: str
    name: str
    architecture: str
    hidden_size: int
    vocab_size: int
    tie_word_embeddings: bool
    layers: tuple[LayerSpec, ...]
    attention_type: Literal["gqa", "mla"]
    n_heads: int
    n_kv_heads: int
    head_dim: int
    attention_bias: bool = False  # q/k/v/o biases
    qkv_bias: bool = False  # q/k/v biases only (Qwen2)
    qk_norm: bool = False  # per-head q/k RMSNorm weights (Qwen3)
    attention_sinks: bool = False  # one learned logit per head per layer (gpt-oss)
    q_lora_rank: int | None = None  # MLA
    kv_lora_rank: int = 0  # MLA
    qk_nope_head_dim: int = 0  # MLA
    qk_rope_head_dim: int = 0  # MLA
    v_head_dim: int = 0  # MLA
    intermediate_size: int = 0  # dense MLP width
    n_experts: int = 0  # routed experts per MoE layer
    n_experts_per_token: int = 0  # top-k
    expert_intermediate_size: int = 0
    n_shared_experts: int = 0
    shared_expert_intermediate_size: int = 0
    expert_bias: bool = False  # biases on expert projections and router (gpt-oss)
    max_context_tokens: int = 0
    native_weight_dtype: Mapping[str, str] = field(
        default_factory=dict
    )  # component -> dtype as published
    published_params: Mapping[str, str] = field(default_factory=dict)
    source: str = ""
    notes: str = ""

    # -- structure ---------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        """Number of decoder layers."""
        return len(self.layers)

    @property
    def is_moe(self) -> bool:
        """True when at least one layer has a mixture-of-experts MLP."""
        return any(layer.mlp == "moe" for layer in self.layers)

    @property
    def n_moe_layers(self) -> int:
        """Number of MoE layers."""
        return sum(layer.mlp == "moe" for layer in self.layers)

    @property
    def n_dense_layers(self) -> int:
        """Number of dense-MLP layers."""
        return self.n_layers - self.n_moe_layers

    @property
    def q_dim(self) -> int:
        """Width of the query projection output (heads x per-head query size)."""
        if self.attention_type == "mla":
            return self.n_heads * (self.qk_nope_head_dim + self.qk_rope_head_dim)
        return self.n_heads * self.head_dim

    # -- parameters --------------------------------------------------------------------------
    def attention_params_per_layer(self) -> int:
        """Weights of one layer's attention block, input norm excluded."""
        h = self.hidden_size
        if self.attention_type == "mla":
            qk = self.qk_nope_head_dim + self.qk_rope_head_dim
            if self.q_lora_rank:
                q = h * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * self.n_heads * qk
            else:
                q = h * self.n_heads * qk
            kv_a = h * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank
            kv_b = self.kv_lora_rank * self.n_heads * (self.qk_nope_head_dim + self.v_head_dim)
            o = self.n_heads * self.v_head_dim * h
            return q + kv_a + kv_b + o
        q = h * self.n_heads * self.head_dim
        kv = 2 * h * self.n_kv_heads * self.head_dim
        o = self.n_heads * self.head_dim * h
        n = q + kv + o
        if self.attention_bias or self.qkv_bias:
            n += (self.n_heads + 2 * self.n_kv_heads) * self.head_dim
        if self.attention_bias:
            n += h
        if self.qk_norm:
            n += 2 * self.head_dim
        if self.attention_sinks:
            n += self.n_heads
        return n

    def dense_mlp_params_per_layer(self) -> int:
        """Weights of one gated (SwiGLU) dense MLP."""
        return 3 * self.hidden_size * self.intermediate_size

    def expert_params(self) -> int:
        """Weights of one routed expert (gated MLP, with biases where the model has them)."""
        n = 3 * self.hidden_size * self.expert_intermediate_size
        if self.expert_bias:
            n += 2 * self.expert_intermediate_size + self.hidden_size
        return n

    def shared_expert_params_per_layer(self) -> int:
        """Weights of the shared (always-on) experts of one MoE layer."""
        return self.n_shared_experts * 3 * self.hidden_size * self.shared_expert_intermediate_size

    def router_params_per_layer(self) -> int:
        """Weights of one MoE layer's router."""
        return self.hidden_size * self.n_experts + (self.n_experts if self.expert_bias else 0)

    def param_counts(self) -> ParamCounts:
        """Exact parameter counts by component, computed from the architecture."""
        h = self.hidden_size
        n_moe = self.n_moe_layers
        return ParamCounts(
            embedding=self.vocab_size * h,
            lm_head=0 if self.tie_word_embeddings else self.vocab_size * h,
            attention=self.n_layers * self.attention_params_per_layer(),
            dense_mlp=self.n_dense_layers * self.dense_mlp_params_per_layer(),
            routed_experts=n_moe * self.n_experts * self.expert_params(),
            shared_experts=n_moe * self.shared_expert_params_per_layer(),
            router=n_moe * self.router_params_per_layer(),
            norms=2 * self.n_layers * h + h,
            active_routed_experts=n_moe * self.n_experts_per_token * self.expert_params(),
        )

    # -- KV cache ----------------------------------------------------------------------------
    def kv_elements_per_token_per_layer(self) -> int:
        """Cached elements per token per layer: K and V heads (GQA) or the MLA latent."""
        if self.attention_type == "mla":
            return self.kv_lora_rank + self.qk_rope_head_dim
        return 2 * self.n_kv_heads * self.head_dim

    def kv_bytes_per_token(self, bytes_per_element: float = 2.0) -> float:
        """KV-cache bytes per token summed over all layers, as if every layer cached every token.

        This is the cost of a token on full-attention layers; windowed layers stop growing once
        the context exceeds their window (see `kv_bytes`).
        """
        return self.n_layers * self.kv_elements_per_token_per_layer() * bytes_per_element

    def kv_bytes_per_token_full(self, bytes_per_element: float = 2.0) -> float:
        """KV bytes per token of the full-attention layers only (they grow with context)."""
        n_full = sum(layer.window_tokens is None for layer in self.layers)
        return n_full * self.kv_elements_per_token_per_layer() * bytes_per_element

    def windowed_layers(self) -> tuple[int, ...]:
        """Window sizes (tokens) of the sliding/chunked layers, one entry per such layer."""
        return tuple(layer.window_tokens for layer in self.layers if layer.window_tokens)

    def kv_bytes(self, context_tokens: float, bytes_per_element: float = 2.0) -> float:
        """KV-cache bytes of one sequence of `context_tokens` tokens (windows respected)."""
        per_layer = self.kv_elements_per_token_per_layer() * bytes_per_element
        full = self.kv_bytes_per_token_full(bytes_per_element) * context_tokens
        windowed = sum(min(context_tokens, w) for w in self.windowed_layers()) * per_layer
        return full + windowed


# ---------------------------------------------------------------------------------------------
# Parsing Hugging Face config.json
# ---------------------------------------------------------------------------------------------


def _need(cfg: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in cfg or cfg[key] is None:
        raise InputError(
            f"{where}: config.json field '{key}' is required for this architecture but missing. "
            "Add it from the model's Hugging Face config.json."
        )
    return cfg[key]


_MAX_FIELD = 2**31 - 1  # no size, count or length of a real model comes near


def _positive_int(cfg: Mapping[str, Any], key: str, where: str) -> int:
    value = _need(cfg, key, where)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= _MAX_FIELD:
        raise InputError(
            f"{where}: config.json field '{key}' must be a positive integer up to {_MAX_FIELD:,}; "
            f"got {value!r}."
        )
    return value


def _whole(
    cfg: Mapping[str, Any], key: str, where: str, default: int, minimum: int = 0
) -> int:
    """An optional whole-number field (`default` when absent or null), at least `minimum`."""
    value = cfg.get(key)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer() and abs(value) <= _MAX_FIELD:
        value = int(value)
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or not minimum <= value <= _MAX_FIELD
    ):
        raise InputError(
            f"{where}: config.json field '{key}' must be a whole number from {minimum} to "
            f"{_MAX_FIELD:,}; got {value!r}."
        )
    return value


def _int_list(
    cfg: Mapping[str, Any], key: str, where: str, length: int | None = None
) -> list[int]:
    """An optional list of whole numbers ([] when absent), of `length` items when given."""
    value = cfg.get(key)
    if value is None:
        return []
    if (
        not isinstance(value, list)
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        or (length is not None and value and len(value) != length)
    ):
        size = f" of {length} " if length is not None else " of "
        raise InputError(
            f"{where}: config.json field '{key}' must be a list{size}whole numbers; got "
            f"{str(value)[:60]}."
        )
    return value


def _mapping(cfg: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = cfg.get(key) or {}
    if not isinstance(value, Mapping):
        raise InputError(
            f"{where}: config.json field '{key}' must be an object; got {type(value).__name__}."
        )
    return value


def _layer_pattern(
    cfg: Mapping[str, Any], n_layers: int, where: str
) -> list[tuple[str, int | None]]:
    """Attention kind and window of each layer, from the fields each family uses."""
    layer_types = cfg.get("layer_types")
    if layer_types:
        if not isinstance(layer_types, list):
            raise InputError(
                f"{where}: config.json field 'layer_types' must be a list of layer kinds; got "
                f"{type(layer_types).__name__}."
            )
        if len(layer_types) != n_layers:
            raise InputError(
                f"{where}: layer_types has {len(layer_types)} entries but "
                f"num_hidden_layers is {n_layers}; they must agree."
            )
        window = cfg.get("sliding_window")
        out: list[tuple[str, int | None]] = []
        for kind in layer_types:
            if kind == "sliding_attention":
                out.append(("sliding", _positive_int(cfg, "sliding_window", where)))
            elif kind in ("full_attention", "attention"):
                out.append(("full", None))
            elif kind == "chunked_attention":
                out.append(("chunked", _positive_int(cfg, "attention_chunk_size", where)))
            else:
                raise InputError(
                    f"{where}: layer_types entry {kind!r} is not one of "
                    "sliding_attention, full_attention, chunked_attention."
                )
        del window
        return out
    chunk = cfg.get("attention_chunk_size")
    if chunk:
        # Llama 4 (iRoPE): every `no_rope_layer_interval`-th layer is global NoPE attention,
        # the rest attend within chunks (Meta reference code; transformers default interval 4).
        chunk = _positive_int(cfg, "attention_chunk_size", where)
        interval = _whole(cfg, "no_rope_layer_interval", where, 4, 1)
        no_rope = _int_list(cfg, "no_rope_layers", where, n_layers)
        out = []
        for i in range(n_layers):
            is_global = (no_rope[i] == 0) if no_rope else ((i + 1) % interval == 0)
            out.append(("full", None) if is_global else ("chunked", chunk))
        return out
    window = cfg.get("sliding_window")
    uses_window = cfg.get("use_sliding_window", window is not None)
    if window and uses_window:
        window = _positive_int(cfg, "sliding_window", where)
        max_window_layers = _whole(cfg, "max_window_layers", where, n_layers)
        # Qwen2-style: layers below max_window_layers use full attention; Mistral: all slide.
        if "max_window_layers" in cfg:
            return [
                ("full", None) if i < max_window_layers else ("sliding", window)
                for i in range(n_layers)
            ]
        return [("sliding", window)] * n_layers
    return [("full", None)] * n_layers


def _moe_layout(cfg: Mapping[str, Any], n_layers: int, where: str) -> dict[str, Any]:
    """Which layers are MoE, expert counts and sizes, per family."""
    n_experts = next(
        (
            _whole(cfg, key, where, 0)
            for key in ("n_routed_experts", "num_local_experts", "num_experts")
            if cfg.get(key)
        ),
        0,
    )
    if not n_experts:
        return {"moe_layers": [False] * n_layers}
    top_k = _positive_int(cfg, "num_experts_per_tok", where)
    if top_k > n_experts:
        raise InputError(
            f"{where}: config.json field 'num_experts_per_tok' ({top_k}) must be at most the "
            f"number of routed experts ({n_experts})."
        )
    if "first_k_dense_replace" in cfg or "n_routed_experts" in cfg:  # DeepSeek-V2/V3
        first_dense = _whole(cfg, "first_k_dense_replace", where, 0)
        freq = _whole(cfg, "moe_layer_freq", where, 1, 1)
        moe_layers = [i >= first_dense and i % freq == 0 for i in range(n_layers)]
        expert_size = _positive_int(cfg, "moe_intermediate_size", where)
        n_shared = _whole(cfg, "n_shared_experts", where, 0)
        return {
            "moe_layers": moe_layers,
            "n_experts": n_experts,
            "top_k": top_k,
            "expert_size": expert_size,
            "n_shared": n_shared,
            "shared_size": expert_size,
        }
    if "interleave_moe_layer_step" in cfg:  # Llama 4
        step = _whole(cfg, "interleave_moe_layer_step", where, 1, 1)
        moe_layers = [(i + 1) % step == 0 for i in range(n_layers)]
        size = _positive_int(cfg, "intermediate_size", where)
        return {
            "moe_layers": moe_layers,
            "n_experts": n_experts,
            "top_k": top_k,
            "expert_size": size,
            "n_shared": 1,
            "shared_size": size,
            "dense_size": _whole(cfg, "intermediate_size_mlp", where, 0) or size,
        }
    if "decoder_sparse_step" in cfg or "moe_intermediate_size" in cfg:  # Qwen2/3-MoE
        step = _whole(cfg, "decoder_sparse_step", where, 1, 1)
        mlp_only = set(_int_list(cfg, "mlp_only_layers", where))
        moe_layers = [i not in mlp_only and (i + 1) % step == 0 for i in range(n_layers)]
        expert_size = _positive_int(cfg, "moe_intermediate_size", where)
        shared_size = _whole(cfg, "shared_expert_intermediate_size", where, 0)
        return {
            "moe_layers": moe_layers,
            "n_experts": n_experts,
            "top_k": top_k,
            "expert_size": expert_size,
            "n_shared": 1 if shared_size else 0,
            "shared_size": shared_size,
        }
    size = _positive_int(cfg, "intermediate_size", where)  # Mixtral, gpt-oss
    return {
        "moe_layers": [True] * n_layers,
        "n_experts": n_experts,
        "top_k": top_k,
        "expert_size": size,
        "n_shared": 0,
        "shared_size": 0,
    }


def _native_dtypes(cfg: Mapping[str, Any], outer: Mapping[str, Any]) -> dict[str, str]:
    """Published weight formats by component, from `quantization_config` and `torch_dtype`."""
    base = str(outer.get("torch_dtype") or cfg.get("torch_dtype") or "bfloat16")
    base_dtype = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(base, "bf16")
    out = {
        "attention": base_dtype,
        "mlp": base_dtype,
        "experts": base_dtype,
        "embedding": base_dtype,
    }
    quant = outer.get("quantization_config") or cfg.get("quantization_config") or {}
    if not isinstance(quant, Mapping):
        quant = {}
    method = str(quant.get("quant_method", "")).lower()
    if method == "mxfp4":  # gpt-oss: MXFP4 experts, everything else BF16
        out["experts"] = "fp4"
    elif method == "fp8":  # DeepSeek-V3/R1: block-scaled e4m3 linear layers
        out.update(attention="fp8", mlp="fp8", experts="fp8")
    return out


def model_from_config(
    config: Mapping[str, Any], model_id: str, *, where: str | None = None
) -> ModelSpec:
    """Build a `ModelSpec` from a Hugging Face `config.json` mapping.

    Multimodal wrappers (Llama 4) are read through their `text_config`. Keys starting with `_`
    (`_source`, `_published_params`, `_notes`) are megawatt's own annotations.
    """
    where = where or model_id
    cfg: Mapping[str, Any] = config.get("text_config") or config
    if not isinstance(cfg, Mapping):
        raise InputError(
            f"{where}: config.json field 'text_config' must be an object; got "
            f"{type(cfg).__name__}."
        )
    n_layers = _positive_int(cfg, "num_hidden_layers", where)
    hidden = _positive_int(cfg, "hidden_size", where)
    n_heads = _positive_int(cfg, "num_attention_heads", where)
    n_kv = _whole(cfg, "num_key_value_heads", where, n_heads, 1)
    if n_heads % n_kv:
        raise InputError(
            f"{where}: config.json field 'num_key_value_heads' ({n_kv}) must divide "
            f"num_attention_heads ({n_heads}): each KV head serves a whole group of heads."
        )
    head_dim = _whole(cfg, "head_dim", where, hidden // n_heads, 1)
    if head_dim < 1:
        raise InputError(
            f"{where}: config.json has no 'head_dim' and hidden_size // num_attention_heads = "
            f"{hidden} // {n_heads} is 0; give head_dim or fix those fields."
        )
    architectures = config.get("architectures") or cfg.get("architectures") or ["unknown"]
    arch = str(architectures[0] if isinstance(architectures, list) else architectures)
    model_type = str(cfg.get("model_type") or config.get("model_type") or "")
    pattern = _layer_pattern(cfg, n_layers, where)
    moe = _moe_layout(cfg, n_layers, where)
    dense_size = int(moe.get("dense_size") or _whole(cfg, "intermediate_size", where, 0))
    layers = tuple(
        LayerSpec(attention=kind, window_tokens=window, mlp="moe" if is_moe else "dense")  # type: ignore[arg-type]
        for (kind, window), is_moe in zip(pattern, moe["moe_layers"], strict=True)
    )
    if any(layer.mlp == "dense" for layer in layers) and dense_size <= 0:
        raise InputError(
            f"{where}: config.json field 'intermediate_size' must be a positive "
            "integer for dense MLP layers."
        )
    is_mla = bool(cfg.get("kv_lora_rank"))
    is_gpt_oss = model_type == "gpt_oss"
    return ModelSpec(
        id=model_id,
        name=str(config.get("_name", model_id)),
        architecture=arch,
        hidden_size=hidden,
        vocab_size=_positive_int(cfg, "vocab_size", where),
        tie_word_embeddings=bool(
            cfg.get("tie_word_embeddings", config.get("tie_word_embeddings", False))
        ),
        layers=layers,
        attention_type="mla" if is_mla else "gqa",
        n_heads=n_heads,
        n_kv_heads=n_kv,
        head_dim=head_dim,
        attention_bias=bool(cfg.get("attention_bias", False)),
        qkv_bias=model_type == "qwen2",
        qk_norm=model_type in ("qwen3", "qwen3_moe"),
        attention_sinks=is_gpt_oss,
        q_lora_rank=(_whole(cfg, "q_lora_rank", where, 0) or None) if is_mla else None,
        kv_lora_rank=_whole(cfg, "kv_lora_rank", where, 0),
        qk_nope_head_dim=_whole(cfg, "qk_nope_head_dim", where, 0),
        qk_rope_head_dim=_whole(cfg, "qk_rope_head_dim", where, 0),
        v_head_dim=_whole(cfg, "v_head_dim", where, 0),
        intermediate_size=dense_size,
        n_experts=int(moe.get("n_experts", 0)),
        n_experts_per_token=int(moe.get("top_k", 0)),
        expert_intermediate_size=int(moe.get("expert_size", 0)),
        n_shared_experts=int(moe.get("n_shared", 0)),
        shared_expert_intermediate_size=int(moe.get("shared_size", 0)),
        expert_bias=is_gpt_oss,
        max_context_tokens=_whole(cfg, "max_position_embeddings", where, 0),
        native_weight_dtype=_native_dtypes(cfg, config),
        published_params=dict(_mapping(config, "_published_params", where)),
        source=str(config.get("_source", "")),
        notes=str(config.get("_notes", "")),
    )


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def load_model_file(path: str | os.PathLike[str], model_id: str | None = None) -> ModelSpec:
    """Load a model from a Hugging Face `config.json` file on disk."""
    p = Path(path)
    text = read_user_text(p, "model file", limit=_MAX_CONFIG_BYTES)
    try:
        config = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{p} line {exc.lineno}, column {exc.colno}: not valid JSON ({exc.msg}). Pass a "
            "Hugging Face config.json."
        ) from None
    except ValueError as exc:  # NaN or Infinity
        raise InputError(f"{p}: not valid JSON ({exc}). Write a finite number.") from None
    except RecursionError:
        raise InputError(f"{p}: not valid JSON (nested too deeply). Pass a config.json.") from None
    if not isinstance(config, dict):
        raise InputError(
            f"{p}: a config.json must hold a JSON object; got {type(config).__name__}."
        )
    return model_from_config(config, model_id or p.stem, where=str(p))

