"""Wafer-scale engines: the mesh arithmetic, the mapping of layers onto wafers and core regions,
SRAM that is never over capacity, the WaferLLM tables the priors come from, monotonicity, the
layer pipeline, speculative decoding on the wafers and weight streaming from MemoryX
(shared/data/wafer/NOTES.md)."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megawatt.errors import FitError, InputError
from megawatt.hardware import load_catalog
from megawatt.model import load_model
from megawatt.perf import BatchShape, Deployment, RooflineStepModel, plan_memory
from megawatt.perf.efficiency import ENGINE_RELEASES, engine_release, prior
from megawatt.perf.mesh import allreduce_cycles, assign_layers, reduce_hops, tree_stages
from megawatt.perf.speculative import SpeculativeStepModel, wafer_speculation
from megawatt.perf.wafer import MAPPINGS, mapping_of, time_components
from megawatt.plan import min_devices
from megawatt.units import GB

CATALOG = load_catalog()


def on(system_id: str, model_id: str, wafers: int | None = None, **settings: Any) -> Deployment:
    """A model on `wafers` wafers of a Cerebras system (the fewest that hold it by default)."""
    system = CATALOG.system(system_id)
    settings.setdefault("engine", "cerebras")
    settings.setdefault("efficiencies", prior("wafer", settings["engine"]))
    dep = Deployment(load_model(model_id), system, CATALOG.device(system.device_id), **settings)
    return replace(dep, pp=wafers or min_devices(dep))


def speed(dep: Deployment, context: int = 1024) -> float:
    """Tokens/s of one sequence decoding alone."""
    sm = RooflineStepModel(dep)
    return 1.0 / sm.step_time(BatchShape.of([context], [], sm.window_tokens))


# -- mesh arithmetic (NOTES c.3, c.4) ---------------------------------------------------------


@pytest.mark.parametrize(("side", "groups_of"), [(720, 30), (420, 21), (360, 20)])
def test_a_two_level_tree_has_about_sqrt_side_software_stages(side: int, groups_of: int) -> None:
    # WaferLLM's configs: 720 -> 24 groups of 30, 420 -> 20 of 21, 360 -> 18 of 20.
    code_stages = groups_of / 2 + (side / groups_of) / 2
    assert tree_stages(side) == pytest.approx(code_stages, rel=0.05)
    assert tree_stages(side) == pytest.approx(math.sqrt(side), rel=0.05)


def test_a_round_costs_hops_times_alpha_plus_stages_times_beta() -> None:
    assert reduce_hops(200) == 300  # 200 hops of reduction, 100 of broadcast from the middle
    assert allreduce_cycles(200, 1.0, 0.0) == 300
    assert allreduce_cycles(200, 2.0, 5.0) == pytest.approx(600 + 5 * tree_stages(200))
    assert tree_stages(1) == 0


def test_layers_are_dealt_out_whole_and_evenly_with_lighter_edge_wafers() -> None:
    assert assign_layers(80, 4) == (20, 20, 20, 20)
    assert assign_layers(10, 3) == (3, 4, 3)
    counts = assign_layers(126, 22, 6.4, (2.1,) + (0.0,) * 20 + (2.1,))
    assert sum(counts) == 126 and max(counts) - min(counts) <= 1
    loads = [c * 6.4 + e for c, e in zip(counts, (2.1,) + (0.0,) * 20 + (2.1,), strict=True)]
    assert max(loads) <= 6 * 6.4 + 1e-9  # no wafer heavier than six layers
    # A draft model on the last wafer pushes layers to the others.
    with_draft = assign_layers(80, 5, 1.7, (1.05, 0, 0, 0, 1.05 + 16))
    assert sum(with_draft) == 80 and with_draft[-1] < with_draft[1]


@pytest.mark.parametrize("model_id", ["llama-3.1-8b", "llama-3.1-70b", "gpt-oss-120b"])
def test_core_regions_tile_each_wafer_and_never_exceed_it(model_id: str) -> None:
    dep = on("cs-3", model_id)
    plan = plan_memory(dep)
    lay = RooflineStepModel(dep, plan).layout
    assert lay is not None and lay.mapping == "resident"
    m = dep.model
    for i, layers in enumerate(plan.layers_by_device):
        dense = m.n_dense_layers / m.n_layers * layers
        moe = layers - dense
        used = dense * lay.layer_share + moe * (
            lay.moe_dense_share + m.n_experts * lay.expert_share
        )
        used += lay.head_share if i == len(plan.layers_by_device) - 1 else 0.0
        assert used <= 1.0 + 1e-9
    assert lay.cores_per_layer <= lay.cores_per_wafer


# -- SRAM accounting ------------------------------------------------------------------------------

MODELS = ["llama-3.1-8b", "llama-3.1-70b", "gpt-oss-120b", "qwen3-32b", "llama-4-scout"]


@given(
    model_id=st.sampled_from(MODELS),
    extra=st.integers(0, 3),
    tokens=st.sampled_from([2048, 8192, 32768]),
    draft=st.booleans(),
    context=st.integers(1, 200_000),
)
@settings(max_examples=60, deadline=None)
def test_sram_is_never_over_capacity(
    model_id: str, extra: int, tokens: int, draft: bool, context: int
) -> None:
    dep = on("cs-3", model_id, max_num_batched_tokens=tokens)
    if draft:
        dep = replace(dep, draft_model=load_model("llama-3.1-8b"))
        dep = replace(dep, pp=min_devices(dep))
    dep = replace(dep, pp=dep.pp + extra)
    plan = plan_memory(dep)
    assert len(plan.weight_bytes_by_device) == dep.pp == len(plan.kv_bytes_by_device)
    for weights, kv in zip(plan.weight_bytes_by_device, plan.kv_bytes_by_device, strict=True):
        used = weights + kv + plan.workspace_bytes_per_device + plan.reserved_bytes_per_device
        assert used <= plan.capacity_bytes_per_device * (1 + 1e-12)
    assert sum(plan.kv_bytes_by_device) == pytest.approx(plan.kv_bytes)
    assert sum(plan.layers_by_device) == dep.model.n_layers
    n = plan.max_sequences(context)
    assert n * plan.sequence_kv_bytes(context) <= plan.kv_bytes
    # A longer context never raises the maximum batch.
    assert plan.max_sequences(context + 1000) <= n


def test_the_public_memory_facts_hold() -> None:
    # NOTES g.4.1: 8B at 16-bit on one CS-3 (~36% of its SRAM); 70B needs 4; 405B at least 19.
    assert min_devices(on("cs-3", "llama-3.1-8b", 1)) == 1
    assert on("cs-3", "llama-3.1-70b").pp == 4
    assert on("cs-3", "llama-3.1-405b").pp >= 19
    plan = plan_memory(on("cs-3", "llama-3.1-70b"))
    # g.4.2: <= ~35 GB left for KV on 4 wafers -> at most ~107k tokens of context.
    assert plan.kv_bytes <= 35 * GB and plan.kv_tokens <= 107_000


def test_a_draft_model_takes_sram_and_caches_alongside_its_target() -> None:
    alone = plan_memory(on("cs-3", "llama-3.1-70b", 5))
    with_draft = plan_memory(on("cs-3", "llama-3.1-70b", 5, draft_model=load_model("llama-3.1-8b")))
    assert with_draft.draft_weight_bytes == pytest.approx(16 * GB, rel=0.02)
    assert with_draft.draft_on_last_device
    assert with_draft.kv_bytes_per_token == alone.kv_bytes_per_token + 131_072
    assert with_draft.kv_bytes < alone.kv_bytes
    with pytest.raises(FitError):  # 70B and an 8B draft do not fit 4 CS-3
        plan_memory(on("cs-3", "llama-3.1-70b", 4, draft_model=load_model("llama-3.1-8b")))


# -- WaferLLM tables (the prior) ----------------------------------------------------------------

# Table 4: decode tokens/s per request at ~4K context on 420^2 / 540^2 / 660^2 grids (WSE-2).
TABLE_4 = {"llama-3-8b": (2699.9, 2501.5, 2243.3), "qwen2-72b": (839.7, 824.3, 787.1)}
# Table 3: 4,096-token prefill, prompt tokens/s, on 480^2 / 600^2 grids (720^2 in the text).
TABLE_3 = {"llama-3-8b": (20320.6, 25037.2), "qwen2-72b": (2785.2, 3775.5)}


def waferllm(model_id: str, side: int, **settings: Any) -> RooflineStepModel:
    dep = on("cs-2", model_id, engine="waferllm", grid_side=side, **settings)
    return RooflineStepModel(dep)


def one_layer_scaled(sm: RooflineStepModel, t: float, tokens: int = 1) -> float:
    """The paper's convention: one layer times the layer count, without hand-offs."""
    assert sm.layout is not None
    return t - sm.layout.handoff_s - sm.layout.handoff_s_per_token * tokens


