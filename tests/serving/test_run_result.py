"""A run's summaries from hand-made per-request arrays (no simulation): durations, throughput,
goodput, the backlog rule of `keeps_up`, which SLO limits a run breaks, and the summary's
figures, each worked out in the test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from megawatt.serving import ReplicaStats, RunResult, Slo
from megawatt.serving.metrics import e2e_of, tpot_of, ttft_of

NAN = math.nan


def result(
    arrival: list[float],
    first: list[float],
    finish: list[float],
    output: list[int],
    *,
    rejected: list[bool] | None = None,
    classes: list[int] | None = None,
    names: tuple[str, ...] = ("default",),
    stats: ReplicaStats | None = None,
    end_s: float = 100.0,
    backlog: int = 0,
    itl: tuple[list[float], list[int]] = ([], []),
) -> RunResult:
    n = len(arrival)
    return RunResult(
        arrival_s=np.array(arrival, dtype=np.float64),
        first_token_s=np.array(first, dtype=np.float64),
        finish_s=np.array(finish, dtype=np.float64),
        prompt_tokens=np.full(n, 100, dtype=np.int64),
        output_tokens=np.array(output, dtype=np.int64),
        cached_tokens=np.zeros(n, dtype=np.int64),
        preemptions=np.zeros(n, dtype=np.int64),
        rejected=np.array(rejected if rejected is not None else [False] * n, dtype=bool),
        class_id=np.array(classes if classes is not None else [0] * n, dtype=np.int64),
        class_names=names,
        stats=stats or ReplicaStats(),
        end_s=end_s,
        itl_s=np.array(itl[0], dtype=np.float64),
        itl_n=np.array(itl[1], dtype=np.float64),
        backlog=backlog,
    )


def steady(n: int, ttft: float | list[float], arrival_gap: float = 1.0) -> RunResult:
    """`n` requests a second apart, each with its own TTFT, finishing 1 s after the first token
    with 11 tokens (TPOT 0.1 s)."""
    arrival = [i * arrival_gap for i in range(n)]
    t = ttft if isinstance(ttft, list) else [ttft] * n
    first = [a + x for a, x in zip(arrival, t, strict=True)]
    return result(arrival, first, [f + 1.0 for f in first], [11] * n)


# -- per-request latencies ----------------------------------------------------------------------


def test_latencies_of_three_requests_by_hand() -> None:
    arrival = np.array([0.0, 1.0, 2.0])
    first = np.array([0.5, 1.25, NAN])
    finish = np.array([2.5, 1.25, NAN])
    out = np.array([5, 1, 7])
    np.testing.assert_array_equal(ttft_of(arrival, first), [0.5, 0.25, math.inf])
    # (2.5 - 0.5) / (5 - 1); one token: 0; never finished: inf.
    np.testing.assert_array_equal(tpot_of(first, finish, out), [0.5, 0.0, math.inf])
    np.testing.assert_array_equal(e2e_of(arrival, finish), [2.5, 0.25, math.inf])


def test_a_request_with_a_first_token_but_no_finish_has_infinite_tpot() -> None:
    assert tpot_of(np.array([1.0]), np.array([NAN]), np.array([3]))[0] == math.inf


# -- completion and duration --------------------------------------------------------------------


def test_completed_excludes_rejected_and_unfinished() -> None:
    r = result([0, 0, 0], [1, NAN, 2], [3, NAN, 2.5], [3, 3, 1], rejected=[False, False, True])
    np.testing.assert_array_equal(r.completed, [True, False, False])
    assert r.n == 3


def test_a_settled_run_lasts_from_its_first_arrival_to_its_last_finish() -> None:
    r = result([2.0, 3.0], [2.5, 4.0], [5.0, 9.0], [10, 10], end_s=50.0)
    assert r.duration_s == 7.0
    # 20 tokens over 7 s.
    assert r.output_tokens_per_s == 20 / 7


def test_an_unsettled_run_lasts_until_the_end_of_the_run() -> None:
    """A request still running at the end: the run lasted to `end_s`, and its tokens do not
    count."""
    r = result([2.0, 3.0], [2.5, 4.0], [5.0, NAN], [10, 10], end_s=12.0)
    assert r.duration_s == 10.0
    assert r.output_tokens_per_s == 1.0


def test_a_rejected_request_is_settled_and_counts_no_tokens() -> None:
    """Rejected requests carry the time they were turned away as their finish."""
    r = result([0.0, 1.0], [1.0, NAN], [4.0, 1.0], [8, 8], rejected=[False, True], end_s=99.0)
    assert r.duration_s == 4.0
    assert r.output_tokens_per_s == 2.0


def test_an_empty_run_lasts_no_time_and_makes_no_tokens() -> None:
    r = result([], [], [], [])
    assert (r.n, r.duration_s, r.output_tokens_per_s) == (0, 0.0, 0.0)
    assert r.goodput(Slo()) == 0.0
    assert r.table().num_rows == 0


# -- percentiles --------------------------------------------------------------------------------


def test_percentiles_skip_rejected_requests_and_take_a_mask() -> None:
    """TTFTs 1, 2, 3, 4 s with the 4 s one rejected: p100 is 3 s; masked to the first two, 2 s."""
    r = result(
        [0, 0, 0, 0], [1, 2, 3, 4], [2, 3, 4, 5], [2, 2, 2, 2],
        rejected=[False, False, False, True],
    )
    assert r.percentile("ttft_s", 100) == 3.0
    assert r.percentile("ttft_s", 50) == 2.0
    assert r.percentile("ttft_s", 100, mask=np.array([True, True, False, False])) == 2.0
    assert math.isnan(r.percentile("ttft_s", 50, mask=np.zeros(4, dtype=bool)))


def test_the_inter_token_percentile_weighs_steps_by_their_tokens() -> None:
    """Three tokens 10 ms apart and one 1 s: p50 is 10 ms, p90 and p99 1 s."""
    r = result([0], [1], [2], [5], itl=([0.01, 1.0], [3, 1]))
    assert r.itl_percentile(50) == 0.01
    assert r.itl_percentile(75) == 0.01
    assert r.itl_percentile(76) == 1.0
    assert math.isnan(result([0], [1], [2], [5]).itl_percentile(50))


# -- goodput and SLOs ---------------------------------------------------------------------------


def test_goodput_counts_requests_meeting_their_own_limits_over_the_duration() -> None:
    """Four requests over 10 s: TTFT 0.5, 0.5, 3 and 0.5 s, TPOT 0.1, 0.4, 0.1 s and one
    unfinished. With limits 1 s and 0.2 s only the first passes: 0.1 per second."""
    r = result(
        [0.0, 1.0, 2.0, 3.0],
        [0.5, 1.5, 5.0, 3.5],
        [1.5, 5.5, 6.0, NAN],
        [11, 11, 11, 11],
        end_s=10.0,
    )
    assert r.duration_s == 10.0
    assert r.goodput(Slo(ttft_p99_s=1.0, tpot_p99_s=0.2)) == pytest.approx(0.1)
    # Without limits every completed request counts: three.
    assert r.goodput(Slo()) == pytest.approx(0.3)


def test_a_clean_run_meets_a_loose_slo_and_breaks_a_tight_one() -> None:
    r = steady(10, 0.5)
    assert r.violations(Slo(ttft_p99_s=1.0, tpot_p99_s=0.2)) == ()
    assert r.meets(Slo(ttft_p99_s=1.0, tpot_p99_s=0.2))
    assert r.violations(Slo(ttft_p99_s=0.4, tpot_p99_s=0.05)) == ("TTFT", "TPOT")
    assert r.violations(Slo(tpot_p99_s=0.05)) == ("TPOT",)


def test_a_rejection_breaks_any_slo() -> None:
    r = result([0.0, 1.0], [0.5, NAN], [1.0, 1.0], [2, 2], rejected=[False, True])
    assert r.violations(Slo()) == ("rejected",)
    assert not r.meets(Slo())


# -- keeping up ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "backlog", "keeps"), [
    (10, 5, True),  # at most 5 waiting is fine for a small run
    (10, 6, False),
    (1_000, 20, True),  # 2% of 1,000
    (1_000, 21, False),
])
def test_the_backlog_left_at_the_last_arrival_may_be_five_or_two_percent(
    n: int, backlog: int, keeps: bool
) -> None:
    r = steady(n, 0.5)
    r = RunResult(**{**r.__dict__, "backlog": backlog})
    assert r.keeps_up() is keeps
    assert ("backlog" in r.violations(Slo())) is not keeps


def test_a_short_run_is_not_judged_on_its_ttft_trend() -> None:
    """Under 40 requests a rising TTFT alone does not mean falling behind."""
    assert steady(39, [float(i) for i in range(39)]).keeps_up()


def test_a_rising_ttft_means_the_replica_falls_behind() -> None:
    """40 requests, TTFT 1 s in the middle half and 3 s in the last quarter: 3 > 2 x 1 + 0.1."""
    ttft = [1.0] * 30 + [3.0] * 10
    assert not steady(40, ttft).keeps_up()
    assert "backlog" in steady(40, ttft).violations(Slo())


def test_a_late_ttft_within_twice_the_middle_plus_a_tenth_keeps_up() -> None:
    """Middle half 1 s: a last quarter at 2 s keeps up, at 2.25 s (> 2 x 1 + 0.1) it does not.
    With instant first tokens in the middle, the 0.1 s margin lets 62.5 ms pass, not 125 ms."""
    assert steady(40, [1.0] * 30 + [2.0] * 10).keeps_up()
    assert not steady(40, [1.0] * 30 + [2.25] * 10).keeps_up()
    assert steady(40, [0.0] * 30 + [0.0625] * 10).keeps_up()
    assert not steady(40, [0.0] * 30 + [0.125] * 10).keeps_up()


def test_the_trend_follows_arrival_order_not_row_order() -> None:
    """The same requests listed late-first: sorting by arrival finds the same rising trend."""
    base = steady(40, [1.0] * 30 + [3.0] * 10)
    order = np.arange(40)[::-1]
    shuffled = RunResult(**{
        **base.__dict__,
        **{k: getattr(base, k)[order] for k in ("arrival_s", "first_token_s", "finish_s",
                                                "output_tokens", "rejected", "class_id")},
    })
    assert not shuffled.keeps_up()


# -- the summary --------------------------------------------------------------------------------


def test_the_summary_figures_follow_from_the_arrays_and_stats() -> None:
    """Two completed requests over 4 s; the replica was busy 2 s with 6 sequence-seconds and
    3e9 KV byte-seconds: 75% busy, mean batch 3, mean KV 1.5 GB while busy."""
    stats = ReplicaStats(busy_s=2.0, seq_seconds=6.0, kv_byte_seconds=3e9)
    r = result([0.0, 1.0], [1.0, 2.0], [3.0, 4.0], [5, 3], stats=stats)
    r.preemptions[:] = [2, 1]
    s = r.summary()
    assert s["requests"] == 2 and s["completed"] == 2 and s["rejected"] == 0
    assert s["duration_s"] == 4.0
    assert s["output_tokens_per_s"] == 2.0
    assert s["requests_per_s"] == 0.5
    assert s["busy_fraction"] == 0.5
    assert s["mean_batch"] == 3.0
    assert s["mean_kv_bytes"] == 1.5e9
    assert s["preemptions"] == 3
    assert s["ttft_p50_s"] == 1.0 and s["ttft_p99_s"] == 1.0
    assert s["tpot_p99_s"] == 1.0  # (4 - 2) / (3 - 1)
    assert s["e2e_p50_s"] == 3.0
    assert math.isnan(s["itl_p50_s"])


def test_an_idle_replica_reports_zero_means_not_a_division_by_zero() -> None:
    s = result([], [], [], []).summary()
    assert (s["busy_fraction"], s["mean_batch"], s["mean_kv_bytes"]) == (0.0, 0.0, 0.0)
    assert s["requests_per_s"] == 0.0
    assert math.isnan(s["ttft_p50_s"])


def test_the_table_names_each_requests_class() -> None:
    r = result(
        [0.0, 1.0, 2.0], [0.5, 1.5, 2.5], [1.0, 2.0, 3.0], [2, 2, 2],
        classes=[1, 0, 1], names=("chat", "code"),
    )
    t = r.table().to_pydict()
    assert t["class"] == ["code", "chat", "code"]
    assert t["ttft_s"] == [0.5, 0.5, 0.5]
    assert t["tpot_s"] == [0.5, 0.5, 0.5]
