"""Diurnal arrivals: the daily mean, the peak-to-trough swing, monthly growth, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from megawatt.errors import InputError
from megawatt.workload import Diurnal, arrival_process


def _hourly_counts(times: np.ndarray, days: int) -> np.ndarray:
    return np.bincount((times // 3600).astype(int) % 24, minlength=24) / days


def test_a_day_averages_the_mean_rate_and_swings_peak_to_trough() -> None:
    process = Diurnal(rate_per_s=2.0, peak_to_trough=3.0, peak_hour=14.0)
    times = process.sample(np.random.default_rng(1), 2 * 86_400 * 2)
    days = times[-1] / 86_400
    assert len(times) / times[-1] == pytest.approx(2.0, rel=0.03)
    hourly = _hourly_counts(times[times < int(days) * 86_400], int(days))
    assert int(np.argmax(hourly)) in (13, 14, 15)
    assert hourly.max() / hourly.min() == pytest.approx(3.0, rel=0.25)


def test_monthly_growth_raises_the_rate() -> None:
    # A tenth of a request a second: 20 days hold ~200k arrivals (a 0.3% count error, far
    # inside the 2% tolerance) without drawing millions.
    process = Diurnal(rate_per_s=0.1, peak_to_trough=1.0, monthly_growth=1.0)
    month = 30.4375 * 86_400
    assert process.rate_at(month) == pytest.approx(0.2)
    times = process.sample(np.random.default_rng(2), 400_000)
    early, late = np.histogram(times, bins=[0, 10 * 86_400, 20 * 86_400])[0]
    assert late / early == pytest.approx(2.0 ** (10 / 30.4375), rel=0.02)


def test_same_seed_same_times_and_a_flat_day_is_poisson_like() -> None:
    process = Diurnal(rate_per_s=5.0, peak_to_trough=1.0)
    a = process.sample(np.random.default_rng(3), 5000)
    b = process.sample(np.random.default_rng(3), 5000)
    assert np.array_equal(a, b) and np.all(np.diff(a) >= 0)
    gaps = np.diff(a)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.1)


def test_from_a_spec_with_defaults_and_bad_values() -> None:
    process = arrival_process({"kind": "diurnal", "rate_per_s": 3})
    assert isinstance(process, Diurnal) and process.peak_to_trough == 2.0
    with pytest.raises(InputError, match="peak_to_trough"):
        Diurnal(rate_per_s=1.0, peak_to_trough=0.5)
