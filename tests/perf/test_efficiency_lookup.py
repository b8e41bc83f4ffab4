"""How a deployment finds its efficiencies: engine releases picked by date, calibration groups by
vendor and tensor-core generation, fitted values read from a calibration document (only the
fitted fields, only for fitted groups, only in the current format), and the prior otherwise."""

from __future__ import annotations

from typing import Any

import pytest

from megawatt.errors import CatalogError
from megawatt.hardware import load_catalog
from megawatt.perf import efficiencies_for, efficiency_key, prior
from megawatt.perf.efficiency import (
    AS_PUBLISHED,
    CALIBRATION_FORMAT,
    ENGINE_RELEASES,
    ENGINES,
    FITTED_FIELDS,
    PRIORS,
    WAFER_FITTED_FIELDS,
    engine_release,
    fitted,
    fitted_from,
    pick_release,
)

CATALOG = load_catalog()


# -- releases -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("engine", "date", "release"),
    [
        ("trtllm", "2024-08-28", "trtllm-2024"),
        ("trtllm", "2024-12", "trtllm-2024"),
        ("trtllm", "2025-01", "trtllm"),  # the first month of a release is in it
        ("trtllm", "2025-10-31", "trtllm"),
        ("trtllm", "2025-11", "trtllm-2025-11"),
        ("trtllm", "2025", "trtllm"),  # a year alone is its January
        ("trtllm", "2024", "trtllm-2024"),
        ("trtllm", "", "trtllm-2025-11"),  # undated: the newest
        ("trtllm", "sometime", "trtllm-2025-11"),
        ("vllm", "2024-09", "vllm-2024"),
        ("sglang", "2026-03-01", "sglang-2026-01"),
        ("cerebras", "2024-08", "cerebras-2024-08"),
        ("cerebras", "2024-10", "cerebras"),
        ("waferllm", "2020-01", "waferllm"),  # one release only: its own name
    ],
)
def test_a_measurements_date_picks_the_release_it_ran_on(engine: str, date: str, release: str) -> None:
    assert engine_release(engine, date) == release


def test_every_release_is_a_known_engine_with_a_prior_listed_newest_first() -> None:
    for engine, releases in ENGINE_RELEASES.items():
        starts = [start for start, _, _ in releases]
        assert starts == sorted(starts, reverse=True), engine
        assert starts[-1] == ""  # the oldest release covers everything before
        for _, release, what in releases:
            assert release in ENGINES
            assert what
            assert any(key[1] == release for key in PRIORS), release


def test_latest_and_as_published_name_releases() -> None:
    assert pick_release("trtllm", "latest") == "trtllm-2025-11"
    assert pick_release("trtllm", "as-published") == engine_release("trtllm", AS_PUBLISHED)
    assert pick_release("trtllm", "as-published") == "trtllm"
    assert pick_release("vllm", "2024-06") == "vllm-2024"


@pytest.mark.parametrize("release", ["2025-13", "2025-1", "25-01", "newest", "2025-00"])
def test_a_release_that_is_no_month_says_how_to_write_one(release: str) -> None:
    with pytest.raises(CatalogError, match=rf"engine_release must be latest, as-published or a "
                       rf"month YYYY-MM; got '{release}'\. Write e\.g\. engine_release: 2026-06\."):
        pick_release("vllm", release)


# -- calibration groups -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "engine", "key"),
    [
        ("h100-sxm", "trtllm", "gpu/nvidia-fp8/trtllm"),
        ("h200-sxm", "vllm", "gpu/nvidia-fp8/vllm"),
        ("gb200", "trtllm", "gpu/nvidia-fp4/trtllm"),
        ("wse3", "cerebras", "wafer/cerebras/cerebras"),
    ],
)
def test_calibration_groups_are_family_vendor_generation_and_engine(
    device: str, engine: str, key: str
) -> None:
    assert efficiency_key(CATALOG.device(device), engine) == key


def test_a_group_is_the_narrowest_native_format() -> None:
    for device in CATALOG.devices.values():
        if device.kind == "wafer":
            continue
        generation = efficiency_key(device, "vllm").split("/")[1].rsplit("-", 1)[1]
        assert device.has_native(generation), device.id
        narrower = {"bf16": ("fp8", "fp4"), "fp8": ("fp4",), "fp4": ()}[generation]
        assert not any(device.has_native(d) for d in narrower), device.id


# -- fitted values ------------------------------------------------------------------------------


