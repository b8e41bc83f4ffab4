"""Memory plans: what fits where (the wafer facts of shared/data/wafer/NOTES.md g.4), the KV
capacity that is left, and FitErrors whose way out actually works."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import pytest

from megawatt.errors import FitError
from megawatt.hardware import load_catalog
from megawatt.model import load_model, model_from_config
from megawatt.perf import Deployment, plan_memory, weight_bytes
from megawatt.plan import min_devices
from megawatt.units import GB, GIB

CATALOG = load_catalog()


def deployment(model_id: str, system_id: str, **settings: Any) -> Deployment:
    system = CATALOG.system(system_id)
    return Deployment(load_model(model_id), system, CATALOG.device(system.device_id), **settings)


def on_cs3(model_id: str, wafers: int = 1) -> Deployment:
    """A 16-bit model on `wafers` CS-3 systems, as Cerebras serves Llama 3.1."""
    return deployment(model_id, "cs-3", pp=wafers, weight_dtype="bf16", engine="cerebras")


# -- NOTES g.4.1: memory fit on CS-3 --------------------------------------------------------------


def test_llama_3_1_8b_at_16_bit_fits_one_cs3_in_about_a_third_of_its_sram() -> None:
    plan = plan_memory(on_cs3("llama-3.1-8b"))
    assert plan.memory == "SRAM"
    assert plan.capacity_bytes_per_device == 44 * GB
    assert plan.weight_bytes_total == pytest.approx(16 * GB, rel=0.01)
    assert plan.weight_bytes_total / plan.capacity_bytes_per_device == pytest.approx(0.36, abs=0.01)
    assert plan.kv_bytes_per_token == 131_072
    assert plan.kv_tokens > 0
    assert min_devices(on_cs3("llama-3.1-8b")) == 1


def test_llama_3_1_70b_at_16_bit_needs_exactly_four_cs3() -> None:
    with pytest.raises(FitError):
        plan_memory(on_cs3("llama-3.1-70b", wafers=3))
    plan = plan_memory(on_cs3("llama-3.1-70b", wafers=4))
    assert plan.weight_bytes_total == pytest.approx(141 * GB, rel=0.01)
    assert plan.kv_bytes_per_token == 327_680
    # NOTES g.4.2: at most ~35 GB left on 4 wafers -> at most ~107k tokens of context in all.
    assert 0 < plan.kv_tokens <= 107_000
    assert min_devices(on_cs3("llama-3.1-70b")) == 4


def test_llama_3_1_405b_at_16_bit_needs_at_least_19_cs3() -> None:
    dep = on_cs3("llama-3.1-405b")
    assert weight_bytes(dep).total == pytest.approx(810 * GB, rel=0.01)
    n = min_devices(dep)
    assert n >= 19
    plan_memory(replace(dep, pp=n))
    with pytest.raises(FitError):
        plan_memory(replace(dep, pp=n - 1))


# -- FitError messages --------------------------------------------------------------------------


@pytest.mark.parametrize(("model_id", "wafers"), [("llama-3.1-70b", 3), ("llama-3.1-405b", 18)])
def test_a_wafer_fit_error_names_the_sizes_and_the_wafer_count_that_works(model_id: str, wafers: int) -> None:
    dep = on_cs3(model_id, wafers)
    with pytest.raises(FitError) as err:
        plan_memory(dep)
    message = str(err.value)
    assert message.startswith(f"{model_id} does not fit on {wafers}x wse3 (44 GB SRAM")
    assert "GB in all" in message and "GB per device" in message
    match = re.search(r"Use pp >= (\d+) wafers\.$", message)
    assert match, message
    assert int(match.group(1)) == min_devices(dep)  # the way out is the true minimum


def test_405b_in_bf16_on_one_h100_names_the_model_device_and_tp() -> None:
    with pytest.raises(FitError) as err:
        plan_memory(deployment("llama-3.1-405b", "dgx-h100", tp=1, weight_dtype="bf16"))
    message = str(err.value)
    assert "llama-3.1-405b" in message
    assert "1x h100-sxm (80 GiB HBM" in message
    assert "weights 811.7 GB" in message
    assert "Use tp x pp >=" in message


# -- KV capacity --------------------------------------------------------------------------------

HEAVIER_WEIGHTS = [
    ("llama-3.1-8b", "hgx-h200", {"tp": 1}, "fp8", "bf16"),
    ("llama-3.1-70b", "hgx-h200", {"tp": 4}, "fp8", "bf16"),
    ("gpt-oss-120b", "gb200-nvl72", {"tp": 2}, "native", "bf16"),
    ("deepseek-v3", "gb200-nvl72", {"tp": 8}, "fp4", "fp8"),
]


@pytest.mark.parametrize(("model_id", "system_id", "plan", "light", "heavy"), HEAVIER_WEIGHTS)
def test_heavier_weights_leave_less_kv_capacity(
    model_id: str, system_id: str, plan: dict[str, int], light: str, heavy: str
) -> None:
    small = plan_memory(deployment(model_id, system_id, weight_dtype=light, **plan))
    large = plan_memory(deployment(model_id, system_id, weight_dtype=heavy, **plan))
    assert large.weight_bytes_per_device > small.weight_bytes_per_device
    assert large.kv_bytes < small.kv_bytes
    assert large.kv_tokens < small.kv_tokens


def test_an_fp8_cache_holds_twice_the_tokens() -> None:
    bf16 = plan_memory(deployment("llama-3.1-8b", "hgx-h200", weight_dtype="fp8"))
    fp8 = plan_memory(deployment("llama-3.1-8b", "hgx-h200", weight_dtype="fp8", kv_dtype="fp8"))
    assert fp8.kv_bytes == bf16.kv_bytes
    assert fp8.kv_tokens == pytest.approx(2 * bf16.kv_tokens, abs=1)


def test_an_hbm_plan_adds_up() -> None:
    plan = plan_memory(deployment("llama-3.1-70b", "hgx-h200", tp=8, weight_dtype="fp8"))
    assert plan.memory == "HBM"
    assert plan.usable_bytes_per_device == pytest.approx(0.9 * 141 * GIB)  # vendor GB are GiB
    assert plan.weight_bytes_per_device == pytest.approx(plan.weight_bytes_total / 8)
    assert plan.kv_bytes_per_device == pytest.approx(
        plan.usable_bytes_per_device - plan.weight_bytes_per_device - plan.workspace_bytes_per_device
    )
    assert plan.kv_replication == 1.0  # 8 KV heads over tp=8: one head per device
    assert plan.kv_bytes == pytest.approx(8 * plan.kv_bytes_per_device)


def test_kv_heads_are_replicated_when_tp_exceeds_them_and_mla_latents_always() -> None:
    qwen = plan_memory(deployment("qwen3-235b-a22b", "hgx-h200", tp=8, weight_dtype="fp8"))
    assert qwen.kv_replication == 2.0  # 4 KV heads on 8 devices
    deepseek = plan_memory(deployment("deepseek-v3", "gb200-nvl72", tp=8))
    assert deepseek.kv_replication == 8.0
    assert deepseek.kv_bytes == pytest.approx(deepseek.kv_bytes_per_device)


@pytest.mark.parametrize(
    ("model_id", "system_id"),
    [("gpt-oss-120b", "gb200-nvl72"), ("llama-4-scout", "gb200-nvl72"), ("qwen3-32b", "hgx-h200")],
)
@pytest.mark.parametrize("context", [1, 127, 128, 129, 8191, 8192, 100_000])
def test_a_sequence_holds_the_kv_bytes_its_model_says(model_id: str, system_id: str, context: int) -> None:
    dep = deployment(model_id, system_id, tp=2)
    plan = plan_memory(dep)
    assert plan.sequence_kv_bytes(context) == dep.model.kv_bytes(context, 2.0)
    n = plan.max_sequences(context)
    assert n * plan.sequence_kv_bytes(context) <= plan.kv_bytes
    assert (n + 1) * plan.sequence_kv_bytes(context) > plan.kv_bytes


def test_a_wafer_that_cannot_hold_one_layer_says_so() -> None:
    config = {
        "num_hidden_layers": 2,
        "hidden_size": 65_536,
        "num_attention_heads": 64,
        "vocab_size": 1000,
        "intermediate_size": 262_144,  # one MLP: 3 x 64Ki x 256Ki x 2 bytes = 103 GB
    }
    system = CATALOG.system("cs-3")
    dep = Deployment(model_from_config(config, "giant"), system, CATALOG.device("wse3"), engine="cerebras")
    with pytest.raises(FitError, match="One layer plus the embedding table exceeds a wafer"):
        plan_memory(dep)
