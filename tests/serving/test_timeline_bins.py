"""The timeline's bin arithmetic on hand-made steps: a step split at bin edges, its tokens in the
last bin it touches, widening that keeps every total, the vectorised decode stretch agreeing
with single steps, the table's spans and means, and pools merged on the widest bins."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megawatt.serving import Timeline
from megawatt.serving.timeline import BIN_S, BUSY, KV, LAST_S, N_BINS, SEQ, TOKENS, add_step

PROPERTY = settings(max_examples=50, deadline=None)

# A run as steps: (duration, idle before it, batch, KV bytes, tokens). Dyadic durations keep
# sums exact.
steps = st.lists(
    st.tuples(
        st.integers(1, 64).map(lambda k: k / 16.0),
        st.integers(0, 32).map(lambda k: k / 16.0),
        st.integers(1, 64),
        st.integers(0, 1_000),
        st.integers(0, 64),
    ),
    min_size=1,
    max_size=40,
)


def replay(tl: Timeline, run: list[tuple[float, float, int, int, int]]) -> list[tuple[float, ...]]:
    """Add `run`'s steps one after another from the origin; returns them as (start, end, batch,
    kv, tokens)."""
    t = tl.origin_s
    out = []
    for dur, idle, batch, kv, tokens in run:
        start = t + idle
        t = start + dur
        tl.add_step(start, t, float(batch), float(kv), float(tokens))
        out.append((start, t, float(batch), float(kv), float(tokens)))
    return out


# -- one step -----------------------------------------------------------------------------------


def test_a_step_inside_one_bin_adds_its_time_batch_and_kv() -> None:
    tl = Timeline(0.0, capacity_bytes=1e3, bin_s=1.0, max_bins=8)
    tl.add_step(2.25, 2.75, batch=3.0, kv_bytes=100.0, tokens=3.0)
    assert tl.busy_s[2] == 0.5
    assert tl.seq_s[2] == 1.5
    assert tl.kv_s[2] == 50.0
    assert tl.tokens[2] == 3.0
    assert tl.busy_s.sum() == 0.5  # nothing anywhere else
    assert (tl.n_bins, tl.last_s) == (3, 2.75)


def test_a_step_ending_on_a_bin_edge_delivers_its_tokens_in_the_bin_before() -> None:
    """The token arrives at the instant the step ends; it is counted in the bin holding the
    instant just before, the last bin the step overlaps."""
    tl = Timeline(0.0, 1.0, bin_s=1.0, max_bins=8)
    tl.add_step(0.0, 1.0, 1.0, 0.0, 5.0)
    assert list(tl.tokens[:2]) == [5.0, 0.0]
    assert tl.n_bins == 1


def test_a_step_of_no_time_on_an_edge_counts_its_tokens_in_the_bin_it_starts() -> None:
    tl = Timeline(0.0, 1.0, bin_s=1.0, max_bins=8)
    tl.add_step(2.0, 2.0, 4.0, 10.0, 1.0)
    assert tl.tokens[2] == 1.0
    assert tl.busy_s.sum() == tl.seq_s.sum() == tl.kv_s.sum() == 0.0
    assert tl.n_bins == 3


def test_a_step_over_three_bins_is_split_at_their_edges() -> None:
    tl = Timeline(10.0, 1.0, bin_s=0.5, max_bins=16)
    tl.add_step(10.25, 11.375, batch=2.0, kv_bytes=8.0, tokens=1.0)
    np.testing.assert_array_equal(tl.busy_s[:4], [0.25, 0.5, 0.375, 0.0])
    np.testing.assert_array_equal(tl.seq_s[:3], [0.5, 1.0, 0.75])
    np.testing.assert_array_equal(tl.kv_s[:3], [2.0, 4.0, 3.0])
    np.testing.assert_array_equal(tl.tokens[:3], [0.0, 0.0, 1.0])


def test_a_timeline_starts_empty_at_its_origin() -> None:
    tl = Timeline(7.0, 1.0, bin_s=0.25, max_bins=4)
    assert (tl.bin_s, tl.n_bins, tl.last_s) == (0.25, 0, 7.0)
    assert tl.bins.shape == (4, 4)
    assert tl.table().num_rows == 0


# -- widening -----------------------------------------------------------------------------------


def test_outgrowing_the_bins_doubles_their_width_and_merges_pairs() -> None:
    """Four 1 s bins: a step over [0, 3) fills three; one over [3, 5) needs five, so the bins
    become 2 s wide (busy 2, 1 -> 2, 2, then 1 for [4, 5))."""
    tl = Timeline(0.0, 1.0, bin_s=1.0, max_bins=4)
    tl.add_step(0.0, 3.0, 1.0, 0.0, 1.0)
    assert tl.n_bins == 3
    tl.add_step(3.0, 5.0, 1.0, 0.0, 2.0)
    assert tl.bin_s == 2.0
    np.testing.assert_array_equal(tl.busy_s, [2.0, 2.0, 1.0, 0.0])
    np.testing.assert_array_equal(tl.tokens, [0.0, 1.0, 2.0, 0.0])
    assert tl.n_bins == 3


def test_a_far_step_widens_the_bins_as_often_as_needed() -> None:
    """A step ending at 100 s on four 1 s bins: widths 2, 4, 8, 16, 32 (4 x 32 >= 100)."""
    tl = Timeline(0.0, 1.0, bin_s=1.0, max_bins=4)
    tl.add_step(0.0, 0.5, 1.0, 0.0, 1.0)
    tl.add_step(99.0, 100.0, 1.0, 0.0, 1.0)
    assert tl.bin_s == 32.0
    np.testing.assert_array_equal(tl.busy_s, [0.5, 0.0, 0.0, 1.0])
    np.testing.assert_array_equal(tl.tokens, [1.0, 0.0, 0.0, 1.0])


@PROPERTY
@given(steps, st.sampled_from([2, 4, 8, 32]))
def test_bins_keep_every_total_however_often_they_widen(
    run: list[tuple[float, float, int, int, int]], max_bins: int
) -> None:
    tl = Timeline(0.0, 1.0, bin_s=0.0625, max_bins=max_bins)
    done = replay(tl, run)
    assert tl.busy_s.sum() == sum(e - s for s, e, *_ in done)
    assert tl.seq_s.sum() == sum((e - s) * b for s, e, b, _, _ in done)
    assert tl.kv_s.sum() == sum((e - s) * kv for s, e, _, kv, _ in done)
    assert tl.tokens.sum() == sum(t for *_, t in done)
    assert tl.n_bins <= max_bins
    assert tl.last_s == done[-1][1]
    assert tl.n_bins * tl.bin_s >= tl.last_s  # the last bin touched holds the last end
    # A bin is never busier than it is wide, and widening is by powers of two.
    assert (tl.busy_s <= tl.bin_s).all()
    assert np.log2(tl.bin_s / 0.0625) == round(np.log2(tl.bin_s / 0.0625))


@PROPERTY
@given(steps)
def test_narrow_bins_summed_in_groups_are_the_widened_bins(
    run: list[tuple[float, float, int, int, int]],
) -> None:
    """A timeline with room to spare never widens; the same run in four bins ends with bins
    that are its bins summed in groups of (wide / narrow)."""
    roomy = Timeline(0.0, 1.0, bin_s=0.0625, max_bins=2**16)
    tight = Timeline(0.0, 1.0, bin_s=0.0625, max_bins=4)
    replay(roomy, run)
    replay(tight, run)
    assert roomy.bin_s == 0.0625
    group = round(tight.bin_s / roomy.bin_s)
    for row in (BUSY, SEQ, KV, TOKENS):
        wide = roomy.bins[row][: 4 * group].reshape(4, group).sum(axis=1)
        np.testing.assert_allclose(tight.bins[row], wide, rtol=1e-12, atol=1e-12)
    assert tight.n_bins == -(-roomy.n_bins // group)


# -- the array form and the decode stretch -----------------------------------------------------


def test_the_array_form_fills_the_same_bins_as_the_method() -> None:
    """`add_step` over bare arrays (what the compiled replica calls) is the method's body."""
    tl = Timeline(1.0, 1.0, bin_s=0.5, max_bins=4)
    bins, meta = np.zeros((4, 4)), np.array([0.5, 0.0, 1.0])
    for start, end in ((1.0, 1.75), (2.0, 4.5)):
        tl.add_step(start, end, 3.0, 2.0, 1.0)
        add_step(bins, meta, 1.0, start, end, 3.0, 2.0, 1.0)
    np.testing.assert_array_equal(bins, tl.bins)
    assert meta[BIN_S] == tl.bin_s == 1.0
    assert meta[N_BINS] == tl.n_bins == 4
    assert meta[LAST_S] == tl.last_s == 4.5


