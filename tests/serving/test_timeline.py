"""Batch size and KV utilisation over time: a timeline of fixed bins that widen to keep a run in
bounded memory, whose sums are the run's totals, on both engines alike (see test_compiled and
test_replica for the engine and stretch agreement)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from megawatt.errors import InputError
from megawatt.serving import ReplicaConfig, RunResult, Timeline, offline, simulate
from megawatt.serving.timeline import DEFAULT_MAX_BINS

from .conftest import ConstantStep, kv_for_tokens, make_requests, random_requests


def test_a_lone_request_fills_one_bin_a_step() -> None:
    """Quarter-second steps in quarter-second bins: each bin is one step, fully busy with one
    sequence whose KV grows a token a step, and delivers its token."""
    cfg = ReplicaConfig(ConstantStep(0.25), kv_for_tokens(1000), timeline_bin_s=0.25)
    res = simulate(cfg, make_requests([100], [5], arrival_s=[0.5]))
    t = res.timeline().to_pydict()
    assert t["start_s"] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
    assert t["span_s"] == [0.25] * 7
    assert t["busy_fraction"] == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert t["mean_batch"] == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    # 1 kB a token plus half a block (8 tokens): the prompt, then one token more each step.
    assert t["mean_kv_bytes"] == [0.0, 0.0, 108_000.0, 109_000.0, 110_000.0, 111_000.0, 112_000.0]
    assert t["kv_utilisation"][2] == 0.108
    assert t["output_tokens"] == [0, 0, 1, 1, 1, 1, 1]
    assert t["output_tokens_per_s"][2] == 4.0


def test_a_step_across_bins_is_split_by_time() -> None:
    tl = Timeline(0.0, capacity_bytes=100.0, bin_s=1.0, max_bins=8)
    tl.add_step(0.5, 2.25, batch=2.0, kv_bytes=50.0, tokens=2.0)
    t = tl.table().to_pydict()
    assert t["busy_fraction"] == [0.5, 1.0, 1.0]
    assert t["span_s"] == [1.0, 1.0, 0.25]  # the run ends within the last bin
    assert t["mean_batch"] == [1.0, 2.0, 2.0]
    assert t["kv_utilisation"] == [0.25, 0.5, 0.5]
    assert t["output_tokens"] == [0, 0, 2]  # delivered at the end


def test_bins_double_to_keep_a_long_run_in_bounded_memory() -> None:
    tl = Timeline(0.0, capacity_bytes=1.0, bin_s=1.0, max_bins=4)
    for k in range(4):
        tl.add_step(float(k), k + 1.0, batch=1.0, kv_bytes=1.0, tokens=1.0)
    assert tl.bin_s == 1.0 and tl.n_bins == 4
    tl.add_step(4.0, 5.0, batch=3.0, kv_bytes=1.0, tokens=1.0)  # past the fourth bin: merge
    assert tl.bin_s == 2.0 and tl.n_bins == 3
    assert tl.table()["busy_fraction"].to_pylist() == [1.0, 1.0, 1.0]
    assert tl.table()["mean_batch"].to_pylist() == [1.0, 1.0, 3.0]
    assert tl.table()["output_tokens"].to_pylist() == [2, 2, 1]
    assert tl.table()["span_s"].to_pylist() == [2.0, 2.0, 1.0]
    tl.add_step(30.0, 31.0, batch=1.0, kv_bytes=1.0, tokens=1.0)  # far out: merges twice more
    assert tl.bin_s == 8.0 and tl.n_bins == 4


def test_any_run_keeps_at_most_a_few_thousand_bins_and_they_sum_to_its_totals() -> None:
    """A few thousand requests over an hour: the bins widen (powers of two) to hold it in
    1,024 to 2,048 bins, and they add up to the run's stats."""
    requests = random_requests(3, 3000, rate_per_s=0.8, max_prompt=200, max_output=40)
    cfg = ReplicaConfig(ConstantStep(0.05), kv_for_tokens(50_000), max_num_seqs=16)
    res = simulate(cfg, requests)
    assert res.timeline_bins is not None
    t = res.timeline()
    assert DEFAULT_MAX_BINS // 2 <= t.num_rows <= DEFAULT_MAX_BINS
    assert math.log2(res.timeline_bins.bin_s) == round(math.log2(res.timeline_bins.bin_s))
    assert_sums_to_stats(res)


