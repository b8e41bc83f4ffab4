"""Time per image on one device: linear in steps, twice as long when a compute-bound device has
half the peak, memory-bound when compute is free; the best batch meets the latency limit; the
image efficiency fit is deterministic and recovers a known efficiency."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from megawatt.errors import FitError, InputError, NotFittedError
from megawatt.hardware import Device, load_catalog
from megawatt.perf.image import (
    IMAGE_PRIOR,
    ImageEfficiency,
    ImageEfficiencyFit,
    ImageMeasurement,
    best_image_batch,
    fitted_image_efficiency,
    image_time,
    load_image_measurements,
    max_image_batch,
    parse_image_measurements,
    predict_image_row,
)

CATALOG = load_catalog()
H100 = CATALOG.device("h100-sxm")
NO_OVERHEAD = ImageEfficiency(compute=0.3, memory=0.8, step_overhead_s=0.0, source="test")


def scaled(device: Device, factor: float) -> Device:
    peaks = {k: v * factor for k, v in device.peak_flops_per_s.items()}
    return device.model_copy(update={"peak_flops_per_s": peaks})


def test_time_is_linear_in_steps() -> None:
    t = {s: image_time("sdxl", H100, 4, dtype="fp8", steps=s, efficiency=IMAGE_PRIOR) for s in (10, 20, 40)}
    assert t[40].batch_s - t[20].batch_s == pytest.approx(20 * t[20].step_s)
    assert t[20].batch_s - t[10].batch_s == pytest.approx(10 * t[10].step_s)
    assert t[20].text_s == t[40].text_s and t[20].vae_s == t[40].vae_s


def test_a_compute_bound_batch_takes_twice_as_long_at_half_the_peak() -> None:
    full = image_time("sdxl", H100, 8, dtype="fp8", efficiency=NO_OVERHEAD)
    half = image_time("sdxl", scaled(H100, 0.5), 8, dtype="fp8", efficiency=NO_OVERHEAD)
    assert full.bound == "compute" and full.by_bound["memory"] == 0.0
    assert half.batch_s == pytest.approx(2 * full.batch_s, rel=1e-12)
    assert half.images_per_s == pytest.approx(full.images_per_s / 2, rel=1e-12)


def test_with_free_compute_a_step_reads_its_weights() -> None:
    t = image_time("flux.1-dev", scaled(H100, 1e6), 1, dtype="bf16", efficiency=NO_OVERHEAD)
    assert t.bound == "memory"
    weights = 2 * 11.9e9
    assert t.step_memory_s == pytest.approx(weights / (H100.mem_bandwidth_bytes_per_s * 0.8), rel=0.01)


def test_the_best_batch_meets_the_latency_limit() -> None:
    free, why_free = best_image_batch("sdxl", H100, dtype="fp8", efficiency=IMAGE_PRIOR)
    tight, why = best_image_batch(
        "sdxl", H100, dtype="fp8", efficiency=IMAGE_PRIOR, latency_limit_s=free.batch_s / 4
    )
    assert tight.batch_s <= free.batch_s / 4 and tight.batch < free.batch
    assert why == "latency limit" and why_free in ("throughput flat", "memory capacity", "batch cap")
    assert tight.images_per_s < free.images_per_s


def test_the_batch_is_bounded_by_memory() -> None:
    v5e = CATALOG.device("tpu-v5e")  # 16 GB
    assert 1 <= max_image_batch("sdxl", v5e, "bf16") < max_image_batch("sdxl", H100, "bf16")
    with pytest.raises(FitError, match="does not fit on one tpu-v5e"):
        max_image_batch("flux.1-dev", v5e, "bf16")


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"batch": 0}, "batch must be a whole number of images >= 1"),
        ({"batch": 2, "steps": -3}, "steps must be a whole number"),
        ({"batch": 2, "dtype": "fp32"}, "image dtype must be one of"),
        ({"batch": 2, "model": "dalle-3"}, "image_model must be one of"),
        ({"batch": 2, "device": CATALOG.device("wse3")}, "wafer-scale engine"),
    ],
)
def test_bad_inputs_are_one_line_input_errors(kwargs: dict[str, object], needle: str) -> None:
    args: dict[str, object] = {"model": "sdxl", "device": H100, "efficiency": IMAGE_PRIOR, **kwargs}
    with pytest.raises(InputError, match=needle) as err:
        image_time(**args)  # type: ignore[arg-type]
    assert "\n" not in str(err.value)


def test_a_latency_limit_below_one_image_is_an_input_error() -> None:
    with pytest.raises(InputError, match=r"latency_limit_s 0\.1 s is below the time of one sdxl"):
        best_image_batch("sdxl", H100, dtype="fp8", efficiency=IMAGE_PRIOR, latency_limit_s=0.1)
    with pytest.raises(InputError, match="latency_limit_s must be a positive number"):
        best_image_batch("sdxl", H100, efficiency=IMAGE_PRIOR, latency_limit_s=-1.0)


# -- the rows and the fit ----------------------------------------------------------------------


def test_the_packaged_rows_name_catalog_systems_and_say_which_are_recalled() -> None:
    rows = load_image_measurements()
    assert len(rows) >= 6 and len({r.id for r in rows}) == len(rows)
    for r in rows:
        assert CATALOG.system(r.system).device_id == r.hardware
        assert r.source and r.round.startswith("v") and r.metric == "images_per_s"
        assert r.recalled == ("recalled, verify" in r.source)
        assert (r.latency_p99_limit_s is not None) == (r.scenario == "server")


def synthetic(efficiency: float) -> list[ImageMeasurement]:
    """The packaged rows with values the model gives at `efficiency`."""
    eff = replace(IMAGE_PRIOR, compute=efficiency)
    return [
        replace(m, value=predict_image_row(m, eff, CATALOG)[0]) for m in load_image_measurements()
    ]


def test_the_fit_recovers_a_known_efficiency_and_reproduces_itself() -> None:
    fit = ImageEfficiencyFit(catalog=CATALOG).fit(synthetic(0.33))
    assert fit.compute_ == pytest.approx(0.33, rel=1e-4)
    assert fit.mape_ < 1e-4 and fit.loo_mape_ < 1e-4 and fit.loso_mape_ < 1e-4
    rows = load_image_measurements()
    a, b = ImageEfficiencyFit(catalog=CATALOG).fit(rows), ImageEfficiencyFit(catalog=CATALOG).fit(rows)
    assert a.compute_ == b.compute_ == fitted_image_efficiency().compute
    assert a.loo_predicted_ == b.loo_predicted_
    assert 0 < a.mape_ <= a.loo_mape_ < 1 and math.isfinite(a.loso_mape_)
    assert a.predict(rows[0]) == a.predicted_[0]


def test_using_an_unfitted_fit_and_fitting_one_row_are_errors() -> None:
    rows = load_image_measurements()
    with pytest.raises(NotFittedError):
        ImageEfficiencyFit().predict(rows[0])
    with pytest.raises(InputError, match="at least 2 rows"):
        ImageEfficiencyFit().fit(rows[:1])


HEADER = (
    "id,system,hardware,n_devices,image_model,weight_dtype,scenario,latency_p99_limit_s,metric,"
    "value,round,submission,source,date,notes\n"
)


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ("X1,dgx-h999,h100-sxm,8,sdxl,fp8,offline,,images_per_s,13,v4.0,,s,,", "line 2: system"),
        ("X1,dgx-h100,b200,8,sdxl,fp8,offline,,images_per_s,13,v4.0,,s,,", "hardware 'b200'"),
        ("X1,dgx-h100,h100-sxm,0,sdxl,fp8,offline,,images_per_s,13,v4.0,,s,,", "n_devices must be"),
        ("X1,dgx-h100,h100-sxm,8,sdxl,fp8,server,,images_per_s,13,v4.0,,s,,", "needs latency_p99"),
        ("X1,dgx-h100,h100-sxm,8,sdxl,fp8,offline,,images_per_s,-2,v4.0,,s,,", "value must be"),
        ("X1,dgx-h100,h100-sxm,8,sdxx,fp8,offline,,images_per_s,13,v4.0,,s,,", "image_model"),
    ],
)
def test_a_bad_row_names_its_line_and_column(row: str, needle: str) -> None:
    with pytest.raises(InputError, match=needle) as err:
        parse_image_measurements(HEADER + row + "\n", "x.csv", CATALOG)
    assert "\n" not in str(err.value)
