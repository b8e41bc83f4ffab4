"""What a sequence holds in the KV cache (`sequence_bytes`, by hand from its docstring) and the
`KvBudget` that refuses impossible caches."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megawatt.errors import InputError
from megawatt.perf import MemoryPlan
from megawatt.serving.kv import KvBudget, sequence_bytes

PROPERTY = settings(max_examples=60, deadline=None)


def plan(
    kv_bytes: float = 1e9,
    per_token: float = 1_000.0,
    per_token_windowed: float = 0.0,
    window: int | None = None,
) -> MemoryPlan:
    """A memory plan with only the KV fields that matter here."""
    return MemoryPlan(
        memory="HBM", capacity_bytes_per_device=2e9, usable_bytes_per_device=1.8e9,
        weight_bytes_total=5e8, weight_bytes_per_device=5e8, workspace_bytes_per_device=3e8,
        kv_bytes_per_device=kv_bytes, kv_replication=1.0, kv_bytes=kv_bytes,
        kv_bytes_per_token=per_token, kv_bytes_per_token_windowed=per_token_windowed,
        window_tokens=window, layers_per_stage=4,
    )


# -- sequence_bytes -----------------------------------------------------------------------------


def test_a_sequence_holds_its_tokens_and_half_a_block() -> None:
    """100 tokens at 10 bytes with 16-token blocks: 10 x (100 + 8)."""
    assert sequence_bytes(100, 10.0, 0.0, 0, 8.0) == 1_080.0


def test_windowed_layers_hold_at_most_the_window() -> None:
    """3 bytes a token on windowed layers with a 64-token window: a 100-token sequence adds
    3 x 64, a 10-token one 3 x 10."""
    assert sequence_bytes(100, 10.0, 3.0, 64, 8.0) == 1_080.0 + 192.0
    assert sequence_bytes(10, 10.0, 3.0, 64, 8.0) == 10.0 * 18 + 30.0


def test_without_a_window_windowed_bytes_count_nothing() -> None:
    assert sequence_bytes(100, 10.0, 3.0, 0, 8.0) == 1_080.0


@pytest.mark.parametrize("ctx", [0.0, -5.0])
def test_an_empty_sequence_holds_nothing_not_even_half_a_block(ctx: float) -> None:
    assert sequence_bytes(ctx, 10.0, 3.0, 64, 8.0) == 0.0


@PROPERTY
@given(
    st.integers(1, 200_000),
    st.floats(0.0, 1e6),
    st.floats(0.0, 1e6),
    st.one_of(st.just(0), st.integers(1, 10_000)),
    st.sampled_from([0.0, 0.5, 8.0, 64.0]),
)
def test_one_more_token_costs_its_bytes_on_every_layer_it_still_reaches(
    ctx: int, per_token: float, windowed: float, window: int, half_block: float
) -> None:
    """The marginal token costs `per_token`, plus `per_token_windowed` while the sequence is
    still inside the window."""
    grow = sequence_bytes(ctx + 1, per_token, windowed, window, half_block) - sequence_bytes(
        ctx, per_token, windowed, window, half_block
    )
    expected = per_token + (windowed if 0 < window and ctx + 1 <= window else 0.0)
    assert grow == pytest.approx(expected, rel=1e-9, abs=1e-6)


@PROPERTY
@given(st.integers(1, 100_000), st.floats(1.0, 1e5), st.integers(1, 4_096))
def test_a_sequence_holds_between_its_full_tokens_and_full_tokens_plus_window(
    ctx: int, per_token: float, window: int
) -> None:
    """With the same bytes per token on both kinds of layers a sequence holds at least its
    full-attention tokens and at most twice them (the window caps the windowed share)."""
    got = sequence_bytes(ctx, per_token, per_token, window, 0.0)
    assert per_token * ctx <= got <= 2 * per_token * ctx * (1 + 1e-12)
    assert got == pytest.approx(per_token * (ctx + min(ctx, window)), rel=1e-12)


# -- KvBudget -----------------------------------------------------------------------------------


def test_the_budget_charges_half_of_its_block_size() -> None:
    budget = KvBudget(1e6, 10.0, block_tokens=32)
    assert budget.sequence_bytes(100) == 10.0 * (100 + 16)
    assert KvBudget(1e6, 10.0, block_tokens=1).sequence_bytes(100) == 10.0 * 100.5


def test_the_budget_passes_its_window_and_ignores_windowed_bytes_without_one() -> None:
    windowed = KvBudget(1e6, 10.0, 4.0, window_tokens=50)
    assert windowed.sequence_bytes(80) == 10.0 * 88 + 4.0 * 50
    assert KvBudget(1e6, 10.0, 4.0, window_tokens=None).sequence_bytes(80) == 10.0 * 88


def test_the_budget_of_a_plan_takes_its_capacity_and_costs() -> None:
    p = plan(kv_bytes=3e9, per_token=2_048.0, per_token_windowed=512.0, window=128)
    b = KvBudget.of(p, block_tokens=8)
    assert (b.capacity_bytes, b.bytes_per_token, b.bytes_per_token_windowed) == (
        3e9, 2_048.0, 512.0,
    )
    assert (b.window_tokens, b.block_tokens) == (128, 8)


@PROPERTY
@given(st.integers(1, 100_000), st.one_of(st.none(), st.integers(1, 8_192)), st.integers(1, 64))
def test_the_budget_is_the_plans_sequence_bytes_plus_half_a_block_of_full_layers(
    ctx: int, window: int | None, block: int
) -> None:
    """`MemoryPlan.sequence_kv_bytes` counts no fragmentation; the paged cache adds half a
    block of the full-attention layers' bytes."""
    p = plan(per_token=1_024.0, per_token_windowed=256.0 if window else 0.0, window=window)
    b = KvBudget.of(p, block_tokens=block)
    assert b.sequence_bytes(ctx) == pytest.approx(
        p.sequence_kv_bytes(ctx) + 1_024.0 * block / 2, rel=1e-12
    )


