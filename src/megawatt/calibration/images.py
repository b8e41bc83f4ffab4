"""Image-generation rows (MLPerf SDXL) replayed through the image roofline with its compute
efficiency fitted to them, cross-validated by row and by system."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from megawatt.hardware import Catalog, load_catalog
from megawatt.perf.image import (
    IMAGE_MEASUREMENTS,
    ImageEfficiencyFit,
    load_image_measurements,
    predict_image_row,
)

__all__ = [
    "ImageRowResult",
    "ImageValidation",
    "validate_images",
]


@dataclass(frozen=True)
class ImageRowResult:
    """One image-generation row: measured and predicted images/s of its system, the prediction
    of a fit without the row (`loo_predicted`) and without any row of its system
    (`loso_predicted`), the chosen batch per device and what bounds it."""

    id: str
    system: str
    hardware: str
    n_devices: int
    image_model: str
    scenario: str
    round: str
    measured: float
    predicted: float
    loo_predicted: float
    loso_predicted: float
    batch: int
    bound: str
    batch_limit: str
    recalled: bool

    @property
    def abs_pct_error(self) -> float:
        """|predicted - measured| / measured, a fraction."""
        return abs(self.predicted - self.measured) / self.measured


@dataclass(frozen=True)
class ImageValidation:
    """The image-generation rows replayed through `megawatt.perf.image` with the compute
    efficiency fitted to them: per-row results, the fit's MAPE, leave-one-out MAPE and
    leave-one-system-out MAPE (fractions)."""

    data: str
    rows: tuple[ImageRowResult, ...]
    compute_efficiency: float
    mape: float
    loo_mape: float
    loso_mape: float
    efficiency_source: str

    def to_json(self) -> dict[str, Any]:
        """The `image_generation` part of `validate --json`."""
        return {
            "data": self.data,
            "compute_efficiency": self.compute_efficiency,
            "mape": self.mape,
            "loo_mape": self.loo_mape,
            "loso_mape": self.loso_mape,
            "n_rows": len(self.rows),
            "n_recalled": sum(r.recalled for r in self.rows),
            "efficiency_source": self.efficiency_source,
            "rows": [
                {
                    "id": r.id,
                    "system": r.system,
                    "hardware": r.hardware,
                    "n_devices": r.n_devices,
                    "image_model": r.image_model,
                    "scenario": r.scenario,
                    "round": r.round,
                    "metric": "images_per_s",
                    "measured": r.measured,
                    "predicted": r.predicted,
                    "abs_pct_error": r.abs_pct_error,
                    "loo_predicted": r.loo_predicted,
                    "loso_predicted": r.loso_predicted,
                    "batch_per_device": r.batch,
                    "bound": r.bound,
                    "batch_limit": r.batch_limit,
                    "recalled": r.recalled,
                }
                for r in self.rows
            ],
        }


def validate_images(
    path: str | os.PathLike[str] | None = None, catalog: Catalog | None = None
) -> ImageValidation:
    """Fit the image compute efficiency to the image rows at `path` (None: the packaged MLPerf
    SDXL rows, `data/validation/images.csv`) and predict every row with it; the cross-validated
    predictions refit without the row (and without its system)."""
    cat = catalog or load_catalog()
    rows = load_image_measurements(path, cat)
    fit = ImageEfficiencyFit(catalog=cat).fit(rows)
    out = []
    for i, m in enumerate(rows):
        _, t, why = predict_image_row(m, fit.efficiency_, cat)
        out.append(
            ImageRowResult(
                id=m.id, system=m.system, hardware=m.hardware, n_devices=m.n_devices,
                image_model=m.image_model, scenario=m.scenario, round=m.round,
                measured=m.value, predicted=fit.predicted_[i],
                loo_predicted=fit.loo_predicted_[i], loso_predicted=fit.loso_predicted_[i],
                batch=t.batch, bound=t.bound, batch_limit=why, recalled=m.recalled,
            )
        )
    name = IMAGE_MEASUREMENTS if path is None else Path(path).name
    return ImageValidation(
        data=name, rows=tuple(out), compute_efficiency=fit.compute_, mape=fit.mape_,
        loo_mape=fit.loo_mape_, loso_mape=fit.loso_mape_, efficiency_source=fit.efficiency_.source,
    )
