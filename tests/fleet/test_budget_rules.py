"""Budgets and money as rules that hold for any input: whole systems never exceed the IT power
and leave less than a replica's worth unspent; a replica spanning systems buys them in whole
groups; the capital recovery factor falls with the years and rises with the rate between its
limits; yearly cost is linear in its inputs. Errors name the field and the value."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megawatt.errors import InputError
from megawatt.fleet import Economics, PowerBudget, annual_cost, capital_recovery_factor, size_pool
from megawatt.fleet.budget import it_power_for_capex
from megawatt.hardware import load_catalog
from megawatt.units import HOURS_PER_YEAR

CATALOG = load_catalog()
SYSTEMS = ["hgx-h200", "cs-3", "gb200-nvl72", "mi355x-8", "dgx-h100"]
RULES = settings(max_examples=80, deadline=None, derandomize=True)


@RULES
@given(
    it_mw=st.floats(0.05, 2000.0),
    system_id=st.sampled_from(SYSTEMS),
    devices=st.sampled_from([1, 2, 4, 8, 16, 36, 72]),
)
def test_whole_systems_fit_in_the_power_and_leave_less_than_a_replica_unspent(
    it_mw: float, system_id: str, devices: int
) -> None:
    system = CATALOG.system(system_id)
    try:
        size = size_pool(it_mw * 1e6, system, devices, field="f")
    except InputError as error:
        # Only when not one replica fits: its systems cost more than the power given.
        need = math.ceil(devices / system.n_devices) * system.power_w
        assert it_mw * 1e6 < need and "minimum is" in str(error)
        return
    assert size.n_systems * system.power_w <= it_mw * 1e6 * (1 + 1e-12)
    assert size.leftover_w == pytest.approx(it_mw * 1e6 - size.n_systems * system.power_w)
    assert 0 <= size.leftover_w < size.systems_per_replica * system.power_w
    assert size.used_w == pytest.approx(size.n_systems * system.power_w)
    if devices <= system.n_devices:  # several replicas share a system
        assert size.systems_per_replica == 1
        assert size.n_replicas == size.n_systems * (system.n_devices // devices)
    else:  # a replica spans whole systems
        assert size.n_systems % size.systems_per_replica == 0
        assert size.n_replicas == size.n_systems // size.systems_per_replica


def test_a_replica_of_twelve_gpus_takes_two_eight_gpu_systems_and_wastes_four() -> None:
    size = size_pool(1e6, CATALOG.system("hgx-h200"), 12, field="f")  # 1 MW / 10.2 kW = 98 systems
    assert size.systems_per_replica == 2
    assert (size.n_systems, size.n_replicas) == (98, 49)
    odd = size_pool(99 * 10_200.0, CATALOG.system("hgx-h200"), 12, field="f")  # 99 systems: 49 pairs
    assert (odd.n_systems, odd.n_replicas) == (98, 49)
    assert odd.leftover_w == pytest.approx(10_200.0)


def test_a_replica_of_three_gpus_leaves_two_of_eight_idle_in_each_system() -> None:
    size = size_pool(10 * 10_200.0, CATALOG.system("hgx-h200"), 3, field="f")
    assert (size.n_systems, size.n_replicas) == (10, 20)


def test_a_fixed_count_ignores_the_power_given_and_costs_its_own() -> None:
    size = size_pool(1.0, CATALOG.system("cs-3"), 1, field="f", n_systems=7)
    assert size.n_systems == 7 and size.it_w == pytest.approx(7 * 23_000.0) and size.leftover_w == 0.0


def test_the_minimum_names_the_field_the_system_and_the_power_it_takes() -> None:
    with pytest.raises(InputError) as caught:
        size_pool(5e3, CATALOG.system("hgx-h200"), 16, field="options[2].pools[1].power_share")
    message = str(caught.value)
    assert message.startswith("options[2].pools[1].power_share: 0.005 MW of IT power buys no whole")
    assert "hgx-h200 (2 system(s) x 10.2 kW)" in message and "the minimum is 0.0204 MW" in message


@pytest.mark.parametrize("pue", [0.99, 3.01, float("nan")])
def test_a_pue_outside_one_to_three_is_refused(pue: float) -> None:
    with pytest.raises(InputError, match=r"budget\.pue must be between 1\.0 and 3\.0"):
        PowerBudget(1e6, pue)


def test_a_facility_given_as_text_is_refused_with_its_value() -> None:
    with pytest.raises(InputError, match=r"positive number of megawatts; got '750'"):
        PowerBudget("750", 1.2)  # type: ignore[arg-type]


def test_it_power_is_the_facility_over_the_pue_at_the_limits() -> None:
    assert PowerBudget(3e6, 1.0).it_w == 3e6
    assert PowerBudget(3e6, 3.0).it_w == pytest.approx(1e6)


@RULES
@given(capex=st.floats(1e6, 1e11), facility=st.floats(0.0, 5e7), system_id=st.sampled_from(SYSTEMS))
def test_a_capital_budget_buys_systems_whose_price_and_facility_add_up_to_it(
    capex: float, facility: float, system_id: str
) -> None:
    s = CATALOG.system(system_id)
    it_w = it_power_for_capex(capex, s, facility)
    n = it_w / s.power_w  # systems, fractional
    assert n * (s.price_usd + facility * s.power_w / 1e6) == pytest.approx(capex)


# -- money ---------------------------------------------------------------------------------------
# Rates from 0.01%: below about 1e-9 the annuity formula loses its digits ((1 + r)^n - 1 cancels;
# at 1e-17 it divides by zero), which no cost of capital comes near.
RATES = st.floats(1e-4, 0.5)


@RULES
@given(rate=RATES, years=st.floats(1.0, 40.0))
def test_capital_recovery_lies_between_straight_line_and_perpetual_interest(
    rate: float, years: float
) -> None:
    """At least the straight line 1/years (interest is paid too) and the interest alone (the
    principal is repaid too), at most both together."""
    crf = capital_recovery_factor(rate, years)
    assert max(1.0 / years, rate) < crf <= 1.0 / years + rate + 1e-12


@RULES
@given(rate=RATES, years=st.floats(1.0, 30.0), more=st.floats(0.1, 10.0))
def test_capital_recovery_falls_with_the_years_and_rises_with_the_rate(
    rate: float, years: float, more: float
) -> None:
    assert capital_recovery_factor(rate, years + more) < capital_recovery_factor(rate, years)
    assert capital_recovery_factor(rate + more / 100, years) > capital_recovery_factor(rate, years)


def test_payments_at_the_recovery_factor_repay_the_principal_with_interest() -> None:
    """Discounted at the rate, the yearly payments of one dollar's annuity are worth one dollar."""
    for rate, years in [(0.08, 4), (0.05, 15), (0.12, 7)]:
        crf = capital_recovery_factor(rate, years)
        present = sum(crf / (1 + rate) ** t for t in range(1, years + 1))
        assert present == pytest.approx(1.0)


