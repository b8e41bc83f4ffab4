"""The deployment a row is replayed on, as an expert would run it on the row's hardware: the
plan its notes state, else rules over `plan.search`'s widths and `plan.fit`'s fewest stages
(see `ASSUMPTIONS`); and the workers of a disaggregated run with their KV link."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from megawatt.calibration.lengths import row_lengths
from megawatt.calibration.measurements import Measurement, Workers, stated_plan
from megawatt.calibration.runs import replay_on
from megawatt.errors import FitError, InputError
from megawatt.hardware import Catalog, Device, System
from megawatt.model import load_model
from megawatt.perf import Deployment, Efficiencies, efficiencies_for, efficiency_key, family_of, plan_memory
from megawatt.perf.speculative import Speculation
from megawatt.plan import fewest_stages, holds, resolve_weight_dtype, tp_widths
from megawatt.serving import KvLink

__all__ = [
    "CANDIDATE_SEQUENCES",
    "LATENCY_BUDGETS",
    "LONGEST_SAMPLE",
    "MAX_BATCH",
    "SMALL_BATCH",
    "STATED_PLAN_MEMORY_FRACTIONS",
    "TOKEN_BUDGET",
    "EffTable",
    "base_deployment",
    "choose_deployment",
    "kv_link",
    "plan_label",
    "worker_deployment",
]

EffTable = Mapping[str, Efficiencies]
"""Efficiencies by `efficiency_key` (e.g. `gpu/nvidia/trtllm`); missing keys use the defaults."""

MAX_BATCH = 1024
"""Sequences per replica of a throughput row (the KV cache bounds it further)."""
TOKEN_BUDGET = 8192
"""Tokens per step (`max_num_batched_tokens`) of a row's deployment."""
LATENCY_BUDGETS = (2048, 8192)
"""Tokens per step tried for rows with latency limits: smaller prefill chunks shorten the decode
stalls a long prompt causes."""
SMALL_BATCH = 16
"""The batch cap of single-user rows, and of the plans that size a row's device count (cloud
APIs, wafers): a few sequences beside the weights."""
CANDIDATE_SEQUENCES = 8
"""How many of a row's longest requests a throughput candidate must hold in its KV cache."""
LONGEST_SAMPLE = 64
"""Prompts drawn (seed 0) to estimate a row's longest request: the longest of them plus the mean
output."""
STATED_PLAN_MEMORY_FRACTIONS = (0.96, 0.98)
"""Fractions of device memory tried when a plan a measurement states (so it ran) does not hold
the weights at the default `Deployment.gpu_memory_utilization`: engines let users raise it
(SGLang's --mem-fraction-static, vLLM's --gpu-memory-utilization) when a model barely fits,
e.g. DeepSeek-R1 in FP8 on 4 B200 (168 GB of weights per 193 GB device); an operator who must
raise it raises it well past the default, not just enough to load the weights."""


def _system_for(catalog: Catalog, device: Device) -> System:
    systems = catalog.systems_for(device.id)
    if not systems:
        raise InputError(f"no system in the catalog holds device {device.id}.")
    return max(systems, key=lambda s: (s.n_devices, s.id))


def _kv_dtype(m: Measurement, weight: str, device: Device) -> str:
    if re.search(r"\b(fp16|bf16|16-bit)\s+kv", m.notes, re.IGNORECASE):
        return "bf16"
    if weight in ("fp8", "fp4") and device.has_native("fp8"):
        return "fp8"
    return "bf16"


def _eff(table: EffTable | None, device: Device, engine: str) -> Efficiencies:
    key = efficiency_key(device, engine)
    if table is not None and key in table:
        return table[key]
    return efficiencies_for(device, engine)


def base_deployment(
    m: Measurement, device: Device, engine: str, catalog: Catalog, efficiencies: EffTable | None
) -> Deployment:
    """A row's model on the largest catalog system of its device, before any plan: the row's
    weight format (blank: the published one), its KV format, its engine's efficiencies
    (`efficiencies` per `efficiency_key`, else the defaults), `MAX_BATCH` and `TOKEN_BUDGET`."""
    family = family_of(device.kind)
    model = load_model(m.model)
    system = _system_for(catalog, device)
    eff = _eff(efficiencies, device, engine)
    weight = m.weight_dtype or resolve_weight_dtype("auto", model, device)
    if family == "wafer" and weight == "bf16":
        weight = "native" if "fp" not in "".join(model.native_weight_dtype.values()) else "bf16"
    return Deployment(
        model=model,
        system=system,
        device=device,
        weight_dtype=weight,
        kv_dtype=_kv_dtype(m, weight, device) if family == "gpu" else "bf16",
        engine=engine,
        max_num_seqs=MAX_BATCH,
        max_num_batched_tokens=TOKEN_BUDGET,
        efficiencies=eff,
    )


