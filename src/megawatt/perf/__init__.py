"""The performance model: how long one engine step takes and what fits in memory.

`Deployment` describes a replica; `plan_memory` places weights and KV cache; `RooflineStepModel`
times steps behind the `StepModel` seam the serving simulator uses.
"""

from megawatt.perf.breakdown import OperatorTime, StepBreakdown
from megawatt.perf.deployment import Deployment
from megawatt.perf.efficiency import (
    Efficiencies,
    efficiencies_for,
    efficiency_key,
    family_of,
    prior,
)
from megawatt.perf.image import (
    ImageEfficiency,
    ImageTime,
    best_image_batch,
    fitted_image_efficiency,
    image_time,
)
from megawatt.perf.memory import MemoryPlan, WeightBytes, plan_memory, weight_bytes
from megawatt.perf.roofline import BatchShape, RooflineStepModel, StepModel

__all__ = [
    "BatchShape",
    "Deployment",
    "Efficiencies",
    "ImageEfficiency",
    "ImageTime",
    "MemoryPlan",
    "OperatorTime",
    "RooflineStepModel",
    "StepBreakdown",
    "StepModel",
    "WeightBytes",
    "best_image_batch",
    "efficiencies_for",
    "efficiency_key",
    "family_of",
    "fitted_image_efficiency",
    "image_time",
    "plan_memory",
    "prior",
    "weight_bytes",
]
