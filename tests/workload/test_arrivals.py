"""Arrival processes: Poisson, gamma-bursty and offline, and the registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from megawatt.errors import InputError
from megawatt.workload import (
    ARRIVAL_PROCESSES,
    AllAtOnce,
    ArrivalProcess,
    Gamma,
    Poisson,
    arrival_process,
)


def test_poisson_rate_matches_within_statistical_tolerance() -> None:
    times = Poisson(10.0).sample(np.random.default_rng(0), 100_000)
    # relative standard error of the rate is 1/sqrt(n) = 0.3 %; allow 1 % (3 SE)
    assert len(times) / times[-1] == pytest.approx(10.0, rel=0.01)
    gaps = np.diff(times)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.02)


@pytest.mark.parametrize("cv", [0.5, 1.0, 3.0])
def test_gamma_gaps_have_the_requested_cv_and_rate(cv: float) -> None:
    times = Gamma(5.0, cv).sample(np.random.default_rng(1), 400_000)
    gaps = np.diff(times)
    # with 400k gaps the CV estimate's error is under 1.5 % even at cv = 3; allow 5 %
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.05)
    assert len(times) / times[-1] == pytest.approx(5.0, rel=0.03)


def test_all_at_once_puts_everyone_at_the_start() -> None:
    process = AllAtOnce()
    assert process.sample(np.random.default_rng(0), 4, start_s=2.5).tolist() == [2.5] * 4
    assert math.isinf(process.rate_per_s)


@given(
    rate=st.floats(1e-3, 1e4),
    cv=st.floats(0.1, 10),
    n=st.integers(0, 300),
    start_s=st.floats(-1e6, 1e6),
)
def test_arrivals_never_run_back_and_never_start_early(
    rate: float, cv: float, n: int, start_s: float
) -> None:
    process: ArrivalProcess
    for process in (Poisson(rate), Gamma(rate, cv), AllAtOnce()):
        times = process.sample(np.random.default_rng(0), n, start_s)
        assert times.shape == (n,)
        assert (np.diff(times) >= 0).all()
        assert (times >= start_s).all()


def test_same_seed_same_arrivals() -> None:
    first = Gamma(3.0, 2.0).sample(np.random.default_rng(9), 100)
    again = Gamma(3.0, 2.0).sample(np.random.default_rng(9), 100)
    other = Gamma(3.0, 2.0).sample(np.random.default_rng(10), 100)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_the_registry_builds_from_a_spec() -> None:
    assert set(ARRIVAL_PROCESSES) == {"poisson", "gamma", "all_at_once", "diurnal"}
    assert arrival_process({"kind": "poisson", "rate_per_s": 10}) == Poisson(10.0)
    assert arrival_process({"kind": "gamma", "rate_per_s": 2, "cv": 3}) == Gamma(2.0, 3.0)
    assert isinstance(arrival_process({"kind": "all_at_once"}), AllAtOnce)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "weibull"}, "kind must be one of all_at_once, diurnal, gamma, poisson; got 'weibull'"),
        ({"kind": "poisson"}, "needs keys rate_per_s"),
        ({"kind": "poisson", "rate_per_s": 0}, r"Poisson.rate_per_s must be a finite number > 0"),
        ({"kind": "gamma", "rate_per_s": 1, "cv": -1}, "Gamma.cv must be a finite number > 0"),
        ({"kind": "all_at_once", "rate_per_s": 1}, r"unknown \['rate_per_s'\]"),
    ],
)
def test_a_bad_spec_names_the_problem(spec: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        arrival_process(spec)
