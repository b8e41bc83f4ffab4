"""A simulated pool's outcome from hand-made replica runs: a sampled run scales its replicas up to
the pool, counts only the rows each replica served and only requests not rejected in its
percentiles; its bootstrap interval collapses on identical replicas and widens with the level;
the exact-mode tally of the same run keeps its counts and its percentiles within the histograms'
stated error; percentiles across pools weight each request by the replicas it stands for.
The arrivals each replica gets in exact mode partition the pool's and stay in the window."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from megawatt.fleet.histogram import RELATIVE_ERROR
from megawatt.fleet.pools import (
    PoolRun,
    PoolTally,
    pooled_percentile,
    replica_batches,
    requests_until,
)
from megawatt.fleet.routing import RandomReplica, RoundRobin
from megawatt.serving import RunResult
from megawatt.workload import Fixed, Mix, Poisson, RequestClass

from .fakes import run_result

NAN = math.nan


def pool_run(n_replicas: int, *runs: RunResult, served: list[list[bool]] | None = None,
             duration_s: float = 10.0) -> PoolRun:
    masks = tuple(np.ones(r.n, dtype=bool) if served is None else np.array(served[i])
                  for i, r in enumerate(runs))
    return PoolRun("p", n_replicas, tuple(runs), masks, duration_s)


# Replica A: three requests, the last rejected; replica B: two, the last cut off unfinished.
A = run_result([0.0, 1.0, 2.0], [0.2, 1.4, NAN], [1.0, 2.0, NAN], [5, 9, 7],
               rejected=[False, False, True], busy_s=6.0)
B = run_result([0.0, 3.0], [0.3, 3.5], [2.0, NAN], [11, 4], busy_s=25.0)


# -- sampled runs ------------------------------------------------------------------------------
def test_two_of_ten_replicas_stand_for_five_each() -> None:
    run = pool_run(10, A, B)
    assert (run.n_simulated, run.scale) == (2, 5.0)
    assert run.n_requests == 5


def test_tokens_per_second_are_the_completed_outputs_scaled_to_the_pool() -> None:
    """Completed: A's 5 and 9 tokens, B's 11 (its second request never finished)."""
    run = pool_run(10, A, B)
    assert run.output_tokens_per_s == pytest.approx((5 + 9 + 11) / 10.0 * 5.0)


def test_busy_fraction_is_the_mean_over_replicas_each_at_most_one() -> None:
    assert pool_run(10, A, B).busy_fraction == pytest.approx((0.6 + 1.0) / 2)  # B: 25 s of 10


def test_percentiles_leave_out_rejected_requests_and_keep_unfinished_ones_as_infinite() -> None:
    """TTFTs: A 0.2, 0.4 (the rejected one left out); B 0.3, 0.5. E2E: A 1.0, 1.0; B 2.0, inf."""
    run = pool_run(10, A, B)
    assert run.percentile("ttft_s", 50) == pytest.approx(0.3)
    assert run.percentile("ttft_s", 100) == pytest.approx(0.5)
    assert run.percentile("e2e_s", 75) == pytest.approx(2.0)
    assert run.percentile("e2e_s", 100) == math.inf


def test_only_the_rows_a_replica_served_count() -> None:
    """Joint routing gives each replica the whole table and a mask of the rows it served."""
    both = pool_run(2, A, A, served=[[True, False, False], [False, True, True]])
    assert both.n_requests == 3
    assert both.percentile("ttft_s", 0) == pytest.approx(0.2)
    assert both.percentile("ttft_s", 100) == pytest.approx(0.4)
    assert both.output_tokens_per_s == pytest.approx((5 + 9) / 10.0)  # scale 1


def test_weighted_values_carry_the_scale_and_filter_by_class() -> None:
    two = run_result([0.0, 0.0], [0.1, 0.7], [1.0, 1.0], [3, 3], class_id=[0, 1],
                     class_names=("chat", "docs"))
    run = pool_run(8, two, A)  # A has only chat
    v, w = run.weighted("ttft_s", "docs")
    assert v.tolist() == pytest.approx([0.7]) and w.tolist() == [4.0]
    v, w = run.weighted("ttft_s", "chat")
    assert sorted(v.tolist()) == pytest.approx([0.1, 0.2, 0.4]) and set(w.tolist()) == {4.0}
    v, _ = run.weighted("ttft_s", "reasoning")
    assert v.size == 0


def test_a_run_without_requests_has_nan_percentiles() -> None:
    empty = run_result([], [], [], [])
    run = pool_run(3, empty)
    assert run.n_requests == 0 and math.isnan(run.percentile("ttft_s", 50))
    assert run.output_tokens_per_s == 0.0


def test_the_interval_of_identical_replicas_is_a_point() -> None:
    run = pool_run(6, A, A, A)
    lo, hi = run.interval("throughput")
    assert lo == hi == pytest.approx(run.output_tokens_per_s)
    lo, hi = run.interval("ttft_s", 50)
    assert lo == hi == pytest.approx(run.percentile("ttft_s", 50))


def test_the_interval_lies_between_the_replicas_and_widens_with_the_level() -> None:
    """Each bootstrap draw's throughput is a mean of per-replica throughputs, so it lies between
    the smallest and the largest; a 99% interval contains the 50% one."""
    runs = [run_result([0.0], [0.1], [1.0], [n]) for n in (10, 40, 20, 80)]
    run = pool_run(4, *runs)
    per_replica = [n / 10.0 * 4 for n in (10, 40, 20, 80)]
    lo, hi = run.interval("throughput", level=0.99, n_boot=400)
    assert min(per_replica) <= lo < run.output_tokens_per_s < hi <= max(per_replica)
    lo50, hi50 = run.interval("throughput", level=0.5, n_boot=400)
    assert lo <= lo50 <= hi50 <= hi
    assert run.interval("throughput", seed=3) == run.interval("throughput", seed=3)


# -- exact-mode tallies --------------------------------------------------------------------------
def test_a_tally_keeps_the_runs_counts_and_tokens() -> None:
    run = pool_run(2, A, B)
    tally = PoolTally.of(run)
    assert (tally.n_simulated, tally.scale) == (2, 1.0)
    assert tally.n_requests == 5
    assert tally.n_completed == 3  # A's two finished, B's first
    assert tally.n_rejected == 1
    assert tally.output_tokens == 25.0
    assert tally.output_tokens_per_s == pytest.approx(2.5)
    assert tally.busy_fraction == run.busy_fraction
    assert tally.histograms.n("ttft_s") == 4  # every request not rejected, the unfinished too


@pytest.mark.parametrize("q", [0, 25, 50, 75, 99, 100])
def test_a_tallys_percentiles_are_the_runs_within_the_stated_error(q: float) -> None:
    rng = np.random.default_rng(4)
    runs = []
    for _ in range(3):
        arrival = np.sort(rng.uniform(0, 10, 200))
        first = arrival + rng.lognormal(-1.0, 0.8, 200)
        finish = first + rng.lognormal(0.5, 0.5, 200)
        runs.append(run_result(arrival, first, finish, rng.integers(2, 300, 200)))
    run = pool_run(3, *runs)
    tally = PoolTally.of(run)
    for metric in ("ttft_s", "tpot_s", "e2e_s"):
        exact = run.percentile(metric, q)
        assert tally.percentile(metric, q) == pytest.approx(exact, rel=RELATIVE_ERROR * (1 + 1e-9))


# -- across pools --------------------------------------------------------------------------------
def test_pooled_percentiles_weight_by_the_replicas_each_request_stands_for() -> None:
    """A sampled pool (scale 3) with TTFTs 1 and 2 s, and an exact tally of one 5 s request:
    weights 3, 3 and 1, cumulative shares 3/7, 6/7, 1."""
    sampled = pool_run(3, run_result([0.0, 0.0], [1.0, 2.0], [3.0, 3.0], [4, 4]))
    tally = PoolTally.of(pool_run(1, run_result([0.0], [5.0], [6.0], [4])))
    runs: list[PoolRun | PoolTally] = [sampled, tally]
    assert pooled_percentile(runs, "ttft_s", 40) == pytest.approx(1.0)
    assert pooled_percentile(runs, "ttft_s", 50) == pytest.approx(2.0)
    assert pooled_percentile(runs, "ttft_s", 90) == pytest.approx(5.0, rel=RELATIVE_ERROR)
    assert math.isnan(pooled_percentile(runs, "ttft_s", 50, "docs"))
    assert math.isnan(pooled_percentile([], "ttft_s", 50))


# -- arrivals ----------------------------------------------------------------------------------
CHAT = Mix((RequestClass("chat", 1.0, Fixed(100), Fixed(10)),))


@pytest.mark.parametrize("rate", [0.5, 20.0, 3000.0])
def test_requests_until_cover_the_window_and_no_more(rate: float) -> None:
    reqs = requests_until(CHAT, Poisson(rate), 30.0, (1,))
    assert np.all(np.asarray(reqs.arrival_s) < 30.0)
    n = len(reqs)
    expected = rate * 30.0
    assert abs(n - expected) < 6 * math.sqrt(expected) + 2  # Poisson count, 6 sd
    again = requests_until(CHAT, Poisson(rate), 30.0, (1,))
    assert np.array_equal(reqs.arrival_s, again.arrival_s)


@pytest.mark.parametrize("router", [RandomReplica(), RoundRobin()], ids=["random", "round_robin"])
def test_each_replicas_arrivals_are_sorted_inside_the_window_and_add_up_to_the_pool(router: object) -> None:
    n_replicas, rate, duration = 7, 70.0, 50.0
    total = 0
    for arrival, offsets, reqs in replica_batches(CHAT, Poisson(rate), n_replicas, duration, router, (2,)):  # type: ignore[arg-type]
        assert offsets[0] == 0 and offsets[-1] == arrival.size == len(reqs)
        for a, b in itertools.pairwise(offsets):
            times = arrival[a:b]
            assert np.all(np.diff(times) > 0) and np.all((times >= 0) & (times < duration))
        total += int(arrival.size)
    assert abs(total - rate * duration) < 6 * math.sqrt(rate * duration)


def test_round_robin_replicas_counts_vary_less_than_random_ones() -> None:
    """Every N-th arrival: a replica's gaps are sums of N gaps (cv 1/sqrt(N)), so over a window
    its count varies about 1/N as much as an independent Poisson share's (variance 500/40 against
    500 here)."""

    def counts(router: object) -> np.ndarray:
        out: list[int] = []
        for _, offsets, _ in replica_batches(CHAT, Poisson(400.0), 40, 50.0, router, (3,)):  # type: ignore[arg-type]
            out += np.diff(offsets).tolist()
        assert len(out) == 40
        return np.array(out, dtype=np.float64)

    turns, random = counts(RoundRobin()), counts(RandomReplica())
    assert abs(turns.mean() - 500) < 3 and abs(random.mean() - 500) < 25
    assert turns.var() < random.var() / 4