@PROPERTY
@given(
    st.lists(st.integers(1, 48).map(lambda k: k / 32.0), min_size=1, max_size=30),
    st.integers(0, 40).map(lambda k: k / 8.0),
    st.sampled_from([4, 8, 64]),
)
def test_a_decode_stretch_fills_the_bins_its_steps_would_one_by_one(
    durations: list[float], start: float, max_bins: int
) -> None:
    ends = start + np.cumsum(durations)
    kv = np.arange(len(durations), dtype=np.float64) * 16.0 + 100.0
    many = Timeline(0.0, 1.0, bin_s=0.125, max_bins=max_bins)
    one = Timeline(0.0, 1.0, bin_s=0.125, max_bins=max_bins)
    many.add_steps(start, ends, 5.0, kv, 5.0)
    t = start
    for end, k in zip(ends, kv, strict=True):
        one.add_step(t, float(end), 5.0, float(k), 5.0)
        t = float(end)
    assert many.bin_s == one.bin_s
    np.testing.assert_allclose(many.bins, one.bins, rtol=1e-12, atol=1e-12)
    assert (many.n_bins, many.last_s) == (one.n_bins, one.last_s)


def test_an_empty_stretch_adds_nothing() -> None:
    tl = Timeline(0.0, 1.0)
    tl.add_steps(3.0, np.array([]), 4.0, np.array([]), 4.0)
    assert tl.bins.sum() == 0.0
    assert (tl.n_bins, tl.last_s) == (0, 0.0)


