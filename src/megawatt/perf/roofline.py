"""How long one engine step takes: the per-operator roofline of ARCHITECTURE.md behind the
`StepModel` seam that the serving simulator calls.

A step is one forward pass over a batch of decode sequences and prefill chunks. Its time is the
sum over operators of max(FLOPs / (peak x eff), bytes / (bandwidth x eff)), plus communication
of the parallel plan, plus a per-step engine overhead. Every operator's FLOPs and bytes are
linear in a few batch aggregates (the *features*), so a step costs one small matrix product and
many decode steps can be timed at once, vectorised.

Wafers build the same arrays from their mesh layout (perf/wafer.py): each operator on its
layer's core region, decode GEMVs and prefill GEMMs as separate rows (prefill rows carry
`prefill_tokens` features), MeshGEMV reductions, fixed cycles and wafer hand-offs as latency.

Pipelines (GPU pipeline parallelism, or a wafer whose layers sit in separate core regions)
keep m = min(units, stages) micro-batches in flight, where a unit is a decode sequence or
`PREFILL_UNIT_TOKENS` tokens of a prompt (causal attention lets a prompt's chunks follow one
another through the stages): every sequence advances in the time one micro-batch of 1/m of the
batch takes to traverse every layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from megawatt.model import ModelSpec
from megawatt.perf.breakdown import OperatorTime, StepBreakdown
from megawatt.perf.deployment import Deployment
from megawatt.perf.memory import MemoryPlan, plan_memory
from megawatt.perf.wafer import WaferLayout, wafer_layout

FloatArray = NDArray[np.float64]

# Feature vector: per-step aggregates every operator is linear in.
FEATURES = (
    "one",  # 1 per pass
    "tokens",  # tokens in the step: decode sequences + prefill chunk tokens
    "logits",  # sequences sampling a token this step
    "decode_context",  # sum over decode sequences of their cached context
    "decode_window",  # sum over decode sequences of min(context, window)
    "prefill_attention",  # sum over chunks of chunk x (cached + (chunk + 1) / 2)
    "prefill_window",  # the same with the attended span capped at the window
    "experts_touched",  # expected distinct routed experts per MoE layer
    "prefill_tokens",  # prefill chunk tokens (KV writes)
    "prefill_max_tokens",  # tokens of the step's largest prefill chunk
    "prefill_max_attention",  # its chunk x (cached + (chunk + 1) / 2)
    "prefill_max_window",  # the same with the attended span capped at the window
)
N_FEATURES = len(FEATURES)
(
    F_ONE, F_TOKENS, F_LOGITS, F_DECODE_CONTEXT, F_DECODE_WINDOW, F_PREFILL_ATTENTION,
    F_PREFILL_WINDOW, F_EXPERTS, F_PREFILL_TOKENS, F_PREFILL_MAX_TOKENS, F_PREFILL_MAX_ATTENTION,
    F_PREFILL_MAX_WINDOW,
) = range(N_FEATURES)
"""Each feature's row in a feature vector (both engines index features by these names)."""

PREFILL_UNIT_TOKENS = 256
"""Prompt tokens per pipeline micro-batch when a prompt streams through pipeline stages
(estimate: a few hundred tokens keep GEMMs efficient while filling the pipeline)."""

FALLBACK_SCALEOUT_BANDWIDTH_BYTES_PER_S = 5e10
"""Scale-out bandwidth per device when neither the system nor the device names one (Groq, SambaNova
and Qualcomm systems in the catalog): 400 Gb/s = 50 GB/s, one 400 Gb/s NIC per accelerator, the
DGX/HGX norm (specs.csv h100-sxm notes: MLPerf system descriptions, 8x 400Gb InfiniBand per 8-GPU
node). ESTIMATE for the accelerators it stands in for: their scale-out links are not published in
the sources."""

FALLBACK_TP_LINK_BANDWIDTH_BYTES_PER_S = 1e10
"""Link for tensor-parallel all-reduces between devices with no scale-up link and no scale-out
bandwidth of their own (the same Groq, SambaNova and Qualcomm entries): 10 GB/s (80 Gb/s).
ESTIMATE, not sourced: a PCIe-class host path, slower than the 50 GB/s scale-out fallback."""


