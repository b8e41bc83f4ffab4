"""The compiled replica (`backend="fast"`) tells the same story as the Python one: the same
per-request table, stats and ITL samples, on the real roofline step model (dense and MoE GPUs
with sliding windows, a wafer whose layers pipeline micro-batches), under every policy, with
preemptions, prefix hits, rejections and runs stopped early. Its stretch mode (decode stretches
in closed form, for the fleet's exact mode) gives the step-by-step table and stats."""

from __future__ import annotations

import math
from dataclasses import replace
from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megawatt.errors import InputError
from megawatt.hardware import load_catalog
from megawatt.model import load_model
from megawatt.perf import Deployment, RooflineStepModel
from megawatt.perf.roofline import N_FEATURES, PREFILL_UNIT_TOKENS, BatchShape
from megawatt.perf.speculative import Speculation, SpeculativeStepModel
from megawatt.serving import (
    SCHEDULERS,
    Replica,
    ReplicaConfig,
    RunResult,
    concurrency,
    offline,
    simulate,
)
from megawatt.serving.compiled import simulate_fast
from megawatt.serving.drivers import _coefficients, simulate_replicas
from megawatt.workload import Requests

from .conftest import LinearStep, assert_same_timeline, kv_for_tokens, make_requests, random_requests

POLICIES = sorted(SCHEDULERS)

# name: (model, system, deployment overrides)
MODELS = {
    "h100-llama-8b": ("llama-3.1-8b", "dgx-h100", {}),
    "h100-gpt-oss-20b": ("gpt-oss-20b", "dgx-h100", {}),  # MoE, sliding-window layers
    "h100-llama-70b-tp4-pp2": ("llama-3.1-70b", "dgx-h100", {"tp": 4, "pp": 2}),
    "cs3-llama-8b": ("llama-3.1-8b", "cs-3", {"engine": "cerebras"}),  # pipelined micro-batches
    # Data-parallel attention: the largest prefill chunk of a step sits on one rank.
    "h100-gpt-oss-20b-adp": ("gpt-oss-20b", "dgx-h100", {"tp": 4, "ep": 4, "attention_dp": True}),
    # Speculative decoding: MTP-like drafts on a GPU; a draft model on wafers (pipelined verify).
    "h100-llama-8b-spec": ("llama-3.1-8b", "dgx-h100", {"speculation": Speculation(3, 0.8, 0.1)}),
    "cs3-llama-8b-spec": (
        "llama-3.1-8b",
        "cs-3",
        {
            "engine": "cerebras",
            "pp": 2,
            "draft_model": load_model("llama-3-8b"),
            "speculation": Speculation(2, 0.7),
        },
    ),
}


@cache
def roofline(name: str) -> ReplicaConfig:
    """The real step model and KV budget of `name`, at most 16 sequences and 512 tokens a step."""
    model_id, system_id, extra = MODELS[name]
    catalog = load_catalog()
    system = catalog.system(system_id)
    dep = Deployment(
        load_model(model_id),
        system,
        catalog.device(system.device_id),
        max_num_seqs=16,
        max_num_batched_tokens=512,
        **extra,
    )
    return ReplicaConfig.of(dep)


def with_kv_tokens(cfg: ReplicaConfig, tokens: float | None) -> ReplicaConfig:
    """The same replica with a cache of `tokens` tokens (None: the memory plan's)."""
    if tokens is None:
        return cfg
    return replace(cfg, kv=replace(cfg.kv, capacity_bytes=tokens * cfg.kv.bytes_per_token))


def both(
    cfg: ReplicaConfig, requests: Requests, until_s: float | None = None
) -> tuple[RunResult, RunResult]:
    return (
        simulate(cfg, requests, until_s=until_s, backend="fast"),
        simulate(cfg, requests, until_s=until_s, backend="python"),
    )


