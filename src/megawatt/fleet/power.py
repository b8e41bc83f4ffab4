"""Power of a system against its load: a `PowerCurve` per system from a power model (the curve
fitted to measured GPU power where a device family has measurements, the linear idle-to-peak
prior elsewhere), and the fit of those curves (`megawatt calibrate-power`).

Load share u is the load as a share of the system's capacity at the SLO, as the fleet uses it;
in the measurements it is a run's output tokens/s per GPU over the highest of its configuration.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

import numpy as np
from scipy.optimize import least_squares

from megawatt.errors import CatalogError, InputError, NotFittedError
from megawatt.hardware import Catalog, Device, System, load_catalog

__all__ = [
    "IDLE_UTIL_PCT",
    "LOAD_SHARES",
    "MIN_POINTS",
    "POWER_CSV",
    "POWER_CURVES_FILE",
    "POWER_MODELS",
    "FamilyFit",
    "FittedPower",
    "LinearPower",
    "PowerCurve",
    "PowerCurveFitter",
    "PowerModel",
    "PowerPoint",
    "PowerRecord",
    "fitted_families",
    "load_power_records",
    "power_curve",
    "power_family",
    "power_model",
    "power_points",
    "power_records_sha256",
]

POWER_CSV = "data/power/power.csv"
"""The packaged power measurements (InferenceX, see data/power/README.md)."""
POWER_CURVES_FILE = "data/power/curves.json"
"""Where `megawatt calibrate-power` writes the fitted curves, inside the package."""
POWER_CURVES_FORMAT = 1
"""Version of the fitted file's layout; a file of another version is ignored (priors apply)."""
LOAD_SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)
"""The load shares at which reports show a curve."""
IDLE_UTIL_PCT = 5.0
"""A prefill or decode worker whose GPUs were busy less than this share of the time (%) is an
idle measurement (load share 0): the prefill workers of the one-request disaggregated runs."""
MIN_POINTS = 5
"""Fewest points a family needs for a fit of its three parameters; fewer keep the prior."""
FIT_BOUNDS: dict[str, tuple[float, float]] = {
    "idle_fraction": (0.01, 1.0),
    "full_load_fraction": (0.05, 1.0),
    "exponent": (0.05, 5.0),
}
"""Bounds of the fitted parameters: power as a fraction of the device TDP at no load and at
capacity, and the curve's exponent."""
PRIOR_START = (0.35, 1.0, 1.0)
"""Where the fit starts: the linear prior with the catalog's default idle share (0.35)."""
_SIG = 6  # significant digits of saved values: the file is regenerated bit for bit

PRIOR_SOURCE = (
    "linear from the system's idle power to its maximum power with the load as a share of "
    "capacity at the SLO"
)
"""What the prior curve is."""

_COLUMNS = (
    "hardware",
    "framework",
    "model",
    "precision",
    "spec_method",
    "disagg",
    "plan",
    "role",
    "n_gpus",
    "isl",
    "osl",
    "conc",
    "avg_power_w_per_gpu",
    "avg_util_pct",
    "output_tokens_per_s_system",
    "flag",
    "date",
)


# -- curves and models --------------------------------------------------------------------------


@dataclass(frozen=True)
class PowerCurve:
    """Power of one system (W) against its load share u in [0, 1], the load as a share of its
    capacity at the SLO: `P(u) = idle_w + (full_load_w - idle_w) * u ** exponent`. `fitted` tells
    a curve fitted to measurements from the linear prior; `source` says which."""

    idle_w: float
    full_load_w: float
    exponent: float
    source: str
    fitted: bool = False

    def power_w(self, load_share: float) -> float:
        """Power (W) at `load_share` of capacity, clipped to [0, 1]."""
        u = min(max(load_share, 0.0), 1.0)
        return self.idle_w + (self.full_load_w - self.idle_w) * math.pow(u, self.exponent)

    def points_w(self, shares: Sequence[float] = LOAD_SHARES) -> tuple[float, ...]:
        """Power (W) at each load share of `shares`."""
        return tuple(self.power_w(u) for u in shares)


