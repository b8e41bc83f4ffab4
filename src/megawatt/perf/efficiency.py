"""Efficiency parameters of the performance model: the few numbers that turn peak rates into
achieved ones, per hardware family and engine. `PRIORS` are documented estimates;
`efficiencies_for` prefers the values `megawatt calibrate` fitted from published measurements
(`data/calibration/efficiencies.json`) and falls back to the priors where nothing was fitted."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from typing import Any

from megawatt.errors import CatalogError
from megawatt.hardware import Device


@dataclass(frozen=True)
class Efficiencies:
    """Achieved fractions of peak and fixed costs for one hardware family and engine.

    compute:      fraction of dense peak FLOP/s reached by large GEMMs (wafers: the MACs of
                  decode tokens in the cores' weight tiles, one or a few tokens per pass).
    attention:    fraction of dense peak reached by attention math (flash-style kernels).
    experts:      fraction of dense peak reached by the routed experts' grouped GEMMs of MoE
                  models (token permutation, one small GEMM per expert, uneven loads); 0 = as
                  `compute` (wafers: every expert sits on its own cores).
    memory:       fraction of peak memory bandwidth reached by streaming reads (wafers: the
                  per-core SRAM bandwidth a decode GEMV tile reaches, i.e. the effective per-core
                  GEMV throughput).
    link:         fraction of peak scale-up / scale-out bandwidth reached by collectives (wafers:
                  of the system I/O, for hand-offs and weight streaming).
    prefill_compute:         wafers only: fraction of SIMD peak reached by prefill GEMMs end to
                             end (MeshGEMM-like: tiles shift through the mesh every step).
    step_overhead_s:         fixed cost of one engine step (scheduling, launch, sampling).
    seq_overhead_s:          extra per sequence in the step (sampling, bookkeeping).
    prefill_layer_overhead_s: extra per layer (of a pipeline stage) of a step that carries
                             prefill: engines capture decode steps in CUDA graphs, but run
                             steps with prompt chunks eagerly, the CPU dispatching each
                             layer's kernels one by one (Python engines: tens of kernels per
                             layer at ~20-40 us each); it is most of a short prompt's TTFT.
    layer_fixed_cycles:      wafers only: fixed cycles per layer per pass (task switches, norms,
                             RoPE, softmax, residuals; everything but the reductions).
    reduce_stage_cycles:     wafers only: beta, cycles per software routing stage of a
                             MeshGEMV reduction (a core takes a wavelet off the fabric, adds,
                             re-sends); the K=2 tree has ~sqrt(side) such stages.
    reduce_rounds_per_layer: wafers only: reduce-plus-broadcast rounds per layer (2 norms,
                             fused QKV, score, softmax max and sum, score x V, O, fused up/gate,
                             down: NOTES d.2 counts 8 to 10).
    handoff_s:               wafers only: latency of one wafer-to-wafer hand-off of the hidden
                             state (NIC, switch, host software), on top of its serialisation.
    sram_reserved_fraction:  wafers only: share of SRAM kept for code, stacks, routing buffers.
    source:       where the numbers come from.
    """

    compute: float
    attention: float
    memory: float
    link: float
    step_overhead_s: float
    seq_overhead_s: float
    layer_fixed_cycles: float = 0.0
    prefill_compute: float = 0.0
    reduce_stage_cycles: float = 0.0
    reduce_rounds_per_layer: float = 0.0
    handoff_s: float = 0.0
    sram_reserved_fraction: float = 0.0
    experts: float = 0.0
    prefill_layer_overhead_s: float = 0.0
    source: str = ""

    def with_values(self, **values: float) -> Efficiencies:
        """A copy with some values replaced (used by calibration and `--set`)."""
        return replace(self, **values)  # type: ignore[arg-type]


_GPU_SOURCE = (
    "prior (estimate): large BF16/FP8 GEMMs on H100-class GPUs reach ~60% of dense peak in "
    "published cuBLAS/CUTLASS benchmarks; the grouped GEMMs of MoE experts ~75% of that "
    "(permutation kernels, one GEMM per expert, uneven expert loads); flash attention ~50%; "
    "HBM streaming ~80% of peak; "
    "NCCL bus bandwidth ~70% of NVLink peak; per-step overhead 1.5-4 ms for vLLM-class engines "
    "(CPU scheduling, sampling, kernel launches); steps with prefill run outside CUDA graphs: "
    "~0.5 ms of eager kernel dispatch per layer for Python engines (vLLM, SGLang, TensorRT-LLM's "
    "PyTorch executor; tens of kernels per layer at ~20-40 us of launch and Python each), "
    "~0.05 ms for compiled TensorRT engines (MLPerf-era TensorRT-LLM). To be replaced by "
    "`megawatt calibrate`."
)

_WAFER_SOURCE = (
    "prior (estimate) from WaferLLM (OSDI 2025) on WSE-2 (shared/data/wafer/NOTES.md): with 10 "
    "reduce-plus-broadcast rounds per layer (NOTES d.2), alpha = 1 cycle per hop and beta = 5 "
    "cycles per software stage (the HPDC'24 floor 2 T_R + 1 with T_R ~ 2, NOTES a.4), a least-"
    "squares fit of megawatt's mesh formulas to Table 4 (decode cycles per layer of LLaMA3-8B and "
    "QWen2-72B on 420^2/540^2/660^2 grids) and Table 6 (16K and 32K GEMV on 720^2) gives GEMV "
    "tiles that read their weights at 17.5% of the 24 B/cycle SRAM port (memory: ~2 weights per "
    "cycle per core; WSE-2 cores cannot fully overlap access and compute, NOTES e.4) and ~5,000 "
    "fixed cycles per layer, every point within 12% (tests/perf/test_wafer.py); the MACs of a "
    "decode token at 60% of SIMD peak (the GEMV stays bound by its weight reads); prefill "
    "GEMMs at 15% of SIMD peak end to end, fitted to Table 3 (4,096-token prefill of LLaMA3-8B "
    "and QWen2-72B on 480^2/600^2/720^2 grids; NOTES e.2 derives ~11% for 8B at 720^2; the "
    "measured speed-up with cores is sub-linear, 1.4-1.6x for 2.25x, which this model does not "
    "capture); attention math 25% (estimate); 10 us per wafer-to-wafer hand-off "
    "(estimate, as systems.yaml); 20 us of host work per step; 10% of SRAM reserved for code, "
    "stacks and routing buffers (estimate)."
)

_WAFER_PRIOR = Efficiencies(
    compute=0.60,
    attention=0.25,
    memory=0.175,
    link=0.70,
    step_overhead_s=20e-6,
    seq_overhead_s=0.0,
    layer_fixed_cycles=5_000.0,
    prefill_compute=0.15,
    reduce_stage_cycles=5.0,
    reduce_rounds_per_layer=10.0,
    handoff_s=10e-6,
    sram_reserved_fraction=0.10,
    source=_WAFER_SOURCE,
)

_EAGER_LAYER_S = 0.5e-3  # Python engines' eager dispatch per layer (prior, see _GPU_SOURCE)

PRIORS: dict[tuple[str, str], Efficiencies] = {
    ("gpu", "vllm"): Efficiencies(
        0.60, 0.50, 0.80, 0.70, 3.0e-3, 10e-6, experts=0.45,
        prefill_layer_overhead_s=_EAGER_LAYER_S, source=_GPU_SOURCE,
    ),
    ("gpu", "sglang"): Efficiencies(
        0.60, 0.50, 0.80, 0.70, 2.5e-3, 8e-6, experts=0.45,
        prefill_layer_overhead_s=_EAGER_LAYER_S, source=_GPU_SOURCE,
    ),
    ("gpu", "trtllm"): Efficiencies(
        0.65, 0.55, 0.82, 0.75, 1.5e-3, 5e-6, experts=0.50,
        prefill_layer_overhead_s=_EAGER_LAYER_S, source=_GPU_SOURCE,
    ),
    ("wafer", "cerebras"): _WAFER_PRIOR,
}
PRIORS[("gpu", "other")] = PRIORS[("gpu", "vllm")]
PRIORS[("gpu", "atom")] = PRIORS[("gpu", "vllm")]  # AMD's ATOM: a vLLM-like Python engine
# TensorRT-LLM of MLPerf v4.1/v5.1 and its v1.0 performance tables runs engines compiled by
# trtllm-build (C++ runtime, no Python per kernel): little eager overhead; from late 2025 its
# PyTorch executor (`trtllm-serve`, as InferenceX runs it) dispatches from Python like vLLM.
PRIORS[("gpu", "trtllm-2025-11")] = PRIORS[("gpu", "trtllm")]
PRIORS[("gpu", "trtllm")] = replace(PRIORS[("gpu", "trtllm")], prefill_layer_overhead_s=0.05e-3)
PRIORS[("gpu", "trtllm-2024")] = PRIORS[("gpu", "trtllm")]
PRIORS[("gpu", "sglang-2026-01")] = PRIORS[("gpu", "sglang")]
PRIORS[("gpu", "vllm-2024")] = PRIORS[("gpu", "vllm")]
PRIORS[("wafer", "cerebras-2024-08")] = _WAFER_PRIOR
PRIORS[("wafer", "waferllm")] = _WAFER_PRIOR
PRIORS[("wafer", "other")] = _WAFER_PRIOR

ENGINES: tuple[str, ...] = (
    "atom",
    "cerebras",
    "cerebras-2024-08",
    "other",
    "sglang",
    "sglang-2026-01",
    "trtllm",
    "trtllm-2024",
    "trtllm-2025-11",
    "vllm",
    "vllm-2024",
    "waferllm",
)


ENGINE_RELEASES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "cerebras": (
        (
            "2024-10",
            "cerebras",
            "Cerebras inference software from Oct 2024: rewritten kernels (MatMul, reduce/"
            "broadcast, element-wise), wafer I/O asynchronous to compute, speculative decoding "
            "(NOTES f; validation README caveat 8: 70B 450 -> ~2,100 tok/s)",
        ),
        ("", "cerebras-2024-08", "Cerebras inference at launch, Aug 2024 (NOTES f)"),
    ),
    "trtllm": (
        (
            "2025-11",
            "trtllm-2025-11",
            "TensorRT-LLM 1.1 to 1.3 (Nov 2025 on) as InferenceX runs it nightly: the PyTorch "
            "executor with trtllm-serve and an open benchmark client, untuned per run (the "
            "containers nvcr.io/nvidia/tensorrt-llm/release:1.1.0rc2 to 1.3.0rc14 in its notes), "
            "not the MLPerf submission harness",
        ),
        (
            "2025-01",
            "trtllm",
            "TensorRT-LLM of 2025 (MLPerf v5.1 submissions, the v1.0 performance tables): "
            "PyTorch executor, new attention and MoE kernels; MLPerf v5.1 results on the same "
            "H100 systems are ~30% above v4.1 per GPU (validation README caveat 8)",
        ),
        ("", "trtllm-2024", "TensorRT-LLM of 2024 (MLPerf v4.1 submissions, Aug 2024)"),
    ),
    "sglang": (
        (
            "2026-01",
            "sglang-2026-01",
            "SGLang of 2026 (v0.5.7 on; the InferenceX notes name lmsysorg/sglang v0.5.9 and "
            "v0.5.12 images): MI355X runs 25% faster per user than in Dec 2025 on the same "
            "configurations (InferenceX README: software drift)",
        ),
        ("", "sglang", "SGLang of 2025 (v0.4 to v0.5.6)"),
    ),
    "vllm": (
        (
            "2025-01",
            "vllm",
            "vLLM/ROCm of 2025 (MLPerf v5.1 submissions): MI300X results ~18% above v4.1 on "
            "the same 8-GPU system (validation README caveat 8)",
        ),
        ("", "vllm-2024", "vLLM/ROCm of 2024 (MLPerf v4.1 submissions, Aug 2024)"),
    ),
}
"""Engines whose software changed enough to be separate calibration groups: name as
measurements give it -> (first month of the release, engine id of the release, what changed),
newest first. A measurement's date picks its release (`engine_release`)."""

