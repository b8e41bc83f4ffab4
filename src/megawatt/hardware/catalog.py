"""The hardware catalog: accelerators (`Device`), the systems they ship in (`System`), and loaders
for the package data (specs.csv + systems.yaml) and user hardware YAML files. SI units inside.
"""

from __future__ import annotations

import csv
import difflib
import io
import math
import os
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from types import MappingProxyType
from typing import Annotated, Any, Final, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from megawatt._files import read_user_text
from megawatt._yaml import MAX_CHARS, load_yaml
from megawatt.errors import CatalogError, InputError
from megawatt.units import GB, GIB, GIGA, KW, MB, TB, TERA, US

Verification = Literal["verified", "secondary", "derived", "estimate"]
"""How well a figure is sourced: vendor docs or several sources, one secondary source, computed
from sourced inputs, or no direct source."""

DeviceKind = Literal["gpu", "tpu", "wafer", "lpu", "rdu", "asic"]
"""Accelerator family: GPU, Google TPU, wafer-scale engine (Cerebras), Groq LPU, SambaNova RDU,
other ASIC."""

DEFAULT_IDLE_POWER_FRACTION: Final = 0.35
"""Idle power of a system as a fraction of its maximum power when a file gives none (estimate:
accelerators at idle clocks while host CPUs, memory, NICs and fans stay on; not measured)."""

DEFAULT_SCALEUP_LATENCY_S: Final = 2e-6
"""Latency of one collective step inside a system when a file gives none, in s (estimate: a few
µs on NVLink-class fabrics)."""

DEFAULT_SCALEOUT_LATENCY_S: Final = 5e-6
"""Latency of one step between systems when a file gives none, in s (estimate: NIC, one or two
switch hops and software on InfiniBand/RoCE)."""

_PEAK_KEYS: Final = ("bf16", "fp8", "fp4")
# A lower-precision request runs at the next wider native rate when the device has no rate of
# its own; fp16 shares the 16-bit (bf16) rate.
_FALLBACKS: Final[dict[str, tuple[str, ...]]] = {
    "fp4": ("fp4", "fp8", "bf16"),
    "fp8": ("fp8", "bf16"),
    "bf16": ("bf16",),
    "fp16": ("bf16",),
}
_ID_PATTERN: Final = r"^[a-z0-9][a-z0-9._-]*$"
_PACKAGE_DIR: Final = "data/hardware"
_US_PER_S: Final = 1e6  # dividing keeps 5 µs exactly 5e-6 s (5 * 1e-6 is not)



BINARY_HBM_VENDORS = frozenset({"NVIDIA", "AMD"})
"""GPU vendors whose HBM capacities count binary gigabytes: HBM stacks are built of DRAM dies
of 2^n Gbit, so an "80 GB" H100 holds 5 stacks x 16 GiB (nvidia-smi: 81,559 MiB; recalled,
not retrieved here), a "180 GB" B200 ~180 GiB. `specs.csv` keeps the vendors' figures at face
value (its README); megawatt reads them as GiB. The InferenceX runs bear it out: DeepSeek-R1 in
FP8 (168 GB of weights per device at TP4) served 32 concurrent 8k-token prompts on 4 B200
without queueing, which 180 x 10^9 bytes could not hold."""

BINARY_HBM_NOTE = (
    "GPU vendors' HBM figures count binary gigabytes (HBM stacks of 2^n-Gbit dies; an 80 GB H100 "
    "shows 81,559 MiB in nvidia-smi, recalled), see megawatt.hardware.catalog.BINARY_HBM_VENDORS"
)


def memory_bytes(vendor: str, mem_type: str, capacity_gb: float) -> float:
    """A device's memory in bytes from its datasheet figure: GiB for the HBM of
    `BINARY_HBM_VENDORS`, else GB (10^9 bytes; on-chip SRAM, TPU and Trainium figures, which the
    shared data already converted from GiB)."""
    if vendor in BINARY_HBM_VENDORS and mem_type.upper().startswith("HBM"):
        return capacity_gb * GIB
    return capacity_gb * GB