@runtime_checkable
class PowerModel(Protocol):
    """Gives a system's power curve; the device says which family's curve applies. The linear
    prior (`LinearPower`) and the fitted curves (`FittedPower`) both satisfy it, and so does any
    model registered in `POWER_MODELS` or passed to `power_curve` (a curve fitted to a real
    engine's measurements plugs in here); `isinstance(x, PowerModel)` checks the method."""

    def curve(self, system: System, device: Device) -> PowerCurve:
        """The power curve of one `system` built from `device`."""


@dataclass(frozen=True)
class LinearPower:
    """The prior: power rises linearly from the system's idle power to its maximum power with
    the load share (both from the catalog, with their sources); `why` says why it applies."""

    why: str = ""

    def curve(self, system: System, device: Device) -> PowerCurve:
        """Linear from the system's idle power to its maximum power."""
        idle = system.sources.get("idle_power_w", "")
        prior = f"prior ({self.why})" if self.why else "prior"
        return PowerCurve(
            system.idle_power_w, system.power_w, 1.0, f"{prior}: {PRIOR_SOURCE}; idle: {idle}"
        )


@dataclass(frozen=True)
class FamilyFit:
    """A device family's fitted curve, as fractions of the device TDP per GPU: `idle_fraction`
    at no load, `full_load_fraction` at capacity, `exponent` between; with its errors (mean
    absolute percentage error of the fit, leave-one-out and leave-one-configuration-out, and of
    the linear prior with the default idle share on the same points)."""

    family: str
    idle_fraction: float
    full_load_fraction: float
    exponent: float
    hardware: tuple[str, ...]
    n_points: int
    fit_mape_pct: float
    loo_mape_pct: float
    loco_mape_pct: float
    prior_mape_pct: float


@dataclass(frozen=True)
class FittedPower:
    """The fitted curve of the device's family where `megawatt calibrate-power` fitted one,
    scaled from the device TDP to the system's maximum power (assumption: host, network and fans
    draw the same share of their maximum as the GPUs; unmeasured); else the linear prior.
    `fits` defaults to the packaged file."""

    fits: Mapping[str, FamilyFit] | None = None

    def curve(self, system: System, device: Device) -> PowerCurve:
        """The family's fitted curve scaled to the system, else the linear prior."""
        fits = fitted_families() if self.fits is None else self.fits
        fit = fits.get(power_family(device))
        if fit is None:
            why = f"no power measurements of the {power_family(device)} family"
            return LinearPower(why).curve(system, device)
        source = (
            f"fitted by `megawatt calibrate-power` to {fit.n_points} measurements of "
            f"{', '.join(fit.hardware)} ({fit.family} family): per-GPU power / TDP = "
            f"{fit.idle_fraction:.3g} + ({fit.full_load_fraction:.3g} - {fit.idle_fraction:.3g}) "
            f"x u^{fit.exponent:.3g}, applied to the system's maximum power (host, network and "
            f"fans assumed to follow the GPUs); fit error {fit.fit_mape_pct:.1f}% MAPE, "
            f"leave-one-out {fit.loo_mape_pct:.1f}%, leave-one-configuration-out "
            f"{fit.loco_mape_pct:.1f}%"
        )
        return PowerCurve(
            system.power_w * fit.idle_fraction,
            system.power_w * fit.full_load_fraction,
            fit.exponent,
            source,
            True,
        )


POWER_MODELS: Mapping[str, Callable[[], PowerModel]] = {
    "fitted": FittedPower,
    "linear": LinearPower,
}
"""Power models by name: `fitted` (the default: fitted curves where measured, else the prior)
and `linear` (the prior everywhere)."""


def power_model(name: str = "fitted") -> PowerModel:
    """The power model registered under `name`."""
    try:
        return POWER_MODELS[name]()
    except KeyError:
        raise InputError(
            f"power model must be one of {', '.join(sorted(POWER_MODELS))}; got {name!r}."
        ) from None


