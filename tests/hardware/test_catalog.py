"""Stories about the hardware catalog: the package data, lookups, and user hardware files."""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from importlib import resources
from pathlib import Path

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from megawatt.errors import CatalogError, InputError
from megawatt.hardware import (
    DEFAULT_IDLE_POWER_FRACTION,
    Catalog,
    Device,
    System,
    load_catalog,
    load_user_hardware,
)

SPEC_ROWS = list(
    csv.DictReader(
        io.StringIO(
            resources.files("megawatt").joinpath("data/hardware/specs.csv").read_text("utf-8")
        )
    )
)
CATALOG = load_catalog()
SYSTEM_IDS = list(CATALOG.systems)
# Devices the steering specs.csv lacks, written in systems.yaml `devices:` with their sources.
YAML_DEVICE_IDS = ["b300"]

# The systems the rest of megawatt (scenarios, the default 750 MW comparison) refers to by id.
EXPECTED_SYSTEMS = {
    "a100-8": "a100-sxm-80gb",
    "dgx-h100": "h100-sxm",
    "hgx-h200": "h200-sxm",
    "gh200": "gh200",
    "dgx-b200": "b200",
    "gb200-nvl72": "gb200",
    "gb300-nvl72": "gb300",
    "dgx-b300": "b300",
    "mi300x-8": "mi300x",
    "mi325x-8": "mi325x",
    "mi355x-8": "mi355x",
    "tpu-v5e-8": "tpu-v5e",
    "tpu-v5p-4": "tpu-v5p",
    "tpu-v6e-8": "tpu-v6e",
    "tpu-v7-4": "tpu-v7",
    "trn2-16": "trainium2",
    "cs-2": "wse2",
    "cs-3": "wse3",
    "groq-rack": "groq-lpu",
    "sambanova-sn40l-16": "sambanova-rdu",
    "maia-100-4": "maia-100",
    "qualcomm-ai100-ultra": "qualcomm-cloud-ai-100-ultra",
}

NUMERIC_SYSTEM_FIELDS = (
    "n_devices",
    "power_w",
    "idle_power_w",
    "price_usd",
    "scaleup_bandwidth_bytes_per_s",
    "scaleup_latency_s",
    "scaleout_bandwidth_bytes_per_s",
    "scaleout_latency_s",
)

ASIC_YAML = """\
devices:
  - id: my-asic
    name: My ASIC v1
    vendor: Acme
    kind: asic
    dense_bf16_tflops: 800
    dense_fp8_tflops: 1600
    mem_capacity_gb: 128
    mem_bw_tb_s: 4.0
    scaleup_bw_gb_s_per_device: 400
    tdp_w: 600
    source: "Acme datasheet rev 3"
systems:
  - id: my-asic-8
    name: Acme 8-way box
    device: my-asic
    n_devices: 8
    power_kw: 6.5
    price_usd: 250000
    source: "estimate"
"""


