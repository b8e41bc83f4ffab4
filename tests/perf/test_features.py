"""The batch aggregates a step time is linear in: `BatchShape.of` by hand, and `fill_features`'
micro-batch split (the longest-sequence rule, windows, the largest chunk, experts touched)
checked against the formulas of its docstring and their limit cases."""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megawatt.hardware import load_catalog
from megawatt.model import load_model
from megawatt.perf import BatchShape, Deployment, RooflineStepModel
from megawatt.perf.roofline import (
    F_DECODE_CONTEXT,
    F_DECODE_WINDOW,
    F_EXPERTS,
    F_LOGITS,
    F_ONE,
    F_PREFILL_ATTENTION,
    F_PREFILL_MAX_ATTENTION,
    F_PREFILL_MAX_TOKENS,
    F_PREFILL_MAX_WINDOW,
    F_PREFILL_TOKENS,
    F_PREFILL_WINDOW,
    F_TOKENS,
    FEATURES,
    N_FEATURES,
    PREFILL_UNIT_TOKENS,
    fill_features,
)

PROPERTY = settings(max_examples=40, deadline=None)


def features(
    *,
    tokens: float = 0.0,
    logits: float = 0.0,
    dctx: float = 0.0,
    dwin: float = 0.0,
    dmax: float = 0.0,
    n_decode: float = 0.0,
    patt: float = 0.0,
    pwin: float = 0.0,
    ptok: float = 0.0,
    units: float = 1.0,
    pmax: tuple[float, float, float] = (0.0, 0.0, 0.0),
    depth: float = 1.0,
    window: int = 0,
    n_experts: float = 0.0,
    top_k: float = 0.0,
) -> tuple[np.ndarray, float]:
    """`fill_features` on one step given by keyword: its feature vector and micro-batch count."""
    x = np.zeros(N_FEATURES)
    mb = fill_features(
        x, tokens, logits, dctx, dwin, dmax, n_decode, patt, pwin, ptok, units, pmax[0], pmax[1],
        pmax[2], depth, window, n_experts, top_k,
    )
    return x, float(mb)


def decode_step(contexts: list[float], depth: float, window: int = 0) -> tuple[np.ndarray, float]:
    """Features of a pure-decode step over sequences with `contexts`."""
    c = np.array(contexts, dtype=np.float64)
    n = float(len(c))
    return features(
        tokens=n, logits=n, dctx=float(c.sum()),
        dwin=float(np.minimum(c, window).sum()) if window else 0.0, dmax=float(c.max()),
        n_decode=n, units=n, depth=depth, window=window,
    )


# -- BatchShape.of ------------------------------------------------------------------------------


def test_a_mixed_batch_adds_up_its_decodes_and_chunks_by_hand() -> None:
    """Two decodes (100 and 300 cached, window 200) and two chunks: 10 tokens after 5 cached
    (span 5 + 11/2 = 10.5: 105 pairs) and 4 fresh tokens (span 2.5: 10 pairs)."""
    b = BatchShape.of([100, 300], [(10, 5), (4, 0)], window=200)
    assert (b.n_decode, b.n_prefill, b.n_seqs) == (2, 2, 4)
    assert b.decode_context == 400.0
    assert b.decode_window == 100.0 + 200.0
    assert b.decode_context_max == 300.0
    assert b.prefill_tokens == 14
    assert b.prefill_attention == 10 * 10.5 + 4 * 2.5
    assert b.prefill_window == b.prefill_attention  # both spans are inside the window
    assert (b.prefill_max_tokens, b.prefill_max_attention, b.prefill_max_window) == (10, 105.0, 105.0)
    assert b.tokens == 2 + 14
    assert b.n_logits == 4
    assert b.eager


def test_the_window_caps_the_span_each_chunk_token_attends_to() -> None:
    """100 tokens after 1,000 cached attend to 1,050.5 tokens on average; a 64-token window
    caps that at 64 per token."""
    b = BatchShape.of([], [(100, 1_000)], window=64)
    assert b.prefill_attention == 100 * 1_050.5
    assert b.prefill_window == 100 * 64
    assert b.prefill_max_window == 100 * 64


def test_without_a_window_the_windowed_aggregates_stay_zero() -> None:
    b = BatchShape.of([5_000, 7], [(300, 20)])
    assert b.decode_window == 0.0
    assert b.prefill_window == 0.0
    assert b.prefill_max_window == 0.0
    assert b.decode_context == 5_007.0