def plan_label(dep: Deployment, replicas: int) -> str:
    """A plan in words: `2x tp4 fp8 kv fp8 batch<=256 chunk 8192` (replicas first)."""
    if dep.family == "wafer":
        body = f"{dep.pp} wafer" + ("s" if dep.pp > 1 else "")
    else:
        body = f"tp{dep.tp}" + (f" pp{dep.pp}" if dep.pp > 1 else "")
        body += f" ep{dep.ep}" if dep.ep > 1 else ""
        body += " attention-dp" if dep.attention_dp else ""
    kv = "" if dep.family == "wafer" else f" kv {dep.kv_dtype}"
    return (
        f"{replicas}x {body} {dep.weight_dtype_of('experts' if dep.model.is_moe else 'mlp')}"
        f"{kv} batch<={dep.max_num_seqs} chunk {dep.max_num_batched_tokens}"
    )


# -- the rules ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    """What the rules read off a row: the row, its base deployment, the devices it ran on, the
    widest TP (one scale-up domain, at most 8; wafers 1), the batch cap and the longest request
    (tokens)."""

    m: Measurement
    base: Deployment
    n_devices: int
    scale_up: int
    max_tp: int
    batch_cap: int
    longest: float

    def make(self, tp: int, pp: int, ep: int | None = None, adp: bool = False) -> Deployment:
        """The base at `tp` x `pp`: experts over the replica (MoE, `ep` None) and the batch cap."""
        size = tp * pp
        e = ep if ep is not None else (size if self.base.model.is_moe and size > 1 else 1)
        return replace(
            self.base, tp=tp, pp=pp, ep=min(e, size), attention_dp=adp,
            max_num_seqs=self.batch_cap,
        )

    def replicas(self, dep: Deployment) -> int:
        """How many replicas of `dep` the row's devices hold."""
        return self.n_devices // dep.n_devices


def choose_deployment(
    m: Measurement, base: Deployment, system: System, spec: Speculation | None
) -> tuple[Deployment, int, str] | None:
    """The deployment and replica count for a row (see `ASSUMPTIONS`), and any assumption made
    (in words, for the plan); None when no plan holds the model. The rules, in order: the device
    count (`_device_count`); a plan the notes state (`_stated`); a single user, or a wafer
    pipeline, over every device (`_spanning`); else the throughput candidates (`_candidates`),
    the best of them by a short replay."""
    inp, out, _ = row_lengths(m)
    longest = float(inp.sample(np.random.default_rng(0), LONGEST_SAMPLE).max() + out.mean)
    wafer = base.family == "wafer"
    max_tp = 1 if wafer else min(system.n_devices, 8)
    sized = _device_count(m, base, system.n_devices, max_tp, longest)
    if sized is None:
        return None
    n_dev, assumed = sized
    batch_cap = MAX_BATCH
    if m.scenario == "max_throughput_concurrency" and m.concurrency:
        batch_cap = m.concurrency
    if m.scenario == "single_user":
        batch_cap = SMALL_BATCH
    row = _Row(m, base, n_dev, system.n_devices, max_tp, batch_cap, longest)
    stated = stated_plan(m)
    if stated and not wafer:
        dep, raised = _stated(row, stated)
        return dep, max(1, row.replicas(dep)), assumed + raised
    if m.scenario == "single_user" or wafer:
        return _spanning(row), 1, assumed
    cands = _candidates(row)
    if not cands:
        return None
    best = cands[0]
    if len(cands) > 1:
        top: tuple[float, Deployment] | None = None
        for dep in cands:
            score = replay_on(m, dep, row.replicas(dep), spec=spec, quick=True).value
            if top is None or score > top[0] * (1.0 + 1e-9):
                top = (score, dep)
        assert top is not None
        best = top[1]
    return best, row.replicas(best), assumed


