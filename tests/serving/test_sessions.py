"""Sessions on the compiled replica tell the Python replica's story: chains (and trees) of turns,
each issued when the turn before completes or is rejected and arriving a gap later, give the
same arrivals and per-request table on both engines, under every policy, with gaps of zero,
sessions of one turn, preemptions, turns too large for the cache, and runs stopped early. Stretch
mode (decode stretches in closed form, cut by the next arrival from the table or from a session)
gives the same times to float rounding."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megawatt.errors import InputError
from megawatt.serving import SCHEDULERS, ReplicaConfig, RunResult
from megawatt.serving.compiled import simulate_fast
from megawatt.serving.drivers import _coefficients, sessions, simulate
from megawatt.workload import Requests

from .conftest import LinearStep, kv_for_tokens, make_requests
from .test_compiled import MODELS, POLICIES, assert_same_run, roofline, with_kv_tokens


def session_table(
    seed: int,
    n_sessions: int,
    *,
    max_turns: int = 6,
    rate_per_s: float = 2.0,
    mean_gap_s: float = 0.3,
    zero_gaps: float = 0.3,
    max_prompt: int = 2000,
    max_output: int = 200,
    at_once: bool = False,
    tree: bool = False,
) -> tuple[Requests, np.ndarray, np.ndarray]:
    """`n_sessions` sessions of 1 to `max_turns` turns with Poisson starts (all at 0 when
    `at_once`), a share `zero_gaps` of gaps exactly 0 and the others exponential: a chain of
    turns each after the one before, or (`tree`) each after any earlier turn of its session
    (several turns then wait for one). Returns the table, `parent` and `gap_s`."""
    rng = np.random.default_rng(seed)
    starts = np.zeros(n_sessions) if at_once else np.cumsum(rng.exponential(1.0 / rate_per_s, n_sessions))
    turns = rng.integers(1, max_turns + 1, n_sessions)
    n = int(turns.sum())
    session = np.repeat(np.arange(n_sessions), turns)
    first = np.concatenate(([0], np.cumsum(turns)[:-1]))[session]
    rows = np.arange(n)
    earlier = first + (rng.random(n) * (rows - first)).astype(np.int64) if tree else rows - 1
    parent = np.where(rows == first, -1, earlier)
    gap = np.where(rng.random(n) < zero_gaps, 0.0, rng.exponential(mean_gap_s, n))
    prompt = rng.integers(1, max_prompt + 1, n)
    requests = Requests(
        arrival_s=starts[session],
        prompt_tokens=prompt,
        output_tokens=rng.integers(1, max_output + 1, n),
        cached_tokens=np.where(rng.random(n) < 0.3, rng.integers(0, prompt), 0),
        class_id=rng.integers(0, 2, n),
        class_names=("chat", "code"),
    )
    return requests, parent, gap


def both(
    cfg: ReplicaConfig,
    table: tuple[Requests, np.ndarray, np.ndarray],
    until_s: float | None = None,
) -> tuple[RunResult, RunResult]:
    """The same sessions on the compiled and the Python engine."""
    return (
        sessions(cfg, *table, backend="fast", until_s=until_s),
        sessions(cfg, *table, backend="python", until_s=until_s),
    )


def assert_same_sessions(fast: RunResult, slow: RunResult) -> None:
    """The same arrivals (NaN for the same turns never issued) and the same run."""
    np.testing.assert_array_equal(np.isnan(fast.arrival_s), np.isnan(slow.arrival_s))
    np.testing.assert_allclose(fast.arrival_s, slow.arrival_s, rtol=1e-9, atol=0.0)
    assert_same_run(fast, slow)


def assert_stretch_agrees(
    cfg: ReplicaConfig, table: tuple[Requests, np.ndarray, np.ndarray], slow: RunResult
) -> None:
    """Stretch mode: the Python run's arrivals and per-request times to float rounding."""
    quick = sessions(cfg, *table, backend="fast", stretch=True)
    for name in ("arrival_s", "first_token_s", "finish_s"):
        np.testing.assert_allclose(
            getattr(quick, name), getattr(slow, name), rtol=1e-9, atol=1e-12, err_msg=name
        )
    for name in ("rejected", "preemptions", "cached_tokens"):
        np.testing.assert_array_equal(getattr(quick, name), getattr(slow, name), err_msg=name)
    assert quick.timeline_bins is None and quick.itl_s.size == 0