def test_an_empty_batch_has_no_sequences_tokens_or_units() -> None:
    b = BatchShape.of()
    assert (b.n_seqs, b.tokens, b.n_logits, b.decode_context_max) == (0, 0, 0, 0.0)
    assert b.pipeline_units == 0.0
    assert not b.eager


def test_a_one_token_chunk_is_decode_shaped_and_not_eager() -> None:
    """A prompt whose KV arrived from a prefill worker enters as a one-token chunk: CUDA graphs
    replay it like a decode."""
    assert not BatchShape.of([10], [(1, 500)]).eager
    assert BatchShape.of([10], [(2, 500)]).eager


def test_n_logits_can_be_overridden_for_chunks_that_sample_nothing() -> None:
    """A middle chunk of a long prompt samples no token."""
    assert BatchShape.of([1, 2], [(512, 0)], n_logits=2).n_logits == 2
    assert BatchShape.of([1, 2], [(512, 0)]).n_logits == 3


@pytest.mark.parametrize(
    ("decode", "chunks", "units"),
    [
        ([1, 2, 3], [], 3.0),
        ([], [(10, 0)], 1.0),  # a short prompt is still one unit
        ([], [(1_000, 0)], 1_000 / PREFILL_UNIT_TOKENS),  # a long one streams in pieces
        ([7], [(10, 0), (20, 0), (30, 0)], 1.0 + 3.0),  # three short prompts: one unit each
        ([7, 8], [(2_048, 0)], 2.0 + 8.0),
    ],
)
def test_pipeline_units_count_decodes_and_prompt_pieces(
    decode: list[int], chunks: list[tuple[int, int]], units: float
) -> None:
    assert BatchShape.of(decode, chunks).pipeline_units == units


@PROPERTY
@given(
    st.lists(st.integers(0, 50_000), max_size=20),
    st.lists(st.tuples(st.integers(1, 4_096), st.integers(0, 20_000)), max_size=4),
    st.one_of(st.none(), st.integers(1, 8_192)),
)
def test_aggregates_obey_their_bounds(
    decode: list[int], chunks: list[tuple[int, int]], window: int | None
) -> None:
    """Windowed sums never exceed full ones; the largest chunk is a chunk of the batch with the
    most tokens and never more attention than all chunks together."""
    b = BatchShape.of(decode, chunks, window)
    assert b.decode_window <= b.decode_context
    assert b.prefill_window <= b.prefill_attention + 1e-9
    assert b.prefill_max_tokens == max((c for c, _ in chunks), default=0)
    assert b.prefill_max_attention <= b.prefill_attention + 1e-9
    assert b.prefill_max_window <= b.prefill_window + 1e-9
    assert b.tokens == len(decode) + sum(c for c, _ in chunks)
    if window:
        assert b.decode_window <= window * len(decode)
        assert b.prefill_window <= window * b.prefill_tokens
    if chunks:
        assert b.prefill_max_tokens * b.n_prefill >= b.prefill_tokens


# -- fill_features: the micro-batch split -------------------------------------------------------


def test_without_a_pipeline_the_features_are_the_aggregates() -> None:
    x, mb = features(
        tokens=40, logits=7, dctx=9_000, dwin=1_000, dmax=3_000, n_decode=6, patt=555, pwin=333,
        ptok=34, units=6, pmax=(30, 500, 300), depth=1, window=512,
    )
    assert mb == 1.0
    expected = {
        F_ONE: 1.0, F_TOKENS: 40, F_LOGITS: 7, F_DECODE_CONTEXT: 9_000, F_DECODE_WINDOW: 1_000,
        F_PREFILL_ATTENTION: 555, F_PREFILL_WINDOW: 333, F_PREFILL_TOKENS: 34,
        F_PREFILL_MAX_TOKENS: 30, F_PREFILL_MAX_ATTENTION: 500, F_PREFILL_MAX_WINDOW: 300,
        F_EXPERTS: 0.0,
    }
    for k, v in expected.items():
        assert x[k] == v, FEATURES[k]


