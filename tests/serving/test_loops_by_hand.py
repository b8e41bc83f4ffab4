"""The drivers' loops on quarter-second steps, worked out by hand: the closed loop issuing a
request at each completion (with issue delays), sessions whose turns wait for each other, many
independent replicas on the Python engine, and a capacity's token rate."""

from __future__ import annotations

import numpy as np
import pytest

from megawatt.errors import InputError
from megawatt.serving import ReplicaConfig, Slo, concurrency, offline, simulate
from megawatt.serving.drivers import (
    Capacity,
    sessions,
    simulate_replicas,
    single_user,
    with_scheduler,
)

from .conftest import ConstantStep, kv_for_tokens, make_requests

STEP = 0.25


def cfg(**kwargs: object) -> ReplicaConfig:
    return ReplicaConfig(ConstantStep(STEP), kv_for_tokens(100_000), **kwargs)  # type: ignore[arg-type]


# -- the closed loop ------------------------------------------------------------------------------


def test_one_in_flight_issues_each_request_as_the_last_one_ends() -> None:
    """Three requests of two steps each, one at a time: arrivals 0, 0.5, 1.0 s."""
    res = concurrency(cfg(), make_requests([10, 10, 10], [2, 2, 2]), 1)
    np.testing.assert_array_equal(res.arrival_s, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(res.finish_s, [0.5, 1.0, 1.5])
    np.testing.assert_array_equal(res.ttft_s, [STEP] * 3)


def test_single_user_is_one_in_flight() -> None:
    reqs = make_requests([10, 40, 5], [3, 1, 4])
    a, b = single_user(cfg(), reqs), concurrency(cfg(), reqs, 1)
    np.testing.assert_array_equal(a.finish_s, b.finish_s)
    # Back to back: 3 + 1 + 4 steps.
    assert a.finish_s[-1] == 8 * STEP


def test_two_in_flight_start_together_and_refill_at_each_completion() -> None:
    """A (1 token) and B (4 tokens) start at 0. A ends at 0.25 s and issues C (2 tokens), but
    the step starting at that instant is formed before C's arrival is processed: C prefills
    over [0.5, 0.75) and ends at 1.0 s with B. Then the replica is empty, so D, issued at
    1.0 s, starts a step at once and ends at 1.25 s."""
    res = concurrency(cfg(), make_requests([10] * 4, [1, 4, 2, 1]), 2)
    np.testing.assert_array_equal(res.arrival_s, [0.0, 0.0, 0.25, 1.0])
    np.testing.assert_array_equal(res.first_token_s, [0.25, 0.25, 0.75, 1.25])
    np.testing.assert_array_equal(res.finish_s, [0.25, 1.0, 1.0, 1.25])


def test_an_open_loop_arrival_at_a_step_end_joins_the_step_that_starts_then() -> None:
    """The contrast: a table's arrivals are queued before a step ending at the same instant
    forms the next one, so B, arriving at 0.25 s as A's first step ends, prefills at once."""
    res = simulate(cfg(), make_requests([10, 10], [4, 2], arrival_s=[0.0, 0.25]))
    np.testing.assert_array_equal(res.first_token_s, [0.25, 0.5])


def test_an_issue_delay_postpones_each_arrival_after_its_issue() -> None:
    """One at a time, each arriving 0.125 s after its issue: the replica idles in between."""
    res = concurrency(
        cfg(), make_requests([10, 10, 10], [2, 2, 2]), 1, issue_delay_s=np.full(3, 0.125)
    )
    np.testing.assert_array_equal(res.arrival_s, [0.125, 0.75, 1.375])
    np.testing.assert_array_equal(res.finish_s, [0.625, 1.25, 1.875])


def test_arrivals_keep_their_issue_order_whatever_the_delays() -> None:
    """Two issued at 0 with delays 0.5 and 0.0 s: the second may not overtake the first."""
    res = concurrency(cfg(), make_requests([10, 10], [1, 1]), 2, issue_delay_s=np.array([0.5, 0.0]))
    np.testing.assert_array_equal(res.arrival_s, [0.5, 0.5])


@pytest.mark.parametrize(
    "delay",
    [np.array([0.0]), np.array([0.0, -1.0]), np.array([0.0, np.inf])],
    ids=["short", "negative", "inf"],
)
def test_bad_issue_delays_are_refused(delay: np.ndarray) -> None:
    with pytest.raises(InputError, match="issue_delay_s must hold one finite delay >= 0 per request"):
        concurrency(cfg(), make_requests([10, 10], [1, 1]), 1, issue_delay_s=delay)


def test_a_concurrency_of_zero_is_refused_with_its_value() -> None:
    with pytest.raises(InputError, match="concurrency must be >= 1; got 0"):
        concurrency(cfg(), make_requests([10], [1]), 0)


def test_more_in_flight_than_requests_issues_them_all_at_once() -> None:
    res = concurrency(cfg(), make_requests([10, 10], [3, 3]), 50)
    np.testing.assert_array_equal(res.arrival_s, [0.0, 0.0])
    np.testing.assert_array_equal(res.finish_s, [0.75, 0.75])


# -- sessions -------------------------------------------------------------------------------------


def test_a_session_of_three_turns_by_hand() -> None:
    """Turn 0 (2 tokens) ends at 0.5 s; turn 1 arrives 1 s later and takes three steps, to
    2.25 s; turn 2 arrives 0.25 s after that and takes one step, to 2.75 s."""
    res = sessions(
        cfg(), make_requests([10, 20, 30], [2, 3, 1]), np.array([-1, 0, 1]),
        np.array([0.0, 1.0, 0.25]),
    )
    np.testing.assert_array_equal(res.arrival_s, [0.0, 1.5, 2.5])
    np.testing.assert_array_equal(res.finish_s, [0.5, 2.25, 2.75])


def test_two_turns_waiting_on_one_parent_arrive_together() -> None:
    res = sessions(
        cfg(), make_requests([10, 10, 10], [1, 2, 2]), np.array([-1, 0, 0]), np.zeros(3),
    )
    np.testing.assert_array_equal(res.arrival_s, [0.0, 0.25, 0.25])
    np.testing.assert_array_equal(res.finish_s, [0.25, 0.75, 0.75])


def test_turns_never_issued_before_the_end_have_no_arrival() -> None:
    """Stopped at 1 s: turn 1 was issued at 0.25 s but is due at 5.25 s; turn 3 waits on turn
    2, which needs 2.5 s, so it is never issued."""
    res = sessions(
        cfg(), make_requests([10, 10, 10, 10], [1, 1, 10, 1]), np.array([-1, 0, -1, 2]),
        np.array([0.0, 5.0, 0.0, 0.0]), until_s=1.0,
    )
    assert res.finish_s[0] == STEP
    assert res.arrival_s[1] == 5.25
    assert np.isnan(res.arrival_s[3])
    np.testing.assert_array_equal(res.completed, [True, False, False, False])


def test_session_links_must_hold_one_value_per_request() -> None:
    with pytest.raises(InputError, match=r"parent and gap_s must hold one value per request \(2\)"):
        sessions(cfg(), make_requests([10, 10], [1, 1]), np.array([-1]), np.zeros(2))


# -- many replicas --------------------------------------------------------------------------------


def test_independent_replicas_each_serve_their_own_rows() -> None:
    """Rows 0-1 on replica 0 (together: both done after 3 steps) and row 2 on replica 1 (from
    1 s, 2 steps); replica 2 has none."""
    runs = simulate_replicas(
        cfg(),
        np.array([0.0, 0.0, 1.0]),
        np.array([10, 20, 30]),
        np.array([3, 3, 2]),
        np.zeros(3, dtype=np.int64),
        np.array([0, 2, 3, 3]),
    )
    np.testing.assert_array_equal(runs.first_token_s, [0.25, 0.25, 1.25])
    np.testing.assert_array_equal(runs.finish_s, [0.75, 0.75, 1.5])
    np.testing.assert_array_equal(runs.rejected, [False, False, False])
    np.testing.assert_array_equal(runs.busy_s, [0.75, 0.5, 0.0])


def test_replicas_on_their_own_match_single_runs() -> None:
    arrival = np.array([0.0, 0.1, 0.2, 0.0, 0.3])
    prompt, output = np.array([50, 300, 20, 80, 10]), np.array([4, 2, 6, 3, 5])
    runs = simulate_replicas(
        cfg(max_num_batched_tokens=64), arrival, prompt, output, np.zeros(5, dtype=np.int64),
        np.array([0, 3, 5]),
    )
    for a, e in ((0, 3), (3, 5)):
        ref = simulate(
            cfg(max_num_batched_tokens=64),
            make_requests(list(prompt[a:e]), list(output[a:e]), arrival_s=list(arrival[a:e])),
        )
        np.testing.assert_array_equal(runs.finish_s[a:e], ref.finish_s)
        np.testing.assert_array_equal(runs.first_token_s[a:e], ref.first_token_s)


# -- small pieces ---------------------------------------------------------------------------------


def test_a_capacity_serves_its_rate_times_the_mean_served_output() -> None:
    res = offline(cfg(), make_requests([10, 10, 10], [2, 4, 6]))
    cap = Capacity(rate_per_s=3.0, result=res, slo=Slo(), rel_tol=0.03)
    assert cap.output_tokens_per_s == 3.0 * 4.0
    assert Capacity(0.0, None, Slo(), 0.03).output_tokens_per_s == 0.0


def test_with_scheduler_changes_only_the_scheduler() -> None:
    base = cfg(max_num_seqs=7)
    other = with_scheduler(base, "static")
    assert other.scheduler == "static"
    assert (other.max_num_seqs, other.kv, other.step_model) == (7, base.kv, base.step_model)


def test_an_unknown_backend_lists_the_known_ones() -> None:
    with pytest.raises(InputError, match=r"backend must be one of .*; got 'gpu'"):
        simulate(cfg(), make_requests([10], [1]), backend="gpu")


def test_the_fast_backend_needs_a_step_model_with_coefficients() -> None:
    with pytest.raises(InputError, match="backend 'fast' needs a step model with coefficients\\(\\); "
                       "ConstantStep has none"):
        simulate(cfg(), make_requests([10], [1]), backend="fast")