def document(groups: dict[str, Any], fmt: int = CALIBRATION_FORMAT) -> dict[str, Any]:
    return {
        "format": fmt,
        "input": {"files": [{"file": "measurements.csv", "sha256": "0123456789abcdef"}]},
        "groups": groups,
    }


def test_a_fitted_group_replaces_only_the_fields_calibration_fits() -> None:
    """`seq_overhead_s` is never fitted: a value for it in the file is ignored."""
    doc = document({
        "gpu/nvidia-fp8/vllm": {
            "status": "fitted", "n_rows": 12,
            "values": {"compute": 0.5, "memory": 0.7, "seq_overhead_s": 1.0},
        },
    })
    got = fitted_from(doc)["gpu/nvidia-fp8/vllm"]
    base = prior("gpu", "vllm")
    assert (got.compute, got.memory) == (0.5, 0.7)
    assert got.seq_overhead_s == base.seq_overhead_s
    assert got.attention == base.attention
    assert got.source.startswith("fitted by `megawatt calibrate` on 12 published measurements of "
                                 "measurements.csv (sha256 0123456789ab)")
    assert base.source in got.source


def test_wafer_groups_fit_mesh_parameters_not_gpu_ones() -> None:
    doc = document({
        "wafer/cerebras/cerebras": {
            "status": "fitted", "n_rows": 3,
            "values": {"layer_fixed_cycles": 4_000, "attention": 0.9, "handoff_s": 2e-5},
        },
    })
    got = fitted_from(doc)["wafer/cerebras/cerebras"]
    assert got.layer_fixed_cycles == 4_000.0
    assert got.handoff_s == 2e-5
    assert got.attention == prior("wafer", "cerebras").attention  # not a wafer-fitted field
    assert "attention" not in WAFER_FITTED_FIELDS and "attention" in FITTED_FIELDS


def test_groups_not_fitted_and_files_of_another_format_are_ignored() -> None:
    groups = {
        "gpu/nvidia-fp8/vllm": {"status": "too few rows", "values": {"compute": 0.1}},
        "gpu/nvidia-fp8/sglang": {"status": "fitted", "values": {"compute": 0.2}},
    }
    assert list(fitted_from(document(groups))) == ["gpu/nvidia-fp8/sglang"]
    assert fitted_from(document(groups, fmt=CALIBRATION_FORMAT - 1)) == {}
    assert fitted_from({}) == {}


def test_a_fitted_group_without_recorded_files_says_so() -> None:
    doc = {"format": CALIBRATION_FORMAT, "groups": {
        "gpu/nvidia-fp8/vllm": {"status": "fitted", "values": {}},
    }}
    got = fitted_from(doc)["gpu/nvidia-fp8/vllm"]
    assert "on ? published measurements of unrecorded files" in got.source


def test_a_fitted_group_for_an_engine_without_a_prior_is_an_error() -> None:
    doc = document({"gpu/nvidia-fp8/tgi": {"status": "fitted", "values": {}}})
    with pytest.raises(CatalogError, match="no efficiency prior for family 'gpu' with engine 'tgi'"):
        fitted_from(doc)


def test_a_deployment_uses_its_groups_fitted_values_else_the_prior() -> None:
    """Whatever the packaged calibration holds, `efficiencies_for` is its entry for the group
    when there is one, the prior when not."""
    table = fitted()
    for device_id in ("h100-sxm", "h200-sxm", "gb200", "wse3"):
        device = CATALOG.device(device_id)
        engine = "cerebras" if device.kind == "wafer" else "vllm"
        key = efficiency_key(device, engine)
        expected = table.get(key, prior("wafer" if device.kind == "wafer" else "gpu", engine))
        assert efficiencies_for(device, engine) == expected
        for name in FITTED_FIELDS if device.kind != "wafer" else WAFER_FITTED_FIELDS:
            assert getattr(expected, name) >= 0.0


def test_release_aliases_share_their_priors() -> None:
    assert PRIORS[("gpu", "trtllm-2025-11")].prefill_layer_overhead_s == 0.5e-3
    assert PRIORS[("gpu", "trtllm")].prefill_layer_overhead_s == 0.05e-3
    assert PRIORS[("gpu", "trtllm-2024")] == PRIORS[("gpu", "trtllm")]
    assert PRIORS[("gpu", "atom")] == PRIORS[("gpu", "vllm")]
    assert PRIORS[("wafer", "waferllm")] == PRIORS[("wafer", "cerebras")]
