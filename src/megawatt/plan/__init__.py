"""Planning: search over deployments (parallel plan, wafer count) for a model on a system, and
the one search for the fewest pipeline stages that hold it (`fit`)."""

from megawatt.plan.fit import MAX_STAGES, fewest_stages, holds, min_devices
from megawatt.plan.search import (
    Choice,
    PoolSettings,
    candidates,
    choose,
    per_system,
    plan_problem,
    resolve_weight_dtype,
    tp_widths,
)

__all__ = [
    "MAX_STAGES",
    "Choice",
    "PoolSettings",
    "candidates",
    "choose",
    "fewest_stages",
    "holds",
    "min_devices",
    "per_system",
    "plan_problem",
    "resolve_weight_dtype",
    "tp_widths",
]
