"""What a study will cost, worked out from the scenario alone (nothing simulated): capacity
searches count each distinct pool once per model (two runs of a fixed plan, four plans of a
searched one, ten runs a plan); fleets at demand simulate the peak rate over the window, all of
it in exact mode and at least k of the most replicas in sampled mode; memory and time follow the
stated rates; the one-line description rounds requests, memory and time; a study past the memory
limit is refused with the flag that lets it through."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from megawatt.errors import InputError
from megawatt.scenario import load_scenario
from megawatt.study import (
    BYTES_PER_REQUEST_KEPT,
    BYTES_PER_REQUEST_RUNNING,
    FLEET_REQUESTS_PER_S,
    SEARCH_REQUESTS_PER_S,
    STREAM_BYTES,
    Cost,
    check_memory,
    estimate_cost,
)
from megawatt.units import GB, SECONDS_PER_DAY

SMALL = Path(__file__).parent / "golden" / "small.yaml"
NO_DEMAND = "fleet.simulate_demand=false"


def cost(*overrides: str, workers: int = 1) -> Cost:
    return estimate_cost(load_scenario(SMALL, list(overrides)), workers=workers)


# -- capacity searches ---------------------------------------------------------------------------
def test_fixed_plans_are_two_runs_of_ten_each_pool_counted_once() -> None:
    """small.yaml: an H200 pool at TP1 and a CS-3 pool at PP1, the third option the same two
    pools at half the power (not new pools): 2 pools x 2 x 10 x 2,000 requests."""
    c = cost(NO_DEMAND)
    assert c.capacity_requests == 2 * 2 * 10 * 2000
    assert c.demand_requests == 0.0 and not c.at_least
    assert c.requests == c.capacity_requests


def test_a_searched_plan_is_four_plans_of_ten_runs() -> None:
    c = cost(NO_DEMAND, "options.0.pools.0.tp=null", "options.2.pools.0.tp=null")
    # The H200 pool without tp is searched (its half-power twin is the same pool): 4 x 10 runs.
    assert c.capacity_requests == (4 + 2) * 10 * 2000


def test_every_model_searches_its_own_pools() -> None:
    one = cost(NO_DEMAND)
    two = cost(NO_DEMAND, "models=[llama-3.1-8b, llama-3.1-70b]", "options.1.pools.0.pp=4",
               "options.2.pools.1.pp=4")
    assert two.capacity_requests == 2 * one.capacity_requests


def test_capacity_memory_is_each_process_running_plus_every_pools_run_kept() -> None:
    for workers in (1, 2):
        c = cost(NO_DEMAND, workers=workers)
        running = workers * 2000 * BYTES_PER_REQUEST_RUNNING
        kept = 2 * 2000 * BYTES_PER_REQUEST_KEPT
        assert c.memory_bytes == pytest.approx(running + kept)


def test_capacity_time_is_the_requests_over_the_search_rate_of_the_processes() -> None:
    one, two = cost(NO_DEMAND, workers=1), cost(NO_DEMAND, workers=2)
    assert one.wall_s == pytest.approx(one.capacity_requests / SEARCH_REQUESTS_PER_S)
    assert two.wall_s == pytest.approx(one.wall_s / 2)
    # More workers than pools do not help: two distinct pools, at most two processes.
    assert cost(NO_DEMAND, workers=8).wall_s == pytest.approx(two.wall_s)


# -- fleets at demand ----------------------------------------------------------------------------
def test_exact_mode_simulates_the_peak_rate_over_the_window_for_every_option() -> None:
    c = cost("fleet.mode=exact", "fleet.duration_s=60")
    peak = 1e9 / SECONDS_PER_DAY * 1.5
    assert c.demand_requests == pytest.approx(peak * 60 * 3)
    assert not c.at_least
    kept = 2 * 2000 * BYTES_PER_REQUEST_KEPT
    assert c.memory_bytes == pytest.approx(max(2000 * BYTES_PER_REQUEST_RUNNING + kept, kept + STREAM_BYTES))
    assert c.wall_s == pytest.approx(c.capacity_requests / SEARCH_REQUESTS_PER_S
                                     + c.demand_requests / FLEET_REQUESTS_PER_S["exact"])


def test_sampled_mode_is_at_least_k_of_the_most_replicas_of_each_options_least_sampled_pool() -> None:
    """At 2 MW and PUE 1.25 a pool has 1.6 MW of IT: the H200 option at most 156 systems of 8
    GPUs (1,248 replicas), CS-3 at most 69 wafers; the mixed option's pools at half the power,
    624 and 34 replicas. Sampled mode runs k = 4 of them, so at least 4/1,248 of the H200
    option's traffic, 4/69 of the CS-3 option's, 4/624 of the mix's."""
    c = cost("fleet.mode=sampled", "fleet.k=4", "fleet.duration_s=60")
    peak = 1e9 / SECONDS_PER_DAY * 1.5 * 60
    assert c.at_least
    assert c.demand_requests == pytest.approx(peak * (4 / 1248 + 4 / 69 + 4 / 624))
    kept = 2 * 2000 * BYTES_PER_REQUEST_KEPT
    assert c.memory_bytes == pytest.approx(
        max(2000 * BYTES_PER_REQUEST_RUNNING + kept, kept + c.demand_requests * BYTES_PER_REQUEST_RUNNING)
    )