@pytest.mark.parametrize(
    ("units", "depth", "mb"),
    [(8.0, 4.0, 4.0), (3.0, 4.0, 3.0), (0.5, 4.0, 1.0), (0.0, 4.0, 1.0), (2.5, 4.0, 2.5),
     (100.0, 1.0, 1.0)],
)
def test_micro_batches_are_the_units_clipped_to_one_and_the_depth(
    units: float, depth: float, mb: float
) -> None:
    x, got = features(tokens=12.0, logits=6.0, ptok=12.0, patt=60.0, units=units, depth=depth)
    assert got == mb
    assert x[F_TOKENS] == 12.0 / mb
    assert x[F_LOGITS] == 6.0 / mb
    assert x[F_PREFILL_TOKENS] == 12.0 / mb
    assert x[F_PREFILL_ATTENTION] == 60.0 / mb


def test_the_micro_batch_with_the_longest_sequence_carries_it_whole() -> None:
    """Eight decodes on four stages (two per micro-batch): one of 7,000 tokens and seven of 100.
    The slowest micro-batch holds the 7,000 one and one of the others: 7,100, not 7,700 / 4."""
    x, mb = decode_step([7_000] + [100] * 7, depth=4)
    assert mb == 4.0
    assert x[F_DECODE_CONTEXT] == 7_000 + 1 * 700 / 7
    assert x[F_TOKENS] == 2.0


def test_equal_contexts_split_evenly() -> None:
    """With every context equal the longest-sequence rule gives the even split."""
    x, mb = decode_step([1_000.0] * 12, depth=3)
    assert mb == 3.0
    assert x[F_DECODE_CONTEXT] == pytest.approx(12_000 / 3, rel=1e-12)


def test_fewer_sequences_than_stages_each_ride_alone() -> None:
    """Three decodes on eight stages: three micro-batches of one, the slowest the longest."""
    x, mb = decode_step([10, 20, 900], depth=8)
    assert mb == 3.0
    assert x[F_DECODE_CONTEXT] == 900.0
    assert x[F_TOKENS] == 1.0


def test_a_lone_decode_carries_its_context_whatever_the_depth() -> None:
    for depth in (1.0, 2.0, 61.0):
        x, mb = decode_step([4_321], depth=depth)
        assert mb == 1.0
        assert x[F_DECODE_CONTEXT] == 4_321.0


def test_the_windowed_longest_sequence_is_capped_at_the_window() -> None:
    """Four decodes (5,000, 10, 10, 10) on two stages with a 128-token window: the slowest
    micro-batch holds min(5,000, 128) plus one other's 10 windowed tokens."""
    x, mb = decode_step([5_000, 10, 10, 10], depth=2, window=128)
    assert mb == 2.0
    assert x[F_DECODE_WINDOW] == 128 + 1 * 30 / 3
    assert x[F_DECODE_CONTEXT] == 5_000 + 1 * 30 / 3


def test_without_a_window_the_windowed_context_just_splits() -> None:
    x, _ = features(dwin=800.0, dmax=500.0, n_decode=4, units=4, depth=4, window=0)
    assert x[F_DECODE_WINDOW] == 200.0


def test_the_largest_chunk_is_never_split() -> None:
    x, mb = features(
        tokens=2_048, ptok=2_048, units=8.0, depth=4.0, pmax=(2_048.0, 9e5, 1e5),
    )
    assert mb == 4.0
    assert x[F_PREFILL_TOKENS] == 512.0
    assert (x[F_PREFILL_MAX_TOKENS], x[F_PREFILL_MAX_ATTENTION], x[F_PREFILL_MAX_WINDOW]) == (
        2_048.0, 9e5, 1e5,
    )


@PROPERTY
@given(
    st.lists(st.integers(1, 40_000), min_size=1, max_size=40),
    st.integers(1, 16),
    st.one_of(st.just(0), st.integers(1, 4_096)),
)
def test_the_slowest_micro_batch_carries_at_least_an_even_share_and_the_longest_context(
    contexts: list[int], depth: int, window: int
) -> None:
    """Bounds of the longest-sequence rule: at least total / mb and the longest context, never
    more than the whole batch's context; the same with windowed contexts."""
    x, mb = decode_step([float(c) for c in contexts], depth=float(depth), window=window)
    total, longest = float(sum(contexts)), float(max(contexts))
    assert mb == min(len(contexts), depth)
    assert x[F_DECODE_CONTEXT] >= total / mb - 1e-6
    assert x[F_DECODE_CONTEXT] >= longest
    assert x[F_DECODE_CONTEXT] <= total + 1e-6
    if window:
        wtotal = float(sum(min(c, window) for c in contexts))
        assert x[F_DECODE_WINDOW] >= wtotal / mb - 1e-6
        assert x[F_DECODE_WINDOW] >= min(longest, window)
        assert x[F_DECODE_WINDOW] <= wtotal + 1e-6