@pytest.mark.parametrize("model_id", sorted(TABLE_4))
def test_waferllm_decode_per_layer_within_15_percent_and_more_cores_hurt(model_id: str) -> None:
    times = []
    for side, measured in zip((420, 540, 660), TABLE_4[model_id], strict=True):
        sm = waferllm(model_id, side)
        t = one_layer_scaled(sm, sm.step_time(BatchShape.of([4096], [])))
        assert 1.0 / t == pytest.approx(measured, rel=0.15)
        times.append(t)
    assert times[0] < times[1] < times[2]  # NOTES g.4.6: for decode, more cores hurt


@pytest.mark.parametrize("model_id", sorted(TABLE_3))
def test_waferllm_prefill_within_30_percent_on_480_and_600_grids(model_id: str) -> None:
    # On 720^2 the paper's prefill gains less than this model (its MeshGEMM per-step overhead
    # grows with the grid side; here prefill scales with the cores): not asserted.
    for side, measured in zip((480, 600), TABLE_3[model_id], strict=True):
        sm = waferllm(model_id, side, max_num_batched_tokens=4096)
        t = one_layer_scaled(sm, sm.step_time(BatchShape.of([], [(4096, 0)])), 4096)
        assert 4096 / t == pytest.approx(measured, rel=0.30)


