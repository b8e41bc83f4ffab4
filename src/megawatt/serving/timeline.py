"""What a replica did over time, in bounded memory: per bin of time, the time-weighted batch size
and KV bytes in use, and the output tokens delivered. Bins double in width (neighbours merged in
pairs) whenever a run outgrows them, so a run of any length keeps at most `max_bins` bins."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from megawatt.errors import InputError

DEFAULT_BIN_S = 2.0**-10
"""The narrowest bin (seconds; a power of two, so bin edges are exact): about a millisecond."""

DEFAULT_MAX_BINS = 2048
"""Bins kept at most: a run longer than `DEFAULT_MAX_BINS x bin_s` widens its bins to fit, so
with the default bin every run longer than about two seconds ends with 1,024 to 2,048 bins."""


BUSY, SEQ, KV, TOKENS = range(4)
"""Rows of a timeline's `bins`: busy seconds, sequence-seconds, KV byte-seconds, output tokens."""
BIN_S, N_BINS, LAST_S = range(3)
"""Slots of a timeline's `meta`: the bin width (s), bins up to the last one touched, the latest
step end recorded (s)."""


def add_step(
    bins: np.ndarray,
    meta: np.ndarray,
    origin_s: float,
    start_s: float,
    end_s: float,
    batch: float,
    kv_bytes: float,
    tokens: float,
) -> None:
    """`Timeline.add_step` over a timeline's arrays (`bins`: 4 x max_bins, rows `BUSY` ..
    `TOKENS`; `meta`: `BIN_S`, `N_BINS`, `LAST_S`): one step over `[start_s, end_s)` with
    `batch` sequences, `kv_bytes` in use and `tokens` output tokens delivered at its end. Written
    once for both engines: the compiled replica compiles this function."""
    m = bins.shape[1]
    w = meta[BIN_S]
    while math.ceil((end_s - origin_s) / w) > m:  # double the bins' width: merge pairs
        half = m // 2
        for r in range(4):
            for b in range(half):  # reads 2b, 2b + 1 >= b: not yet overwritten
                bins[r, b] = bins[r, 2 * b] + bins[r, 2 * b + 1]
            for b in range(half, m):
                bins[r, b] = 0.0
        w *= 2.0
        meta[N_BINS] = math.floor((meta[N_BINS] + 1.0) / 2.0)
    meta[BIN_S] = w
    first = math.floor((start_s - origin_s) / w)
    last = max(math.ceil((end_s - origin_s) / w) - 1, first)
    for b in range(first, last + 1):
        lo = max(start_s, origin_s + b * w)
        hi = min(end_s, origin_s + (b + 1) * w)
        if hi > lo:
            bins[BUSY, b] += hi - lo
            bins[SEQ, b] += batch * (hi - lo)
            bins[KV, b] += kv_bytes * (hi - lo)
    bins[TOKENS, last] += tokens
    meta[N_BINS] = max(meta[N_BINS], last + 1.0)
    meta[LAST_S] = max(meta[LAST_S], end_s)