def power_curve(system: System, device: Device, model: PowerModel | None = None) -> PowerCurve:
    """The power curve the fleet uses for `system`: from `model`, by default the `fitted` one."""
    return (FittedPower() if model is None else model).curve(system, device)


def power_family(device: Device) -> str:
    """The family a power curve is fitted for: kind and vendor, e.g. `gpu/amd`, `gpu/nvidia`,
    `tpu/google`, `wafer/cerebras` (devices of one vendor and kind share power management)."""
    return f"{device.kind}/{device.vendor.lower()}"


@cache
def _packaged_document() -> dict[str, Any] | None:
    try:
        text = resources.files("megawatt").joinpath(POWER_CURVES_FILE).read_text("utf-8")
    except (FileNotFoundError, OSError):
        return None
    document: dict[str, Any] = json.loads(text)
    return document


def families_from(document: Mapping[str, Any]) -> dict[str, FamilyFit]:
    """The fitted families of a `calibrate-power` document ({} for another format)."""
    if document.get("format") != POWER_CURVES_FORMAT:
        return {}
    out: dict[str, FamilyFit] = {}
    for family, entry in document.get("families", {}).items():
        if entry.get("status") != "fitted":
            continue
        out[family] = FamilyFit(
            family=family,
            idle_fraction=float(entry["idle_fraction"]),
            full_load_fraction=float(entry["full_load_fraction"]),
            exponent=float(entry["exponent"]),
            hardware=tuple(entry["hardware"]),
            n_points=int(entry["n_points"]),
            fit_mape_pct=float(entry["fit_mape_pct"]),
            loo_mape_pct=float(entry["loo_mape_pct"]),
            loco_mape_pct=float(entry["loco_mape_pct"]),
            prior_mape_pct=float(entry["prior_mape_pct"]),
        )
    return out


@cache
def fitted_families() -> Mapping[str, FamilyFit]:
    """The packaged fitted curves by family (empty when the file is absent); read once."""
    document = _packaged_document()
    return MappingProxyType(families_from(document) if document is not None else {})


# -- measurements -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PowerRecord:
    """One row of power.csv: a closed-loop serving run (or one worker of a disaggregated run)
    with its mean power per GPU (W) and the whole run's output tokens/s."""

    hardware: str
    framework: str
    model: str
    precision: str
    spec_method: str
    disagg: bool
    plan: str
    role: str
    n_gpus: int
    isl: int
    osl: int
    conc: int
    power_w_per_gpu: float
    util_pct: float | None
    output_tokens_per_s: float
    flag: str
    date: str

    @property
    def whole_system(self) -> bool:
        """True for a run's whole-system row (False for a prefill or decode worker's row)."""
        return self.role == "whole system"

    @property
    def configuration(self) -> tuple[str, ...]:
        """What a load share is relative to: hardware, engine, model, precision, speculation,
        disaggregation and lengths (plans and concurrencies vary inside it)."""
        return (
            self.hardware,
            self.framework,
            self.model,
            self.precision,
            self.spec_method,
            "disagg" if self.disagg else "agg",
            f"{self.isl}/{self.osl}",
        )

    @property
    def label(self) -> str:
        """A readable id of the row."""
        return f"{' '.join(self.configuration)} {self.plan} conc {self.conc} ({self.role}) {self.date}"


def _read_power_bytes(path: str | os.PathLike[str] | None) -> bytes:
    if path is None:
        return resources.files("megawatt").joinpath(POWER_CSV).read_bytes()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"power measurements file {os.fspath(path)} cannot be read: {exc}.") from None


def power_records_sha256(path: str | os.PathLike[str] | None = None) -> str:
    """SHA-256 of a power measurements file's bytes (the packaged file when `path` is None)."""
    return hashlib.sha256(_read_power_bytes(path)).hexdigest()