# -- experts touched ----------------------------------------------------------------------------


def test_one_token_touches_exactly_its_top_k_experts() -> None:
    x, _ = features(tokens=1.0, n_experts=256, top_k=8)
    assert x[F_EXPERTS] == pytest.approx(8.0, rel=1e-12)


def test_experts_touched_follow_the_expected_distinct_count() -> None:
    """Each of t tokens picks k of n experts: an expert is missed with probability (1 - k/n)^t.
    Two tokens, 4 experts, top-2: 4 x (1 - 1/4) = 3."""
    x, _ = features(tokens=2.0, n_experts=4, top_k=2)
    assert x[F_EXPERTS] == pytest.approx(3.0, rel=1e-12)


def test_experts_touched_count_the_slowest_micro_batchs_tokens() -> None:
    """64 tokens on four stages: 16 per micro-batch touch n (1 - (1 - k/n)^16) experts."""
    x, _ = features(tokens=64.0, units=64.0, depth=4.0, n_experts=128, top_k=4)
    assert x[F_EXPERTS] == pytest.approx(128 * (1 - (1 - 4 / 128) ** 16), rel=1e-12)


def test_top_k_of_all_experts_touches_every_one() -> None:
    x, _ = features(tokens=3.0, n_experts=8, top_k=8)
    assert x[F_EXPERTS] == 8.0


def test_a_dense_model_touches_no_experts() -> None:
    x, _ = features(tokens=10_000.0, n_experts=0, top_k=0)
    assert x[F_EXPERTS] == 0.0


@PROPERTY
@given(st.integers(1, 100_000), st.integers(1, 384), st.integers(1, 16))
def test_experts_touched_grow_with_tokens_but_never_past_either_bound(
    tokens: int, n_experts: int, top_k: int
) -> None:
    top_k = min(top_k, n_experts)
    x, _ = features(tokens=float(tokens), n_experts=n_experts, top_k=top_k)
    more, _ = features(tokens=float(tokens + 1), n_experts=n_experts, top_k=top_k)
    assert x[F_EXPERTS] <= min(n_experts, top_k * tokens) * (1 + 1e-12)
    assert x[F_EXPERTS] >= top_k * (1 - 1e-12)
    assert more[F_EXPERTS] >= x[F_EXPERTS] * (1 - 1e-12)


# -- vectorised and scalar forms ----------------------------------------------------------------


def test_k_steps_at_once_match_k_single_steps() -> None:
    """The Python replica passes arrays over k steps, the compiled one scalars: same columns."""
    rng = np.random.default_rng(3)
    k = 7
    n_decode = rng.integers(1, 30, k).astype(float)
    dmax = rng.uniform(100, 5_000, k)
    dctx = dmax + (n_decode - 1) * rng.uniform(10, 100, k)
    dwin = np.minimum(dctx, 256.0 * n_decode)
    ptok = rng.integers(0, 600, k).astype(float)
    tokens = n_decode + ptok
    units = n_decode + rng.integers(0, 4, k)
    patt, pwin = ptok * 300.0, ptok * 200.0
    pmax = (ptok / 2, patt / 2, pwin / 2)
    x = np.empty((N_FEATURES, k))
    mb = fill_features(
        x, tokens, n_decode, dctx, dwin, dmax, n_decode, patt, pwin, ptok, units, *pmax,
        4.0, 256, 64.0, 6.0,
    )
    for j in range(k):
        one, mb_j = features(
            tokens=tokens[j], logits=n_decode[j], dctx=dctx[j], dwin=dwin[j], dmax=dmax[j],
            n_decode=n_decode[j], patt=patt[j], pwin=pwin[j], ptok=ptok[j], units=units[j],
            pmax=(pmax[0][j], pmax[1][j], pmax[2][j]), depth=4.0, window=256, n_experts=64.0,
            top_k=6.0,
        )
        assert mb[j] == mb_j
        np.testing.assert_allclose(x[:, j], one, rtol=1e-14)


# -- the step model over these features ---------------------------------------------------------