SPECULATIVE_ENGINES: frozenset[str] = frozenset({"cerebras"})
"""Engine releases that serve with speculative decoding: measurements whose `spec_decode` is
`unknown` are replayed with it."""


AS_PUBLISHED = "2025-09"
"""The month `engine_release: as-published` stands for: MLPerf Inference v5.1, the newest round
of the tuned submissions most published figures come from (validation README)."""

def pick_release(engine: str, release: str) -> str:
    """The engine id a scenario's `engine_release` gives `engine`. The release may be `latest`,
    the newest release of each engine (calibrated mostly on open engines as InferenceX runs
    them), `as-published`, the release of the published best cases, or `YYYY-MM`, the release
    current in that month."""
    if release == "latest":
        return engine_release(engine)
    if release == "as-published":
        return engine_release(engine, AS_PUBLISHED)
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", release):
        raise CatalogError(
            f"engine_release must be latest, as-published or a month YYYY-MM; got {release!r}. "
            "Write e.g. engine_release: 2026-06."
        )
    return engine_release(engine, release)


def engine_release(engine: str, date: str = "") -> str:
    """The engine id of the release a measurement dated `date` (`YYYY[-MM...]`; a year alone is
    its first month) ran on; undated measurements get the newest release."""
    releases = ENGINE_RELEASES.get(engine)
    if not releases:
        return engine
    hit = re.match(r"\s*(\d{4})(?:-(\d{2}))?", date)
    if not hit:
        return releases[0][1]
    month = f"{hit.group(1)}-{hit.group(2) or '01'}"
    for start, release, _ in releases:
        if month >= start:
            return release
    return releases[-1][1]