def assert_sums_to_stats(res: RunResult) -> None:
    t = res.timeline().to_pydict()
    span = np.array(t["span_s"])
    st = res.stats
    assert math.isclose(float(np.dot(t["busy_fraction"], span)), st.busy_s, rel_tol=1e-9)
    assert math.isclose(float(np.dot(t["mean_batch"], span)), st.seq_seconds, rel_tol=1e-9)
    assert math.isclose(float(np.dot(t["mean_kv_bytes"], span)), st.kv_byte_seconds, rel_tol=1e-9)
    assert res.preemptions.sum() == 0
    assert sum(t["output_tokens"]) == st.decode_tokens + int(np.isfinite(res.first_token_s).sum())
    assert max(t["kv_utilisation"]) <= 1.0


def test_the_timeline_sums_to_the_stats_with_preemption_and_an_early_stop() -> None:
    requests = random_requests(7, 60, rate_per_s=30, max_prompt=300, max_output=120)
    cfg = ReplicaConfig(ConstantStep(0.01), kv_for_tokens(700), max_num_seqs=8, max_num_batched_tokens=256)
    full = simulate(cfg, requests)
    assert full.preemptions.sum() > 0
    t = full.timeline().to_pydict()
    # A recompute keeps the tokens generated, so every output token is delivered once.
    assert sum(t["output_tokens"]) == full.output_tokens.sum()
    early = simulate(cfg, requests, until_s=1.0)
    t = early.timeline().to_pydict()
    assert math.isclose(float(np.dot(t["busy_fraction"], t["span_s"])), early.stats.busy_s, rel_tol=1e-9)


def test_an_offline_batch_shows_its_batch_draining() -> None:
    """Eight requests at once with outputs 1 to 8 tokens: the batch shrinks by one a step."""
    cfg = ReplicaConfig(ConstantStep(0.25), kv_for_tokens(5000), timeline_bin_s=0.25)
    res = offline(cfg, make_requests([10] * 8, list(range(1, 9))))
    assert res.timeline()["mean_batch"].to_pylist() == [8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]
    assert res.timeline()["output_tokens"].to_pylist() == [8, 7, 6, 5, 4, 3, 2, 1]


def test_pools_merge_on_the_widest_bins() -> None:
    a = Timeline(0.0, 10.0, bin_s=1.0, max_bins=4)
    b = Timeline(0.0, 30.0, bin_s=1.0, max_bins=4)
    a.add_step(0.0, 1.0, 2.0, 5.0, 1.0)
    b.add_step(0.0, 1.0, 1.0, 10.0, 1.0)
    b.add_step(6.0, 7.0, 1.0, 10.0, 1.0)  # b widened to 2 s bins
    pool = Timeline.merged([a, b])
    assert pool.bin_s == 2.0 and pool.capacity_bytes == 40.0
    t = pool.table().to_pydict()
    assert t["span_s"] == [2.0, 2.0, 2.0, 1.0]  # the last bin ends with the last step
    assert t["mean_batch"] == [1.5, 0.0, 0.0, 1.0]
    assert t["output_tokens"] == [2, 0, 0, 1]
    assert t["kv_utilisation"][0] == pytest.approx(15.0 / 2.0 / 40.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bin_s": 0.0}, "bin_s must be a positive number of seconds; got 0.0"),
        ({"bin_s": math.nan}, "bin_s must be a positive number of seconds; got nan"),
        ({"max_bins": 3}, "max_bins must be even and >= 2; got 3"),
    ],
)
def test_a_broken_timeline_is_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(InputError, match=message):
        Timeline(0.0, 1.0, **kwargs)  # type: ignore[arg-type]


def test_merging_needs_one_grid() -> None:
    with pytest.raises(InputError, match="at least one"):
        Timeline.merged([])
    with pytest.raises(InputError, match="power of two apart"):
        Timeline.merged([Timeline(0.0, 1.0, 1.0), Timeline(0.0, 1.0, 3.0)])
    with pytest.raises(InputError, match="one grid"):
        Timeline.merged([Timeline(0.0, 1.0), Timeline(1.0, 1.0)])


def test_a_run_without_a_timeline_says_so() -> None:
    cfg = ReplicaConfig(ConstantStep(), kv_for_tokens(1000))
    res = replace(simulate(cfg, make_requests([10], [2])), timeline_bins=None)
    with pytest.raises(InputError, match="kept no timeline"):
        res.timeline()
