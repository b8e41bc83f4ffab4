"""The diurnal rate by hand: its peak at the peak hour and trough twelve hours away in the stated
ratio, a daily mean equal to the rate given, the clock hour it starts at, compound monthly
growth; and draws that follow it hour by hour, start where asked and never run back."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megawatt.errors import InputError
from megawatt.workload import Diurnal

MONTH_S = 30.4375 * 86_400


@pytest.mark.parametrize("ratio", [1.0, 2.0, 3.0, 10.0])
def test_the_peak_over_the_trough_is_the_stated_ratio(ratio: float) -> None:
    d = Diurnal(2.0, peak_to_trough=ratio, peak_hour=14.0)
    peak, trough = d.rate_at(14 * 3600.0), d.rate_at(2 * 3600.0)
    assert peak / trough == pytest.approx(ratio)
    a = (ratio - 1) / (ratio + 1)
    assert (peak, trough) == (pytest.approx(2.0 * (1 + a)), pytest.approx(2.0 * (1 - a)))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(rate=st.floats(0.01, 1e4), ratio=st.floats(1.0, 50.0), peak_hour=st.floats(0.0, 24.0),
       start_hour=st.floats(0.0, 24.0))
def test_a_day_averages_the_rate_given_wherever_it_peaks_and_starts(
    rate: float, ratio: float, peak_hour: float, start_hour: float
) -> None:
    d = Diurnal(rate, peak_to_trough=ratio, peak_hour=peak_hour, start_hour=start_hour)
    t = (np.arange(24 * 60) + 0.5) * 60.0  # minute midpoints of one day
    assert float(d.rate_at(t).mean()) == pytest.approx(rate, rel=1e-9)
    assert float(d.rate_at(t).max()) <= rate * (1 + (ratio - 1) / (ratio + 1)) * (1 + 1e-12)


def test_the_start_hour_sets_the_clock_at_time_zero() -> None:
    at_noon = Diurnal(1.0, peak_to_trough=3.0, peak_hour=14.0, start_hour=12.0)
    at_midnight = Diurnal(1.0, peak_to_trough=3.0, peak_hour=14.0, start_hour=0.0)
    assert at_noon.rate_at(2 * 3600.0) == pytest.approx(at_midnight.rate_at(14 * 3600.0))
    assert float(at_noon.rate_at(2 * 3600.0)) == pytest.approx(1.5)  # the peak, two hours in


def test_growth_compounds_month_by_month_on_the_daily_shape() -> None:
    d = Diurnal(1.0, peak_to_trough=2.0, peak_hour=0.0, monthly_growth=0.1)
    for months in (1, 2, 6):
        t = months * MONTH_S
        flat = Diurnal(1.0, peak_to_trough=2.0, peak_hour=0.0).rate_at(t)
        assert d.rate_at(t) == pytest.approx(flat * 1.1**months)


def test_shrinking_demand_is_allowed_down_to_minus_half_a_month() -> None:
    d = Diurnal(1.0, peak_to_trough=1.0, monthly_growth=-0.25)
    assert d.rate_at(MONTH_S) == pytest.approx(0.75)
    with pytest.raises(InputError, match=r"monthly_growth must be a fraction per month in \(-0\.5, 10\)"):
        Diurnal(1.0, monthly_growth=-0.5)


@pytest.mark.parametrize("bad", [0.99, 1e6, "2"])
def test_a_ratio_below_one_or_absurd_is_refused_with_the_usual_values(bad: object) -> None:
    with pytest.raises(InputError, match=r"peak_to_trough must be a number >= 1; got .*Use 1 for a flat day"):
        Diurnal(1.0, peak_to_trough=bad)  # type: ignore[arg-type]


def test_draws_follow_the_rate_hour_by_hour() -> None:
    """Four days at a mean of one request a second: each hour's count is Poisson with the
    integral of the rate over that hour."""
    d = Diurnal(1.0, peak_to_trough=4.0, peak_hour=18.0)
    times = d.sample(np.random.default_rng(5), 400_000)
    days = int(times[-1] // 86_400)
    times = times[times < days * 86_400]
    counts = np.bincount((times // 3600).astype(int) % 24, minlength=24)
    edges = np.arange(24) * 3600.0
    minutes = edges[:, None] + (np.arange(60) + 0.5)[None, :] * 60.0
    expected = d.rate_at(minutes).mean(axis=1) * 3600.0 * days
    assert np.all(np.abs(counts - expected) < 6 * np.sqrt(expected))


def test_draws_start_after_the_start_and_never_run_back() -> None:
    d = Diurnal(3.0, peak_to_trough=2.0)
    times = d.sample(np.random.default_rng(0), 5000, start_s=7200.0)
    assert times[0] > 7200.0 and np.all(np.diff(times) >= 0) and times.size == 5000


def test_the_rate_clock_starts_at_zero_not_at_the_start() -> None:
    """Drawn from hour 2 on a day peaking at hour 2, the first hour is the busiest one."""
    d = Diurnal(1.0, peak_to_trough=9.0, peak_hour=2.0)
    late = d.sample(np.random.default_rng(1), 20_000, start_s=2 * 3600.0)
    in_first_hour = int(np.sum(late < 3 * 3600.0))
    expected = float(np.mean(d.rate_at(2 * 3600.0 + np.arange(3600.0)))) * 3600.0
    assert abs(in_first_hour - expected) < 6 * math.sqrt(expected)