def assert_same_run(fast: RunResult, slow: RunResult, rtol: float = 1e-9) -> None:
    """The per-request tables equal (times to `rtol`), and so do stats and ITL samples."""
    tf, ts = fast.table(), slow.table()
    assert tf.schema.equals(ts.schema)
    for name in tf.column_names:
        a = tf[name].to_numpy(zero_copy_only=False)
        b = ts[name].to_numpy(zero_copy_only=False)
        if a.dtype.kind == "f":
            np.testing.assert_allclose(a, b, rtol=rtol, atol=0.0, err_msg=name)
        else:
            np.testing.assert_array_equal(a, b, err_msg=name)
    a_st, b_st = fast.stats, slow.stats
    assert (a_st.n_steps, a_st.prefill_tokens, a_st.decode_tokens) == (
        b_st.n_steps,
        b_st.prefill_tokens,
        b_st.decode_tokens,
    )
    assert math.isclose(a_st.peak_kv_bytes, b_st.peak_kv_bytes, rel_tol=1e-12)
    for name in ("busy_s", "seq_seconds", "kv_byte_seconds"):
        assert math.isclose(getattr(a_st, name), getattr(b_st, name), rel_tol=rtol), name
    np.testing.assert_allclose(fast.itl_s, slow.itl_s, rtol=rtol, atol=0.0)
    np.testing.assert_array_equal(fast.itl_n, slow.itl_n)
    assert fast.backlog == slow.backlog
    assert math.isclose(fast.end_s, slow.end_s, rel_tol=rtol)
    assert_same_timeline(fast, slow, rtol)



# -- the step model's coefficients ------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_coefficients_describe_the_model(name: str) -> None:
    model = roofline(name).step_model
    if isinstance(model, SpeculativeStepModel):  # the roofline inside, with the settings
        c = model.coefficients()
        assert c.spec_draft_tokens == model.speculation.draft_tokens
        assert c.spec_pipelined == model.pipelined_verify
        model = model.inner
    assert isinstance(model, RooflineStepModel)
    c = model.coefficients()
    assert c.flops.shape == c.bytes.shape == (c.rate_flops_per_s.size, N_FEATURES)
    assert c.pipeline_depth == model.pipeline_depth
    assert c.window_tokens == model.window_tokens
    assert c.prefill_unit_tokens == PREFILL_UNIT_TOKENS
    assert not c.flops.flags.writeable  # a frozen export


# -- the conformance workloads ----------------------------------------------------------------
CONFORMANCE = {
    # name: (workload, kv tokens, max_num_seqs, max_num_batched_tokens, all at t=0)
    "default": (random_requests(7), 2000, 8, 256, False),
    "rejections": (random_requests(7), 250, 8, 256, False),
    "tight-kv": (random_requests(7), 700, 8, 256, False),
    "preemptions": (random_requests(7), 500, 8, 256, False),
    "roomy": (random_requests(7), 50_000, 8, 256, False),
    "prefix-hits": (random_requests(11, cached_fraction=0.5), 800, 8, 256, False),
    "too-large": (
        make_requests([100, 2000, 100], [10, 10, 10], arrival_s=[0.0, 0.1, 0.2]), 1000, 8, 256, False
    ),
    "kv-pressure": (make_requests([100] * 6, [200] * 6), 600, 8, 1024, False),
    "warm-prefix": (make_requests([200] * 3, [5] * 3, cached=[150, 0, 199]), 5000, 8, 256, True),
    "batch-cap": (random_requests(7), 50_000, 2, 256, True),
}


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("case", sorted(CONFORMANCE))
@pytest.mark.parametrize("model", ["h100-llama-8b", "cs3-llama-8b"])
def test_the_fast_engine_runs_the_conformance_workloads_as_the_python_one(
    policy: str, case: str, model: str
) -> None:
    requests, kv_tokens, seqs, tokens, at_once = CONFORMANCE[case]
    cfg = replace(
        with_kv_tokens(roofline(model), kv_tokens),
        scheduler=policy,
        max_num_seqs=seqs,
        max_num_batched_tokens=tokens,
    )
    if at_once:
        fast, slow = offline(cfg, requests, backend="fast"), offline(cfg, requests, backend="python")
    else:
        fast, slow = both(cfg, requests)
    assert_same_run(fast, slow)
    assert (fast.completed ^ fast.rejected).all()


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("model", sorted(MODELS))
def test_busy_replicas_agree_with_preemptions_prefix_hits_and_rejections(policy: str, model: str) -> None:
    """A loaded replica with a cache too small for the load: it preempts, skips cached
    prefixes and turns away what can never fit."""
    requests = random_requests(5, 80, rate_per_s=40, max_prompt=3000, max_output=300, cached_fraction=0.3)
    cfg = replace(with_kv_tokens(roofline(model), 3000), scheduler=policy)
    fast, slow = both(cfg, requests)
    assert_same_run(fast, slow)
    assert fast.rejected.any()
    if SCHEDULERS[policy].admit_while_running:
        assert fast.preemptions.any()
    assert fast.cached_tokens.any()


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("model", sorted(MODELS))
def test_the_memory_plans_cache_agrees(policy: str, model: str) -> None:
    requests = random_requests(9, 120, rate_per_s=25, max_prompt=2000, max_output=400)
    fast, slow = both(replace(roofline(model), scheduler=policy), requests)
    assert_same_run(fast, slow)
    assert slow.stats.n_stretches > 0  # the Python replica took its shortcuts; no matter


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.5, 0.9])
def test_a_run_stopped_early_agrees(policy: str, fraction: float) -> None:
    requests = random_requests(13, 60, rate_per_s=30, max_prompt=1500, max_output=400)
    until = fraction * float(requests.arrival_s[-1])
    cfg = replace(with_kv_tokens(roofline("h100-gpt-oss-20b"), 4000), scheduler=policy)
    fast, slow = both(cfg, requests, until_s=until)
    assert_same_run(fast, slow)
    assert fast.end_s == until