@pytest.mark.parametrize("years", [0.0, -3.0])
def test_no_years_to_repay_in_is_an_error(years: float) -> None:
    with pytest.raises(InputError, match=f"amortisation years must be > 0; got {years}"):
        capital_recovery_factor(0.08, years)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("facility_capex_usd_per_mw", -1.0, "economics.facility_capex_usd_per_mw must be >= 0; got -1.0."),
        ("cost_of_capital", -0.01, "economics.cost_of_capital must be in [0, 1); got -0.01."),
        ("cost_of_capital", 1.0, "economics.cost_of_capital must be in [0, 1); got 1.0."),
    ],
)
def test_bad_economics_name_the_field_and_value(field: str, value: float, message: str) -> None:
    with pytest.raises(InputError) as caught:
        Economics(**{field: value})  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_yearly_cost_doubles_with_twice_the_systems_power_and_energy() -> None:
    econ = Economics()
    one = annual_cost(econ, n_systems=5, system_price_usd=3e5, it_peak_w=5e4, facility_mean_w=3e4, pue=1.2)
    two = annual_cost(econ, n_systems=10, system_price_usd=3e5, it_peak_w=1e5, facility_mean_w=6e4, pue=1.2)
    for item in ("it_capex", "facility_capex", "electricity", "contract", "total"):
        assert getattr(two, item) == pytest.approx(2 * getattr(one, item)), item


def test_electricity_is_the_mean_facility_megawatts_for_a_year_at_the_price() -> None:
    cost = annual_cost(Economics(electricity_usd_per_mwh=50.0), n_systems=0, system_price_usd=0.0,
                       it_peak_w=0.0, facility_mean_w=2e6, pue=1.3)
    assert cost.electricity == pytest.approx(50.0 * 2.0 * HOURS_PER_YEAR)
    assert cost.total == cost.electricity  # no systems, no facility: only energy


def test_free_power_and_free_facilities_leave_only_the_systems() -> None:
    econ = Economics(electricity_usd_per_mwh=0.0, facility_capex_usd_per_mw=0.0, cost_of_capital=0.0,
                     it_amortisation_years=5.0)
    cost = annual_cost(econ, n_systems=4, system_price_usd=1e6, it_peak_w=4e4, facility_mean_w=3e4, pue=1.1)
    assert cost.total == pytest.approx(4e6 / 5)
