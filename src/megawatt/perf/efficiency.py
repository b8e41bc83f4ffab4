"""Efficiency parameters of the performance model: the few numbers that turn peak rates into
achieved ones, per hardware family and engine. `PRIORS` are documented estimates;
`efficiencies_for` prefers the values `megawatt calibrate` fitted from published measurements
(`data/calibration/efficiencies.json`) and falls back to the priors where nothing was fitted."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from functools import cache
from importlib import resources
from typing import Any

from megawatt.errors import CatalogError
from megawatt.hardware import Device


@dataclass(frozen=True)
class Efficiencies:
    """Achieved fractions of peak and fixed costs for one hardware family and engine.

    compute:      fraction of dense peak FLOP/s reached by large GEMMs.
    attention:    fraction of dense peak reached by attention math (flash-style kernels).
    memory:       fraction of peak memory bandwidth reached by streaming reads.
    link:         fraction of peak scale-up / scale-out bandwidth reached by collectives.
    step_overhead_s:         fixed cost of one engine step (scheduling, launch, sampling).
    seq_overhead_s:          extra per sequence in the step (sampling, bookkeeping).
    layer_fixed_cycles:      wafers only: fixed cycles per layer per step (reductions,
                             broadcasts, norms, softmax across the layer's core region).
    layer_cycles_per_side:   wafers only: extra cycles per core on the region's side
                             (reduction depth grows with the region).
    sram_reserved_fraction:  wafers only: share of SRAM kept for code, buffers, activations.
    source:       where the numbers come from.
    """

    compute: float
    attention: float
    memory: float
    link: float
    step_overhead_s: float
    seq_overhead_s: float
    layer_fixed_cycles: float = 0.0
    layer_cycles_per_side: float = 0.0
    sram_reserved_fraction: float = 0.0
    source: str = ""

    def with_values(self, **values: float) -> Efficiencies:
        """A copy with some values replaced (used by calibration and `--set`)."""
        return replace(self, **values)  # type: ignore[arg-type]


_GPU_SOURCE = (
    "prior (estimate): large BF16/FP8 GEMMs on H100-class GPUs reach ~60% of dense peak in "
    "published cuBLAS/CUTLASS benchmarks; flash attention ~50%; HBM streaming ~80% of peak; "
    "NCCL bus bandwidth ~70% of NVLink peak; per-step overhead 1.5-4 ms for vLLM-class engines "
    "(CPU scheduling, sampling, kernel launches). To be replaced by `megawatt calibrate`."
)

_WAFER_SOURCE = (
    "prior (estimate) from WaferLLM (OSDI 2025) Table 4 on WSE-2, LLaMA3-8B decode: per-layer "
    "cycles 12.7k / 13.7k / 15.3k on 420^2 / 540^2 / 660^2 regions (shared/data/wafer/NOTES.md e.3) "
    "-> ~8.2k fixed + ~10.8 cycles per core on the region side; compute efficiency ~25% of SIMD "
    "peak (WaferLLM prefill reached ~11%, production kernels are assumed better); 10% of SRAM "
    "reserved for code, buffers and activations. To be replaced by calibration (wafer issue)."
)

PRIORS: dict[tuple[str, str], Efficiencies] = {
    ("gpu", "vllm"): Efficiencies(0.60, 0.50, 0.80, 0.70, 3.0e-3, 10e-6, source=_GPU_SOURCE),
    ("gpu", "sglang"): Efficiencies(0.60, 0.50, 0.80, 0.70, 2.5e-3, 8e-6, source=_GPU_SOURCE),
    ("gpu", "trtllm"): Efficiencies(0.65, 0.55, 0.82, 0.75, 1.5e-3, 5e-6, source=_GPU_SOURCE),
    ("wafer", "cerebras"): Efficiencies(
        0.25,
        0.25,
        0.50,
        0.70,
        50e-6,
        0.0,
        layer_fixed_cycles=8_200.0,
        layer_cycles_per_side=10.8,
        sram_reserved_fraction=0.10,
        source=_WAFER_SOURCE,
    ),
}
PRIORS[("gpu", "other")] = PRIORS[("gpu", "vllm")]
PRIORS[("wafer", "waferllm")] = PRIORS[("wafer", "cerebras")]
PRIORS[("wafer", "other")] = PRIORS[("wafer", "cerebras")]

ENGINES: tuple[str, ...] = ("cerebras", "other", "sglang", "trtllm", "vllm", "waferllm")


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
CALIBRATION_FORMAT = 1
"""Version of the calibration file's layout; a file of another version is ignored."""
FITTED_FIELDS = ("compute", "attention", "memory", "link", "step_overhead_s", "seq_overhead_s")
"""The efficiency fields calibration may fit (the rest keep their prior)."""


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
        values = {k: float(v) for k, v in group["values"].items() if k in FITTED_FIELDS}
        source = (
            f"fitted by `megawatt calibrate` on {group.get('n_rows', '?')} published measurements "
            f"(input sha256 {str(document.get('input_sha256', ''))[:12]}); unfitted fields keep "
            f"the prior. {base.source}"
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


def efficiency_fields() -> tuple[str, ...]:
    """Every field of `Efficiencies` (for reports)."""
    return tuple(f.name for f in fields(Efficiencies))
