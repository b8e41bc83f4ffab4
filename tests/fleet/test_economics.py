"""Money: amortised capex, electricity, or a contract price per MW-year."""

from __future__ import annotations

import pytest

from megawatt.errors import InputError
from megawatt.fleet import Economics, annual_cost, capital_recovery_factor


def test_capital_recovery_is_straight_line_without_interest() -> None:
    assert capital_recovery_factor(0.0, 4) == pytest.approx(0.25)


def test_capital_recovery_with_interest_matches_the_annuity_formula() -> None:
    # 8% over 4 years: 0.08 * 1.08^4 / (1.08^4 - 1) = 0.30192
    assert capital_recovery_factor(0.08, 4) == pytest.approx(0.30192, rel=1e-4)


def test_costs_add_up() -> None:
    econ = Economics(
        electricity_usd_per_mwh=100,
        facility_capex_usd_per_mw=10e6,
        it_amortisation_years=5,
        facility_amortisation_years=10,
        cost_of_capital=0.0,
    )
    cost = annual_cost(econ, n_systems=10, system_price_usd=1e6, it_peak_w=1e6, facility_mean_w=1e6, pue=1.2)
    assert cost.it_capex == pytest.approx(2e6)
    assert cost.facility_capex == pytest.approx(1e6)
    assert cost.electricity == pytest.approx(100 * 8766)
    assert cost.total == pytest.approx(3e6 + 876_600)


def test_a_contract_replaces_capex_and_electricity() -> None:
    # The seed deal: > $20B over 3 years for 750 MW = $8.9M per MW-year.
    econ = Economics(contract_usd_per_mw_year=20e9 / 3 / 750)
    cost = annual_cost(
        econ, n_systems=1, system_price_usd=1e6, it_peak_w=625e6, facility_mean_w=500e6, pue=1.2
    )
    assert cost.total == pytest.approx(20e9 / 3)
    assert cost.it_capex == cost.electricity == 0


def test_bad_economics_are_errors() -> None:
    with pytest.raises(InputError, match="cost_of_capital"):
        Economics(cost_of_capital=1.5)
    with pytest.raises(InputError, match="electricity"):
        Economics(electricity_usd_per_mwh=-1)
