"""Why a model runs at its speed on some hardware: the memory plan (devices or wafers, layers per
stage, cores per layer, weights and KV bytes, sequences that fit) and decode steps broken down by
operator and bound, for one sequence alone and for the largest batch that fits. On wafers also the
SRAM of each wafer, a token's time by mesh component, what bounds the throughput per wafer, and
the alternatives: speculative decoding with a draft model and weight streaming from MemoryX."""

from __future__ import annotations

from dataclasses import dataclass, replace

from megawatt.errors import FitError, InputError
from megawatt.hardware import Catalog, System
from megawatt.model import ModelSpec, load_model
from megawatt.perf import (
    BatchShape,
    Deployment,
    MemoryPlan,
    RooflineStepModel,
    StepBreakdown,
    plan_memory,
)
from megawatt.perf.factory import speculation_of, step_model
from megawatt.perf.speculative import Speculation
from megawatt.perf.wafer import WaferLayout, time_components
from megawatt.plan import MAX_STAGES, PoolSettings, candidates, fewest_stages, holds, resolve_weight_dtype


@dataclass(frozen=True)
class Alternative:
    """Another way to serve the same model on the same hardware, and its speed."""

    name: str
    deployment: Deployment | None
    tokens_per_s_per_user: float | None
    note: str


@dataclass(frozen=True)
class WaferExplanation:
    """The wafer part of an explanation (see `Explanation`): the layout, one token's time by
    mesh component (seconds), and what bounds the throughput per wafer."""

    layout: WaferLayout
    components: dict[str, float]
    batch_limit: str
    tokens_per_s_per_wafer: float
    alternatives: tuple[Alternative, ...]


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
    wafer: WaferExplanation | None = None


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
    weight_streaming: bool = False,
    draft: str | None = None,
    speculation: Speculation | None = None,
    ep: int | None = None,
    attention_dp: bool = False,
) -> Explanation:
    """Build the smallest deployment that holds the model and one `context`-token sequence (or
    the given tp/pp, with `ep` and `attention_dp` for MoE plans) and explain its decode steps.
    Wafers: `weight_streaming` streams the weights from MemoryX instead of keeping them in SRAM;
    `draft` (a model id) adds speculative decoding with that draft on the same wafers
    (`speculation`'s draft length and acceptance)."""
    system = _system(catalog, hardware_id)
    device = catalog.device(system.device_id)
    model = load_model(model_id)
    family_engine = engine or ("cerebras" if device.kind == "wafer" else "vllm")
    if device.kind != "wafer" and (weight_streaming or draft):
        raise InputError(
            "--weight-streaming and --draft apply to wafer-scale engines only; "
            f"{device.id} is a {device.kind}."
        )
    if (ep is not None or attention_dp) and tp is None:
        raise InputError(
            f"--ep and --attention-dp need --tp (the plan is then given, not searched); got "
            f"ep={ep}, attention_dp={attention_dp} and no tp."
        )
    settings = PoolSettings(
        engine=family_engine, weight_dtype=weight_dtype, tp=tp, pp=pp, ep=ep,
        attention_dp=attention_dp,
    )
    if weight_streaming:
        dep: Deployment = Deployment(
            model, system, device, engine=family_engine, weight_streaming=True,
            weight_dtype=resolve_weight_dtype(weight_dtype, model, device),
        )
    else:
        dep = candidates(model, system, device, settings, context)[0]
        dep = replace(dep, weight_dtype=resolve_weight_dtype(weight_dtype, model, device))
    plan = plan_memory(dep)
    sm = RooflineStepModel(dep, plan)
    window = plan.window_tokens
    single = sm.breakdown(BatchShape.of([context], [], window))
    n_max = min(plan.max_sequences(context), dep.max_num_seqs)
    batched = sm.breakdown(BatchShape.of([context] * n_max, [], window)) if n_max > 1 else None
    cores = None
    wafer = None
    if sm.layout is not None:
        cores = sm.layout.cores_per_layer
        wafer = _wafer_part(
            dep, plan, sm, single, batched, n_max, context, draft, speculation or Speculation()
        )
    return Explanation(
        dep, plan, context, plan.max_sequences(context), single, batched, n_max, cores, wafer
    )


def _decode_speed(dep: Deployment, context: int) -> float:
    sm = RooflineStepModel(dep)
    return 1.0 / sm.step_time(BatchShape.of([context], [], sm.window_tokens))


