"""Sessions in money, from hand-made capacities: a tier's revenue for a task's tokens, the
dearest tier whose speed floor a replica meets, tasks per day per MW, cost and revenue per task
at the option's mean load, the users' wait, the cost curve over the user counts tried, the pool
each latency class goes to, and an option's session outcomes on hand-made pools."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from megawatt.errors import InputError
from megawatt.fleet import Economics
from megawatt.fleet.pool import option_result
from megawatt.fleet.sessions import (
    PriceTier,
    SessionCapacity,
    pick_tier,
    serving_pool,
    session_outcome,
)
from megawatt.units import SECONDS_PER_DAY, SECONDS_PER_YEAR

from .fakes import pool_result, run_result

STANDARD = PriceTier("standard", 0.0, 1.0, 0.1, 4.0)
FAST = PriceTier("fast", 100.0, 3.0, 0.3, 12.0)
TIERS = (STANDARD, FAST)


def capacity(**changes: object) -> SessionCapacity:
    """A replica serving 8 users, 0.01 tasks/s, each task 20 turns of 150k prompt tokens (120k
    cached) and 6k output tokens, at 80 tokens/s per user."""
    base = SessionCapacity(
        class_name="agent", latency="standard", users=8, rate_per_s=0.01, task_p50_s=600.0,
        task_p99_s=1500.0, turns_per_task=20.0, prompt_tokens_per_task=150_000.0,
        cached_tokens_per_task=120_000.0, output_tokens_per_task=6_000.0, per_user_tokens_per_s=80.0,
        alone_task_p50_s=300.0,
        frontier=((1, 0.002, 300.0, 400.0, 0.2, 0.01), (4, 0.006, 420.0, 900.0, 0.4, 0.012),
                  (8, 0.01, 600.0, 1500.0, 0.9, 0.02), (16, 0.012, 1300.0, 4000.0, 3.0, 0.05)),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


# -- tiers ---------------------------------------------------------------------------------------
def test_a_tier_bills_new_input_cached_input_and_output_at_their_prices() -> None:
    # 30k new input at $1/M, 120k cached at $0.10/M, 6k output at $4/M.
    assert STANDARD.revenue(150_000, 120_000, 6_000) == pytest.approx(0.03 + 0.012 + 0.024)


@pytest.mark.parametrize(
    ("speed", "tier"), [(0.0, "standard"), (99.9, "standard"), (100.0, "fast"), (500.0, "fast")]
)
def test_the_dearest_tier_whose_floor_the_speed_meets(speed: float, tier: str) -> None:
    got = pick_tier(TIERS, speed)
    assert got is not None and got.name == tier


def test_no_tier_without_a_floor_met_or_a_speed() -> None:
    assert pick_tier((FAST,), 50.0) is None
    assert pick_tier(TIERS, math.nan) is None
    assert pick_tier((), 1000.0) is None


def test_turns_per_hour_are_the_tasks_turns_over_its_time() -> None:
    assert capacity().turns_per_hour == pytest.approx(20 / 600 * 3600)
    assert math.isnan(capacity(task_p50_s=0.0).turns_per_hour)


# -- one class on one pool -----------------------------------------------------------------------
def outcome(cap: SessionCapacity | None = None, **options: object):  # type: ignore[no-untyped-def]
    settings: dict[str, object] = {
        "replica_facility_w": 12_000.0, "replica_usd_per_year": 90_000.0, "load_fraction": 0.5,
        "tiers": TIERS, "usd_per_wait_hour": 60.0,
    }
    settings.update(options)
    return session_outcome(cap or capacity(), "gpu", **settings)  # type: ignore[arg-type]


def test_tasks_per_day_per_mw_are_the_mean_load_over_the_replicas_facility_power() -> None:
    """0.01 tasks/s at half load on a 12 kW replica: 0.005 x 86,400 / 0.012 MW."""
    assert outcome().tasks_per_day_per_mw == pytest.approx(0.005 * SECONDS_PER_DAY / 0.012)


def test_a_task_costs_the_replicas_year_over_its_tasks_in_a_year() -> None:
    assert outcome().usd_per_task == pytest.approx(90_000.0 / (0.005 * SECONDS_PER_YEAR))


def test_revenue_is_the_tier_of_the_per_user_speed() -> None:
    slow = outcome()
    assert slow.tier == "standard" and slow.revenue_per_task == pytest.approx(0.066)
    quick = outcome(capacity(per_user_tokens_per_s=150.0))
    assert quick.tier == "fast" and quick.revenue_per_task == pytest.approx(3 * 0.066)


def test_the_wait_is_the_median_task_time_at_the_hourly_value() -> None:
    assert outcome().wait_usd_per_task == pytest.approx(600 / 3600 * 60)
    assert math.isnan(outcome(capacity(task_p50_s=math.inf)).wait_usd_per_task)


def test_yearly_figures_per_mw_multiply_by_the_tasks() -> None:
    o = outcome()
    assert o.revenue_per_mw_year == pytest.approx(o.revenue_per_task * o.tasks_per_day_per_mw * 365)
    assert o.cost_per_mw_year == pytest.approx(o.usd_per_task * o.tasks_per_day_per_mw * 365)
    # Per MW-year the cost is the replica's year over its MW, whatever the load.
    assert o.cost_per_mw_year == pytest.approx(90_000.0 / 0.012 * 365 * SECONDS_PER_DAY / SECONDS_PER_YEAR)


def test_a_replica_that_serves_no_task_costs_infinity_and_earns_nothing() -> None:
    o = outcome(capacity(rate_per_s=0.0, users=0))
    assert o.tasks_per_day_per_mw == 0.0 and o.usd_per_task == math.inf and o.revenue_per_task == 0.0
    assert o.curve() == []
    assert outcome(replica_facility_w=0.0).tasks_per_day_per_mw == 0.0


def test_no_tier_earns_nothing_and_says_none() -> None:
    o = outcome(tiers=(FAST,))
    assert o.tier == "none" and o.revenue_per_task == 0.0


def test_fewer_users_buy_shorter_tasks_at_a_higher_cost_per_task() -> None:
    """The curve: each user count tried up to the capacity (8), its task times and the cost per
    task scaled by the capacity's rate over that count's rate."""
    o = outcome()
    curve = o.curve()
    assert [p50 for p50, _, _ in curve] == [300.0, 420.0, 600.0]  # 16 users are past capacity
    expected = [o.usd_per_task * 0.01 / r for r in (0.002, 0.006, 0.01)]
    assert [usd for _, _, usd in curve] == pytest.approx(expected)
    costs = [usd for _, _, usd in curve]
    assert costs == sorted(costs, reverse=True)


# -- which pool ----------------------------------------------------------------------------------
def test_each_latency_class_goes_to_its_pool() -> None:
    speeds, usd, sizes = [90.0, 400.0, 150.0], [2e-6, 5e-6, 1e-6], [3e6, 1e6, 2e6]
    assert serving_pool("fast", speeds, usd, sizes) == 1  # fastest single stream
    assert serving_pool("batch", speeds, usd, sizes) == 2  # cheapest per token
    assert serving_pool("standard", speeds, usd, sizes) == 0  # largest


def test_a_pool_without_a_known_speed_is_passed_over_for_fast_sessions() -> None:
    assert serving_pool("fast", [math.nan, 50.0], [1.0, 1.0], [1.0, 1.0]) == 1
    assert serving_pool("fast", [math.nan, math.nan], [1.0, 1.0], [1.0, 1.0]) == 0


def test_sessions_need_a_pool() -> None:
    with pytest.raises(InputError, match="an option needs at least one pool to serve sessions"):
        serving_pool("fast", [], [], [])


# -- an option's sessions ------------------------------------------------------------------------
RUN = run_result([0.0, 1.0], [0.5, 1.2], [2.0, 3.2], [10, 20])


def test_an_options_sessions_go_to_the_latency_classes_pool_with_its_replica_share() -> None:
    fast_cap, batch_cap = capacity(latency="fast"), capacity(class_name="batch-agent", latency="batch")
    quick = pool_result("quick", "cs-3", n_systems=4, result=RUN, single_stream_tokens_per_s=900.0,
                        sessions=(fast_cap, batch_cap))
    cheap = pool_result("cheap", "hgx-h200", n_systems=10, rate_per_replica=50.0, result=RUN,
                        single_stream_tokens_per_s=150.0, sessions=(fast_cap, batch_cap))
    option = option_result("o", "m", [quick, cheap], Economics(), 1.25, 0.5)
    fast, batch = option.session_outcomes(TIERS, 60.0)
    assert (fast.pool, batch.pool) == ("quick", "cheap")
    yearly = cheap.annual_cost(Economics(), 1.25, 0.5).total
    per_replica_w = cheap.size.used_w * 1.25 / cheap.size.n_replicas
    expected = session_outcome(batch_cap, "cheap", replica_facility_w=per_replica_w,
                               replica_usd_per_year=yearly / cheap.size.n_replicas, load_fraction=0.5,
                               tiers=TIERS, usd_per_wait_hour=60.0)
    assert batch == expected


def test_an_option_without_session_capacities_has_no_outcomes() -> None:
    option = option_result("o", "m", [pool_result("p", result=RUN)], Economics(), 1.25, 0.5)
    assert option.session_outcomes(TIERS, 60.0) == ()
