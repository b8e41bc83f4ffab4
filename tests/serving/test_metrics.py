"""What a run measured: per-request latencies (TTFT, MLPerf TPOT, end to end), percentiles,
goodput under an SLO, the Arrow table and its Parquet file."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megawatt.serving import ReplicaConfig, ReplicaStats, RunResult, Slo, offline, simulate
from megawatt.serving.metrics import PERCENTILES, weighted_percentile
from megawatt.workload import Requests

from .conftest import make_requests, random_requests

NAN = math.nan


def result(
    arrival: list[float],
    first: list[float],
    finish: list[float],
    output: list[int],
    rejected: list[bool] | None = None,
) -> RunResult:
    """A hand-written run: four numbers per request are enough to check the arithmetic."""
    n = len(arrival)
    return RunResult(
        arrival_s=np.array(arrival),
        first_token_s=np.array(first),
        finish_s=np.array(finish),
        prompt_tokens=np.full(n, 10),
        output_tokens=np.array(output),
        cached_tokens=np.zeros(n, dtype=np.int64),
        preemptions=np.zeros(n, dtype=np.int64),
        rejected=np.array(rejected if rejected is not None else [False] * n),
        class_id=np.zeros(n, dtype=np.int32),
        class_names=("chat",),
        stats=ReplicaStats(),
        end_s=max(x for x in finish if not math.isnan(x)),
    )


# -- per request ------------------------------------------------------------------------------
def test_tpot_is_mlperfs_time_per_output_token_after_the_first() -> None:
    res = result(arrival=[0, 0, 0], first=[1, 1, 1], finish=[5, 1, 3], output=[5, 1, 2])
    assert res.ttft_s.tolist() == [1, 1, 1]
    assert res.tpot_s.tolist() == [(5 - 1) / (5 - 1), 0.0, (3 - 1) / (2 - 1)]
    assert res.e2e_s.tolist() == [5, 1, 3]


def test_what_never_happened_is_infinitely_late() -> None:
    res = result(arrival=[0, 1, 2], first=[1, NAN, 3], finish=[2, NAN, NAN], output=[2, 2, 2])
    assert res.completed.tolist() == [True, False, False]
    assert res.ttft_s.tolist() == [1, math.inf, 1]
    assert res.tpot_s.tolist() == [1, math.inf, math.inf]
    assert res.e2e_s.tolist() == [2, math.inf, math.inf]


def test_rejected_requests_are_neither_completed_nor_in_the_percentiles() -> None:
    res = result(arrival=[0, 0], first=[1, NAN], finish=[2, 0], output=[2, 2], rejected=[False, True])
    assert res.completed.tolist() == [True, False]
    assert res.percentile("ttft_s", 99) == 1.0
    assert res.percentile("e2e_s", 50) == 2.0


# -- summaries --------------------------------------------------------------------------------
def test_percentiles_are_inverted_cdf_order_statistics() -> None:
    ttft = [0.1 * k for k in range(1, 101)]  # 0.1 .. 10.0
    res = result(arrival=[0.0] * 100, first=ttft, finish=[t + 1 for t in ttft], output=[2] * 100)
    assert res.percentile("ttft_s", 50) == pytest.approx(5.0)
    assert res.percentile("ttft_s", 99) == pytest.approx(9.9)
    assert res.percentile("ttft_s", 100) == pytest.approx(10.0)
    short = np.arange(100) < 10
    assert res.percentile("ttft_s", 100, mask=short) == pytest.approx(1.0)
    assert math.isnan(res.percentile("ttft_s", 50, mask=np.zeros(100, dtype=bool)))


def test_goodput_counts_completions_that_meet_their_own_limits() -> None:
    res = result(arrival=[0, 0, 0, 0], first=[1, 3, 1, NAN], finish=[2, 4, 10, NAN], output=[2, 2, 2, 2])
    slo = Slo(ttft_p99_s=2.0, tpot_p99_s=5.0)
    # Only the first: the second starts too late, the third is too slow, the fourth unfinished.
    assert res.duration_s == 10.0  # not every request settled: to the end of the run
    assert res.goodput(slo) == pytest.approx(1 / 10.0)
    assert res.goodput(Slo()) == pytest.approx(3 / 10.0)


def test_a_run_meets_an_slo_on_its_p99s(config: ReplicaConfig) -> None:
    res = simulate(config, random_requests(7, 40, rate_per_s=5))
    assert res.keeps_up()
    p99_ttft, p99_tpot = res.percentile("ttft_s", 99), res.percentile("tpot_s", 99)
    assert res.meets(Slo(p99_ttft, p99_tpot))
    assert res.violations(Slo(p99_ttft * 0.99, p99_tpot)) == ("TTFT",)
    assert res.violations(Slo(p99_ttft, p99_tpot * 0.99)) == ("TPOT",)


def test_throughput_is_output_tokens_over_the_span_of_the_run(
    config: ReplicaConfig, small_requests: Requests
) -> None:
    res = simulate(config, small_requests)
    span = res.finish_s.max() - res.arrival_s.min()
    assert res.duration_s == pytest.approx(span)
    assert res.output_tokens_per_s == pytest.approx(res.output_tokens.sum() / span)


def test_the_summary_has_its_headline_figures(config: ReplicaConfig, small_requests: Requests) -> None:
    res = offline(config, small_requests)
    summary = res.summary()
    assert summary["requests"] == summary["completed"] == len(small_requests)
    assert summary["rejected"] == 0
    assert 0 < summary["busy_fraction"] <= 1.0 + 1e-12
    assert 1.0 <= summary["mean_batch"] <= config.max_num_seqs
    assert 0 < summary["mean_kv_bytes"] <= config.kv.capacity_bytes
    for metric in ("ttft", "tpot", "e2e", "itl"):
        values = [summary[f"{metric}_p{q}_s"] for q in PERCENTILES]
        assert values == sorted(values), metric
    assert summary["itl_p50_s"] == res.itl_percentile(50)


def test_inter_token_latency_weighs_each_step_by_the_tokens_it_delivered(
    config: ReplicaConfig, small_requests: Requests
) -> None:
    res = offline(config, small_requests)
    assert res.itl_n.sum() == res.stats.decode_tokens
    assert res.itl_s.sum() <= res.stats.busy_s
    per_token = np.repeat(res.itl_s, res.itl_n.astype(int))
    assert res.itl_percentile(90) == np.percentile(per_token, 90, method="inverted_cdf")


# -- weighted percentiles ---------------------------------------------------------------------
def test_weighted_percentile_counts_each_value_its_weight() -> None:
    values, weights = np.array([3.0, 1.0, 2.0]), np.array([1.0, 1.0, 8.0])
    assert weighted_percentile(values, weights, 0) == 1.0
    assert weighted_percentile(values, weights, 10) == 1.0
    assert weighted_percentile(values, weights, 50) == 2.0
    assert weighted_percentile(values, weights, 95) == 3.0
    assert weighted_percentile(values, weights, 100) == 3.0
    assert math.isnan(weighted_percentile(np.zeros(0), np.zeros(0), 50))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-1e3, 1e3), st.integers(1, 5)), min_size=1, max_size=30),
    st.integers(0, 100),
)
def test_weighted_percentile_is_the_percentile_of_the_repeated_values(
    pairs: list[tuple[float, int]], q: int
) -> None:
    values = np.array([v for v, _ in pairs])
    weights = np.array([w for _, w in pairs])
    repeated = np.sort(np.repeat(values, weights))
    # The inverted CDF in exact integer arithmetic: the k-th smallest value, k = ceil(q n / 100).
    # (numpy's float q/100 * n can land just above an integer: q=28, n=25 gives 7.000000000000001
    # and the 8th value instead of the 7th.)
    k = max(1, -(-q * repeated.size // 100))
    assert weighted_percentile(values, weights.astype(float), q) == float(repeated[k - 1])


def test_weighted_percentile_takes_the_value_whose_share_reaches_the_quantile_exactly() -> None:
    # 7 of 25 repeated values are -1: the 28th percentile is the 7th value, -1, exactly on the tie.
    values = np.array([-1.0, 0.0])
    assert weighted_percentile(values, np.array([7.0, 18.0]), 28) == -1.0
    assert weighted_percentile(values, np.array([7.0, 18.0]), 29) == 0.0


# -- the table --------------------------------------------------------------------------------
COLUMNS = {
    "arrival_s": pa.float64(),
    "first_token_s": pa.float64(),
    "finish_s": pa.float64(),
    "prompt_tokens": pa.int64(),
    "output_tokens": pa.int64(),
    "cached_tokens": pa.int64(),
    "preemptions": pa.int64(),
    "rejected": pa.bool_(),
    "class": pa.string(),
    "ttft_s": pa.float64(),
    "tpot_s": pa.float64(),
}


def test_the_table_has_one_row_per_request_and_the_documented_columns(
    config: ReplicaConfig, small_requests: Requests
) -> None:
    res = simulate(config, small_requests)
    table = res.table()
    assert table.num_rows == len(small_requests)
    assert dict(zip(table.schema.names, table.schema.types, strict=True)) == COLUMNS
    assert set(table.column("class").to_pylist()) == {"chat", "code"}
    assert table.column("ttft_s").to_numpy().tolist() == res.ttft_s.tolist()


def test_the_table_writes_to_parquet_and_reads_back(config: ReplicaConfig, tmp_path: Path) -> None:
    res = simulate(config, random_requests(3, 10, cached_fraction=0.5))
    path = tmp_path / "run.parquet"
    pq.write_table(res.table(), path)
    assert pq.read_table(path).equals(res.table())


def test_an_empty_run_has_an_empty_table(config: ReplicaConfig) -> None:
    table = simulate(config, Requests.empty(("chat",))).table()
    assert table.num_rows == 0
    assert set(table.schema.names) == set(COLUMNS)


def test_the_table_keeps_the_request_order_and_lengths(config: ReplicaConfig) -> None:
    requests = make_requests([30, 20, 10], [3, 2, 1], arrival_s=[0.0, 0.5, 1.0], cached=[0, 5, 0])
    table = simulate(config, requests).table()
    assert table.column("prompt_tokens").to_pylist() == [30, 20, 10]
    assert table.column("output_tokens").to_pylist() == [3, 2, 1]
    assert table.column("cached_tokens").to_pylist() == [0, 5, 0]
    assert table.column("arrival_s").to_pylist() == [0.0, 0.5, 1.0]
