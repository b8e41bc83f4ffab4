"""Why a model runs at its speed on some hardware: the memory plan (devices or wafers, layers per
stage, cores per layer, weights and KV bytes, sequences that fit) and decode steps broken down by
operator and bound, for one sequence alone and for the largest batch that fits."""

from __future__ import annotations

from dataclasses import dataclass, replace

from megawatt.errors import FitError
from megawatt.hardware import Catalog, System
from megawatt.model import load_model
from megawatt.perf import (
    BatchShape,
    Deployment,
    MemoryPlan,
    RooflineStepModel,
    StepBreakdown,
    plan_memory,
)
from megawatt.plan import PoolSettings, candidates, resolve_weight_dtype


@dataclass(frozen=True)
class Explanation:
    """A deployment, its memory plan, and decode-step breakdowns at batch 1 and at max batch."""

    deployment: Deployment
    memory: MemoryPlan
    context_tokens: int
    max_sequences: int
    single: StepBreakdown
    batched: StepBreakdown | None
    batch: int
    cores_per_layer: int | None


def _system(catalog: Catalog, hardware_id: str) -> System:
    if hardware_id in catalog.systems:
        return catalog.system(hardware_id)
    device = catalog.device(hardware_id)  # raises a clear CatalogError when unknown
    systems = catalog.systems_for(device.id)
    if not systems:
        raise FitError(
            f"device {device.id} has no system in the catalog; add one in a hardware YAML."
        )
    return max(systems, key=lambda s: s.n_devices)


def explain_deployment(
    catalog: Catalog,
    hardware_id: str,
    model_id: str,
    *,
    context: int = 8192,
    weight_dtype: str = "auto",
    tp: int | None = None,
    pp: int | None = None,
    engine: str | None = None,
) -> Explanation:
    """Build the smallest deployment that holds the model and one `context`-token sequence (or
    the given tp/pp) and explain its decode steps."""
    system = _system(catalog, hardware_id)
    device = catalog.device(system.device_id)
    model = load_model(model_id)
    family_engine = engine or ("cerebras" if device.kind == "wafer" else "vllm")
    settings = PoolSettings(engine=family_engine, weight_dtype=weight_dtype, tp=tp, pp=pp)
    dep = candidates(model, system, device, settings, context)[0]
    dep = replace(dep, weight_dtype=resolve_weight_dtype(weight_dtype, model, device))
    plan = plan_memory(dep)
    sm = RooflineStepModel(dep, plan)
    window = plan.window_tokens
    single = sm.breakdown(BatchShape.of([context], [], window))
    n_max = min(plan.max_sequences(context), dep.max_num_seqs)
    batched = sm.breakdown(BatchShape.of([context] * n_max, [], window)) if n_max > 1 else None
    cores = None
    if device.mesh is not None:
        cores = device.mesh.n_cores // plan.layers_per_stage
    return Explanation(
        dep, plan, context, plan.max_sequences(context), single, batched, n_max, cores
    )
