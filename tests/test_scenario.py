"""Scenario files: validated YAML, unknown keys and bad values are one-line errors naming the
field, `--set` overrides any field, the resolved scenario round-trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from megawatt.errors import ScenarioError
from megawatt.scenario import default_scenario_text, load_scenario, parse_scenario

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture
def data() -> dict:
    return yaml.safe_load((GOLDEN / "small.yaml").read_text())


def _error(data: dict, *overrides: str) -> str:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(data, where="s.yaml", overrides=list(overrides))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_the_default_scenario_answers_the_750_mw_question() -> None:
    sc = load_scenario()
    assert sc.budget.facility_mw == 750
    assert sc.models[0] == "gpt-oss-120b" and "llama-3.3-70b" in sc.models
    systems = {p.system for o in sc.options for p in o.pools}
    assert {"cs-3", "gb200-nvl72", "hgx-h200"} <= systems
    assert len(sc.options) >= 3
    assert "FACTS.md" in default_scenario_text()


def test_the_resolved_scenario_round_trips(data: dict) -> None:
    sc = parse_scenario(data)
    again = parse_scenario(yaml.safe_load(sc.dump()))
    assert again == sc
    assert again.economics.electricity_usd_per_mwh == 70.0  # a default, now written out


def test_an_unknown_key_is_named_with_the_known_ones(data: dict) -> None:
    data["colour"] = "blue"
    msg = _error(data)
    assert "colour" in msg and "unknown key" in msg and "budget" in msg


def test_an_unknown_nested_key_gives_its_path(data: dict) -> None:
    data["options"][1]["pools"][0]["tpp"] = 2
    msg = _error(data)
    assert "options[1].pools[0].tpp" in msg and "max_num_seqs" in msg


@pytest.mark.parametrize(("override", "needle"), [
    ("budget.facility_mw=-5", "budget.facility_mw"),
    ("budget.facility_mw=0", "greater than 0"),
    ("budget.pue=0.5", "budget.pue"),
    ("slo.ttft_p99_s=abc", "slo.ttft_p99_s"),
    ("options.0.pools.0.power_share=1.5", "power_share"),
    ("options.2.pools.0.power_share=0.9", "sum to at most 1"),
    ("options.0.pools.0.scheduler=magic", "vllm"),
])
def test_bad_values_name_the_field_the_rule_and_the_value(data: dict, override: str, needle: str) -> None:
    msg = _error(data, override)
    assert needle in msg and "got" in msg


def test_an_unknown_hardware_id_suggests_a_close_one(data: dict) -> None:
    msg = _error(data, "options.0.pools.0.system=hgx-h300")
    assert "options[0].pools[0].system" in msg and "hgx-h200" in msg


def test_an_unknown_model_id_is_named(data: dict) -> None:
    msg = _error(data, "models=[llama-9]")
    assert "models[0]" in msg and "llama-9" in msg


def test_an_engine_must_suit_the_hardware_family(data: dict) -> None:
    msg = _error(data, "options.1.pools.0.engine=vllm")
    assert "options[1].pools[0].engine" in msg and "cerebras" in msg


def test_set_overrides_nested_fields_and_list_items(data: dict) -> None:
    sc = parse_scenario(data, overrides=["budget.facility_mw=3.5", "options.0.pools.0.tp=2",
                                         "models=[llama-3.1-8b, qwen3-32b]"])
    assert sc.budget.facility_mw == 3.5
    assert sc.options[0].pools[0].tp == 2
    assert sc.models == ["llama-3.1-8b", "qwen3-32b"]


def test_set_rejects_a_bad_index_or_form(data: dict) -> None:
    assert "index" in _error(data, "options.9.name=x")
    assert "key=value" in _error(data, "budget.facility_mw")


def test_a_yaml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbudget: {facility_mw: 1\n")
    with pytest.raises(ScenarioError, match=r"bad.yaml line \d"):
        load_scenario(bad)


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="does not exist"):
        load_scenario(tmp_path / "nope.yaml")


def test_a_scenario_can_bring_its_own_accelerator(tmp_path: Path, data: dict) -> None:
    (tmp_path / "asic.yaml").write_text(
        "devices:\n"
        "  - {id: my-asic, name: My ASIC, vendor: Acme, kind: asic, dense_bf16_tflops: 800,\n"
        "     dense_fp8_tflops: 1600, mem_capacity_gb: 128, mem_bw_tb_s: 4.0,\n"
        "     scaleup_bw_gb_s_per_device: 400, tdp_w: 600, source: Acme datasheet}\n"
        "systems:\n"
        "  - {id: my-asic-8, name: Acme box, device: my-asic, n_devices: 8, power_kw: 6.5,\n"
        "     price_usd: 250000, source: estimate}\n")
    data["hardware_files"] = ["asic.yaml"]
    data["options"][0]["pools"][0]["system"] = "my-asic-8"
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    sc = load_scenario(path)
    assert sc.catalog().system("my-asic-8").n_devices == 8


def test_a_budget_is_power_or_money_not_both(data: dict) -> None:
    assert "not both" in _error(data, "budget.capex_usd=1e9")
    sc = parse_scenario(data, overrides=["budget.facility_mw=null", "budget.capex_usd=1e9"])
    assert sc.budget.kind == "money" and "$1B capital" in sc.budget.describe()


def test_without_a_budget_every_pool_needs_a_count(data: dict) -> None:
    msg = _error(data, "budget.facility_mw=null")
    assert "n_systems" in msg and "options[0].pools[0]" in msg


# -- plan, speculation and weight-streaming settings of a pool ------------------------------------
@pytest.mark.parametrize(("overrides", "needle"), [
    (["options.0.pools.0.tp=null", "options.0.pools.0.ep=8"], "ep needs tp"),
    (["options.0.pools.0.ep=8"], "ep must be at most tp x pp"),
    (["options.0.pools.0.attention_dp=true"], "attention_dp needs tp >= 2"),
    (["options.0.pools.0.tp=null", "options.0.pools.0.weight_streaming=true"],
     "options[0].pools[0].weight_streaming"),
    (["options.1.pools.0.speculative={draft_tokens: 3}"], "speculative.draft_model"),
    (["options.0.pools.0.speculative={draft_model: llama-3.1-8b}"], "MTP or EAGLE"),
    (["options.1.pools.0.speculative={draft_model: llama-0b}"], "llama-0b"),
    (["options.0.pools.0.speculative={acceptance: 1.5}"], "acceptance"),
])
def test_pool_deployment_settings_are_checked(data: dict, overrides: list[str], needle: str) -> None:
    assert needle in _error(data, *overrides)


def test_pool_settings_reach_the_deployment_and_its_replica(data: dict) -> None:
    from megawatt.model import load_model
    from megawatt.perf.speculative import SpeculativeStepModel
    from megawatt.plan import candidates
    from megawatt.serving import ReplicaConfig
    from megawatt.study import _settings

    sc = parse_scenario(data, overrides=[
        "options.0.pools.0.tp=2",
        "options.0.pools.0.speculative={draft_tokens: 2, acceptance: 0.7, draft_cost: 0.05}",
        "options.1.pools.0.speculative={draft_model: llama-3.1-8b}",
    ])
    catalog = sc.catalog()
    model = load_model("llama-3.1-8b")
    for i in (0, 1):
        pool = sc.options[i].pools[0]
        system = catalog.system(pool.system)
        (dep, *_) = candidates(model, system, catalog.device(system.device_id), _settings(pool, sc))
        assert dep.speculation is not None
        step = ReplicaConfig.of(dep).step_model
        assert isinstance(step, SpeculativeStepModel)
        if dep.family == "wafer":  # the draft's cost is its measured pass on the wafers
            assert dep.draft_model is not None and dep.draft_model.id == "llama-3.1-8b"
            assert step.speculation.draft_cost != pool.speculative.draft_cost
        else:
            assert dep.tp == 2 and step.speculation.draft_tokens == 2
            assert step.speculation.draft_cost == 0.05
