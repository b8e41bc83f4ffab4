"""Budgets: facility MW -> IT MW via PUE -> whole systems and replicas, with clear errors."""

from __future__ import annotations

import pytest

from megawatt.errors import InputError
from megawatt.fleet import PowerBudget, size_pool
from megawatt.hardware import load_catalog

CATALOG = load_catalog()


def test_750_mw_at_pue_1_2_leaves_625_mw_for_it() -> None:
    assert PowerBudget(750e6, 1.2).it_w == pytest.approx(625e6)


def test_cs3_systems_in_625_mw() -> None:
    size = size_pool(625e6, CATALOG.system("cs-3"), 1, field="f")
    assert size.n_systems == 27_173  # 625 MW / 23 kW, whole systems
    assert size.leftover_w == pytest.approx(625e6 - 27_173 * 23e3)


def test_multi_wafer_replicas_round_down_to_whole_replicas() -> None:
    size = size_pool(625e6, CATALOG.system("cs-3"), 4, field="f")
    assert size.n_replicas == 27_173 // 4 and size.n_systems == 4 * size.n_replicas


def test_several_replicas_share_a_system() -> None:
    size = size_pool(1e6, CATALOG.system("gb200-nvl72"), 2, field="f")
    assert size.n_systems == 8 and size.n_replicas == 8 * 36


@pytest.mark.parametrize("mw", [0.0, -5.0, float("nan")])
def test_zero_negative_or_nan_budgets_are_errors(mw: float) -> None:
    with pytest.raises(InputError, match="facility_mw"):
        PowerBudget(mw * 1e6, 1.2)


def test_a_budget_below_one_replica_names_the_minimum() -> None:
    with pytest.raises(InputError, match=r"minimum is 0\.092 MW") as info:
        size_pool(50e3, CATALOG.system("cs-3"), 4, field="options[0].pools[0].power_share")
    assert "options[0].pools[0].power_share" in str(info.value)


def test_a_capital_budget_buys_systems_and_their_facility() -> None:
    from megawatt.fleet import it_power_for_capex

    cs3 = CATALOG.system("cs-3")
    # $2.5M per CS-3 plus $15M/MW x 23 kW of facility = $2.845M per system.
    it_w = it_power_for_capex(2.845e9, cs3, 15e6)
    assert it_w / cs3.power_w == pytest.approx(1000)


def test_a_fixed_count_is_kept_and_too_few_systems_are_an_error() -> None:
    size = size_pool(0.0, CATALOG.system("cs-3"), 2, field="f", n_systems=10)
    assert size.n_systems == 10 and size.n_replicas == 5
    with pytest.raises(InputError, match="minimum is 4"):
        size_pool(0.0, CATALOG.system("cs-3"), 4, field="options[0].pools[0].n_systems", n_systems=3)
