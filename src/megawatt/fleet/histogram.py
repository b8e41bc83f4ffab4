"""Streaming latency histograms (HDR-style log buckets): quantiles within a stated relative error
in memory bounded by the bucket count, however many requests are recorded.

Bucket i >= 1 holds values in (MIN_S x g^(i-1), MIN_S x g^i] with g = (1 + a) / (1 - a) and
a = RELATIVE_ERROR; its representative 2 MIN_S g^i / (g + 1) is within a (relative) of every
value in it. A quantile is the representative of the bucket holding the exact inverted-CDF
quantile, so it is within RELATIVE_ERROR of it for values in [MIN_S, MAX_S]. Bucket 0 holds
[0, MIN_S) (reported as 0: absolute error below MIN_S); values above MAX_S count in the top
bucket; infinities (requests that never finished) are counted apart and reported as inf.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

RELATIVE_ERROR = 0.005  # a quantile is within 0.5% of the exact one
MIN_S = 1e-6  # below one microsecond a value counts as 0
MAX_S = 1e7  # about 116 days: no latency of a simulated day comes near
_GAMMA = (1.0 + RELATIVE_ERROR) / (1.0 - RELATIVE_ERROR)
_LOG_GAMMA = math.log(_GAMMA)
N_BUCKETS = math.ceil(math.log(MAX_S / MIN_S) / _LOG_GAMMA) + 1  # bucket 0 and the log buckets
_INF = N_BUCKETS  # the slot of infinite values


def bucket_values() -> np.ndarray:
    """The representative of each bucket (s), and inf for the slot of infinite values."""
    i = np.arange(1, N_BUCKETS, dtype=np.float64)
    reps = 2.0 * MIN_S * np.exp(i * _LOG_GAMMA) / (_GAMMA + 1.0)
    return np.concatenate(([0.0], reps, [math.inf]))


_VALUES = bucket_values()


def bucket_of(values: np.ndarray) -> np.ndarray:
    """The slot of each value (seconds >= 0; inf allowed), as int64."""
    v = np.asarray(values, dtype=np.float64)
    out = np.empty(v.shape, dtype=np.int64)
    finite = np.isfinite(v)
    f = v[finite]
    logs = np.log(np.maximum(f, MIN_S) / MIN_S) / _LOG_GAMMA
    idx = np.clip(np.ceil(logs).astype(np.int64), 1, N_BUCKETS - 1)  # MIN_S itself: bucket 1
    out[finite] = np.where(f < MIN_S, 0, idx)
    out[~finite] = _INF
    return out


@dataclass
class LatencyHistograms:
    """Per request class, a histogram of each latency metric, filled batch by batch.

    `counts[metric]` is an int64 array (classes x (N_BUCKETS + 1)); the last column counts
    infinite values. Memory: classes x metrics x ~3,000 counts, whatever the requests."""

    class_names: tuple[str, ...]
    metrics: tuple[str, ...] = ("ttft_s", "tpot_s", "e2e_s")
    counts: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for m in self.metrics:
            self.counts.setdefault(m, np.zeros((len(self.class_names), N_BUCKETS + 1), np.int64))

    def add(self, metric: str, values: np.ndarray, class_id: np.ndarray) -> None:
        """Record `values` (seconds >= 0, inf allowed) of requests of classes `class_id`."""
        width = N_BUCKETS + 1
        flat = np.asarray(class_id, dtype=np.int64) * width + bucket_of(values)
        self.counts[metric] += np.bincount(flat, minlength=len(self.class_names) * width).reshape(
            len(self.class_names), width
        )

    def n(self, metric: str, class_name: str | None = None) -> int:
        """Values recorded (of one class, or all)."""
        c = self.counts[metric]
        return int(c.sum() if class_name is None else c[self.class_names.index(class_name)].sum())

    def weighted(self, metric: str, class_name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(value, count) of each bucket holding values of a metric (one class, or all): what
        `weighted_percentile` takes in place of the values themselves."""
        c = self.counts[metric]
        if class_name is None:
            row = c.sum(axis=0)
        elif class_name in self.class_names:
            row = c[self.class_names.index(class_name)]
        else:
            row = np.zeros(N_BUCKETS + 1, np.int64)
        keep = np.flatnonzero(row)
        return _VALUES[keep], row[keep].astype(np.float64)

    def quantile(self, metric: str, q: float, class_name: str | None = None) -> float:
        """q-th percentile (0-100) of a metric, within RELATIVE_ERROR of the exact
        inverted-CDF percentile (NaN when nothing was recorded)."""
        values, counts = self.weighted(metric, class_name)
        if not counts.size:
            return math.nan
        total = counts.sum()
        rank = min(max(math.ceil(q / 100.0 * total - 1e-9), 1), total)  # inverted CDF
        return float(values[int(np.searchsorted(np.cumsum(counts), rank, side="left"))])
