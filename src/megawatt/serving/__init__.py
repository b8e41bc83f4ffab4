"""The serving simulator: a replica doing iteration-level continuous batching on the event kernel,
scheduler policies, MLPerf-style drivers and the per-request metrics. Open-loop runs take a
compiled copy of the replica (`serving.fast`) when the step model exports its coefficients."""

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
from megawatt.serving.metrics import RunResult, Slo
from megawatt.serving.replica import KvBudget, Replica, ReplicaStats
from megawatt.serving.scheduler import SCHEDULERS, SchedulerPolicy, scheduler

__all__ = [
    "SCHEDULERS",
    "Capacity",
    "KvBudget",
    "Replica",
    "ReplicaConfig",
    "ReplicaStats",
    "RunResult",
    "SchedulerPolicy",
    "Slo",
    "capacity",
    "concurrency",
    "offline",
    "offline_rate_hint",
    "scheduler",
    "simulate",
    "single_user",
    "unit_poisson",
]
