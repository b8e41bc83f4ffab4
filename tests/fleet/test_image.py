"""image_capacity: a system's images/s at its best batch, latency, power and energy per image,
consistent with the per-device breakdown; bad inputs are one-line InputErrors."""

from __future__ import annotations

import pytest

from megawatt.errors import InputError
from megawatt.fleet import image_capacity
from megawatt.fleet.power import power_curve
from megawatt.hardware import load_catalog

CATALOG = load_catalog()


def test_capacity_is_devices_times_the_batch_rate_and_energy_is_power_over_rate() -> None:
    cap = image_capacity("dgx-h100", "sdxl", dtype="fp8")
    assert cap.n_devices == 8 and cap.system == "dgx-h100" and cap.steps == 20
    assert cap.images_per_s == pytest.approx(8 * cap.batch / cap.latency_s)
    system = CATALOG.system("dgx-h100")
    assert cap.power_w == power_curve(system, CATALOG.device("h100-sxm")).power_w(1.0)
    assert cap.joules_per_image == pytest.approx(cap.power_w / cap.images_per_s)
    assert cap.binding == "compute" and cap.batch_limit
    assert "fitted to" in cap.efficiency_source


def test_a_latency_limit_and_a_partial_load() -> None:
    free = image_capacity("dgx-b200", "flux.1-schnell", dtype="fp8")
    tight = image_capacity(
        "dgx-b200", "flux.1-schnell", dtype="fp8", latency_limit_s=free.latency_s / 2,
        load_share=0.5,
    )
    assert tight.latency_s <= free.latency_s / 2 and tight.batch_limit == "latency limit"
    assert tight.power_w < free.power_w
    assert tight.joules_per_image == pytest.approx(tight.power_w / (tight.images_per_s * 0.5))


def test_fewer_steps_make_more_images() -> None:
    a = image_capacity("hgx-h200", "flux.1-dev", dtype="fp8")
    b = image_capacity("hgx-h200", "flux.1-dev", dtype="fp8", steps=25)
    assert b.images_per_s > 1.8 * a.images_per_s


@pytest.mark.parametrize(
    ("args", "kwargs", "needle"),
    [
        (("dgx-h1000", "sdxl"), {}, "system: unknown system id"),
        (("dgx-h100", "midjourney"), {}, "image_model must be one of"),
        (("dgx-h100", "sdxl"), {"load_share": 0.0}, "load_share must be"),
        (("dgx-h100", "sdxl"), {"steps": -1}, "steps must be"),
        (("dgx-h100", "sdxl"), {"dtype": "int3"}, "image dtype"),
    ],
)
def test_bad_inputs_are_one_line_input_errors(
    args: tuple[str, str], kwargs: dict[str, object], needle: str
) -> None:
    with pytest.raises(InputError, match=needle) as err:
        image_capacity(*args, **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(err.value)
