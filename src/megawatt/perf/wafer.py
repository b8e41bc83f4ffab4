"""A model mapped onto wafer-scale engines: which core region each layer runs on and what one pass
of a micro-batch through every layer costs on the mesh (the wafer family of ARCHITECTURE.md).

Three mappings, chosen by the engine (`MAPPINGS`):

* `resident` (Cerebras production): weights stay in SRAM; whole layers are dealt out to wafers
  and, on each wafer, every layer gets a core region sized by its weights (so every core holds
  about the same bytes); each layer's GEMVs run MeshGEMV-style across its region.
* `layer-grid` (WaferLLM's measurements): each layer is timed on its own square grid whose side
  is autotuned for decode, and the model's time is that layer's times the layer count - how the
  paper reports end-to-end decode (NOTES d.2), not a layout one wafer can hold for all layers.
* `streaming` (`Deployment.weight_streaming`): weights stream from MemoryX over the system I/O
  every pass; each layer uses the whole wafer, one after another.

Per layer and pass: the GEMV time of its weights over its region's SRAM bandwidth and SIMD rate
(operator rows of the roofline), plus `reduce_rounds_per_layer` reduce-and-broadcast rounds of
`1.5 side` hops x alpha + ~sqrt(side) software stages x beta, plus `layer_fixed_cycles`; the
vectors of each token stream through the reduction chains (side-dependent, per token); hand-offs
between wafers cost their latency plus the hidden state over the system I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from megawatt.errors import InputError
from megawatt.hardware import MeshSpec
from megawatt.perf.breakdown import StepBreakdown
from megawatt.perf.deployment import Deployment
from megawatt.perf.memory import MemoryPlan, weight_bytes
from megawatt.perf.mesh import allreduce_cycles, reduce_hops, square_side, stream_cycles, tree_stages

MAPPINGS: dict[str, str] = {
    "cerebras": "resident",
    "cerebras-2024-08": "resident",
    "other": "resident",
    "waferllm": "layer-grid",
}
"""Engine -> how it lays layers on the mesh (see the module docstring)."""

_MIN_SIDE = 16  # smallest region side the autotuner tries (cores)

FALLBACK_WAFER_IO_BANDWIDTH_BYTES_PER_S = 1.5e11
"""System I/O of a wafer system whose catalog entry names no scale-out bandwidth: 12 x 100 GbE =
1.2 Tb/s = 150 GB/s per CS-2 / CS-3 system (NOTES a.3, Argonne SC24 tutorial; secondary)."""


def mapping_of(dep: Deployment) -> str:
    """The deployment's mapping: `streaming` when it streams weights, else its engine's."""
    if dep.weight_streaming:
        return "streaming"
    try:
        return MAPPINGS[dep.engine]
    except KeyError:
        known = ", ".join(sorted(MAPPINGS))
        raise InputError(
            f"engine {dep.engine!r} has no wafer mapping; known wafer engines: {known}."
        ) from None


def mesh_of(dep: Deployment) -> MeshSpec:
    """The wafer's mesh data (an error naming the device when the catalog has none)."""
    mesh = dep.device.mesh
    if mesh is None:
        raise InputError(
            f"device {dep.device.id} is a wafer without a `mesh` block in the hardware catalog; "
            "add width_cores, height_cores, sram_per_core_bytes, simd_fp16_lanes, clock_ghz, "
            "cycles_per_hop, link_bytes_per_cycle and sram_bytes_per_cycle_per_core."
        )
    return mesh


MLP_ROUNDS_SHARE = 0.3
"""Share of a layer's reduce-plus-broadcast rounds on its MLP side (norm, fused up/gate, down:
3 of NOTES d.2's 10); the rest (norm, fused QKV, score, softmax max and sum, score x V, O) run
where the attention weights are."""