def test_a_stretch_cut_by_the_end_of_the_run_counts_the_steps_begun() -> None:
    """The Python replica's shortcut (many decode steps in one event) once dropped a stretch
    still running at `until` from the stats; step by step counts every step begun."""
    cfg = ReplicaConfig(LinearStep(), kv_for_tokens(3000), max_num_seqs=8, max_num_batched_tokens=256)
    requests = random_requests(3, 50, rate_per_s=10, max_output=150)
    for until in (1.0, 2.0, 3.3):
        stretched = simulate(cfg, requests, until_s=until)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(Replica, "_can_stretch", lambda self: False)
            steps = simulate(cfg, requests, until_s=until)
        assert stretched.stats.n_steps == steps.stats.n_steps
        assert stretched.stats.decode_tokens == steps.stats.decode_tokens
        assert math.isclose(stretched.stats.busy_s, steps.stats.busy_s, rel_tol=1e-9)
        assert math.isclose(stretched.stats.kv_byte_seconds, steps.stats.kv_byte_seconds, rel_tol=1e-9)
        assert stretched.stats.peak_kv_bytes == steps.stats.peak_kv_bytes
        np.testing.assert_allclose(stretched.itl_s, steps.itl_s, rtol=1e-9)


def test_arrivals_before_zero_and_empty_workloads() -> None:
    cfg = roofline("h100-llama-8b")
    early = make_requests([50, 60], [3, 4], arrival_s=[-5.0, -4.9])
    assert_same_run(*both(cfg, early))
    assert_same_run(*both(cfg, early, until_s=-4.95))
    empty_fast, empty_slow = both(cfg, Requests.empty())
    assert empty_fast.n == 0 and empty_fast.end_s == empty_slow.end_s == 0.0
    assert empty_fast.itl_s.size == empty_fast.itl_n.size == 0
    for backend in ("fast", "python"):
        with pytest.raises(InputError, match="until must be >= now"):
            simulate(cfg, early, until_s=-6.0, backend=backend)


# -- any workload -----------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(
    policy=st.sampled_from(POLICIES),
    model=st.sampled_from(sorted(MODELS)),
    seed=st.integers(0, 10_000),
    n=st.integers(1, 30),
    kv_tokens=st.one_of(st.none(), st.floats(200, 20_000)),
    max_num_seqs=st.integers(1, 16),
    max_tokens=st.integers(1, 1024),
    rate=st.floats(0.5, 300.0),
    max_prompt=st.sampled_from([50, 600, 4000]),
    cached_fraction=st.sampled_from([0.0, 0.5]),
    at_once=st.booleans(),
    until=st.sampled_from([None, 0.3, 0.8]),
)
def test_the_engines_agree_on_any_small_workload(
    policy: str,
    model: str,
    seed: int,
    n: int,
    kv_tokens: float | None,
    max_num_seqs: int,
    max_tokens: int,
    rate: float,
    max_prompt: int,
    cached_fraction: float,
    at_once: bool,
    until: float | None,
) -> None:
    requests = random_requests(
        seed, n, rate_per_s=rate, max_prompt=max_prompt, max_output=200, cached_fraction=cached_fraction
    )
    if at_once:
        requests = requests.with_arrivals(np.zeros(n))
    cfg = replace(
        with_kv_tokens(roofline(model), kv_tokens),
        scheduler=policy,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_tokens,
    )
    until_s = None if until is None else until * max(float(requests.arrival_s[-1]), 1.0)
    assert_same_run(*both(cfg, requests, until_s))
    if until_s is None:  # stretch mode runs to the end
        assert_same_requests(*_stretched(cfg, requests))