# -- the table ------------------------------------------------------------------------------------


def test_the_table_means_are_over_each_bins_span_idle_time_included() -> None:
    """1 s bins; busy over [0.5, 1) with 4 sequences and over [1, 2.5) with 2: the last bin is
    only half inside the run."""
    tl = Timeline(0.0, capacity_bytes=200.0, bin_s=1.0, max_bins=8)
    tl.add_step(0.5, 1.0, 4.0, 100.0, 4.0)
    tl.add_step(1.0, 2.5, 2.0, 50.0, 2.0)
    t = tl.table().to_pydict()
    assert t["start_s"] == [0.0, 1.0, 2.0]
    assert t["span_s"] == [1.0, 1.0, 0.5]
    assert t["busy_fraction"] == [0.5, 1.0, 1.0]
    assert t["mean_batch"] == [2.0, 2.0, 2.0]
    assert t["mean_kv_bytes"] == [50.0, 50.0, 50.0]
    assert t["kv_utilisation"] == [0.25, 0.25, 0.25]
    assert t["output_tokens"] == [4, 0, 2]
    assert t["output_tokens_per_s"] == [4.0, 0.0, 4.0]


def test_a_later_run_end_adds_idle_bins_to_the_table() -> None:
    tl = Timeline(0.0, 1.0, bin_s=1.0, max_bins=8)
    tl.add_step(0.0, 1.0, 1.0, 0.0, 1.0)
    t = tl.table(end_s=3.5).to_pydict()
    assert t["span_s"] == [1.0, 1.0, 1.0, 0.5]
    assert t["busy_fraction"] == [1.0, 0.0, 0.0, 0.0]
    # An end before the last step changes nothing.
    assert tl.table(end_s=0.25).to_pydict()["span_s"] == [1.0]