@dataclass(frozen=True)
class BatchShape:
    """The aggregates of one step's batch that its time depends on (tokens, contexts).

    Build it with `BatchShape.of(decode_contexts, prefill_chunks, window)`.
    """

    n_decode: int = 0
    decode_context: float = 0.0
    decode_window: float = 0.0
    decode_context_max: float = 0.0
    n_prefill: int = 0
    prefill_tokens: int = 0
    prefill_attention: float = 0.0
    prefill_window: float = 0.0
    n_logits: int = 0
    prefill_max_tokens: int = 0  # the largest prefill chunk: its tokens,
    prefill_max_attention: float = 0.0  # its attention pairs,
    prefill_max_window: float = 0.0  # and those within the window

    @property
    def n_seqs(self) -> int:
        """Sequences in the step."""
        return self.n_decode + self.n_prefill

    @property
    def eager(self) -> bool:
        """Whether the step carries a prompt chunk of more than one token: engines replay
        CUDA graphs for decode-shaped steps only (a one-token chunk, e.g. a prompt whose KV
        arrived from a prefill worker, is decode-shaped), the rest run eagerly."""
        return self.prefill_max_tokens > 1

    @property
    def tokens(self) -> int:
        """Tokens processed in the step."""
        return self.n_decode + self.prefill_tokens

    @property
    def pipeline_units(self) -> float:
        """Independent pieces of work a pipeline can overlap: decode sequences plus prompt
        pieces of `PREFILL_UNIT_TOKENS` tokens (at least one per prompt)."""
        return self.n_decode + max(float(self.n_prefill), self.prefill_tokens / PREFILL_UNIT_TOKENS)

    @staticmethod
    def of(
        decode_contexts: list[int] | FloatArray = (),  # type: ignore[assignment]
        prefill_chunks: list[tuple[int, int]] = (),  # type: ignore[assignment]
        window: int | None = None,
        n_logits: int | None = None,
    ) -> BatchShape:
        """From decode contexts (tokens already cached per sequence) and prefill chunks
        `(chunk_tokens, cached_tokens)`; `n_logits` defaults to every decode plus every chunk."""
        ctx = np.asarray(decode_contexts, dtype=np.float64)
        p_att = p_win = 0.0
        p_tok = 0
        big: tuple[int, float, float] = (0, 0.0, 0.0)
        for chunk, cached in prefill_chunks:
            span = cached + (chunk + 1) / 2.0
            att, win = chunk * span, chunk * min(span, window) if window else 0.0
            p_att += att
            p_win += win
            p_tok += chunk
            if chunk > big[0]:
                big = (chunk, att, win)
        return BatchShape(
            n_decode=len(ctx),
            decode_context=float(ctx.sum()),
            decode_window=float(np.minimum(ctx, window).sum()) if window else 0.0,
            decode_context_max=float(ctx.max()) if len(ctx) else 0.0,
            n_prefill=len(prefill_chunks),
            prefill_tokens=p_tok,
            prefill_attention=p_att,
            prefill_window=p_win,
            n_logits=len(ctx) + len(prefill_chunks) if n_logits is None else n_logits,
            prefill_max_tokens=big[0],
            prefill_max_attention=big[1],
            prefill_max_window=big[2],
        )


@dataclass(frozen=True)
class StepCoefficients:
    """Everything a `RooflineStepModel` step time depends on, as plain arrays, to evaluate step
    times outside Python (the compiled serving simulator). Per operator j (rows of `flops` and
    `bytes`, columns in `FEATURES` order): time_j = max(flops_j @ x / rate_j, bytes_j @ x /
    bandwidth_j); a step is sum_j time_j + comm @ x + latency_s + step_overhead_s +
    seq_overhead_s x sequences (+ prefill_overhead_s when it is `BatchShape.eager`), with x the
    features of the slowest of the pipeline's micro-batches (see `RooflineStepModel._features`).
    """

    flops: FloatArray  # (operators x N_FEATURES) FLOPs per unit of each feature
    bytes: FloatArray  # (operators x N_FEATURES) bytes moved per unit of each feature
    rate_flops_per_s: FloatArray  # (operators,) effective compute rate
    bandwidth_bytes_per_s: FloatArray  # (operators,) effective memory bandwidth
    comm_s: FloatArray  # (N_FEATURES,) communication seconds per unit of each feature
    latency_s: float  # fabric latency per step
    step_overhead_s: float  # engine overhead per step
    seq_overhead_s: float  # engine overhead per sequence in the step
    pipeline_depth: int  # stages a micro-batch traverses (pp; layers on a wafer)
    window_tokens: int | None  # attention window of windowed layers (None: none)
    n_experts: int  # routed experts per MoE layer (0: dense)
    top_k: int  # routed experts per token
    prefill_unit_tokens: int = PREFILL_UNIT_TOKENS
    prefill_overhead_s: float = 0.0  # extra for a step with prompt chunks (run eagerly)
    # Speculative decoding (`perf.speculative.SpeculativeStepModel`; 0 drafted tokens: none):
    spec_draft_tokens: int = 0
    spec_tokens_per_step: float = 1.0
    spec_draft_cost: float = 0.0
    spec_pipelined: bool = False


class StepModel(Protocol):
    """The seam between serving and performance: how long a step of a given batch takes."""

    @property
    def window_tokens(self) -> int | None:
        """Attention window of the model's windowed layers (None when it has none)."""

    def step_time(self, batch: BatchShape) -> float:
        """Seconds one engine step over `batch` takes."""

    def decode_times(self, contexts: FloatArray, n_steps: int) -> FloatArray:
        """Seconds of each of `n_steps` consecutive pure-decode steps of sequences whose cached
        contexts start at `contexts` and grow by one token per step."""