def _wafer_part(
    dep: Deployment,
    plan: MemoryPlan,
    sm: RooflineStepModel,
    single: StepBreakdown,
    batched: StepBreakdown | None,
    n_max: int,
    context: int,
    draft: str | None,
    spec: Speculation,
) -> WaferExplanation:
    assert sm.layout is not None
    layout = sm.layout
    depth = sm.pipeline_depth
    if n_max < 1:
        limit = f"KV cache: not one sequence of {context:,} tokens fits"
    elif plan.max_sequences(context) <= min(depth, dep.max_num_seqs):
        limit = (
            f"KV cache: {plan.max_sequences(context):,} sequence(s) of {context:,} tokens fit, "
            f"fewer than the {depth} pipeline stages a micro-batch could fill"
        )
    elif depth > 1 and dep.max_num_seqs <= depth:
        limit = f"the batch cap ({dep.max_num_seqs}): the {depth}-stage layer pipeline is not full"
    else:
        limit = (
            f"compute and memory of the layer regions: {n_max:,} sequences share "
            f"{min(n_max, depth)} micro-batch(es)"
        )
    step = batched if batched is not None else single
    per_wafer = max(n_max, 1) / step.total_s / dep.n_devices
    alternatives: list[Alternative] = []
    if not dep.weight_streaming:
        streaming = Deployment(
            dep.model, dep.system, dep.device, engine=dep.engine, weight_streaming=True,
            weight_dtype=dep.weight_dtype, efficiencies=dep.efficiencies,
        )
        try:
            speed = _decode_speed(streaming, context)
            alternatives.append(
                Alternative(
                    "weight streaming (MemoryX)", streaming, speed,
                    "one wafer; every pass streams all weights over the system I/O "
                    f"({streaming.system.scaleout_bandwidth_bytes_per_s or 0:,.0f} B/s); "
                    f"{plan_memory(streaming).max_sequences(context):,} sequences fit",
                )
            )
        except FitError as exc:
            alternatives.append(Alternative("weight streaming (MemoryX)", None, None, str(exc)))
    if not dep.weight_streaming and depth > 1:
        alternatives.append(_fuller_pipeline(dep, plan, context, min(depth, dep.max_num_seqs)))
    if draft:
        alternatives.append(_speculative(dep, load_model(draft), spec, context))
    return WaferExplanation(
        layout, time_components(layout, single), limit, per_wafer, tuple(alternatives)
    )


def _fuller_pipeline(
    dep: Deployment, plan: MemoryPlan, context: int, target: int
) -> Alternative:
    """The fewest wafers whose KV cache holds `target` sequences at `context` (a full layer
    pipeline or the batch cap), and what that does to speed per user and per wafer."""
    name = f"more wafers for KV ({target} sequences)"
    if plan.max_sequences(context) >= target:
        return Alternative(name, dep, None, "this plan already holds them")
    def sequences(pp: int) -> int:
        big_plan = holds(replace(dep, pp=pp))
        return 0 if big_plan is None else min(big_plan.max_sequences(context), dep.max_num_seqs)

    pp = fewest_stages(lambda n: sequences(n) >= target, start=dep.pp + 1)
    if pp is None:
        return Alternative(name, None, None, f"not within {MAX_STAGES} more wafers")
    bigger = replace(dep, pp=pp)
    n = sequences(pp)
    sm = RooflineStepModel(bigger, plan_memory(bigger))
    window = sm.window_tokens
    single = sm.step_time(BatchShape.of([context], [], window))
    full = sm.step_time(BatchShape.of([context] * n, [], window))
    return Alternative(
        name, bigger, 1.0 / single,
        f"{pp} wafers hold {n} sequences: {n / full / pp:,.0f} tokens/s per wafer "
        f"(this plan: {plan.max_sequences(context):,} sequence(s))",
    )


def _speculative(
    dep: Deployment, draft: ModelSpec, spec: Speculation, context: int
) -> Alternative:
    name = (
        f"speculative decoding (draft {draft.id}, k={spec.draft_tokens}, "
        f"acceptance {spec.acceptance})"
    )
    with_draft = replace(dep, draft_model=draft)
    wafers = fewest_stages(lambda n: holds(replace(with_draft, pp=n)) is not None, start=dep.pp)
    if wafers is None:
        return Alternative(name, None, None, "the draft does not fit beside the model")
    with_draft = replace(with_draft, pp=wafers)
    s = speculation_of(with_draft, spec)
    model = step_model(with_draft, speculation=spec)
    speed = 1.0 / model.step_time(BatchShape.of([context], [], model.window_tokens))
    return Alternative(
        name, with_draft, speed,
        f"{wafers} wafer(s) with the draft; a draft pass costs {s.draft_cost:.0%} of a target "
        f"pass; {s.tokens_per_step:.2f} tokens per verify",
    )
