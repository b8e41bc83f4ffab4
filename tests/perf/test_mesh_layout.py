"""Wafer mesh arithmetic by hand (tree stages, hops, streaming, square regions), layers dealt out
to wafers (whole, contiguous, none lost, the fullest wafer as light as it can be), and a wafer
step split into mesh components that add up to the step time."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megawatt.errors import InputError
from megawatt.hardware import load_catalog
from megawatt.model import load_model
from megawatt.perf import BatchShape, Deployment, RooflineStepModel
from megawatt.perf.mesh import (
    allreduce_cycles,
    assign_layers,
    reduce_hops,
    square_side,
    stream_cycles,
    tree_stages,
)
from megawatt.perf.wafer import mapping_of, mesh_of, time_components

PROPERTY = settings(max_examples=60, deadline=None)
CATALOG = load_catalog()


# -- mesh arithmetic ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "stages"),
    [
        (100, 10 / 2 + 10 / 2),  # groups of 10, 10 groups
        (50, 7 / 2 + 8 / 2),  # groups of round(7.07) = 7, ceil(50 / 7) = 8 groups
        (2, 1 / 2 + 2 / 2),  # groups of 1, 2 groups
        (1, 0.0),
        (0.5, 0.0),
    ],
)
def test_tree_stages_by_hand(side: float, stages: float) -> None:
    assert tree_stages(side) == stages


def test_a_round_over_a_region_by_hand() -> None:
    """A 100-core side: 150 hops at 2 cycles, 10 stages at 5 cycles."""
    assert reduce_hops(100) == 150.0
    assert allreduce_cycles(100, 2.0, 5.0) == 150 * 2 + 10 * 5


def test_streaming_a_vector_fills_the_chain_twice() -> None:
    """8,192 elements over 64 cores, 4 elements a cycle: 2 x 128 / 4 = 64 cycles."""
    assert stream_cycles(8_192, 64, 4.0) == 64.0


def test_square_regions_take_the_root_of_their_cores_and_at_least_one() -> None:
    assert square_side(10_000) == 100.0
    assert square_side(0.25) == 1.0
    assert square_side(0.0) == 1.0


@PROPERTY
@given(st.floats(1.0, 1e6))
def test_tree_stages_grow_like_the_square_root(side: float) -> None:
    """g / 2 + ceil(side / g) / 2 with g ~ sqrt(side): between sqrt(side) - 1 and
    sqrt(side) + 2."""
    assert math.sqrt(side) - 1.0 <= tree_stages(side) <= math.sqrt(side) + 2.0


# -- layers dealt out to wafers -------------------------------------------------------------------


def fullest(counts: tuple[int, ...], layer: float, extras: tuple[float, ...]) -> float:
    padded = list(extras) + [0.0] * (len(counts) - len(extras))
    return max(c * layer + e for c, e in zip(counts, padded, strict=True))


@PROPERTY
@given(
    st.integers(1, 80),
    st.integers(1, 6),
    st.floats(0.5, 10.0),
    st.lists(st.floats(0.0, 20.0), max_size=6),
)
def test_every_layer_lands_on_a_wafer_and_the_fullest_is_as_light_as_possible(
    n_layers: int, n_wafers: int, layer: float, extras: list[float]
) -> None:
    counts = assign_layers(n_layers, n_wafers, layer, tuple(extras))
    assert len(counts) == n_wafers
    assert sum(counts) == n_layers
    assert all(c >= 0 for c in counts)
    best = fullest(counts, layer, tuple(extras[:n_wafers]))
    if n_wafers <= 3 and n_layers <= 20:
        # Brute force over every split: none has a lighter fullest wafer.
        for split in itertools.product(range(n_layers + 1), repeat=n_wafers):
            if sum(split) == n_layers:
                assert best <= fullest(split, layer, tuple(extras[:n_wafers])) + 1e-6


def test_equal_wafers_share_layers_evenly_and_ties_go_inside() -> None:
    assert assign_layers(12, 4) == (3, 3, 3, 3)
    assert assign_layers(13, 3) == (4, 5, 4)
    assert assign_layers(1, 3) == (0, 1, 0)


def test_a_heavy_table_on_an_edge_wafer_takes_layers_off_it() -> None:
    """An embedding table worth two layers on the first of two wafers: 10 layers split 4 + 6
    leave each wafer six layers' worth, the one split with no wafer above six."""
    assert assign_layers(10, 2, 1.0, (2.0, 0.0)) == (4, 6)