def load_power_records(path: str | os.PathLike[str] | None = None) -> list[PowerRecord]:
    """Read a power measurements CSV in power.csv's schema (the packaged file when None)."""
    name = "megawatt/" + POWER_CSV if path is None else os.fspath(path)
    reader = csv.DictReader(io.StringIO(_read_power_bytes(path).decode("utf-8")))
    missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise InputError(f"{name}: missing columns {missing}; the schema is that of {POWER_CSV}.")
    records = []
    for line, row in enumerate(reader, start=2):

        def number(column: str, row: dict[str, str] = row, line: int = line) -> float:
            try:
                value = float(row[column])
            except ValueError:
                raise InputError(
                    f"{name} line {line}: {column} must be a number; got {row[column]!r}."
                ) from None
            if not math.isfinite(value):
                raise InputError(f"{name} line {line}: {column} must be finite; got {value}.")
            return value

        util = row["avg_util_pct"].strip()
        records.append(
            PowerRecord(
                hardware=row["hardware"],
                framework=row["framework"],
                model=row["model"],
                precision=row["precision"],
                spec_method=row["spec_method"],
                disagg=row["disagg"].strip().lower() == "true",
                plan=row["plan"],
                role=row["role"],
                n_gpus=int(number("n_gpus")),
                isl=int(number("isl")),
                osl=int(number("osl")),
                conc=int(number("conc")),
                power_w_per_gpu=number("avg_power_w_per_gpu"),
                util_pct=number("avg_util_pct") if util else None,
                output_tokens_per_s=number("output_tokens_per_s_system"),
                flag=row["flag"].strip(),
                date=row["date"],
            )
        )
    return records


@dataclass(frozen=True)
class PowerPoint:
    """One point a curve is fitted to: a load share and the measured power per GPU as a fraction
    of the device TDP; `idle` marks a worker measured at no load."""

    label: str
    family: str
    hardware: str
    configuration: tuple[str, ...]
    load_share: float
    power_w_per_gpu: float
    tdp_w: float
    date: str
    idle: bool = False

    @property
    def fraction(self) -> float:
        """Measured power as a fraction of the TDP."""
        return self.power_w_per_gpu / self.tdp_w


def power_points(
    records: Sequence[PowerRecord], catalog: Catalog
) -> tuple[list[PowerPoint], list[tuple[str, str]]]:
    """The fit points of `records` and the rows left out, each with its reason.

    A whole-system row's load share is its output tokens/s per GPU over the highest per-GPU rate
    of its configuration (a proxy for the capacity at the SLO: the highest measured rate of a
    concurrency sweep). A worker row whose GPUs were busy under `IDLE_UTIL_PCT` is an idle point
    (load share 0); other worker rows are parts of their run's whole-system row. Flagged rows
    (broken runs) are left out with their flag."""
    kept, excluded = [], []
    for r in records:
        if r.flag:
            excluded.append((r.label, r.flag))
        elif r.whole_system:
            kept.append(r)
        elif r.util_pct is not None and r.util_pct < IDLE_UTIL_PCT:
            kept.append(r)
        else:
            excluded.append(
                (r.label, "a worker of a disaggregated run, inside its whole-system row's mean")
            )
    best: dict[tuple[str, ...], float] = {}
    for r in kept:
        if r.whole_system:
            rate = r.output_tokens_per_s / r.n_gpus
            best[r.configuration] = max(best.get(r.configuration, 0.0), rate)
    points = []
    for r in kept:
        try:
            device = catalog.device(r.hardware)
        except CatalogError as exc:
            raise InputError(f"power row {r.label}: {exc}") from None
        if device.tdp_w is None:
            raise InputError(
                f"power row {r.label}: device {device.id!r} has no TDP in the catalog; power is "
                "fitted as a fraction of TDP. Give the device a tdp_w."
            )
        idle = not r.whole_system
        share = 0.0 if idle else r.output_tokens_per_s / r.n_gpus / best[r.configuration]
        points.append(
            PowerPoint(
                r.label,
                power_family(device),
                device.id,
                r.configuration,
                share,
                r.power_w_per_gpu,
                device.tdp_w,
                r.date,
                idle,
            )
        )
    return points, excluded


