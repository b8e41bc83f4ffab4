"""Streaming latency histograms: any percentile is within the stated relative error of the exact
inverted-CDF percentile, zeros stay zero, infinities stay infinite, and memory does not grow
with the values recorded."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from megawatt.fleet.histogram import MAX_S, MIN_S, RELATIVE_ERROR, LatencyHistograms, bucket_of
from megawatt.serving.metrics import weighted_percentile


def exact_percentile(values: list[float], q: float) -> float:
    """The inverted-CDF percentile with an exact integer rank (no float ties)."""
    ordered = sorted(values)
    rank = max(math.ceil(Fraction(q) * len(ordered) / 100), 1)
    return ordered[rank - 1]


latency = st.floats(MIN_S, MAX_S / 10, allow_nan=False)
percent = st.integers(0, 200).map(lambda x: x / 2)


@given(values=st.lists(latency, min_size=1, max_size=300), q=percent)
def test_a_percentile_is_within_the_stated_relative_error(values: list[float], q: float) -> None:
    hist = LatencyHistograms(("chat",), metrics=("ttft_s",))
    hist.add("ttft_s", np.array(values), np.zeros(len(values), dtype=np.int64))
    exact = exact_percentile(values, q)
    assert abs(hist.quantile("ttft_s", q) - exact) <= RELATIVE_ERROR * exact * (1 + 1e-9)


@given(
    values=st.lists(latency, min_size=1, max_size=200),
    classes=st.lists(st.integers(0, 2), min_size=200, max_size=200),
    q=percent,
)
def test_each_class_has_its_own_percentiles(values: list[float], classes: list[int], q: float) -> None:
    names = ("chat", "code", "docs")
    cls = np.array(classes[: len(values)])
    hist = LatencyHistograms(names, metrics=("e2e_s",))
    hist.add("e2e_s", np.array(values), cls)
    for c, name in enumerate(names):
        mine = [v for v, k in zip(values, cls, strict=True) if k == c]
        got = hist.quantile("e2e_s", q, name)
        if not mine:
            assert math.isnan(got)
            continue
        exact = exact_percentile(mine, q)
        assert abs(got - exact) <= RELATIVE_ERROR * exact * (1 + 1e-9)


def test_bucket_values_weighted_give_the_same_percentile() -> None:
    rng = np.random.default_rng(1)
    values = rng.lognormal(-2, 1.5, 5000)
    hist = LatencyHistograms(("chat",))
    hist.add("tpot_s", values, np.zeros(values.size, dtype=np.int64))
    for q in (50, 90, 99, 99.9):
        v, w = hist.weighted("tpot_s")
        assert weighted_percentile(v, w, q) == hist.quantile("tpot_s", q)


def test_zeros_and_infinities_are_kept_as_such() -> None:
    hist = LatencyHistograms(("chat",), metrics=("tpot_s",))
    hist.add("tpot_s", np.array([0.0, 0.0, 0.01, np.inf]), np.zeros(4, dtype=np.int64))
    assert hist.quantile("tpot_s", 50) == 0.0
    assert hist.quantile("tpot_s", 100) == math.inf
    assert hist.n("tpot_s") == 4


def test_memory_is_the_buckets_whatever_the_values() -> None:
    hist = LatencyHistograms(("chat", "code"))
    before = sum(c.nbytes for c in hist.counts.values())
    for _ in range(5):
        hist.add("ttft_s", np.random.default_rng(0).exponential(1.0, 200_000), np.zeros(200_000, np.int64))
    assert sum(c.nbytes for c in hist.counts.values()) == before < 200_000
    assert hist.n("ttft_s") == 1_000_000


def test_values_out_of_range_go_to_the_end_buckets() -> None:
    slots = bucket_of(np.array([0.0, MIN_S / 2, MIN_S, MAX_S * 10, np.inf]))
    assert slots[0] == slots[1] == 0 and slots[2] == 1
    assert slots[3] == slots.max() - 1 and slots[4] == slots.max()
