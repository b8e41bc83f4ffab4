"""The deployment search: which plans an engine would accept, the candidates worth simulating
(the fewest devices that hold the weights, then wider tensor-parallel groups), and the choice
among them by output tokens per second per system at the SLO."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest

import megawatt.plan.search as search
from megawatt.errors import FitError, InputError
from megawatt.hardware import Catalog, Device, System, load_catalog
from megawatt.model import ModelSpec, load_model, model_from_config
from megawatt.perf import Deployment, plan_memory
from megawatt.plan import (
    Choice,
    PoolSettings,
    candidates,
    choose,
    per_system,
    plan_problem,
    resolve_weight_dtype,
)
from megawatt.serving import Slo, unit_poisson
from megawatt.workload import Requests


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def _on(catalog: Catalog, system_id: str) -> tuple[System, Device]:
    system = catalog.system(system_id)
    return system, catalog.device(system.device_id)


def twelve_heads(**changes: Any) -> ModelSpec:
    """A dense model with 12 attention heads and 4 KV heads: tp 1, 2 and 4 split them, 8 does not."""
    config: dict[str, Any] = {
        "num_hidden_layers": 2,
        "hidden_size": 768,
        "num_attention_heads": 12,
        "num_key_value_heads": 4,
        "vocab_size": 1000,
        "intermediate_size": 2048,
    }
    config.update(changes)
    return model_from_config(config, "twelve-heads")


def requests(n: int, seed: int = 0) -> Requests:
    """`n` chat-sized requests arriving as a rate-1 Poisson process."""
    rng = np.random.default_rng(seed)
    return Requests(
        arrival_s=unit_poisson(rng, n),
        prompt_tokens=rng.integers(256, 1024, n),
        output_tokens=rng.integers(64, 256, n),
        cached_tokens=np.zeros(n, dtype=np.int64),
        class_id=np.zeros(n, dtype=np.int32),
        class_names=("chat",),
    )


# -- the weight format --------------------------------------------------------------------------


def test_auto_runs_a_16_bit_dense_model_in_fp8_on_a_gpu_with_an_fp8_rate(catalog: Catalog) -> None:
    model = load_model("llama-3.1-8b")
    assert resolve_weight_dtype("auto", model, catalog.device("h100-sxm")) == "fp8"
    assert resolve_weight_dtype("auto", model, catalog.device("a100-sxm-80gb")) == "native"  # no FP8 rate


def test_auto_keeps_the_published_format_on_wafers_and_for_quantised_models(catalog: Catalog) -> None:
    assert resolve_weight_dtype("auto", load_model("llama-3.1-8b"), catalog.device("wse3")) == "native"
    assert resolve_weight_dtype("auto", load_model("gpt-oss-120b"), catalog.device("h100-sxm")) == "native"


def test_a_stated_weight_format_is_kept(catalog: Catalog) -> None:
    assert resolve_weight_dtype("bf16", load_model("llama-3.1-8b"), catalog.device("h100-sxm")) == "bf16"


# -- what an engine refuses ---------------------------------------------------------------------


def test_a_plan_that_splits_the_heads_evenly_has_no_problem(catalog: Catalog) -> None:
    system, device = _on(catalog, "dgx-h100")
    assert plan_problem(Deployment(model=twelve_heads(), system=system, device=device, tp=4)) is None


def test_tp_must_split_the_heads_and_the_message_lists_the_widths_that_do(catalog: Catalog) -> None:
    system, device = _on(catalog, "dgx-h100")
    problem = plan_problem(Deployment(model=twelve_heads(), system=system, device=device, tp=8))
    assert problem is not None
    assert "tp=8 does not split the attention of twelve-heads" in problem and "Use tp 1, 2, 4." in problem


def test_data_parallel_attention_lifts_the_head_rule(catalog: Catalog) -> None:
    system, device = _on(catalog, "dgx-h100")
    dep = Deployment(model=twelve_heads(), system=system, device=device, tp=8, attention_dp=True)
    assert plan_problem(dep) is None


@pytest.mark.parametrize(
    ("model_id", "changes", "needle"),
    [
        ("llama-3.1-8b", {"pp": 33}, "pp=33 pipeline stages is more than the 32 layers"),
        ("llama-3.1-8b", {"tp": 2, "ep": 2}, "ep=2 applies to MoE models; llama-3.1-8b is dense"),
        ("mixtral-8x7b", {"tp": 8, "pp": 2, "ep": 16}, "ep=16 is more than the 8 routed experts"),
    ],
)
def test_pipelines_and_expert_parallelism_have_their_limits(
    catalog: Catalog, model_id: str, changes: dict[str, int], needle: str
) -> None:
    system, device = _on(catalog, "dgx-h100")
    dep = replace(Deployment(model=load_model(model_id), system=system, device=device), **changes)
    problem = plan_problem(dep)
    assert problem is not None and needle in problem


# -- candidates ---------------------------------------------------------------------------------


def test_every_power_of_two_tp_that_fits_is_a_candidate_smallest_first(catalog: Catalog) -> None:
    system, device = _on(catalog, "dgx-h100")
    deps = candidates(load_model("llama-3.1-8b"), system, device, PoolSettings())
    assert [d.tp for d in deps] == [1, 2, 4, 8]
    assert {(d.pp, d.weight_dtype, d.engine) for d in deps} == {(1, "fp8", "vllm")}


def test_max_tp_caps_the_width(catalog: Catalog) -> None:
    system, device = _on(catalog, "dgx-h100")
    deps = candidates(load_model("llama-3.1-8b"), system, device, PoolSettings(max_tp=2))
    assert [d.tp for d in deps] == [1, 2]


def test_the_widest_tp_is_refused_when_it_does_not_split_the_heads(catalog: Catalog) -> None:
    system, device = _on(catalog, "dgx-h100")
    assert [d.tp for d in candidates(twelve_heads(), system, device, PoolSettings())] == [1, 2, 4]


def test_a_model_too_large_for_the_widest_valid_tp_gets_pipeline_stages(catalog: Catalog) -> None:
    # ~357B parameters, 357 GB in FP8: more than four H100s hold, and tp 8 splits no 12 heads.
    big = twelve_heads(num_hidden_layers=160, hidden_size=12288, intermediate_size=49152, vocab_size=128000)
    system, device = _on(catalog, "dgx-h100")
    deps = candidates(big, system, device, PoolSettings())
    assert [(d.tp, d.pp) for d in deps] == [(4, 2)]
    with pytest.raises(FitError):
        plan_memory(replace(deps[0], pp=1))


def test_the_longest_request_must_fit_in_the_kv_cache_too(catalog: Catalog) -> None:
    system, device = _on(catalog, "dgx-h100")
    model = load_model("llama-3.1-70b")
    assert candidates(model, system, device, PoolSettings())[0].tp == 1
    assert [d.tp for d in candidates(model, system, device, PoolSettings(), 120_000)] == [2, 4, 8]


def test_a_wafer_pool_starts_from_the_fewest_wafers_that_hold_the_model(catalog: Catalog) -> None:
    system, device = _on(catalog, "cs-3")
    model = load_model("llama-3.1-70b")
    (dep,) = candidates(model, system, device, PoolSettings(engine="cerebras"))
    assert (dep.family, dep.pp, dep.weight_dtype) == ("wafer", 4, "native")
    with pytest.raises(FitError, match="Use pp >= 4 wafers"):
        plan_memory(replace(dep, pp=3))
    (longer,) = candidates(model, system, device, PoolSettings(engine="cerebras"), 120_000)
    assert longer.pp > dep.pp


def test_weight_streaming_is_one_wafer(catalog: Catalog) -> None:
    system, device = _on(catalog, "cs-3")
    settings = PoolSettings(engine="cerebras", weight_streaming=True)
    (dep,) = candidates(load_model("llama-3.1-70b"), system, device, settings)
    assert dep.pp == 1 and dep.weight_streaming


def test_a_stated_plan_is_the_only_candidate(catalog: Catalog) -> None:
    system, device = _on(catalog, "dgx-h100")
    (dep,) = candidates(load_model("llama-3.1-8b"), system, device, PoolSettings(tp=2, pp=2))
    assert (dep.tp, dep.pp) == (2, 2)


def test_a_stated_plan_an_engine_would_refuse_is_an_input_error(catalog: Catalog) -> None:
    system, device = _on(catalog, "dgx-h100")
    with pytest.raises(InputError, match="tp=8 does not split the attention"):
        candidates(twelve_heads(), system, device, PoolSettings(tp=8))


def test_a_stated_plan_that_does_not_hold_the_weights_is_a_fit_error(catalog: Catalog) -> None:
    system, device = _on(catalog, "dgx-h100")
    settings = PoolSettings(tp=1, weight_dtype="bf16")
    with pytest.raises(FitError, match=r"llama-3.1-70b does not fit on 1x h100-sxm .* Use tp x pp >= 2"):
        candidates(load_model("llama-3.1-70b"), system, device, settings)


def test_a_search_with_no_plan_that_fits_is_a_fit_error(catalog: Catalog) -> None:
    system, device = _on(catalog, "cs-3")
    with pytest.raises(FitError, match=r"llama-3\.1-70b does not fit"):
        candidates(load_model("llama-3.1-70b"), system, device, PoolSettings(engine="cerebras", max_wafers=3))
    with pytest.raises(FitError):  # no KV cache holds a billion-token sequence
        candidates(load_model("llama-3.1-8b"), *_on(catalog, "dgx-h100"), PoolSettings(), 10**9)


def test_per_system_scales_a_replica_figure_by_replicas_per_system(catalog: Catalog) -> None:
    system, device = _on(catalog, "dgx-h100")
    dep = Deployment(model=load_model("llama-3.1-8b"), system=system, device=device, tp=2)
    assert per_system(dep, 100.0) == 400.0
    assert per_system(replace(dep, tp=8, pp=2), 100.0) == 50.0


# -- choose: a real search on a small workload -------------------------------------------------


@pytest.fixture(scope="module")
def h100_choice(catalog: Catalog) -> tuple[Choice, list[Deployment], list[str]]:
    system, device = _on(catalog, "dgx-h100")
    model = load_model("llama-3.1-8b")
    settings = PoolSettings(budgets=(2048, 512))
    reqs = requests(300)
    seen: list[str] = []
    choice = choose(
        model, system, device, settings, reqs, np.asarray(reqs.arrival_s), Slo(2.0, 0.05),
        rel_tol=0.1, progress=seen.append,
    )
    return choice, candidates(model, system, device, settings), seen


def test_every_candidate_is_scored_then_the_best_width_at_every_budget(h100_choice: Any) -> None:
    choice, deps, seen = h100_choice
    labels = [label for label, _ in choice.scores]
    assert labels == seen  # progress hears each evaluation as it starts
    assert labels[: len(deps)] == [f"{d.label} budget 8192" for d in deps]
    top = max(choice.scores[: len(deps)], key=lambda s: s[1])[0].removesuffix(" budget 8192")
    assert labels[len(deps):] == [f"{top} budget 2048", f"{top} budget 512"]


def test_the_choice_is_the_candidate_with_the_highest_score(h100_choice: Any) -> None:
    choice, _, _ = h100_choice
    best = max(score for _, score in choice.scores)
    assert best > 0
    assert per_system(choice.deployment, choice.capacity.output_tokens_per_s) == best
    label = f"{choice.deployment.label} budget {choice.deployment.max_num_batched_tokens}"
    assert dict(choice.scores)[label] == best


# -- choose: the search's rules, with capacities made up ---------------------------------------


@dataclass(frozen=True)
class _FakeCapacity:
    output_tokens_per_s: float


@pytest.fixture
def fake_capacity(monkeypatch: pytest.MonkeyPatch) -> dict[tuple[int, int, int], float]:
    """Replace the simulation: a deployment's replica serves `table[(tp, pp, budget)]` output
    tokens/s (0 when absent)."""
    table: dict[tuple[int, int, int], float] = {}

    class _Config:
        @staticmethod
        def of(dep: Deployment, policy: str) -> Deployment:
            return dep

    def fake(dep: Deployment, *args: Any, **kwargs: Any) -> _FakeCapacity:
        return _FakeCapacity(table.get((dep.tp, dep.pp, dep.max_num_batched_tokens), 0.0))

    monkeypatch.setattr(search, "ReplicaConfig", _Config)
    monkeypatch.setattr(search, "offline_rate_hint", lambda *a, **k: 1.0)
    monkeypatch.setattr(search, "capacity", fake)
    return table


def _choose(catalog: Catalog, system_id: str, model_id: str, settings: PoolSettings) -> Choice:
    system, device = _on(catalog, system_id)
    reqs = requests(8)
    return choose(load_model(model_id), system, device, settings, reqs, np.asarray(reqs.arrival_s),
                  Slo(2.0, 0.05))


def test_wafers_are_added_while_the_throughput_per_wafer_improves(
    catalog: Catalog, fake_capacity: dict[tuple[int, int, int], float]
) -> None:
    per_wafer = {4: 100.0, 5: 120.0, 6: 130.0, 7: 125.0, 8: 200.0}
    fake_capacity.update({(1, pp, 8192): v * pp for pp, v in per_wafer.items()})
    choice = _choose(catalog, "cs-3", "llama-3.1-70b", PoolSettings(engine="cerebras"))
    assert [score for _, score in choice.scores] == [100.0, 120.0, 130.0, 125.0]  # stops at 7; 8 unseen
    assert choice.deployment.pp == 6 and choice.capacity.output_tokens_per_s == 6 * 130.0


def test_wafers_stop_at_max_wafers(
    catalog: Catalog, fake_capacity: dict[tuple[int, int, int], float]
) -> None:
    fake_capacity.update({(1, pp, 8192): 100.0 * pp * pp for pp in range(4, 10)})
    choice = _choose(catalog, "cs-3", "llama-3.1-70b", PoolSettings(engine="cerebras", max_wafers=6))
    assert len(choice.scores) == 3 and choice.deployment.pp == 6  # 4, 5 and 6 wafers


def test_a_wafer_pool_serving_nothing_keeps_adding_wafers(
    catalog: Catalog, fake_capacity: dict[tuple[int, int, int], float]
) -> None:
    choice = _choose(catalog, "cs-3", "llama-3.1-70b", PoolSettings(engine="cerebras", max_wafers=7))
    assert len(choice.scores) == 4 and choice.deployment.pp == 4  # 4 to 7 wafers; ties keep the first


def test_the_best_gpu_width_is_retried_at_each_budget_and_may_win_there(
    catalog: Catalog, fake_capacity: dict[tuple[int, int, int], float]
) -> None:
    # Per system (8 GPUs): tp1 800, tp2 1,000, tp4 1,200, tp8 900; then tp4 at budget 2048: 1,400.
    fake_capacity.update({(1, 1, 8192): 100.0, (2, 1, 8192): 250.0, (4, 1, 8192): 600.0, (8, 1, 8192): 900.0})
    fake_capacity.update({(4, 1, 2048): 700.0, (4, 1, 8): 10.0**6})  # budgets below 16 are not tried
    settings = PoolSettings(budgets=(8192, 2048, 8))
    choice = _choose(catalog, "dgx-h100", "llama-3.1-8b", settings)
    scores = dict(choice.scores)
    assert len(scores) == 5  # four widths, then tp4 at budget 2048 (8192 is its own, 8 too small)
    assert (choice.deployment.tp, choice.deployment.max_num_batched_tokens) == (4, 2048)
    chosen = per_system(choice.deployment, choice.capacity.output_tokens_per_s)
    assert chosen == max(scores.values()) == 1400.0
