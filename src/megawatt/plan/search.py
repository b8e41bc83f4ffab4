"""Choose a deployment for a model on a system, as an expert would: the fewest devices that hold
the weights and then a small search over tensor-parallel width (GPUs) or wafer count (wafers),
scored by output tokens per second per system at the SLO."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from megawatt.errors import FitError, InputError
from megawatt.hardware import Device, System
from megawatt.model import ModelSpec
from megawatt.perf import Deployment, family_of, plan_memory
from megawatt.perf.speculative import Speculation
from megawatt.plan.fit import fewest_stages, holds
from megawatt.serving import Capacity, ReplicaConfig, Slo, capacity, offline_rate_hint
from megawatt.workload import Requests

Progress = Callable[[str], None]


@dataclass(frozen=True)
class PoolSettings:
    """How a pool deploys a model; `None` fields are chosen by the search.

    weight_dtype `auto`: the published format, except dense 16-bit models on GPUs with an FP8
    rate, which run FP8 (as production GPU engines do); wafers keep the published format.
    weight_streaming: wafers only: one wafer per replica, weights streamed from MemoryX.
    ep / attention_dp: expert-parallel width and data-parallel attention of a stated plan (tp
    set); ep None: experts sharded like tp.
    speculation / draft_model: serve with speculative decoding (`Deployment.speculation`); the
    draft model (wafers) is kept on the same wafers.
    """

    engine: str = "vllm"
    weight_dtype: str = "auto"
    kv_dtype: str = "bf16"
    scheduler: str = "vllm"
    tp: int | None = None
    pp: int | None = None
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    max_tp: int = 8
    max_wafers: int = 64
    budgets: tuple[int, ...] = (2048,)
    weight_streaming: bool = False
    ep: int | None = None
    attention_dp: bool = False
    speculation: Speculation | None = None
    draft_model: ModelSpec | None = None


def resolve_weight_dtype(setting: str, model: ModelSpec, device: Device) -> str:
    """The weight format a pool uses for `model` on `device` (see `PoolSettings`)."""
    if setting != "auto":
        return setting
    if family_of(device.kind) == "wafer":
        return "native"
    native = set(model.native_weight_dtype.get(c, "bf16") for c in ("attention", "mlp", "experts"))
    if native <= {"bf16", "fp16"} and device.has_native("fp8"):
        return "fp8"
    return "native"


def _splits_heads(model: ModelSpec, tp: int) -> bool:
    """vLLM's rule for a tensor-parallel width: it divides the attention heads, and the KV heads
    divide into it or it into them (KV heads are replicated when fewer than tp devices). MLA's
    latent cache is replicated whatever tp is."""
    if model.n_heads % tp:
        return False
    kv = model.n_kv_heads
    return model.attention_type == "mla" or (kv % tp == 0 if kv >= tp else tp % kv == 0)


def plan_problem(dep: Deployment) -> str | None:
    """Why an inference engine would refuse this plan, or None: tp must split the attention
    heads evenly (unless attention is data-parallel), pp may not exceed the layers, ep and
    attention_dp need an MoE model and ep no more devices than experts."""
    m = dep.model
    if not dep.attention_dp and not _splits_heads(m, dep.tp):
        ok = [t for t in range(1, max(dep.system.n_devices, 1) + 1) if _splits_heads(m, t)]
        return (
            f"tp={dep.tp} does not split the attention of {m.id} evenly ({m.n_heads} heads, "
            f"{m.n_kv_heads} KV heads; engines give each device the same number of heads). "
            f"Use tp {', '.join(map(str, ok))}."
        )
    if dep.pp > m.n_layers:
        return (
            f"pp={dep.pp} pipeline stages is more than the {m.n_layers} layers of {m.id}; each "
            f"stage needs a layer. Use pp <= {m.n_layers}."
        )
    if dep.ep > 1 and not m.is_moe:
        return f"ep={dep.ep} applies to MoE models; {m.id} is dense. Remove ep."
    if dep.ep > m.n_experts > 0:
        return (
            f"ep={dep.ep} is more than the {m.n_experts} routed experts of {m.id}; some devices "
            f"would hold none. Use ep <= {m.n_experts}."
        )
    return None


def tp_widths(max_tp: int) -> list[int]:
    """The tensor-parallel widths a search tries: powers of two up to `max_tp`."""
    out = []
    tp = 1
    while tp <= max_tp:
        out.append(tp)
        tp *= 2
    return out


def candidates(
    model: ModelSpec,
    system: System,
    device: Device,
    settings: PoolSettings,
    max_sequence_tokens: int = 0,
) -> list[Deployment]:
    """Deployments worth simulating, smallest first: those whose memory holds the weights and
    one sequence of `max_sequence_tokens` (the longest request of the traffic). Raises
    `FitError` when none does."""
    base = Deployment(
        model=model,
        system=system,
        device=device,
        weight_dtype=resolve_weight_dtype(settings.weight_dtype, model, device),
        kv_dtype=settings.kv_dtype,
        engine=settings.engine,
        max_num_seqs=settings.max_num_seqs,
        max_num_batched_tokens=settings.max_num_batched_tokens,
        weight_streaming=settings.weight_streaming,
        speculation=settings.speculation,
        draft_model=settings.draft_model,
    )
    if settings.weight_streaming:
        plan_memory(base)  # raise the clear FitError if even one streamed layer does not fit
        return [base]
    if settings.tp or settings.pp:
        dep = replace(
            base, tp=settings.tp or 1, pp=settings.pp or 1, ep=settings.ep or 1,
            attention_dp=settings.attention_dp,
        )
        problem = plan_problem(dep)
        if problem is not None:
            raise InputError(problem)
        plan_memory(dep)  # raise the clear FitError if it does not fit
        return [dep]

    def fits(dep: Deployment) -> bool:
        return plan_problem(dep) is None and holds(dep, max_sequence_tokens) is not None

    if base.family == "wafer":
        pp = fewest_stages(
            lambda n: holds(replace(base, pp=n), max_sequence_tokens) is not None,
            stop=settings.max_wafers,
        )
        out = [] if pp is None else [replace(base, pp=pp)]
    else:
        widths = tp_widths(min(system.n_devices, settings.max_tp))
        out = [dep for dep in (replace(base, tp=tp) for tp in widths) if fits(dep)]
        if not out:
            # No width holds it: the widest that splits the heads, and the fewest stages.
            tp = max(t for t in range(1, min(system.n_devices, settings.max_tp) + 1)
                     if _splits_heads(model, t))
            pp = fewest_stages(lambda n: fits(replace(base, tp=tp, pp=n)), start=2)
            out = [] if pp is None else [replace(base, tp=tp, pp=pp)]
    if not out:
        plan_memory(replace(base, tp=min(system.n_devices, settings.max_tp)))  # raises FitError
        raise FitError(f"{model.id} does not fit on any plan of {system.id}.")
    return out


def per_system(dep: Deployment, value: float) -> float:
    """Scale a per-replica figure to one system."""
    return value * dep.system.n_devices / dep.n_devices


@dataclass(frozen=True)
class Choice:
    """The chosen deployment, its replica capacity, and every candidate's score
    (output tokens/s per system at the SLO)."""

    deployment: Deployment
    capacity: Capacity
    scores: tuple[tuple[str, float], ...]


def choose(
    model: ModelSpec,
    system: System,
    device: Device,
    settings: PoolSettings,
    requests: Requests,
    unit_arrivals: np.ndarray,
    slo: Slo,
    *,
    rel_tol: float = 0.04,
    progress: Progress | None = None,
) -> Choice:
    """Search deployments; return the best by output tokens/s per system at the SLO.

    GPUs: every power-of-two TP width that fits, then the per-step token budgets of
    `settings.budgets` at the best width (smaller chunks shorten the decode stalls a long
    prefill causes, at some cost in throughput). Wafers: from the fewest wafers that hold the
    weights and the longest request, add wafers (more KV cache, larger batches) while the
    throughput per wafer improves.
    """
    longest = int((requests.prompt_tokens + requests.output_tokens).max()) if len(requests) else 0
    deps = candidates(model, system, device, settings, longest)
    best: tuple[float, Deployment, Capacity] | None = None
    scores: list[tuple[str, float]] = []

    def evaluate(dep: Deployment) -> float:
        nonlocal best
        label = f"{dep.label} budget {dep.max_num_batched_tokens}"
        if progress:
            progress(label)
        cfg = ReplicaConfig.of(dep, settings.scheduler)
        cap = capacity(
            cfg,
            requests,
            unit_arrivals,
            slo,
            rel_tol=rel_tol,
            rate_hint=offline_rate_hint(cfg, requests),
        )
        score = per_system(dep, cap.output_tokens_per_s)
        scores.append((label, score))
        if best is None or score > best[0]:
            best = (score, dep, cap)
        return score

    if deps[0].family == "wafer" and not (settings.tp or settings.pp or settings.weight_streaming):
        dep = deps[0]
        score = evaluate(dep)
        while dep.pp < settings.max_wafers:
            dep = replace(dep, pp=dep.pp + 1)
            new = evaluate(dep)
            if new <= score and score > 0:
                break
            score = max(score, new)
    else:
        for dep in deps:
            evaluate(dep)
        assert best is not None
        top = best[1]
        for budget in settings.budgets:
            if budget != top.max_num_batched_tokens and budget >= 16:
                evaluate(replace(top, max_num_batched_tokens=budget))
    if best is None:
        raise InputError(f"no deployment of {model.id} on {system.id} to evaluate.")
    return Choice(best[1], best[2], tuple(scores))