def _freeze(value: object) -> object:
    """A hashable image of a (nested) model value: mappings become sorted item tuples."""
    if isinstance(value, BaseModel):
        return tuple((name, _freeze(item)) for name, item in value)
    if isinstance(value, Mapping):
        return tuple(sorted((key, _freeze(item)) for key, item in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_freeze(item) for item in value)
    return value


class _FrozenModel(BaseModel):
    """Immutable, strict-keyed base model that stays hashable although it holds dicts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def __hash__(self) -> int:
        return hash(_freeze(self))


_Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
_NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class MeshSpec(_FrozenModel):
    """The 2D core mesh of a wafer-scale engine: geometry, per-core SRAM, SIMD width, clock and
    fabric costs. Counts are cores, sizes bytes, times cycles or Hz."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    width_cores: int = Field(gt=0, description="usable mesh width in cores")
    height_cores: int = Field(gt=0, description="usable mesh height in cores")
    sram_per_core_bytes: _Positive = Field(description="SRAM per core in bytes")
    simd_fp16_lanes: int = Field(gt=0, description="FP16 multiply-accumulates per core per cycle")
    clock_hz: _Positive = Field(description="core clock in Hz")
    cycles_per_hop: _Positive = Field(description="latency of one mesh hop in cycles")
    link_bytes_per_cycle: _Positive = Field(description="bytes per cycle per link per direction")
    sram_bytes_per_cycle_per_core: _Positive = Field(description="SRAM bytes per cycle per core")
    sources: dict[str, str] = Field(default_factory=dict, description="field -> source text")

    @property
    def n_cores(self) -> int:
        """Cores in the mesh rectangle, width x height."""
        return self.width_cores * self.height_cores

    @field_validator("sources")
    @classmethod
    def _sources_name_fields(cls, sources: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(sources) - set(cls.model_fields) - {"sources"})
        if unknown:
            raise ValueError(f"sources names unknown mesh fields {unknown}")
        return sources


class Device(_FrozenModel):
    """One accelerator (a GPU, a TPU chip, a wafer, a card): dense peak FLOP/s per dtype, memory
    in bytes and bytes/s, interconnect in bytes/s per direction, power in W, price in USD."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=_ID_PATTERN)
    name: str
    vendor: str
    kind: DeviceKind
    year: int | None = None
    process: str | None = None
    peak_flops_per_s: dict[str, _Positive] = Field(
        description="dense peak FLOP/s by dtype key 'bf16', 'fp8', 'fp4'; 'bf16' always present"
    )
    mem_type: str
    mem_capacity_bytes: _Positive = Field(description="main memory per device, bytes")
    mem_bandwidth_bytes_per_s: _Positive = Field(description="main-memory bandwidth, bytes/s")
    sram_bytes: _Positive | None = Field(default=None, description="on-chip SRAM / LLC, bytes")
    scaleup_bandwidth_bytes_per_s: _Positive | None = Field(
        default=None, description="scale-up fabric per device, one direction, bytes/s"
    )
    scaleout_bandwidth_bytes_per_s: _Positive | None = Field(
        default=None, description="network to other systems per device, bytes/s"
    )
    tdp_w: _Positive | None = Field(default=None, description="device TDP, W")
    cores: int | None = Field(default=None, gt=0, description="SMs, CUs, cores, ...")
    clock_hz: _Positive | None = Field(default=None, description="boost clock, Hz")
    price_usd: _Positive | None = Field(default=None, description="price per device, USD")
    mesh: MeshSpec | None = None
    verification: Verification
    source: str
    notes: str = ""
    estimated_fields: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _price_is_an_estimate(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("price_usd") is not None:
            estimated = tuple(data.get("estimated_fields", ()))
            if "price_usd" not in estimated:
                data = {**data, "estimated_fields": (*estimated, "price_usd")}
        return data

    @field_validator("peak_flops_per_s")
    @classmethod
    def _known_dtypes_with_bf16(cls, peaks: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(peaks) - set(_PEAK_KEYS))
        if unknown:
            raise ValueError(f"peak dtype keys must be among {list(_PEAK_KEYS)}; got {unknown}")
        if "bf16" not in peaks:
            raise ValueError("peak_flops_per_s needs a 'bf16' rate (the fallback of fp8 and fp4)")
        return peaks

    @field_validator("estimated_fields")
    @classmethod
    def _estimated_are_fields(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(names) - set(cls.model_fields))
        if unknown:
            raise ValueError(f"estimated_fields names unknown Device fields {unknown}")
        return names

    def peak_flops_for(self, dtype: str) -> float:
        """Dense peak FLOP/s for matrix math in `dtype`. Without a native rate, fp4 runs at the fp8
        rate, then bf16; fp8 at bf16; fp16 shares the bf16 rate. fp32 and others: InputError."""
        chain = _FALLBACKS.get(dtype)
        if chain is None:
            known = ", ".join(_FALLBACKS)
            hint = (
                " (fp32 matrix rates are not in the catalog; use bf16)" if dtype == "fp32" else ""
            )
            raise InputError(
                f"dtype for a peak FLOP rate must be one of {known}; got {dtype!r}{hint}."
            )
        for key in chain:
            if key in self.peak_flops_per_s:
                return self.peak_flops_per_s[key]
        raise CatalogError(f"device {self.id!r} has no bf16 peak rate")  # the validator forbids it

    def has_native(self, dtype: str) -> bool:
        """True if the device publishes its own dense rate for `dtype` (fp16 counts as bf16)."""
        key = "bf16" if dtype == "fp16" else dtype
        return key in self.peak_flops_per_s

    @property
    def mem_capacity_label(self) -> str:
        """The memory as its datasheet states it: `80 GiB` for binary HBM figures
        (`BINARY_HBM_VENDORS`), else `44 GB`."""
        if memory_bytes(self.vendor, self.mem_type, 1.0) == GIB:
            return f"{self.mem_capacity_bytes / GIB:.0f} GiB"
        return f"{self.mem_capacity_bytes / GB:.0f} GB"


class System(_FrozenModel):
    """A deployable box or rack of `n_devices` identical accelerators: its fabrics (bytes/s per
    device per direction, latency in s per step), power in W and price in USD, with sources."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=_ID_PATTERN)
    name: str
    device_id: str
    n_devices: int = Field(gt=0)
    scaleup_bandwidth_bytes_per_s: _Positive | None = Field(
        default=None, description="per device, one direction, inside the system"
    )
    scaleup_latency_s: _NonNegative = Field(description="per collective step inside the system")
    scaleout_bandwidth_bytes_per_s: _Positive | None = Field(
        default=None, description="per device, to other systems"
    )
    scaleout_latency_s: _NonNegative = Field(description="per step between systems")
    power_w: _Positive = Field(description="whole-system maximum IT power")
    idle_power_w: _Positive = Field(description="whole-system idle power")
    price_usd: _Positive = Field(description="whole-system price (an estimate)")
    sources: dict[str, str] = Field(default_factory=dict, description="field -> source text")
    estimated_fields: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _price_is_an_estimate(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        sources = dict(data.get("sources") or {})
        text = sources.get("price_usd", "no source given")
        if "estimate" not in text.lower():
            sources["price_usd"] = f"estimate: {text}"
        estimated = tuple(data.get("estimated_fields", ()))
        if "price_usd" not in estimated:
            estimated = (*estimated, "price_usd")
        return {**data, "sources": sources, "estimated_fields": estimated}

    @model_validator(mode="after")
    def _consistent(self) -> System:
        if not self.idle_power_w < self.power_w:
            raise ValueError(
                f"idle_power_w ({self.idle_power_w:g} W) must be below power_w ({self.power_w:g} W)"
            )
        fields = set(type(self).model_fields)
        unknown = sorted((set(self.sources) | set(self.estimated_fields)) - fields)
        if unknown:
            raise ValueError(f"sources / estimated_fields name unknown System fields {unknown}")
        for name in self.estimated_fields:
            if "estimate" not in self.sources.get(name, "").lower():
                raise ValueError(f"estimated field {name!r} needs a source containing 'estimate'")
        return self


def _suggestion(given: str, known: Iterable[str]) -> str | None:
    """The known id closest to `given` (whole id or its leading part), or None if none is close."""
    wanted = given.lower()
    best: tuple[float, str] | None = None
    for name in known:
        score = max(
            difflib.SequenceMatcher(None, wanted, name).ratio(),
            difflib.SequenceMatcher(None, wanted, name[: len(wanted)]).ratio(),
        )
        if score >= 0.6 and (best is None or (score, name) > best):
            best = (score, name)
    return None if best is None else best[1]


def _unknown_message(what: str, given: str, known: Iterable[str], extra: str = "") -> str:
    names = sorted(known)
    message = f"unknown {what} id {given!r}; known: {', '.join(names)}"
    close = _suggestion(given, names)
    message += f"; did you mean {close!r}?" if close else "."
    return message + extra


@dataclass(frozen=True)
class Catalog:
    """An immutable set of devices and systems, keyed by id. Every system's device is in the
    catalog. Build one with `load_catalog()`; combine with `merged()`."""

    devices: Mapping[str, Device]
    systems: Mapping[str, System]

    def __post_init__(self) -> None:
        devices = MappingProxyType(dict(self.devices))
        systems = MappingProxyType(dict(self.systems))
        for table in (devices, systems):
            for key, entry in table.items():
                if key != entry.id:
                    raise CatalogError(
                        f"catalog key {key!r} differs from the entry id {entry.id!r}"
                    )
        for system in systems.values():
            if system.device_id not in devices:
                raise CatalogError(
                    f"system {system.id!r} names device {system.device_id!r}, which is not in the "
                    f"catalog; known devices: {', '.join(sorted(devices))}."
                )
        object.__setattr__(self, "devices", devices)
        object.__setattr__(self, "systems", systems)

    def device(self, device_id: str) -> Device:
        """The device with this id; an unknown id raises CatalogError listing the known ids."""
        try:
            return self.devices[device_id]
        except KeyError:
            extra = ""
            if device_id in self.systems:
                extra = (
                    f" {device_id!r} is a system; its device is "
                    f"{self.systems[device_id].device_id!r}."
                )
            raise CatalogError(
                _unknown_message("hardware", device_id, self.devices, extra)
            ) from None

    def system(self, system_id: str) -> System:
        """The system with this id; an unknown id raises CatalogError listing the system ids."""
        try:
            return self.systems[system_id]
        except KeyError:
            extra = ""
            if system_id in self.devices:
                ids = ", ".join(s.id for s in self.systems.values() if s.device_id == system_id)
                extra = f" {system_id!r} is a device; systems with it: {ids or 'none'}."
            raise CatalogError(_unknown_message("system", system_id, self.systems, extra)) from None

    def systems_for(self, device_id: str) -> tuple[System, ...]:
        """The systems built from this device, in catalog order (may be empty)."""
        self.device(device_id)
        return tuple(s for s in self.systems.values() if s.device_id == device_id)

    def merged(self, other: Catalog) -> Catalog:
        """A new catalog: this one with `other`'s entries added, replacing any with the same id."""
        return Catalog(
            devices={**self.devices, **other.devices},
            systems={**self.systems, **other.systems},
        )


# --- File schemas: the keys a hardware YAML file (and specs.csv) may use, in human units ---------


class _Entry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


_PositiveEntry = Annotated[float, Field(gt=0, allow_inf_nan=False)]
_NonNegativeEntry = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _MeshEntry(_Entry):
    width_cores: int = Field(gt=0, description="usable mesh width in cores, e.g. 762")
    height_cores: int = Field(gt=0, description="usable mesh height in cores, e.g. 1172")
    sram_per_core_bytes: _PositiveEntry = Field(description="SRAM per core in bytes, e.g. 49152")
    simd_fp16_lanes: int = Field(gt=0, description="FP16 MACs per core per cycle, e.g. 8")
    clock_ghz: _PositiveEntry = Field(description="core clock in GHz, e.g. 1.1")
    cycles_per_hop: _PositiveEntry = Field(description="mesh hop latency in cycles, e.g. 1.0")
    link_bytes_per_cycle: _PositiveEntry = Field(
        description="bytes per cycle per link per direction, e.g. 4.0"
    )
    sram_bytes_per_cycle_per_core: _PositiveEntry = Field(
        description="SRAM bytes per cycle per core, e.g. 24"
    )
    sources: dict[str, str] = Field(
        default_factory=dict, description="a mapping from mesh key to source text"
    )


class _DeviceEntry(_Entry):
    id: str = Field(pattern=_ID_PATTERN, description="a lowercase id such as 'my-asic'")
    name: str = Field(min_length=1, description="a product name")
    vendor: str = Field(default="unknown", description="the vendor name")
    kind: DeviceKind = Field(description="one of gpu, tpu, wafer, lpu, rdu, asic")
    year: int | None = Field(default=None, ge=1950, le=2100, description="a launch year")
    process: str | None = Field(default=None, description="the foundry node, e.g. 'TSMC 4N'")
    dense_bf16_tflops: _PositiveEntry | None = Field(
        default=None, description="dense BF16 (or FP16) peak in TFLOP/s, e.g. 989.4"
    )
    dense_fp8_tflops: _PositiveEntry | None = Field(
        default=None, description="dense FP8 peak in TFLOP/s, e.g. 1978.9"
    )
    dense_fp4_tflops: _PositiveEntry | None = Field(
        default=None, description="dense FP4 peak in TFLOP/s, e.g. 9000"
    )
    mem_type: str = Field(default="unspecified", description="e.g. HBM3e")
    mem_capacity_gb: _PositiveEntry = Field(
        description="main memory per device in GB (10^9 bytes), e.g. 80"
    )
    mem_bw_tb_s: _PositiveEntry = Field(
        description="main-memory bandwidth in TB/s (10^12 bytes/s), e.g. 3.35"
    )
    sram_mb: _PositiveEntry | None = Field(default=None, description="on-chip SRAM in MB, e.g. 50")
    scaleup_bw_gb_s_per_device: _PositiveEntry | None = Field(
        default=None, description="scale-up bandwidth per device, ONE direction, in GB/s, e.g. 450"
    )
    scaleout_gbit_s_per_device: _PositiveEntry | None = Field(
        default=None, description="network bandwidth per device in Gbit/s, e.g. 400"
    )
    tdp_w: _PositiveEntry | None = Field(default=None, description="device TDP in W, e.g. 700")
    cores: int | None = Field(default=None, gt=0, description="core count (SMs, CUs, ...)")
    clock_ghz: _PositiveEntry | None = Field(default=None, description="boost clock in GHz")
    price_usd_estimate: _PositiveEntry | None = Field(
        default=None, description="price per device in USD, e.g. 30000"
    )
    verification: Verification = Field(
        default="estimate", description="one of verified, secondary, derived, estimate"
    )
    source: str = Field(min_length=1, description="where the numbers come from")
    notes: str = Field(default="", description="free-text caveats")
    mesh: _MeshEntry | None = Field(default=None, description="a wafer mesh block")
    estimated: dict[str, str] = Field(
        default_factory=dict, description="a mapping from key to why its value is an estimate"
    )


class _SystemEntry(_Entry):
    id: str = Field(pattern=_ID_PATTERN, description="a lowercase id such as 'my-asic-8'")
    name: str = Field(min_length=1, description="a system name")
    device: str = Field(min_length=1, description="the id of the device it is built from")
    n_devices: int = Field(gt=0, description="accelerators per system, e.g. 8")
    power_kw: _PositiveEntry = Field(description="whole-system maximum power in kW, e.g. 10.2")
    idle_power_kw: _PositiveEntry | None = Field(
        default=None, description="whole-system idle power in kW, below power_kw"
    )
    price_usd: _PositiveEntry = Field(description="whole-system price in USD, e.g. 250000")
    scaleup_bw_gb_s_per_device: _PositiveEntry | None = Field(
        default=None, description="scale-up bandwidth per device, one direction, in GB/s"
    )
    scaleup_latency_us: _NonNegativeEntry | None = Field(
        default=None, description="latency per collective step inside the system in µs, e.g. 2"
    )
    scaleout_gbit_s_per_device: _PositiveEntry | None = Field(
        default=None, description="network bandwidth per device in Gbit/s, e.g. 400"
    )
    scaleout_latency_us: _NonNegativeEntry | None = Field(
        default=None, description="latency per step between systems in µs, e.g. 5"
    )
    source: str = Field(min_length=1, description="where the numbers come from")
    sources: dict[str, str] = Field(
        default_factory=dict, description="a mapping from key to source text"
    )


# File key -> the Device / System / MeshSpec field it sets.
_DEVICE_FIELD_OF_KEY: Final[dict[str, str]] = {
    "dense_bf16_tflops": "peak_flops_per_s",
    "dense_fp8_tflops": "peak_flops_per_s",
    "dense_fp4_tflops": "peak_flops_per_s",
    "mem_capacity_gb": "mem_capacity_bytes",
    "mem_bw_tb_s": "mem_bandwidth_bytes_per_s",
    "sram_mb": "sram_bytes",
    "scaleup_bw_gb_s_per_device": "scaleup_bandwidth_bytes_per_s",
    "scaleout_gbit_s_per_device": "scaleout_bandwidth_bytes_per_s",
    "tdp_w": "tdp_w",
    "cores": "cores",
    "clock_ghz": "clock_hz",
    "price_usd_estimate": "price_usd",
    "mesh": "mesh",
}
_SYSTEM_FIELD_OF_KEY: Final[dict[str, str]] = {
    "n_devices": "n_devices",
    "power_kw": "power_w",
    "idle_power_kw": "idle_power_w",
    "price_usd": "price_usd",
    "scaleup_bw_gb_s_per_device": "scaleup_bandwidth_bytes_per_s",
    "scaleup_latency_us": "scaleup_latency_s",
    "scaleout_gbit_s_per_device": "scaleout_bandwidth_bytes_per_s",
    "scaleout_latency_us": "scaleout_latency_s",
}
_MESH_FIELD_OF_KEY: Final[dict[str, str]] = {
    name: ("clock_hz" if name == "clock_ghz" else name)
    for name in _MeshEntry.model_fields
    if name != "sources"
}
# specs.csv columns that describe the usual system, not the device; systems.yaml holds systems.
_CSV_SYSTEM_COLUMNS: Final = ("system_name", "devices_per_system", "system_power_kw")
_CSV_INT_COLUMNS: Final = ("year", "cores")
_CSV_TEXT_COLUMNS: Final = (
    "id",
    "name",
    "vendor",
    "kind",
    "process",
    "mem_type",
    "verification",
    "source",
    "notes",
)


def _is_estimate(text: str) -> bool:
    return text.strip().lower().startswith("estimate")


# --- Turning validated entries into catalog objects ------------------------------------------


_NO_VALUE: Final = object()
_EntryT = TypeVar("_EntryT", bound="_Entry")


class _Fail:
    """Builds one-line InputErrors for one file: '<file>: <path> <rule>; got <value>. <fix>'."""

    def __init__(self, file: str) -> None:
        self.file = file

    def __call__(
        self, path: str, rule: str, value: object = _NO_VALUE, fix: str = ""
    ) -> InputError:
        got = "" if value is _NO_VALUE else f"; got {value!r}"
        tail = f" {fix}" if fix else ""
        return InputError(f"{self.file}: {path} {rule}{got}.{tail}")

    def from_validation(
        self, error: ValidationError, prefix: str, schema: type[BaseModel]
    ) -> InputError:
        """Turn the first problem of a pydantic ValidationError into a one-line InputError."""
        problems = error.errors(include_url=False)
        first = problems[0]
        loc = tuple(first["loc"])
        path = prefix + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
        more = f" ({len(problems) - 1} more problem(s) in this entry)" if len(problems) > 1 else ""
        owner, field = _schema_at(schema, loc)
        if first["type"] == "extra_forbidden":
            known = sorted(owner.model_fields) if owner else []
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            return InputError(
                f"{self.file}: {path} is not a known key; {hint}"
                f"known keys: {', '.join(known)}.{more}"
            )
        description = field.description if field is not None else None
        if first["type"] == "missing":
            what = f" ({description})" if description else ""
            return InputError(f"{self.file}: {path} is required but missing; add it{what}.{more}")
        rule = str(first["msg"])
        rule = rule.replace("Input should be", "must be").replace("Value error, ", "")
        rule = rule.replace("String should", "must").replace("Dictionary should", "must")
        fix = f" Expected {description}." if description else ""
        return InputError(f"{self.file}: {path} {rule}; got {first['input']!r}.{fix}{more}")


def _schema_at(
    schema: type[BaseModel], loc: tuple[int | str, ...]
) -> tuple[type[BaseModel] | None, Any]:
    """The model that owns the last key of `loc`, and that key's FieldInfo (or None)."""
    owner: type[BaseModel] | None = schema
    for part in loc[:-1]:
        if owner is None or not isinstance(part, str) or part not in owner.model_fields:
            return None, None
        annotation = owner.model_fields[part].annotation
        candidates = (annotation, *typing.get_args(annotation))
        owner = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
    if owner is None or not loc:
        return owner, None
    return owner, owner.model_fields.get(str(loc[-1]))


def _validate(schema: type[_EntryT], data: object, prefix: str, fail: _Fail) -> _EntryT:
    if not isinstance(data, dict):
        raise fail(prefix, "must be a mapping of key: value", type(data).__name__)
    try:
        return schema.model_validate(data)
    except ValidationError as error:
        raise fail.from_validation(error, prefix, schema) from None


def _mesh_from_entry(entry: _MeshEntry, path: str, fail: _Fail) -> MeshSpec:
    sources: dict[str, str] = {}
    for key, text in entry.sources.items():
        if key not in _MESH_FIELD_OF_KEY:
            close = difflib.get_close_matches(key, list(_MESH_FIELD_OF_KEY), n=1)
            fix = f"Did you mean {close[0]!r}?" if close else ""
            raise fail(f"{path}.sources.{key}", "is not a mesh key", fix=fix)
        sources[_MESH_FIELD_OF_KEY[key]] = text
    try:
        return MeshSpec(
            width_cores=entry.width_cores,
            height_cores=entry.height_cores,
            sram_per_core_bytes=entry.sram_per_core_bytes,
            simd_fp16_lanes=entry.simd_fp16_lanes,
            clock_hz=entry.clock_ghz * GIGA,
            cycles_per_hop=entry.cycles_per_hop,
            link_bytes_per_cycle=entry.link_bytes_per_cycle,
            sram_bytes_per_cycle_per_core=entry.sram_bytes_per_cycle_per_core,
            sources=sources,
        )
    except ValidationError as error:  # a finite figure that overflows once in SI units
        raise fail.from_validation(error, path, MeshSpec) from None


def _device_from_entry(entry: _DeviceEntry, path: str, fail: _Fail) -> Device:
    """Convert one validated device entry (human units) into a Device (SI units)."""
    estimated: dict[str, list[str]] = {}
    for key, why in entry.estimated.items():
        field = _DEVICE_FIELD_OF_KEY.get(key)
        if field is None:
            close = difflib.get_close_matches(key, list(_DEVICE_FIELD_OF_KEY), n=1)
            fix = f"Did you mean {close[0]!r}?" if close else ""
            raise fail(f"{path}.estimated.{key}", "is not a numeric device key", fix=fix)
        estimated.setdefault(field, []).append(f"{key}: {why}")

    mesh = _mesh_from_entry(entry.mesh, f"{path}.mesh", fail) if entry.mesh else None
    clock_hz = entry.clock_ghz * GIGA if entry.clock_ghz is not None else None
    if clock_hz is None and mesh is not None:
        clock_hz = mesh.clock_hz
        if _is_estimate(mesh.sources.get("clock_hz", "")):
            estimated.setdefault("clock_hz", ["clock_hz: the mesh clock, an estimate"])

    peaks = {
        dtype: value * TERA
        for dtype, value in (
            ("bf16", entry.dense_bf16_tflops),
            ("fp8", entry.dense_fp8_tflops),
            ("fp4", entry.dense_fp4_tflops),
        )
        if value is not None
    }
    notes = entry.notes
    if "bf16" not in peaks:
        if mesh is None:
            raise fail(
                f"{path}.dense_bf16_tflops",
                "is required (the 16-bit rate is the fallback for fp8 and fp4)",
                fix="Give the dense BF16 (or FP16) peak in TFLOP/s, or a `mesh` block for a wafer.",
            )
        cores = entry.cores if entry.cores is not None else mesh.n_cores
        peaks["bf16"] = cores * mesh.simd_fp16_lanes * 2 * mesh.clock_hz
        derivation = (
            f"bf16 peak derived: {cores} cores x {mesh.simd_fp16_lanes} FP16 lanes x 2 FLOP x "
            f"{mesh.clock_hz / GIGA:g} GHz = {peaks['bf16'] / 1e15:.2f} PFLOP/s"
        )
        estimated.setdefault("peak_flops_per_s", []).append(f"{derivation} (clock assumed)")

    if estimated:
        listed = "; ".join(why for reasons in estimated.values() for why in reasons)
        notes = f"{notes} Estimated or derived: {listed}.".strip()
    if memory_bytes(entry.vendor, entry.mem_type, entry.mem_capacity_gb) != entry.mem_capacity_gb * GB:
        notes = (
            f"{notes} Memory read as {entry.mem_capacity_gb:g} GiB "
            f"({entry.mem_capacity_gb * GIB / GB:,.1f} GB): {BINARY_HBM_NOTE}"
        ).strip()

    def scaled(value: float | None, factor: float) -> float | None:
        return None if value is None else value * factor

    try:
        return Device(
            id=entry.id,
            name=entry.name,
            vendor=entry.vendor,
            kind=entry.kind,
            year=entry.year,
            process=entry.process,
            peak_flops_per_s=peaks,
            mem_type=entry.mem_type,
            mem_capacity_bytes=memory_bytes(entry.vendor, entry.mem_type, entry.mem_capacity_gb),
            mem_bandwidth_bytes_per_s=entry.mem_bw_tb_s * TB,
            sram_bytes=scaled(entry.sram_mb, MB),
            scaleup_bandwidth_bytes_per_s=scaled(entry.scaleup_bw_gb_s_per_device, GB),
            scaleout_bandwidth_bytes_per_s=scaled(entry.scaleout_gbit_s_per_device, GIGA / 8),
            tdp_w=entry.tdp_w,
            cores=entry.cores,
            clock_hz=clock_hz,
            price_usd=entry.price_usd_estimate,
            mesh=mesh,
            verification=entry.verification,
            source=entry.source,
            notes=notes,
            estimated_fields=tuple(estimated),
        )
    except ValidationError as error:
        raise fail.from_validation(error, path, Device) from None


def _system_from_entry(entry: _SystemEntry, device: Device, path: str, fail: _Fail) -> System:
    """Convert one validated system entry (human units) into a System (SI units), filling the
    fields it leaves out from the device or the documented defaults."""
    for key in entry.sources:
        if key not in _SYSTEM_FIELD_OF_KEY:
            close = difflib.get_close_matches(key, list(_SYSTEM_FIELD_OF_KEY), n=1)
            fix = (
                f"Did you mean {close[0]!r}?"
                if close
                else f"Use one of {list(_SYSTEM_FIELD_OF_KEY)}."
            )
            raise fail(f"{path}.sources.{key}", "is not a sourced system key", fix=fix)
    given = entry.model_fields_set
    sources: dict[str, str] = {}

    def source(key: str) -> str:
        return entry.sources.get(key, entry.source)

    def from_device(field: str) -> str:
        prefix = "estimate: " if field in device.estimated_fields else ""
        return f"{prefix}from device {device.id!r} ({field}; see the device's source)"

    sources["n_devices"] = source("n_devices")
    power_w = entry.power_kw * KW
    sources["power_w"] = source("power_kw")
    price_usd = entry.price_usd
    sources["price_usd"] = source("price_usd")

    if entry.idle_power_kw is not None:
        idle_power_w = entry.idle_power_kw * KW
        sources["idle_power_w"] = source("idle_power_kw")
        if not idle_power_w < power_w:
            raise fail(
                f"{path}.idle_power_kw",
                f"must be below power_kw ({entry.power_kw:g})",
                entry.idle_power_kw,
                f"Leave it out to use {DEFAULT_IDLE_POWER_FRACTION:g} x power_kw.",
            )
    else:
        idle_power_w = DEFAULT_IDLE_POWER_FRACTION * power_w
        sources["idle_power_w"] = (
            f"estimate: default rule idle = {DEFAULT_IDLE_POWER_FRACTION:g} x power_w "
            "(accelerators idle while host, memory, NICs and fans stay on; not measured)"
        )

    scaleup: float | None
    if "scaleup_bw_gb_s_per_device" in given:
        scaleup = (
            None
            if entry.scaleup_bw_gb_s_per_device is None
            else (entry.scaleup_bw_gb_s_per_device * GB)
        )
        sources["scaleup_bandwidth_bytes_per_s"] = source("scaleup_bw_gb_s_per_device")
    elif entry.n_devices == 1:
        scaleup = None
        sources["scaleup_bandwidth_bytes_per_s"] = "one device per system: no scale-up fabric"
    else:
        scaleup = device.scaleup_bandwidth_bytes_per_s
        sources["scaleup_bandwidth_bytes_per_s"] = from_device("scaleup_bandwidth_bytes_per_s")

    scaleout: float | None
    if "scaleout_gbit_s_per_device" in given:
        scaleout = (
            None
            if entry.scaleout_gbit_s_per_device is None
            else (entry.scaleout_gbit_s_per_device * GIGA / 8)
        )
        sources["scaleout_bandwidth_bytes_per_s"] = source("scaleout_gbit_s_per_device")
    else:
        scaleout = device.scaleout_bandwidth_bytes_per_s
        sources["scaleout_bandwidth_bytes_per_s"] = from_device("scaleout_bandwidth_bytes_per_s")

    if entry.scaleout_latency_us is not None:
        scaleout_latency_s = entry.scaleout_latency_us / _US_PER_S
        sources["scaleout_latency_s"] = source("scaleout_latency_us")
    else:
        scaleout_latency_s = DEFAULT_SCALEOUT_LATENCY_S
        sources["scaleout_latency_s"] = (
            f"estimate: default {DEFAULT_SCALEOUT_LATENCY_S / US:g} µs per step between systems"
        )

    if entry.scaleup_latency_us is not None:
        scaleup_latency_s = entry.scaleup_latency_us / _US_PER_S
        sources["scaleup_latency_s"] = source("scaleup_latency_us")
    elif entry.n_devices == 1:
        scaleup_latency_s = scaleout_latency_s
        sources["scaleup_latency_s"] = (
            "estimate: one device per system has no scale-up step; set to the scale-out latency"
        )
    else:
        scaleup_latency_s = DEFAULT_SCALEUP_LATENCY_S
        sources["scaleup_latency_s"] = (
            f"estimate: default {DEFAULT_SCALEUP_LATENCY_S / US:g} µs per collective step"
        )

    try:
        return System(
            id=entry.id,
            name=entry.name,
            device_id=device.id,
            n_devices=entry.n_devices,
            scaleup_bandwidth_bytes_per_s=scaleup,
            scaleup_latency_s=scaleup_latency_s,
            scaleout_bandwidth_bytes_per_s=scaleout,
            scaleout_latency_s=scaleout_latency_s,
            power_w=power_w,
            idle_power_w=idle_power_w,
            price_usd=price_usd,
            sources=sources,
            estimated_fields=tuple(name for name, text in sources.items() if _is_estimate(text)),
        )
    except ValidationError as error:
        raise fail.from_validation(error, path, System) from None


# --- Reading files ---------------------------------------------------------------------------


def _parse_yaml(text: str, file: str) -> object:
    return load_yaml(text, file)


def _top_level(data: object, allowed: tuple[str, ...], fail: _Fail) -> dict[str, Any]:
    if data is None:
        raise InputError(
            f"{fail.file}: the file is empty; expected the keys {' and/or '.join(allowed)}."
        )
    if not isinstance(data, dict):
        raise InputError(
            f"{fail.file}: the top level must be a mapping with the keys "
            f"{' and/or '.join(allowed)}; got a {type(data).__name__}."
        )
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise InputError(
                f"{fail.file}: {key} is not a known top-level key; {hint}"
                f"known keys: {', '.join(allowed)}."
            )
    return data


def _list_of(data: dict[str, Any], key: str, fail: _Fail) -> list[Any]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise fail(
            key, "must be a list of entries (each starting with '- id: ...')", type(value).__name__
        )
    return value


def _systems(
    rows: list[Any], devices: Mapping[str, Device], fail: _Fail, base: Mapping[str, Device]
) -> dict[str, System]:
    """Validate the `systems:` list of a file; devices come from the file first, then `base`."""
    systems: dict[str, System] = {}
    first_index: dict[str, int] = {}
    for index, row in enumerate(rows):
        path = f"systems[{index}]"
        entry: _SystemEntry = _validate(_SystemEntry, row, path, fail)
        if entry.id in first_index:
            raise fail(
                f"{path}.id",
                f"repeats systems[{first_index[entry.id]}]",
                entry.id,
                "Ids must be unique within a file.",
            )
        first_index[entry.id] = index
        device = devices.get(entry.device) or base.get(entry.device)
        if device is None:
            known = sorted({*devices, *base})
            close = _suggestion(entry.device, known)
            hint = f"Did you mean {close!r}? " if close else ""
            raise fail(
                f"{path}.device",
                "is not a device in this file or the catalog",
                entry.device,
                f"{hint}Known devices: {', '.join(known)}.",
            )
        systems[entry.id] = _system_from_entry(entry, device, path, fail)
    return systems


def _read_user_file(path: str | os.PathLike[str]) -> str:
    return read_user_text(path, "hardware file", limit=MAX_CHARS)


def load_user_hardware(path: str | os.PathLike[str], *, base: Catalog | None = None) -> Catalog:
    """Read a user hardware YAML file into a Catalog of its own entries.

    The file has two optional lists, ``devices`` and ``systems``, in human units named in the keys
    (the specs.csv columns for devices; see ``data/hardware/README.md``)::

        devices:
          - {id: my-asic, name: My ASIC v1, vendor: Acme, kind: asic, dense_bf16_tflops: 800,
             dense_fp8_tflops: 1600, mem_capacity_gb: 128, mem_bw_tb_s: 4.0,
             scaleup_bw_gb_s_per_device: 400, tdp_w: 600, source: "Acme datasheet rev 3"}
        systems:
          - {id: my-asic-8, name: Acme 8-way box, device: my-asic, n_devices: 8,
             power_kw: 6.5, price_usd: 250000, source: "estimate"}

    A system may name a device of the same file or of `base` (the package catalog when None);
    the base devices it uses are included so the result stands alone. Unknown keys, wrong types,
    non-positive sizes, an unknown device: InputError naming the file and the field path.
    """
    file = os.fspath(path)
    fail = _Fail(file)
    data = _top_level(_parse_yaml(_read_user_file(path), file), ("devices", "systems"), fail)
    base_devices = (base if base is not None else _package_catalog()).devices

    devices: dict[str, Device] = {}
    first_index: dict[str, int] = {}
    for index, row in enumerate(_list_of(data, "devices", fail)):
        entry_path = f"devices[{index}]"
        entry: _DeviceEntry = _validate(_DeviceEntry, row, entry_path, fail)
        if entry.id in first_index:
            raise fail(
                f"{entry_path}.id",
                f"repeats devices[{first_index[entry.id]}]",
                entry.id,
                "Ids must be unique within a file.",
            )
        first_index[entry.id] = index
        devices[entry.id] = _device_from_entry(entry, entry_path, fail)

    systems = _systems(_list_of(data, "systems", fail), devices, fail, base_devices)
    for system in systems.values():
        if system.device_id not in devices:
            devices[system.device_id] = base_devices[system.device_id]
    return Catalog(devices=devices, systems=systems)


def _package_text(name: str) -> str:
    return resources.files("megawatt").joinpath(f"{_PACKAGE_DIR}/{name}").read_text("utf-8")


def _csv_rows(text: str) -> list[dict[str, Any]]:
    """specs.csv rows with blanks dropped and numeric columns parsed (ints where whole)."""
    rows: list[dict[str, Any]] = []
    for raw in csv.DictReader(io.StringIO(text)):
        row: dict[str, Any] = {}
        for column, cell in raw.items():
            value = (cell or "").strip()
            if not value or column in _CSV_SYSTEM_COLUMNS:
                continue
            if column in _CSV_TEXT_COLUMNS:
                row[column] = value
            elif column in _CSV_INT_COLUMNS:
                row[column] = int(value)
            else:
                number = float(value)
                if not math.isfinite(number):
                    raise CatalogError(f"specs.csv {raw['id']}.{column}: not a finite number")
                row[column] = number
        rows.append(row)
    return rows


def _package_catalog() -> Catalog:
    """The catalog shipped with megawatt: specs.csv devices, then the systems.yaml devices that
    specs.csv lacks, and the systems.yaml systems."""
    return _catalog_of(_package_text("systems.yaml"), _package_text("specs.csv"))


@lru_cache(maxsize=4)
def _catalog_of(systems_yaml: str, specs_csv: str) -> Catalog:
    """The package catalog built from the text of its two files, parsed once per process for
    the same text (a `Catalog` is immutable, so every caller may share it)."""
    csv_fail = _Fail("megawatt/data/hardware/specs.csv")
    yaml_file = "megawatt/data/hardware/systems.yaml"
    yaml_fail = _Fail(yaml_file)
    try:
        extra = _top_level(
            _parse_yaml(systems_yaml, yaml_file),
            ("device_supplements", "devices", "systems"),
            yaml_fail,
        )
        supplements = extra.get("device_supplements") or {}
        devices: dict[str, Device] = {}
        for row in _csv_rows(specs_csv):
            device_id = str(row.get("id"))
            supplement = supplements.get(device_id, {})
            if not isinstance(supplement, dict):
                raise yaml_fail(
                    f"device_supplements.{device_id}",
                    "must be a mapping",
                    type(supplement).__name__,
                )
            # A cross-check adds to the notes (it never replaces a specs.csv value).
            cross_check = supplement.get("cross_check")
            supplement = {k: v for k, v in supplement.items() if k != "cross_check"}
            if cross_check is not None:
                supplement["notes"] = f"{row.get('notes', '')} Cross-check: {cross_check}".strip()
                row = {k: v for k, v in row.items() if k != "notes"}
            clash = sorted(set(row) & set(supplement))
            if clash:
                raise yaml_fail(
                    f"device_supplements.{device_id}",
                    "repeats specs.csv values",
                    clash,
                    "Supplements may only fill blanks.",
                )
            entry: _DeviceEntry = _validate(
                _DeviceEntry, {**row, **supplement}, device_id, csv_fail
            )
            if device_id in devices:
                raise csv_fail(f"{device_id}.id", "repeats an earlier row", device_id)
            devices[device_id] = _device_from_entry(entry, device_id, csv_fail)
        stray = sorted(set(supplements) - set(devices))
        if stray:
            raise yaml_fail("device_supplements", "names devices not in specs.csv", stray)
        for index, data in enumerate(_list_of(extra, "devices", yaml_fail)):
            path = f"devices[{index}]"
            entry = _validate(_DeviceEntry, data, path, yaml_fail)
            if entry.id in devices:
                raise yaml_fail(
                    f"{path}.id", "repeats a device of specs.csv", entry.id, "Use device_supplements."
                )
            devices[entry.id] = _device_from_entry(entry, path, yaml_fail)
        systems = _systems(_list_of(extra, "systems", yaml_fail), devices, yaml_fail, {})
        return Catalog(devices=devices, systems=systems)
    except InputError as error:
        raise CatalogError(f"megawatt's own hardware data is inconsistent: {error}") from None


def load_catalog(*user_files: str | os.PathLike[str]) -> Catalog:
    """The package catalog (specs.csv + systems.yaml) with each user hardware YAML file merged in
    order: later files add entries or replace those with the same id."""
    catalog = _package_catalog()
    for path in user_files:
        catalog = catalog.merged(load_user_hardware(path, base=catalog))
    return catalog