def _row(coefficients: dict[int, float]) -> list[float]:
    """A feature-coefficient row from {feature index: coefficient}."""
    row = [0.0] * N_FEATURES
    for k, v in coefficients.items():
        row[k] += v
    return row


def _attention_flops_per_context(m: ModelSpec) -> tuple[float, float]:
    """FLOPs per layer of one token attending to one cached token (QK^T and PV), in decode and
    in prefill. MLA decodes in absorbed form over the latent and prefills in the plain
    multi-head form (keys and values up-projected once per token, inside the projections):
    DeepSeek-V2 (arXiv:2405.04434) section 2.1.3; FlashMLA and vLLM's MLA backend absorb for
    decode only."""
    if m.attention_type == "mla":
        return (
            2.0 * m.n_heads * (2 * m.kv_lora_rank + m.qk_rope_head_dim),
            2.0 * m.n_heads * (m.qk_nope_head_dim + m.qk_rope_head_dim + m.v_head_dim),
        )
    per_ctx = 4.0 * m.n_heads * m.head_dim
    return per_ctx, per_ctx


def _largest_chunk(batch: BatchShape) -> tuple[FloatArray, FloatArray, FloatArray]:
    return (
        np.array([float(batch.prefill_max_tokens)]),
        np.array([batch.prefill_max_attention]),
        np.array([batch.prefill_max_window]),
    )


def _arrays(*columns: list[list[float]] | list[float]) -> tuple[np.ndarray, ...]:
    """The operator rows' lists as float64 arrays."""
    return tuple(np.array(c, dtype=np.float64) for c in columns)


class _Operators:
    """A GPU replica's operator rows (name, per-feature FLOPs and bytes, compute rate, memory
    bandwidth), and how a per-token cost splits over its tp devices."""

    def __init__(self, dep: Deployment) -> None:
        self.dep = dep
        self.tp = dep.tp
        self.bw = dep.device.mem_bandwidth_bytes_per_s * dep.eff.memory
        self.names: list[str] = []
        self.flops: list[list[float]] = []
        self.nbytes: list[list[float]] = []
        self.rates: list[float] = []
        self.bws: list[float] = []

    def add(self, name: str, f: dict[int, float], b: dict[int, float], rate: float) -> None:
        self.names.append(name)
        self.flops.append(_row(f))
        self.nbytes.append(_row(b))
        self.rates.append(rate)
        self.bws.append(self.bw)

    def per_rank(self, total: float, data_parallel: bool) -> dict[int, float]:
        """A per-token cost split over the tp devices: evenly for tensor-parallel work; for
        data-parallel work evenly too, but the largest prefill chunk all on one rank.

        With attention data parallelism every device reads all the attention weights for its
        1/tp of the sequences. Decode tokens and small prompts spread evenly over the ranks,
        but a prompt is prefilled by the one rank that owns its sequence while the others wait
        for it at the next expert all-to-all: the busiest rank does the step's largest chunk
        plus its share of the rest (exact for one prompt per step)."""
        if data_parallel:
            return {F_TOKENS: total / self.tp, F_PREFILL_MAX_TOKENS: total * (1.0 - 1.0 / self.tp)}
        return {F_TOKENS: total / self.tp}


def _attention_operators(dep: Deployment, ops: _Operators) -> None:
    """Attention projections, and attention over the cache (full and windowed layers)."""
    m, eff, tp, dp = dep.model, dep.eff, dep.tp, dep.attention_dp
    h, n_layers = m.hidden_size, m.n_layers
    n_win = len(m.windowed_layers())
    n_full = n_layers - n_win
    act = dep.activation_bytes
    attn_rate = dep.device.peak_flops_for("bf16") * eff.attention
    # Attention projections (Q, K, V, O; MLA down/up projections), all layers.
    p_attn = m.attention_params_per_layer()
    attn_weight_shards = 1 if dp else tp
    ops.add(
        "attention projections",
        ops.per_rank(2.0 * p_attn * n_layers, dp),
        {
            F_ONE: p_attn * dep.weight_bytes_per_param("attention") * n_layers / attn_weight_shards,
            **ops.per_rank(2.0 * h * act * n_layers, dp),
        },
        dep.peak_flops_of("attention") * eff.compute,
    )
    # Attention over the cache: QK^T and PV.
    flops_per_ctx, prefill_per_ctx = _attention_flops_per_context(m)
    kv_shards = 1.0 if m.attention_type == "mla" else float(min(tp, m.n_kv_heads))
    if dp:
        kv_shards = float(tp)  # each device reads only its own sequences' cache
    kv_layer_bytes = m.kv_elements_per_token_per_layer() * dep.kv_bytes_per_element

    def prefill_rows(per_pair: float, per_token: float, pairs: int, biggest: int) -> tuple[
        dict[int, float], dict[int, float]
    ]:
        """FLOPs and KV-write bytes of prefill attention: split over the tp devices (heads),
        or with data-parallel attention evenly but for the largest chunk, on its own rank."""
        if dp:
            share = 1.0 - 1.0 / tp
            return (
                {pairs: per_pair / tp, biggest: per_pair * share},
                {F_PREFILL_TOKENS: per_token / tp, F_PREFILL_MAX_TOKENS: per_token * share},
            )
        return {pairs: per_pair / tp}, {F_PREFILL_TOKENS: per_token / kv_shards}

    for n, kind, dfeat, pfeat, pmax in (
        (n_full, "attention", F_DECODE_CONTEXT, F_PREFILL_ATTENTION, F_PREFILL_MAX_ATTENTION),
        (n_win, "windowed attention", F_DECODE_WINDOW, F_PREFILL_WINDOW, F_PREFILL_MAX_WINDOW),
    ):
        if not n:
            continue
        ops.add(
            f"{kind} (decode)",
            {dfeat: flops_per_ctx * n / tp},
            {dfeat: kv_layer_bytes * n / kv_shards},
            attn_rate,
        )
        ops.add(
            f"{kind} (prefill)",
            *prefill_rows(prefill_per_ctx * n, kv_layer_bytes * n, pfeat, pmax),
            attn_rate,
        )