# -- closed loops ---------------------------------------------------------------------------
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("n_in_flight", [1, 3, 16, 200])
def test_closed_loops_agree(policy: str, model: str, n_in_flight: int) -> None:
    """A closed loop (InferenceX's client: C requests in flight, 10 x C in all) with a cache
    small enough to preempt and turn some away: the same issue times and table."""
    requests = random_requests(21, 60, rate_per_s=30, max_prompt=2500, max_output=300)
    cfg = replace(with_kv_tokens(roofline(model), 3000), scheduler=policy)
    fast = concurrency(cfg, requests, n_in_flight, backend="fast")
    slow = concurrency(cfg, requests, n_in_flight, backend="python")
    assert_same_run(fast, slow)
    np.testing.assert_allclose(fast.arrival_s, slow.arrival_s, rtol=1e-9, atol=0.0)
    quick = concurrency(cfg, requests, n_in_flight, backend="fast", stretch=True)
    for name in ("arrival_s", "first_token_s", "finish_s"):
        np.testing.assert_allclose(getattr(quick, name), getattr(slow, name), rtol=1e-9, atol=1e-12)
    # Never more than n_in_flight outstanding: each issue time is a completion (or rejection).
    issued = np.sort(fast.arrival_s)
    ended = np.sort(fast.finish_s)
    assert (issued[:n_in_flight] == 0.0).all()
    later = issued[n_in_flight:]
    np.testing.assert_array_equal(later, ended[: later.size])


@pytest.mark.parametrize("model", ["h100-llama-8b", "h100-gpt-oss-20b-adp", "cs3-llama-8b"])
@pytest.mark.parametrize("n_in_flight", [1, 7, 100])
def test_closed_loops_with_issue_delays_agree(model: str, n_in_flight: int) -> None:
    """The decode side of a disaggregated pair: each request reaches the replica a while after
    its issue (its prefill and KV transfer elsewhere), in issue order."""
    requests = random_requests(8, 50, rate_per_s=30, max_prompt=2000, max_output=200)
    delay = np.random.default_rng(3).uniform(0.0, 0.4, len(requests))
    cfg = with_kv_tokens(roofline(model), 4000)
    fast = concurrency(cfg, requests, n_in_flight, backend="fast", issue_delay_s=delay)
    slow = concurrency(cfg, requests, n_in_flight, backend="python", issue_delay_s=delay)
    assert_same_run(fast, slow)
    np.testing.assert_allclose(fast.arrival_s, slow.arrival_s, rtol=1e-9, atol=0.0)
    assert (np.diff(fast.arrival_s) >= 0).all()
    assert (fast.arrival_s[:n_in_flight] >= delay[:n_in_flight]).all()
    # Decode stretches in closed form: the same per-request times.
    quick = concurrency(cfg, requests, n_in_flight, backend="fast", issue_delay_s=delay, stretch=True)
    for name in ("arrival_s", "first_token_s", "finish_s"):
        np.testing.assert_allclose(getattr(quick, name), getattr(slow, name), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(quick.preemptions, slow.preemptions)


# -- choosing the engine ----------------------------------------------------------------------
def test_auto_takes_the_fast_engine_when_the_step_model_exports_coefficients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import megawatt.serving.compiled as fast

    calls: list[int] = []
    real = fast.simulate_fast

    def spy(*args: object, **kwargs: object) -> RunResult:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fast, "simulate_fast", spy)
    requests = random_requests(1, 10)
    simulate(roofline("h100-llama-8b"), requests)
    assert calls == [1]
    simulate(roofline("h100-llama-8b"), requests, backend="python")
    fake = ReplicaConfig(LinearStep(), kv_for_tokens(2000))
    simulate(fake, requests)  # a fake step model has no coefficients: the Python replica
    assert calls == [1]

    class Retimed(RooflineStepModel):  # inherits coefficients() but not their step times
        def step_time(self, batch: BatchShape) -> float:
            return 2.0 * super().step_time(batch)

    base = roofline("h100-llama-8b")
    assert isinstance(base.step_model, RooflineStepModel)
    retimed = replace(base, step_model=Retimed(base.step_model.deployment))
    simulate(retimed, requests)
    assert calls == [1]


