"""Speculative decoding's arithmetic: the expected tokens per verify step as a geometric sum, the
verify and pipelined-verify passes a fake inner model is asked to time (worked out by hand), the
step time built from them, and decode stretches that agree with single steps."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megawatt.errors import InputError
from megawatt.hardware import load_catalog
from megawatt.model import load_model
from megawatt.perf import BatchShape, Deployment, RooflineStepModel
from megawatt.perf.speculative import (
    Speculation,
    SpeculativeStepModel,
    tokens_per_verify,
    wafer_speculation,
)

PROPERTY = settings(max_examples=50, deadline=None)


@dataclass
class Recorder:
    """A fake inner model that remembers every batch it timed; a step costs `per_token` per
    token, `per_context` per attended context token and `per_seq` per decode sequence."""

    per_token: float = 1e-3
    per_context: float = 1e-6
    per_seq: float = 0.0
    window_tokens: int | None = None
    seen: list[BatchShape] = field(default_factory=list)

    def step_time(self, batch: BatchShape) -> float:
        self.seen.append(batch)
        return (
            self.per_token * batch.tokens
            + self.per_context * (batch.decode_context + batch.prefill_attention)
            + self.per_seq * batch.n_decode
        )

    def decode_times(self, contexts: np.ndarray, n_steps: int) -> np.ndarray:
        raise AssertionError("the wrapper times stretches through step_time")


@cache
def roofline(pp: int = 1) -> RooflineStepModel:
    catalog = load_catalog()
    system = catalog.system("hgx-h200")
    return RooflineStepModel(
        Deployment(load_model("llama-3.1-8b"), system, catalog.device("h200-sxm"),
                   weight_dtype="fp8", pp=pp)
    )


# -- tokens per verify --------------------------------------------------------------------------


@PROPERTY
@given(st.integers(0, 12), st.floats(0.0, 0.999))
def test_tokens_per_verify_is_the_geometric_sum_of_acceptances(k: int, a: float) -> None:
    """Token i (0 = the target's own) is kept when all drafts before it were: sum of a^i."""
    assert tokens_per_verify(k, a) == pytest.approx(sum(a**i for i in range(k + 1)), rel=1e-9)
    assert 1.0 <= tokens_per_verify(k, a) <= k + 1 + 1e-12


@PROPERTY
@given(st.integers(1, 12), st.floats(0.0, 0.98), st.floats(0.001, 0.02))
def test_more_acceptance_or_more_drafts_never_yield_fewer_tokens(k: int, a: float, da: float) -> None:
    assert tokens_per_verify(k, a + da) >= tokens_per_verify(k, a)
    assert tokens_per_verify(k + 1, a) >= tokens_per_verify(k, a)


@pytest.mark.parametrize(
    ("k", "a", "message"),
    [(-1, 0.5, "draft_tokens must be >= 0; got -1"), (2, -0.1, r"acceptance must be in \[0, 1\]; got -0.1")],
)
def test_impossible_speculation_names_the_setting_and_value(k: int, a: float, message: str) -> None:
    with pytest.raises(InputError, match=message):
        tokens_per_verify(k, a)
    with pytest.raises(InputError, match=message):
        Speculation(draft_tokens=k, acceptance=a)


def test_a_draft_costing_more_than_a_decode_step_is_refused() -> None:
    with pytest.raises(InputError, match=r"draft_cost must be in \[0, 1\] of a decode step; got 1.5"):
        Speculation(draft_cost=1.5)


# -- the passes the inner model times -----------------------------------------------------------


def test_the_verify_pass_prices_the_drafts_as_a_chunk_over_each_context() -> None:
    """Decodes at 100 and 200 with k = 2: four extra tokens, each sequence's two attending its
    context plus (k + 1) / 2 = 1.5 on average: 2 x (300 + 2 x 1.5) = 606 pairs."""
    inner = Recorder()
    spec = SpeculativeStepModel(inner, Speculation(draft_tokens=2, acceptance=0.5, draft_cost=0.0))
    spec.step_time(BatchShape.of([100, 200]))
    verify = inner.seen[0]
    assert (verify.n_decode, verify.decode_context, verify.decode_context_max) == (2, 300.0, 200.0)
    assert verify.prefill_tokens == 4
    assert verify.prefill_attention == 606.0
    assert verify.n_logits == 6
    assert verify.prefill_window == 0.0  # no window


def test_the_verify_pass_keeps_the_steps_own_prompt_chunks() -> None:
    inner = Recorder()
    spec = SpeculativeStepModel(inner, Speculation(draft_tokens=3, acceptance=0.5, draft_cost=0.0))
    batch = BatchShape.of([1_000], [(64, 0)])
    spec.step_time(batch)
    verify = inner.seen[0]
    assert verify.prefill_tokens == 64 + 3
    assert verify.prefill_attention == batch.prefill_attention + 3 * (1_000 + 2.0)
    assert (verify.prefill_max_tokens, verify.prefill_max_attention) == (
        64, batch.prefill_max_attention,
    )
    assert verify.n_prefill == 1
    assert verify.n_logits == 2 + 3


def test_windowed_verify_attention_counts_the_window_too() -> None:
    inner = Recorder(window_tokens=128)
    spec = SpeculativeStepModel(inner, Speculation(draft_tokens=1, acceptance=0.5, draft_cost=0.0))
    batch = BatchShape.of([1_000, 50], [], window=128)
    spec.step_time(batch)
    # k x (windowed context + b x (k + 1) / 2) = 1 x (128 + 50 + 2 x 1).
    assert inner.seen[0].prefill_window == 180.0


def test_the_pipelined_verify_sends_each_drafted_token_as_a_decode_of_its_own() -> None:
    """Contexts 100 and 200, k = 2: six decodes at 100, 101, 102, 200, 201, 202."""
    inner = Recorder()
    spec = SpeculativeStepModel(
        inner, Speculation(draft_tokens=2, acceptance=0.5, draft_cost=0.0), pipelined_verify=True
    )
    spec.step_time(BatchShape.of([100, 200]))
    piped = inner.seen[1]
    by_hand = BatchShape.of([100, 101, 102, 200, 201, 202])
    assert piped.n_decode == by_hand.n_decode == 6
    assert piped.decode_context == by_hand.decode_context == 906.0
    assert piped.decode_context_max == by_hand.decode_context_max == 202.0
    assert piped.prefill_tokens == 0
    assert piped.n_logits == 6


def test_the_draft_is_priced_on_the_decodes_alone() -> None:
    inner = Recorder()
    spec = SpeculativeStepModel(inner, Speculation(draft_tokens=2, acceptance=0.5, draft_cost=0.5))
    spec.step_time(BatchShape.of([100, 200], [(32, 10)]))
    draft = inner.seen[-1]
    assert (draft.n_decode, draft.n_prefill, draft.prefill_tokens, draft.n_logits) == (2, 0, 0, 2)
    assert draft.decode_context == 300.0


# -- the step time -----------------------------------------------------------------------------


def test_a_speculative_step_is_verify_plus_drafts_over_tokens_per_verify_by_hand() -> None:
    """One decode at 1,000, k = 3, a = 0.5, draft cost 0.25; 1 ms a token, 1 us a context token.
    Verify: 4 tokens and 1,000 + 3 x (1,000 + 2) pairs: 4 ms + 4.006 ms. Plain decode: 1 ms +
    1 ms, three drafts at a quarter of it: 1.5 ms. Tokens per verify: 1 + 1/2 + 1/4 + 1/8."""
    spec = SpeculativeStepModel(Recorder(), Speculation(3, 0.5, 0.25))
    expected = (4e-3 + 4.006e-3 + 1.5e-3) / 1.875
    assert spec.step_time(BatchShape.of([1_000])) == pytest.approx(expected, rel=1e-12)


def test_the_pipelined_verify_is_taken_only_when_it_is_faster() -> None:
    """A per-sequence cost makes six pipelined decodes dearer than the chunked verify of two, so
    the chunked one is kept; with costs per token and per context token alone both passes cost
    the same (six tokens, 906 context tokens attended)."""
    batch = BatchShape.of([100, 200])
    s = Speculation(draft_tokens=2, acceptance=0.5, draft_cost=0.0)
    dear = Recorder(per_seq=1.0)
    plain_dear = SpeculativeStepModel(dear, s).step_time(batch)
    assert SpeculativeStepModel(dear, s, pipelined_verify=True).step_time(batch) == plain_dear
    cheap = Recorder()
    chunked = SpeculativeStepModel(cheap, s).step_time(batch)
    piped = SpeculativeStepModel(cheap, s, pipelined_verify=True).step_time(batch)
    # Chunked: 6 tokens, 300 + 606 pairs; pipelined: 6 tokens, 906 decode context: equal here.
    assert piped == pytest.approx(chunked, rel=1e-12)
    assert piped <= chunked


def test_a_step_without_decodes_is_the_inner_models() -> None:
    inner = Recorder()
    spec = SpeculativeStepModel(inner, Speculation())
    batch = BatchShape.of([], [(500, 20)])
    assert spec.step_time(batch) == inner.step_time(batch)
    assert spec.window_tokens is None


@PROPERTY
@given(
    st.lists(st.integers(1, 30_000), min_size=1, max_size=16),
    st.integers(1, 6),
    st.floats(0.0, 0.95),
    st.floats(0.01, 0.04),
)
def test_on_the_roofline_more_acceptance_never_makes_a_step_slower(
    contexts: list[int], k: int, a: float, da: float
) -> None:
    batch = BatchShape.of(contexts)
    low = SpeculativeStepModel(roofline(), Speculation(k, a, 0.1)).step_time(batch)
    high = SpeculativeStepModel(roofline(), Speculation(k, a + da, 0.1)).step_time(batch)
    assert high <= low * (1 + 1e-12)


@PROPERTY
@given(st.lists(st.integers(1, 30_000), min_size=1, max_size=16), st.integers(1, 6))
def test_drafts_that_are_never_accepted_never_make_a_step_faster(contexts: list[int], k: int) -> None:
    """With acceptance 0 each verify yields one token but processes k + 1."""
    batch = BatchShape.of(contexts)
    spec = SpeculativeStepModel(roofline(), Speculation(k, 0.0, 0.0))
    assert spec.step_time(batch) >= roofline().step_time(batch)


# -- stretches and coefficients -----------------------------------------------------------------


def test_a_stretch_through_a_fake_inner_model_is_exact_when_steps_are_linear() -> None:
    """Other inner models are timed at up to 17 steps and interpolated; a step time linear in
    the context makes that exact over 60 steps."""
    spec = SpeculativeStepModel(Recorder(), Speculation(2, 0.6, 0.2))
    contexts = np.array([10.0, 500.0, 3_000.0])
    times = spec.decode_times(contexts, 60)
    singles = [spec.step_time(BatchShape.of(contexts + j)) for j in range(60)]
    np.testing.assert_allclose(times, singles, rtol=1e-12)


def test_a_pipelined_roofline_stretch_follows_single_steps() -> None:
    """Two pipeline stages with pipelined verify: the vectorised stretch takes, step by step,
    the faster verify, as `step_time` does."""
    spec = SpeculativeStepModel(roofline(pp=2), Speculation(3, 0.7, 0.1), pipelined_verify=True)
    contexts = np.array([100.0, 2_000.0, 9_000.0])
    times = spec.decode_times(contexts, 12)
    singles = [spec.step_time(BatchShape.of(contexts + j)) for j in range(12)]
    np.testing.assert_allclose(times, singles, rtol=1e-9)


def test_the_coefficients_carry_the_speculation_over_the_inner_arrays() -> None:
    s = Speculation(4, 0.6, 0.2)
    c = SpeculativeStepModel(roofline(), s, pipelined_verify=True).coefficients()
    inner = roofline().coefficients()
    assert (c.spec_draft_tokens, c.spec_draft_cost, c.spec_pipelined) == (4, 0.2, True)
    assert c.spec_tokens_per_step == s.tokens_per_step
    assert dataclasses.replace(
        c, spec_draft_tokens=0, spec_tokens_per_step=1.0, spec_draft_cost=0.0, spec_pipelined=False
    ).latency_s == inner.latency_s
    for name in ("flops", "bytes", "rate_flops_per_s", "bandwidth_bytes_per_s", "comm_s"):
        np.testing.assert_array_equal(getattr(c, name), getattr(inner, name))
    assert (inner.spec_draft_tokens, inner.spec_tokens_per_step) == (0, 1.0)


def test_coefficients_need_a_roofline_inside() -> None:
    with pytest.raises(InputError, match="coefficients\\(\\) needs a RooflineStepModel inside; got Recorder"):
        SpeculativeStepModel(Recorder(), Speculation()).coefficients()


def test_a_stretch_of_no_steps_is_empty() -> None:
    """`StepModel.decode_times` of 0 steps is an empty array, as the roofline's is (the replica
    never asks for fewer than 2 steps, so runs are unaffected)."""
    assert roofline().decode_times(np.array([100.0]), 0).shape == (0,)
    assert SpeculativeStepModel(roofline(), Speculation()).decode_times(np.array([100.0]), 0).shape == (0,)


def test_wafer_speculation_needs_a_draft_on_the_wafers() -> None:
    catalog = load_catalog()
    system = catalog.system("cs-3")
    dep = Deployment(load_model("llama-3.1-8b"), system, catalog.device(system.device_id),
                     weight_dtype="bf16", engine="cerebras")
    with pytest.raises(InputError, match=r"wafer_speculation needs deployment\.draft_model"):
        wafer_speculation(dep, 3, 0.8)
