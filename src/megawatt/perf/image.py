"""Time to make images on one device: a roofline per denoising step, text encoders and the VAE
decode, for a batch of b images; the best batch within a latency limit; the published image rows
(`data/validation/images.csv`) and the fit of the one image compute efficiency to them.

A batch of b images on one device (every device holds the whole pipeline; a system serves with
data parallelism, as MLPerf's SDXL submissions do):

    step    = max(F_step x b / (peak(dtype) x compute), W_denoiser / (bandwidth x memory)) + o_step
    encode  = max(F_text x b / (peak(bf16) x compute), W_text / (bandwidth x memory))
    decode  = max(F_vae x b / (peak(bf16) x compute),  W_vae / (bandwidth x memory))
    batch_s = steps x step + encode + decode        (every image of the batch ends together)

F_step is the denoiser's FLOPs per step per image (x2 under classifier-free guidance);
`ImageEfficiency` holds compute, memory and o_step. Images/s per device = b / batch_s.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Final

import numpy as np
from scipy.optimize import minimize_scalar

from megawatt._files import read_user_bytes
from megawatt.errors import CatalogError, FitError, InputError, NotFittedError
from megawatt.hardware import Catalog, Device, load_catalog
from megawatt.model.image import ENCODER_DTYPE, ImageModel, check_dtype, load_image_model
from megawatt.perf.efficiency import family_of
from megawatt.units import BYTES_PER_ELEMENT, GB

__all__ = [
    "IMAGE_MEASUREMENTS",
    "IMAGE_PRIOR",
    "MAX_IMAGE_BATCH",
    "SERVER_QUEUE_FACTOR",
    "ImageEfficiency",
    "ImageEfficiencyFit",
    "ImageMeasurement",
    "ImageTime",
    "best_image_batch",
    "fitted_image_efficiency",
    "image_time",
    "load_image_measurements",
    "max_image_batch",
    "parse_image_measurements",
    "predict_image_row",
]

MAX_IMAGE_BATCH: Final = 64
"""Largest batch of images considered per device (throughput is flat long before it)."""
MEMORY_FRACTION: Final = 0.90
"""Share of device memory usable for weights and workspace (the rest: runtime, fragmentation;
estimate, as vLLM's default gpu_memory_utilization)."""
BATCH_TOLERANCE: Final = 0.01
"""The best batch is the smallest whose images/s is within this share of the largest batch's:
beyond it, a bigger batch buys latency, not throughput."""
SERVER_QUEUE_FACTOR: Final = 2.0
"""A server's p99 latency as a multiple of its batch time (estimate: an image arriving just after
a batch starts waits for it, then takes one batch time of its own); queueing beyond that is not
modelled, so server predictions are the offline throughput at a batch that meets the limit."""
IMAGE_MEASUREMENTS: Final = "data/validation/images.csv"
"""The packaged image-generation rows (MLPerf SDXL), inside the package."""
FIT_BOUNDS: Final = (0.02, 1.0)
"""Bounds of the fitted compute efficiency (fraction of dense peak)."""


@dataclass(frozen=True)
class ImageEfficiency:
    """Achieved fractions of peak for an image pipeline on one device.

    compute:          fraction of dense peak FLOP/s reached by the denoiser, text encoders and
                      VAE decoder (convolutions, GEMMs and attention alike).
    memory:           fraction of peak memory bandwidth reached reading weights.
    step_overhead_s:  fixed cost of one denoising step (scheduler update, launches), s.
    source:           where the numbers come from.
    """

    compute: float
    memory: float
    step_overhead_s: float
    source: str


IMAGE_PRIOR = ImageEfficiency(
    compute=0.40,
    memory=0.80,
    step_overhead_s=2e-3,
    source=(
        "prior (estimate): compute 40% of dense peak for convolution- and attention-heavy "
        "diffusion networks (below the ~60% of large GEMMs of the LLM prior, perf/efficiency.py); "
        "weight reads at 80% of HBM peak as the LLM prior; 2 ms per denoising step for the "
        "scheduler update and kernel launches (estimate, no measurement). `fitted_image_"
        "efficiency` replaces compute with the fit to the packaged MLPerf SDXL rows."
    ),
)


# -- the roofline ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageTime:
    """Seconds for a batch of `batch` images on one device, by part, and what bounds them.

    step_s is one denoising step of the whole batch (compute or memory time plus overhead);
    batch_s = steps x step_s + text_s + vae_s, the latency of every image of the batch.
    `by_bound` splits batch_s into compute, memory and overhead seconds."""

    model: str
    device: str
    dtype: str
    batch: int
    steps: int
    step_s: float
    step_compute_s: float
    step_memory_s: float
    step_overhead_s: float
    text_s: float
    vae_s: float
    batch_s: float
    by_bound: Mapping[str, float] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        """Images per second per device at this batch."""
        return self.batch / self.batch_s

    @property
    def bound(self) -> str:
        """What bounds the batch: `compute`, `memory` (bandwidth) or `overhead`."""
        return max(self.by_bound, key=lambda k: self.by_bound[k])


def _batch_sizes(batch: int) -> int:
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise InputError(
            f"batch must be a whole number of images >= 1; got {batch!r}. Use batch=1 for one "
            "image at a time."
        )
    return batch


def _steps_of(model: ImageModel, steps: int | None) -> int:
    if steps is None:
        return model.steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(
            f"steps must be a whole number of denoising steps >= 1; got {steps!r}. "
            f"{model.id} uses {model.steps} by default."
        )
    return steps


def _check_device(device: Device) -> Device:
    if family_of(device.kind) == "wafer":
        raise InputError(
            f"image generation is modelled on HBM accelerators (GPUs, TPUs, ASICs); {device.id} "
            "is a wafer-scale engine, whose SRAM-resident serving this roofline does not "
            "describe. Pick a GPU or TPU system."
        )
    return device


def _times(
    model: ImageModel, device: Device, b: np.ndarray, dtype: str, steps: int, eff: ImageEfficiency
) -> dict[str, np.ndarray]:
    """The parts of the batch time for every batch size in `b` (vectorised)."""
    _check_device(device)
    peak = device.peak_flops_for(dtype) * eff.compute
    peak16 = device.peak_flops_for(ENCODER_DTYPE) * eff.compute
    bandwidth = device.mem_bandwidth_bytes_per_s * eff.memory
    step_c = model.denoiser_flops_per_step * b / peak
    step_m = np.full(b.shape, model.denoiser_weight_bytes(dtype) / bandwidth)
    text_flops = sum(t.flops_per_image for t in model.text_encoders)
    text_bytes = sum(t.params for t in model.text_encoders) * BYTES_PER_ELEMENT[ENCODER_DTYPE]
    text_c, text_m = text_flops * b / peak16, np.full(b.shape, text_bytes / bandwidth)
    vae_c = model.vae.flops_per_image * b / peak16
    vae_m = np.full(b.shape, model.vae.params * BYTES_PER_ELEMENT[ENCODER_DTYPE] / bandwidth)
    overhead = steps * eff.step_overhead_s
    compute = steps * np.where(step_c >= step_m, step_c, 0.0)
    compute += np.where(text_c >= text_m, text_c, 0.0) + np.where(vae_c >= vae_m, vae_c, 0.0)
    memory = steps * np.where(step_c < step_m, step_m, 0.0)
    memory += np.where(text_c < text_m, text_m, 0.0) + np.where(vae_c < vae_m, vae_m, 0.0)
    return {
        "step_c": step_c, "step_m": step_m, "text": np.maximum(text_c, text_m),
        "vae": np.maximum(vae_c, vae_m), "compute": compute, "memory": memory,
        "batch": compute + memory + overhead,
    }


def _pick(
    model: ImageModel, device: Device, dtype: str, steps: int, eff: ImageEfficiency,
    times: dict[str, np.ndarray], i: int,
) -> ImageTime:
    overhead = steps * eff.step_overhead_s
    return ImageTime(
        model=model.id,
        device=device.id,
        dtype=dtype,
        batch=i + 1,
        steps=steps,
        step_s=float(max(times["step_c"][i], times["step_m"][i]) + eff.step_overhead_s),
        step_compute_s=float(times["step_c"][i]),
        step_memory_s=float(times["step_m"][i]),
        step_overhead_s=eff.step_overhead_s,
        text_s=float(times["text"][i]),
        vae_s=float(times["vae"][i]),
        batch_s=float(times["batch"][i]),
        by_bound={
            "compute": float(times["compute"][i]),
            "memory": float(times["memory"][i]),
            "overhead": overhead,
        },
    )


def image_time(
    model: ImageModel | str,
    device: Device,
    batch: int,
    *,
    dtype: str = "bf16",
    steps: int | None = None,
    efficiency: ImageEfficiency | None = None,
) -> ImageTime:
    """Seconds for one batch of `batch` images of `model` on `device`, the denoiser in `dtype`
    (`steps` default: the model's; `efficiency` default: `fitted_image_efficiency()`)."""
    spec = load_image_model(model)
    b = _batch_sizes(batch)
    n = _steps_of(spec, steps)
    eff = efficiency or fitted_image_efficiency()
    times = _times(spec, device, np.array([float(b)]), check_dtype(dtype), n, eff)
    return replace(_pick(spec, device, dtype, n, eff, times, 0), batch=b)


def max_image_batch(model: ImageModel | str, device: Device, dtype: str = "bf16") -> int:
    """The most images a device holds at once: weights plus a VAE-decode workspace per image
    within `MEMORY_FRACTION` of its memory, at most `MAX_IMAGE_BATCH`. FitError when the weights
    alone do not fit."""
    spec = load_image_model(model)
    usable = _check_device(device).mem_capacity_bytes * MEMORY_FRACTION
    weights = spec.weight_bytes(check_dtype(dtype))
    room = math.floor((usable - weights) / spec.vae_workspace_bytes)
    if room < 1:
        raise FitError(
            f"{spec.id} in {dtype} does not fit on one {device.id} ({device.mem_capacity_label}): "
            f"weights {weights / GB:.1f} GB plus {spec.vae_workspace_bytes / GB:.1f} GB of "
            "VAE workspace per image. Use a lower-precision dtype or a device with more memory."
        )
    return min(room, MAX_IMAGE_BATCH)


def best_image_batch(
    model: ImageModel | str,
    device: Device,
    *,
    dtype: str = "bf16",
    steps: int | None = None,
    efficiency: ImageEfficiency | None = None,
    latency_limit_s: float | None = None,
) -> tuple[ImageTime, str]:
    """The batch with the most images/s per device whose batch time is within `latency_limit_s`
    (None: no limit), the smallest within `BATCH_TOLERANCE` of the best; and what stopped a
    larger batch: `latency limit` (a batch it rules out is more than `BATCH_TOLERANCE` faster),
    `memory capacity`, `batch cap` or `throughput flat`."""
    spec = load_image_model(model)
    n = _steps_of(spec, steps)
    eff = efficiency or fitted_image_efficiency()
    if latency_limit_s is not None and not (
        isinstance(latency_limit_s, int | float) and latency_limit_s > 0
        and math.isfinite(latency_limit_s)
    ):
        raise InputError(
            f"latency_limit_s must be a positive number of seconds or None; got "
            f"{latency_limit_s!r}. Use None for no limit."
        )
    top = max_image_batch(spec, device, dtype)
    sizes = np.arange(1, top + 1, dtype=float)
    times = _times(spec, device, sizes, dtype, n, eff)
    ok = np.ones(top, dtype=bool)
    if latency_limit_s is not None:
        ok = times["batch"] <= latency_limit_s
        if not ok[0]:
            raise InputError(
                f"latency_limit_s {latency_limit_s:g} s is below the time of one {spec.id} "
                f"image on {device.id} ({times['batch'][0]:.3g} s at batch 1, {dtype}, {n} "
                "steps); raise the limit, cut steps or pick a faster device."
            )
    unlimited = sizes / times["batch"]
    rate = np.where(ok, unlimited, 0.0)
    best = int(np.flatnonzero(rate >= rate.max() * (1.0 - BATCH_TOLERANCE))[0])
    if rate[best] < unlimited.max() * (1.0 - BATCH_TOLERANCE):
        limit = "latency limit"
    elif best + 1 == top:
        limit = "batch cap" if top == MAX_IMAGE_BATCH else "memory capacity"
    else:
        limit = "throughput flat"
    return _pick(spec, device, dtype, n, eff, times, best), limit


# -- the published rows ---------------------------------------------------------------------------

COLUMNS: Final = (
    "id",
    "system",
    "hardware",
    "n_devices",
    "image_model",
    "weight_dtype",
    "scenario",
    "latency_p99_limit_s",
    "metric",
    "value",
    "round",
    "submission",
    "source",
    "date",
    "notes",
)
"""Columns of an image measurements file (`data/validation/README.md`)."""
SCENARIOS: Final = ("offline", "server")
METRICS: Final = ("images_per_s",)


@dataclass(frozen=True)
class ImageMeasurement:
    """One published image-generation result: `value` images/s of `n_devices` devices of
    catalog system `system` (MLPerf Offline samples/s or Server queries/s, one image each)."""

    id: str
    system: str
    hardware: str
    n_devices: int
    image_model: str
    weight_dtype: str
    scenario: str
    latency_p99_limit_s: float | None
    metric: str
    value: float
    round: str
    submission: str
    source: str
    date: str
    notes: str

    @property
    def recalled(self) -> bool:
        """Whether the source marks the value as recalled from memory, to be verified."""
        return "recalled" in self.source.lower()


def _row(raw: Mapping[str, str | None], where: str, catalog: Catalog) -> ImageMeasurement:
    def text(key: str) -> str:
        return (raw.get(key) or "").strip()

    def number(key: str, *, whole: bool = False) -> float:
        value = text(key)
        try:
            x = float(value)
        except ValueError:
            raise InputError(
                f"{where}: {key} must be a number; got {value!r}. Write e.g. 13.7."
            ) from None
        if not (math.isfinite(x) and x > 0) or (whole and x != int(x)):
            kind = "a whole number" if whole else "a number"
            raise InputError(f"{where}: {key} must be {kind} > 0; got {value!r}.")
        return x

    rid = text("id")
    if not rid:
        raise InputError(f"{where}: id is blank; give each row an id such as I001.")
    try:
        system = catalog.system(text("system"))
    except CatalogError as exc:
        raise InputError(f"{where}: system: {exc}") from None
    if text("hardware") != system.device_id:
        raise InputError(
            f"{where}: hardware {text('hardware')!r} is not the device of system {system.id!r} "
            f"({system.device_id!r}); write {system.device_id}."
        )
    load_image_model(text("image_model"))
    dtype = check_dtype(text("weight_dtype"))
    scenario, metric = text("scenario"), text("metric")
    if scenario not in SCENARIOS:
        raise InputError(f"{where}: scenario must be one of {', '.join(SCENARIOS)}; got {scenario!r}.")
    if metric not in METRICS:
        raise InputError(f"{where}: metric must be one of {', '.join(METRICS)}; got {metric!r}.")
    limit = number("latency_p99_limit_s") if text("latency_p99_limit_s") else None
    if scenario == "server" and limit is None:
        raise InputError(
            f"{where}: a server row needs latency_p99_limit_s (MLPerf SDXL: 20); it is blank."
        )
    return ImageMeasurement(
        id=rid, system=system.id, hardware=system.device_id,
        n_devices=int(number("n_devices", whole=True)), image_model=text("image_model"),
        weight_dtype=dtype, scenario=scenario, latency_p99_limit_s=limit, metric=metric,
        value=number("value"), round=text("round"),
        submission=text("submission"), source=text("source"), date=text("date"),
        notes=text("notes"),
    )


def parse_image_measurements(
    text: str, name: str, catalog: Catalog | None = None
) -> tuple[ImageMeasurement, ...]:
    """Check and read the rows of an image measurements CSV; the first bad row raises an
    InputError naming the file, the line, the column and the fix."""
    cat = catalog or load_catalog()
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise InputError(
            f"image measurements file {name} lacks the columns {', '.join(missing)}; the header "
            f"must name {', '.join(COLUMNS)}."
        )
    rows: list[ImageMeasurement] = []
    for line, raw in enumerate(reader, start=2):
        row = _row(raw, f"{name} line {line}", cat)
        if any(r.id == row.id for r in rows):
            raise InputError(f"{name} line {line}: id {row.id} repeats; ids must be unique.")
        rows.append(row)
    return tuple(rows)


def load_image_measurements(
    path: str | os.PathLike[str] | None = None, catalog: Catalog | None = None
) -> tuple[ImageMeasurement, ...]:
    """The image rows of a CSV at `path`, or of the packaged `IMAGE_MEASUREMENTS` (None)."""
    if path is None:
        data = resources.files("megawatt").joinpath(IMAGE_MEASUREMENTS).read_bytes()
        name = IMAGE_MEASUREMENTS
    else:
        data = read_user_bytes(path, "image measurements file")
        name = Path(path).name
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"image measurements file {name} is not UTF-8 text; save it as UTF-8.") from None
    return parse_image_measurements(text, name, catalog)