def test_the_fast_engine_needs_coefficients_and_engines_have_names() -> None:
    fake = ReplicaConfig(LinearStep(), kv_for_tokens(2000))
    requests = random_requests(1, 5)
    with pytest.raises(InputError, match="backend 'fast' needs a step model with coefficients"):
        simulate(fake, requests, backend="fast")
    with pytest.raises(InputError, match=r"backend must be one of auto, fast, python; got 'gpu'"):
        simulate(fake, requests, backend="gpu")


def test_one_step_of_the_kernel_is_one_step_of_the_model() -> None:
    """A lone request on the wafer: its prefill is one step of the roofline model, and so is
    each decode step."""
    cfg = roofline("cs3-llama-8b")
    res = simulate(cfg, make_requests([300], [3]), backend="fast")
    model = cfg.step_model
    prefill = model.step_time(BatchShape.of([], [(300, 0)]))
    decode = model.step_time(BatchShape.of([301]))
    assert math.isclose(res.first_token_s[0], prefill, rel_tol=1e-12)
    assert math.isclose(res.itl_s[0], decode, rel_tol=1e-12)
    assert res.stats.n_steps == 3


def test_speculation_over_a_model_without_coefficients_takes_the_python_replica() -> None:
    cfg = ReplicaConfig(
        SpeculativeStepModel(LinearStep(), Speculation(2, 0.8, 0.1)), kv_for_tokens(3000),
        max_num_seqs=8, max_num_batched_tokens=256,
    )
    requests = random_requests(4, 20, rate_per_s=10, max_output=50)
    assert simulate(cfg, requests).completed.all()
    with pytest.raises(InputError, match="coefficients"):
        simulate(cfg, requests, backend="fast")


# -- stretch mode: decode stretches in closed form ----------------------------------------------
def _stretched(cfg: ReplicaConfig, requests: Requests) -> tuple[RunResult, RunResult]:
    """The same run step by step and in stretch mode."""
    c = _coefficients(cfg)
    assert c is not None
    kwargs = {
        "scheduler": cfg.scheduler,
        "max_num_seqs": cfg.max_num_seqs,
        "max_num_batched_tokens": cfg.max_num_batched_tokens,
    }
    return (
        simulate_fast(c, cfg.kv, requests, **kwargs),  # type: ignore[arg-type]
        simulate_fast(c, cfg.kv, requests, stretch=True, **kwargs),  # type: ignore[arg-type]
    )


def assert_same_requests(steps: RunResult, stretched: RunResult, rtol: float = 1e-9) -> None:
    """Stretch mode: the per-request table and stats of the step-by-step run, no timeline."""
    for name in ("first_token_s", "finish_s"):
        np.testing.assert_allclose(getattr(stretched, name), getattr(steps, name), rtol=rtol, err_msg=name)
    for name in ("rejected", "preemptions", "cached_tokens"):
        np.testing.assert_array_equal(getattr(stretched, name), getattr(steps, name), err_msg=name)
    a, b = steps.stats, stretched.stats
    assert (a.n_steps, a.prefill_tokens, a.decode_tokens) == (b.n_steps, b.prefill_tokens, b.decode_tokens)
    for name in ("busy_s", "seq_seconds", "kv_byte_seconds", "peak_kv_bytes"):
        assert math.isclose(getattr(a, name), getattr(b, name), rel_tol=rtol), name
    assert stretched.backlog == steps.backlog
    assert stretched.itl_s.size == 0 and stretched.timeline_bins is None
    with pytest.raises(InputError, match="kept no timeline"):
        stretched.timeline()


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("model", sorted(MODELS))
def test_stretch_mode_runs_a_lightly_loaded_replica_as_step_by_step(policy: str, model: str) -> None:
    """Requests mostly alone (long decode stretches), short prompts crossing sliding windows,
    a cache small enough to bound stretches; speculative decoding steps one step at a time."""
    requests = random_requests(21, 120, rate_per_s=0.5, max_prompt=300, max_output=400, cached_fraction=0.2)
    steps, stretched = _stretched(replace(with_kv_tokens(roofline(model), 6000), scheduler=policy), requests)
    assert_same_requests(steps, stretched)
    spec = MODELS[model][2].get("speculation") is not None
    assert (stretched.stats.n_stretches == 0) == spec
    if not spec:
        assert stretched.stats.n_stretches > 50