def test_waferllm_autotunes_a_decode_grid_below_the_largest() -> None:
    dep = on("cs-2", "llama-3-8b", engine="waferllm")
    lay = RooflineStepModel(dep).layout
    assert lay is not None and lay.mapping == "layer-grid"
    assert 200 <= lay.side_cores <= 500  # the paper's decode grids: 360^2 to 420^2


# -- sanity checks of NOTES g.4 ------------------------------------------------------------------


def test_decode_is_latency_bound_far_from_the_bandwidth_roofline() -> None:
    dep = on("cs-3", "llama-3.1-8b", engine="cerebras-2024-08")
    per_token = 1.0 / speed(dep)
    roofline = plan_memory(dep).weight_bytes_total / dep.device.mem_bandwidth_bytes_per_s
    assert per_token > 100 * roofline  # g.4.4: 16 GB / 21 PB/s = 0.76 us is 700x too fast
    per_layer = per_token / dep.model.n_layers
    assert 1e-6 < per_layer < 100e-6  # g.4.3


def test_hand_offs_are_a_small_share_of_a_70b_token() -> None:
    dep = on("cs-3", "llama-3.1-70b")
    sm = RooflineStepModel(dep)
    bd = sm.breakdown(BatchShape.of([1024], []))
    assert sm.layout is not None
    parts = time_components(sm.layout, bd)
    assert sum(parts.values()) == pytest.approx(bd.total_s)
    assert parts["wafer hand-offs"] < 0.1 * bd.total_s  # g.4.5
    assert sm.layout.n_wafers == 4


# -- monotonicity --------------------------------------------------------------------------------


def with_mesh(dep: Deployment, **changes: Any) -> Deployment:
    assert dep.device.mesh is not None
    mesh = dep.device.mesh.model_copy(update=changes)
    return replace(dep, device=dep.device.model_copy(update={"mesh": mesh}))


@pytest.mark.parametrize("model_id", ["llama-3.1-8b", "llama-3.1-70b", "gpt-oss-120b"])
@pytest.mark.parametrize("engine", ["cerebras", "cerebras-2024-08"])
@pytest.mark.parametrize(
    "changes",
    [
        {"width_cores": 900, "height_cores": 1300},
        {"sram_bytes_per_cycle_per_core": 48.0},
        {"cycles_per_hop": 0.5},
        {"simd_fp16_lanes": 16},
    ],
    ids=["more-cores", "more-sram-bandwidth", "faster-hops", "wider-simd"],
)
def test_a_better_mesh_is_never_slower(model_id: str, engine: str, changes: dict[str, Any]) -> None:
    dep = on("cs-3", model_id, engine=engine)
    better = with_mesh(dep, **changes)
    for shape in (BatchShape.of([1024], []), BatchShape.of([4096] * 8, []), BatchShape.of([], [(2048, 0)])):
        slow = RooflineStepModel(dep).step_time(shape)
        fast = RooflineStepModel(better).step_time(shape)
        assert fast <= slow * (1 + 1e-9)


# -- the layer pipeline ----------------------------------------------------------------------------


def test_sequences_in_flight_share_the_layer_pipeline() -> None:
    dep = on("cs-3", "llama-3.1-8b")
    sm = RooflineStepModel(dep)
    depth = sm.pipeline_depth
    assert depth == dep.model.n_layers
    one = sm.step_time(BatchShape.of([1024], []))
    full = sm.step_time(BatchShape.of([1024] * depth, []))
    # Up to `depth` sequences each advance a token in the time one takes: throughput x depth.
    assert full == pytest.approx(one, rel=1e-9)
    beyond = sm.step_time(BatchShape.of([1024] * (4 * depth), []))
    assert beyond > full


