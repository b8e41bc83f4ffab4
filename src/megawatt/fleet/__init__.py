"""Fleets: pools of replicas under a power budget, with power, energy and money accounting."""

from megawatt.fleet.budget import PoolSize, PowerBudget, it_power_for_capex, size_pool
from megawatt.fleet.economics import (
    SOURCES,
    AnnualCost,
    Economics,
    annual_cost,
    capital_recovery_factor,
)
from megawatt.fleet.pool import OptionResult, PoolResult, option_result

__all__ = [
    "SOURCES",
    "AnnualCost",
    "Economics",
    "OptionResult",
    "PoolResult",
    "PoolSize",
    "PowerBudget",
    "annual_cost",
    "capital_recovery_factor",
    "it_power_for_capex",
    "option_result",
    "size_pool",
]
