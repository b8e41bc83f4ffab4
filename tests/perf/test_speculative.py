"""Speculative decoding as a step-model wrapper: the expected tokens per verify step, and step
times that reduce to the plain model when nothing is drafted."""

from __future__ import annotations

import numpy as np
import pytest

from megawatt.errors import InputError
from megawatt.hardware import load_catalog
from megawatt.model import load_model
from megawatt.perf import BatchShape, Deployment, RooflineStepModel
from megawatt.perf.speculative import Speculation, SpeculativeStepModel, tokens_per_verify

CATALOG = load_catalog()


def plain() -> RooflineStepModel:
    system = CATALOG.system("hgx-h200")
    return RooflineStepModel(
        Deployment(load_model("llama-3.1-8b"), system, CATALOG.device("h200-sxm"), weight_dtype="fp8")
    )


@pytest.mark.parametrize(
    ("k", "a", "expected"),
    [(3, 0.8, (1 - 0.8**4) / 0.2), (0, 0.7, 1.0), (4, 0.0, 1.0), (2, 1.0, 3.0)],
)
def test_tokens_per_verify_step(k: int, a: float, expected: float) -> None:
    assert tokens_per_verify(k, a) == pytest.approx(expected)


def test_bad_settings_name_the_parameter() -> None:
    with pytest.raises(InputError, match="acceptance must be in"):
        Speculation(acceptance=1.5)
    with pytest.raises(InputError, match="draft_cost"):
        Speculation(draft_cost=-0.1)


def test_drafting_nothing_is_the_plain_model() -> None:
    inner = plain()
    spec = SpeculativeStepModel(inner, Speculation(draft_tokens=0, acceptance=0.5, draft_cost=0.3))
    batch = BatchShape.of([500, 900], [(256, 0)])
    assert spec.step_time(batch) == pytest.approx(inner.step_time(batch))


def test_a_decode_step_is_a_verify_of_k_plus_1_tokens_plus_drafts_over_expected_tokens() -> None:
    inner = plain()
    s = Speculation(draft_tokens=3, acceptance=0.8, draft_cost=0.1)
    spec = SpeculativeStepModel(inner, s)
    ctx = 1000
    verify = inner.step_time(
        BatchShape(
            n_decode=1, decode_context=ctx, decode_context_max=ctx, prefill_tokens=3,
            prefill_attention=3 * (ctx + 2.0), n_logits=4,
        )
    )
    draft = 3 * 0.1 * inner.step_time(BatchShape.of([ctx]))
    assert spec.step_time(BatchShape.of([ctx])) == pytest.approx((verify + draft) / s.tokens_per_step)
    # Batch 1 decode is memory bound, so verifying 4 tokens costs about one step: ~2.5x faster.
    assert inner.step_time(BatchShape.of([ctx])) / spec.step_time(BatchShape.of([ctx])) > 2.0


def test_prefill_only_steps_are_unchanged_and_stretches_follow_single_steps() -> None:
    inner = plain()
    spec = SpeculativeStepModel(inner, Speculation())
    prefill = BatchShape.of([], [(1024, 0)])
    assert spec.step_time(prefill) == inner.step_time(prefill)
    times = spec.decode_times(np.array([100.0, 300.0]), 40)
    singles = [spec.step_time(BatchShape.of([100.0 + j, 300.0 + j])) for j in range(40)]
    assert times == pytest.approx(singles, rel=1e-6)
