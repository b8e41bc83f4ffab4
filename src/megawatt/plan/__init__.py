"""Planning: search over deployments (parallel plan, wafer count) for a model on a system."""

from megawatt.plan.search import (
    Choice,
    PoolSettings,
    candidates,
    choose,
    per_system,
    plan_problem,
    resolve_weight_dtype,
)

__all__ = [
    "Choice",
    "PoolSettings",
    "candidates",
    "choose",
    "per_system",
    "plan_problem",
    "resolve_weight_dtype",
]