def _mlp_operators(dep: Deployment, ops: _Operators) -> None:
    """Dense MLPs, routed and shared experts, the router, the LM head and elementwise work."""
    m, eff, tp, dp = dep.model, dep.eff, dep.tp, dep.attention_dp
    h, n_layers, act, lin = m.hidden_size, m.n_layers, dep.activation_bytes, eff.compute
    dev = dep.device
    # MLPs. Wide EP runs every part but the routed experts data-parallel: each device
    # does 1/tp of the tokens' work but reads every weight.
    wide = dep.wide_ep
    dense_shards = 1 if wide else tp
    if m.n_dense_layers:
        p = m.dense_mlp_params_per_layer() * m.n_dense_layers
        ops.add(
            "dense MLP",
            ops.per_rank(2.0 * p, wide),
            {F_ONE: p * dep.weight_bytes_per_param("mlp") / dense_shards},
            dep.peak_flops_of("mlp") * lin,
        )
    if m.n_moe_layers:
        n_moe = m.n_moe_layers
        shards = dep.ep if dep.ep > 1 else tp
        p_exp = m.expert_params()
        ops.add(
            "routed experts",
            {F_TOKENS: 2.0 * m.n_experts_per_token * p_exp * n_moe / tp},
            {F_EXPERTS: p_exp * dep.weight_bytes_per_param("experts") * n_moe / shards},
            dep.peak_flops_of("experts") * (eff.experts or lin),
        )
        if m.n_shared_experts:
            p = m.shared_expert_params_per_layer() * n_moe
            ops.add(
                "shared experts",
                ops.per_rank(2.0 * p, wide),
                {F_ONE: p * dep.weight_bytes_per_param("mlp") / dense_shards},
                dep.peak_flops_of("mlp") * lin,
            )
        p = m.router_params_per_layer() * n_moe
        ops.add(
            "router",
            ops.per_rank(2.0 * p, True) if dp else {F_TOKENS: 2.0 * p},
            {F_ONE: 2.0 * p},
            dev.peak_flops_for("bf16") * lin,
        )
    # LM head on the sampled positions only; elementwise work (norms, residuals, RoPE).
    p_head = m.vocab_size * h
    ops.add(
        "LM head",
        {F_LOGITS: 2.0 * p_head / tp},
        {F_ONE: p_head * dep.weight_bytes_per_param("embedding") / dense_shards},
        dep.peak_flops_of("embedding") * lin,
    )
    # Norms, residuals, RoPE: on every device of a tensor group, on its own sequences'
    # tokens only with data-parallel attention.
    ops.add(
        "elementwise",
        {F_TOKENS: 0.0},
        ops.per_rank(4.0 * h * act * n_layers, True) if dp else {F_TOKENS: 4.0 * h * act * n_layers},
        dev.peak_flops_for("bf16") * eff.attention,
    )