@cache
def llama_8b() -> RooflineStepModel:
    catalog = load_catalog()
    system = catalog.system("hgx-h200")
    dep = Deployment(load_model("llama-3.1-8b"), system, catalog.device(system.device_id),
                     weight_dtype="fp8")
    return RooflineStepModel(dep)


def test_coefficients_reproduce_a_step_time_by_the_documented_formula() -> None:
    """`StepCoefficients`' docstring: sum_j max(flops_j @ x / rate_j, bytes_j @ x / bw_j) +
    comm @ x + latency + step overhead + per-sequence overhead + (eager) prefill overhead, with
    x the batch's aggregates (no pipeline: one micro-batch)."""
    model = llama_8b()
    c = model.coefficients()
    assert c.pipeline_depth == 1
    batch = BatchShape.of([1_000, 2_000, 30], [(300, 100)], c.window_tokens)
    x = np.zeros(N_FEATURES)
    x[F_ONE] = 1.0
    x[F_TOKENS] = batch.tokens
    x[F_LOGITS] = batch.n_logits
    x[F_DECODE_CONTEXT] = batch.decode_context
    x[F_PREFILL_ATTENTION] = batch.prefill_attention
    x[F_PREFILL_TOKENS] = batch.prefill_tokens
    x[F_PREFILL_MAX_TOKENS] = batch.prefill_max_tokens
    x[F_PREFILL_MAX_ATTENTION] = batch.prefill_max_attention
    ops = np.maximum(c.flops @ x / c.rate_flops_per_s, c.bytes @ x / c.bandwidth_bytes_per_s)
    expected = (
        ops.sum() + c.comm_s @ x + c.latency_s + c.step_overhead_s + c.seq_overhead_s * 4
        + c.prefill_overhead_s
    )
    assert model.step_time(batch) == pytest.approx(expected, rel=1e-12)


def test_coefficients_are_read_only_copies() -> None:
    c = llama_8b().coefficients()
    for name in ("flops", "bytes", "rate_flops_per_s", "bandwidth_bytes_per_s", "comm_s"):
        with pytest.raises(ValueError, match="read-only"):
            getattr(c, name)[0] = 1.0
    assert c.flops.shape[1] == N_FEATURES == c.bytes.shape[1] == c.comm_s.shape[0]
    assert c.flops.shape[0] == c.bytes.shape[0] == c.rate_flops_per_s.shape[0]


def test_an_empty_step_takes_no_time() -> None:
    assert llama_8b().step_time(BatchShape.of()) == 0.0


def test_decode_aggregates_grow_by_one_token_per_sequence_a_step() -> None:
    dctx, dwin, dmax = llama_8b().decode_aggregates(np.array([10.0, 50.0, 7.0]), 4)
    np.testing.assert_array_equal(dctx, [67.0, 70.0, 73.0, 76.0])
    np.testing.assert_array_equal(dmax, [50.0, 51.0, 52.0, 53.0])
    np.testing.assert_array_equal(dwin, np.zeros(4))  # Llama 3.1 has no windowed layers


def test_times_of_pure_decode_batches_match_their_step_times() -> None:
    """`times` takes the aggregates as vectors; for decode-only batches it is `step_time`."""
    model = llama_8b()
    batches = [BatchShape.of(c) for c in ([5], [100, 200, 300], [4_000] * 16)]
    agg = [np.array(v, dtype=np.float64) for v in zip(*(
        (b.tokens, b.n_logits, b.decode_context, b.decode_window, b.prefill_attention,
         b.prefill_window, b.prefill_tokens, b.pipeline_units, b.n_decode, b.decode_context_max)
        for b in batches
    ), strict=True)]
    n = np.array([float(b.n_seqs) for b in batches])
    got = model.times(n, *agg)
    for t, b in zip(got, batches, strict=True):
        assert t == pytest.approx(model.step_time(b), rel=1e-12)


def test_the_breakdown_bounds_add_up_to_the_step() -> None:
    model = llama_8b()
    batch = BatchShape.of([3_000] * 4, [(1_024, 0)])
    bd = model.breakdown(batch)
    assert math.isclose(sum(bd.by_bound.values()), bd.total_s, rel_tol=1e-12)
    assert bd.total_s == pytest.approx(model.step_time(batch), rel=1e-12)
    assert bd.microbatches == 1
    for op in bd.operators:
        assert op.time_s == max(op.compute_s, op.memory_s)
        assert op.bound == ("compute" if op.compute_s >= op.memory_s else "memory")
