"""The serving simulator: a replica doing iteration-level continuous batching on the event kernel,
scheduler policies, MLPerf-style drivers, prefill/decode disaggregation (`serving.disagg`), the
per-request metrics and timelines. Open-loop runs take a compiled copy of the replica
(`serving.compiled`) when the step model exports its coefficients and no prefix-block hashes are
given."""

from megawatt.serving.disagg import (
    ROUTERS,
    DisaggResult,
    KvLink,
    closed_loop_by_symmetry,
    disaggregated,
)
from megawatt.serving.drivers import (
    Capacity,
    ReplicaConfig,
    capacity,
    concurrency,
    offline,
    offline_rate_hint,
    simulate,
    single_user,
    unit_poisson,
)
from megawatt.serving.kv import KvBudget
from megawatt.serving.metrics import RunResult, Slo
from megawatt.serving.prefix import PrefixCache
from megawatt.serving.replica import PREFIX_BLOCK_TOKENS, Replica, ReplicaStats
from megawatt.serving.scheduler import SCHEDULERS, SchedulerPolicy, scheduler
from megawatt.serving.timeline import Timeline

__all__ = [
    "PREFIX_BLOCK_TOKENS",
    "ROUTERS",
    "SCHEDULERS",
    "Capacity",
    "DisaggResult",
    "KvBudget",
    "KvLink",
    "PrefixCache",
    "Replica",
    "ReplicaConfig",
    "ReplicaStats",
    "RunResult",
    "SchedulerPolicy",
    "Slo",
    "Timeline",
    "capacity",
    "closed_loop_by_symmetry",
    "concurrency",
    "disaggregated",
    "offline",
    "offline_rate_hint",
    "scheduler",
    "simulate",
    "single_user",
    "unit_poisson",
]