# -- seeded examples ----------------------------------------------------------------------------
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("model", sorted(MODELS))
def test_busy_sessions_agree_with_preemptions_and_rejections(policy: str, model: str) -> None:
    """Many sessions at once on a cache too small for them: turns wait, are preempted, and a
    turn that can never fit is rejected, which issues the next turn all the same."""
    table = session_table(3, 25, rate_per_s=20.0, max_prompt=3000, max_output=300)
    cfg = replace(with_kv_tokens(roofline(model), 3000), scheduler=policy)
    fast, slow = both(cfg, table)
    assert_same_sessions(fast, slow)
    assert fast.rejected.any()
    assert (fast.completed ^ fast.rejected).all()  # every turn issued, each ends one way
    parent = table[1]
    children = parent >= 0
    np.testing.assert_allclose(fast.arrival_s[children], fast.finish_s[parent[children]] + table[2][children])
    if SCHEDULERS[policy].admit_while_running:
        assert fast.preemptions.any()
    assert_stretch_agrees(cfg, table, slow)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("tree", [False, True])
@pytest.mark.parametrize("at_once", [False, True])
def test_sessions_agree_with_zero_gaps_ties_and_turns_waiting_on_one_turn(
    policy: str, tree: bool, at_once: bool
) -> None:
    """Every gap zero: a turn arrives the instant the one before ends (it joins the next step,
    not the one formed then); sessions all starting at 0 tie with each other and with turns
    issued by rejections at 0; several turns waiting on one arrive together, in issue order."""
    table = session_table(5, 12, zero_gaps=1.0, at_once=at_once, tree=tree, max_prompt=2500)
    cfg = replace(with_kv_tokens(roofline("h100-gpt-oss-20b"), 2500), scheduler=policy)
    fast, slow = both(cfg, table)
    assert_same_sessions(fast, slow)
    assert fast.rejected.any()
    assert_stretch_agrees(cfg, table, slow)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.4, 0.8])
def test_sessions_stopped_early_agree(policy: str, fraction: float) -> None:
    """`until_s` cuts sessions short: turns issued by then keep their (perhaps later)
    arrival, turns never issued have none, and both engines stop at the same place."""
    table = session_table(8, 15, rate_per_s=4.0, mean_gap_s=1.0, max_prompt=1500, max_output=300)
    cfg = replace(with_kv_tokens(roofline("h100-llama-8b"), 4000), scheduler=policy)
    end = sessions(cfg, *table, backend="python").end_s
    until = fraction * end
    fast, slow = both(cfg, table, until_s=until)
    assert_same_sessions(fast, slow)
    assert fast.end_s == until
    if fraction < 0.5:
        assert np.isnan(fast.arrival_s).any()


def test_sessions_of_one_turn_each_are_the_open_loop_run() -> None:
    requests = session_table(2, 40, max_turns=1)[0]
    cfg = with_kv_tokens(roofline("h100-llama-8b"), 5000)
    n = len(requests)
    res = sessions(cfg, requests, np.full(n, -1), np.zeros(n), backend="fast")
    ref = simulate(cfg, requests, backend="fast")
    np.testing.assert_array_equal(res.finish_s, ref.finish_s)
    np.testing.assert_array_equal(res.first_token_s, ref.first_token_s)
    np.testing.assert_array_equal(res.arrival_s, requests.arrival_s)


def test_lightly_loaded_sessions_take_long_stretches() -> None:
    """A session mostly alone decodes in long stretches; each next turn (or session) cuts them
    where it arrives, so stretch mode matches the Python run."""
    table = session_table(
        4, 30, rate_per_s=0.2, mean_gap_s=2.0, zero_gaps=0.1, max_prompt=400, max_output=400
    )
    cfg = roofline("h100-gpt-oss-20b")
    slow = sessions(cfg, *table, backend="python")
    assert_same_sessions(sessions(cfg, *table, backend="fast"), slow)
    assert_stretch_agrees(cfg, table, slow)
    c = _coefficients(cfg)
    assert c is not None
    quick = simulate_fast(c, cfg.kv, table[0], stretch=True, parent=table[1], gap_s=table[2])
    assert quick.stats.n_stretches > 50