def _device_count(
    m: Measurement, base: Deployment, scale_up: int, max_tp: int, longest: float
) -> tuple[int, str] | None:
    """The devices a row runs on, and the assumption made: its `n_devices`; for a cloud API (none
    stated) the fewest whole systems that hold the weights; for wafers that cannot hold the model
    (WaferLLM times a subset of a large model's layers on one wafer and scales by the layer
    count), the fewest wafers that do. None when none does within `plan.MAX_STAGES`."""

    def sized(dep: Deployment) -> bool:
        return holds(replace(dep, max_num_seqs=SMALL_BATCH), longest) is not None

    n_dev = m.n_devices
    if n_dev is None:

        def systems_hold(k: int) -> bool:
            tp = min(scale_up * k, max_tp)
            return sized(replace(base, tp=tp, pp=scale_up * k // tp))

        k = fewest_stages(systems_hold)
        if k is None:
            return None
        return scale_up * k, f" (n_devices assumed {scale_up * k})"
    if base.family == "wafer" and not sized(replace(base, pp=n_dev)):
        wafers = fewest_stages(lambda k: sized(replace(base, pp=k)), start=n_dev + 1)
        if wafers is None:
            return None
        return wafers, f" ({n_dev} wafer(s) stated cannot hold the model: {wafers} assumed)"
    return n_dev, ""


def _stated(row: _Row, stated: dict[str, int]) -> tuple[Deployment, str]:
    """The plan a row's notes state, and the memory fraction it needs (in words, if raised)."""
    n_dev, max_tp = row.n_devices, row.max_tp
    ep = stated.get("ep")
    adp = bool(stated.get("adp"))
    pp = stated.get("pp", 1)
    if ep and ep > row.scale_up and "tp" not in stated and "pp" not in stated:
        # Expert parallelism beyond one scale-up domain, no TP or PP stated: wide EP with
        # data-parallel attention over the EP group (DeepSeek's and SGLang's multi-node
        # deployments), not a pipeline.
        tp, adp = ep, True
    else:
        # No TP stated: fill the scale-up domain before pipelining (EP spans the replica).
        tp = stated.get("tp") or (min(max_tp, ep, n_dev) if ep else 1)
        if ep and ep > tp * pp:
            # Expert parallelism over more devices than the tensor group: pipeline the rest.
            pp = max(pp, ep // tp)
        tp = min(tp, max_tp)
    dep = row.make(tp, pp, ep, adp and tp > 1)
    if dep.n_devices > n_dev:
        dep = replace(dep, pp=max(1, n_dev // tp), ep=min(dep.ep, n_dev))
    closed = row.m.scenario == "max_throughput_concurrency"
    if closed:
        dep = replace(dep, max_num_seqs=max(1, math.ceil(row.batch_cap / row.replicas(dep))))
    per_replica = max(1, math.ceil(row.batch_cap / max(1, row.replicas(dep))))
    dep, raised = _fitting(dep, row.longest, per_replica if closed else 0)
    if not raised:
        return dep, ""
    return dep, (
        f" (memory fraction {dep.gpu_memory_utilization:.2f} assumed: the stated plan ran; "
        f"at the default {Deployment.gpu_memory_utilization} it holds too little)"
    )


def _spanning(row: _Row) -> Deployment:
    """A single user's plan, or a wafer pipeline: every device, the widest TP inside the
    scale-up domain and PP beyond (no expert parallelism); `FitError` when it does not hold."""
    n_dev, max_tp = row.n_devices, row.max_tp
    if row.base.family == "wafer":
        dep = row.make(1, n_dev)
    elif n_dev <= row.scale_up:
        tp = min(max_tp, n_dev)
        dep = row.make(tp, max(1, n_dev // tp), 1)
    else:
        dep = row.make(max_tp, n_dev // max_tp, 1)
    if row.m.scenario != "single_user":
        dep = replace(dep, max_num_seqs=MAX_BATCH)
    plan_memory(dep)
    return dep


def _candidates(row: _Row) -> list[Deployment]:
    """The throughput plans worth replaying: each power-of-two TP (`plan.tp_widths`) inside the
    scale-up domain that divides the devices and holds `CANDIDATE_SEQUENCES` longest requests;
    if none does, the widest TP over the fewest pipeline stages that do. Concurrency rows share
    the row's concurrency among the replicas; rows with latency limits try `LATENCY_BUDGETS`."""
    n_dev, m = row.n_devices, row.m

    def fits(dep: Deployment) -> bool:
        return holds(dep, row.longest, CANDIDATE_SEQUENCES) is not None

    cands = [
        row.make(tp, 1)
        for tp in tp_widths(min(row.max_tp, n_dev))
        if n_dev % tp == 0 and fits(row.make(tp, 1))
    ]
    if not cands:
        tp = min(row.max_tp, n_dev)
        pp = fewest_stages(
            lambda n: n_dev % (tp * n) == 0 and fits(row.make(tp, n)), start=2, stop=n_dev // tp
        )
        cands = [] if pp is None else [row.make(tp, pp)]
    if m.scenario == "max_throughput_concurrency":
        cands = [
            replace(d, max_num_seqs=max(1, math.ceil(row.batch_cap / row.replicas(d))))
            for d in cands
        ]
    if m.scenario in ("server", "interactive"):
        cands = [replace(d, max_num_batched_tokens=b) for d in cands for b in LATENCY_BUDGETS]
    return cands


def _fitting(
    dep: Deployment, longest: float = 0.0, n_seqs: int = 0
) -> tuple[Deployment, bool]:
    """The deployment with the lowest memory fraction (the default, else one of
    `STATED_PLAN_MEMORY_FRACTIONS`) that holds its weights and, where one can, `n_seqs`
    sequences of `longest` tokens (a benchmark's concurrency: operators size the fraction for
    it), and whether it was raised; the default's `FitError` when none holds the weights."""
    fits: list[Deployment] = []
    first: FitError | None = None
    for fraction in (dep.gpu_memory_utilization, *STATED_PLAN_MEMORY_FRACTIONS):
        if fraction < dep.gpu_memory_utilization:
            continue
        tried = replace(dep, gpu_memory_utilization=fraction)
        try:
            plan = plan_memory(tried)
        except FitError as exc:
            first = first or exc
            continue
        if plan.sequence_kv_bytes(longest) * n_seqs <= plan.kv_bytes:
            return tried, fraction != dep.gpu_memory_utilization
        fits.append(tried)
    if fits:  # none holds the concurrency: the lowest that holds the weights
        return fits[0], fits[0].gpu_memory_utilization != dep.gpu_memory_utilization
    assert first is not None
    raise first


# -- disaggregated runs ----------------------------------------------------------------------------


def worker_deployment(base: Deployment, w: Workers) -> Deployment:
    """A worker's deployment: TP over its devices, or (attention-DP, or TP smaller than the
    worker: SGLang's DP attention) attention data-parallel over them; experts over EP devices
    (MoE models); the memory fraction raised if the stated worker needs it. Tensor parallelism
    over more devices than one scale-up domain (TP16 on two 8-GPU nodes) is modelled as TP over
    a domain and pipeline stages across domains."""
    g = w.gpus
    adp = w.attention_dp or w.tp < g
    ep = min(max(w.ep, g if adp else 1), g) if base.model.is_moe else 1
    domain = base.system.n_devices
    tp, pp = g, 1
    if g > domain and not (adp and ep == g) and g % domain == 0:
        tp, pp = domain, g // domain
    dep = replace(base, tp=tp, pp=pp, ep=ep, attention_dp=adp and tp > 1)
    return _fitting(dep)[0]


def kv_link(system: System, prefill: Deployment, total_devices: int) -> KvLink:
    """The KV path from one prefill worker: its devices' scale-up links when the whole run fits
    one scale-up domain (GB200 NVL72), else their scale-out NICs in parallel; at the link
    efficiency, with the fabric's latency."""
    eff = prefill.eff.link
    dev = prefill.device
    inside = total_devices <= system.n_devices
    per_device = (
        (system.scaleup_bandwidth_bytes_per_s or dev.scaleup_bandwidth_bytes_per_s)
        if inside
        else (system.scaleout_bandwidth_bytes_per_s or dev.scaleout_bandwidth_bytes_per_s)
    )
    if not per_device:
        raise InputError(f"{system.id}: no {'scale-up' if inside else 'scale-out'} bandwidth "
                         "for the KV transfers of a disaggregated run.")
    latency = system.scaleup_latency_s if inside else system.scaleout_latency_s
    return KvLink(per_device * prefill.n_devices * eff, latency)
