"""The event kernel: a clock, a heap of callbacks, deterministic ties, time that never runs back."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megawatt.errors import InputError
from megawatt.sim import Environment


def test_a_new_environment_starts_at_zero_with_nothing_to_do() -> None:
    env = Environment()
    assert env.now == 0.0
    assert len(env) == 0
    assert env.peek == math.inf
    assert Environment(start_s=5.0).now == 5.0


def test_schedule_then_step_moves_the_clock_to_the_event() -> None:
    env = Environment()
    seen: list[tuple[float, str]] = []
    env.schedule(2.0, lambda tag: seen.append((env.now, tag)), "b")
    env.schedule(1.0, lambda tag: seen.append((env.now, tag)), "a")
    assert env.peek == 1.0
    env.step()
    assert seen == [(1.0, "a")]
    assert env.now == 1.0
    env.step()
    assert seen == [(1.0, "a"), (2.0, "b")]
    assert len(env) == 0


def test_delays_count_from_the_time_of_scheduling() -> None:
    env = Environment()
    times: list[float] = []

    def tick(n: int) -> None:
        times.append(env.now)
        if n:
            env.schedule(0.5, tick, n - 1)

    env.schedule(1.0, tick, 3)
    env.run()
    assert times == [1.0, 1.5, 2.0, 2.5]


def test_ties_run_by_priority_then_in_scheduling_order() -> None:
    env = Environment()
    order: list[str] = []
    env.schedule(1.0, order.append, "first scheduled")
    env.schedule(1.0, order.append, "second scheduled")
    env.schedule(1.0, order.append, "urgent", priority=-1)
    env.schedule(1.0, order.append, "lazy", priority=1)
    env.schedule_at(1.0, order.append, "third scheduled")
    env.run()
    assert order == ["urgent", "first scheduled", "second scheduled", "third scheduled", "lazy"]


def test_an_event_scheduled_for_now_runs_after_those_already_due_now() -> None:
    env = Environment()
    order: list[str] = []

    def first() -> None:
        order.append("first")
        env.schedule(0.0, order.append, "spawned")

    env.schedule(1.0, first)
    env.schedule(1.0, order.append, "second")
    env.run()
    assert order == ["first", "second", "spawned"]


@pytest.mark.parametrize("delay", [-1e-9, -1.0, math.nan])
def test_a_negative_or_nan_delay_is_an_error(delay: float) -> None:
    env = Environment()
    with pytest.raises(InputError, match=r"delay_s must be >= 0.*Time never runs back"):
        env.schedule(delay, print)
    assert len(env) == 0


@pytest.mark.parametrize("time_s", [0.5, math.nan])
def test_schedule_at_a_past_or_nan_time_is_an_error(time_s: float) -> None:
    env = Environment(start_s=1.0)
    with pytest.raises(InputError, match=r"schedule_at: time_s must be >= now \(1.0\)"):
        env.schedule_at(time_s, print)


def test_schedule_at_fires_at_exactly_the_time_given() -> None:
    # 0.7 + (3.1 - 0.7) == 3.1000000000000005 in binary floating point: going through a
    # delay would miss the time, and any tie with another event at 3.1.
    env = Environment(start_s=0.7)
    fired: list[float] = []
    env.schedule_at(3.1, lambda: fired.append(env.now))
    env.run()
    assert fired == [3.1]


def test_run_until_stops_before_later_events_and_leaves_the_clock_at_until() -> None:
    env = Environment()
    seen: list[float] = []
    for t in (1.0, 2.0, 3.0):
        env.schedule(t, lambda: seen.append(env.now))
    env.run(until=2.0)  # inclusive
    assert seen == [1.0, 2.0]
    assert env.now == 2.0
    env.run(until=2.5)
    assert env.now == 2.5
    assert len(env) == 1
    env.run()
    assert seen == [1.0, 2.0, 3.0]
    assert env.now == 3.0


def test_run_until_on_an_empty_queue_still_advances_the_clock() -> None:
    env = Environment()
    env.run(until=10.0)
    assert env.now == 10.0


@pytest.mark.parametrize("until", [0.5, math.nan])
def test_run_until_before_now_is_an_error(until: float) -> None:
    env = Environment(start_s=1.0)
    with pytest.raises(InputError, match=r"until must be >= now \(1.0\)"):
        env.run(until=until)
    assert env.now == 1.0


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0.0, 10.0, allow_nan=False),
            st.integers(-2, 2),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_events_run_in_time_priority_scheduling_order(events: list[tuple[float, int]]) -> None:
    """Whatever is scheduled, the clock never runs back and ties are broken deterministically."""
    env = Environment()
    ran: list[int] = []
    clock: list[float] = []
    for k, (delay, priority) in enumerate(events):
        env.schedule(delay, lambda k=k: (ran.append(k), clock.append(env.now)), priority=priority)
    env.run()
    expected = sorted(range(len(events)), key=lambda k: (events[k][0], events[k][1], k))
    assert ran == expected
    assert clock == sorted(clock)
