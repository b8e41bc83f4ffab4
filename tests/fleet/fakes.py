"""Fakes for fleet tests: a step model standing in for the roofline (shared by the session and
affinity tests), and replica runs and pool results written by hand, so that accounting is
checked against figures worked out in the test rather than against a simulation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from megawatt.fleet.budget import size_pool
from megawatt.fleet.pool import PoolResult
from megawatt.fleet.sessions import SessionCapacity
from megawatt.hardware import load_catalog
from megawatt.model import load_model
from megawatt.perf import BatchShape, Deployment, plan_memory
from megawatt.serving import Capacity, KvBudget, RunResult, Slo
from megawatt.serving.replica import ReplicaStats


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


# -- hand-made results: what fleet accounting reads, without simulating -----------------------
CATALOG = load_catalog()
MODEL = load_model("llama-3.1-8b")


def run_result(
    arrival_s: Sequence[float],
    first_token_s: Sequence[float],
    finish_s: Sequence[float],
    output_tokens: Sequence[int],
    *,
    class_id: Sequence[int] | None = None,
    class_names: tuple[str, ...] = ("chat",),
    rejected: Sequence[bool] | None = None,
    busy_s: float = 0.0,
) -> RunResult:
    """A replica's run written by hand: one row per request (NaN where an event did not
    happen), 100-token prompts, no cache hits or preemptions."""
    n = len(arrival_s)
    finish = np.asarray(finish_s, dtype=np.float64)
    return RunResult(
        arrival_s=np.asarray(arrival_s, dtype=np.float64),
        first_token_s=np.asarray(first_token_s, dtype=np.float64),
        finish_s=finish,
        prompt_tokens=np.full(n, 100, dtype=np.int64),
        output_tokens=np.asarray(output_tokens, dtype=np.int64),
        cached_tokens=np.zeros(n, dtype=np.int64),
        preemptions=np.zeros(n, dtype=np.int64),
        rejected=np.zeros(n, dtype=bool) if rejected is None else np.asarray(rejected, dtype=bool),
        class_id=np.zeros(n, dtype=np.int64) if class_id is None else np.asarray(class_id, dtype=np.int64),
        class_names=class_names,
        stats=ReplicaStats(busy_s=busy_s),
        end_s=float(np.nanmax(finish)) if n and np.isfinite(finish).any() else 0.0,
    )


def pool_result(
    name: str,
    system_id: str = "hgx-h200",
    *,
    n_systems: int = 10,
    devices_per_replica: int = 1,
    rate_per_replica: float = 2.0,
    result: RunResult | None = None,
    single_stream_tokens_per_s: float = 100.0,
    sessions: tuple[SessionCapacity, ...] = (),
    deployment: Deployment | None = None,
) -> PoolResult:
    """A pool of `n_systems` catalog systems whose replicas each sustain `rate_per_replica`
    requests/s with `result` as the run at that rate (Llama-3.1-8B: FP8 on a GPU, on wafers
pipelined over `devices_per_replica` of them; or `deployment`, whose devices then size the
replica; nothing simulated)."""
    system = CATALOG.system(system_id)
    device = CATALOG.device(system.device_id)
    if deployment is not None:
        dep, devices_per_replica = deployment, deployment.tp * deployment.pp
    elif device.kind == "wafer":
        plan: dict[str, object] = {"pp": devices_per_replica, "engine": "cerebras"}
        dep = Deployment(model=MODEL, system=system, device=device, **plan)  # type: ignore[arg-type]
    else:
        plan = {"tp": devices_per_replica, "weight_dtype": "fp8"}
        dep = Deployment(model=MODEL, system=system, device=device, **plan)  # type: ignore[arg-type]
    size = size_pool(0.0, system, devices_per_replica, field=name, n_systems=n_systems)
    capacity = Capacity(rate_per_replica, result, Slo(), 0.05)
    return PoolResult(
        name, system, dep, plan_memory(dep), size, capacity, single_stream_tokens_per_s, 0.1,
        sessions=sessions,
    )
