"""Session tables: chains of turns with a growing, cached context."""

from __future__ import annotations

import math

import numpy as np
import pytest

from megawatt.errors import InputError
from megawatt.workload.lengths import Fixed, Lognormal
from megawatt.workload.sessions import (
    SessionClass,
    check_sessions,
    default_session_classes,
    sample_sessions,
    sigma_of_p90,
)


def _fixed_class(turns: int = 4, gap: float = 2.0) -> SessionClass:
    return SessionClass(
        "agent", 1.0, "fast", turns=Fixed(turns), first_prompt=Fixed(100), new_tokens=Fixed(10),
        output=Fixed(5), gap_median_s=gap, gap_sigma=0.0, cache_hit=0.5,
    )


def test_each_turn_resends_the_context_and_caches_its_share() -> None:
    t = sample_sessions([_fixed_class()], np.random.default_rng(0), np.zeros(1), max_context_tokens=10_000)
    r = t.requests
    assert r.prompt_tokens.tolist() == [100, 115, 130, 145]  # + previous output 5 + new 10
    assert r.cached_tokens.tolist() == [0, 52, 60, 67]  # half of the 105, 120, 135 re-sent
    assert t.parent.tolist() == [-1, 0, 1, 2]
    assert t.gap_s.tolist() == [0.0, 2.0, 2.0, 2.0]


def test_a_context_past_the_window_compacts_to_the_first_prompt() -> None:
    rng = np.random.default_rng(0)
    t = sample_sessions([_fixed_class(turns=6)], rng, np.zeros(1), max_context_tokens=160)
    # window 160: output cap 40, prompt cap 120; 100, 115, then 130 > 120 compacts to 100 + 10.
    assert t.requests.prompt_tokens.tolist()[:3] == [100, 115, 110]
    assert t.requests.cached_tokens[2] == 0


def test_sessions_are_grouped_in_start_order_with_their_class() -> None:
    classes = default_session_classes()
    starts = np.sort(np.random.default_rng(1).uniform(0, 100, 50))
    t = sample_sessions(classes, np.random.default_rng(2), starts, max_context_tokens=131072)
    assert (np.diff(t.session) >= 0).all()
    np.testing.assert_array_equal(t.requests.arrival_s, starts[t.session])
    assert (t.parent[t.parent >= 0] == np.flatnonzero(t.parent >= 0) - 1).all()
    np.testing.assert_array_equal(t.requests.class_id, t.session_class[t.session])
    assert ((t.requests.prompt_tokens + t.requests.output_tokens) <= 131072).all()


def test_the_agent_defaults_reproduce_their_sourced_quantiles() -> None:
    agent = {c.name: c for c in default_session_classes()}["coding-agent"]
    assert isinstance(agent.turns, Lognormal)
    rng = np.random.default_rng(3)
    turns = agent.turns.sample(rng, 200_000)
    assert np.median(turns) == pytest.approx(25, rel=0.05)
    assert np.percentile(turns, 90) == pytest.approx(324, rel=0.05)
    gaps = agent.gaps(rng, 200_000)
    assert np.median(gaps) == pytest.approx(3.8, rel=0.03)
    assert np.percentile(gaps, 90) == pytest.approx(28.9, rel=0.05)
    assert sigma_of_p90(25, 324) == pytest.approx(math.log(324 / 25) / 1.2815515655446004)


def test_bad_session_settings_are_refused() -> None:
    with pytest.raises(InputError, match="latency must be one of"):
        SessionClass("x", 1.0, "soon", Fixed(1), Fixed(1), Fixed(1), Fixed(1), 1.0, 0.0, 0.5)
    with pytest.raises(InputError, match="cache_hit"):
        SessionClass("x", 1.0, "fast", Fixed(1), Fixed(1), Fixed(1), Fixed(1), 1.0, 0.0, 1.5)
    with pytest.raises(InputError, match="non-decreasing"):
        starts = np.array([2.0, 1.0])
        sample_sessions([_fixed_class()], np.random.default_rng(0), starts, max_context_tokens=1000)


def test_a_sampled_table_passes_the_check_and_broken_chains_do_not() -> None:
    t = sample_sessions([_fixed_class()], np.random.default_rng(0), np.zeros(1), max_context_tokens=10_000)
    par, gap = check_sessions(len(t.requests), t.parent.tolist(), t.gap_s.tolist())
    assert par.dtype == np.int64 and gap.dtype == np.float64
    assert par.tolist() == [-1, 0, 1, 2]
    with pytest.raises(InputError, match="earlier row"):
        check_sessions(2, np.array([1, -1]), np.zeros(2))  # a turn waiting on a later one
    with pytest.raises(InputError, match="one value per request"):
        check_sessions(3, np.array([-1, 0]), np.zeros(2))
    with pytest.raises(InputError, match="finite delay"):
        check_sessions(2, np.array([-1, 0]), np.array([0.0, -1.0]))