@pytest.mark.parametrize("capacity", [0.0, -1.0, math.nan])
def test_a_cache_without_room_is_refused(capacity: float) -> None:
    with pytest.raises(InputError, match=f"KV capacity must be > 0 bytes; got {capacity}"):
        KvBudget(capacity, 10.0)


@pytest.mark.parametrize(("per_token", "windowed"), [(-1.0, 0.0), (0.0, -0.5)])
def test_negative_bytes_per_token_are_refused(per_token: float, windowed: float) -> None:
    with pytest.raises(InputError, match="KV bytes per token must be >= 0"):
        KvBudget(1e6, per_token, windowed)


def test_a_cache_of_zero_bytes_per_token_is_allowed_and_free() -> None:
    """A stateless model (no attention cache) holds nothing whatever its context."""
    assert KvBudget(1.0, 0.0).sequence_bytes(1e9) == 0.0


# -- MemoryPlan's KV arithmetic ---------------------------------------------------------------


def test_max_sequences_is_the_capacity_over_one_sequences_bytes_rounded_down() -> None:
    """1e6 bytes, 1,000 a token: 1,000 tokens of context each -> 1 sequence; 300 -> 3."""
    p = plan(kv_bytes=1e6, per_token=1_000.0)
    assert p.max_sequences(1_000) == 1
    assert p.max_sequences(300) == 3
    assert p.max_sequences(1_001) == 0
    assert p.max_sequences(0) == 0  # a sequence of nothing costs nothing: no count


def test_kv_tokens_charge_windowed_layers_at_full_rate() -> None:
    """Capacity in tokens counts every token on the windowed layers too: 1e6 / (1,000 + 250)."""
    assert plan(kv_bytes=1e6, per_token=1_000.0, per_token_windowed=250.0, window=64).kv_tokens == 800
    assert plan(kv_bytes=1e6, per_token=1_000.0, per_token_windowed=250.0).kv_tokens == 1_000
    assert plan(kv_bytes=1e6, per_token=0.0).kv_tokens == 0


def test_windowed_sequences_fit_more_of_them_at_long_context() -> None:
    """Past the window a sequence's windowed layers stop growing: at 10,000 tokens of context,
    with a 100-token window, it holds 10,000 x 1,000 + 100 x 250 bytes."""
    p = plan(kv_bytes=1e8, per_token=1_000.0, per_token_windowed=250.0, window=100)
    assert p.sequence_kv_bytes(10_000) == 10_000 * 1_000 + 100 * 250
    assert p.max_sequences(10_000) == int(1e8 // (10_000 * 1_000 + 100 * 250))
