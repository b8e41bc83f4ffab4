"""The memory plan of a deployment: weights per device, workspace, and the KV-cache capacity left.
A model that does not fit raises `FitError` naming the model, the device, the sizes and a fix."""

from __future__ import annotations

import math
from dataclasses import dataclass

from megawatt.errors import FitError
from megawatt.perf.deployment import Deployment
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
    per pipeline stage); KV takes the rest. Wafers: SRAM minus the reserved share; layers are
    split across wafers; KV competes with weights for the same SRAM.
    """
    m = dep.model
    wb = weight_bytes(dep)
    layers_per_stage = math.ceil(m.n_layers / dep.pp)
    per_layer = wb.layers / m.n_layers
    edge = wb.embedding + wb.lm_head if dep.pp == 1 else max(wb.embedding, wb.lm_head)
    weights_dev = (layers_per_stage * per_layer + edge) / dep.tp
    if dep.attention_dp:  # every device holds all of its stage's attention weights
        weights_dev += layers_per_stage * wb.attention / m.n_layers * (1.0 - 1.0 / dep.tp)
    if dep.family == "wafer":
        memory = "SRAM"
        capacity = dep.device.mem_capacity_bytes
        usable = capacity * (1.0 - dep.eff.sram_reserved_fraction)
        workspace = 0.0  # inside the reserved share
    else:
        memory = "HBM"
        capacity = dep.device.mem_capacity_bytes
        usable = capacity * dep.gpu_memory_utilization
        workspace = _workspace_bytes(dep)
    kv_dev = usable - weights_dev - workspace
    if kv_dev <= 0:
        need = weights_dev + workspace
        more = math.ceil(dep.n_devices * need / usable) if usable > 0 else 0
        if dep.family == "wafer":
            # Whole layers per wafer plus an embedding table on the edge stages: the linear
            # estimate above undercounts (405B at 16-bit needs 26 wafers, not 23), so find the
            # first wafer count that actually holds a stage.
            edge_pp = max(wb.embedding, wb.lm_head)
            wafers = next(
                (
                    pp
                    for pp in range(dep.pp + 1, m.n_layers + 1)
                    if math.ceil(m.n_layers / pp) * per_layer + edge_pp < usable
                ),
                None,
            )
            fix = (
                f"Use pp >= {wafers} wafers"
                if wafers
                else "One layer plus the embedding table exceeds a wafer; use a lower weight_dtype"
            )
        else:
            fix = f"Use tp x pp >= {more}, a lower weight_dtype, or a larger device"
        raise FitError(
            f"{m.id} does not fit on {dep.n_devices}x {dep.device.id} "
            f"({capacity / GB:.0f} GB {memory}, {usable / GB:.1f} GB usable): weights "
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
    windows = set(m.windowed_layers())
    window = max(windows) if windows else None
    n_windowed = len(m.windowed_layers())
    per_layer_token = elements * dep.kv_bytes_per_element
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


def min_devices(dep: Deployment, *, max_devices: int = 4096) -> int:
    """Fewest pipeline stages (wafers, or tp x pp devices for GPUs at fixed tp) that hold the
    weights with room left for KV."""
    from dataclasses import replace

    for pp in range(1, max_devices + 1):
        try:
            plan_memory(replace(dep, pp=pp, ep=1))
        except FitError:
            continue
        return pp * dep.tp
    raise FitError(f"{dep.model.id} does not fit on {max_devices} {dep.device.id} devices.")