def _gpu_communication(dep: Deployment) -> tuple[list[float], float]:
    """Communication per pass (seconds, linear in features) and fabric latency of a GPU replica:
    tensor-parallel all-reduces, expert dispatch and combine, pipeline hand-offs."""
    m, eff, dev, tp = dep.model, dep.eff, dep.device, dep.tp
    h, n_layers, act, wide = m.hidden_size, m.n_layers, dep.activation_bytes, dep.wide_ep
    # Communication per pass (seconds, linear in features) and fabric latency.
    comm = [0.0] * N_FEATURES
    latency = 0.0
    sysm = dep.system
    link = (
        sysm.scaleup_bandwidth_bytes_per_s or dev.scaleup_bandwidth_bytes_per_s or 0.0
    ) * eff.link
    lat = sysm.scaleup_latency_s
    out_link = (
        sysm.scaleout_bandwidth_bytes_per_s
        or dev.scaleout_bandwidth_bytes_per_s
        or FALLBACK_SCALEOUT_BANDWIDTH_BYTES_PER_S
    ) * eff.link
    domain = sysm.n_devices
    if tp > 1:
        if link <= 0:
            link = (
                dev.scaleout_bandwidth_bytes_per_s or FALLBACK_TP_LINK_BANDWIDTH_BYTES_PER_S
            ) * eff.link
        tp_link, tp_lat = link, lat
        if tp > domain:  # wide EP: the all-reduces cross the scale-out network
            tp_link, tp_lat = min(link, out_link), max(lat, sysm.scaleout_latency_s)
        n_allreduce = 2 * n_layers
        if dep.ep > 1:
            n_allreduce -= m.n_moe_layers
        if dep.attention_dp:
            n_allreduce -= n_layers  # no reduction after data-parallel attention
        if wide:
            n_allreduce = 0  # dense MLPs data-parallel too
        ring = 2.0 * (tp - 1) / tp
        comm[F_TOKENS] += n_allreduce * ring * h * act / tp_link
        # Bandwidth of a ring, latency of a tree: collective libraries switch to tree or
        # one-shot algorithms for the small messages of decode steps, 2 log2(tp) hops.
        latency += n_allreduce * 2 * math.ceil(math.log2(tp)) * tp_lat
    if dep.ep > 1 and m.n_moe_layers:
        # Dispatch and combine: each token's activation goes to its top-k experts, most of
        # them on other devices; every device sends for its 1/ep of the tokens. Experts in
        # the same scale-up domain are reached over its links, the rest over the scale-out
        # network, both at once (DeepEP-style kernels): the slower share sets the time.
        # Experts with 8-bit math take their input already quantised: dispatch in FP8,
        # combine in BF16 (DeepSeek-V3 technical report, arXiv:2412.19437, section 3.3).
        expert_math = dep.compute_dtype_of("experts")
        dispatch = 1.0 if expert_math in ("fp8", "fp4") else act
        near = min(dep.ep, domain)
        per_expert = m.n_moe_layers * m.n_experts_per_token * h * (dispatch + act) / dep.ep
        comm[F_TOKENS] += per_expert * max(
            (near - 1) / dep.ep / max(link, 1.0), (dep.ep - near) / dep.ep / out_link
        )
        latency += m.n_moe_layers * 2 * (lat if dep.ep <= domain else sysm.scaleout_latency_s)
    if dep.pp > 1:
        inside = dep.n_devices <= sysm.n_devices
        hop_bw = link if inside and link > 0 else out_link
        hop_lat = lat if inside else sysm.scaleout_latency_s
        comm[F_TOKENS] += (dep.pp - 1) * h * act / hop_bw
        latency += (dep.pp - 1) * hop_lat
    return comm, latency


def fill_features(
    x: Any,
    tokens: Any,
    logits: Any,
    dctx: Any,
    dwin: Any,
    dmax: Any,
    n_decode: Any,
    patt: Any,
    pwin: Any,
    ptok: Any,
    units: Any,
    pmax_tokens: Any,
    pmax_attention: Any,
    pmax_window: Any,
    depth: float,
    window: int,
    n_experts: float,
    top_k: float,
) -> Any:
    """Fill `x` with the features (rows `F_*`) of the slowest micro-batch of steps given by
    their aggregates; returns their micro-batch counts. Aggregates are scalars (`x` a vector:
    the compiled replica, which compiles this very function) or arrays over k steps (`x`:
    N_FEATURES x k, the Python replica's `RooflineStepModel`): tokens, logits, decode context,
    windowed context and longest context, decodes, prefill attention, window and tokens,
    pipeline units, and the largest prefill chunk's tokens, attention and windowed attention.

    Work is split evenly over `mb = clip(units, 1, depth)` micro-batches, except decode
    context: the micro-batch that holds the longest sequence carries it plus its share of the
    others (so a short sequence joining a long one never shortens the round), and the largest
    prefill chunk, which one micro-batch carries whole. `window`: the model's attention window
    (0: none); `n_experts`, `top_k`: routed experts (0: dense)."""
    mb = np.maximum(np.minimum(units, depth), 1.0)
    x[F_ONE] = 1.0
    x[F_TOKENS] = tokens / mb
    x[F_LOGITS] = logits / mb
    others = np.maximum(n_decode - 1.0, 1.0)
    extra = np.maximum(n_decode / mb - 1.0, 0.0)
    x[F_DECODE_CONTEXT] = np.maximum(dctx / mb, dmax + extra * (dctx - dmax) / others)
    if window > 0:
        wmax = np.minimum(dmax, float(window))
        x[F_DECODE_WINDOW] = np.maximum(dwin / mb, wmax + extra * (dwin - wmax) / others)
    else:
        x[F_DECODE_WINDOW] = dwin / mb
    x[F_PREFILL_ATTENTION] = patt / mb
    x[F_PREFILL_WINDOW] = pwin / mb
    x[F_PREFILL_TOKENS] = ptok / mb
    x[F_PREFILL_MAX_TOKENS] = pmax_tokens
    x[F_PREFILL_MAX_ATTENTION] = pmax_attention
    x[F_PREFILL_MAX_WINDOW] = pmax_window
    if n_experts > 0:
        x[F_EXPERTS] = n_experts * (1.0 - np.power(1.0 - top_k / n_experts, x[F_TOKENS]))
    else:
        x[F_EXPERTS] = 0.0
    return mb


