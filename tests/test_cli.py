"""The command line: each verb works, bad input is one line on stderr, exit code 2, no
traceback, and Ctrl-C or SIGTERM is one line, exit code 130, workers reaped, nothing written."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from fuzz.harness import Zygote
from megawatt.cli import main

GOLDEN = Path(__file__).parent / "golden"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_hardware_show_wse3_prints_its_specs_with_sources(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "hardware", "show", "wse3")
    assert code == 0
    assert "44.0 GB" in out and "21,000" in out and "900000" in out
    assert "tweaktown" in out and "estimate" in out


def test_hardware_show_a_system(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "hardware", "show", "gb200-nvl72")
    assert code == 0 and "120.0 kW" in out


def test_hardware_show_gives_the_fitted_power_curve_of_an_amd_gpu(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = _run(capsys, "hardware", "show", "mi355x")
    assert code == 0
    assert "mi355x-8 power against load" in out and "0%/25%/50%/75%/100% load (fitted)" in out
    assert "calibrate-power" in out and "leave-one-out" in out


@pytest.mark.parametrize("id", ["dgx-h100", "h100-sxm"])
def test_hardware_show_gives_the_prior_power_curve_elsewhere(
    capsys: pytest.CaptureFixture[str], id: str
) -> None:
    code, out, _ = _run(capsys, "hardware", "show", id)
    assert code == 0
    assert "3.6 / 5.2 / 6.9 / 8.5 / 10.2 kW at 0%/25%/50%/75%/100% load (prior)" in out


def test_calibrate_power_writes_the_packaged_file_again(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from importlib import resources

    out_file = tmp_path / "curves.json"
    code, out, _ = _run(capsys, "calibrate-power", "--out", str(out_file))
    assert code == 0 and "gpu/amd" in out and "broken run" in out
    packaged = resources.files("megawatt").joinpath("data/power/curves.json").read_bytes()
    assert out_file.read_bytes() == packaged


def test_hardware_lists_every_device_and_system(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "hardware")
    assert code == 0
    for name in ("h100-sxm", "mi355x", "tpu-v7", "wse3", "groq-lpu", "cs-3", "hgx-h200"):
        assert name in out


def test_models_show_llama_70b_gives_parameters_and_kv_bytes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "models", "show", "llama-3.1-70b")
    assert code == 0
    assert "70.55B" in out and "327,680 bytes" in out


def test_models_lists_every_preset(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "models")
    assert code == 0 and "gpt-oss-120b" in out and "deepseek-v3" in out


def test_explain_shows_the_wafer_mapping(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "explain", "cs-3", "llama-3.1-70b", "--context", "4096")
    assert code == 0
    assert "4 wafer" in out and "cores per layer" in out and "latency" in out
    for needle in ("layers per wafer", "SRAM per wafer", "KV cache", "reduction hops (alpha)",
                   "wafer hand-offs", "weight streaming (MemoryX)", "throughput per wafer"):
        assert needle in out, needle


@pytest.mark.parametrize(("model_id", "wafers"), [("llama-3.1-405b", 22), ("gpt-oss-120b", 2)])
def test_explain_prints_the_wafer_count_and_kv_budget(
    capsys: pytest.CaptureFixture[str], model_id: str, wafers: int
) -> None:
    code, out, _ = _run(capsys, "explain", "cs-3", model_id, "--context", "8192")
    assert code == 0
    assert f"{wafers} wafer(s)" in out and "KV cache" in out and "fit in the KV cache" in out


def test_explain_speculative_decoding_and_weight_streaming(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "explain", "cs-3", "llama-3.1-70b", "--draft", "llama-3.1-8b")
    assert code == 0 and "speculative decoding (draft llama-3.1-8b" in out
    code, out, _ = _run(capsys, "explain", "cs-3", "llama-3.1-70b", "--weight-streaming")
    assert code == 0 and "streaming mapping" in out and "streamed from MemoryX" in out


def test_explain_wide_expert_parallelism(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(
        capsys, "explain", "dgx-h100", "deepseek-v3", "--tp", "32", "--ep", "32", "--attention-dp",
        "--context", "2000",
    )
    assert code == 0 and "tp32 ep32 attention-dp" in out and "routed experts" in out


@pytest.mark.parametrize(("argv", "needle"), [
    (("hardware", "show", "h300"), "unknown hardware id 'h300'"),
    (("models", "show", "llama-9"), "unknown model id"),
    (("explain", "dgx-h100", "llama-3.1-405b", "--tp", "1", "--weight-dtype", "bf16"), "does not fit"),
    (("explain", "dgx-h100", "deepseek-v3", "--ep", "8"), "--ep and --attention-dp need --tp"),
    (("explain", "dgx-h100", "deepseek-v3", "--tp", "16"), "unless attention is data-parallel"),
])
def test_errors_are_one_line_with_exit_code_2(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...],
                                              needle: str) -> None:
    code, _, err = _run(capsys, *argv)
    assert code == 2
    assert needle in err
    assert err.count("\n") == 1 and "Traceback" not in err


def _bad(tmp_path: Path, change: dict) -> Path:
    data = yaml.safe_load((GOLDEN / "small.yaml").read_text())
    for key, value in change.items():
        node = data
        *parents, last = key.split(".")
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        node[last] = value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(("change", "needle"), [
    ({"colour": "blue"}, "colour: unknown key"),
    ({"budget.facility_mw": -5}, "budget.facility_mw"),
    ({"options.0.pools.0.system": "h300-box"}, "options[0].pools[0].system: unknown system id"),
])
def test_megawatt_run_bad_yaml_is_a_one_line_error(
    tmp_path: Path, change: dict, needle: str, zygote: Zygote
) -> None:
    """Run as a process of its own (forked off the `zygote` fork server)."""
    path = _bad(tmp_path, change)
    proc = zygote.run(tmp_path, ("run", str(path), "--out", str(tmp_path / "o")))
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_a_budget_too_small_for_one_system_names_the_minimum(capsys: pytest.CaptureFixture[str],
                                                             tmp_path: Path) -> None:
    code, _, err = _run(capsys, "run", str(GOLDEN / "small.yaml"), "--set", "budget.facility_mw=0.01",
                        "--set", "simulation.n_requests=100", "--out", str(tmp_path), "--workers", "1")
    assert code == 2 and "minimum" in err and "power_share" in err


def test_run_writes_the_table_report_results_and_resolved_scenario(capsys: pytest.CaptureFixture[str],
                                                                   tmp_path: Path) -> None:
    code, out, _ = _run(capsys, "run", str(GOLDEN / "small.yaml"), "--set", "simulation.n_requests=150",
                        "--out", str(tmp_path), "--workers", "1")
    assert code == 0
    assert "H200 TP1" in out and "$/M tokens" in out
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["options"]) == 3
    assert "plotly" in (tmp_path / "report.html").read_text()
    resolved = yaml.safe_load((tmp_path / "scenario.resolved.yaml").read_text())
    assert resolved["simulation"]["n_requests"] == 150
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


# -- Ctrl-C and SIGTERM -------------------------------------------------------------------------
LONG_RUN = [str(GOLDEN / "small.yaml"), "--set", "simulation.n_requests=100000"]


@pytest.mark.parametrize(
    ("workers", "sig", "whole_group"),
    [
        ("1", signal.SIGINT, False),  # Ctrl-C, one process
        ("2", signal.SIGINT, True),  # a terminal's Ctrl-C reaches the workers too
        ("2", signal.SIGTERM, False),  # a service manager stopping the command
    ],
)
def test_an_interrupted_run_says_so_in_one_line_and_leaves_nothing(
    interrupted_cleanly: Callable[..., object], tmp_path: Path, workers: str, sig: int, whole_group: bool
) -> None:
    out = tmp_path / "out"
    interrupted_cleanly(
        ["run", *LONG_RUN, "--out", str(out), "--workers", workers],
        out,
        sig=sig,
        whole_group=whole_group,
        workers=workers != "1",
    )


@pytest.mark.parametrize(("verb", "sig"), [("validate", signal.SIGINT), ("calibrate", signal.SIGTERM)])
def test_interrupted_validation_and_calibration_stop_their_workers(
    interrupted_cleanly: Callable[..., object], tmp_path: Path, verb: str, sig: int
) -> None:
    target = tmp_path / "out.json"
    flag = "--json" if verb == "validate" else "--out"
    interrupted_cleanly([verb, "--workers", "2", flag, str(target)], target, sig=sig, whole_group=True,
                        workers=True)


# -- what a run costs -------------------------------------------------------------------------------
def test_a_run_too_large_for_memory_is_one_line_naming_the_estimate_and_the_flag(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = _run(capsys, "run", str(GOLDEN / "small.yaml"), "--set", "fleet.k=100000",
                        "--set", "fleet.duration_s=86400", "--out", str(tmp_path / "out"))
    assert code == 2 and err.count("\n") == 1
    assert "GB of memory" in err and "the memory limit is 4 GB" in err and "--max-memory-gb" in err
    assert not (tmp_path / "out").exists()
    code, _, err = _run(capsys, "run", str(GOLDEN / "small.yaml"), "--set", "simulation.n_requests=150",
                        "--max-memory-gb", "0.001", "--out", str(tmp_path / "out"))
    assert code == 2 and "the memory limit is 0.001 GB" in err


def test_a_long_run_gets_a_note_with_its_estimate_first(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("megawatt.study.LONG_RUN_S", 0.0)
    code, _, err = _run(capsys, "run", str(GOLDEN / "small.yaml"), "--set", "simulation.n_requests=150",
                        "--out", str(tmp_path), "--workers", "1")
    assert code == 0
    assert err.startswith("megawatt: note: this study will take a while: at least ") and "requests" in err


def test_the_default_memory_limit_is_the_librarys() -> None:
    from megawatt.cli import MEMORY_LIMIT_GB
    from megawatt.study import MEMORY_LIMIT_BYTES
    from megawatt.units import GB

    assert MEMORY_LIMIT_GB * GB == MEMORY_LIMIT_BYTES


# -- issue 11: refused early, one line, nothing half-written ------------------------------------
@pytest.mark.parametrize(("argv", "needle"), [
    (("run", "--workers", "0"), "'--workers': Input should be greater than or equal to 1; got '0'"),
    (("validate", "--workers=abc"), "'--workers': Input should be a valid integer"),
    (("explain", "cs-3", "llama-3.1-8b", "--context", "-5"), "'--context'"),
    (("explain", "h100-sxm", "llama-3.1-8b", "--tp", "0"), "'--tp'"),
    (("explain", "cs-3", "llama-3.1-70b", "--acceptance", "nan"), "'--acceptance'"),
    (("explain", "cs-3"), "Missing argument 'MODEL'"),
    (("run", "--colour", "blue"), "No such option: --colour"),
    (("frobnicate",), "No such command 'frobnicate'"),
    (("explain", "h100-sxm", "llama-3.1-8b", "--tp", "3"), "tp=3 does not split the attention"),
])
def test_command_line_mistakes_are_one_line_with_exit_code_2(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], needle: str
) -> None:
    code, out, err = _run(capsys, *argv)
    assert code == 2 and needle in err and out == ""
    assert err.startswith("megawatt: error: ") and err.count("\n") == 1


def test_explain_beyond_the_model_s_context_window_is_a_what_if_not_an_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = _run(capsys, "explain", "hgx-h200", "llama-3.1-8b", "--context", "200000")
    assert code == 0 and "sequences at 200,000 tokens" in out


def test_a_failed_run_leaves_the_old_out_folder_as_it_was(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("old results")
    (out / "scenario.resolved.yaml").write_text("old scenario")
    code, _, err = _run(capsys, "run", str(GOLDEN / "small.yaml"), "--set", "options.0.pools.0.tp=3",
                        "--out", str(out), "--workers", "1")
    assert code == 2 and "tp=3" in err
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "scenario.resolved.yaml"]
    assert (out / "scenario.resolved.yaml").read_text() == "old scenario"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_run_adds_hardware_files_to_the_scenario_s_own_even_with_odd_paths(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    odd = tmp_path / 'a "quoted" \\ dir'
    odd.mkdir()
    (odd / "asic.yaml").write_text(
        "devices:\n  - {id: my-asic, name: My ASIC, kind: asic, dense_bf16_tflops: 800,\n"
        "     mem_capacity_gb: 128, mem_bw_tb_s: 4.0, source: Acme datasheet}\n"
        "systems:\n  - {id: my-asic-8, name: Acme box, device: my-asic, n_devices: 8,\n"
        "     power_kw: 6.5, price_usd: 250000, source: estimate}\n")
    out = tmp_path / "out"
    code, _, err = _run(capsys, "run", str(GOLDEN / "small.yaml"), "--hardware", str(odd / "asic.yaml"),
                        "--set", "options=[{name: A, pools: [{system: my-asic-8, tp: 1}]}]",
                        "--set", "simulation.n_requests=100", "--set", "fleet.simulate_demand=false",
                        "--out", str(out), "--workers", "1")
    assert code == 0, err
    resolved = yaml.safe_load((out / "scenario.resolved.yaml").read_text())
    assert resolved["hardware_files"] == [str(odd / "asic.yaml")]


def test_validate_checks_its_json_path_before_replaying(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "f").write_text("x")
    code, out, err = _run(capsys, "validate", "--json", str(tmp_path / "f" / "v.json"))
    assert code == 2 and "--json" in err and "which is a file" in err and out == ""
    code, _, err = _run(capsys, "validate", "--json", str(tmp_path))
    assert code == 2 and "is a folder" in err
    code, _, err = _run(capsys, "calibrate", "--out", str(tmp_path / "f" / "c.json"))
    assert code == 2 and "--out" in err and "which is a file" in err


# -- plan ---------------------------------------------------------------------------------------
TINY_PLAN = Path(__file__).parent / "deal" / "tiny.yaml"


def test_plan_prints_the_build_plan_npv_shortfall_and_tornado_and_writes_its_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = ("plan", str(TINY_PLAN), "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"),
            "--workers", "1", "--draws", "8")
    code, out, err = _run(capsys, *argv)
    assert code == 0, err
    for needle in ("Build plan: optimised", "Build plan: deal as announced", "NPV over 2026Q1-2026Q4",
                   "P(shortfall)", "Is Wafer deal better than the best alternative?",
                   "Inputs that move the answer most", "4 runs simulated, 0 from the cache"):
        assert needle in out, needle
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["plan.html", "plan.json", "plan.resolved.yaml"]
    first = (tmp_path / "out" / "plan.json").read_text()
    code, out, _ = _run(capsys, *argv)
    assert code == 0 and "0 runs simulated, 4 from the cache" in out
    assert (tmp_path / "out" / "plan.json").read_text() == first


def test_plan_compare_judges_another_deal(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    deal = yaml.safe_load(TINY_PLAN.read_text())["deal"]
    deal.update(name="Cheap wafers", tranches=[{"period": "2026Q2", "mw": 2}])
    deal["supplier"]["contract_usd_per_mw_year"] = 1.0e6
    (tmp_path / "deal.yaml").write_text(yaml.safe_dump(deal))
    code, out, err = _run(capsys, "plan", str(TINY_PLAN), "--compare", str(tmp_path / "deal.yaml"),
                          "--out", str(tmp_path / "out"), "--no-cache", "--workers", "1", "--draws", "4")
    assert code == 0, err
    assert "Is Cheap wafers better than the best alternative? Better" in out
    assert json.loads((tmp_path / "out" / "plan.json").read_text())["deal"]["name"] == "Cheap wafers"


def test_plan_refuses_a_bad_plan_in_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = _run(capsys, "plan", str(TINY_PLAN), "--set", "deal.tranches.0.period=2031Q1",
                          "--out", str(tmp_path / "out"), "--no-cache")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "deal.tranches[0].period must fall between" in err and not (tmp_path / "out").exists()