class Timeline:
    """Time-binned counters of one replica (or a pool: see `merged`).

    Bin b covers `[origin_s + b * bin_s, origin_s + (b + 1) * bin_s)`. Each engine step adds,
    to every bin its interval `[start, end)` overlaps (split at the bin edges), the seconds it
    overlaps (`busy_s`), times the batch size (`seq_s`) and times the KV bytes in use during the
    step (`kv_s`); its output tokens (decodes plus first tokens of prompts that finish) go to the
    last bin it overlaps, the one holding the instant just before its end (`tokens`). Idle time
    adds nothing, so means taken over a bin count it as batch 0 and no KV in use. A step ending
    past `origin_s + max_bins * bin_s` first doubles `bin_s` (as often as needed), merging bins
    in pairs. Both engines of `simulate` fill a timeline step by step in the same way, so their
    timelines agree (up to the rounding of sums taken in another order).

    Memory: `4 x max_bins` floats, whatever the length of the run: `bins` (rows `BUSY`, `SEQ`,
    `KV`, `TOKENS`, also named `busy_s`, `seq_s`, `kv_s`, `tokens`) and `meta` (the bin width,
    the bins touched and the last step end, also named `bin_s`, `n_bins`, `last_s`), the arrays
    `add_step` fills in both engines.
    """

    __slots__ = ("bins", "busy_s", "capacity_bytes", "kv_s", "max_bins", "meta", "origin_s",
                 "seq_s", "tokens")

    def __init__(
        self,
        origin_s: float,
        capacity_bytes: float,
        bin_s: float = DEFAULT_BIN_S,
        max_bins: int = DEFAULT_MAX_BINS,
    ) -> None:
        if not (math.isfinite(bin_s) and bin_s > 0):
            raise InputError(f"timeline bin_s must be a positive number of seconds; got {bin_s}.")
        if max_bins < 2 or max_bins % 2:
            raise InputError(f"timeline max_bins must be even and >= 2; got {max_bins}.")
        self.origin_s = float(origin_s)
        self.capacity_bytes = float(capacity_bytes)
        self.max_bins = int(max_bins)
        self.bins = np.zeros((4, max_bins))
        self.busy_s, self.seq_s, self.kv_s, self.tokens = self.bins  # views of its rows
        self.meta = np.array([float(bin_s), 0.0, self.origin_s])

    @property
    def bin_s(self) -> float:
        """The bins' width (seconds): the narrowest one, doubled as often as the run needed."""
        return float(self.meta[BIN_S])

    @property
    def n_bins(self) -> int:
        """Bins up to the last one a step touched."""
        return int(self.meta[N_BINS])

    @property
    def last_s(self) -> float:
        """The latest step end recorded (s; the origin before any)."""
        return float(self.meta[LAST_S])

    # -- recording ----------------------------------------------------------------------------
    def _coarsen(self) -> None:
        half = self.max_bins // 2
        for arr in self.bins:
            arr[:half] = arr[0::2] + arr[1::2]
            arr[half:] = 0.0
        self.meta[BIN_S] *= 2.0
        self.meta[N_BINS] = (self.n_bins + 1) // 2

    def _fit(self, end_s: float) -> None:
        while math.ceil((end_s - self.origin_s) / self.bin_s) > self.max_bins:
            self._coarsen()

    def add_step(
        self, start_s: float, end_s: float, batch: float, kv_bytes: float, tokens: float
    ) -> None:
        """One step over `[start_s, end_s)` with `batch` sequences, `kv_bytes` in use and
        `tokens` output tokens delivered at its end (`add_step`)."""
        add_step(self.bins, self.meta, self.origin_s, start_s, end_s, batch, kv_bytes, tokens)

    def add_steps(
        self,
        start_s: float,
        ends_s: np.ndarray,
        batch: float,
        kv_bytes: np.ndarray,
        tokens: float,
    ) -> None:
        """Consecutive steps (a decode stretch): the first starts at `start_s`, step j ends at
        `ends_s[j]` with `kv_bytes[j]` in use; each has `batch` sequences and delivers `tokens`."""
        k = ends_s.size
        if k == 0:
            return
        self._fit(float(ends_s[-1]))
        starts = np.empty(k)
        starts[0] = start_s
        starts[1:] = ends_s[:-1]
        origin, w = self.origin_s, self.bin_s
        first = np.floor((starts - origin) / w).astype(np.int64)
        last = np.maximum(np.ceil((ends_s - origin) / w).astype(np.int64) - 1, first)
        inside = first == last
        if inside.any():
            b, span = last[inside], (ends_s - starts)[inside]
            m = self.max_bins
            self.busy_s += np.bincount(b, span, m)
            self.seq_s += np.bincount(b, batch * span, m)
            self.kv_s += np.bincount(b, kv_bytes[inside] * span, m)
        for j in np.flatnonzero(~inside):
            self.add_step(float(starts[j]), float(ends_s[j]), batch, float(kv_bytes[j]), 0.0)
        self.tokens += np.bincount(last, np.full(k, float(tokens)), self.max_bins)
        self.meta[N_BINS] = max(self.n_bins, int(last[-1]) + 1)
        self.meta[LAST_S] = max(self.last_s, float(ends_s[-1]))

    # -- reading ------------------------------------------------------------------------------
    def table(self, end_s: float | None = None) -> pa.Table:
        """One row per bin, from the first to the last one touched (or to `end_s`, the end of
        the run, when that is later): `start_s`, `span_s` (the part of the bin inside the run),
        `busy_fraction`, `mean_batch`, `mean_kv_bytes`, `kv_utilisation` (of capacity),
        `output_tokens` and `output_tokens_per_s`. Means are over the span, idle time included."""
        stop = self.last_s if end_s is None else max(self.last_s, float(end_s))
        n = self.n_bins
        if stop > self.origin_s:
            n = max(n, min(math.ceil((stop - self.origin_s) / self.bin_s), self.max_bins))
        starts = self.origin_s + np.arange(n) * self.bin_s
        span = np.minimum(starts + self.bin_s, max(stop, self.origin_s)) - starts
        safe = np.where(span > 0, span, 1.0)
        kv = self.kv_s[:n] / safe
        return pa.table(
            {
                "start_s": starts,
                "span_s": span,
                "busy_fraction": self.busy_s[:n] / safe,
                "mean_batch": self.seq_s[:n] / safe,
                "mean_kv_bytes": kv,
                "kv_utilisation": kv / self.capacity_bytes,
                "output_tokens": self.tokens[:n].astype(np.int64),
                "output_tokens_per_s": self.tokens[:n] / safe,
            }
        )

    @staticmethod
    def merged(timelines: Sequence[Timeline]) -> Timeline:
        """A pool's timeline: the sum of its replicas' (same origin and bin grid), on the widest
        bins any of them reached; capacity is the pool's total."""
        if not timelines:
            raise InputError("Timeline.merged needs at least one timeline; got none.")
        base = timelines[0]
        out = Timeline(
            base.origin_s,
            sum(t.capacity_bytes for t in timelines),
            min(t.bin_s for t in timelines),
            base.max_bins,
        )
        for t in timelines:
            if t.origin_s != base.origin_s or t.max_bins != base.max_bins:
                raise InputError(
                    "Timeline.merged needs timelines on one grid (origin and max_bins); got "
                    f"origins {base.origin_s} and {t.origin_s}, max_bins {base.max_bins} and "
                    f"{t.max_bins}. Build the replicas on one Environment with one bin_s."
                )
            ratio = t.bin_s / out.bin_s
            if ratio != 2.0 ** round(math.log2(ratio)):
                raise InputError(
                    f"Timeline.merged needs bin widths a power of two apart; got {out.bin_s} s "
                    f"and {t.bin_s} s. Use one bin_s for every replica."
                )
        while out.bin_s < max(t.bin_s for t in timelines):
            out._coarsen()
        for t in timelines:
            step = round(out.bin_s / t.bin_s)
            n = t.max_bins // step
            for mine, theirs in ((out.busy_s, t.busy_s), (out.seq_s, t.seq_s),
                                 (out.kv_s, t.kv_s), (out.tokens, t.tokens)):
                if n:
                    mine[:n] += theirs.reshape(n, step).sum(axis=1)
                else:  # bins over max_bins times narrower: all of them within the first
                    mine[0] += theirs.sum()
            out.meta[N_BINS] = max(out.n_bins, -(-t.n_bins // step))
            out.meta[LAST_S] = max(out.last_s, t.last_s)
        return out
