"""Tiny fixtures for the serving simulator: fake step models behind the `StepModel` seam, a small
KV budget and small request tables. Test modules import the fakes and table builders; the
fixtures are immutable, so they are session-scoped (and safe under Hypothesis)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from megawatt.perf import BatchShape
from megawatt.serving import KvBudget, ReplicaConfig, RunResult
from megawatt.workload import Requests


@dataclass(frozen=True)
class ConstantStep:
    """Every step takes `dt_s` seconds whatever the batch (a memory-bound replica). The default
    is a power of two, so sums of steps are exact and ties with arrivals are exact too."""

    dt_s: float = 0.25
    window_tokens: int | None = None

    def step_time(self, batch: BatchShape) -> float:
        return self.dt_s

    def decode_times(self, contexts: np.ndarray, n_steps: int) -> np.ndarray:
        return np.full(n_steps, self.dt_s)


@dataclass(frozen=True)
class LinearStep:
    """A step costs `base_s`, plus `per_token_s` per token processed, plus `per_context_s` per
    token of context attended (decode contexts and prefill attention), plus `per_window_s` per
    token of windowed context. Its `decode_times` is exact: step j of a stretch attends the
    starting contexts plus j."""

    base_s: float = 1e-2
    per_token_s: float = 1e-4
    per_context_s: float = 1e-6
    per_window_s: float = 0.0
    window_tokens: int | None = None

    def step_time(self, batch: BatchShape) -> float:
        return (
            self.base_s
            + self.per_token_s * batch.tokens
            + self.per_context_s * (batch.decode_context + batch.prefill_attention)
            + self.per_window_s * (batch.decode_window + batch.prefill_window)
        )

    def decode_times(self, contexts: np.ndarray, n_steps: int) -> np.ndarray:
        contexts = np.asarray(contexts, dtype=np.float64)
        grown = contexts[None, :] + np.arange(n_steps, dtype=np.float64)[:, None]
        windowed = (
            np.minimum(grown, self.window_tokens).sum(axis=1) if self.window_tokens else np.zeros(n_steps)
        )
        return (
            self.base_s
            + self.per_token_s * contexts.size
            + self.per_context_s * grown.sum(axis=1)
            + self.per_window_s * windowed
        )


def make_requests(
    prompt: Sequence[int],
    output: Sequence[int],
    *,
    arrival_s: Sequence[float] | None = None,
    cached: Sequence[int] | None = None,
) -> Requests:
    """A request table from plain lists (arrivals default to t=0, no cached prefix)."""
    n = len(prompt)
    return Requests(
        arrival_s=np.zeros(n) if arrival_s is None else np.asarray(arrival_s, dtype=np.float64),
        prompt_tokens=np.asarray(prompt, dtype=np.int64),
        output_tokens=np.asarray(output, dtype=np.int64),
        cached_tokens=np.zeros(n, dtype=np.int64) if cached is None else np.asarray(cached),
        class_id=np.zeros(n, dtype=np.int64),
        class_names=("chat",),
    )


def random_requests(
    seed: int,
    n: int = 40,
    *,
    rate_per_s: float = 20.0,
    max_prompt: int = 300,
    max_output: int = 60,
    cached_fraction: float = 0.0,
) -> Requests:
    """`n` requests of two classes with Poisson arrivals and uniform lengths, drawn from `seed`."""
    rng = np.random.default_rng(seed)
    prompt = rng.integers(1, max_prompt + 1, n)
    cached = np.where(rng.random(n) < cached_fraction, rng.integers(0, prompt), 0)
    return Requests(
        arrival_s=np.cumsum(rng.exponential(1.0 / rate_per_s, n)),
        prompt_tokens=prompt,
        output_tokens=rng.integers(1, max_output + 1, n),
        cached_tokens=cached,
        class_id=rng.integers(0, 2, n),
        class_names=("chat", "code"),
    )


def kv_for_tokens(tokens: float, bytes_per_token: float = 1000.0, **kwargs: Any) -> KvBudget:
    """A KV cache of `tokens` x `bytes_per_token` bytes (1 kB a token by default)."""
    return KvBudget(tokens * bytes_per_token, bytes_per_token, **kwargs)


@pytest.fixture(scope="session")
def constant_step() -> ConstantStep:
    """A quarter of a second a step."""
    return ConstantStep()


@pytest.fixture(scope="session")
def linear_step() -> LinearStep:
    """10 ms a step, plus 0.1 ms a token, plus 1 us a token of context."""
    return LinearStep()


@pytest.fixture(scope="session")
def tiny_kv() -> KvBudget:
    """Room for 2,000 tokens: a handful of the small requests at once."""
    return kv_for_tokens(2000)


@pytest.fixture(scope="session")
def small_requests() -> Requests:
    """40 requests of up to 300 + 60 tokens, arriving at about 20 per second."""
    return random_requests(seed=7)


@pytest.fixture(scope="session")
def config(linear_step: LinearStep, tiny_kv: KvBudget) -> ReplicaConfig:
    """The linear fake with the tiny cache, at most 8 sequences and 256 tokens a step."""
    return ReplicaConfig(linear_step, tiny_kv, max_num_seqs=8, max_num_batched_tokens=256)


def assert_same_timeline(a: RunResult, b: RunResult, rtol: float = 1e-9) -> None:
    """The same bins (width, count) holding the same busy time, batch, KV use and tokens."""
    assert a.timeline_bins is not None and b.timeline_bins is not None
    assert a.timeline_bins.bin_s == b.timeline_bins.bin_s
    ta, tb = a.timeline(), b.timeline()
    assert ta.num_rows == tb.num_rows
    for name in ta.column_names:
        np.testing.assert_allclose(
            ta[name].to_numpy(), tb[name].to_numpy(), rtol=rtol, atol=1e-9, err_msg=name
        )
