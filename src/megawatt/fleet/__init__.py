"""Fleets: pools of replicas under a power budget, with power, energy and money accounting."""

from megawatt.fleet.affinity import (
    SESSION_ROUTERS,
    AffinityGain,
    RoutedSessions,
    affinity_gain,
    route_sessions,
)
from megawatt.fleet.budget import PoolSize, PowerBudget, it_power_for_capex, size_pool
from megawatt.fleet.economics import (
    SOURCES,
    AnnualCost,
    Economics,
    annual_cost,
    capital_recovery_factor,
)
from megawatt.fleet.image import ImageCapacity, image_capacity
from megawatt.fleet.pool import OptionResult, PoolResult, option_result
from megawatt.fleet.pools import MODES, PoolRun, simulate_pool
from megawatt.fleet.routing import (
    POOL_ROUTERS,
    REPLICA_ROUTERS,
    PoolTarget,
    ReplicaRouter,
    pool_router,
    replica_router,
)

__all__ = [
    "MODES",
    "POOL_ROUTERS",
    "REPLICA_ROUTERS",
    "SESSION_ROUTERS",
    "SOURCES",
    "AffinityGain",
    "AnnualCost",
    "Economics",
    "ImageCapacity",
    "OptionResult",
    "PoolResult",
    "PoolRun",
    "PoolSize",
    "PoolTarget",
    "PowerBudget",
    "ReplicaRouter",
    "RoutedSessions",
    "affinity_gain",
    "annual_cost",
    "capital_recovery_factor",
    "image_capacity",
    "it_power_for_capex",
    "option_result",
    "pool_router",
    "replica_router",
    "route_sessions",
    "simulate_pool",
    "size_pool",
]
