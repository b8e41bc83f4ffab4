"""Efficiency parameters of the performance model: the few numbers that turn peak rates into
achieved ones, per hardware family and engine. These are *priors* (documented estimates); the
calibration issue fits them from published measurements with the estimator contract."""

from __future__ import annotations

from dataclasses import dataclass, replace

from megawatt.errors import CatalogError


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