class RooflineStepModel:
    """The per-operator roofline for any deployment (GPU-like or wafer-scale).

    Pure function of a frozen `Deployment`; `breakdown(batch)` explains any step.
    """

    def __init__(self, deployment: Deployment, memory: MemoryPlan | None = None) -> None:
        self.deployment = deployment
        self.memory = memory or plan_memory(deployment)
        self.layout: WaferLayout | None = None  # wafers: where the layers run (perf/wafer.py)
        self._build()

    # -- construction -----------------------------------------------------------------------
    def _build(self) -> None:
        if self.deployment.family == "wafer":
            self._build_wafer()
            return
        dep, m, eff = self.deployment, self.deployment.model, self.deployment.eff
        ops = _Operators(dep)
        _attention_operators(dep, ops)
        _mlp_operators(dep, ops)
        self._names = tuple(ops.names)
        self._flops, self._bytes, self._rate, self._bw = _arrays(ops.flops, ops.nbytes, ops.rates, ops.bws)
        comm, latency = _gpu_communication(dep)
        self._comm = np.array(comm, dtype=np.float64)
        self._latency = latency
        self._depth = dep.pp
        # With data-parallel attention every rank schedules and samples its own sequences.
        seq_cost = eff.seq_overhead_s / (dep.tp if dep.attention_dp else 1)
        self._overhead = (eff.step_overhead_s, seq_cost)
        # Steps with prompt chunks run eagerly: every layer of a stage dispatched from the CPU.
        self._prefill_overhead = eff.prefill_layer_overhead_s * math.ceil(m.n_layers / dep.pp)
        self._window = self.memory.window_tokens
        self._n_experts = m.n_experts
        self._top_k = m.n_experts_per_token

    def _build_wafer(self) -> None:
        """Operator rows, per-token communication and per-pass latency of a wafer deployment
        (perf/wafer.py): each operator runs on its layer's core region at the region's SIMD rate
        (x compute, or attention) and SRAM bandwidth (x memory); the layout adds the reduction
        rounds, fixed cycles and hand-offs."""
        dep, m, eff = self.deployment, self.deployment.model, self.deployment.eff
        lay = wafer_layout(dep, self.memory)
        self.layout = lay
        streaming = lay.mapping == "streaming"
        names: list[str] = []
        flops: list[list[float]] = []
        nbytes: list[list[float]] = []
        rates: list[float] = []
        bws: list[float] = []

        def add(
            name: str, f: dict[int, float], b: dict[int, float], share: float, eff_rate: float,
            weights: bool = True,
        ) -> None:
            names.append(name)
            flops.append(_row(f))
            nbytes.append(_row(b))
            rates.append(lay.region_flops_per_s(share) * eff_rate)
            if streaming and weights:
                bws.append(lay.stream_bandwidth_bytes_per_s)
            else:
                bws.append(lay.region_sram_bytes_per_s(share) * eff.memory)

        def add_weights(
            name: str, token_flops: float, weight_bytes: float, share: float, scale: float = 1.0
        ) -> None:
            # Decode tokens multiply against the weight tiles where they sit (GEMV, at
            # `compute`, weights read at `memory`); prefill tokens run MeshGEMM-like GEMMs,
            # whose tiles shift through the mesh (`prefill_compute`, end to end).
            add(name, {F_TOKENS: token_flops, F_PREFILL_TOKENS: -token_flops}, {F_ONE: weight_bytes}, share,
                eff.compute * scale)
            add(f"{name} (prefill)", {F_PREFILL_TOKENS: token_flops}, {}, share,
                eff.prefill_compute * scale, weights=False)

        n_layers = m.n_layers
        n_win = len(m.windowed_layers())
        n_full = n_layers - n_win
        attn_share = lay.attention_share
        p_attn = m.attention_params_per_layer()
        add_weights(
            "attention projections",
            2.0 * p_attn * n_layers,
            p_attn * dep.weight_bytes_per_param("attention") * n_layers,
            attn_share,
        )
        flops_per_ctx, prefill_per_ctx = _attention_flops_per_context(m)
        kv_layer_bytes = m.kv_elements_per_token_per_layer() * dep.kv_bytes_per_element
        for n, kind, dfeat, pfeat in (
            (n_full, "attention", F_DECODE_CONTEXT, F_PREFILL_ATTENTION),
            (n_win, "windowed attention", F_DECODE_WINDOW, F_PREFILL_WINDOW),
        ):
            if not n:
                continue
            add(
                f"{kind} (decode)",
                {dfeat: flops_per_ctx * n},
                {dfeat: kv_layer_bytes * n},
                attn_share,
                eff.attention,
                weights=False,
            )
            add(
                f"{kind} (prefill)",
                {pfeat: prefill_per_ctx * n},
                {F_PREFILL_TOKENS: kv_layer_bytes * n},
                attn_share,
                eff.attention,
                weights=False,
            )
        if m.n_dense_layers:
            p = m.dense_mlp_params_per_layer() * m.n_dense_layers
            add_weights("dense MLP", 2.0 * p, p * dep.weight_bytes_per_param("mlp"),
                        lay.layer_share)
        if m.n_moe_layers:
            n_moe = m.n_moe_layers
            p_exp = m.expert_params()
            # Each expert's weights sit on their own cores: the experts a token is routed to
            # read their weights in parallel (one expert's read time per pass), and the MACs
            # of a micro-batch's tokens spread over every expert's cores.
            add_weights(
                "routed experts",
                2.0 * m.n_experts_per_token * p_exp * n_moe,
                p_exp * dep.weight_bytes_per_param("experts") * n_moe,
                lay.expert_share,
                float(m.n_experts),
            )
            if m.n_shared_experts:
                p = m.shared_expert_params_per_layer() * n_moe
                add_weights("shared experts", 2.0 * p, p * dep.weight_bytes_per_param("mlp"),
                            lay.moe_dense_share)
            p = m.router_params_per_layer() * n_moe
            add("router", {F_TOKENS: 2.0 * p}, {F_ONE: 2.0 * p}, lay.moe_dense_share, eff.compute)
        p_head = m.vocab_size * m.hidden_size
        add(
            "LM head",
            {F_LOGITS: 2.0 * p_head},
            {F_ONE: p_head * dep.weight_bytes_per_param("embedding")},
            lay.head_share,
            eff.compute,
        )
        self._names = tuple(names)
        self._flops, self._bytes, self._rate, self._bw = _arrays(flops, nbytes, rates, bws)
        comm = [0.0] * N_FEATURES
        comm[F_TOKENS] = lay.comm_s_per_token
        self._comm = np.array(comm, dtype=np.float64)
        self._latency = lay.latency_s
        # Resident layers form a pipeline of n_layers regions; a streaming wafer runs the whole
        # batch through one layer at a time, and so does a layer-grid engine's measurement.
        self._depth = m.n_layers if lay.mapping == "resident" else 1
        self._overhead = (eff.step_overhead_s, eff.seq_overhead_s)
        self._prefill_overhead = 0.0  # wafers run no CUDA graphs: no eager/graph split
        self._window = self.memory.window_tokens
        self._n_experts = m.n_experts
        self._top_k = m.n_experts_per_token

    # -- the seam -----------------------------------------------------------------------------
    def coefficients(self) -> StepCoefficients:
        """The model as plain arrays (read-only copies), for compiled step-time evaluation."""

        def frozen(a: FloatArray) -> FloatArray:
            out = np.array(a, dtype=np.float64)
            out.setflags(write=False)
            return out

        return StepCoefficients(
            flops=frozen(self._flops),
            bytes=frozen(self._bytes),
            rate_flops_per_s=frozen(self._rate),
            bandwidth_bytes_per_s=frozen(self._bw),
            comm_s=frozen(self._comm),
            latency_s=float(self._latency),
            step_overhead_s=float(self._overhead[0]),
            seq_overhead_s=float(self._overhead[1]),
            prefill_overhead_s=float(self._prefill_overhead),
            pipeline_depth=int(self._depth),
            window_tokens=self._window,
            n_experts=int(self._n_experts or 0),
            top_k=int(self._top_k or 0),
        )

    @property
    def window_tokens(self) -> int | None:
        """Attention window of the model's windowed layers (None when it has none)."""
        return self._window

    @property
    def pipeline_depth(self) -> int:
        """Stages a micro-batch traverses (pp for GPUs; layers for a wafer)."""
        return self._depth

    def _features(
        self,
        tokens: FloatArray,
        logits: FloatArray,
        dctx: FloatArray,
        dwin: FloatArray,
        patt: FloatArray,
        pwin: FloatArray,
        ptok: FloatArray,
        units: FloatArray,
        n_decode: FloatArray,
        dmax: FloatArray,
        pmax: tuple[FloatArray, FloatArray, FloatArray] | None = None,
    ) -> tuple[FloatArray, FloatArray]:
        """Feature matrix (N_FEATURES x k) of the slowest micro-batch of k steps, and their
        micro-batch counts (`fill_features`; `pmax`: none in pure decode)."""
        x = np.empty((N_FEATURES, tokens.shape[0]))
        big_tok, big_att, big_win = (0.0, 0.0, 0.0) if pmax is None else pmax
        mb = fill_features(
            x, tokens, logits, dctx, dwin, dmax, n_decode, patt, pwin, ptok, units, big_tok,
            big_att, big_win, float(self._depth), self._window or 0, float(self._n_experts),
            float(self._top_k),
        )
        return x, mb

    def _times(
        self, x: FloatArray, n_seqs: FloatArray, eager: FloatArray | float = 0.0
    ) -> FloatArray:
        """Step times of feature columns `x`; `eager` is 1 for steps that carry a prompt
        chunk (they pay `prefill_overhead_s`), 0 for the others."""
        compute = (self._flops @ x) / self._rate[:, None]
        memory = (self._bytes @ x) / self._bw[:, None]
        ops = np.maximum(compute, memory).sum(axis=0)
        step_overhead, seq_overhead = self._overhead
        out: FloatArray = (
            ops + self._comm @ x + self._latency + step_overhead + seq_overhead * n_seqs
            + self._prefill_overhead * eager
        )
        return out

    def times(
        self, n_seqs: FloatArray, *aggregates: FloatArray, eager: FloatArray | float = 0.0
    ) -> FloatArray:
        """Step times of many batches of `n_seqs` sequences given by their aggregates, vectors
        in `_features` order (tokens, logits, decode context and window, prefill attention,
        window and tokens, pipeline units, decodes, longest context); no prefill chunk larger
        than the others is singled out. `eager`: 1 for steps with prompt chunks (see
        `_times`)."""
        tokens, logits, dctx, dwin, patt, pwin, ptok, units, n_decode, dmax = aggregates
        x, _ = self._features(tokens, logits, dctx, dwin, patt, pwin, ptok, units, n_decode, dmax)
        return self._times(x, n_seqs, eager)

    def step_time(self, batch: BatchShape) -> float:
        """Seconds one engine step over `batch` takes."""
        if batch.n_seqs == 0:
            return 0.0
        n = np.array([float(batch.n_seqs)])
        x, _ = self._batch_features(batch)
        return float(self._times(x, n, 1.0 if batch.eager else 0.0)[0])

    def _batch_features(self, batch: BatchShape) -> tuple[FloatArray, FloatArray]:
        """The features of one batch (`_features` on one step)."""
        return self._features(
            np.array([float(batch.tokens)]),
            np.array([float(batch.n_logits)]),
            np.array([batch.decode_context]),
            np.array([batch.decode_window]),
            np.array([batch.prefill_attention]),
            np.array([batch.prefill_window]),
            np.array([float(batch.prefill_tokens)]),
            np.array([batch.pipeline_units]),
            np.array([float(batch.n_decode)]),
            np.array([batch.decode_context_max]),
            _largest_chunk(batch),
        )

    def decode_aggregates(
        self, contexts: FloatArray, n_steps: int
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Decode context, windowed context and longest context of each of `n_steps`
        consecutive pure-decode steps of sequences starting at `contexts` (growing by one)."""
        contexts = np.asarray(contexts, dtype=np.float64)
        b = float(contexts.shape[0])
        j = np.arange(n_steps, dtype=np.float64)
        dctx = contexts.sum() + j * b
        if self._window:
            w = float(self._window)
            # sum_i min(c_i + j, w): sequences below the window grow, the rest are capped.
            dwin = (
                np.minimum(contexts[None, :] + j[:, None], w).sum(axis=1)
                if b * n_steps <= 4e6
                else np.array([np.minimum(contexts + jj, w).sum() for jj in j])
            )
        else:
            dwin = np.zeros(n_steps)
        dmax = contexts.max() + j if b else np.zeros(n_steps)
        return dctx, dwin, dmax

    def decode_times(self, contexts: FloatArray, n_steps: int) -> FloatArray:
        """Seconds of each of `n_steps` consecutive pure-decode steps (contexts grow by 1)."""
        dctx, dwin, dmax = self.decode_aggregates(contexts, n_steps)
        full = np.full(n_steps, float(np.shape(contexts)[0]))
        zeros = np.zeros(n_steps)
        x, _ = self._features(full, full, dctx, dwin, zeros, zeros, zeros, full, full, dmax)
        return self._times(x, full)

    # -- explanation --------------------------------------------------------------------------
    def breakdown(self, batch: BatchShape) -> StepBreakdown:
        """Per-operator times (for one micro-batch pass), communication, latency and overhead."""
        n = np.array([float(max(batch.n_seqs, 1))])
        x, mb = self._batch_features(batch)
        fl = (self._flops @ x)[:, 0]
        by = (self._bytes @ x)[:, 0]
        ops = tuple(
            OperatorTime(name, float(f), float(b), float(f / r), float(b / w))
            for name, f, b, r, w in zip(self._names, fl, by, self._rate, self._bw, strict=True)
        )
        comm = float(self._comm @ x[:, 0])
        step_overhead, seq_overhead = self._overhead
        overhead = step_overhead + seq_overhead * float(n[0])
        if batch.eager:
            overhead += self._prefill_overhead
        by_bound = {"compute": 0.0, "memory": 0.0}
        for op in ops:
            by_bound[op.bound] += op.time_s
        by_bound["communication"] = comm
        by_bound["latency"] = self._latency
        by_bound["overhead"] = overhead
        total = sum(op.time_s for op in ops) + comm + self._latency + overhead
        return StepBreakdown(ops, comm, self._latency, overhead, int(mb[0]), total, by_bound)