@pytest.mark.parametrize(("layers", "wafers"), [(0, 1), (5, 0)])
def test_no_layers_or_no_wafers_is_an_error(layers: int, wafers: int) -> None:
    with pytest.raises(ValueError, match=f"need at least one layer and one wafer; got {layers} and {wafers}"):
        assign_layers(layers, wafers)


# -- a wafer step in components -----------------------------------------------------------------


@cache
def cs3(model_id: str, wafers: int, engine: str = "cerebras") -> RooflineStepModel:
    system = CATALOG.system("cs-3")
    return RooflineStepModel(Deployment(
        load_model(model_id), system, CATALOG.device(system.device_id), pp=wafers,
        weight_dtype="bf16", engine=engine,
    ))


@pytest.mark.parametrize(
    ("model_id", "wafers", "engine"),
    [("llama-3.1-8b", 1, "cerebras"), ("llama-3.1-70b", 4, "cerebras"),
     ("llama-3.1-8b", 1, "waferllm")],
)
@pytest.mark.parametrize(
    ("decode", "prefill"),
    [([1_000], []), ([500] * 8, []), ([2_000] * 3, [(512, 0)]), ([], [(2_048, 100)])],
)
def test_the_components_of_a_wafer_step_add_up_to_it(
    model_id: str, wafers: int, engine: str, decode: list[int], prefill: list[tuple[int, int]]
) -> None:
    sm = cs3(model_id, wafers, engine)
    assert sm.layout is not None
    batch = BatchShape.of(decode, prefill, sm.window_tokens)
    parts = time_components(sm.layout, sm.breakdown(batch))
    assert all(v >= 0.0 for v in parts.values()), parts
    assert sum(parts.values()) == pytest.approx(sm.breakdown(batch).total_s, rel=1e-9)
    if not prefill:
        assert parts["prefill GEMMs"] == 0.0


def test_one_wafer_hands_nothing_off_and_four_hand_off_four_times_a_pass() -> None:
    """A token crosses each of the three boundaries and goes back to the first wafer."""
    one, four = cs3("llama-3.1-8b", 1).layout, cs3("llama-3.1-70b", 4).layout
    assert one is not None and four is not None
    assert (one.handoff_s, one.handoff_s_per_token) == (0.0, 0.0)
    dep = cs3("llama-3.1-70b", 4).deployment
    assert four.handoff_s == pytest.approx(4 * dep.eff.handoff_s)
    assert four.n_wafers == 4
    assert sum(four.layers_by_wafer) == 80


def test_fixed_cycles_are_per_layer_at_the_clock() -> None:
    sm = cs3("llama-3.1-8b", 1)
    assert sm.layout is not None
    dep = sm.deployment
    assert sm.layout.fixed_s == pytest.approx(
        32 * dep.eff.layer_fixed_cycles / mesh_of(dep).clock_hz, rel=1e-12
    )
    assert sm.layout.latency_s == pytest.approx(
        sm.layout.fixed_s + sm.layout.reduce_hops_s + sm.layout.reduce_stages_s
        + sm.layout.head_s + sm.layout.handoff_s, rel=1e-12
    )


def test_regions_scale_with_their_share_of_the_wafer() -> None:
    lay = cs3("llama-3.1-8b", 1).layout
    assert lay is not None
    assert lay.region_flops_per_s(0.5) == pytest.approx(0.5 * lay.region_flops_per_s(1.0))
    assert lay.region_sram_bytes_per_s(1.0) == pytest.approx(
        lay.cores_per_wafer * lay.core_sram_bytes_per_s
    )


def test_mappings_follow_the_engine_and_streaming() -> None:
    dep = cs3("llama-3.1-8b", 1).deployment
    assert mapping_of(dep) == "resident"
    assert mapping_of(replace(dep, engine="waferllm")) == "layer-grid"
    assert mapping_of(replace(dep, weight_streaming=True)) == "streaming"


def test_a_wafer_without_mesh_data_names_the_device_and_the_fields() -> None:
    dep = cs3("llama-3.1-8b", 1).deployment
    bare = replace(dep, device=dep.device.model_copy(update={"mesh": None}))
    with pytest.raises(InputError, match=r"device wse3 is a wafer without a `mesh` block"):
        mesh_of(bare)
