"""The memory plan of a deployment: weights per device, workspace, and the KV-cache capacity left.
A model that does not fit raises `FitError` naming the model, the device, the sizes and a fix."""

from __future__ import annotations

import math
from dataclasses import dataclass

from megawatt.errors import FitError
from megawatt.model import ModelSpec
from megawatt.perf.deployment import Deployment
from megawatt.perf.mesh import assign_layers
from megawatt.units import GB, GIB


@dataclass(frozen=True)
class WeightBytes:
    """Weight bytes of the whole model by component, in the deployment's formats."""

    attention: float
    dense_mlp: float
    routed_experts: float
    shared_experts: float
    embedding: float
    lm_head: float
    other: float  # routers and norms (BF16)

    @property
    def layers(self) -> float:
        """Bytes held by the decoder layers."""
        return (
            self.attention + self.dense_mlp + self.routed_experts + self.shared_experts + self.other
        )

    @property
    def total(self) -> float:
        """All weight bytes."""
        return self.layers + self.embedding + self.lm_head


def weight_bytes(dep: Deployment) -> WeightBytes:
    """Weight bytes of `dep.model` in the formats `dep` chooses, by component."""
    c = dep.model.param_counts()
    return WeightBytes(
        attention=c.attention * dep.weight_bytes_per_param("attention"),
        dense_mlp=c.dense_mlp * dep.weight_bytes_per_param("mlp"),
        routed_experts=c.routed_experts * dep.weight_bytes_per_param("experts"),
        shared_experts=c.shared_experts * dep.weight_bytes_per_param("mlp"),
        embedding=c.embedding * dep.weight_bytes_per_param("embedding"),
        lm_head=c.lm_head * dep.weight_bytes_per_param("embedding"),
        other=(c.router + c.norms) * 2.0,
    )


