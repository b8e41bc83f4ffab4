"""Image generation for fleets: how many images per second one system makes, at what latency,
power and energy per image, so a fleet can spend its megawatts on images as well as tokens.

    cap = image_capacity("dgx-h100", "sdxl", dtype="fp8", latency_limit_s=10.0)
    cap.images_per_s        # per system, at the best batch within the latency limit
    cap.latency_s           # seconds per image at that batch (its batch's time)
    cap.batch, cap.binding  # images per device batch; compute / memory / overhead
    cap.batch_limit         # what stopped a larger batch
    cap.power_w, cap.joules_per_image   # IT power of the system at that load, J per image

Every device of the system holds the whole pipeline and serves its own batches (data parallel,
as MLPerf's SDXL submissions run); the time per batch comes from `megawatt.perf.image` with the
efficiency fitted to published MLPerf SDXL rows (`megawatt validate` prints the fit and its
leave-one-out error); power from the system's power curve (`megawatt.fleet.power`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from megawatt.errors import CatalogError, InputError
from megawatt.fleet.economics import Economics, annual_cost
from megawatt.fleet.power import PowerModel, power_model
from megawatt.hardware import Catalog, System, load_catalog
from megawatt.model.image import ImageModel, check_dtype, load_image_model
from megawatt.perf.image import ImageEfficiency, ImageTime, best_image_batch, fitted_image_efficiency
from megawatt.units import SECONDS_PER_DAY

__all__ = ["ImageCapacity", "ImageFleet", "image_capacity", "image_fleet"]


@dataclass(frozen=True)
class ImageCapacity:
    """What one system delivers for one image model at its best batch.

    images_per_s:      images per second of the whole system (devices x per-device rate) at
                       capacity.
    latency_s:         seconds per image at that batch: from its batch's start to its image
                       decoded (every image of a batch ends together; queueing not included).
    batch:             images per batch on each device.
    binding:           what bounds the batch time: `compute`, `memory` (bandwidth) or
                       `overhead` (per-step fixed costs).
    batch_limit:       what stopped a larger batch: `latency limit`, `memory capacity`,
                       `batch cap` or `throughput flat` (a larger batch buys < 1% more).
    load_share:        the load the power is given at, as a share of `images_per_s`.
    power_w:           IT power of the system at that load, W.
    joules_per_image:  IT energy per image at that load, J (power_w / (images_per_s x
                       load_share)).
    time:              the per-device batch breakdown (`megawatt.perf.image.ImageTime`).
    efficiency_source, power_source: where the efficiency and the power curve come from.
    """

    system: str
    image_model: str
    dtype: str
    steps: int
    n_devices: int
    images_per_s: float
    latency_s: float
    batch: int
    binding: str
    batch_limit: str
    load_share: float
    power_w: float
    joules_per_image: float
    time: ImageTime
    efficiency_source: str
    power_source: str


def image_capacity(
    system: System | str,
    image_model: ImageModel | str,
    *,
    dtype: str = "bf16",
    latency_limit_s: float | None = None,
    steps: int | None = None,
    load_share: float = 1.0,
    catalog: Catalog | None = None,
    efficiency: ImageEfficiency | None = None,
    power: PowerModel | None = None,
) -> ImageCapacity:
    """Images/s of one `system` (a catalog System or its id) for `image_model` (an id such as
    `sdxl`, `flux.1-dev`, `flux.1-schnell`, or an ImageModel): the denoiser in `dtype` (bf16,
    fp16, fp8, fp4), `steps` denoising steps (default: the model's), the best batch per device
    whose time is within `latency_limit_s` (None: no limit), and the system's IT power and
    energy per image at `load_share` of that capacity (0 < load_share <= 1).

    Defaults: the packaged catalog, the fitted image efficiency, the `fitted` power model.
    Raises InputError for an unknown system or model, a bad dtype, steps or limit, FitError when
    the weights do not fit on one device."""
    cat = catalog or load_catalog()
    if isinstance(system, str):
        try:
            sys_ = cat.system(system)
        except CatalogError as exc:  # an unknown id is a bad input here
            raise InputError(f"system: {exc}") from None
    else:
        sys_ = system
    spec = load_image_model(image_model)
    check_dtype(dtype)
    if isinstance(load_share, bool) or not (
        isinstance(load_share, int | float) and 0 < load_share <= 1
    ):
        raise InputError(
            f"load_share must be a number in (0, 1], the load as a share of capacity; got "
            f"{load_share!r}. Use 1.0 for a system at capacity."
        )
    device = cat.device(sys_.device_id)
    eff = efficiency or fitted_image_efficiency()
    t, why = best_image_batch(
        spec, device, dtype=dtype, steps=steps, efficiency=eff, latency_limit_s=latency_limit_s
    )
    rate = sys_.n_devices * t.images_per_s
    curve = (power or power_model("fitted")).curve(sys_, device)
    watts = curve.power_w(load_share)
    return ImageCapacity(
        system=sys_.id,
        image_model=spec.id,
        dtype=dtype,
        steps=t.steps,
        n_devices=sys_.n_devices,
        images_per_s=rate,
        latency_s=t.batch_s,
        batch=t.batch,
        binding=t.bound,
        batch_limit=why,
        load_share=float(load_share),
        power_w=watts,
        joules_per_image=watts / (rate * load_share) if rate > 0 else math.inf,
        time=t,
        efficiency_source=eff.source,
        power_source=curve.source,
    )


@dataclass(frozen=True)
class ImageFleet:
    """The GPU systems that serve an image demand from the same power budget as the tokens: sized
    for the peak (`images_per_day` x `peak_to_mean` / 86,400 images/s), powered at the mean load.
    `it_peak_w` comes off the budget before the token pools are sized."""

    capacity: ImageCapacity
    images_per_day: float
    peak_to_mean: float
    n_systems: int
    it_peak_w: float
    it_mean_w: float
    usd_per_year: float

    @property
    def usd_per_image(self) -> float:
        return self.usd_per_year / (self.images_per_day * 365.0)


def image_fleet(
    system: System,
    image_model: str,
    *,
    images_per_day: float,
    peak_to_mean: float,
    dtype: str,
    latency_limit_s: float | None,
    economics: Economics,
    pue: float,
) -> ImageFleet:
    """Whole systems of `system` for the peak image rate, their peak and mean IT power (the
    fitted power curve at the mean load share) and yearly cost (`fleet.economics`)."""
    peak = images_per_day * peak_to_mean / SECONDS_PER_DAY
    full = image_capacity(system, image_model, dtype=dtype, latency_limit_s=latency_limit_s)
    n = max(1, math.ceil(peak / full.images_per_s))
    share = images_per_day / SECONDS_PER_DAY / (n * full.images_per_s)
    at_mean = image_capacity(
        system, image_model, dtype=dtype, latency_limit_s=latency_limit_s, load_share=min(share, 1.0)
    )
    it_peak = n * system.power_w
    it_mean = n * at_mean.power_w
    cost = annual_cost(
        economics, n_systems=n, system_price_usd=system.price_usd, it_peak_w=it_peak,
        facility_mean_w=it_mean * pue, pue=pue,
    )
    return ImageFleet(full, images_per_day, peak_to_mean, n, it_peak, it_mean, cost.total)