def test_replicas_side_by_side_are_each_replica_alone() -> None:
    """`simulate_replicas` runs replica after replica in one call; a step model without
    coefficients takes the Python replica for each."""
    parts = [
        random_requests(s, n, rate_per_s=1.0, max_prompt=900, max_output=200)
        for s, n in [(1, 30), (2, 0), (3, 45)]
    ]
    arrival = np.concatenate([p.arrival_s for p in parts])
    prompt = np.concatenate([p.prompt_tokens for p in parts])
    output = np.concatenate([p.output_tokens for p in parts])
    cached = np.concatenate([p.cached_tokens for p in parts])
    offsets = np.cumsum([0, *(len(p) for p in parts)])
    for cfg in (roofline("h100-gpt-oss-20b"), ReplicaConfig(LinearStep(), kv_for_tokens(3000))):
        runs = simulate_replicas(cfg, arrival, prompt, output, cached, offsets)
        for r, part in enumerate(parts):
            alone = simulate(cfg, part)
            rows = slice(offsets[r], offsets[r + 1])
            np.testing.assert_allclose(runs.first_token_s[rows], alone.first_token_s, rtol=1e-9)
            np.testing.assert_allclose(runs.finish_s[rows], alone.finish_s, rtol=1e-9)
            np.testing.assert_array_equal(runs.rejected[rows], alone.rejected)
            assert math.isclose(runs.busy_s[r], alone.stats.busy_s, rel_tol=1e-9)


def test_the_compiled_replica_compiles_the_shared_arithmetic_itself() -> None:
    """Write once, compile twice: the kernel's sequence bytes, step features, timeline binning,
    speculative verify shapes and prefix cache are the very functions the Python side calls,
    compiled - not copies."""
    from megawatt.perf import speculative
    from megawatt.perf.roofline import fill_features
    from megawatt.serving import compiled, prefix
    from megawatt.serving.kv import sequence_bytes
    from megawatt.serving.timeline import add_step

    assert compiled._seq_bytes.py_func is sequence_bytes
    assert compiled._features.py_func is fill_features
    assert compiled._timeline_add.py_func is add_step
    for name in ("leading_hits", "any_free", "shared_bytes", "acquire", "register", "evict_to"):
        assert getattr(compiled, f"_{name}").py_func is getattr(prefix, name)
    assert compiled._release_blocks.py_func is prefix.release
    assert compiled._verify_chunk.py_func is speculative.verify_chunk
    assert compiled._pipelined_decodes.py_func is speculative.pipelined_decodes


def test_the_shared_features_agree_on_scalars_and_on_columns() -> None:
    """`fill_features` gives the same features for one step's scalars (the kernel's call) as
    for that step inside a column of many (the Python step model's call)."""
    from megawatt.perf.roofline import fill_features

    rng = np.random.default_rng(7)
    k = 6
    cols = [rng.uniform(1.0, 500.0, k) for _ in range(13)]
    for window, experts in ((0, 0.0), (128, 32.0)):
        wide = np.empty((N_FEATURES, k))
        mbs = fill_features(wide, *cols, 4.0, window, experts, 4.0)
        for j in range(k):
            one = np.empty(N_FEATURES)
            mb = fill_features(one, *(float(c[j]) for c in cols), 4.0, window, experts, 4.0)
            assert mb == mbs[j]
            np.testing.assert_array_equal(one, wide[:, j])
