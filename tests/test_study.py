"""A scenario end to end: the same seed gives identical numbers however the work is scheduled,
the small example matches its golden summary, the default scenario runs with every option, and
a study too large for memory is refused, with its estimate, before it simulates."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from megawatt.errors import InputError
from megawatt.report import option_rows
from megawatt.report.files import results_json
from megawatt.scenario import load_scenario
from megawatt.study import Cost, estimate_cost, run_study
from megawatt.units import GB

GOLDEN = Path(__file__).parent / "golden"


def _close(a: object, b: object, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path}: keys {sorted(a)} != {sorted(b)}"]
        return [m for k in a for m in _close(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items != {len(b)}"]
        return [m for i, (x, y) in enumerate(zip(a, b, strict=True)) for m in _close(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float):
        return [] if math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12) else [f"{path}: {a} != {b}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_small_scenario_matches_its_golden_file(regen_golden: bool) -> None:
    study = run_study(load_scenario(GOLDEN / "small.yaml"), workers=1)
    got = json.loads(results_json(study))
    expected_path = GOLDEN / "small.expected.json"
    if regen_golden:
        got["_produced_by"] = ("tests/test_study.py::test_small_scenario_matches_its_golden_file "
                               "from tests/golden/small.yaml; regenerate with --regen-golden")
        expected_path.write_text(json.dumps(got, indent=2) + "\n")
        pytest.skip("golden file regenerated")
    expected = json.loads(expected_path.read_text())
    expected.pop("_produced_by")
    diffs = _close(got, expected)
    assert not diffs, "differs from the golden file (regenerate with --regen-golden if intended):\n" + \
        "\n".join(diffs[:20])


def test_the_same_seed_gives_identical_numbers_in_one_or_two_processes() -> None:
    sc = load_scenario(GOLDEN / "small.yaml", ["simulation.n_requests=150"])
    one = option_rows(run_study(sc, workers=1))
    two = option_rows(run_study(sc, workers=2))
    assert one == two


def test_another_seed_gives_other_numbers() -> None:
    a = load_scenario(GOLDEN / "small.yaml", ["simulation.n_requests=150"])
    b = load_scenario(GOLDEN / "small.yaml", ["simulation.n_requests=150", "seed=8"])
    assert option_rows(run_study(a, workers=1)) != option_rows(run_study(b, workers=1))


def test_a_mixed_option_adds_up_its_pools() -> None:
    study = run_study(load_scenario(GOLDEN / "small.yaml", ["simulation.n_requests=150"]), workers=1)
    h200, cs3, mix = study.options
    assert mix.n_systems == sum(p.size.n_systems for p in mix.pools)
    assert mix.output_tokens_per_s == pytest.approx(sum(p.output_tokens_per_s for p in mix.pools))
    # Each pool got half the power, so the mix lies between its two halves of the pure options.
    lo, hi = sorted([h200.output_tokens_per_s, cs3.output_tokens_per_s])
    assert lo / 2 * 0.9 < mix.output_tokens_per_s < hi


@pytest.mark.slow
def test_the_default_scenario_runs_every_option() -> None:
    # Small searches (requests and session turns per run), as the checks are about every
    # option running through, not about the numbers.
    sc = load_scenario(None, ["simulation.n_requests=200", "simulation.rel_tol=0.15",
                              "sessions.n_requests=2000", "sessions.max_requests=8000"])
    study = run_study(sc)
    assert len(study.options) == len(sc.options) * len(sc.models)
    for row in option_rows(study):
        assert row["systems"] > 0
        assert row["it_mw"] <= sc.budget.facility_mw / sc.budget.pue
        assert row["output_tokens_per_s"] > 0, row
        assert math.isfinite(row["usd_per_million_output_tokens"])
        assert row["joules_per_output_token"] > 0


def test_a_capital_budget_is_spent_on_systems_and_their_facility() -> None:
    sc = load_scenario(GOLDEN / "small.yaml", ["simulation.n_requests=120", "budget.facility_mw=null",
                                               "budget.capex_usd=20e6"])
    study = run_study(sc, workers=1)
    for option in study.options:
        spent = sum(p.size.n_systems * (p.system.price_usd + 15e6 * p.system.power_w / 1e6)
                    for p in option.pools)
        assert 0.8 * 20e6 < spent <= 20e6


# -- what a study costs, before it runs ---------------------------------------------------------
def test_exact_mode_is_estimated_at_the_peak_rate_over_the_duration_for_every_option() -> None:
    sc = load_scenario(None, ["fleet.mode=exact", "fleet.duration_s=600"])
    cost = estimate_cost(sc, workers=2)
    peak = 2.5e9 / 86_400 * 1.5
    assert cost.demand_requests == pytest.approx(peak * 600 * len(sc.options) * len(sc.models))
    assert not cost.at_least
    assert cost.memory_bytes < 1 * GB  # streamed: no request is kept
    assert cost.wall_s > 60


def test_a_study_that_cannot_fit_in_memory_is_refused_before_any_simulation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_simulation(*args: object) -> None:
        raise AssertionError("simulated before refusing")

    monkeypatch.setattr("megawatt.study._evaluate", no_simulation)
    sc = load_scenario(None, ["fleet.k=100000", "fleet.duration_s=86400"])  # the repro
    with pytest.raises(InputError, match=r"at least .* B requests .* GB of memory.*--max-memory-gb \d+"):
        run_study(sc, workers=1)
    cost = estimate_cost(sc)
    assert cost.at_least and cost.memory_bytes > 100 * GB


def test_the_demand_estimate_is_what_the_fleets_simulate() -> None:
    sc = load_scenario(GOLDEN / "small.yaml", ["simulation.n_requests=300", "fleet.duration_s=60"])
    seen: dict[str, list[tuple[int, int]]] = {}
    study = run_study(sc, workers=1, progress=lambda phase, done, total, label: seen.setdefault(
        phase, []).append((done, total)))
    simulated = sum(r.n_requests for o in study.options for r in o.demand.runs if r is not None)
    total = seen["demand"][-1][1]
    assert seen["demand"][-1] == (total, total) and seen["plans"][-1][0] == seen["plans"][-1][1]
    assert simulated == pytest.approx(total, rel=0.05)


def test_the_fleets_are_checked_again_once_their_pools_are_sized(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("megawatt.study.estimate_cost", lambda scenario, workers=None: Cost(0, 0, 0, 0))
    sc = load_scenario(GOLDEN / "small.yaml", ["simulation.n_requests=150"])
    with pytest.raises(InputError, match="small example at demand would simulate about"):
        run_study(sc, workers=1, memory_limit_bytes=1.0)


# -- every plan is checked before any simulation (issue 11) -------------------------------------
FIXED = "{name: a, share: 1, prompt: {kind: fixed, n_tokens: %d}, output: {kind: fixed, n_tokens: 1}}"


@pytest.mark.parametrize(("overrides", "needle"), [
    (["options.0.pools.0.tp=3"],
     "options[0].pools[0] (hgx-h200, option 'H200 TP1') cannot serve models[0] (llama-3.1-8b): "
     "tp=3 does not split the attention of llama-3.1-8b evenly (32 heads, 8 KV heads"),
    (["options.1.pools.0.tp=4"], "deployment.tp must be 1 on wafer-scale engines"),
    (["options.0.pools.0.tp=16"], "deployment.tp must fit in one hgx-h200 scale-up domain"),
    (["options.0.pools.0.pp=40"], "pp=40 pipeline stages is more than the 32 layers"),
    (["options.0.pools.0.ep=1"], None),
    (["options.0.pools.0.tp=2", "options.0.pools.0.ep=2"], "ep=2 applies to MoE models"),
    (["models=[llama-3.1-405b]", "options.0.pools.0.weight_dtype=bf16"], "does not fit"),
    (["budget.facility_mw=0.01"], "options[0].pools[0].power_share: 0.008 MW of IT power buys no"),
    ([f"traffic.mix=[{FIXED % 200_000}]"], "a request of 200,001 tokens (prompt and output) is longer "
     "than the 131,072-token context of models[0] (llama-3.1-8b)"),
    ([f"traffic.mix=[{FIXED % 120_000}]", "models=[llama-3.1-70b]", "options.1.pools.0.pp=4"],
     "options[1].pools[0] (cs-3, option 'CS-3 x1') cannot serve models[0] (llama-3.1-70b): the longest "
     "request of the workload (120,001 tokens) does not fit in the KV cache"),
])
def test_a_pool_that_cannot_serve_a_model_is_refused_before_simulating(
    overrides: list[str], needle: str | None
) -> None:
    from megawatt.errors import ScenarioError
    from megawatt.study import check_plans

    scenario = load_scenario(GOLDEN / "small.yaml", overrides)
    if needle is None:
        check_plans(scenario)  # ep=1 on a dense model is no expert parallelism: a valid edge
        return
    with pytest.raises(ScenarioError) as caught:
        run_study(scenario, workers=1)
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_the_search_skips_tp_widths_that_do_not_split_the_heads() -> None:
    from megawatt.hardware import load_catalog
    from megawatt.model import model_from_config
    from megawatt.plan import PoolSettings, candidates

    model = model_from_config({"num_hidden_layers": 2, "hidden_size": 1536, "num_attention_heads": 12,
                               "num_key_value_heads": 6, "vocab_size": 100, "intermediate_size": 64},
                              "twelve-heads")
    catalog = load_catalog()
    system = catalog.system("hgx-h200")
    deps = candidates(model, system, catalog.device(system.device_id), PoolSettings())
    assert [d.tp for d in deps] == [1, 2]  # 4 and 8 split 12 heads but not 6 KV heads evenly
