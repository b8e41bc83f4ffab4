"""What a serving run measured: the per-request table and its summaries (percentiles of TTFT,
TPOT, inter-token latency, end-to-end latency; throughput; goodput under SLOs; utilisation), and
batch size and KV utilisation over time (`RunResult.timeline`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from megawatt.errors import InputError
from megawatt.serving.replica import Replica, ReplicaStats
from megawatt.serving.timeline import Timeline

PERCENTILES = (50, 90, 99)


def weighted_percentile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The q-th percentile (0-100) of `values` each counted `weights` times."""
    if values.size == 0:
        return math.nan
    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[order]
    cum = np.cumsum(w)
    # The first value whose cumulative share reaches q (numpy's "inverted_cdf"); the tolerance
    # keeps equal weights that do not sum exactly from skipping a value.
    share = cum / cum[-1]
    idx = int(np.searchsorted(share, q / 100.0 - 1e-12, side="left"))
    return float(v[min(idx, v.size - 1)])


def ttft_of(arrival_s: np.ndarray, first_token_s: np.ndarray) -> np.ndarray:
    """Time to first token per request, s (inf when it never got one)."""
    t = first_token_s - arrival_s
    return np.where(np.isfinite(t), t, np.inf)


def tpot_of(first_token_s: np.ndarray, finish_s: np.ndarray, output_tokens: np.ndarray) -> np.ndarray:
    """Time per output token after the first, s (MLPerf's definition); 0 for one-token outputs,
    inf when unfinished."""
    n = np.maximum(output_tokens - 1, 1)
    t = (finish_s - first_token_s) / n
    t = np.where(output_tokens > 1, t, 0.0)
    return np.where(np.isfinite(t), t, np.inf)


def e2e_of(arrival_s: np.ndarray, finish_s: np.ndarray) -> np.ndarray:
    """End-to-end latency per request, s (inf when unfinished)."""
    t = finish_s - arrival_s
    return np.where(np.isfinite(t), t, np.inf)


@dataclass(frozen=True)
class Slo:
    """Latency limits a request (goodput) or a run (capacity search) must meet, in seconds."""

    ttft_p99_s: float = math.inf
    tpot_p99_s: float = math.inf