@dataclass(frozen=True)
class WaferLayout:
    """Where a model's layers run on the mesh and the fixed costs of one pass (seconds, cores).

    Shares are fractions of one wafer's cores: `layer_share` a dense layer's region (every
    weight of the layer tiled over it, and its KV cache); `attention_share` where attention runs
    (harmonic mean over the layers: a MoE layer's attention, shared experts, router and cache
    tile its own region, `moe_dense_share`); `expert_share` one routed expert's region;
    `head_share` the LM head's. `latency_s` is what one micro-batch's pass through every layer
    costs regardless of its size (fixed cycles, reduction hops and stages, the LM head's round, hand-offs);
    `comm_s_per_token` what each of its tokens adds (vector streaming through the reduction
    chains, hidden state over the system I/O).
    """

    mapping: str
    n_wafers: int
    cores_per_wafer: int
    layers_by_wafer: tuple[int, ...]
    layer_share: float
    attention_share: float
    moe_dense_share: float
    expert_share: float
    head_share: float
    side_cores: float
    clock_hz: float
    core_flops_per_s: float
    core_sram_bytes_per_s: float
    stream_bandwidth_bytes_per_s: float
    fixed_s: float
    reduce_hops_s: float
    reduce_stages_s: float
    head_s: float
    handoff_s: float
    stream_s_per_token: float
    handoff_s_per_token: float

    @property
    def cores_per_layer(self) -> int:
        """Cores in one decoder layer's region (MoE layers: attention, shared experts and
        router; each routed expert has `expert_share` more)."""
        share = self.layer_share if self.layer_share else self.moe_dense_share
        return int(share * self.cores_per_wafer)

    @property
    def latency_s(self) -> float:
        """Fixed seconds of one pass through every layer (see the class docstring)."""
        return self.fixed_s + self.reduce_hops_s + self.reduce_stages_s + self.head_s + self.handoff_s

    @property
    def comm_s_per_token(self) -> float:
        """Seconds each token of a micro-batch adds to its pass."""
        return self.stream_s_per_token + self.handoff_s_per_token

    def region_flops_per_s(self, share: float) -> float:
        """Peak FP16 FLOP/s of a region of `share` of a wafer."""
        return share * self.cores_per_wafer * self.core_flops_per_s

    def region_sram_bytes_per_s(self, share: float) -> float:
        """Peak SRAM bytes/s of a region of `share` of a wafer."""
        return share * self.cores_per_wafer * self.core_sram_bytes_per_s


@dataclass(frozen=True)
class _LayerBytes:
    """Weight bytes of the parts that tile separate regions."""

    attention: float  # one layer's attention block and norms
    dense_mlp: float  # one dense MLP
    moe_dense: float  # shared experts and router of one MoE layer
    expert: float  # one routed expert
    head: float  # the LM head (the embedding table when tied)
    average: float  # all decoder layers / n_layers

    @property
    def dense_layer(self) -> float:
        """A dense layer: attention and MLP."""
        return self.attention + self.dense_mlp

    @property
    def moe_layer_dense_part(self) -> float:
        """What a MoE layer tiles outside its routed experts."""
        return self.attention + self.moe_dense


def _layer_bytes(dep: Deployment) -> _LayerBytes:
    m = dep.model
    wb = weight_bytes(dep)
    n = m.n_layers
    attention = wb.attention / n + 2.0 * m.hidden_size * 2.0  # with its two norms
    dense = (wb.dense_mlp / m.n_dense_layers) if m.n_dense_layers else 0.0
    moe = ((wb.shared_experts + m.router_params_per_layer() * m.n_moe_layers * 2.0)
           / m.n_moe_layers) if m.n_moe_layers else 0.0
    expert = m.expert_params() * dep.weight_bytes_per_param("experts") if m.n_experts else 0.0
    head = wb.lm_head if wb.lm_head else wb.embedding  # tied: the table is the head
    return _LayerBytes(attention, dense, moe, expert, head, wb.layers / n)


def _stream_elements(dep: Deployment) -> tuple[float, float, float]:
    """Output elements per layer whose vectors stream through reduction chains: of the
    attention side (fused QKV, O), of a dense MLP (fused up/gate, down), of a MoE MLP (the top-k
    experts' and shared experts' widths)."""
    m = dep.model
    kv_dim = m.kv_elements_per_token_per_layer() if m.attention_type != "mla" else m.kv_lora_rank
    attn = float(m.q_dim + kv_dim + m.hidden_size)
    dense = float(2 * m.intermediate_size + m.hidden_size)
    moe = float(
        2 * (m.n_experts_per_token * m.expert_intermediate_size
             + m.n_shared_experts * m.shared_expert_intermediate_size)
        + m.hidden_size
    )
    return attn, dense, moe