def write(tmp_path: Path, text: str, name: str = "hw.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def number(cell: str) -> float | None:
    return float(cell) if cell.strip() else None


# --- The package data -------------------------------------------------------------------------


def test_spec_ids_are_unique_and_each_is_a_device() -> None:
    ids = [row["id"] for row in SPEC_ROWS]
    assert len(ids) == len(set(ids))
    assert list(CATALOG.devices) == ids + YAML_DEVICE_IDS


@pytest.mark.parametrize("row", SPEC_ROWS, ids=lambda row: row["id"])
def test_each_spec_row_is_converted_to_si(row: dict[str, str]) -> None:
    device = CATALOG.device(row["id"])
    assert (device.name, device.vendor, device.kind) == (row["name"], row["vendor"], row["kind"])
    assert device.verification == row["verification"]
    binary = row["vendor"] in ("NVIDIA", "AMD") and row["mem_type"].upper().startswith("HBM")
    unit = 2**30 if binary else 1e9  # GPU vendors' HBM "GB" are GiB (catalog.BINARY_HBM_VENDORS)
    assert device.mem_capacity_bytes == pytest.approx(float(row["mem_capacity_gb"]) * unit)
    assert device.mem_bandwidth_bytes_per_s == pytest.approx(float(row["mem_bw_tb_s"]) * 1e12)
    for dtype in ("bf16", "fp8", "fp4"):
        tflops = number(row[f"dense_{dtype}_tflops"])
        if tflops is not None:
            assert device.peak_flops_per_s[dtype] == pytest.approx(tflops * 1e12)
    scaleup = number(row["scaleup_bw_gb_s_per_device"])
    if scaleup is not None:
        assert device.scaleup_bandwidth_bytes_per_s == pytest.approx(scaleup * 1e9)
    scaleout = number(row["scaleout_gbit_s_per_device"])
    if scaleout is not None:
        assert device.scaleout_bandwidth_bytes_per_s == pytest.approx(scaleout * 1e9 / 8)
    price = number(row["price_usd_estimate"])
    assert device.price_usd == price
    if price is not None:
        assert "price_usd" in device.estimated_fields


def test_h100_numbers_arrive_in_si_units() -> None:
    h100 = CATALOG.device("h100-sxm")
    assert h100.peak_flops_per_s["bf16"] == pytest.approx(989.4e12)
    assert h100.mem_bandwidth_bytes_per_s == pytest.approx(3.35e12)
    assert h100.scaleup_bandwidth_bytes_per_s == pytest.approx(450e9)
    assert h100.scaleout_bandwidth_bytes_per_s == pytest.approx(50e9)
    assert h100.mem_capacity_bytes == pytest.approx(80 * 2**30)  # "80 GB" HBM: 80 GiB
    assert h100.tdp_w == 700


def test_gb200_has_a_native_fp4_rate_of_ten_petaflops() -> None:
    gb200 = CATALOG.device("gb200")
    assert gb200.peak_flops_per_s["fp4"] == pytest.approx(1e16)
    assert gb200.has_native("fp4")


def test_b300_has_the_recalled_dgx_b300_datasheet_rates_marked_as_estimates() -> None:
    b300 = CATALOG.device("b300")
    assert (b300.vendor, b300.kind, b300.verification) == ("NVIDIA", "gpu", "estimate")
    assert b300.peak_flops_per_s == pytest.approx({"bf16": 2.25e15, "fp8": 4.5e15, "fp4": 1.35e16})
    assert b300.mem_capacity_bytes == pytest.approx(288 * 2**30)  # vendor HBM GB are GiB
    assert b300.mem_bandwidth_bytes_per_s == pytest.approx(8e12)
    assert b300.scaleup_bandwidth_bytes_per_s == pytest.approx(900e9)
    assert b300.scaleout_bandwidth_bytes_per_s == pytest.approx(800e9 / 8)
    assert b300.tdp_w == 1400  # FACTS.md C.4
    recalled = {"peak_flops_per_s", "mem_capacity_bytes", "mem_bandwidth_bytes_per_s",
                "scaleup_bandwidth_bytes_per_s", "scaleout_bandwidth_bytes_per_s", "price_usd"}
    assert set(b300.estimated_fields) == recalled
    assert "NOT retrieved" in b300.source and "DGX B300 datasheet" in b300.source


def test_b300_sits_between_b200_and_gb300() -> None:
    b200, b300, gb300 = (CATALOG.device(i) for i in ("b200", "b300", "gb300"))
    for dtype in ("bf16", "fp8", "fp4"):
        assert b200.peak_flops_per_s[dtype] <= b300.peak_flops_per_s[dtype]
        assert b300.peak_flops_per_s[dtype] <= gb300.peak_flops_per_s[dtype]
    assert b300.mem_capacity_bytes == gb300.mem_capacity_bytes > b200.mem_capacity_bytes


def test_dgx_b300_draws_the_sourced_14_5_kw() -> None:
    dgx = CATALOG.system("dgx-b300")
    assert (dgx.device_id, dgx.n_devices) == ("b300", 8)
    assert dgx.power_w == pytest.approx(14.5e3)
    assert "power_w" not in dgx.estimated_fields and "FACTS.md C.4" in dgx.sources["power_w"]
    assert dgx.scaleout_bandwidth_bytes_per_s == pytest.approx(100e9)


def test_gb300_is_cross_checked_and_its_rack_power_cites_the_shared_range() -> None:
    gb300 = CATALOG.device("gb300")
    assert "Cross-check: megawatt, recalled and not retrieved here" in gb300.notes
    assert gb300.scaleout_bandwidth_bytes_per_s == pytest.approx(100e9)
    assert "scaleout_bandwidth_bytes_per_s" in gb300.estimated_fields
    rack = CATALOG.system("gb300-nvl72")
    assert 120e3 <= rack.power_w <= 140e3
    assert "120-140 kW" in rack.sources["power_w"] and "power_w" in rack.estimated_fields


def test_a_yaml_device_may_not_repeat_a_spec_row(monkeypatch: pytest.MonkeyPatch) -> None:
    from megawatt.hardware import catalog as module

    real = module._package_text

    def fake(name: str) -> str:
        text = real(name)
        return text.replace("  - id: b300\n", "  - id: b200\n", 1) if name == "systems.yaml" else text

    monkeypatch.setattr(module, "_package_text", fake)
    with pytest.raises(CatalogError, match=r"devices\[0\]\.id repeats a device of specs.csv"):
        load_catalog()


def test_wse3_has_a_mesh_and_a_derived_estimated_peak() -> None:
    wse3 = CATALOG.device("wse3")
    assert wse3.mesh is not None
    assert (wse3.mesh.width_cores, wse3.mesh.height_cores) == (762, 1172)
    assert wse3.mesh.sram_per_core_bytes == 49152
    assert wse3.mesh.simd_fp16_lanes == 8
    assert wse3.mesh.sources["clock_hz"].startswith("estimate")
    assert wse3.peak_flops_per_s["bf16"] == pytest.approx(900_000 * 8 * 2 * 1.1e9)
    assert {"peak_flops_per_s", "clock_hz"} <= set(wse3.estimated_fields)
    assert wse3.mem_capacity_bytes == pytest.approx(44e9)


def test_only_wafers_have_meshes() -> None:
    with_mesh = {d.id for d in CATALOG.devices.values() if d.mesh is not None}
    assert with_mesh == {d.id for d in CATALOG.devices.values() if d.kind == "wafer"}


@pytest.mark.parametrize("device_id", list(CATALOG.devices))
def test_lower_precision_is_never_slower(device_id: str) -> None:
    device = CATALOG.device(device_id)
    assert device.peak_flops_for("fp4") >= device.peak_flops_for("fp8")
    assert device.peak_flops_for("fp8") >= device.peak_flops_for("bf16") > 0


# --- Systems ------------------------------------------------------------------------------------


def test_the_expected_systems_exist_on_their_devices() -> None:
    for system_id, device_id in EXPECTED_SYSTEMS.items():
        assert CATALOG.system(system_id).device_id == device_id


@pytest.mark.parametrize("system_id", SYSTEM_IDS)
def test_each_system_is_consistent_and_sourced(system_id: str) -> None:
    system = CATALOG.system(system_id)
    device = CATALOG.device(system.device_id)
    assert system.power_w > system.idle_power_w > 0
    if device.tdp_w is not None:
        assert system.power_w >= system.n_devices * device.tdp_w
    assert set(NUMERIC_SYSTEM_FIELDS) <= set(system.sources)
    assert all(text.strip() for text in system.sources.values())
    assert "price_usd" in system.estimated_fields
    for field in system.estimated_fields:
        assert "estimate" in system.sources[field].lower()


def test_every_spec_system_size_and_sourced_power_is_in_systems_yaml() -> None:
    for row in SPEC_ROWS:
        systems = CATALOG.systems_for(row["id"])
        assert systems, f"{row['id']} has no system"
        if row["devices_per_system"]:
            match = [s for s in systems if s.n_devices == int(row["devices_per_system"])]
            assert match, f"{row['id']}: no system of {row['devices_per_system']} devices"
            if row["system_power_kw"]:
                assert match[0].power_w == pytest.approx(float(row["system_power_kw"]) * 1e3)


def test_default_idle_power_follows_the_stated_rule() -> None:
    dgx = CATALOG.system("dgx-h100")
    assert dgx.idle_power_w == pytest.approx(DEFAULT_IDLE_POWER_FRACTION * dgx.power_w)
    assert "0.35" in dgx.sources["idle_power_w"]


def test_a_one_wafer_system_has_no_scaleup_fabric_but_ethernet_out() -> None:
    cs3 = CATALOG.system("cs-3")
    assert cs3.n_devices == 1
    assert cs3.scaleup_bandwidth_bytes_per_s is None
    assert cs3.scaleout_bandwidth_bytes_per_s == pytest.approx(1.2e12 / 8)
    assert cs3.scaleout_latency_s == pytest.approx(10e-6)
    assert cs3.power_w == pytest.approx(23e3)
    assert cs3.price_usd == pytest.approx(2.5e6)


# --- Lookups ------------------------------------------------------------------------------------


def test_peak_flops_fall_back_to_the_next_wider_native_rate() -> None:
    h100, a100, gb200 = (CATALOG.device(i) for i in ("h100-sxm", "a100-sxm-80gb", "gb200"))
    assert h100.peak_flops_for("fp4") == h100.peak_flops_per_s["fp8"]
    assert not h100.has_native("fp4")
    assert a100.peak_flops_for("fp8") == a100.peak_flops_per_s["bf16"]
    assert a100.peak_flops_for("fp4") == a100.peak_flops_per_s["bf16"]
    assert a100.peak_flops_for("fp16") == a100.peak_flops_per_s["bf16"]
    assert a100.has_native("fp16")
    assert gb200.peak_flops_for("fp4") == pytest.approx(1e16)


@pytest.mark.parametrize("dtype", ["fp32", "int4", "BF16"])
def test_unsupported_dtypes_are_input_errors(dtype: str) -> None:
    with pytest.raises(InputError, match="bf16"):
        CATALOG.device("h100-sxm").peak_flops_for(dtype)


def test_an_unknown_device_lists_the_known_ids_and_suggests_one() -> None:
    with pytest.raises(CatalogError) as caught:
        CATALOG.device("h300")
    message = str(caught.value)
    assert message.startswith("unknown hardware id 'h300'; known: a100-sxm-80gb, b200, ")
    assert "did you mean 'h200-sxm'?" in message


def test_a_system_id_given_as_device_points_to_the_device() -> None:
    with pytest.raises(CatalogError, match="'dgx-h100' is a system; its device is 'h100-sxm'"):
        CATALOG.device("dgx-h100")


def test_an_unknown_system_lists_system_ids_and_the_systems_of_a_device() -> None:
    with pytest.raises(CatalogError) as caught:
        CATALOG.system("h100-sxm")
    message = str(caught.value)
    assert "known: a100-8, cs-2, cs-3, dgx-b200, dgx-b300, dgx-h100" in message
    assert "systems with it: dgx-h100" in message


def test_systems_for_a_device() -> None:
    assert [s.id for s in CATALOG.systems_for("h100-sxm")] == ["dgx-h100"]
    with pytest.raises(CatalogError):
        CATALOG.systems_for("h300")


def test_the_catalog_and_its_entries_are_immutable_and_hashable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        CATALOG.devices = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        CATALOG.devices["x"] = CATALOG.device("b200")  # type: ignore[index]
    with pytest.raises(pydantic.ValidationError):
        CATALOG.device("b200").tdp_w = 1.0  # type: ignore[misc]
    assert len({CATALOG.device("wse3"), CATALOG.device("wse3"), CATALOG.system("cs-3")}) == 2


def test_a_catalog_refuses_a_system_whose_device_is_missing() -> None:
    with pytest.raises(CatalogError, match="names device 'b200'"):
        Catalog(devices={}, systems={"dgx-b200": CATALOG.system("dgx-b200")})


def test_a_system_built_in_code_gets_its_price_marked_as_an_estimate() -> None:
    system = System(
        id="box",
        name="box",
        device_id="h100-sxm",
        n_devices=2,
        scaleup_latency_s=2e-6,
        scaleout_latency_s=5e-6,
        power_w=2000,
        idle_power_w=500,
        price_usd=60000,
        sources={"price_usd": "quote"},
    )
    assert system.estimated_fields == ("price_usd",)
    assert system.sources["price_usd"] == "estimate: quote"


# --- User hardware files -----------------------------------------------------------------------


def test_a_custom_asic_loads_converts_and_merges(tmp_path: Path) -> None:
    user = load_user_hardware(write(tmp_path, ASIC_YAML))
    asic = user.device("my-asic")
    assert asic.peak_flops_per_s == {"bf16": pytest.approx(800e12), "fp8": pytest.approx(1.6e15)}
    assert asic.mem_capacity_bytes == pytest.approx(128e9)
    assert asic.mem_bandwidth_bytes_per_s == pytest.approx(4e12)
    assert asic.scaleup_bandwidth_bytes_per_s == pytest.approx(400e9)
    assert asic.verification == "estimate"

    box = user.system("my-asic-8")
    assert box.power_w == pytest.approx(6500)
    assert box.idle_power_w == pytest.approx(0.35 * 6500)
    assert box.scaleup_bandwidth_bytes_per_s == pytest.approx(400e9)
    assert box.scaleup_latency_s == pytest.approx(2e-6)
    assert {"price_usd", "power_w", "idle_power_w"} <= set(box.estimated_fields)

    merged = CATALOG.merged(user)
    assert merged.system("my-asic-8").device_id == "my-asic"
    assert merged.device("h100-sxm") == CATALOG.device("h100-sxm")
    assert load_catalog(tmp_path / "hw.yaml") == merged


def test_a_user_device_overrides_a_built_in_one_for_its_systems(tmp_path: Path) -> None:
    text = ASIC_YAML.replace("id: my-asic\n", "id: h100-sxm\n").split("systems:")[0]
    catalog = load_catalog(write(tmp_path, text))
    assert catalog.device("h100-sxm").mem_bandwidth_bytes_per_s == pytest.approx(4e12)
    assert catalog.system("dgx-h100").device_id == "h100-sxm"


def test_a_user_system_may_use_a_built_in_device(tmp_path: Path) -> None:
    text = """\
systems:
  - id: h100-2
    name: Two H100s
    device: h100-sxm
    n_devices: 2
    power_kw: 2.8
    idle_power_kw: 0.6
    price_usd: 2.5e5
    scaleout_latency_us: 4
    source: "my own estimate"
    sources: {power_kw: "measured at the wall"}
"""
    user = load_user_hardware(write(tmp_path, text))
    system = user.system("h100-2")
    assert user.device("h100-sxm") == CATALOG.device("h100-sxm")
    assert system.price_usd == 2.5e5
    assert system.scaleout_latency_s == 4e-6
    assert system.scaleup_bandwidth_bytes_per_s == pytest.approx(450e9)
    assert "power_w" not in system.estimated_fields
    assert system.sources["power_w"] == "measured at the wall"


def test_a_later_file_sees_the_devices_of_an_earlier_one(tmp_path: Path) -> None:
    first = write(tmp_path, ASIC_YAML.split("systems:")[0], "a.yaml")
    second = write(tmp_path, "systems:" + ASIC_YAML.split("systems:")[1], "b.yaml")
    assert load_catalog(first, second).system("my-asic-8").device_id == "my-asic"


def test_a_user_wafer_gets_its_peak_from_its_mesh(tmp_path: Path) -> None:
    text = """\
devices:
  - id: my-wafer
    name: My wafer
    kind: wafer
    mem_capacity_gb: 10
    mem_bw_tb_s: 1000
    source: "made up"
    mesh: {width_cores: 100, height_cores: 100, sram_per_core_bytes: 1.0e6,
           simd_fp16_lanes: 4, clock_ghz: 1.0, cycles_per_hop: 1, link_bytes_per_cycle: 4,
           sram_bytes_per_cycle_per_core: 24}
"""
    wafer = load_user_hardware(write(tmp_path, text)).device("my-wafer")
    assert wafer.peak_flops_per_s["bf16"] == pytest.approx(100 * 100 * 4 * 2 * 1e9)
    assert wafer.clock_hz == pytest.approx(1e9)
    assert "peak_flops_per_s" in wafer.estimated_fields


def device_yaml(**overrides: object) -> str:
    fields: dict[str, object] = {
        "id": "my-asic",
        "name": "My ASIC",
        "kind": "asic",
        "dense_bf16_tflops": 800,
        "mem_capacity_gb": 128,
        "mem_bw_tb_s": 4.0,
        "source": "datasheet",
    }
    fields.update(overrides)
    body = "\n".join(f"    {key}: {value}" for key, value in fields.items() if value is not None)
    return "devices:\n  - " + body.lstrip() + "\n"


BOX = (
    "systems:\n  - {id: box, name: Box, device: %s, n_devices: 8, power_kw: 6.5, "
    "price_usd: 250000, source: estimate%s}\n"
)

BAD_FILES = {
    "unknown key": (
        device_yaml(mem_bw_tbs=4),
        ["hw.yaml: devices[0].mem_bw_tbs is not a known key", "did you mean 'mem_bw_tb_s'?"],
    ),
    "negative bandwidth": (
        device_yaml(mem_bw_tb_s=-1),
        ["hw.yaml: devices[0].mem_bw_tb_s must be greater than 0; got -1", "TB/s"],
    ),
    "zero capacity": (
        device_yaml(mem_capacity_gb=0),
        ["devices[0].mem_capacity_gb must be greater than 0; got 0"],
    ),
    "a word for a number": (
        device_yaml(tdp_w="six hundred"),
        ["devices[0].tdp_w must be a valid number; got 'six hundred'", "in W"],
    ),
    "unknown kind": (
        device_yaml(kind="xpu"),
        ["devices[0].kind must be 'gpu', 'tpu', 'wafer', 'lpu', 'rdu' or 'asic'; got 'xpu'"],
    ),
    "missing bandwidth": (
        device_yaml(mem_bw_tb_s=None),
        ["devices[0].mem_bw_tb_s is required but missing", "TB/s"],
    ),
    "no 16-bit rate": (
        device_yaml(dense_bf16_tflops=None, dense_fp8_tflops=100),
        ["devices[0].dense_bf16_tflops is required"],
    ),
    "unknown device": (
        BOX % ("h300", ""),
        ["hw.yaml: systems[0].device is not a device", "got 'h300'", "Did you mean 'h200-sxm'?"],
    ),
    "idle above max": (
        BOX % ("h100-sxm", ", idle_power_kw: 7"),
        ["systems[0].idle_power_kw must be below power_kw (6.5); got 7"],
    ),
    "unknown source key": (
        BOX % ("h100-sxm", ", sources: {power: x}"),
        ["systems[0].sources.power is not a sourced system key", "'power_kw'"],
    ),
    "repeated id": (
        device_yaml() + "  - " + device_yaml().split("  - ")[1],
        ["devices[1].id repeats devices[0]"],
    ),
    "duplicate yaml key": (
        "devices:\n  - id: a\n    id: b\n",
        ["line 3, column 5: not valid YAML: duplicate key 'id'"],
    ),
    "bad yaml": ("devices: [\n", ["hw.yaml line 2, column 1: not valid YAML"]),
    "empty file": ("", ["hw.yaml: the file is empty"]),
    "unknown top-level key": ("device: []\n", ["device is not a known top-level key"]),
    "entries not a list": ("devices: {id: a}\n", ["devices must be a list of entries"]),
}


@pytest.mark.parametrize(("text", "fragments"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_a_bad_user_file_is_one_clear_input_error(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    with pytest.raises(InputError) as caught:
        load_user_hardware(write(tmp_path, text))
    message = str(caught.value)
    assert "\n" not in message
    assert str(tmp_path / "hw.yaml") in message
    for fragment in fragments:
        assert fragment in message
    assert not isinstance(caught.value, pydantic.ValidationError)
    error = caught.value
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


def test_the_readme_example_loads(tmp_path: Path) -> None:
    readme = resources.files("megawatt").joinpath("data/hardware/README.md").read_text("utf-8")
    example = readme.split("```yaml\n")[1].split("```")[0]
    catalog = load_catalog(write(tmp_path, example))
    assert catalog.system("my-asic-8").device_id == "my-asic"
    assert "tdp_w" in catalog.device("my-asic").estimated_fields


def test_broken_package_data_is_a_catalog_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from megawatt.hardware import catalog as module

    real = module._package_text
    stray = (
        "  - {id: x, name: X, device: h300, n_devices: 1, power_kw: 1, price_usd: 1, source: s}\n"
    )

    def fake(name: str) -> str:
        return real(name) + stray if name == "systems.yaml" else real(name)

    monkeypatch.setattr(module, "_package_text", fake)
    with pytest.raises(
        CatalogError, match=r"own hardware data is inconsistent: .*systems\[\d+\]\.device"
    ):
        load_catalog()


def test_a_mesh_figure_that_overflows_in_si_units_is_an_input_error(tmp_path: Path) -> None:
    mesh = ("{width_cores: 100, height_cores: 100, sram_per_core_bytes: 48000, simd_fp16_lanes: 8, "
            "clock_ghz: 1.0e308, cycles_per_hop: 1, link_bytes_per_cycle: 4, "
            "sram_bytes_per_cycle_per_core: 24}")
    text = (f"devices:\n  - {{id: w, name: W, kind: wafer, dense_bf16_tflops: 800, mem_capacity_gb: 1, "
            f"mem_bw_tb_s: 1, sram_mb: 100, source: x, mesh: {mesh}}}\n")
    with pytest.raises(InputError, match=r"devices\[0\]\.mesh\.clock_hz must be a finite number; got inf"):
        load_user_hardware(write(tmp_path, text))


def test_a_missing_user_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_catalog(tmp_path / "nope.yaml")


@given(bandwidth_tb_s=st.floats(min_value=1e-3, max_value=1e5), capacity_gb=st.integers(1, 10**6))
def test_any_positive_user_figures_arrive_scaled_to_si(
    tmp_path_factory: pytest.TempPathFactory, bandwidth_tb_s: float, capacity_gb: int
) -> None:
    path = write(
        tmp_path_factory.mktemp("hw"),
        device_yaml(mem_bw_tb_s=repr(bandwidth_tb_s), mem_capacity_gb=capacity_gb),
    )
    device: Device = load_user_hardware(path, base=CATALOG).device("my-asic")
    assert math.isclose(device.mem_bandwidth_bytes_per_s, bandwidth_tb_s * 1e12)
    assert device.mem_capacity_bytes == capacity_gb * 1e9
