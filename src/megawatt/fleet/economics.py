"""Money: capital cost of systems and facility amortised with a cost of capital, electricity, or
a contract price per MW-year; every assumption carries its source."""

from __future__ import annotations

from dataclasses import dataclass

from megawatt.errors import InputError
from megawatt.units import HOURS_PER_YEAR, MW


def capital_recovery_factor(rate: float, years: float) -> float:
    """Annual payment per dollar of capital repaid over `years` at interest `rate`."""
    if years <= 0:
        raise InputError(f"amortisation years must be > 0; got {years}.")
    if rate == 0:
        return 1.0 / years
    growth = float((1.0 + rate) ** years)
    return rate * growth / (growth - 1.0)


@dataclass(frozen=True)
class Economics:
    """Cost assumptions (USD). With `contract_usd_per_mw_year` set, money is that price times
    the facility MW, instead of capex plus electricity."""

    electricity_usd_per_mwh: float = 70.0
    facility_capex_usd_per_mw: float = 15e6
    it_amortisation_years: float = 4.0
    facility_amortisation_years: float = 15.0
    cost_of_capital: float = 0.08
    contract_usd_per_mw_year: float | None = None

    def __post_init__(self) -> None:
        for name in ("electricity_usd_per_mwh", "facility_capex_usd_per_mw"):
            if getattr(self, name) < 0:
                raise InputError(f"economics.{name} must be >= 0; got {getattr(self, name)}.")
        if not 0 <= self.cost_of_capital < 1:
            raise InputError(f"economics.cost_of_capital must be in [0, 1); got {self.cost_of_capital}.")


SOURCES: dict[str, str] = {
    "electricity_usd_per_mwh": "FACTS.md C.5: US data-centre energy $28-70/MWh outside California, "
    "blended 2026 AI DC estimate $65-90/MWh (low confidence); 70 is an estimate in that range",
    "facility_capex_usd_per_mw": "FACTS.md C.5: $10-12M per MW of critical load conventional, "
    "$20M+ AI-optimised; 15 is an estimate between them, per MW of IT load",
    "it_amortisation_years": "estimate: 4-year economic life of AI accelerators",
    "facility_amortisation_years": "estimate: 15-year life of power and cooling plant "
    "(Abilene lease is 15 years, FACTS.md C.3)",
    "cost_of_capital": "estimate: 8% per year",
    "contract_usd_per_mw_year": "FACTS.md C.2 derived: > $20B / 3 years / 750 MW = $8.9M per MW-year",
    "pue": "FACTS.md C.5: modern AI data centres commonly modelled at 1.2; hyperscale 1.1-1.2",
}


@dataclass(frozen=True)
class AnnualCost:
    """Cost of a pool per year (USD), by item."""

    it_capex: float
    facility_capex: float
    electricity: float
    contract: float

    @property
    def total(self) -> float:
        """All items."""
        return self.it_capex + self.facility_capex + self.electricity + self.contract


def annual_cost(
    econ: Economics,
    *,
    n_systems: int,
    system_price_usd: float,
    it_peak_w: float,
    facility_mean_w: float,
    pue: float,
) -> AnnualCost:
    """Yearly cost of `n_systems` drawing `facility_mean_w` on average.

    Facility capex is sized on the peak IT power of the systems; contract pricing is charged on
    the facility power they are provisioned for (peak IT x PUE).
    """
    if econ.contract_usd_per_mw_year is not None:
        return AnnualCost(0.0, 0.0, 0.0, econ.contract_usd_per_mw_year * it_peak_w * pue / MW)
    crf_it = capital_recovery_factor(econ.cost_of_capital, econ.it_amortisation_years)
    crf_fac = capital_recovery_factor(econ.cost_of_capital, econ.facility_amortisation_years)
    return AnnualCost(
        it_capex=n_systems * system_price_usd * crf_it,
        facility_capex=econ.facility_capex_usd_per_mw * it_peak_w / MW * crf_fac,
        electricity=econ.electricity_usd_per_mwh * facility_mean_w / MW * HOURS_PER_YEAR,
        contract=0.0,
    )