# -- any session table --------------------------------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(
    policy=st.sampled_from(POLICIES),
    model=st.sampled_from(sorted(MODELS)),
    seed=st.integers(0, 10_000),
    n_sessions=st.integers(1, 12),
    max_turns=st.sampled_from([1, 3, 8]),
    kv_tokens=st.one_of(st.none(), st.floats(300, 20_000)),
    max_num_seqs=st.integers(1, 16),
    max_tokens=st.integers(1, 1024),
    rate=st.floats(0.2, 100.0),
    gap=st.sampled_from([0.01, 0.3, 3.0]),
    zero_gaps=st.sampled_from([0.0, 0.5, 1.0]),
    max_prompt=st.sampled_from([50, 600, 4000]),
    at_once=st.booleans(),
    tree=st.booleans(),
    until=st.sampled_from([None, 0.3, 0.8]),
)
def test_the_engines_agree_on_any_small_session_table(
    policy: str,
    model: str,
    seed: int,
    n_sessions: int,
    max_turns: int,
    kv_tokens: float | None,
    max_num_seqs: int,
    max_tokens: int,
    rate: float,
    gap: float,
    zero_gaps: float,
    max_prompt: int,
    at_once: bool,
    tree: bool,
    until: float | None,
) -> None:
    table = session_table(
        seed, n_sessions, max_turns=max_turns, rate_per_s=rate, mean_gap_s=gap, zero_gaps=zero_gaps,
        max_prompt=max_prompt, at_once=at_once, tree=tree,
    )
    cfg = replace(
        with_kv_tokens(roofline(model), kv_tokens),
        scheduler=policy,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_tokens,
    )
    until_s = None if until is None else until * max(float(table[0].arrival_s[-1]), 1.0) * 3.0
    fast, slow = both(cfg, table, until_s)
    assert_same_sessions(fast, slow)
    if until_s is None:
        assert (slow.completed ^ slow.rejected).all()
        assert_stretch_agrees(cfg, table, slow)


# -- choosing the engine ------------------------------------------------------------------------
def test_auto_runs_sessions_on_the_compiled_engine_when_it_can(monkeypatch: pytest.MonkeyPatch) -> None:
    import megawatt.serving.compiled as fast

    calls: list[dict[str, object]] = []
    real = fast.simulate_fast

    def spy(*args: object, **kwargs: object) -> RunResult:
        calls.append(kwargs)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fast, "simulate_fast", spy)
    table = session_table(1, 4)
    sessions(roofline("h100-llama-8b"), *table, stretch=True)
    assert len(calls) == 1 and calls[0]["stretch"] is True
    sessions(roofline("h100-llama-8b"), *table, backend="python")
    fake = ReplicaConfig(LinearStep(), kv_for_tokens(5000))
    assert sessions(fake, *table).completed.all()  # no coefficients: the Python replica
    assert len(calls) == 1
    with pytest.raises(InputError, match="backend 'fast' needs a step model with coefficients"):
        sessions(fake, *table, backend="fast")


def test_the_compiled_engine_checks_its_session_arguments() -> None:
    cfg = roofline("h100-llama-8b")
    c = _coefficients(cfg)
    assert c is not None
    reqs = make_requests([10, 10], [2, 2])
    with pytest.raises(InputError, match="both parent and gap_s"):
        simulate_fast(c, cfg.kv, reqs, parent=np.array([-1, 0]))
    with pytest.raises(InputError, match="no n_in_flight"):
        simulate_fast(c, cfg.kv, reqs, parent=np.array([-1, 0]), gap_s=np.zeros(2), n_in_flight=1)
    with pytest.raises(InputError, match="parent"):
        simulate_fast(c, cfg.kv, reqs, parent=np.array([1, -1]), gap_s=np.zeros(2))
    empty = simulate_fast(c, cfg.kv, Requests.empty(), parent=np.zeros(0), gap_s=np.zeros(0))
    assert empty.n == 0 and empty.end_s == 0.0