# -- speculative decoding on the same wafers ---------------------------------------------------


def test_speculative_decoding_with_a_draft_on_the_wafers() -> None:
    dep = on("cs-3", "llama-3.1-70b", 5, draft_model=load_model("llama-3.1-8b"))
    spec = wafer_speculation(dep, 3, 0.8)
    assert 0.0 < spec.draft_cost < 1.0
    target = RooflineStepModel(dep)
    batch = BatchShape.of([1024], [])
    pipelined = SpeculativeStepModel(target, spec, pipelined_verify=True)
    batched = SpeculativeStepModel(target, spec)
    # The k extra tokens follow the first through the 80-layer pipeline: a verify pass costs
    # about one pass, so each token costs (1 + k x draft_cost) / tokens per verify of a pass.
    per_token = pipelined.step_time(batch)
    plain = target.step_time(batch)
    assert per_token <= batched.step_time(batch)
    assert per_token == pytest.approx(
        plain * (1 + 3 * spec.draft_cost) / spec.tokens_per_step, rel=0.05
    )
    with pytest.raises(InputError, match="draft_model"):
        wafer_speculation(on("cs-3", "llama-3.1-70b"), 3, 0.8)


# -- weight streaming --------------------------------------------------------------------------------


def test_weight_streaming_fits_anything_on_one_wafer_at_a_much_lower_speed() -> None:
    resident = on("cs-3", "llama-3.1-70b")
    streaming = on("cs-3", "llama-3.1-70b", 1, weight_streaming=True)
    plan = plan_memory(streaming)
    assert plan.weight_streaming and plan.weight_bytes_per_device < 4 * GB
    assert plan.kv_bytes > plan_memory(resident).kv_bytes / 4 * 3  # one wafer, mostly KV
    assert speed(streaming) < speed(resident) / 100
    # The whole batch shares each pass's weight stream: throughput grows with the batch.
    sm = RooflineStepModel(streaming)
    assert sm.pipeline_depth == 1
    assert sm.step_time(BatchShape.of([1024] * 16, [])) < 1.2 * sm.step_time(BatchShape.of([1024], []))
    with pytest.raises(InputError, match="pp must be 1 with weight_streaming"):
        on("cs-3", "llama-3.1-70b", 2, weight_streaming=True)
    with pytest.raises(FitError, match=r"weight_streaming"):
        plan_memory(on("cs-3", "llama-3.1-70b", 1))


def test_wafer_options_are_refused_on_gpus() -> None:
    system = CATALOG.system("hgx-h200")
    model = load_model("llama-3.1-8b")
    with pytest.raises(InputError, match="wafer-scale engines only"):
        Deployment(model, system, CATALOG.device("h200-sxm"), weight_streaming=True)


# -- engines ---------------------------------------------------------------------------------------


def test_a_measurement_date_picks_the_cerebras_release() -> None:
    assert engine_release("cerebras", "2024-08-27") == "cerebras-2024-08"
    assert engine_release("cerebras", "2024-10/11 (not dated)") == "cerebras"
    assert engine_release("cerebras", "2025 (undated)") == "cerebras"
    assert engine_release("cerebras", "") == "cerebras"  # undated: the newest
    assert engine_release("sglang", "2023-01") == "sglang"  # one release only
    assert engine_release("trtllm", "2024-08-28") == "trtllm-2024"
    assert engine_release("trtllm", "2025") == "trtllm"
    assert {r[1] for r in ENGINE_RELEASES["cerebras"]} <= set(MAPPINGS)


def test_an_engine_without_a_wafer_mapping_lists_the_known_ones() -> None:
    dep = on("cs-3", "llama-3.1-8b")
    with pytest.raises(InputError, match="known wafer engines: cerebras"):
        mapping_of(replace(dep, engine="vllm"))


def test_a_pool_can_choose_weight_streaming() -> None:
    from megawatt.plan import PoolSettings, candidates

    system = CATALOG.system("cs-3")
    (dep,) = candidates(
        load_model("llama-3.1-405b"), system, CATALOG.device("wse3"),
        PoolSettings(engine="cerebras", weight_streaming=True), 8192,
    )
    assert dep.weight_streaming and dep.pp == 1
    assert plan_memory(dep).max_sequences(8192) >= 4  # 405B's cache on one wafer