def family_of(device_kind: str) -> str:
    """The performance family of a device kind: `wafer` for wafer-scale engines, else `gpu`
    (HBM accelerators: GPUs, TPUs, custom ASICs share the same operator roofline)."""
    return "wafer" if device_kind == "wafer" else "gpu"


def prior(family: str, engine: str) -> Efficiencies:
    """The documented prior efficiencies for a family and engine."""
    try:
        return PRIORS[(family, engine)]
    except KeyError:
        known = ", ".join(sorted(f"{f}/{e}" for f, e in PRIORS))
        raise CatalogError(
            f"no efficiency prior for family '{family}' with engine '{engine}'; known: {known}. "
            "Pick an engine listed for that family."
        ) from None


# -- fitted values ------------------------------------------------------------------------------

CALIBRATION_FILE = "data/calibration/efficiencies.json"
"""Where `megawatt calibrate` writes the fitted efficiencies, inside the package."""
CALIBRATION_FORMAT = 2
"""Version of the calibration file's layout; a file of another version is ignored."""
FITTED_FIELDS = (
    "compute",
    "attention",
    "experts",
    "memory",
    "link",
    "step_overhead_s",
    "prefill_layer_overhead_s",
)
"""The efficiency fields calibration fits for GPU-like groups, seven (the rest keep their prior:
the per-sequence overhead too - fitting it as well made the leave-one-out error worse, 15.0%
against 14.7%, as it trades off against the per-step overhead and the attention efficiency)."""
WAFER_FITTED_FIELDS = (
    "compute",
    "memory",
    "prefill_compute",
    "layer_fixed_cycles",
    "reduce_stage_cycles",
    "handoff_s",
)
"""The mesh parameters calibration fits for wafer groups: per-core MAC rate (compute) and GEMV
weight-read rate (memory), fixed cycles per layer, cycles per reduction stage (beta), and the
wafer-to-wafer hand-off latency; the rest keep their prior."""