def test_more_sampled_replicas_or_a_longer_window_simulate_more() -> None:
    base = cost("fleet.mode=sampled", "fleet.k=4", "fleet.duration_s=60")
    more_k = cost("fleet.mode=sampled", "fleet.k=8", "fleet.duration_s=60")
    longer = cost("fleet.mode=sampled", "fleet.k=4", "fleet.duration_s=120")
    assert more_k.demand_requests > base.demand_requests
    assert longer.demand_requests == pytest.approx(2 * base.demand_requests)


def test_a_pool_the_budget_cannot_size_samples_nothing() -> None:
    c = cost("fleet.mode=sampled", "budget.facility_mw=0.01")
    assert c.demand_requests == 0.0


# -- in words, and the limit ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("figures", "words"),
    [
        ((2_000.0, 0.0, 5e8, 30.0, False), "about 2k requests (capacity searches 2k, fleets at demand 0), "
                                           "0.5 GB of memory, 30 s"),
        ((3.2e6, 4.5e9, 2.5e11, 5400.0, True), "at least 4.5 B requests (capacity searches 3.2 M, fleets at "
                                               "demand 4.5 B), 250 GB of memory, 1.5 h"),
        ((999.0, 0.0, 1.2e9, 90.0, False), "about 999 requests (capacity searches 999, fleets at demand 0), "
                                           "1.2 GB of memory, 1.5 min"),
    ],
)
def test_the_description_rounds_requests_memory_and_time(figures: tuple, words: str) -> None:
    assert Cost(*figures).describe() == words


def test_a_study_within_the_limit_or_without_one_passes() -> None:
    c = Cost(1e6, 0.0, 3 * GB, 60.0)
    check_memory(c, 4 * GB, "x")
    check_memory(c, None, "x")
    check_memory(Cost(1e6, 0.0, 4 * GB, 60.0), 4 * GB, "x")  # at the limit exactly


def test_a_study_past_the_limit_names_the_estimate_and_the_flag_that_lets_it_through() -> None:
    c = Cost(1e6, 2e9, 10.2 * GB, 7200.0, True)
    with pytest.raises(InputError) as caught:
        check_memory(c, 4 * GB, "small example")
    message = str(caught.value)
    assert message.startswith(f"small example would simulate {c.describe()}; the memory limit is 4 GB.")
    assert message.endswith(f"or raise the limit (--max-memory-gb {math.ceil(10.2)}).")
    assert "fleet.mode=exact (streamed)" in message and "\n" not in message
