"""Token-length distributions: fixed, lognormal (clipped), empirical, Vidur's zipf, the registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megawatt.errors import InputError
from megawatt.workload import (
    LENGTH_DISTRIBUTIONS,
    Empirical,
    Fixed,
    LengthDistribution,
    Lognormal,
    Uniform,
    Zipf,
    length_distribution,
)

EXAMPLES: list[LengthDistribution] = [
    Fixed(7),
    Lognormal(1000, 1.0, max_tokens=32768),
    Empirical(np.array([1, 5, 9])),
    Zipf.vidur_prompt(),
    Uniform.of_range_ratio(1024, 0.8),
]


@pytest.mark.parametrize("distribution", EXAMPLES, ids=lambda d: type(d).__name__)
def test_every_distribution_draws_whole_tokens_of_at_least_one(
    distribution: LengthDistribution,
) -> None:
    draws = distribution.sample(np.random.default_rng(0), 1000)
    assert draws.dtype == np.int64
    assert draws.shape == (1000,)
    assert (draws >= 1).all()
    assert distribution.sample(np.random.default_rng(0), 0).shape == (0,)


@pytest.mark.parametrize("distribution", EXAMPLES, ids=lambda d: type(d).__name__)
def test_same_seed_same_draws_different_seed_different_draws(
    distribution: LengthDistribution,
) -> None:
    first = distribution.sample(np.random.default_rng(42), 500)
    again = distribution.sample(np.random.default_rng(42), 500)
    other = distribution.sample(np.random.default_rng(43), 500)
    assert np.array_equal(first, again)
    if not isinstance(distribution, Fixed):
        assert not np.array_equal(first, other)


@pytest.mark.parametrize("distribution", EXAMPLES, ids=lambda d: type(d).__name__)
def test_the_stated_mean_matches_a_large_sample(distribution: LengthDistribution) -> None:
    draws = distribution.sample(np.random.default_rng(1), 400_000)
    # 1 % covers > 4 standard errors for these shapes at this sample size
    assert draws.mean() == pytest.approx(distribution.mean, rel=0.01)


def test_lognormal_median_is_the_median_and_clipping_piles_up_at_the_bounds() -> None:
    rng = np.random.default_rng(3)
    free = Lognormal(1000, 1.0).sample(rng, 200_000)
    assert np.median(free) == pytest.approx(1000, rel=0.02)
    clipped = Lognormal(1000, 1.0, min_tokens=500, max_tokens=2000).sample(rng, 200_000)
    assert clipped.min() == 500 and clipped.max() == 2000
    # clipped, not truncated: P(X > 2000) = 1 - Phi(ln 2 / 1) = 24.4 % of draws sit at the cap
    assert (clipped == 2000).mean() == pytest.approx(0.244, abs=0.005)


def test_lognormal_mean_is_the_closed_form_when_nothing_is_clipped() -> None:
    assert Lognormal(1000, 1.0).mean == pytest.approx(1000 * math.exp(0.5), rel=1e-9)
    assert Lognormal(50, 0.0, min_tokens=60).mean == 60


@given(
    median=st.floats(1, 1e5),
    sigma=st.floats(0, 3),
    cap=st.integers(1, 10**6),
)
@settings(max_examples=50)
def test_lognormal_draws_stay_within_the_bounds(median: float, sigma: float, cap: int) -> None:
    distribution = Lognormal(median, sigma, max_tokens=cap)
    draws = distribution.sample(np.random.default_rng(0), 200)
    assert draws.min() >= 1 and draws.max() <= cap
    assert 1 <= distribution.mean <= cap


def test_empirical_resamples_only_the_given_values() -> None:
    distribution = Empirical(np.array([3, 3, 10]))
    draws = distribution.sample(np.random.default_rng(0), 10_000)
    assert set(draws.tolist()) == {3, 10}
    assert distribution.mean == pytest.approx(16 / 3)
    assert (draws == 10).mean() == pytest.approx(1 / 3, abs=0.02)


def vidur_next(u: float, zipf: Zipf) -> int:
    """Vidur 0.0.26 ZipfGenerator._next, transcribed line by line for one uniform draw."""
    items = zipf.max_tokens - zipf.min_tokens + 1
    zeta_2 = float(np.sum(1 / np.power(np.arange(1, 2), zipf.theta)))
    alpha = 1.0 / (1.0 - zipf.theta)
    zetan = float(np.sum(1 / np.power(np.arange(1, items), zipf.theta)))
    eta = (1 - np.power(2.0 / items, 1 - zipf.theta)) / (1 - zeta_2 / (zetan + 1e-8))
    uz = u * zetan
    if uz < 1.0:
        return zipf.min_tokens
    if uz < 1.0 + np.power(0.5, zipf.theta):
        return zipf.min_tokens + 1
    return zipf.min_tokens + int(items * np.power(eta * u - eta + 1, alpha))


def test_zipf_reproduces_vidurs_generator_draw_for_draw() -> None:
    zipf = Zipf()  # Vidur defaults: 1024..4096, theta 0.6, total length
    ours = zipf.sample(np.random.default_rng(5), 2000)
    uniforms = np.random.default_rng(5).random(2000)
    theirs = [vidur_next(float(u), zipf) for u in uniforms]
    assert ours.tolist() == theirs
    prompt = Zipf.vidur_prompt().sample(np.random.default_rng(5), 2000)
    output = Zipf.vidur_output().sample(np.random.default_rng(5), 2000)
    assert prompt.tolist() == [int(t - t / 21) for t in theirs]
    assert output.tolist() == [int(t / 21) for t in theirs]


def test_zipf_vidur_benchmark_means() -> None:
    # Vidur's benchmark workload: "zipf lengths up to 4,096 tokens (mean about 1,824 in / 91
    # out)". The sampler's exact means are 1,842.7 / 91.7; "about" is taken as within 2 %.
    assert Zipf.vidur_prompt().mean == pytest.approx(1824, rel=0.02)
    assert Zipf.vidur_output().mean == pytest.approx(91, rel=0.02)
    draws = Zipf().sample(np.random.default_rng(0), 10_000)
    assert draws.min() >= 1024 and draws.max() <= 4096


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Fixed(0), r"Fixed.n_tokens must be a whole number >= 1; got 0"),
        (lambda: Lognormal(-1, 1), r"Lognormal.median must be a finite number > 0"),
        (lambda: Lognormal(10, 1, min_tokens=5, max_tokens=4), "max_tokens must be >= min"),
        (lambda: Empirical(np.array([1, 0])), r"values must be whole numbers >= 1; got 0"),
        (lambda: Empirical(np.array([])), "non-empty"),
        (lambda: Zipf(theta=1.0), r"theta must be in \(0, 1\)"),
        (lambda: Zipf(min_tokens=10, max_tokens=5), "max_tokens must be >= min_tokens"),
        (lambda: Uniform(10, 5), "max_tokens must be >= min_tokens"),
        (lambda: Uniform(0, 5), r"Uniform.min_tokens must be a whole number >= 1; got 0"),
    ],
)
def test_bad_parameters_are_named(make: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        make()  # type: ignore[operator]


def test_the_registry_builds_each_kind_from_a_spec() -> None:
    assert set(LENGTH_DISTRIBUTIONS) == {"fixed", "lognormal", "empirical", "uniform", "zipf"}
    assert length_distribution({"kind": "uniform", "min_tokens": 2, "max_tokens": 4}) == Uniform(2, 4)
    spec = {"kind": "lognormal", "median": 1000, "sigma": 1.0, "max_tokens": 32768}
    assert length_distribution(spec) == Lognormal(1000, 1.0, max_tokens=32768)
    assert length_distribution({"kind": "fixed", "n_tokens": 3}) == Fixed(3)
    assert length_distribution({"kind": "zipf", "part": "decode"}) == Zipf.vidur_output()
    assert length_distribution({"kind": "empirical", "values": [2, 4]}).mean == 3.0
    from_trace = length_distribution(
        {"kind": "empirical", "trace": "azure-conv-2023", "column": "output_tokens"}
    )
    assert from_trace.mean == pytest.approx(211.13, abs=0.01)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "gaussian"}, "kind must be one of empirical, fixed, lognormal, uniform, zipf"),
        ({"kind": "lognormal", "median": 5}, "needs keys sigma"),
        ({"kind": "fixed", "n_tokens": 3, "sigma": 1}, r"unknown \['sigma'\]"),
        ({"kind": "lognormal", "median": "big", "sigma": 1}, "median must be a number"),
        ({"kind": "empirical", "trace": "nope", "column": "prompt_tokens"}, "built-in trace"),
        ({"kind": ["lognormal"]}, r"kind must be one of .*; got \['lognormal'\]"),
        ({"kind": "lognormal", "median": 5, "sigma": 1e30}, "sigma must be at most 20"),
        ({"kind": "empirical", "trace": ["azure-conv-2023"], "column": "x"}, "built-in trace"),
        ({"kind": "empirical", "trace": "azure-conv-2023", "column": {}}, "column must be one of"),
    ],
)
def test_a_bad_spec_says_what_is_known(spec: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        length_distribution(spec)


@pytest.mark.parametrize(
    ("min_tokens", "max_tokens", "theta", "part"),
    [
        (1, 3, 0.5, "total"),
        (1, 10, 0.99, "prefill"),
        (5, 1000, 0.9, "decode"),
        (100, 10**5, 0.3, "total"),
    ],
)
def test_zipf_exact_mean_holds_for_odd_ranges(
    min_tokens: int, max_tokens: int, theta: float, part: str
) -> None:
    zipf = Zipf(min_tokens, max_tokens, theta, part)  # type: ignore[arg-type]
    draws = zipf.sample(np.random.default_rng(11), 200_000)
    standard_error = draws.std() / np.sqrt(len(draws))
    assert abs(draws.mean() - zipf.mean) <= 5 * standard_error + 1e-9


def test_uniform_is_the_serving_benchmarks_random_draw() -> None:
    """InferenceX: `--random-range-ratio 0.8`, lengths uniform in [int(0.8 L), L]; the means its
    README states are 921.5 for L = 1024 and 7372.5 for L = 8192."""
    assert Uniform.of_range_ratio(1024, 0.8) == Uniform(819, 1024)
    assert Uniform.of_range_ratio(1024, 0.8).mean == 921.5
    assert Uniform.of_range_ratio(8192, 0.8).mean == 7372.5
    draws = Uniform(819, 1024).sample(np.random.default_rng(0), 20_000)
    assert draws.min() == 819 and draws.max() == 1024
