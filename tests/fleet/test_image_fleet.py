"""An image fleet sized from one system's capacity: whole systems for the peak image rate (and at
least one), their peak power off the budget, their mean power at the mean load share, and the
year's cost spread over the year's images, each checked against the capacity it is built on."""

from __future__ import annotations

import math

import pytest

from megawatt.fleet import Economics, annual_cost, image_capacity
from megawatt.fleet.image import image_fleet
from megawatt.fleet.power import power_curve
from megawatt.hardware import load_catalog
from megawatt.units import SECONDS_PER_DAY

CATALOG = load_catalog()
H200 = CATALOG.system("hgx-h200")
CAPACITY = image_capacity(H200, "sdxl", dtype="fp8")


def fleet(images_per_day: float, peak_to_mean: float = 2.0, **options: object):  # type: ignore[no-untyped-def]
    settings: dict[str, object] = {"dtype": "fp8", "latency_limit_s": None, "economics": Economics(),
                                    "pue": 1.2}
    settings.update(options)
    return image_fleet(H200, "sdxl", images_per_day=images_per_day, peak_to_mean=peak_to_mean,
                       **settings)  # type: ignore[arg-type]


def test_the_fleet_has_the_whole_systems_the_peak_needs() -> None:
    day = 4e6
    f = fleet(day)
    peak = day * 2.0 / SECONDS_PER_DAY
    assert f.n_systems == math.ceil(peak / CAPACITY.images_per_s)
    assert (f.n_systems - 1) * CAPACITY.images_per_s < peak <= f.n_systems * CAPACITY.images_per_s
    assert f.capacity == CAPACITY


def test_a_trickle_of_images_still_buys_one_system() -> None:
    f = fleet(10.0)
    assert f.n_systems == 1 and f.it_peak_w == H200.power_w


def test_peak_power_is_the_systems_maximum_and_mean_power_its_curve_at_the_mean_share() -> None:
    f = fleet(4e6)
    assert f.it_peak_w == pytest.approx(f.n_systems * H200.power_w)
    share = 4e6 / SECONDS_PER_DAY / (f.n_systems * CAPACITY.images_per_s)
    curve = power_curve(H200, CATALOG.device(H200.device_id))
    assert f.it_mean_w == pytest.approx(f.n_systems * curve.power_w(share))
    assert f.n_systems * curve.idle_w <= f.it_mean_w <= f.it_peak_w


def test_the_year_costs_the_systems_and_their_mean_power_and_each_image_its_share() -> None:
    f = fleet(4e6)
    cost = annual_cost(Economics(), n_systems=f.n_systems, system_price_usd=H200.price_usd,
                       it_peak_w=f.it_peak_w, facility_mean_w=f.it_mean_w * 1.2, pue=1.2)
    assert f.usd_per_year == pytest.approx(cost.total)
    assert f.usd_per_image == pytest.approx(cost.total / (4e6 * 365))


def test_a_higher_peak_buys_more_systems_for_the_same_images() -> None:
    flat, peaky = fleet(4e6, peak_to_mean=1.0), fleet(4e6, peak_to_mean=3.0)
    assert peaky.n_systems >= flat.n_systems
    assert peaky.usd_per_image >= flat.usd_per_image


def test_each_image_costs_less_as_more_images_fill_the_systems() -> None:
    """Cost per image falls as the systems bought fill up: fixed costs spread over more images."""
    per_image = [fleet(d).usd_per_image for d in (1e5, 1e6, 1e7)]
    assert per_image == sorted(per_image, reverse=True)


def test_a_latency_limit_can_only_lower_a_systems_rate_and_so_add_systems() -> None:
    tight = image_capacity(H200, "sdxl", dtype="fp8", latency_limit_s=CAPACITY.latency_s / 3)
    assert tight.images_per_s <= CAPACITY.images_per_s
    limited = fleet(4e6, latency_limit_s=CAPACITY.latency_s / 3)
    assert limited.n_systems >= fleet(4e6).n_systems
    assert limited.capacity.latency_s <= CAPACITY.latency_s / 3


def test_a_contract_prices_the_fleets_provisioned_facility() -> None:
    f = fleet(4e6, economics=Economics(contract_usd_per_mw_year=9e6))
    assert f.usd_per_year == pytest.approx(9e6 * f.it_peak_w * 1.2 / 1e6)


def test_energy_per_image_falls_as_the_load_share_rises() -> None:
    """Idle power is spread over fewer images at a lower load: joules per image rise."""
    shares = [0.25, 0.5, 1.0]
    joules = [image_capacity(H200, "sdxl", dtype="fp8", load_share=u).joules_per_image for u in shares]
    assert joules == sorted(joules, reverse=True)
    rate = CAPACITY.images_per_s
    for u, j in zip(shares, joules, strict=True):
        watts = power_curve(H200, CATALOG.device(H200.device_id)).power_w(u)
        assert j == pytest.approx(watts / (rate * u))
