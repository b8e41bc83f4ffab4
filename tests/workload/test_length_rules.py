"""Length distributions by their stated rules: the clipped lognormal's closed-form mean against a
numerical integral and its limits, the benchmark's uniform range, fixed and empirical draws,
and argument checks that name the class, the field and the value."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megawatt.errors import InputError
from megawatt.workload.lengths import Empirical, Fixed, Lognormal, Uniform

PROPERTY = settings(max_examples=40, deadline=None)


def clipped_mean_by_quadrature(median: float, sigma: float, low: float, high: float) -> float:
    """E[clip(X, low, high)] for ln X ~ N(ln median, sigma^2), integrated over a fine grid of
    the standard normal."""
    z = np.linspace(-12.0, 12.0, 400_001)
    density = np.exp(-z * z / 2.0) / math.sqrt(2.0 * math.pi)
    x = np.clip(median * np.exp(sigma * z), low, high)
    return float(np.trapezoid(x * density, z))


# -- the clipped lognormal ----------------------------------------------------------------------


@PROPERTY
@given(
    st.floats(5.0, 5_000.0),
    st.floats(0.05, 2.5),
    st.integers(1, 50),
    st.one_of(st.none(), st.integers(60, 100_000)),
)
def test_the_lognormal_mean_is_the_integral_of_the_clipped_density(
    median: float, sigma: float, low: int, high: int | None
) -> None:
    d = Lognormal(median, sigma, min_tokens=low, max_tokens=high)
    top = float(high) if high is not None else math.inf
    assert d.mean == pytest.approx(clipped_mean_by_quadrature(median, sigma, low, top), rel=1e-6)


def test_without_spread_the_mean_is_the_median_clipped() -> None:
    assert Lognormal(300.0, 0.0).mean == 300.0
    assert Lognormal(300.0, 0.0, min_tokens=500).mean == 500.0
    assert Lognormal(300.0, 0.0, max_tokens=100).mean == 100.0


def test_without_spread_every_draw_is_the_rounded_median() -> None:
    draws = Lognormal(300.4, 0.0).sample(np.random.default_rng(1), 50)
    assert (draws == 300).all()


def test_bounds_that_meet_pin_every_draw_and_the_mean() -> None:
    d = Lognormal(1_000.0, 1.0, min_tokens=64, max_tokens=64)
    assert d.mean == 64.0
    assert (d.sample(np.random.default_rng(2), 100) == 64).all()


def test_without_clipping_the_mean_is_exp_mu_plus_half_sigma_squared() -> None:
    """Bounds far in the tails: the clipped mean is the lognormal's, median x e^(s^2 / 2)."""
    d = Lognormal(1_000.0, 0.5, min_tokens=1)
    assert d.mean == pytest.approx(1_000.0 * math.exp(0.125), rel=1e-9)


@PROPERTY
@given(st.floats(1.0, 1e4), st.floats(0.0, 3.0), st.integers(1, 100), st.integers(100, 10_000))
def test_lognormal_draws_are_whole_and_within_their_bounds(
    median: float, sigma: float, low: int, high: int
) -> None:
    draws = Lognormal(median, sigma, min_tokens=low, max_tokens=high).sample(
        np.random.default_rng(0), 200
    )
    assert draws.dtype == np.int64
    assert draws.min() >= low and draws.max() <= high


