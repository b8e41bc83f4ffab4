"""A deployment is validated data: its plan, its precisions per component and its efficiencies."""

from __future__ import annotations

import re
from typing import Any

import pytest

from megawatt.errors import CatalogError, InputError
from megawatt.hardware import load_catalog
from megawatt.model import load_model
from megawatt.perf import Deployment, prior

CATALOG = load_catalog()


def deployment(model_id: str, system_id: str, **settings: Any) -> Deployment:
    system = CATALOG.system(system_id)
    return Deployment(load_model(model_id), system, CATALOG.device(system.device_id), **settings)


INVALID = [
    ("hgx-h200", {"tp": 16}, "tp must fit in one hgx-h200 scale-up domain (8 devices) unless"),
    ("hgx-h200", {"tp": 0}, "tp must be an integer >= 1; got 0"),
    ("hgx-h200", {"pp": 1.5}, "pp must be an integer >= 1; got 1.5"),
    ("hgx-h200", {"max_num_seqs": 0}, "max_num_seqs must be an integer >= 1"),
    ("hgx-h200", {"weight_dtype": "int4"}, "weight_dtype must be one of native, bf16, fp8, fp4"),
    ("hgx-h200", {"kv_dtype": "fp4"}, "kv_dtype must be one of bf16, fp8; got 'fp4'"),
    ("hgx-h200", {"tp": 2, "ep": 4}, "ep must be <= tp x pp = 2; got 4"),
    ("hgx-h200", {"gpu_memory_utilization": 1.5}, "gpu_memory_utilization must be in [0.1, 1.0]; got 1.5"),
    ("cs-3", {"tp": 2, "engine": "cerebras"}, "tp must be 1 on wafer-scale engines"),
]


@pytest.mark.parametrize(("system_id", "settings", "message"), INVALID)
def test_invalid_settings_are_input_errors_naming_the_field(
    system_id: str, settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(InputError, match=re.escape(f"deployment.{message}")):
        deployment("llama-3.1-8b", system_id, **settings)


def test_a_wafer_replica_spans_wafers_with_pp() -> None:
    dep = deployment("llama-3.1-70b", "cs-3", pp=4, weight_dtype="bf16", engine="cerebras")
    assert dep.family == "wafer"
    assert dep.n_devices == 4
    assert dep.replicas_per_system == 0.25
    assert dep.label == "llama-3.1-70b on wse3 x4 4 wafers bf16"


def test_a_gpu_replica_label_names_its_plan() -> None:
    dep = deployment("llama-3.1-70b", "hgx-h200", tp=4, pp=2, weight_dtype="fp8")
    assert dep.family == "gpu"
    assert dep.label == "llama-3.1-70b on h200-sxm x8 tp4 pp2 fp8"


def test_native_precision_follows_the_published_formats() -> None:
    dep = deployment("gpt-oss-120b", "gb200-nvl72")
    assert dep.weight_dtype_of("experts") == "fp4"
    assert dep.weight_dtype_of("attention") == "bf16"
    assert dep.weight_bytes_per_param("experts") == pytest.approx(4.25 / 8)  # MXFP4 with scales
    assert dep.compute_dtype_of("experts") == "fp4"  # Blackwell has a native FP4 rate


def test_fp4_on_a_model_published_in_fp8_quantises_the_routed_experts_only() -> None:
    # nvidia/DeepSeek-R1-FP4: only the linear operators in MoE are FP4; the rest stays FP8.
    dep = deployment("deepseek-v3", "gb200-nvl72", tp=8, weight_dtype="fp4")
    assert dep.weight_dtype_of("experts") == "fp4"
    assert dep.weight_dtype_of("attention") == "fp8" and dep.weight_dtype_of("mlp") == "fp8"
    # A model published in 16 bits is FP4 throughout.
    dense = deployment("llama-3.1-405b", "gb200-nvl72", tp=8, weight_dtype="fp4")
    assert dense.weight_dtype_of("attention") == "fp4"


def test_fp4_chosen_on_nvidia_is_nvfp4_and_published_fp4_is_mxfp4() -> None:
    # NVFP4: an FP8 scale per 16 values (4.5 bits); MXFP4: an E8M0 scale per 32 (4.25 bits).
    chosen = deployment("llama-3.1-70b", "gb200-nvl72", tp=2, weight_dtype="fp4")
    assert chosen.weight_bytes_per_param("mlp") == pytest.approx(4.5 / 8)
    published = deployment("gpt-oss-120b", "gb200-nvl72")
    assert published.weight_bytes_per_param("experts") == pytest.approx(4.25 / 8)
    amd = deployment("llama-3.1-70b", "mi355x-8", tp=2, weight_dtype="fp4")
    assert amd.weight_bytes_per_param("mlp") == pytest.approx(4.25 / 8)


def test_weight_only_quantisation_computes_in_bf16_without_a_native_rate() -> None:
    dep = deployment("gpt-oss-120b", "hgx-h200")  # Hopper: no FP4 tensor-core rate
    assert dep.compute_dtype_of("experts") == "bf16"
    assert dep.peak_flops_of("experts") == dep.device.peak_flops_for("bf16")


def test_a_chosen_weight_dtype_applies_to_linear_layers_but_not_embeddings() -> None:
    dep = deployment("llama-3.1-8b", "hgx-h200", weight_dtype="fp8", kv_dtype="fp8")
    assert dep.weight_dtype_of("mlp") == "fp8"
    assert dep.weight_dtype_of("embedding") == "bf16"
    assert dep.peak_flops_of("mlp") == dep.device.peak_flops_for("fp8")
    assert dep.kv_bytes_per_element == 1.0


def test_efficiencies_default_to_the_family_and_engine_prior() -> None:
    assert deployment("llama-3.1-8b", "hgx-h200").eff == prior("gpu", "vllm")
    wafer = deployment("llama-3.1-8b", "cs-3", engine="other")  # no calibrated group
    assert wafer.eff == prior("wafer", "other")
    with pytest.raises(CatalogError, match="no efficiency prior for family 'gpu' with engine"):
        _ = deployment("llama-3.1-8b", "hgx-h200", engine="cerebras").eff