def layer_cycles(dep: Deployment, side: float, layer_bytes: float) -> float:
    """Decode cycles of one dense layer of `layer_bytes` for one token on a side x side region
    (the autotuner's objective): its GEMVs at the calibrated per-core rate, the fixed cycles and
    `reduce_rounds_per_layer` reduce-and-broadcast rounds with their vector streaming."""
    mesh, eff = mesh_of(dep), dep.eff
    cores = side * side
    params = layer_bytes / dep.weight_bytes_per_param("mlp")
    gemv = max(
        layer_bytes / (cores * mesh.sram_bytes_per_cycle_per_core * eff.memory),
        2.0 * params / (cores * 2.0 * mesh.simd_fp16_lanes * eff.compute),
    )
    rounds = eff.reduce_rounds_per_layer * allreduce_cycles(
        side, mesh.cycles_per_hop, eff.reduce_stage_cycles
    )
    attn, dense, _ = _stream_elements(dep)
    b = mesh.link_bytes_per_cycle / dep.activation_bytes
    return gemv + rounds + eff.layer_fixed_cycles + stream_cycles(attn + dense, side, b)


def autotune_side(dep: Deployment) -> float:
    """The square grid side (cores) a layer-grid engine picks for decode: the one minimising a
    layer's decode cycles, among sides whose cores can hold the layer's weights (WaferLLM
    autotunes its grids offline per model, NOTES d.2)."""
    mesh, eff = mesh_of(dep), dep.eff
    layer_bytes = _layer_bytes(dep).average
    per_core = mesh.sram_per_core_bytes * (1.0 - eff.sram_reserved_fraction)
    lo = max(_MIN_SIDE, int(np.ceil(np.sqrt(layer_bytes / per_core))))
    hi = min(mesh.width_cores, mesh.height_cores)
    if lo > hi:
        return float(hi)
    sides = np.arange(lo, hi + 1, dtype=np.float64)
    cycles = np.array([layer_cycles(dep, s, layer_bytes) for s in sides])
    return float(sides[int(np.argmin(cycles))])


def resident_scale(dep: Deployment, layer_bytes: float, held_bytes: float, share: float) -> float:
    """The fraction of its proportional region a resident layer uses: 1, unless a smaller
    square region (down to the cores whose SRAM the `held_bytes` of weights and cache fill)
    decodes a token faster - reductions across fewer cores against more bytes per core.
    `layer_bytes` (weights), `held_bytes` and `share` are those of a (dense) layer; searched over
    whole sides, so a larger mesh only adds options."""
    mesh, eff = mesh_of(dep), dep.eff
    per_core = mesh.sram_per_core_bytes * (1.0 - eff.sram_reserved_fraction)
    full = square_side(share * mesh.n_cores)
    lo = max(_MIN_SIDE, int(np.ceil(np.sqrt(held_bytes / per_core))))
    hi = int(np.floor(full))
    if lo >= hi:
        return 1.0
    best_side, best = full, layer_cycles(dep, full, layer_bytes)
    for side in range(lo, hi + 1):
        cycles = layer_cycles(dep, float(side), layer_bytes)
        if cycles < best * (1.0 - 1e-12):
            best_side, best = float(side), cycles
    return float((best_side / full) ** 2)