@dataclass(frozen=True)
class MemoryPlan:
    """Where the bytes go on each device of one replica, and the KV capacity that is left.

    All sizes are bytes. `kv_bytes` is the replica's unique KV capacity (replicated copies, when
    TP exceeds the KV heads, counted once); `kv_bytes_per_token` is the cost of one token on the
    full-attention layers, `kv_bytes_windowed` the fixed cost of a sequence's windowed layers
    once its context exceeds their windows.

    Wafers add the per-wafer accounting (`*_by_device`, one entry per wafer, first to last):
    decoder layers, weight bytes (draft model included) and the KV bytes the replica's cache puts
    there when full; with `reserved_bytes_per_device` (code, stacks, routing buffers) and
    `workspace_bytes_per_device` (activations) no wafer exceeds its SRAM. `weight_streaming`:
    the weights stream from MemoryX and only a double buffer of one layer is resident.
    """

    memory: str  # "HBM" or "SRAM"
    capacity_bytes_per_device: float
    usable_bytes_per_device: float
    weight_bytes_total: float
    weight_bytes_per_device: float
    workspace_bytes_per_device: float
    kv_bytes_per_device: float
    kv_replication: float
    kv_bytes: float
    kv_bytes_per_token: float
    kv_bytes_per_token_windowed: float
    window_tokens: int | None
    layers_per_stage: int
    reserved_bytes_per_device: float = 0.0
    layers_by_device: tuple[int, ...] = ()
    weight_bytes_by_device: tuple[float, ...] = ()
    kv_bytes_by_device: tuple[float, ...] = ()
    draft_weight_bytes: float = 0.0
    draft_on_last_device: bool = False
    weight_streaming: bool = False

    def sequence_kv_bytes(self, context_tokens: float) -> float:
        """KV bytes one sequence of `context_tokens` tokens holds."""
        windowed = min(context_tokens, self.window_tokens) if self.window_tokens else 0.0
        return (
            self.kv_bytes_per_token * context_tokens + self.kv_bytes_per_token_windowed * windowed
        )

    def max_sequences(self, context_tokens: float) -> int:
        """How many sequences of `context_tokens` tokens fit in the KV cache at once."""
        per_seq = self.sequence_kv_bytes(context_tokens)
        return int(self.kv_bytes // per_seq) if per_seq > 0 else 0

    @property
    def kv_tokens(self) -> int:
        """KV capacity in tokens of full-attention context (windowed layers at full window)."""
        per_token = self.kv_bytes_per_token + (
            self.kv_bytes_per_token_windowed if self.window_tokens else 0.0
        )
        return int(self.kv_bytes // per_token) if per_token > 0 else 0


def _workspace_bytes(dep: Deployment) -> float:
    """Activation workspace per device (estimate): 1 GiB runtime context and graphs, plus
    activations of a full token budget (16 bytes per hidden element), plus FP32 logits of a
    full batch, vocabulary-sharded over TP."""
    m = dep.model
    activations = dep.max_num_batched_tokens * m.hidden_size * 16.0
    logits = dep.max_num_seqs * m.vocab_size * 4.0 / dep.tp
    return 1.0 * GIB + activations + logits


def plan_memory(dep: Deployment) -> MemoryPlan:
    """Place weights, workspace and KV cache on the deployment's devices.

    GPUs: `gpu_memory_utilization` of HBM is usable; weights split over tp x pp (whole layers
    per pipeline stage); KV takes the rest. Wafers: SRAM minus the reserved share and the
    activation buffers; whole layers dealt out to wafers (embedding table on the first, LM head
    on the last, a draft model's layers alongside); KV competes with weights for the same SRAM.
    With `weight_streaming` only a double buffer of one layer stays in SRAM.
    """
    m = dep.model
    wb = weight_bytes(dep)
    if dep.family == "wafer":
        return _plan_wafers(dep, wb)
    layers_per_stage = math.ceil(m.n_layers / dep.pp)
    per_layer = wb.layers / m.n_layers
    edge = wb.embedding + wb.lm_head if dep.pp == 1 else max(wb.embedding, wb.lm_head)
    weights_dev = (layers_per_stage * per_layer + edge) / dep.tp
    if dep.wide_ep:  # every device holds everything but its 1/ep of the routed experts
        weights_dev = wb.total - wb.routed_experts * (1.0 - 1.0 / dep.ep)
    elif dep.attention_dp:  # every device holds all of its stage's attention weights
        weights_dev += layers_per_stage * wb.attention / m.n_layers * (1.0 - 1.0 / dep.tp)
    memory = "HBM"
    capacity = dep.device.mem_capacity_bytes
    usable = capacity * dep.gpu_memory_utilization
    workspace = _workspace_bytes(dep)
    kv_dev = usable - weights_dev - workspace
    if kv_dev <= 0:
        need = weights_dev + workspace
        more = math.ceil(dep.n_devices * need / usable) if usable > 0 else 0
        fix = f"Use tp x pp >= {more}, a lower weight_dtype, or a larger device"
        raise FitError(
            f"{m.id} does not fit on {dep.n_devices}x {dep.device.id} "
            f"({dep.device.mem_capacity_label} {memory}, {usable / GB:.1f} GB usable): weights "
            f"{wb.total / GB:.1f} GB in all, {weights_dev / GB:.1f} GB per device plus "
            f"{workspace / GB:.1f} GB workspace leave no room for the KV cache. {fix}."
        )
    elements = m.kv_elements_per_token_per_layer()
    if dep.attention_dp:
        replication = 1.0  # each device caches only its own sequences
    elif m.attention_type == "mla":
        replication = float(dep.tp)  # the latent is not split across heads
    else:
        replication = max(1.0, dep.tp / m.n_kv_heads)
    per_layer_token = elements * dep.kv_bytes_per_element
    window, n_windowed = _windows(m)
    return MemoryPlan(
        memory=memory,
        capacity_bytes_per_device=capacity,
        usable_bytes_per_device=usable,
        weight_bytes_total=wb.total,
        weight_bytes_per_device=weights_dev,
        workspace_bytes_per_device=workspace,
        kv_bytes_per_device=kv_dev,
        kv_replication=replication,
        kv_bytes=kv_dev * dep.n_devices / replication,
        kv_bytes_per_token=m.kv_bytes_per_token_full(dep.kv_bytes_per_element),
        kv_bytes_per_token_windowed=n_windowed * per_layer_token,
        window_tokens=window,
        layers_per_stage=layers_per_stage,
    )


def _windows(m: ModelSpec) -> tuple[int | None, int]:
    windows = m.windowed_layers()
    return (max(windows) if windows else None), len(windows)


def wafer_activation_bytes(dep: Deployment) -> float:
    """Activation buffers per wafer (estimate): four hidden-size vectors (residual, normed input,
    attention output, MLP partial sums) of 16-bit values for every token of a full step's token
    budget, spread over the wafer's regions."""
    return 4.0 * dep.max_num_batched_tokens * dep.model.hidden_size * dep.activation_bytes


def _wafer_weights(
    dep: Deployment, wb: WeightBytes, n_wafers: int
) -> tuple[tuple[int, ...], list[float], float]:
    """Layers and weight bytes per wafer, and the draft model's weight bytes. The embedding
    table sits on the first wafer, the LM head on the last, a draft model (when it takes at
    most half a wafer) on the last too, next to where tokens are sampled; layers are dealt out
    so that the fullest wafer is as light as possible."""
    m = dep.model
    per_layer = wb.layers / m.n_layers
    draft_total = 0.0
    draft_layers: list[float] = [0.0] * n_wafers
    extras = [0.0] * n_wafers
    if dep.draft_model is not None:
        from dataclasses import replace

        dm = dep.draft_model
        dwb = weight_bytes(
            replace(dep, model=dm, draft_model=None, weight_streaming=False, speculation=None)
        )
        draft_total = dwb.total
        room = dep.device.mem_capacity_bytes * (1.0 - dep.eff.sram_reserved_fraction)
        if draft_total <= 0.5 * room or n_wafers == 1:
            extras[-1] += draft_total
        else:  # too big for one wafer's spare room: spread like the target
            d_layer = dwb.layers / dm.n_layers
            for i, c in enumerate(assign_layers(dm.n_layers, n_wafers)):
                draft_layers[i] = c * d_layer
            draft_layers[0] += dwb.embedding
            draft_layers[-1] += dwb.lm_head
    if dep.weight_streaming:
        # A double buffer of the largest layer; the tables stream too (a lookup, a GEMV).
        counts: tuple[int, ...] = (m.n_layers,)
        weights = [2.0 * per_layer + extras[0]]
        return counts, weights, draft_total
    extras[0] += wb.embedding
    extras[-1] += wb.lm_head
    extras = [e + d for e, d in zip(extras, draft_layers, strict=True)]
    counts = assign_layers(m.n_layers, n_wafers, per_layer, tuple(extras))
    weights = [c * per_layer + e for c, e in zip(counts, extras, strict=True)]
    return counts, weights, draft_total


def _plan_wafers(dep: Deployment, wb: WeightBytes) -> MemoryPlan:
    """SRAM per wafer: reserved share, activation buffers, whole layers (and the draft's), the
    embedding table on the first wafer and the LM head on the last; KV takes what is left, and
    the replica's cache is bounded by the wafer with the least room per layer it holds."""
    m = dep.model
    capacity = dep.device.mem_capacity_bytes
    reserved = capacity * dep.eff.sram_reserved_fraction
    activations = wafer_activation_bytes(dep)
    usable = capacity - reserved
    n_wafers = 1 if dep.weight_streaming else dep.pp
    counts, weights, draft = _wafer_weights(dep, wb, n_wafers)
    free = [usable - activations - w for w in weights]
    if min(free) <= 0:
        worst = max(range(len(weights)), key=lambda i: weights[i])
        raise FitError(
            f"{m.id} does not fit on {dep.n_devices}x {dep.device.id} "
            f"({capacity / GB:.0f} GB SRAM, {usable / GB:.1f} GB usable): weights "
            f"{wb.total / GB:.1f} GB in all"
            + (f" plus a {draft / GB:.1f} GB draft model" if draft else "")
            + f", {weights[worst] / GB:.1f} GB per device on the fullest wafer "
            f"({counts[worst] if worst < len(counts) else 0} layers) plus "
            f"{activations / GB:.1f} GB of activations leave no room for the KV cache. "
            + _wafer_fix(dep, wb)
        )
    kv_by: tuple[float, ...]
    if dep.weight_streaming:
        kv_total = free[0]
        kv_by = (kv_total,)
    else:
        kv_total = min(f * m.n_layers / c for f, c in zip(free, counts, strict=True) if c > 0)
        kv_by = tuple(kv_total * c / m.n_layers for c in counts)
    window, n_windowed = _windows(m)
    per_layer_token = m.kv_elements_per_token_per_layer() * dep.kv_bytes_per_element
    per_token = m.kv_bytes_per_token_full(dep.kv_bytes_per_element)
    if dep.draft_model is not None:
        # The draft caches every token its target does (its windowed layers counted in full).
        per_token += dep.draft_model.kv_bytes_per_token(dep.kv_bytes_per_element)
    return MemoryPlan(
        memory="SRAM",
        capacity_bytes_per_device=capacity,
        usable_bytes_per_device=usable,
        weight_bytes_total=wb.total,
        weight_bytes_per_device=max(weights),
        workspace_bytes_per_device=activations,
        kv_bytes_per_device=min(kv_by),
        kv_replication=1.0,
        kv_bytes=kv_total,
        kv_bytes_per_token=per_token,
        kv_bytes_per_token_windowed=n_windowed * per_layer_token,
        window_tokens=window,
        layers_per_stage=max(counts),
        reserved_bytes_per_device=reserved,
        layers_by_device=counts,
        weight_bytes_by_device=tuple(weights),
        kv_bytes_by_device=kv_by,
        draft_weight_bytes=draft,
        draft_on_last_device=bool(draft) and (
            n_wafers == 1 or draft <= 0.5 * usable
        ),
        weight_streaming=dep.weight_streaming,
    )


def _wafer_fix(dep: Deployment, wb: WeightBytes) -> str:
    """The way out of a wafer FitError: the fewest wafers that hold the model, else a lower
    weight format or weight streaming."""
    from dataclasses import replace

    m = dep.model
    capacity = dep.device.mem_capacity_bytes
    room = capacity * (1.0 - dep.eff.sram_reserved_fraction) - wafer_activation_bytes(dep)
    if not dep.weight_streaming:
        for pp in range(dep.pp + 1, m.n_layers + 1):
            _, weights, _ = _wafer_weights(replace(dep, pp=pp), wb, pp)
            if max(weights) < room:
                return (
                    "Weight streaming from MemoryX (weight_streaming) avoids the limit at a much "
                    f"lower speed. Use pp >= {pp} wafers."
                )
    return (
        "One layer plus the embedding table exceeds a wafer; use a lower weight_dtype"
        + ("" if dep.weight_streaming else " or weight streaming from MemoryX (weight_streaming)")
        + "."
    )