def efficiency_key(device: Device, engine: str) -> str:
    """The calibration group of a device and engine: performance family, vendor and tensor-core
    generation, engine, e.g. `gpu/nvidia-fp4/trtllm` (Blackwell), `gpu/nvidia-fp8/trtllm`
    (Hopper), `gpu/amd-fp8/vllm` (CDNA3). The generation is the narrowest format the device has
    a native rate for: devices of one vendor and generation share kernels, so their achieved
    fractions of peak are alike; a new generation's matrix units are a new group."""
    family = family_of(device.kind)
    if family == "wafer":
        return f"{family}/{device.vendor.lower()}/{engine}"
    generation = next(d for d in ("fp4", "fp8", "bf16") if device.has_native(d))
    return f"{family}/{device.vendor.lower()}-{generation}/{engine}"


def fitted_from(document: dict[str, Any]) -> dict[str, Efficiencies]:
    """The fitted efficiencies of a calibration document, by `efficiency_key`."""
    if document.get("format") != CALIBRATION_FORMAT:
        return {}
    out: dict[str, Efficiencies] = {}
    for key, group in document.get("groups", {}).items():
        if group.get("status") != "fitted":
            continue
        family, engine = key.split("/")[0], key.split("/")[-1]
        base = prior(family, engine)
        allowed = WAFER_FITTED_FIELDS if family == "wafer" else FITTED_FIELDS
        values = {k: float(v) for k, v in group["values"].items() if k in allowed}
        files = ", ".join(
            f"{f.get('file', '?')} (sha256 {str(f.get('sha256', ''))[:12]})"
            for f in document.get("input", {}).get("files", [])
        )
        source = (
            f"fitted by `megawatt calibrate` on {group.get('n_rows', '?')} published measurements "
            f"of {files or 'unrecorded files'}; unfitted fields keep the prior. {base.source}"
        )
        out[key] = replace(base, **values, source=source)
    return out


@cache
def calibration_document() -> dict[str, Any] | None:
    """The packaged calibration file (`megawatt calibrate`'s output), None when absent."""
    try:
        text = resources.files("megawatt").joinpath(CALIBRATION_FILE).read_text()
    except (FileNotFoundError, OSError):
        return None
    document: dict[str, Any] = json.loads(text)
    return document


@cache
def fitted() -> dict[str, Efficiencies]:
    """The packaged fitted efficiencies by `efficiency_key` ({} when there is no file)."""
    document = calibration_document()
    return fitted_from(document) if document is not None else {}


def efficiencies_for(device: Device, engine: str) -> Efficiencies:
    """The efficiencies a deployment uses by default: the calibrated values of the device's
    group when `megawatt calibrate` fitted them, else the documented prior."""
    got = fitted().get(efficiency_key(device, engine))
    return got if got is not None else prior(family_of(device.kind), engine)
