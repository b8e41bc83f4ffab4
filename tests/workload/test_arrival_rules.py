"""Arrival processes by their documented rules: the diurnal rate formula at hand-picked hours,
arrivals that start after `start_s` and never run back, the argument checks with their
messages, and request tables whose time shifts, subsets and merges round-trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megawatt.errors import InputError
from megawatt.units import SECONDS_PER_DAY
from megawatt.workload import Requests
from megawatt.workload.arrivals import AllAtOnce, Diurnal, Gamma, Poisson, arrival_process

PROPERTY = settings(max_examples=40, deadline=None)
MONTH_S = 30.4375 * SECONDS_PER_DAY


# -- the diurnal rate -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hours_after_start", "factor"),
    [(14.0, 1.5), (2.0, 0.5), (8.0, 1.0), (20.0, 1.0), (38.0, 1.5)],
)
def test_the_diurnal_rate_swings_peak_to_trough_around_the_mean(
    hours_after_start: float, factor: float
) -> None:
    """3:1 peak to trough: a = (3 - 1) / (3 + 1) = 0.5, so 10/s is 15/s at the 14:00 peak,
    5/s at 02:00 and the mean 10/s six hours either side."""
    d = Diurnal(rate_per_s=10.0, peak_to_trough=3.0, peak_hour=14.0)
    assert float(d.rate_at(hours_after_start * 3600.0)) == pytest.approx(10.0 * factor, rel=1e-12)


def test_the_start_hour_sets_the_clock_at_time_zero() -> None:
    d = Diurnal(rate_per_s=4.0, peak_to_trough=3.0, peak_hour=14.0, start_hour=14.0)
    assert float(d.rate_at(0.0)) == pytest.approx(6.0)
    assert float(d.rate_at(12 * 3600.0)) == pytest.approx(2.0)


def test_monthly_growth_compounds_per_month() -> None:
    """+10% a month: after two months (at the same clock hour, 60.875 days) 1.21 times."""
    flat = Diurnal(rate_per_s=1.0, peak_to_trough=1.0, monthly_growth=0.1)
    assert float(flat.rate_at(0.0)) == 1.0
    assert float(flat.rate_at(MONTH_S)) == pytest.approx(1.1, rel=1e-12)
    assert float(flat.rate_at(2 * MONTH_S)) == pytest.approx(1.21, rel=1e-12)


@PROPERTY
@given(st.floats(1.0, 50.0), st.floats(0.0, 23.0), st.floats(0.0, 2 * SECONDS_PER_DAY))
def test_the_diurnal_rate_stays_between_trough_and_peak(
    ratio: float, peak_hour: float, t: float
) -> None:
    d = Diurnal(rate_per_s=2.0, peak_to_trough=ratio, peak_hour=peak_hour)
    a = (ratio - 1) / (ratio + 1)
    rate = float(d.rate_at(t))
    assert 2.0 * (1 - a) * (1 - 1e-12) <= rate <= 2.0 * (1 + a) * (1 + 1e-12)


def test_a_day_of_the_rate_averages_the_mean() -> None:
    d = Diurnal(rate_per_s=7.0, peak_to_trough=4.0, peak_hour=9.0)
    t = np.linspace(0.0, SECONDS_PER_DAY, 24 * 60, endpoint=False)
    assert float(d.rate_at(t).mean()) == pytest.approx(7.0, rel=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"peak_to_trough": 0.5}, "Diurnal.peak_to_trough must be a number >= 1; got 0.5"),
        ({"monthly_growth": -0.5}, r"Diurnal.monthly_growth must be a fraction per month in "
                                   r"\(-0.5, 10\); got -0.5"),
        ({"monthly_growth": 10}, "monthly_growth must be a fraction per month"),
    ],
)
def test_an_impossible_day_names_the_field(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(InputError, match=message):
        Diurnal(rate_per_s=1.0, **kwargs)


# -- samples ------------------------------------------------------------------------------------

PROCESSES = [
    Poisson(5.0), Gamma(5.0, 0.5), Gamma(5.0, 3.0), Diurnal(5.0, peak_to_trough=4.0),
    Diurnal(5.0, monthly_growth=0.5),
]


@pytest.mark.parametrize("process", PROCESSES, ids=repr)
def test_arrivals_come_after_the_start_in_order(process: Poisson | Gamma | Diurnal) -> None:
    times = process.sample(np.random.default_rng(11), 3_000, start_s=100.0)
    assert times.shape == (3_000,)
    assert (times > 100.0).all()
    assert (np.diff(times) >= 0).all()


@pytest.mark.parametrize("process", [Poisson(5.0), Gamma(5.0, 2.0), AllAtOnce()], ids=repr)
def test_no_arrivals_is_an_empty_array(process: Poisson | Gamma | AllAtOnce) -> None:
    assert process.sample(np.random.default_rng(0), 0).shape == (0,)


def test_a_diurnal_day_of_no_arrivals_is_an_empty_array() -> None:
    assert Diurnal(5.0).sample(np.random.default_rng(0), 0).shape == (0,)


def test_poisson_arrivals_from_a_later_start_are_shifted_by_it() -> None:
    """The first arrival is one gap after the start: the same draws moved by the start."""
    a = Poisson(3.0).sample(np.random.default_rng(5), 50)
    b = Poisson(3.0).sample(np.random.default_rng(5), 50, start_s=1_000.0)
    np.testing.assert_allclose(b - 1_000.0, a, rtol=0, atol=1e-9)


def test_a_flat_diurnal_day_keeps_every_candidate() -> None:
    """With no swing and no growth the thinning keeps every candidate: n arrivals at the mean
    rate (a loose check: 20,000 gaps of mean 0.5 s)."""
    times = Diurnal(2.0, peak_to_trough=1.0).sample(np.random.default_rng(9), 20_000)
    assert times[-1] / 20_000 == pytest.approx(0.5, rel=0.03)


def test_all_at_once_does_not_advance_the_generator() -> None:
    rng = np.random.default_rng(4)
    AllAtOnce().sample(rng, 10, start_s=3.0)
    assert rng.random() == np.random.default_rng(4).random()
    assert AllAtOnce().rate_per_s == math.inf


@pytest.mark.parametrize(
    ("n", "start", "message"),
    [
        (-1, 0.0, "sample: n must be a whole number >= 0; got -1"),
        (True, 0.0, "sample: n must be a whole number >= 0; got True"),
        (2.5, 0.0, "sample: n must be a whole number >= 0; got 2.5"),
        (3, math.inf, "sample: start_s must be finite; got inf"),
    ],
)
def test_a_bad_sample_request_names_the_argument(n: object, start: float, message: str) -> None:
    for process in (Poisson(1.0), AllAtOnce()):
        with pytest.raises(InputError, match=message):
            process.sample(np.random.default_rng(0), n, start)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Poisson(0.0), "Poisson.rate_per_s must be a finite number > 0; got 0.0"),
        (lambda: Poisson("fast"), "Poisson.rate_per_s must be a number > 0; got 'fast'"),
        (lambda: Gamma(1.0, 0.0), "Gamma.cv must be a finite number > 0; got 0.0"),
        (lambda: Gamma(1.0, "x"), "Gamma.cv must be a number > 0; got 'x'"),
        (lambda: Gamma(math.nan, 1.0), "Gamma.rate_per_s must be a finite number > 0; got nan"),
    ],
)
def test_impossible_rates_name_the_process_and_value(make: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        make()  # type: ignore[operator]


def test_the_registry_refuses_what_is_not_a_mapping() -> None:
    with pytest.raises(InputError, match="an arrival spec must be a mapping with a 'kind'"):
        arrival_process("poisson")  # type: ignore[arg-type]


def test_all_at_once_takes_no_keys() -> None:
    with pytest.raises(InputError, match=r"kind 'all_at_once' takes no other keys; got unknown "
                       r"\['rate_per_s'\]"):
        arrival_process({"kind": "all_at_once", "rate_per_s": 3})


def test_gamma_needs_its_cv() -> None:
    with pytest.raises(InputError, match=r"arrival spec kind 'gamma' needs keys cv; got "
                       r"\['rate_per_s'\]"):
        arrival_process({"kind": "gamma", "rate_per_s": 3})


# -- request tables round-trip ------------------------------------------------------------------

tables = st.lists(
    st.tuples(st.integers(0, 1_000), st.integers(1, 5_000), st.integers(1, 500), st.integers(0, 2)),
    max_size=30,
).map(
    lambda rows: Requests(
        arrival_s=np.array(sorted(r[0] for r in rows), dtype=np.float64) / 4.0,
        prompt_tokens=np.array([r[1] for r in rows], dtype=np.int64),
        output_tokens=np.array([r[2] for r in rows], dtype=np.int64),
        cached_tokens=np.zeros(len(rows), dtype=np.int64),
        class_id=np.array([r[3] for r in rows], dtype=np.int64),
        class_names=("a", "b", "c"),
    )
)


def rows(r: Requests) -> list[tuple[float, int, int, int, str]]:
    return sorted(
        (float(a), int(p), int(o), int(c), r.class_names[k])
        for a, p, o, c, k in zip(r.arrival_s, r.prompt_tokens, r.output_tokens, r.cached_tokens,
                                 r.class_id, strict=True)
    )


@PROPERTY
@given(tables, st.integers(-1_000, 1_000).map(lambda k: k / 8.0))
def test_shifting_there_and_back_is_the_same_table(r: Requests, dt: float) -> None:
    back = r.shifted(dt).shifted(-dt)
    np.testing.assert_array_equal(back.arrival_s, r.arrival_s)
    assert rows(back) == rows(r)
    assert r.shifted(dt).duration_s == r.duration_s


@PROPERTY
@given(tables)
def test_splitting_by_class_and_merging_loses_nothing(r: Requests) -> None:
    parts = [r.subset(r.class_id == k) for k in range(3)]
    assert sum(len(p) for p in parts) == len(r)
    merged = Requests.concat(parts)
    assert rows(merged) == rows(r)
    assert (np.diff(merged.arrival_s) >= 0).all()


@PROPERTY
@given(tables)
def test_picking_every_row_in_reverse_gives_the_table_back_in_order(r: Requests) -> None:
    picked = r.subset(np.arange(len(r))[::-1].copy())
    np.testing.assert_array_equal(picked.arrival_s, r.arrival_s)
    assert rows(picked) == rows(r)


def test_negative_indices_count_from_the_end() -> None:
    r = Requests(np.array([0.0, 1.0, 2.0]), np.array([1, 2, 3]), np.array([1, 1, 1]),
                 np.zeros(3), np.zeros(3), ("a",))
    assert r.subset(np.array([-1])).prompt_tokens.tolist() == [3]
    with pytest.raises(InputError, match=r"index must lie in \[-3, 3\); got values from -4 to -4"):
        r.subset(np.array([-4]))
    with pytest.raises(InputError, match="takes a boolean mask or a 1-D integer index; got dtype float64"):
        r.subset(np.array([0.0]))


def test_new_arrivals_carry_each_row_with_its_time() -> None:
    r = Requests(np.array([0.0, 1.0, 2.0]), np.array([10, 20, 30]), np.array([1, 2, 3]),
                 np.zeros(3), np.array([0, 1, 0]), ("a", "b"))
    moved = r.with_arrivals([5.0, 0.5, 1.0])
    assert moved.arrival_s.tolist() == [0.5, 1.0, 5.0]
    assert moved.prompt_tokens.tolist() == [20, 30, 10]
    assert moved.output_tokens.tolist() == [2, 3, 1]
    assert moved.class_id.tolist() == [1, 0, 0]
    assert moved.duration_s == 4.5
    with pytest.raises(InputError, match=r"with_arrivals: arrival_s must have shape \(3,\); got \(2,\)"):
        r.with_arrivals([1.0, 2.0])
    with pytest.raises(InputError, match="shifted: dt_s must be finite; got nan"):
        r.shifted(math.nan)
