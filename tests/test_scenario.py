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


def test_a_scenario_says_which_engine_release_it_assumes(data: dict) -> None:
    """latest (default): each engine's newest release; as-published: the MLPerf-era release of
    published figures; a month: the release current then; a pool may differ from the rest."""
    from megawatt.scenario import pool_engine

    sc = parse_scenario(data, where="s.yaml")
    pool = sc.options[0].pools[0]  # vllm on H200
    assert sc.engine_release == "latest"
    trt = pool.model_copy(update={"engine": "trtllm"})
    assert pool_engine(sc, trt) == "trtllm-2025-11"
    published = parse_scenario(data, where="s.yaml", overrides=["engine_release=as-published"])
    assert pool_engine(published, trt) == "trtllm"
    dated = parse_scenario(data, where="s.yaml", overrides=["engine_release=2024-09"])
    assert pool_engine(dated, trt) == "trtllm-2024"
    own = trt.model_copy(update={"engine_release": "2026-06"})
    assert pool_engine(published, own) == "trtllm-2025-11"
    msg = _error(data, "engine_release=soon")
    assert "engine_release" in msg and "latest, as-published or a month YYYY-MM" in msg
    msg = _error(data, "options.0.pools.0.engine_release=2026-13")
    assert "options[0].pools[0].engine_release" in msg


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


# -- what used to be accepted silently (issue 11) ------------------------------------------------
@pytest.mark.parametrize("override", [
    "traffic.demand_prompts_per_day=inf", "traffic.demand_prompts_per_day=nan",
    "economics.electricity_usd_per_mwh=inf", "economics.contract_usd_per_mw_year=Infinity",
    "economics.it_amortisation_years=nan", "economics.facility_amortisation_years=inf",
    "slo.ttft_p99_s=inf", "budget.facility_mw=inf",
])
def test_a_non_finite_number_is_refused_in_any_field(data: dict, override: str) -> None:
    field = override.partition("=")[0]
    msg = _error(data, override)
    assert field in msg and "finite number" in msg


def test_yaml_infinity_in_a_file_or_a_set_value_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text((GOLDEN / "small.yaml").read_text().replace("demand_prompts_per_day: 1.0e9",
                                                                "demand_prompts_per_day: .inf"))
    with pytest.raises(ScenarioError, match=r"s.yaml line \d+, column \d+: .*'.inf' is not a finite"):
        load_scenario(path)
    assert "'.nan' is not a finite number" in _error(yaml.safe_load(
        (GOLDEN / "small.yaml").read_text()), "budget.pue=.nan")


def test_a_duplicate_key_in_a_scenario_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text((GOLDEN / "small.yaml").read_text().replace(
        "budget: {facility_mw: 2, pue: 1.25}", "budget: {facility_mw: 2, pue: 1.25, facility_mw: 1000}"))
    with pytest.raises(ScenarioError, match="duplicate key 'facility_mw'"):
        load_scenario(path)


def test_a_billion_laughs_under_traffic_mix_is_refused_before_anything_expands(tmp_path: Path) -> None:
    lines = ["c0: &c0 {name: a, share: 1, prompt: {kind: fixed, n_tokens: 1}, "
             "output: {kind: fixed, n_tokens: 1}}"]
    lines += [f"c{i}: &c{i} [" + ", ".join([f"*c{i - 1}"] * 10) + "]" for i in range(1, 9)]
    text = (GOLDEN / "small.yaml").read_text().split("traffic:")[0]
    path = tmp_path / "s.yaml"
    path.write_text("x-bomb:\n" + "\n".join("  " + line for line in lines) + "\n" + text
                    + "traffic: {mix: *c8}\nslo: {ttft_p99_s: 2.0, tpot_p99_s: 0.05}\n")
    assert len(path.read_bytes()) < 2000
    with pytest.raises(ScenarioError, match="billion laughs"):
        load_scenario(path)