def predict_image_row(
    m: ImageMeasurement, efficiency: ImageEfficiency, catalog: Catalog | None = None
) -> tuple[float, ImageTime, str]:
    """The row's images/s as megawatt predicts it: `n_devices` x the best per-device rate
    (server rows: the best batch whose time is within the latency limit / SERVER_QUEUE_FACTOR),
    with the chosen batch's breakdown and what stopped a larger batch."""
    cat = catalog or load_catalog()
    device = cat.device(cat.system(m.system).device_id)
    limit = None
    if m.scenario == "server" and m.latency_p99_limit_s is not None:
        limit = m.latency_p99_limit_s / SERVER_QUEUE_FACTOR
    t, why = best_image_batch(
        m.image_model, device, dtype=m.weight_dtype, efficiency=efficiency, latency_limit_s=limit
    )
    return m.n_devices * t.images_per_s, t, why


# -- the fit --------------------------------------------------------------------------------------


def _sig6(x: float) -> float:
    return float(f"{x:.6g}")


def _mape(predicted: Sequence[float], measured: Sequence[float]) -> float:
    return float(np.mean([abs(p / m - 1.0) for p, m in zip(predicted, measured, strict=True)]))


class ImageEfficiencyFit:
    """Fits the one compute efficiency of image generation (all devices alike; the rows are one
    vendor's) to published rows: the value minimising the sum of squared log errors, bounded to
    `FIT_BOUNDS`, memory efficiency and step overhead kept at the prior. Deterministic.

    After `fit(rows)`: `compute_`, `efficiency_`, `predicted_` (per row, the fitted model),
    `loo_predicted_` (each row predicted by a fit without it), `loso_predicted_` (without any row
    of its system), `mape_`, `loo_mape_`, `loso_mape_` (fractions)."""

    def __init__(self, prior: ImageEfficiency = IMAGE_PRIOR, catalog: Catalog | None = None):
        self.prior = prior
        self.catalog = catalog

    def _solve(self, rows: Sequence[ImageMeasurement]) -> float:
        cat = self.catalog or load_catalog()

        def loss(log_eff: float) -> float:
            eff = replace(self.prior, compute=math.exp(log_eff))
            return sum(
                math.log(predict_image_row(m, eff, cat)[0] / m.value) ** 2 for m in rows
            )

        lo, hi = (math.log(b) for b in FIT_BOUNDS)
        got = minimize_scalar(loss, bounds=(lo, hi), method="bounded", options={"xatol": 1e-7})
        return _sig6(math.exp(float(got.x)))

    def fit(self, rows: Sequence[ImageMeasurement]) -> ImageEfficiencyFit:
        """Fit to `rows` (at least two) and cross-validate; returns self."""
        if len(rows) < 2:
            raise InputError(
                f"the image efficiency fit needs at least 2 rows; got {len(rows)}. Add published "
                "image-generation results."
            )
        cat = self.catalog or load_catalog()
        self.compute_ = self._solve(rows)
        self.efficiency_ = replace(self.prior, compute=self.compute_, source=self._source(rows))
        self.predicted_ = tuple(predict_image_row(m, self.efficiency_, cat)[0] for m in rows)
        self.loo_predicted_ = tuple(
            self._held_out(rows, m, [r for r in rows if r.id != m.id]) for m in rows
        )
        self.loso_predicted_ = tuple(
            self._held_out(rows, m, [r for r in rows if r.system != m.system]) for m in rows
        )
        measured = [m.value for m in rows]
        self.mape_ = _mape(self.predicted_, measured)
        self.loo_mape_ = _mape(self.loo_predicted_, measured)
        self.loso_mape_ = (
            _mape(self.loso_predicted_, measured)
            if all(math.isfinite(p) for p in self.loso_predicted_) else math.nan
        )
        self.n_rows_ = len(rows)
        return self

    def _held_out(
        self, rows: Sequence[ImageMeasurement], m: ImageMeasurement,
        rest: Sequence[ImageMeasurement],
    ) -> float:
        if not rest:
            return math.nan
        eff = replace(self.prior, compute=self._solve(rest))
        return predict_image_row(m, eff, self.catalog)[0]

    def _source(self, rows: Sequence[ImageMeasurement]) -> str:
        recalled = sum(m.recalled for m in rows)
        systems = ", ".join(sorted({m.system for m in rows}))
        return (
            f"fitted to {len(rows)} published image-generation rows ({systems}; {recalled} of "
            "them recalled from memory, to verify) by megawatt.perf.image.ImageEfficiencyFit; "
            f"memory efficiency and step overhead: {self.prior.source}"
        )

    def predict(self, m: ImageMeasurement) -> float:
        """The fitted model's images/s for a row."""
        if not hasattr(self, "efficiency_"):
            raise NotFittedError("ImageEfficiencyFit is not fitted; call fit(rows) first.")
        return predict_image_row(m, self.efficiency_, self.catalog)[0]


@cache
def _packaged_fit() -> ImageEfficiencyFit:
    return ImageEfficiencyFit().fit(load_image_measurements())


def fitted_image_efficiency() -> ImageEfficiency:
    """The image efficiency fitted to the packaged rows (`IMAGE_MEASUREMENTS`), computed once
    per process (a bounded one-parameter fit, well under a second)."""
    return _packaged_fit().efficiency_
