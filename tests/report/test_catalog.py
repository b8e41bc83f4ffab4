"""The catalog tables behind `megawatt hardware` and `megawatt models`: one row per device, system
and preset model; one entry's figures with their units, sources and estimate marks."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.table import Table

from megawatt.errors import MegawattError
from megawatt.hardware import Catalog, load_catalog
from megawatt.model import load_model, presets
from megawatt.report.catalog import device_table, hardware_tables, model_table, models_table, system_table


@pytest.fixture(scope="module")
def cat() -> Catalog:
    return load_catalog()


def _text(table: Table) -> str:
    out = io.StringIO()
    Console(file=out, width=240).print(table)
    return out.getvalue()


def _cells(table: Table, column: int) -> list[str]:
    return [str(c) for c in table.columns[column].cells]


def test_the_hardware_tables_list_every_device_then_every_system_by_id(cat: Catalog) -> None:
    devices, systems = hardware_tables(cat)
    assert _cells(devices, 0) == sorted(cat.devices)
    assert _cells(systems, 0) == sorted(cat.systems)
    h100 = _cells(devices, 0).index("h100-sxm")
    assert _cells(devices, 3)[h100] == f"{cat.device('h100-sxm').peak_flops_per_s['bf16'] / 1e12:,.0f}"


def test_a_missing_figure_is_a_dash(cat: Catalog) -> None:
    devices, _ = hardware_tables(cat)
    no_fp4 = sorted(d.id for d in cat.devices.values() if "fp4" not in d.peak_flops_per_s)
    assert no_fp4, "the catalog has a device without FP4"
    assert _cells(devices, 5)[_cells(devices, 0).index(no_fp4[0])] == "-"


def test_a_device_shows_its_sources_systems_and_power_curve(cat: Catalog) -> None:
    text = _text(device_table(cat, "h100-sxm"))
    assert "TFLOP/s" in text and "source" in text and "dgx-h100" in text and "power against load" in text


def test_a_system_shows_each_figure_with_its_source(cat: Catalog) -> None:
    text = _text(system_table(cat, "gb200-nvl72"))
    assert "gb200 x 72" in text and "kW peak" in text and "GB/s per device" in text


def test_an_unknown_device_is_the_catalog_s_error(cat: Catalog) -> None:
    with pytest.raises(MegawattError, match="unknown hardware id 'h300'"):
        device_table(cat, "h300")


def test_the_models_table_has_one_row_per_preset() -> None:
    table = models_table()
    assert _cells(table, 0) == [m.id for m in presets()]


def test_a_model_shows_its_parameters_and_kv_bytes() -> None:
    text = _text(model_table(load_model("llama-3.1-70b")))
    assert "70.55B" in text and "327,680 bytes" in text