def wafer_layout(dep: Deployment, plan: MemoryPlan) -> WaferLayout:
    """The layout of `dep` on its wafers given its memory plan (see the module docstring)."""
    mesh, eff, m = mesh_of(dep), dep.eff, dep.model
    mapping = mapping_of(dep)
    lb = _layer_bytes(dep)
    cores = mesh.n_cores
    n_dense, n_moe = m.n_dense_layers, m.n_moe_layers
    if mapping == "resident":
        # Each region holds its weights and its layer's share of the KV cache, sized so that
        # every core of the fullest wafer is equally full; or smaller when its reduction latency
        # outweighs the GEMV (`resident_scale`). Routed experts hold no cache.
        kv_layer = plan.kv_bytes / m.n_layers
        wafer_bytes = plan.weight_bytes_per_device + (
            max(plan.kv_bytes_by_device) if plan.kv_bytes_by_device else 0.0
        )
        probe = lb.dense_layer if n_dense else lb.moe_layer_dense_part
        scale = resident_scale(dep, probe, probe + kv_layer, (probe + kv_layer) / wafer_bytes)
        dense_share = scale * (lb.dense_layer + kv_layer) / wafer_bytes if n_dense else 0.0
        moe_share = scale * (lb.moe_layer_dense_part + kv_layer) / wafer_bytes if n_moe else 0.0
        expert_share = scale * lb.expert / wafer_bytes
        head_share = scale * lb.head / wafer_bytes
    elif mapping == "layer-grid":
        grid = float(dep.grid_side or autotune_side(dep)) ** 2 / cores
        dense_share = grid if n_dense else 0.0
        moe_share = grid if n_moe else 0.0
        expert_share = grid * lb.expert / lb.average
        head_share = grid
    else:  # streaming: each layer in turn on the whole wafer
        dense_share = 1.0 if n_dense else 0.0
        moe_share = 1.0 if n_moe else 0.0
        expert_share = 1.0 if n_moe else 0.0
        head_share = 1.0
    attention_share = m.n_layers / (
        (n_dense / dense_share if n_dense else 0.0) + (n_moe / moe_share if n_moe else 0.0)
    )
    clock, alpha, beta = mesh.clock_hz, mesh.cycles_per_hop, eff.reduce_stage_cycles
    rounds = eff.reduce_rounds_per_layer
    attn_rounds, mlp_rounds = rounds * (1.0 - MLP_ROUNDS_SHARE), rounds * MLP_ROUNDS_SHARE
    b = mesh.link_bytes_per_cycle / dep.activation_bytes
    e_attn, e_dense, e_moe = _stream_elements(dep)
    hops = stages = stream = 0.0
    for count, attn_side, mlp_side, mlp_elements in (
        (n_dense, square_side(dense_share * cores), square_side(dense_share * cores), e_dense),
        (n_moe, square_side(moe_share * cores),
         square_side(max(moe_share, expert_share) * cores), e_moe),
    ):
        if not count:
            continue
        hops += count * (attn_rounds * reduce_hops(attn_side) + mlp_rounds * reduce_hops(mlp_side))
        stages += count * (attn_rounds * tree_stages(attn_side) + mlp_rounds * tree_stages(mlp_side))
        stream += count * (stream_cycles(e_attn, attn_side, b) + stream_cycles(mlp_elements, mlp_side, b))
    n_wafers = len(plan.layers_by_device) if plan.layers_by_device else dep.pp
    io = (dep.system.scaleout_bandwidth_bytes_per_s or dep.device.scaleout_bandwidth_bytes_per_s
          or FALLBACK_WAFER_IO_BANDWIDTH_BYTES_PER_S)
    # A token crosses every wafer boundary and, sampled on the last wafer, goes back to the
    # first for the next pass: n hand-offs per pass on n > 1 wafers.
    handoffs = n_wafers if n_wafers > 1 and mapping != "streaming" else 0
    head_side = square_side(head_share * cores)
    return WaferLayout(
        mapping=mapping,
        n_wafers=n_wafers,
        cores_per_wafer=cores,
        layers_by_wafer=plan.layers_by_device,
        layer_share=dense_share,
        attention_share=attention_share,
        moe_dense_share=moe_share,
        expert_share=expert_share,
        head_share=head_share,
        side_cores=square_side((dense_share or moe_share) * cores),
        clock_hz=clock,
        core_flops_per_s=2.0 * mesh.simd_fp16_lanes * clock,
        core_sram_bytes_per_s=mesh.sram_bytes_per_cycle_per_core * clock,
        stream_bandwidth_bytes_per_s=io * eff.link,
        fixed_s=m.n_layers * eff.layer_fixed_cycles / clock,
        reduce_hops_s=hops * alpha / clock,
        reduce_stages_s=stages * beta / clock,
        head_s=allreduce_cycles(head_side, alpha, beta) / clock,
        handoff_s=handoffs * eff.handoff_s,
        stream_s_per_token=stream / clock,
        handoff_s_per_token=handoffs * m.hidden_size * dep.activation_bytes / (io * eff.link),
    )


def time_components(layout: WaferLayout, breakdown: StepBreakdown) -> dict[str, float]:
    """Seconds of one wafer step by mesh component: weight GEMVs (decode and prefill), attention
    over the KV cache, fixed cycles per layer, reduction hops (alpha) and software stages (beta),
    vector streaming through the reduction chains, wafer hand-offs, host overhead. They sum to
    the step time."""
    gemv = attention = prefill = 0.0
    for op in breakdown.operators:
        if "attention (" in op.name:
            attention += op.time_s
        elif op.name.endswith("(prefill)"):
            prefill += op.time_s
        else:
            gemv += op.time_s
    stream = breakdown.communication_s
    tokens_handoff = 0.0
    if layout.comm_s_per_token > 0:
        tokens_handoff = stream * layout.handoff_s_per_token / layout.comm_s_per_token
    return {
        "weight GEMVs": gemv,
        "prefill GEMMs": prefill,
        "attention over the KV cache": attention,
        "fixed cycles per layer": layout.fixed_s,
        "reduction hops (alpha)": layout.reduce_hops_s + layout.head_s,
        "reduction stages (beta)": layout.reduce_stages_s,
        "vector streaming": stream - tokens_handoff,
        "wafer hand-offs": layout.handoff_s + tokens_handoff,
        "host overhead": breakdown.overhead_s,
    }
