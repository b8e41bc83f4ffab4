"""Power against load: every power model gives a sane curve for every system, the prior is the
old linear line, and the fitted curves come from the packaged measurements, bit for bit."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import megawatt
from megawatt.errors import InputError, NotFittedError
from megawatt.fleet.power import (
    IDLE_UTIL_PCT,
    POWER_CSV,
    POWER_CURVES_FILE,
    POWER_MODELS,
    FittedPower,
    LinearPower,
    PowerCurve,
    PowerCurveFitter,
    PowerModel,
    PowerRecord,
    fitted_families,
    load_power_records,
    power_curve,
    power_family,
    power_model,
    power_points,
    power_records_sha256,
)
from megawatt.hardware import load_catalog

CATALOG = load_catalog()
SYSTEMS = list(CATALOG.systems.values())
RECORDS = load_power_records()


@pytest.fixture(scope="module")
def fitter() -> PowerCurveFitter:
    return PowerCurveFitter().fit(RECORDS)


def record(**changes: object) -> PowerRecord:
    """A whole-system MI355X run; `changes` replace its fields."""
    base = PowerRecord("mi355x", "sglang", "deepseek-r1", "fp8", "none", False, "TP8 EP1",
                       "whole system", 8, 1024, 1024, 8, 600.0, None, 800.0, "", "2026-05-27")
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


# --- Every model, every system (conformance) ----------------------------------------------------


@pytest.mark.parametrize("name", sorted(POWER_MODELS))
@pytest.mark.parametrize("system", SYSTEMS, ids=lambda s: s.id)
def test_every_curve_rises_from_a_positive_idle_to_at_most_the_maximum(name: str, system) -> None:
    curve = power_model(name).curve(system, CATALOG.device(system.device_id))
    points = curve.points_w((0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0))
    assert 0 < points[0]
    assert all(a <= b for a, b in itertools.pairwise(points))
    assert points[-1] <= system.power_w
    assert curve.source


@given(u=st.floats(-1.0, 2.0), v=st.floats(-1.0, 2.0))
def test_more_load_never_draws_less_power_and_load_is_clipped(u: float, v: float) -> None:
    curve = power_curve(CATALOG.system("mi355x-8"), CATALOG.device("mi355x"))
    lo, hi = sorted((u, v))
    assert curve.power_w(lo) <= curve.power_w(hi)
    assert curve.idle_w <= curve.power_w(u) <= curve.full_load_w


@pytest.mark.parametrize("name", sorted(POWER_MODELS))
def test_every_registered_model_is_a_power_model_and_power_curve_takes_it(name: str) -> None:
    model = power_model(name)
    assert isinstance(model, PowerModel)
    system = CATALOG.system("mi355x-8")
    device = CATALOG.device("mi355x")
    assert power_curve(system, device, model) == model.curve(system, device)


def test_the_default_power_curve_is_the_fitted_model() -> None:
    system, device = CATALOG.system("mi355x-8"), CATALOG.device("mi355x")
    assert power_curve(system, device) == power_model("fitted").curve(system, device)
    assert not isinstance(object(), PowerModel)


def test_an_unknown_power_model_lists_the_known_ones() -> None:
    with pytest.raises(InputError, match="power model must be one of fitted, linear; got 'cubic'"):
        power_model("cubic")


# --- The prior ----------------------------------------------------------------------------------


@pytest.mark.parametrize("u", [0.0, 0.3, 2 / 3, 1.0])
def test_the_prior_is_the_linear_line_from_idle_to_peak(u: float) -> None:
    s = CATALOG.system("hgx-h200")
    curve = power_curve(s, CATALOG.device("h200-sxm"))
    assert not curve.fitted and curve.exponent == 1.0
    assert curve.power_w(u) == s.idle_power_w + (s.power_w - s.idle_power_w) * u
    assert curve.source.startswith("prior (no power measurements of the gpu/nvidia family)")


@pytest.mark.parametrize("device_id", ["h100-sxm", "b200", "gb300", "tpu-v7", "wse3", "groq-lpu"])
def test_families_without_measurements_keep_the_prior(device_id: str) -> None:
    device = CATALOG.device(device_id)
    for s in CATALOG.systems_for(device_id):
        why = f"no power measurements of the {power_family(device)} family"
        assert power_curve(s, device) == LinearPower(why).curve(s, device)


def test_the_linear_model_ignores_the_fit() -> None:
    s, d = CATALOG.system("mi355x-8"), CATALOG.device("mi355x")
    assert power_model("linear").curve(s, d).full_load_w == s.power_w
    assert power_model("fitted").curve(s, d).full_load_w < s.power_w


# --- The fitted curves ----------------------------------------------------------------------------


@pytest.mark.parametrize("device_id", ["mi300x", "mi325x", "mi355x"])
def test_amd_gpus_use_the_curve_fitted_on_mi355x(device_id: str) -> None:
    fit = fitted_families()["gpu/amd"]
    (s,) = CATALOG.systems_for(device_id)
    curve = power_curve(s, CATALOG.device(device_id))
    assert curve.fitted and fit.hardware == ("mi355x",)
    assert curve.idle_w == pytest.approx(s.power_w * fit.idle_fraction)
    assert curve.full_load_w == pytest.approx(s.power_w * fit.full_load_fraction)
    assert "leave-one-out" in curve.source


def test_mi355x_draws_about_a_fifth_of_tdp_idle_and_under_two_thirds_at_capacity() -> None:
    fit = fitted_families()["gpu/amd"]
    # Idle prefill workers drew 271-293 W of 1,400 W; the busiest runs 720-986 W (README s. 8).
    assert 0.17 < fit.idle_fraction < 0.23
    assert 0.5 < fit.full_load_fraction < 0.72
    assert 0 < fit.exponent < 1  # power rises fastest at low load
    assert fit.loo_mape_pct >= fit.fit_mape_pct
    assert fit.loo_mape_pct < 15 and fit.loco_mape_pct < 15
    assert fit.prior_mape_pct > 2 * fit.loo_mape_pct


def test_the_packaged_curves_file_is_what_calibrate_power_writes(fitter: PowerCurveFitter) -> None:
    document = fitter.document(
        input_name=POWER_CSV, input_sha256=power_records_sha256(), version=megawatt.__version__
    )
    packaged = resources.files("megawatt").joinpath(POWER_CURVES_FILE).read_text("utf-8")
    assert json.dumps(document, indent=1) + "\n" == packaged


def test_a_fit_is_a_pure_function_of_the_records(fitter: PowerCurveFitter) -> None:
    again = PowerCurveFitter().fit(RECORDS)
    assert again.fits_ == fitter.fits_


def test_a_known_curve_is_recovered_from_its_own_points() -> None:
    truth = (0.2, 0.7, 0.5)
    rows = []
    for conc, rate in ((1, 20.0), (4, 100.0), (16, 300.0), (64, 600.0), (256, 1000.0), (512, 1250.0)):
        u = rate / 1250.0
        power = 1400 * (truth[0] + (truth[1] - truth[0]) * u ** truth[2])
        rows.append(record(conc=conc, output_tokens_per_s=rate * 8, power_w_per_gpu=power))
    fit = PowerCurveFitter(catalog=CATALOG).fit(rows).fits_["gpu/amd"]
    assert (fit.idle_fraction, fit.full_load_fraction, fit.exponent) == pytest.approx(truth, rel=1e-4)
    assert fit.fit_mape_pct < 1e-3


def test_too_few_points_leave_a_family_on_its_prior() -> None:
    fitted = PowerCurveFitter(catalog=CATALOG).fit([record(), record(conc=16)])
    assert fitted.fits_ == {} and fitted.unfitted_ == {"gpu/amd": 2}
    document = fitted.document(input_name="x.csv", input_sha256="0", version="0")
    assert document["families"]["gpu/amd"]["status"] == "prior"
    assert FittedPower(fitted.fits_).curve(CATALOG.system("mi355x-8"), CATALOG.device("mi355x")).exponent == 1


def test_an_unfitted_fitter_says_to_fit_first() -> None:
    with pytest.raises(NotFittedError, match="fit"):
        _ = PowerCurveFitter().fits_
    with pytest.raises(NotFittedError, match="fit"):
        PowerCurveFitter().document(input_name="x", input_sha256="0", version="0")


# --- Which points the fit uses ----------------------------------------------------------------------


def test_the_broken_run_is_left_out_with_its_reason() -> None:
    _, excluded = power_points(RECORDS, CATALOG)
    broken = [why for label, why in excluded if "conc 512" in label]
    assert broken == ["broken run (R < 0.3): excluded from the measurement files"]


def test_thirty_runs_and_two_idle_workers_are_fitted() -> None:
    points, excluded = power_points(RECORDS, CATALOG)
    assert sum(not p.idle for p in points) == 30
    idle = [p for p in points if p.idle]
    assert [round(p.power_w_per_gpu) for p in idle] == [293, 271]
    assert all(p.load_share == 0.0 for p in idle)
    assert len(points) + len(excluded) == len(RECORDS)


def test_the_busiest_run_of_each_configuration_has_load_share_one() -> None:
    points, _ = power_points(RECORDS, CATALOG)
    by_config: dict[tuple[str, ...], list[float]] = {}
    for p in points:
        if not p.idle:
            by_config.setdefault(p.configuration, []).append(p.load_share)
    assert len(by_config) == 8
    assert all(max(shares) == 1.0 and min(shares) > 0 for shares in by_config.values())


def test_a_worker_is_idle_only_below_the_utilisation_threshold() -> None:
    busy = record(role="prefill worker 0", util_pct=IDLE_UTIL_PCT + 1, disagg=True)
    quiet = record(role="prefill worker 0", util_pct=IDLE_UTIL_PCT / 2, disagg=True)
    points, excluded = power_points([record(), busy, quiet], CATALOG)
    assert [p.idle for p in points] == [False, True]
    assert "worker" in excluded[0][1]


def test_hardware_without_a_tdp_cannot_be_fitted() -> None:
    with pytest.raises(InputError, match="has no TDP"):
        power_points([record(hardware="tpu-v7")], CATALOG)


# --- Reading the CSV ---------------------------------------------------------------------------------


def test_the_packaged_csv_has_every_published_record() -> None:
    assert len(RECORDS) == 46
    assert sum(r.whole_system for r in RECORDS) == 31
    assert {r.hardware for r in RECORDS} == {"mi355x"}


def test_a_missing_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("hardware,framework\nmi355x,sglang\n")
    with pytest.raises(InputError, match=r"missing columns \['model'"):
        load_power_records(path)


def test_a_bad_number_names_its_line_and_column(tmp_path: Path) -> None:
    text = resources.files("megawatt").joinpath(POWER_CSV).read_text("utf-8").splitlines()
    header, first = text[0], text[1]
    cells = first.split(",")
    cells[header.split(",").index("avg_power_w_per_gpu")] = "lots"
    path = tmp_path / "p.csv"
    path.write_text(header + "\n" + ",".join(cells) + "\n")
    with pytest.raises(InputError, match="line 2: avg_power_w_per_gpu must be a number; got 'lots'"):
        load_power_records(path)


def test_a_curve_is_exactly_its_formula() -> None:
    curve = PowerCurve(100.0, 500.0, 0.5, "test")
    assert curve.power_w(0.25) == pytest.approx(100 + 400 * 0.5)
    assert curve.points_w((0.0, 1.0)) == (100.0, 500.0)
    assert math.isclose(curve.power_w(7.0), 500.0)