def test_the_table_never_runs_past_the_bins_it_keeps() -> None:
    tl = Timeline(0.0, 1.0, bin_s=1.0, max_bins=4)
    tl.add_step(0.0, 1.0, 1.0, 0.0, 1.0)
    assert tl.table(end_s=100.0).num_rows == 4


# -- pools ------------------------------------------------------------------------------------------


def test_a_pool_sums_its_replicas_bin_by_bin_and_their_capacity() -> None:
    a = Timeline(0.0, 100.0, bin_s=1.0, max_bins=8)
    b = Timeline(0.0, 300.0, bin_s=1.0, max_bins=8)
    a.add_step(0.0, 1.5, 2.0, 10.0, 2.0)
    b.add_step(1.0, 3.0, 1.0, 20.0, 1.0)
    pool = Timeline.merged([a, b])
    assert pool.capacity_bytes == 400.0
    np.testing.assert_array_equal(pool.bins, a.bins + b.bins)
    assert (pool.n_bins, pool.last_s, pool.bin_s) == (3, 3.0, 1.0)


@PROPERTY
@given(steps, steps)
def test_a_pool_of_unevenly_widened_replicas_keeps_every_total(
    run_a: list[tuple[float, float, int, int, int]],
    run_b: list[tuple[float, float, int, int, int]],
) -> None:
    """Runs of at most 240 s on 64 bins of 1/16 s widen at most 64-fold (to 4 s bins)."""
    a = Timeline(0.0, 1.0, bin_s=0.0625, max_bins=64)
    b = Timeline(0.0, 2.0, bin_s=0.0625, max_bins=64)
    replay(a, run_a)
    replay(b, run_b)
    pool = Timeline.merged([a, b])
    assert pool.bin_s == max(a.bin_s, b.bin_s)
    np.testing.assert_allclose(pool.bins.sum(axis=1), a.bins.sum(axis=1) + b.bins.sum(axis=1),
                               rtol=1e-12)
    assert pool.last_s == max(a.last_s, b.last_s)
    assert pool.n_bins * pool.bin_s >= pool.last_s


def test_a_pool_merges_an_idle_replica_with_one_that_ran_long() -> None:
    """With the default grid (2,048 bins of 1/1,024 s) a replica that ran to 5,000 s has
    4 s bins, 4,096 times an idle replica's: the pool should still hold the busy one's step."""
    idle, busy = Timeline(0.0, 1.0), Timeline(0.0, 1.0)
    busy.add_step(4_999.0, 5_000.0, 1.0, 0.0, 1.0)
    pool = Timeline.merged([idle, busy])
    assert pool.busy_s.sum() == 1.0
    assert pool.bin_s == busy.bin_s


def test_merging_one_timeline_copies_it() -> None:
    tl = Timeline(0.0, 5.0, bin_s=0.5, max_bins=4)
    tl.add_step(0.25, 1.25, 3.0, 1.0, 2.0)
    pool = Timeline.merged([tl])
    np.testing.assert_array_equal(pool.bins, tl.bins)
    assert (pool.bin_s, pool.n_bins, pool.last_s, pool.capacity_bytes) == (0.5, 3, 1.25, 5.0)
    pool.add_step(1.25, 1.5, 1.0, 1.0, 1.0)
    assert tl.last_s == 1.25  # the pool is a new timeline, not a view


@pytest.mark.parametrize("value", [0.25, 1.0])
def test_a_negative_origin_keeps_bins_aligned_to_it(value: float) -> None:
    tl = Timeline(-2.0, 1.0, bin_s=value, max_bins=64)
    tl.add_step(-2.0, -2.0 + value, 1.0, 0.0, 1.0)
    assert tl.busy_s[0] == value
    assert tl.tokens[0] == 1.0
    assert tl.n_bins == 1