@PROPERTY
@given(st.floats(10.0, 1_000.0), st.floats(0.1, 2.0), st.integers(2, 5_000))
def test_a_lower_cap_never_raises_the_mean(median: float, sigma: float, cap: int) -> None:
    assert Lognormal(median, sigma, max_tokens=cap).mean <= Lognormal(median, sigma).mean + 1e-9
    assert (
        Lognormal(median, sigma, max_tokens=cap).mean
        >= Lognormal(median, sigma, max_tokens=cap - 1).mean - 1e-9
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"median": 0.0, "sigma": 1.0}, "Lognormal.median must be a finite number > 0.0; got 0.0"),
        ({"median": 10.0, "sigma": -0.1}, "Lognormal.sigma must be a finite number >= 0.0; got -0.1"),
        ({"median": 10.0, "sigma": 21.0}, "Lognormal.sigma must be at most 20"),
        ({"median": 10.0, "sigma": 1.0, "min_tokens": 0},
         "Lognormal.min_tokens must be a whole number >= 1; got 0"),
        ({"median": 10.0, "sigma": 1.0, "min_tokens": 50, "max_tokens": 10},
         r"Lognormal.max_tokens must be >= min_tokens \(50\); got 10"),
        ({"median": "ten", "sigma": 1.0}, "Lognormal.median must be a number > 0.0; got 'ten'"),
    ],
)
def test_an_impossible_lognormal_names_the_field(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        Lognormal(**kwargs)  # type: ignore[arg-type]


# -- uniform, fixed, empirical --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "ratio", "low"),
    [(1_000, 0.8, 800), (1_024, 0.8, 819), (7, 0.5, 3), (1, 0.5, 1), (5, 0.0, 1), (9, 1.0, 9)],
)
def test_the_benchmark_range_is_int_of_length_times_ratio_to_length(
    length: int, ratio: float, low: int
) -> None:
    u = Uniform.of_range_ratio(length, ratio)
    assert (u.min_tokens, u.max_tokens) == (low, length)
    assert u.mean == (low + length) / 2


def test_uniform_draws_reach_both_ends_and_nothing_outside() -> None:
    draws = Uniform(3, 5).sample(np.random.default_rng(8), 600)
    assert set(draws.tolist()) == {3, 4, 5}


def test_a_reversed_range_is_refused_with_a_way_out() -> None:
    with pytest.raises(
        InputError, match=r"Uniform\.max_tokens must be >= min_tokens \(10\); got 5\. Swap them"
    ):
        Uniform(10, 5)


def test_fixed_lengths_leave_the_generator_alone() -> None:
    rng = np.random.default_rng(6)
    assert Fixed(42).sample(rng, 4).tolist() == [42] * 4
    assert rng.random() == np.random.default_rng(6).random()
    assert Fixed(42.0).mean == 42.0  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"Fixed\.n_tokens must be a whole number >= 1; got 2\.5"):
        Fixed(2.5)  # type: ignore[arg-type]


def test_empirical_draws_only_its_values_with_their_exact_mean() -> None:
    d = Empirical(np.array([10, 20, 20, 50]))
    assert d.mean == 25.0
    draws = d.sample(np.random.default_rng(3), 400)
    assert set(draws.tolist()) == {10, 20, 50}
    assert repr(d) == "Empirical(n_values=4, mean=25.0)"
    with pytest.raises(ValueError, match="read-only"):
        d.values[0] = 1


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.array([]), r"Empirical.values must be a non-empty 1-D list of token counts; got shape \(0,\)"),
        (np.array([[1, 2]]), r"got shape \(1, 2\)"),
        (np.array([True, False]), "Empirical.values must be whole numbers of tokens; got dtype bool"),
        (np.array([3.0, 2.5]), "Empirical.values must be whole numbers >= 1; got 2.5 at index 1"),
        (np.array([3, 0]), "got 0 at index 1"),
    ],
)
def test_bad_empirical_values_name_the_first_bad_one(values: np.ndarray, message: str) -> None:
    with pytest.raises(InputError, match=message):
        Empirical(values)


@pytest.mark.parametrize("n", [-1, 1.5, True])
def test_a_bad_count_is_refused_by_every_distribution(n: object) -> None:
    for d in (Fixed(3), Uniform(1, 2), Lognormal(10.0, 1.0), Empirical(np.array([4]))):
        with pytest.raises(InputError, match=f"sample: n must be a whole number >= 0; got {n!r}"):
            d.sample(np.random.default_rng(0), n)  # type: ignore[arg-type]
