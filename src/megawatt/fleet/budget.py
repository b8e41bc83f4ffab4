"""Budgets: facility megawatts -> IT megawatts (via PUE) -> whole systems per pool."""

from __future__ import annotations

import math
from dataclasses import dataclass

from megawatt.errors import InputError
from megawatt.hardware import System
from megawatt.units import MW


@dataclass(frozen=True)
class PowerBudget:
    """Facility power and its power usage effectiveness (facility power / IT power)."""

    facility_w: float
    pue: float

    def __post_init__(self) -> None:
        if not (
            isinstance(self.facility_w, int | float)
            and self.facility_w > 0
            and math.isfinite(self.facility_w)
        ):
            raise InputError(
                f"budget.facility_mw must be a positive number of megawatts; got "
                f"{self.facility_w / MW if isinstance(self.facility_w, int | float) else self.facility_w!r}. "
                "Give the facility power, e.g. 750."
            )
        if not 1.0 <= self.pue <= 3.0:
            raise InputError(
                f"budget.pue must be between 1.0 and 3.0 (facility power / IT power); "
                f"got {self.pue}. Modern AI data centres run at about 1.1-1.3."
            )

    @property
    def it_w(self) -> float:
        """Power left for IT equipment (W)."""
        return self.facility_w / self.pue


@dataclass(frozen=True)
class PoolSize:
    """Whole systems a share of the IT power buys, replicas they hold, and the power left over."""

    system_id: str
    it_w: float
    n_systems: int
    systems_per_replica: int
    n_replicas: int
    leftover_w: float

    @property
    def used_w(self) -> float:
        """Peak IT power of the systems bought (W)."""
        return self.it_w - self.leftover_w


def size_pool(
    it_w: float,
    system: System,
    devices_per_replica: int,
    *,
    field: str,
    n_systems: int | None = None,
) -> PoolSize:
    """Whole systems that fit in `it_w` (or exactly `n_systems`) and the replicas of
    `devices_per_replica` devices they hold.

    Raises `InputError` naming `field` and the minimum power when not even one replica fits.
    """
    systems_per_replica = max(1, math.ceil(devices_per_replica / system.n_devices))
    per_system = system.n_devices // devices_per_replica if devices_per_replica <= system.n_devices else 0
    if n_systems is not None:
        if n_systems < systems_per_replica:
            raise InputError(
                f"{field}: {n_systems} {system.id} system(s) hold no whole replica of "
                f"{devices_per_replica} devices; the minimum is {systems_per_replica}."
            )
        it_w = n_systems * system.power_w
    n_systems = int(it_w // system.power_w)
    if per_system:
        n_replicas = n_systems * per_system
    else:
        n_systems = (n_systems // systems_per_replica) * systems_per_replica
        n_replicas = n_systems // systems_per_replica
    if n_replicas < 1:
        need = systems_per_replica * system.power_w
        raise InputError(
            f"{field}: {it_w / MW:.4g} MW of IT power buys no whole replica of {system.id} "
            f"({systems_per_replica} system(s) x {system.power_w / 1e3:.4g} kW); the minimum is "
            f"{need / MW:.4g} MW of IT power. Raise the budget or the pool's share."
        )
    return PoolSize(
        system.id,
        it_w,
        n_systems,
        systems_per_replica,
        n_replicas,
        it_w - n_systems * system.power_w,
    )


def it_power_for_capex(capex_usd: float, system: System, facility_capex_usd_per_mw: float) -> float:
    """IT power (W) a capital budget buys in `system`s: each costs its price plus the facility
    capex of its peak power."""
    per_system = system.price_usd + facility_capex_usd_per_mw * system.power_w / MW
    return capex_usd / per_system * system.power_w
