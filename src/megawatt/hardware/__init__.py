"""Hardware as data: accelerators (`Device`), the systems they ship in (`System`) and the
`Catalog` that holds them, loaded from the package's specs.csv + systems.yaml and user YAML files.
"""

from __future__ import annotations

from megawatt.hardware.catalog import (
    DEFAULT_IDLE_POWER_FRACTION,
    DEFAULT_SCALEOUT_LATENCY_S,
    DEFAULT_SCALEUP_LATENCY_S,
    Catalog,
    Device,
    DeviceKind,
    MeshSpec,
    System,
    Verification,
    load_catalog,
    load_user_hardware,
)

__all__ = [
    "DEFAULT_IDLE_POWER_FRACTION",
    "DEFAULT_SCALEOUT_LATENCY_S",
    "DEFAULT_SCALEUP_LATENCY_S",
    "Catalog",
    "Device",
    "DeviceKind",
    "MeshSpec",
    "System",
    "Verification",
    "load_catalog",
    "load_user_hardware",
]
