"""Prefill/decode disaggregation: prefill replicas hand each prompt's KV to decode replicas over a
link. TTFT is the prefill side's alone, the transfer shows in the first inter-token gap, every
request completes once on each side, and tokens are conserved."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megawatt.errors import InputError
from megawatt.serving import (
    ROUTERS,
    DisaggResult,
    KvLink,
    Replica,
    ReplicaConfig,
    disaggregated,
    simulate,
)
from megawatt.serving.disagg import router, transfer_bytes
from megawatt.workload import Requests

from .conftest import ConstantStep, LinearStep, kv_for_tokens, make_requests, random_requests

DT = 0.25
QUICK = KvLink(bandwidth_bytes_per_s=1e9, latency_s=0.0)


def cfg_for(
    kv_tokens: float = 20_000, step: ConstantStep | LinearStep | None = None, **kwargs: int
) -> ReplicaConfig:
    return ReplicaConfig(step or ConstantStep(DT), kv_for_tokens(kv_tokens), **kwargs)


def test_one_request_prefills_crosses_the_link_and_decodes() -> None:
    """100 tokens of 1 kB: 100 kB over 200 kB/s plus 1/8 s latency is 0.625 s on the link.
    The first token comes from the prefill (one step); the second a transfer and one decode step
    later; the rest a step apart."""
    link = KvLink(bandwidth_bytes_per_s=200_000.0, latency_s=0.125)
    out = disaggregated(cfg_for(), cfg_for(), make_requests([100], [5], arrival_s=[1.0]), link)
    res = out.result
    assert res.first_token_s[0] == 1.0 + DT
    assert out.transfer_bytes[0] == 100 * 1000.0 == transfer_bytes(cfg_for().kv, 100)
    assert link.transfer_s(out.transfer_bytes[0]) == 0.625
    assert out.kv_ready_s[0] == 1.25 + 0.625
    assert out.transfer_s[0] == 0.625
    assert res.finish_s[0] == 1.875 + 4 * DT
    assert res.itl_s.tolist() == [0.625 + DT, DT, DT, DT]
    assert res.itl_n.tolist() == [1, 1, 1, 1]
    assert res.tpot_s[0] == (0.625 + 4 * DT) / 4
    assert res.ttft_s[0] == DT
    assert (out.prefill_replica.tolist(), out.decode_replica.tolist()) == ([0], [0])


def test_ttft_includes_no_decode_queueing() -> None:
    """Ten requests, 0.5 s apart, of 40 tokens each, on one decode replica serving one at a
    time: decode queueing grows every request's end-to-end latency, never its TTFT, which
    stays one prefill step. On one colocated replica of the same shape TTFT grows too."""
    requests = make_requests([50] * 10, [40] * 10, arrival_s=list(np.arange(10) * 0.5))
    one_at_a_time = cfg_for(max_num_seqs=1)
    out = disaggregated(cfg_for(), one_at_a_time, requests, QUICK)
    res = out.result
    assert (res.ttft_s == DT).all()
    assert res.e2e_s[-1] > 9 * 40 * DT * 0.9  # queued behind nine requests' decodes
    assert np.all(np.diff(res.e2e_s) > 0)
    together = simulate(one_at_a_time, requests)
    assert together.ttft_s[-1] > 10 * DT


def test_the_transfer_shows_in_the_first_gap_and_decode_sets_the_rest() -> None:
    """A slower link lengthens only each request's first inter-token gap (and so its TPOT);
    first tokens are unchanged."""
    requests = random_requests(3, 30, rate_per_s=2.0, max_prompt=300, max_output=30)
    requests = requests.subset(requests.output_tokens > 1)
    fast = disaggregated(cfg_for(), cfg_for(), requests, QUICK)
    slow_link = KvLink(bandwidth_bytes_per_s=1e5, latency_s=0.05)
    slow = disaggregated(cfg_for(), cfg_for(), requests, slow_link)
    np.testing.assert_array_equal(slow.result.first_token_s, fast.result.first_token_s)
    assert (slow.result.tpot_s > fast.result.tpot_s).all()
    # Each first gap is at least its transfer plus one decode step.
    first_gaps = slow.result.itl_s[slow.result.itl_n == 1]
    transfers = np.array([slow_link.transfer_s(b) for b in slow.transfer_bytes])
    assert first_gaps.size >= len(requests)
    assert np.sort(first_gaps)[-1] >= transfers.max() + DT


def test_transfers_from_one_prefill_replica_queue_on_its_link() -> None:
    """Two prompts prefilled in the same step leave on the same link one after the other."""
    link = KvLink(bandwidth_bytes_per_s=100_000.0, latency_s=0.5)
    out = disaggregated(cfg_for(), cfg_for(), make_requests([100, 100], [3, 3]), link, n_decode=2)
    assert out.result.first_token_s.tolist() == [DT, DT]
    assert out.kv_ready_s.tolist() == [DT + 1.0 + 0.5, DT + 2.0 + 0.5]
    assert sorted(out.decode_replica.tolist()) == [0, 1]


def check_once_on_each_side(out: DisaggResult, requests: Requests) -> None:
    res = out.result
    assert (res.completed ^ res.rejected).all()
    prefilled = out.prefill_replica >= 0
    assert (out.n_prefill_finishes == prefilled).all()
    sent = prefilled & ~res.rejected & (requests.output_tokens > 1)
    assert (out.n_decode_finishes == sent).all()
    assert ((out.decode_replica >= 0) == sent).all()
    assert (res.first_token_s[res.completed] > res.arrival_s[res.completed]).all()
    assert (out.kv_ready_s[sent] >= res.first_token_s[sent]).all()
    assert (res.finish_s[sent] > out.kv_ready_s[sent]).all()


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 30),
    n_prefill=st.integers(1, 3),
    n_decode=st.integers(1, 3),
    router_name=st.sampled_from(sorted(ROUTERS)),
    decode_kv=st.floats(400, 5000),
    max_num_seqs=st.integers(1, 8),
    bandwidth=st.floats(1e4, 1e8),
    latency=st.floats(0.0, 0.2),
    rate=st.floats(1.0, 100.0),
    policy=st.sampled_from(["vllm", "fcfs"]),
)
def test_every_request_completes_once_on_each_side(
    seed: int, n: int, n_prefill: int, n_decode: int, router_name: str, decode_kv: float,
    max_num_seqs: int, bandwidth: float, latency: float, rate: float, policy: str,
) -> None:
    """Any pair, any load, decode caches tight enough to preempt and to turn away: each
    request is finished once by a prefill replica and, if it has more tokens, once by a decode
    replica; or it is rejected."""
    requests = random_requests(seed, n, rate_per_s=rate, max_prompt=300, max_output=80)
    prefill = ReplicaConfig(LinearStep(), kv_for_tokens(2000), policy, 8, 256)
    decode = ReplicaConfig(LinearStep(), kv_for_tokens(decode_kv), policy, max_num_seqs, 256)
    link = KvLink(bandwidth, latency)
    out = disaggregated(prefill, decode, requests, link, n_prefill=n_prefill, n_decode=n_decode,
                        router_name=router_name)
    check_once_on_each_side(out, requests)
    assert max(s.peak_kv_bytes for s in out.decode_stats) <= decode.kv.capacity_bytes + 1e-6
    assert max(s.peak_kv_bytes for s in out.prefill_stats) <= prefill.kv.capacity_bytes + 1e-6
    whole = requests.prompt_tokens + requests.output_tokens - 1 + 8
    assert (out.result.rejected == (whole > decode_kv)).all()


def test_tokens_are_conserved_across_the_pair() -> None:
    requests = random_requests(5, 60, rate_per_s=10.0, max_prompt=300, max_output=60)
    prefill, decode = cfg_for(step=LinearStep()), cfg_for(step=LinearStep())
    out = disaggregated(prefill, decode, requests, QUICK, n_prefill=2, n_decode=3)
    res = out.result
    assert res.completed.all() and res.preemptions.sum() == 0
    assert sum(s.prefill_tokens for s in out.prefill_stats) == requests.prompt_tokens.sum()
    assert sum(s.decode_tokens for s in out.prefill_stats) == 0
    assert sum(s.prefill_tokens for s in out.decode_stats) == 0
    assert sum(s.decode_tokens for s in out.decode_stats) == (requests.output_tokens - 1).sum()
    assert res.itl_n.sum() == (requests.output_tokens - 1).sum()
    assert res.stats.decode_tokens == (requests.output_tokens - 1).sum()
    assert res.timeline()["output_tokens"].to_numpy().sum() == requests.output_tokens.sum()
    assert out.decode_timeline.tokens.sum() == (requests.output_tokens - 1).sum()
    assert set(out.prefill_replica.tolist()) == {0, 1}
    assert set(out.decode_replica[requests.output_tokens > 1].tolist()) == {0, 1, 2}


def test_decode_side_preemption_recomputes_there_and_still_completes_once() -> None:
    """A decode cache too small for the batch it admits: sequences are preempted and
    recomputed on the decode replica (a prefill there), and each request completes once."""
    requests = make_requests([100] * 6, [200] * 6)
    out = disaggregated(cfg_for(), cfg_for(600, max_num_batched_tokens=1024), requests, QUICK)
    check_once_on_each_side(out, requests)
    assert out.result.preemptions.sum() > 0
    assert sum(s.prefill_tokens for s in out.decode_stats) > 0
    assert out.result.completed.all()


def test_decode_stretches_agree_with_step_by_step() -> None:
    requests = random_requests(8, 40, rate_per_s=8.0, max_prompt=300, max_output=120)
    prefill, decode = cfg_for(step=LinearStep()), cfg_for(3000, step=LinearStep(), max_num_seqs=8)
    link = KvLink(2e6, 0.01)
    stretched = disaggregated(prefill, decode, requests, link, n_decode=2)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Replica, "_can_stretch", lambda self: False)
        steps = disaggregated(prefill, decode, requests, link, n_decode=2)
    assert sum(s.n_stretches for s in stretched.decode_stats) > 0
    np.testing.assert_allclose(stretched.result.finish_s, steps.result.finish_s, rtol=1e-9)
    np.testing.assert_allclose(np.sort(stretched.result.itl_s), np.sort(steps.result.itl_s), rtol=1e-9)
    assert stretched.result.stats.n_steps == steps.result.stats.n_steps


def test_requests_that_can_never_fit_are_rejected_on_the_side_that_cannot_hold_them() -> None:
    requests = make_requests([100, 900, 100, 100], [10, 10, 950, 10], arrival_s=[0.0, 0.1, 0.2, 0.3])
    out = disaggregated(cfg_for(500), cfg_for(1000), requests, QUICK)
    assert out.result.rejected.tolist() == [False, True, True, False]
    assert out.prefill_replica.tolist() == [0, 0, -1, 0]  # 900 tokens reach the prefill side
    assert out.n_prefill_finishes.tolist() == [1, 1, 0, 1]
    assert out.n_decode_finishes.tolist() == [1, 0, 0, 1]


def test_one_token_outputs_finish_at_the_prefill() -> None:
    out = disaggregated(cfg_for(), cfg_for(), make_requests([10], [1]), QUICK)
    assert out.result.finish_s[0] == out.result.first_token_s[0] == DT
    assert out.decode_replica[0] == -1 and out.transfer_bytes[0] == 0.0


def test_routers_spread_the_load() -> None:
    loads = [3, 1, 1]
    assert router("least_outstanding")(loads, 0) == 1
    assert [router("round_robin")(loads, k) for k in range(4)] == [0, 1, 2, 0]
    with pytest.raises(InputError, match="must be one of least_outstanding, round_robin; got 'random'"):
        router("random")


def test_a_run_can_stop_early() -> None:
    requests = random_requests(5, 30, rate_per_s=10.0, max_prompt=300, max_output=60)
    out = disaggregated(cfg_for(), cfg_for(), requests, QUICK, until_s=1.0)
    assert out.result.end_s == 1.0
    assert not out.result.completed.all()
    assert (out.result.finish_s[out.result.completed] <= 1.0).all()


def test_the_prefill_pool_can_keep_a_prefix_cache() -> None:
    requests = make_requests([300, 300], [3, 3], arrival_s=[0.0, 5.0])
    ids = [np.array([1, 2, 3, 4]), np.array([1, 2, 3, 5])]
    out = disaggregated(cfg_for(), cfg_for(), requests, QUICK, prefix_blocks=ids, prefix_block_tokens=64)
    assert out.result.cached_tokens.tolist() == [0, 192]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: KvLink(0.0), "bandwidth_bytes_per_s must be > 0; got 0.0"),
        (lambda: KvLink(1.0, -1.0), "latency_s must be >= 0; got -1.0"),
        (
            lambda: disaggregated(cfg_for(), cfg_for(), make_requests([1], [1]), QUICK, n_prefill=0),
            "n_prefill >= 1 and n_decode >= 1; got 0 and 1",
        ),
    ],
)
def test_a_broken_pair_is_refused(build: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        build()  # type: ignore[operator]


def test_an_empty_workload_is_an_empty_result() -> None:
    out = disaggregated(cfg_for(), replace(cfg_for(), max_num_seqs=4), Requests.empty(), QUICK)
    assert out.result.n == 0 and out.result.timeline().num_rows == 0


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 40),
    n_in_flight=st.integers(1, 12),
    n_prefill=st.integers(1, 3),
    n_decode=st.integers(1, 3),
    decode_kv=st.floats(400, 5000),
)
def test_a_closed_loop_keeps_its_requests_in_flight(
    seed: int, n: int, n_in_flight: int, n_prefill: int, n_decode: int, decode_kv: float
) -> None:
    """InferenceX's disaggregated runs: C requests in flight over the pair; each completion (or
    rejection) issues the next, so no more than C are ever outstanding and every issue time
    after the first C is a completion time."""
    requests = random_requests(seed, n, rate_per_s=5.0, max_prompt=300, max_output=60)
    prefill = ReplicaConfig(LinearStep(), kv_for_tokens(2000), "vllm", 8, 256)
    decode = ReplicaConfig(LinearStep(), kv_for_tokens(decode_kv), "vllm", 8, 256)
    out = disaggregated(prefill, decode, requests, QUICK, n_prefill=n_prefill, n_decode=n_decode,
                        n_in_flight=n_in_flight)
    check_once_on_each_side(out, requests)
    res = out.result
    issued = np.sort(res.arrival_s)
    ended = np.sort(res.finish_s)
    c = min(n_in_flight, n)
    assert (issued[:c] == 0.0).all()
    np.testing.assert_array_equal(issued[c:], ended[: n - c])
    for t in issued:  # outstanding at each issue: at most C
        assert ((res.arrival_s <= t) & (res.finish_s > t)).sum() <= c


@pytest.mark.parametrize(
    ("n_prefill", "n_decode", "clients", "prompt", "output"),
    [(1, 1, 8, 1024, 256), (1, 2, 32, 1024, 512), (2, 3, 64, 4096, 256), (3, 1, 16, 8192, 128)],
)
def test_the_closed_loop_estimate_by_symmetry_agrees_with_the_whole_pair(
    n_prefill: int, n_decode: int, clients: int, prompt: int, output: int
) -> None:
    """One compiled decode replica and one compiled prefill replica, iterated, tell the story of
    the whole pair on the Python engine: output rate within 5%, median TPOT within 3%, median
    TTFT within 20% (the prefill queue sees a smoothed issue stream)."""
    from megawatt.hardware import load_catalog
    from megawatt.model import load_model
    from megawatt.perf import Deployment
    from megawatt.serving import closed_loop_by_symmetry
    from megawatt.workload import Uniform

    catalog = load_catalog()
    system = catalog.system("dgx-h100")

    def config(max_num_seqs: int) -> ReplicaConfig:
        dep = Deployment(load_model("llama-3.1-8b"), system, catalog.device(system.device_id),
                         max_num_seqs=max_num_seqs)
        return ReplicaConfig.of(dep)

    rng = np.random.default_rng(0)
    n = 10 * clients
    requests = Requests(
        np.zeros(n), Uniform.of_range_ratio(prompt, 0.8).sample(rng, n),
        Uniform.of_range_ratio(output, 0.8).sample(rng, n), np.zeros(n, dtype=np.int64),
        np.zeros(n, dtype=np.int32), ("r",),
    )
    link = KvLink(50e9, 5e-6)
    exact = disaggregated(config(1024), config(clients), requests, link, n_prefill=n_prefill,
                          n_decode=n_decode, router_name="round_robin", n_in_flight=clients).result
    fast = closed_loop_by_symmetry(config(1024), config(clients), requests, link,
                                   n_prefill=n_prefill, n_decode=n_decode, n_in_flight=clients)
    share = clients / max(1, round(clients / n_decode))

    def tpot(r: object) -> float:
        keep = r.completed & (r.output_tokens > 1)  # type: ignore[attr-defined]
        return float(np.median(r.tpot_s[keep]))  # type: ignore[attr-defined]

    assert fast.output_tokens_per_s * share == pytest.approx(exact.output_tokens_per_s, rel=0.05)
    assert tpot(fast) == pytest.approx(tpot(exact), rel=0.03)
    ttft = [float(np.median(r.ttft_s[r.completed])) for r in (fast, exact)]
    assert ttft[0] == pytest.approx(ttft[1], rel=0.20)


# -- the compiled pair -------------------------------------------------------------------------
def assert_same_pair(fast: DisaggResult, slow: DisaggResult) -> None:
    """The compiled pair's run is the Python pair's: the whole run's table, stats, ITL samples
    and timeline (`assert_same_run`), and per request the replicas, KV-ready times, bytes moved
    and finishes of each side; per replica the stats of each side."""
    from .test_compiled import assert_same_run

    assert_same_run(fast.result, slow.result)
    for name in ("prefill_replica", "decode_replica", "n_prefill_finishes", "n_decode_finishes"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name), err_msg=name)
    np.testing.assert_allclose(fast.kv_ready_s, slow.kv_ready_s, rtol=1e-9, atol=0.0)
    np.testing.assert_array_equal(fast.transfer_bytes, slow.transfer_bytes)
    for a, b in zip((*fast.prefill_stats, *fast.decode_stats), (*slow.prefill_stats, *slow.decode_stats),
                    strict=True):
        assert (a.n_steps, a.prefill_tokens) == (b.n_steps, b.prefill_tokens)
        assert a.decode_tokens == b.decode_tokens
        assert a.busy_s == pytest.approx(b.busy_s, rel=1e-9)


PAIRS = {  # name: (prefill model, decode model, decode KV tokens)
    "dense": ("h100-llama-8b", "h100-llama-8b", None),
    "tight-decode": ("h100-llama-8b", "h100-llama-8b", 2_500.0),  # preemption on the decode side
    "moe-windows": ("h100-gpt-oss-20b", "h100-gpt-oss-20b", 3_000.0),
    "wafer-decode": ("h100-llama-8b", "cs3-llama-8b", None),  # a GPU prefills for a wafer
}


@pytest.mark.parametrize("pair", sorted(PAIRS))
@pytest.mark.parametrize("policy", ["fcfs", "static", "vllm"])
@pytest.mark.parametrize(
    "shape",
    [
        {},
        {"n_prefill": 2, "n_decode": 3},
        {"n_prefill": 2, "n_decode": 2, "router_name": "round_robin"},
        {"n_prefill": 2, "n_decode": 3, "n_in_flight": 6},
        {"n_prefill": 2, "n_decode": 2, "until_s": 0.6},
    ],
    ids=["1x1", "2x3", "round-robin", "closed", "until"],
)
def test_the_compiled_pair_runs_the_python_pair(pair: str, policy: str, shape: dict) -> None:
    """The compiled pair replays the Python pair event for event (arrivals, step starts and
    ends, KV deliveries in the Environment's order): the same tables, replicas, KV times and
    stats, on real step models, every scheduler, both routers, open and closed loops, a run
    stopped early and decode caches small enough to preempt."""
    from .test_compiled import roofline, with_kv_tokens

    pre_name, dec_name, dec_kv = PAIRS[pair]
    pre = replace(roofline(pre_name), scheduler=policy)
    dec = replace(with_kv_tokens(roofline(dec_name), dec_kv), scheduler=policy)
    link = KvLink(bandwidth_bytes_per_s=2e10, latency_s=1e-4)
    requests = random_requests(3, 60, rate_per_s=40.0)
    fast, slow = (disaggregated(pre, dec, requests, link, backend=b, **shape) for b in ("fast", "python"))
    assert_same_pair(fast, slow)
    assert fast.result.completed.any()


def test_the_compiled_pair_rejects_and_finishes_early_as_the_python_one() -> None:
    """Prompts too long for the prefill cache, sequences too long for the decode cache and
    one-token outputs (done at the prefill): the same outcomes on both engines."""
    from .test_compiled import roofline, with_kv_tokens

    pre = with_kv_tokens(roofline("h100-llama-8b"), 900.0)
    dec = with_kv_tokens(roofline("h100-llama-8b"), 1_200.0)
    requests = make_requests(
        [100, 1_000, 200, 50, 1_100, 300], [20, 5, 1_100, 1, 1, 30],
        arrival_s=[0.0, 0.01, 0.02, 0.03, 0.04, 0.05],
    )
    fast, slow = (disaggregated(pre, dec, requests, QUICK, backend=b) for b in ("fast", "python"))
    assert_same_pair(fast, slow)
    assert fast.result.rejected.tolist() == [False, True, True, False, True, False]
    assert fast.n_decode_finishes.tolist() == [1, 0, 0, 0, 0, 1]


def test_the_compiled_pair_takes_an_empty_workload() -> None:
    from .test_compiled import roofline

    cfg = roofline("h100-llama-8b")
    out = disaggregated(cfg, cfg, make_requests([], []), QUICK, backend="fast")
    assert out.result.n == 0 and out.result.end_s == 0.0


def test_backend_fast_says_what_the_compiled_pair_cannot_run() -> None:
    from .test_compiled import roofline

    real = roofline("h100-llama-8b")
    requests = make_requests([64], [3])
    with pytest.raises(InputError, match="backend 'fast' cannot run this pair: it has a step model without"):
        disaggregated(cfg_for(), real, requests, QUICK, backend="fast")
    with pytest.raises(InputError, match="backend 'fast' cannot run this pair: it has prefix_blocks"):
        disaggregated(real, real, requests, QUICK, backend="fast", prefix_blocks=[np.array([1])],
                      prefix_block_tokens=64)
    with pytest.raises(InputError, match="backend must be one of auto, fast, python; got 'gpu'"):
        disaggregated(real, real, requests, QUICK, backend="gpu")