# -- the fit ------------------------------------------------------------------------------------


def _fractions(x: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Power / TDP at load shares `u` for parameters x = (idle, full load, exponent)."""
    out: np.ndarray = x[0] + (x[1] - x[0]) * np.power(u, x[2])
    return out


def _solve(u: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares of the log errors, bounded, from the linear prior: deterministic."""
    lo, hi = zip(*FIT_BOUNDS.values(), strict=True)
    result = least_squares(
        lambda x: np.log(_fractions(x, u)) - np.log(y),
        np.array(PRIOR_START),
        bounds=(np.array(lo), np.array(hi)),
        method="trf",
        x_scale=1.0,
    )
    solution: np.ndarray = result.x
    return solution


def _round(x: float) -> float:
    return float(f"{x:.{_SIG}g}")


def _mape_pct(predicted: np.ndarray, measured: np.ndarray) -> float:
    return float(np.mean(np.abs(predicted / measured - 1.0)) * 100.0)


class PowerCurveFitter:
    """Fits each device family's power curve to measured GPU power (estimator contract).

    Per family with at least `min_points` points: power per GPU / TDP = idle + (full_load -
    idle) x u^exponent, least squares of the log errors, bounded (FIT_BOUNDS), started from the
    linear prior. Cross-validated twice: leave-one-out (each point predicted by a fit without it)
    and leave-one-configuration-out (each configuration's points by a fit without them; its
    points share a date, engine and lengths, so this is the honest error for a new setting).

    Learned attributes: `fits_` (a `FamilyFit` per fitted family), `points_` (the fit points),
    `predicted_`, `loo_predicted_` and `loco_predicted_` (per point, fraction of TDP),
    `excluded_` (rows left out, with reasons), `unfitted_` (families with too few points)."""

    def __init__(self, *, min_points: int = MIN_POINTS, catalog: Catalog | None = None) -> None:
        self.min_points = min_points
        self.catalog = catalog

    def __getattr__(self, name: str) -> Any:
        if name.endswith("_") and not name.startswith("_"):
            raise NotFittedError(
                f"PowerCurveFitter.{name} is learned by fit(): call "
                "PowerCurveFitter().fit(load_power_records()) first."
            )
        raise AttributeError(name)

    def fit(self, records: Sequence[PowerRecord]) -> PowerCurveFitter:
        """Fit every family with enough points; returns self."""
        catalog = self.catalog if self.catalog is not None else load_catalog()
        points, excluded = power_points(records, catalog)
        families = sorted({p.family for p in points})
        fits: dict[str, FamilyFit] = {}
        unfitted: dict[str, int] = {}
        n = len(points)
        predicted = np.full(n, math.nan)
        loo = np.full(n, math.nan)
        loco = np.full(n, math.nan)
        for family in families:
            idx = np.array([i for i, p in enumerate(points) if p.family == family])
            if idx.size < self.min_points:
                unfitted[family] = int(idx.size)
                continue
            u = np.array([points[i].load_share for i in idx])
            y = np.array([points[i].fraction for i in idx])
            x = _solve(u, y)
            predicted[idx] = _fractions(x, u)
            for k in range(idx.size):
                keep = np.arange(idx.size) != k
                loo[idx[k]] = _fractions(_solve(u[keep], y[keep]), u[k : k + 1])[0]
            configs = [points[i].configuration for i in idx]
            for config in sorted(set(configs)):
                out = np.array([c == config for c in configs])
                loco[idx[out]] = _fractions(_solve(u[~out], y[~out]), u[out])
            fits[family] = FamilyFit(
                family=family,
                idle_fraction=_round(float(x[0])),
                full_load_fraction=_round(float(x[1])),
                exponent=_round(float(x[2])),
                hardware=tuple(sorted({points[i].hardware for i in idx})),
                n_points=int(idx.size),
                fit_mape_pct=_round(_mape_pct(predicted[idx], y)),
                loo_mape_pct=_round(_mape_pct(loo[idx], y)),
                loco_mape_pct=_round(_mape_pct(loco[idx], y)),
                prior_mape_pct=_round(_mape_pct(_fractions(np.array(PRIOR_START), u), y)),
            )
        self.points_ = points
        self.excluded_ = excluded
        self.fits_ = fits
        self.unfitted_ = unfitted
        self.predicted_ = predicted
        self.loo_predicted_ = loo
        self.loco_predicted_ = loco
        return self

    def document(self, *, input_name: str, input_sha256: str, version: str) -> dict[str, Any]:
        """The fitted file's content (`data/power/curves.json`): versioned, no clock time, values
        rounded to 6 significant digits, so the same input gives the same bytes."""
        if "fits_" not in self.__dict__:
            raise NotFittedError("this PowerCurveFitter is not fitted yet: call fit(records) first.")
        families: dict[str, Any] = {}
        for family, fit in self.fits_.items():
            rows = [
                {
                    "point": p.label,
                    "idle": p.idle,
                    "load_share": _round(p.load_share),
                    "measured_w": _round(p.power_w_per_gpu),
                    "predicted_w": _round(float(self.predicted_[i]) * p.tdp_w),
                    "loo_predicted_w": _round(float(self.loo_predicted_[i]) * p.tdp_w),
                    "loco_predicted_w": _round(float(self.loco_predicted_[i]) * p.tdp_w),
                }
                for i, p in enumerate(self.points_)
                if p.family == family
            ]
            tdp = {p.hardware: _round(p.tdp_w) for p in self.points_ if p.family == family}
            families[family] = {
                "status": "fitted",
                "hardware": list(fit.hardware),
                "tdp_w": tdp,
                "n_points": fit.n_points,
                "n_configurations": len(
                    {p.configuration for p in self.points_ if p.family == family}
                ),
                "idle_fraction": fit.idle_fraction,
                "full_load_fraction": fit.full_load_fraction,
                "exponent": fit.exponent,
                "fit_mape_pct": fit.fit_mape_pct,
                "loo_mape_pct": fit.loo_mape_pct,
                "loco_mape_pct": fit.loco_mape_pct,
                "prior_mape_pct": fit.prior_mape_pct,
                "points": rows,
            }
        for family, count in self.unfitted_.items():
            families[family] = {
                "status": "prior",
                "why": f"{count} points, fewer than {self.min_points}",
            }
        return {
            "format": POWER_CURVES_FORMAT,
            "produced_by": f"megawatt calibrate-power (megawatt {version})",
            "input": {
                "file": input_name,
                "sha256": input_sha256,
                "newest_measurement": max((p.date for p in self.points_), default=""),
            },
            "curve": (
                "per-GPU power / device TDP = idle_fraction + (full_load_fraction - "
                "idle_fraction) x u^exponent; a system of the family draws its maximum power "
                "times that fraction (host, network and fans assumed to follow the GPUs)"
            ),
            "load_share": (
                "u = a run's output tokens/s per GPU / the highest per-GPU output tokens/s of "
                "its configuration (hardware, engine, model, precision, speculation, "
                "disaggregation, input/output lengths), a proxy for the load as a share of the "
                f"capacity at the SLO; prefill/decode workers busy < {IDLE_UTIL_PCT:g}% of the "
                "time are idle points (u = 0)"
            ),
            "method": (
                "per family with at least "
                f"{self.min_points} points: least squares of the log errors (scipy "
                "least_squares, trf), bounded, started from the linear prior "
                f"{list(PRIOR_START)}; cross-validated leave-one-out and "
                "leave-one-configuration-out"
            ),
            "bounds": {k: list(v) for k, v in FIT_BOUNDS.items()},
            "prior": f"families without a fit: {PRIOR_SOURCE}",
            "families": families,
            "excluded": [{"row": label, "why": why} for label, why in self.excluded_],
        }
