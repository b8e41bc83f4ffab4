"""A fake step model for fleet tests (the roofline's stand-in), shared by the session and
affinity tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from megawatt.perf import BatchShape
from megawatt.serving import KvBudget


@dataclass(frozen=True)
class LinearStep:
    """A step costs `base_s`, plus `per_token_s` a token processed, plus `per_context_s` a token
    of context attended (a stand-in for the roofline, exact in its decode stretches)."""

    base_s: float = 1e-2
    per_token_s: float = 1e-4
    per_context_s: float = 1e-6
    window_tokens: int | None = None

    def step_time(self, batch: BatchShape) -> float:
        return (
            self.base_s + self.per_token_s * batch.tokens
            + self.per_context_s * (batch.decode_context + batch.prefill_attention)
        )

    def decode_times(self, contexts: np.ndarray, n_steps: int) -> np.ndarray:
        grown = np.asarray(contexts, dtype=np.float64)[None, :] + np.arange(n_steps)[:, None]
        return self.base_s + self.per_token_s * len(contexts) + self.per_context_s * grown.sum(axis=1)


def kv_for_tokens(tokens: float) -> KvBudget:
    """A KV cache of `tokens` tokens of 1 kB each."""
    return KvBudget(tokens * 1000.0, 1000.0)
