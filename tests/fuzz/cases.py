"""The bad inputs, grouped by what they break: scenario files, `--set` overrides, hardware
files, model config.json files, measurement CSVs, output paths and command-line values. Each is
a `Case`: the command line, the files it reads (written into the case's folder) and a fragment
the one-line error must contain. `VALID_BASE` is the scenario they start from; it runs to the
end in about a second, so an input that slips through fails its case instead of hanging it.
Signal cases (exit 130) go in `SIGNAL_CASES` at the end."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from .harness import Case, SignalCase

VALID_BASE = """\
name: fuzz base
seed: 1
budget: {facility_mw: 2, pue: 1.25}
models: [llama-3.1-8b]
options:
  - name: H200
    pools: [{system: hgx-h200, engine: vllm, tp: 1, weight_dtype: fp8}]
  - name: CS-3
    pools: [{system: cs-3, engine: cerebras, pp: 1}]
traffic:
  mix:
    - {name: chat, share: 1.0, prompt: {kind: lognormal, median: 800, sigma: 0.8, max_tokens: 8000},
       output: {kind: lognormal, median: 120, sigma: 0.8, max_tokens: 2000}}
  demand_prompts_per_day: 1.0e8
slo: {ttft_p99_s: 2.0, tpot_p99_s: 0.05}
simulation: {n_requests: 100}
fleet: {simulate_demand: false}
"""

RUN_TAIL = ("--out", "out", "--workers", "1")


def edit(old: str, new: str, text: str = VALID_BASE) -> str:
    """`text` (the base scenario) with one piece replaced, which must be there."""
    assert old in text, old
    return text.replace(old, new, 1)


def laughs(levels: int, width: int = 10, item: str = "1") -> list[str]:
    """YAML lines of a 'billion laughs': `levels` anchors, each `width` aliases of the last."""
    lines = [f"l0: &l0 [{', '.join([item] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return lines


def group(name: str, cases: list[Case]) -> list[Case]:
    """The cases with ids prefixed by their group, e.g. 'scenario: empty file'."""
    return [Case(f"{name}: {c.id}", c.argv, c.needle, c.files, c.fifos) for c in cases]


def run_file(case_id: str, text: str | bytes, needle: str) -> Case:
    """`megawatt run s.yaml` with `text` as the scenario."""
    return Case(case_id, ("run", "s.yaml", *RUN_TAIL), needle, {"s.yaml": text})


def run_set(case_id: str, override: str | bytes, needle: str) -> Case:
    """`megawatt run s.yaml --set OVERRIDE` on the valid base scenario."""
    return Case(case_id, ("run", "s.yaml", "--set", override, *RUN_TAIL), needle, {"s.yaml": VALID_BASE})


# -- scenario files ------------------------------------------------------------------------------
_MIX = VALID_BASE[VALID_BASE.index("    - {name: chat"):VALID_BASE.index("  demand_prompts")]
_CLASS = _MIX.strip()[2:].replace("\n", " ")
_FLEET = "simulate_demand: false}"
_TP = "tp: 1,"
_LONG = edit("median: 800, sigma: 0.8, max_tokens: 8000", "median: 120000, sigma: 0.01, max_tokens: 121000")
_LONG_ON_4_WAFERS = edit("[llama-3.1-8b]", "[llama-3.1-70b]", edit("pp: 1}", "pp: 4}", _LONG))

SCENARIO_CASES = group("scenario", [
    run_file("empty file", "", "a scenario must be a YAML mapping; got NoneType"),
    run_file("top level is a list", "- name: x\n", "a scenario must be a YAML mapping; got list"),
    run_file("unclosed bracket", edit("[llama-3.1-8b]", "[llama-3.1-8b"), "not valid YAML"),
    run_file("two documents", VALID_BASE + "---\nname: second\n", "but found another document"),
    run_file("duplicate top-level key", VALID_BASE + "seed: 2\n", "duplicate key 'seed'"),
    run_file("duplicate key: 2 MW became 1000 MW",
             edit("{facility_mw: 2, pue: 1.25}", "{facility_mw: 2, pue: 1.25, facility_mw: 1000}"),
             "line 3, column 37: not valid YAML: duplicate key 'facility_mw'"),
    run_file("billion laughs under traffic.mix",
             "x:\n" + "".join(f"  {line}\n" for line in laughs(9, item=_CLASS))
             + edit("  mix:\n" + _MIX, "  mix: *l8\n"), "billion laughs"),
    run_file("recursive alias", VALID_BASE + "x: &a [1, *a]\n",
             "an alias refers to a value that contains it"),
    run_file("deep flow nesting", VALID_BASE + "x: " + "[" * 3000 + "]" * 3000 + "\n", "nesting deeper than"),
    run_file("unhashable key", VALID_BASE + "? [a, b]\n: 1\n", "a mapping key must be a plain value"),
    run_file("lone surrogate escape", edit("name: fuzz base", 'name: "\\ud800"'), "lone surrogate"),
    run_file("binary garbage", b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4, "not UTF-8 text"),
    run_file("NUL bytes", VALID_BASE.encode() + b"\x00\x00", "special characters are not allowed"),
    run_file("oversized file", "#" * (5 * 1024 * 1024) + "\n", "more than the"),
    run_file(".inf demand", edit("1.0e8", ".inf"), "'.inf' is not a finite number"),
    run_file(".nan price", VALID_BASE + "economics: {electricity_usd_per_mwh: .nan}\n",
             "'.nan' is not a finite"),
    run_file("1e999 budget", edit("facility_mw: 2,", "facility_mw: 1e999,"), "'1e999' is not a finite"),
    run_file("NaN as text", edit("1.0e8", "NaN"), "traffic.demand_prompts_per_day: must be a finite number"),
    run_file("unknown top-level key", VALID_BASE + "colour: blue\n", "colour: unknown key"),
    run_file("unknown pool key", edit("tp: 1, weight", "tpp: 2, weight"),
             "options[0].pools[0].tpp: unknown key"),
    run_file("missing name", edit("name: fuzz base\n", ""), "name: required field is missing"),
    run_file("no models", edit("[llama-3.1-8b]", "[]"), "models: List should have at least 1"),
    run_file("unknown model", edit("[llama-3.1-8b]", "[llama-9b]"), "models[0]: unknown model id 'llama-9b'"),
    run_file("unknown system", edit("system: hgx-h200", "system: hgx-h300"), "unknown system id 'hgx-h300'"),
    run_file("engine of another family", edit("engine: vllm", "engine: cerebras"),
             "options[0].pools[0].engine"),
    run_file("negative budget", edit("facility_mw: 2", "facility_mw: -2"),
             "budget.facility_mw: must be greater"),
    run_file("power and money budgets", edit("pue: 1.25}", "pue: 1.25, capex_usd: 1.0e9}"), "not both"),
    run_file("no budget and no counts", edit("facility_mw: 2, ", ""), "has no n_systems"),
    run_file("share above 1", edit(_TP, "tp: 1, power_share: 1.5,"), "power_share"),
    run_file("weight dtype fp2", edit("weight_dtype: fp8", "weight_dtype: fp2"), "weight_dtype"),
    run_file("tp 0", edit(_TP, "tp: 0,"), "options[0].pools[0].tp: must be greater than or equal to 1"),
    run_file("tp 3 with 32 heads", edit(_TP, "tp: 3,"), "tp=3 does not split the attention"),
    run_file("tp 16 on an 8-GPU box", edit(_TP, "tp: 16,"), "scale-up domain"),
    run_file("tp on a wafer", edit("pp: 1}", "tp: 2}"), "deployment.tp must be 1 on wafer-scale engines"),
    run_file("pp beyond the layers", edit(_TP, "tp: 1, pp: 40,"), "pp=40 pipeline stages is more than"),
    run_file("ep on a dense model", edit(_TP, "tp: 2, ep: 2,"), "ep=2 applies to MoE models"),
    run_file("weight streaming on a GPU", edit(_TP, "weight_streaming: true,"), "weight_streaming"),
    run_file("a draft model on a GPU", edit(_TP, "tp: 1, speculative: {draft_model: llama-3.1-8b},"),
             "MTP or EAGLE"),
    run_file("wafer speculation without a draft", edit("pp: 1}", "pp: 1, speculative: {}}"), "draft_model"),
    run_file("model too big for the plan", edit("[llama-3.1-8b]", "[llama-3.1-405b]"), "does not fit"),
    run_file("a request longer than the context", edit("max_tokens: 8000", "max_tokens: 200000")
             .replace("median: 800,", "median: 150000,"), "longer than the 131,072-token context"),
    run_file("the longest request beyond a stated plan", _LONG_ON_4_WAFERS, "does not fit in the KV cache"),
    run_file("a list as a length kind", edit("kind: lognormal,", "kind: [lognormal],"),
             "length spec kind must be one of"),
    run_file("budget too small for one system", edit("facility_mw: 2", "facility_mw: 0.001"),
             "buys no whole replica"),
    run_file("duration 1e-9 s", edit(_FLEET, "simulate_demand: false, duration_s: 1.0e-9}"),
             "fleet.duration_s: must be greater than or equal to 1"),
    run_file("unknown mix name", edit("  mix:\n" + _MIX, "  mix: claude\n"), "traffic.mix"),
    run_file("mix class without lengths", edit(_MIX, "    - {name: chat, share: 1.0}\n"),
             "traffic.mix: mix class 'chat': missing key(s) prompt, output"),
    run_file("mix shares below 1", edit("share: 1.0", "share: 0.4"), "Mix shares must sum to 1"),
    run_file("unknown length kind", edit("kind: lognormal, median: 800", "kind: pareto, median: 800"),
             "length spec kind must be one of"),
    run_file("cost of capital 150%", VALID_BASE + "economics: {cost_of_capital: 1.5}\n", "cost_of_capital"),
    run_file("missing hardware file", VALID_BASE + "hardware_files: [nope.yaml]\n",
             "hardware_files: hardware"),
    run_file("hardware file is a folder", VALID_BASE + "hardware_files: [.]\n", "is a folder"),
    Case("the scenario is a folder", ("run", ".", *RUN_TAIL), "is a folder"),
    Case("the scenario does not exist", ("run", "missing.yaml", *RUN_TAIL), "missing.yaml does not exist"),
    Case("the scenario is /dev/zero (never ends)", ("run", "/dev/zero", *RUN_TAIL), "not a regular file"),
    Case("the scenario is a named pipe (blocks)", ("run", "pipe.yaml", *RUN_TAIL), "not a regular file",
         fifos=("pipe.yaml",)),
])


# -- --set overrides ----------------------------------------------------------------------------
_BOMB = ", ".join(f"&l{i} [" + ", ".join([f"*l{i - 1}" if i else "1"] * 10) + "]" for i in range(7))

SET_CASES = group("--set", [
    run_set("no equals sign", "budget.facility_mw", "expected key=value"),
    run_set("empty key part", "options..name=x", "has an empty part"),
    run_set("index past the end", "options.9.name=x", "must index the list (0 to 1); got '9'"),
    run_set("a field under text ({part} was printed)", "name.foo=1", "so it has no field 'foo'"),
    run_set("a field under a number", "seed.0=1", "'seed' is int 1"),
    run_set("inf budget", "budget.facility_mw=inf", "budget.facility_mw: must be a finite number"),
    run_set(".nan budget", "budget.facility_mw=.nan", "'.nan' is not a finite number"),
    run_set("1e400 demand", "traffic.demand_prompts_per_day=1e400", "'1e400' is not a finite number"),
    run_set("NaN amortisation", "economics.it_amortisation_years=nan", "economics.it_amortisation_years"),
    run_set("Infinity electricity", "economics.electricity_usd_per_mwh=Infinity", "must be a finite number"),
    run_set("duplicate key in a value", "traffic.mix=[{name: a, name: b}]", "duplicate key 'name'"),
    run_set("alias bomb in a value", f"traffic.mix=[{_BOMB}]", "billion laughs"),
    run_set("recursive alias in a value", "traffic.mix=&a [*a]", "an alias refers to a value"),
    run_set("README example: tp=4 on the CS-3 pool", "options.1.pools.0.tp=4", "wafer-scale engines"),
    run_set("tp 3", "options.0.pools.0.tp=3", "tp=3 does not split the attention"),
    run_set("duration 1e-9", "fleet.duration_s=1e-9", "fleet.duration_s"),
    run_set("unknown model", "models=[gpt-7]", "unknown model id 'gpt-7'"),
    run_set("missing hardware file", "hardware_files=[nope.yaml]", "nope.yaml does not exist"),
    run_set("bytes that are not UTF-8", b"name=\xff\xfe", "is not UTF-8 text"),
])


# -- hardware files ------------------------------------------------------------------------------
_DEVICE = ("{id: my-asic, name: My ASIC, kind: asic, dense_bf16_tflops: 800, mem_capacity_gb: 128, "
           "mem_bw_tb_s: 4.0, source: Acme datasheet}")
_SYSTEM = ("{id: my-asic-8, name: Acme box, device: my-asic, n_devices: 8, power_kw: 6.5, "
           "price_usd: 250000, source: estimate}")
_HW = f"devices:\n  - {_DEVICE}\nsystems:\n  - {_SYSTEM}\n"
_HW_DUPLICATE = edit("kind: asic,", "kind: asic, kind: gpu,", _HW)


def hw(case_id: str, text: str | bytes, needle: str) -> Case:
    """`megawatt hardware --hardware hw.yaml` with `text` as the file."""
    return Case(case_id, ("hardware", "--hardware", "hw.yaml"), needle, {"hw.yaml": text})


def hw_edit(old: str, new: str) -> str:
    return edit(old, new, _HW)


HARDWARE_CASES = group("hardware", [
    Case("missing file", ("hardware", "--hardware", "nope.yaml"), "nope.yaml does not exist"),
    Case("a folder", ("hardware", "--hardware", "."), "is a folder"),
    Case("a named pipe", ("hardware", "--hardware", "p.yaml"), "not a regular file", fifos=("p.yaml",)),
    hw("empty file", "", "the file is empty"),
    hw("unknown top-level key", "device: []\n", "device is not a known top-level key"),
    hw("device without an id", hw_edit("id: my-asic, ", ""), "devices[0].id"),
    hw("negative memory", hw_edit("mem_capacity_gb: 128", "mem_capacity_gb: -128"), "mem_capacity_gb"),
    hw(".inf TFLOP/s", hw_edit("dense_bf16_tflops: 800", "dense_bf16_tflops: .inf"),
       "'.inf' is not a finite"),
    hw(".nan power", hw_edit("power_kw: 6.5", "power_kw: .nan"), "'.nan' is not a finite number"),
    hw("duplicate key", _HW_DUPLICATE, "duplicate key 'kind'"),
    hw("system of an unknown device", hw_edit("device: my-asic", "device: my-asci"), "systems[0].device"),
    hw("idle above peak", hw_edit("power_kw: 6.5,", "power_kw: 6.5, idle_power_kw: 7,"), "idle_power_kw"),
    hw("repeated id", _HW.replace("systems:", f"  - {_DEVICE}\nsystems:"),
       "devices[1].id repeats devices[0]"),
    hw("binary garbage", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "not UTF-8 text"),
    hw("alias bomb", "\n".join(laughs(9)) + "\n", "billion laughs"),
    hw("deep nesting", "devices: " + "[" * 2000 + "]" * 2000 + "\n", "nesting deeper than"),
    Case("a bad file given to run", ("run", "s.yaml", "--hardware", "hw.yaml", *RUN_TAIL),
         "duplicate key 'kind'", {"s.yaml": VALID_BASE, "hw.yaml": _HW_DUPLICATE}),
    Case("a missing file given to explain", ("explain", "my-asic-8", "llama-3.1-8b", "--hardware", "x.yaml"),
         "x.yaml does not exist"),
])


# -- model config.json files --------------------------------------------------------------------
def config(**changes: Any) -> str:
    """A tiny dense config.json with `changes` (None removes a key)."""
    base: dict[str, Any] = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
                            "vocab_size": 100, "intermediate_size": 128, "max_position_embeddings": 8192}
    base.update(changes)
    return json.dumps({k: v for k, v in base.items() if v is not None})


def model(case_id: str, text: str | bytes, needle: str) -> Case:
    """`megawatt models show config.json` with `text` as the file."""
    return Case(case_id, ("models", "show", "config.json"), needle, {"config.json": text})


MODEL_CASES = group("config.json", [
    Case("missing file", ("models", "show", "nope/config.json"), "does not exist"),
    Case("a folder", ("models", "show", "cfg.json"), "is a folder", {"cfg.json/x": "1"}),
    model("binary garbage", b"\x89PNG\r\n\x1a\n\xff\xd8\xff\xe0", "not UTF-8 text"),
    model("a JSON list", "[1, 2]", "must hold a JSON object; got list"),
    model("truncated JSON", config()[:-5], "not valid JSON"),
    model("NaN", config(hidden_size="X").replace('"X"', "NaN"), "NaN is not a number JSON allows"),
    model("deep nesting", "[" * 50_000 + "]" * 50_000, "nested too deeply"),
    model("no layers", config(num_hidden_layers=None), "'num_hidden_layers' is required"),
    model("text hidden size", config(hidden_size="big"), "'hidden_size' must be a positive integer"),
    model("zero heads", config(num_attention_heads=0), "'num_attention_heads' must be a positive integer"),
    model("KV heads that do not divide", config(num_key_value_heads=3), "must divide num_attention_heads"),
    model("head_dim 0", config(head_dim=0), "'head_dim' must be a whole number from 1"),
    model("more heads than width", config(hidden_size=2), "hidden_size // num_attention_heads"),
    model("text_config a list", config(text_config=[1]), "'text_config' must be an object"),
    model("layer_types too short", config(layer_types=["full_attention"]), "layer_types has 1 entries"),
    model("unknown layer kind", config(layer_types=["full_attention", "magic"]), "'magic' is not one of"),
    model("top-k above the experts", config(num_local_experts=4, num_experts_per_tok=8), "must be at most"),
    Case("tp 8 with 12 heads in explain", ("explain", "hgx-h200", "config.json", "--tp", "8"),
         "tp=8 does not split the attention of config",
         {"config.json": config(num_attention_heads=12, hidden_size=96)}),
    Case("a bad config in a scenario", ("run", "s.yaml", *RUN_TAIL), "models[0]: bad/config.json",
         {"s.yaml": edit("[llama-3.1-8b]", "[bad/config.json]"), "bad/config.json": config(head_dim=0)}),
])


# -- measurement CSVs ----------------------------------------------------------------------------
_COLUMNS = ("id,hardware,n_devices,model,weight_dtype,engine,scenario,input_len,output_len,dataset,"
            "concurrency,n_requests,ttft_p99_limit_ms,tpot_p99_limit_ms,spec_decode,metric,value")
_ROW = ("T1,h200-sxm,1,llama-3.1-8b,fp8,trtllm,single_user,128,64,fixed,1,,,,no,"
        "output_tokens_per_s_per_user,300")


def rows(*lines: str) -> str:
    return "\n".join([_COLUMNS, *lines]) + "\n"


def csv(case_id: str, text: str | bytes, needle: str, verb: str = "validate") -> Case:
    """`megawatt validate --data m.csv` (or calibrate) with `text` as the file."""
    return Case(case_id, (verb, "--data", "m.csv", "--workers", "1"), needle, {"m.csv": text})


CSV_CASES = group("measurements", [
    Case("missing file", ("validate", "--data", "nope.csv"), "nope.csv does not exist"),
    Case("a folder", ("validate", "--data", "."), "is a folder"),
    Case("a named pipe", ("validate", "--data", "m.csv"), "not a regular file", fifos=("m.csv",)),
    csv("binary garbage", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "not UTF-8 text"),
    csv("empty file", "", "missing column(s)"),
    csv("header only", rows(), "no measurement rows after the header"),
    csv("missing columns", "id,hardware,value\nT1,h200-sxm,3\n", "missing column(s) n_devices"),
    csv("a huge field", rows("T1," + "x" * 200_000), "not a CSV file megawatt can read"),
    csv("the only row: unknown hardware", rows(_ROW.replace("h200-sxm", "h900")),
        "no row of m.csv could be read (1 refused)"),
    csv("the only row: too few fields", rows("T1,h200-sxm"), "expected 17 fields"),
    csv("the only row: negative value", rows(_ROW.replace(",300", ",-300")), "value must be"),
    csv("the only row: unknown metric", rows(_ROW.replace("_per_user", "_per_fish")),
        "metric must be one of"),
    csv("every row bad", rows(_ROW.replace("h200", "h900"), _ROW.replace("fixed", "random")),
        "could be read (2 refused)"),
    csv("calibrate: header only", rows(), "no measurement rows", verb="calibrate"),
    csv("calibrate: a repeated row", rows(_ROW, _ROW), "repeats line 2", verb="calibrate"),
])


# -- output paths --------------------------------------------------------------------------------
def out_case(case_id: str, *argv: str | bytes, needle: str) -> Case:
    return Case(case_id, argv, needle, {"s.yaml": VALID_BASE, "file": "x", "m.csv": rows(_ROW)})


OUTPUT_CASES = group("output path", [
    out_case("--out at a file", "run", "s.yaml", "--out", "file", needle="is a file, not a folder"),
    out_case("--out under a file", "run", "s.yaml", "--out", "file/out", needle="which is a file"),
    out_case("--out in /proc", "run", "s.yaml", "--out", "/proc/megawatt-out",
             needle="cannot write in /proc"),
    out_case("--out in /sys", "run", "s.yaml", "--out", "/sys/megawatt-out", needle="cannot write in /sys"),
    out_case("--out not UTF-8", "run", "s.yaml", "--out", b"out-\xff", needle="not UTF-8"),
    out_case("validate --json under a file", "validate", "--data", "m.csv", "--json", "file/v.json",
             needle="--json file/v.json is under"),
    out_case("validate --json at a folder", "validate", "--data", "m.csv", "--json", "out",
             needle="is a folder"),
    out_case("validate --json in /proc", "validate", "--data", "m.csv", "--json", "/proc/x/v.json",
             needle="cannot write in /proc"),
    out_case("calibrate --out at a folder", "calibrate", "--data", "m.csv", "--out", "out",
             needle="is a folder"),
    out_case("calibrate --out under a file", "calibrate", "--data", "m.csv", "--out", "file/c.json",
             needle="which is a file"),
])


# -- command-line values -------------------------------------------------------------------------
def cli(case_id: str, needle: str, *argv: str) -> Case:
    return Case(case_id, argv, needle, {"s.yaml": VALID_BASE})


OPTION_CASES = group("option", [
    cli("run --workers 0", "'--workers': Input should be greater than or equal to 1; got '0'",
        "run", "s.yaml", "--workers", "0", "--out", "out"),
    cli("run --workers abc", "'--workers': Input should be a valid integer", "run", "--workers", "abc"),
    cli("validate --workers 0", "'--workers'", "validate", "--workers", "0"),
    cli("run --set with nothing", "Option '--set' requires an argument", "run", "s.yaml", "--set"),
    cli("an unknown option", "No such option: --colour", "run", "--colour", "blue"),
    cli("an unknown command", "No such command 'frobnicate'", "frobnicate"),
    cli("a missing argument", "Missing argument 'MODEL'", "explain", "cs-3"),
    cli("explain --context -5", "'--context': Input should be greater than or equal to 1; got '-5'",
        "explain", "cs-3", "llama-3.1-8b", "--context", "-5"),
    cli("explain --tp 0", "'--tp'", "explain", "hgx-h200", "llama-3.1-8b", "--tp", "0"),
    cli("explain --ep 0", "'--ep'", "explain", "hgx-h200", "mixtral-8x7b", "--tp", "2", "--ep", "0"),
    cli("explain --acceptance nan", "'--acceptance'", "explain", "cs-3", "llama-3.1-70b",
        "--acceptance", "nan"),
    cli("explain --weight-dtype fp2", "weight_dtype must be one of", "explain", "hgx-h200",
        "llama-3.1-8b", "--weight-dtype", "fp2"),
    cli("explain --engine bogus", "engine 'bogus'", "explain", "hgx-h200", "llama-3.1-8b",
        "--engine", "bogus"),
    cli("explain unknown hardware", "unknown hardware id 'h900'", "explain", "h900", "llama-3.1-8b"),
    cli("explain unknown model", "unknown model id 'llama-9b'", "explain", "hgx-h200", "llama-9b"),
    cli("explain tp 3 (32 heads)", "tp=3 does not split the attention of llama-3.1-8b", "explain",
        "h200-sxm", "llama-3.1-8b", "--tp", "3"),
    cli("explain --ep on a dense model", "ep=2 applies to MoE models", "explain", "hgx-h200",
        "llama-3.1-8b", "--tp", "2", "--ep", "2"),
    cli("explain weight streaming on a GPU", "apply to wafer-scale engines only", "explain", "hgx-h200",
        "llama-3.1-8b", "--weight-streaming"),
    cli("explain tp on a wafer", "deployment.tp must be 1 on wafer-scale", "explain", "cs-3",
        "llama-3.1-8b", "--tp", "2"),
    cli("explain pp beyond the layers", "pp=64 pipeline stages is more than the 32 layers", "explain",
        "hgx-h200", "llama-3.1-8b", "--tp", "1", "--pp", "64"),
    cli("hardware show unknown", "unknown hardware id 'h300'", "hardware", "show", "h300"),
    cli("models show unknown", "unknown model id 'llama-9'", "models", "show", "llama-9"),
])


# -- plan files (megawatt plan) -------------------------------------------------------------------
_PLAN = (Path(__file__).parents[1] / "deal" / "tiny.yaml").read_text()
_DEAL = _PLAN[_PLAN.index("deal:\n"):_PLAN.index("uncertainty:")].replace("\n  ", "\n")[len("deal:\n"):]
PLAN_TAIL = ("--out", "out", "--workers", "1")


def plan_case(
    case_id: str, needle: str, *argv: str, text: str = _PLAN, deal: str | None = None,
    tail: tuple[str, ...] = ("--no-cache", "--draws", "2"),
) -> Case:
    """`megawatt plan p.yaml ARGV` on the tiny plan of tests/deal (or `text`)."""
    files = {"p.yaml": text, **({"d.yaml": deal} if deal is not None else {})}
    return Case(case_id, ("plan", "p.yaml", *argv, *PLAN_TAIL, *tail), needle, files)


PLAN_CASES = group("plan", [
    plan_case("empty file", "a plan must be a YAML mapping; got NoneType", text=""),
    plan_case("unknown key", "colour: unknown key", text=_PLAN + "colour: blue\n"),
    plan_case("a fifth quarter", "start: a date is YYYYQn or YYYY", "--set", "start=2026Q5"),
    plan_case("a tranche after the horizon", "deal.tranches[0].period must fall between", "--set",
              "deal.tranches.0.period=2031Q1"),
    plan_case("a request longer than the context", "is longer than the 131,072-token context", "--set",
              "classes.0.prompt={kind: fixed, n_tokens: 200000}"),
    plan_case("an unknown system", "unknown system", "--set", "suppliers.0.generations.0.system=h9"),
    plan_case("--compare a missing file", "deal file d.yaml does not exist", "--compare", "d.yaml"),
    plan_case("--compare a deal with an unknown key", "d.yaml: price: unknown key", "--compare", "d.yaml",
              deal=_DEAL + "price: 1\n"),
    plan_case("--compare a deal without a name", "d.yaml: name: required field is missing", "--compare",
              "d.yaml", deal=_DEAL.replace("name: Wafer deal\n", "")),
    plan_case("--draws 0", "'--draws': Input should be greater than or equal to 1", "--draws", "0", tail=()),
    plan_case("--cache at a file", "--cache p.yaml is a file", "--cache", "p.yaml", tail=()),
])


CASES = [*SCENARIO_CASES, *SET_CASES, *HARDWARE_CASES, *MODEL_CASES, *CSV_CASES, *OUTPUT_CASES,
         *OPTION_CASES, *PLAN_CASES]

LONG_RUN = ("run", "{dir}/s.yaml", "--set", "simulation.n_requests=200000", "--out", "{dir}/out")

SIGNAL_CASES: list[SignalCase] = [
    # Each command is interrupted once it simulates (in its workers where it has them); it must
    # say so in one line, exit 130, leave no worker behind and out/ as it was.
    SignalCase("Ctrl-C while a run simulates", (*LONG_RUN, "--workers", "1"), signal.SIGINT,
               files={"s.yaml": VALID_BASE}, when_simulating=True),
    SignalCase("SIGTERM while a run simulates in two processes", (*LONG_RUN, "--workers", "2"),
               signal.SIGTERM, files={"s.yaml": VALID_BASE}, when_simulating=True, workers=True),
    SignalCase("Ctrl-C while validate replays", ("validate", "--data", "inferencex", "--workers",
               "2", "--json", "{dir}/out/v.json"), signal.SIGINT, when_simulating=True,
               workers=True),
    SignalCase("SIGTERM while calibrate fits", ("calibrate", "--workers", "2", "--out",
               "{dir}/out/c.json"), signal.SIGTERM, when_simulating=True, workers=True),
    SignalCase("Ctrl-C while plan simulates capacities in two processes",
               ("plan", "{dir}/p.yaml", "--set", "capacity.n_requests=200000", "--no-cache", "--workers", "2",
                "--out", "{dir}/out"), signal.SIGINT, files={"p.yaml": _PLAN}, when_simulating=True,
               workers=True),
]