@pytest.mark.parametrize(("override", "needle"), [
    ("fleet.duration_s=1e-9", "fleet.duration_s: must be greater than or equal to 1"),
    ("fleet.duration_s=0", "fleet.duration_s"),
    ("traffic.mix=[{name: chat, share: 1}]", "traffic.mix: mix class 'chat': missing key(s) prompt"),
    ("traffic.mix=[{name: a, share: 0.5, prompt: {kind: fixed, n_tokens: 9}, "
     "output: {kind: fixed, n_tokens: 9}}]", "traffic.mix: Mix shares must sum to 1"),
])
def test_values_that_ran_to_the_end_are_refused_at_load(data: dict, override: str, needle: str) -> None:
    assert needle in _error(data, override)


def test_a_one_second_simulation_is_a_valid_edge(data: dict) -> None:
    assert parse_scenario(data, overrides=["fleet.duration_s=1"]).fleet.duration_s == 1.0


@pytest.mark.parametrize(("override", "needle"), [
    ("name.foo=1", "'name' is str 'small example', not a mapping or list, so it has no field 'foo'"),
    ("seed.0=1", "'seed' is int 7, not a mapping or list, so it has no field '0'"),
    ("options..name=x", "has an empty part"),
    ("models.5=x", "'models.5' must index the list (0 to 0); got '5'"),
    ("traffic.mix=[1, &a [*a]]", "an alias refers to a value that contains it"),
])
def test_set_names_the_part_it_cannot_follow(data: dict, override: str, needle: str) -> None:
    msg = _error(data, override)
    assert needle in msg and "{part}" not in msg


def test_set_text_that_is_not_yaml_stays_text(data: dict) -> None:
    assert parse_scenario(data, overrides=["name=study: [draft"]).name == "study: [draft"


ASIC = (
    "devices:\n"
    "  - {id: my-asic, name: My ASIC, vendor: Acme, kind: asic, dense_bf16_tflops: 800,\n"
    "     mem_capacity_gb: 128, mem_bw_tb_s: 4.0, tdp_w: 600, source: Acme datasheet}\n"
    "systems:\n"
    "  - {id: %s, name: Acme box, device: my-asic, n_devices: 8, power_kw: 6.5,\n"
    "     price_usd: 250000, source: estimate}\n"
)


def test_extra_hardware_files_add_to_the_scenario_s_own(tmp_path: Path, data: dict) -> None:
    (tmp_path / "own.yaml").write_text(ASIC % "own-8")
    odd = tmp_path / 'we"ird\\dir'
    odd.mkdir()
    (odd / "more.yaml").write_text(ASIC % "more-8")
    data["hardware_files"] = ["own.yaml"]
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    sc = load_scenario(path, hardware_files=[odd / "more.yaml"])
    assert sc.hardware_files == [str(tmp_path / "own.yaml"), str(odd / "more.yaml")]
    catalog = sc.catalog()
    assert {"own-8", "more-8"} <= set(catalog.systems)


def test_a_bad_hardware_file_is_named_under_hardware_files(tmp_path: Path, data: dict) -> None:
    path = tmp_path / "hw.yaml"
    path.write_text("devices: [{id: a, id: b}]\n")
    with pytest.raises(ScenarioError, match=r"hardware_files: .*hw\.yaml line 1, column 19: .*duplicate"):
        parse_scenario(data, hardware_files=[path])


@pytest.mark.parametrize("content", [b"\x7fELF\x02\x01\x01\x00\xff\xfe", b"\x00" * 64],
                         ids=["elf", "zeros"])
def test_a_binary_scenario_is_one_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(content)
    with pytest.raises(ScenarioError, match=r"s\.yaml"):
        load_scenario(path)


def test_the_readme_set_example_targets_a_pool_that_accepts_it() -> None:
    import re

    from megawatt.study import check_plans

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    examples = re.findall(r"`megawatt run ((?:--set \S+ ?)+)`", readme)
    assert examples, "the README shows a --set example"
    for example in examples:
        overrides = re.findall(r"--set (\S+)", example)
        check_plans(load_scenario(None, overrides))