@dataclass
class RunResult:
    """The outcome of one replica run: one row per request plus time-integrated counters.

    Times are seconds from the start of the run; NaN where an event did not happen (a request
    still queued at the end has no first token).
    """

    arrival_s: np.ndarray
    first_token_s: np.ndarray
    finish_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    cached_tokens: np.ndarray
    preemptions: np.ndarray
    rejected: np.ndarray
    class_id: np.ndarray
    class_names: tuple[str, ...]
    stats: ReplicaStats
    end_s: float
    itl_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    itl_n: np.ndarray = field(default_factory=lambda: np.zeros(0))
    backlog: int = 0  # requests still waiting for admission when the last one arrived
    # The run's binned `Timeline`, which `timeline()` turns into a table (None: the run kept
    # none). Named `timeline_bins`, not `timeline`, so that the method keeps its name.
    timeline_bins: Timeline | None = None

    @staticmethod
    def of(replica: Replica, end_s: float) -> RunResult:
        """Collect a finished replica's records."""
        r = replica.requests
        done = np.array(replica.state) == 2
        if replica.cache is not None:
            replica.stats.prefix_evicted_blocks = replica.cache.n_evicted
        return RunResult(
            arrival_s=np.asarray(r.arrival_s),
            first_token_s=np.array(replica.first_token_s),
            finish_s=np.where(
                done | (np.array(replica.state) == 3), np.array(replica.finish_s), np.nan
            ),
            prompt_tokens=np.asarray(r.prompt_tokens),
            output_tokens=np.asarray(r.output_tokens),
            cached_tokens=np.array(replica.cache_hits, dtype=np.int64),
            preemptions=np.array(replica.preemptions, dtype=np.int64),
            rejected=np.array(replica.state) == 3,
            class_id=np.asarray(r.class_id),
            class_names=r.class_names,
            stats=replica.stats,
            end_s=end_s,
            itl_s=np.concatenate(replica.itl_s) if replica.itl_s else np.zeros(0),
            itl_n=np.concatenate(replica.itl_n) if replica.itl_n else np.zeros(0),
            timeline_bins=replica.timeline,
        )

    # -- per request --------------------------------------------------------------------------
    @property
    def n(self) -> int:
        """Requests in the run."""
        return int(self.arrival_s.size)

    @property
    def completed(self) -> np.ndarray:
        """Mask of requests that finished (not rejected, not cut off by the end of the run)."""
        mask: np.ndarray = np.isfinite(self.finish_s) & ~self.rejected
        return mask

    @property
    def ttft_s(self) -> np.ndarray:
        """Time to first token per request (inf when it never got one)."""
        return ttft_of(self.arrival_s, self.first_token_s)

    @property
    def tpot_s(self) -> np.ndarray:
        """Time per output token after the first, per request (MLPerf's definition); 0 for
        one-token outputs, inf when unfinished."""
        return tpot_of(self.first_token_s, self.finish_s, self.output_tokens)

    @property
    def e2e_s(self) -> np.ndarray:
        """End-to-end latency per request (inf when unfinished)."""
        return e2e_of(self.arrival_s, self.finish_s)

    def timeline(self) -> pa.Table:
        """Batch size, KV use and output tokens over time, one row per bin (see
        `Timeline.table`: `start_s`, `span_s`, `busy_fraction`, `mean_batch`, `mean_kv_bytes`,
        `kv_utilisation`, `output_tokens`, `output_tokens_per_s`); at most a few thousand rows
        whatever the length of the run."""
        if self.timeline_bins is None:
            raise InputError(
                "this run kept no timeline (it was assembled from other runs); use the "
                "timelines of its replicas."
            )
        return self.timeline_bins.table(self.end_s)

    def table(self) -> pa.Table:
        """The per-request table as Arrow (write it with `pyarrow.parquet.write_table`)."""
        names = np.array(self.class_names, dtype=object)
        return pa.table(
            {
                "arrival_s": self.arrival_s,
                "first_token_s": self.first_token_s,
                "finish_s": self.finish_s,
                "prompt_tokens": self.prompt_tokens,
                "output_tokens": self.output_tokens,
                "cached_tokens": self.cached_tokens,
                "preemptions": self.preemptions,
                "rejected": self.rejected,
                "class": names[self.class_id] if self.n else np.array([], dtype=object),
                "ttft_s": self.ttft_s,
                "tpot_s": self.tpot_s,
            }
        )

    # -- summaries ----------------------------------------------------------------------------
    @property
    def duration_s(self) -> float:
        """From the first arrival to the last completion (or the end of the run)."""
        if not self.n:
            return 0.0
        settled = self.completed | self.rejected
        last = float(np.nanmax(self.finish_s)) if settled.all() else self.end_s
        return max(last - float(self.arrival_s.min()), 0.0)

    @property
    def output_tokens_per_s(self) -> float:
        """Output tokens of completed requests per second of the run."""
        d = self.duration_s
        return float(self.output_tokens[self.completed].sum() / d) if d > 0 else 0.0

    def percentile(self, metric: str, q: float, mask: np.ndarray | None = None) -> float:
        """q-th percentile of `ttft_s`, `tpot_s` or `e2e_s` over non-rejected requests."""
        values = getattr(self, metric)
        keep = ~self.rejected if mask is None else (mask & ~self.rejected)
        v = values[keep]
        return float(np.percentile(v, q, method="inverted_cdf")) if v.size else math.nan

    def itl_percentile(self, q: float) -> float:
        """q-th percentile of inter-token latency over all decode tokens."""
        return weighted_percentile(self.itl_s, self.itl_n.astype(np.float64), q)

    def keeps_up(self) -> bool:
        """True when the replica keeps pace with the arrivals: the queue left when the last
        request arrived is small (at most 2% of the requests, or 5), and time to first token
        does not trend upward (the median of the last quarter of arrivals is at most twice the
        median of the middle half, plus 0.1 s). A replica that falls behind accumulates a
        backlog that a short run's percentiles alone would not yet show."""
        if self.backlog > max(5, 0.02 * self.n):
            return False
        if self.n < 40:
            return True
        order = np.argsort(self.arrival_s, kind="stable")
        ttft = self.ttft_s[order]
        q = self.n // 4
        middle, late = ttft[q : 3 * q], ttft[3 * q :]
        return bool(np.median(late) <= 2.0 * np.median(middle) + 0.1)

    def violations(self, slo: Slo) -> tuple[str, ...]:
        """Which limits the run breaks: `rejected` (a request cannot fit the KV cache),
        `backlog` (the replica falls behind), `TTFT`, `TPOT`."""
        out = []
        if self.rejected.any():
            out.append("rejected")
        if not self.keeps_up():
            out.append("backlog")
        if self.percentile("ttft_s", 99) > slo.ttft_p99_s:
            out.append("TTFT")
        if self.percentile("tpot_s", 99) > slo.tpot_p99_s:
            out.append("TPOT")
        return tuple(out)

    def meets(self, slo: Slo) -> bool:
        """True when p99 TTFT and p99 TPOT are within the limits, nothing was rejected and the
        replica keeps up with the arrivals."""
        return not self.violations(slo)

    def goodput(self, slo: Slo) -> float:
        """Completed requests per second whose own TTFT and TPOT meet the limits."""
        ok = self.completed & (self.ttft_s <= slo.ttft_p99_s) & (self.tpot_s <= slo.tpot_p99_s)
        d = self.duration_s
        return float(ok.sum() / d) if d > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """Headline figures of the run (seconds, tokens/s, fractions)."""
        d = self.duration_s
        st = self.stats
        out: dict[str, Any] = {
            "requests": self.n,
            "completed": int(self.completed.sum()),
            "rejected": int(self.rejected.sum()),
            "duration_s": d,
            "output_tokens_per_s": self.output_tokens_per_s,
            "requests_per_s": float(self.completed.sum() / d) if d > 0 else 0.0,
            "busy_fraction": st.busy_s / d if d > 0 else 0.0,
            "mean_batch": st.seq_seconds / st.busy_s if st.busy_s > 0 else 0.0,
            "mean_kv_bytes": st.kv_byte_seconds / st.busy_s if st.busy_s > 0 else 0.0,
            "preemptions": int(self.preemptions.sum()),
        }
        for metric in ("ttft_s", "tpot_s", "e2e_s"):
            for q in PERCENTILES:
                out[f"{metric[:-2]}_p{q}_s"] = self.percentile(metric, q)
        for q in PERCENTILES:
            out[f"itl_p{q}_s"] = self.itl_percentile(q)
        return out
