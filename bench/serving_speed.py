"""How fast the serving simulator runs: simulated requests per wall-second.

Workloads:
  (a) Vidur's benchmark (../shared/bench/peers/README.md): Llama-3-8B on one A100, chunked prefill
      512 tokens, batch cap 128, Vidur's zipf lengths (max 4,096 total tokens, mean ~1,843 in /
      ~92 out), Poisson 6.45 requests/s; 10,000 and 100,000 requests.
  (b) The Azure 2023 conversation trace replayed at 10x its rate on one H100 (Llama-3.1-8B, BF16).
  (c) Coding-agent sessions (`drivers.sessions`) on one GB200 GPU (gpt-oss-120b, native MXFP4
      experts): 400 sessions of the sourced `coding-agent` class of `megawatt.workload.sessions`
      (the class `megawatt run` uses; turns per session median 25, p90 324, here at most 400;
      growing cached context with compaction; tool gaps median 3.8 s, p90 28.9 s) starting as
      a Poisson process (0.03 per second). About 33,000 turns.
  (d) Mooncake's synthetic trace (3,993 requests, prompts of 15,300 tokens on average) with its
      hashed prefix blocks (512 tokens each) at its own rate on one H100 (Llama-3.1-8B, BF16):
      the replica keeps a hashed prefix cache in its KV memory, LRU as vLLM's.
  (e) The Azure 2023 conversation trace at 20x its rate on a prefill/decode pair (`serving.disagg`):
      2 prefill and 4 decode H100 replicas (Llama-3.1-8B, BF16), KV over a 50 GB/s link,
      least-outstanding routing.

Workloads (a), (b), (d) and (e) run on both backends (of `simulate`, `disaggregated`): `fast`
(the compiled kernel, timed warm: its one-off compile or cache load is reported apart, as
Vidur's figure is its event loop alone; median of 5 runs) and `python` (the event-driven
Replica, one run); their per-request tables are checked equal. Workload (c) runs on the
compiled kernel step by step and in stretch mode (decode stretches in closed form; median of 5
runs each), both checked against one run of the Python replica (the same table; to 1e-9 in
stretch mode).

  python bench/serving_speed.py               # our figures
  python bench/serving_speed.py --sessions    # (c) alone
  python bench/serving_speed.py --prefix      # (d) alone
  python bench/serving_speed.py --disagg      # (e) alone
  python bench/serving_speed.py --vs-vidur    # also runs Vidur (../shared/bench/peers/run_vidur.sh)
                                              # and ends with `speedup_vs_vidur=<number>` (fast engine)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import time
from pathlib import Path

import numpy as np

from megawatt.hardware import load_catalog
from megawatt.model import load_model
from megawatt.perf import Deployment
from megawatt.serving import ReplicaConfig, RunResult, simulate
from megawatt.serving.disagg import DisaggResult, KvLink, disaggregated
from megawatt.serving.drivers import sessions
from megawatt.workload import Poisson, Requests, builtin_trace, builtin_trace_with_prefixes, time_scaled
from megawatt.workload.lengths import Zipf
from megawatt.workload.sessions import default_session_classes, sample_sessions

PEERS = Path(__file__).resolve().parents[2] / "shared" / "bench" / "peers"


def vidur_workload(n: int, seed: int = 0) -> Requests:
    """Vidur's synthetic workload: one zipf total length per request, split 20:1."""
    rng = np.random.default_rng(seed)
    total = Zipf(part="total").sample(rng, n)
    decode = np.maximum((total / 21.0).astype(np.int64), 1)
    prefill = np.maximum(total - decode, 1)
    arrivals = Poisson(6.45).sample(rng, n)
    return Requests(
        arrival_s=arrivals,
        prompt_tokens=prefill,
        output_tokens=decode,
        cached_tokens=np.zeros(n, dtype=np.int64),
        class_id=np.zeros(n, dtype=np.int32),
        class_names=("zipf",),
    )


def agent_sessions(
    n_sessions: int, rate_per_s: float, seed: int = 0, context_cap: int = 131_072
) -> tuple[Requests, np.ndarray, np.ndarray]:
    """Workload (c): coding-agent sessions as `megawatt run` draws them (the sourced
    `coding-agent` class of `megawatt.workload.sessions`), Poisson starts at `rate_per_s`, and
    the table's `parent` and `gap_s`."""
    rng = np.random.default_rng(seed)
    starts = np.cumsum(rng.exponential(1.0 / rate_per_s, n_sessions))
    agent = next(c for c in default_session_classes() if c.name == "coding-agent")
    table = sample_sessions(
        [agent], rng, starts, max_context_tokens=context_cap, max_turns=400,
        class_id=np.zeros(n_sessions, np.int64),
    )
    return table.requests, table.parent, table.gap_s


def replica(
    system_id: str, model_id: str, *, budget: int, max_seqs: int, weight_dtype: str = "bf16"
) -> ReplicaConfig:
    cat = load_catalog()
    system = cat.system(system_id)
    dep = Deployment(
        model=load_model(model_id),
        system=system,
        device=cat.device(system.device_id),
        tp=1,
        weight_dtype=weight_dtype,
        engine="vllm",
        max_num_seqs=max_seqs,
        max_num_batched_tokens=budget,
    )
    return ReplicaConfig.of(dep)


def timed(
    cfg: ReplicaConfig, requests: Requests, label: str, backend: str, repeat: int = 1
) -> tuple[float, RunResult]:
    """Simulated requests per wall-second of `simulate` (the median of `repeat` runs: a run of
    a few milliseconds is at the mercy of one scheduler hiccup)."""
    walls = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = simulate(cfg, requests, backend=backend)
        walls.append(time.perf_counter() - start)
    wall = float(np.median(walls))
    s = result.summary()
    rate = len(requests) / wall
    print(
        f"{label} [{backend}]: requests={len(requests)} wall_s={wall:.3f} runs={repeat} "
        f"sim_req_per_wall_s={rate:,.0f} simulated_s={s['duration_s']:.0f} "
        f"steps={result.stats.n_steps} stretches={result.stats.n_stretches} "
        f"ttft_p50_s={s['ttft_p50_s']:.3f} ttft_p99_s={s['ttft_p99_s']:.3f} "
        f"tpot_p50_s={s['tpot_p50_s']:.4f} out_tok_per_s={s['output_tokens_per_s']:.0f}"
    )
    return rate, result


def same_table(a: RunResult, b: RunResult) -> bool:
    """The two engines' per-request tables agree (times to 1e-9 relative)."""
    ta, tb = a.table(), b.table()
    for name in ta.column_names:
        x = ta[name].to_numpy(zero_copy_only=False)
        y = tb[name].to_numpy(zero_copy_only=False)
        same = (
            np.allclose(x, y, rtol=1e-9, atol=0.0, equal_nan=True)
            if x.dtype.kind == "f"
            else bool((x == y).all())
        )
        if not same:
            return False
    return True


def both(cfg: ReplicaConfig, requests: Requests, label: str, python: bool = True) -> float:
    """Time the fast engine (and the Python one); returns the fast rate."""
    fast, fast_result = timed(cfg, requests, label, "fast", repeat=5)
    if python:
        slow, slow_result = timed(cfg, requests, label, "python")
        print(f"{label}: fast/python={fast / slow:.0f}x tables_equal={same_table(fast_result, slow_result)}")
    return fast


def warm_up(cfg: ReplicaConfig) -> None:
    """Compile (or load from the on-disk cache) the fast kernel, and say how long it took."""
    start = time.perf_counter()
    simulate(cfg, vidur_workload(20, seed=99), backend="fast")
    print(f"fast engine first call (compile or cache load): {time.perf_counter() - start:.2f} s")


def session_rates(repeat: int = 5) -> float:
    """Workload (c) on the compiled kernel, step by step and in stretch mode (median of
    `repeat` runs each, warm); returns the stretch mode's simulated requests per wall-second."""
    cfg = replica("gb200-nvl72", "gpt-oss-120b", budget=8192, max_seqs=256, weight_dtype="native")
    table = agent_sessions(400, 0.03)
    sessions(cfg, *agent_sessions(3, 1.0, seed=99), backend="fast")  # compile or load the kernel
    label = "(c) coding-agent sessions, 1x GB200, gpt-oss-120b"
    results = []
    rate = 0.0
    for stretch in (False, True):
        walls = []
        for _ in range(repeat):
            start = time.perf_counter()
            result = sessions(cfg, *table, backend="fast", stretch=stretch)
            walls.append(time.perf_counter() - start)
        wall = float(np.median(walls))
        rate = result.n / wall
        s = result.summary()
        print(
            f"{label} [fast{', stretch' if stretch else ''}]: sessions=400 "
            f"requests={result.n} wall_s={wall:.3f} runs={repeat} "
            f"sim_req_per_wall_s={rate:,.0f} simulated_s={result.end_s:.0f} "
            f"steps={result.stats.n_steps} stretches={result.stats.n_stretches} "
            f"ttft_p50_s={s['ttft_p50_s']:.3f} ttft_p99_s={s['ttft_p99_s']:.3f} "
            f"tpot_p50_s={s['tpot_p50_s']:.4f} out_tok_per_s={s['output_tokens_per_s']:.0f}"
        )
        results.append(result)
    start = time.perf_counter()
    slow = sessions(cfg, *table, backend="python")
    wall = time.perf_counter() - start
    print(f"{label} [python]: requests={slow.n} wall_s={wall:.3f} sim_req_per_wall_s={slow.n / wall:,.0f}")
    steps, stretched = results
    close = all(
        np.allclose(getattr(stretched, name), getattr(slow, name), rtol=1e-9, atol=1e-12, equal_nan=True)
        for name in ("arrival_s", "first_token_s", "finish_s")
    ) and bool((stretched.preemptions == slow.preemptions).all())
    print(
        f"{label}: fast/python={rate * wall / slow.n:.0f}x (stretch) "
        f"tables_equal={same_table(steps, slow)} stretch_within_1e-9={close}"
    )
    return rate


def prefix_rate() -> float:
    """Workload (d) on both backends (the compiled one warm, median of 5 runs); returns its
    simulated requests per wall-second, and prints the share of prompt tokens the cache served
    against the idealised column's (every block seen before, an infinite cache)."""
    requests, ids = builtin_trace_with_prefixes("mooncake-synthetic")
    cfg = replica("dgx-h100", "llama-3.1-8b", budget=8192, max_seqs=256)
    simulate(cfg, requests.subset(np.arange(20)), prefix_blocks=ids[:20], backend="fast")  # compile
    label = "(d) mooncake with hashed prefixes, 1x H100"
    results = {}
    walls = {}
    for backend, repeat in (("fast", 5), ("python", 1)):
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            results[backend] = simulate(cfg, requests, prefix_blocks=ids, backend=backend)
            times.append(time.perf_counter() - start)
        walls[backend] = float(np.median(times))
        res = results[backend]
        print(
            f"{label} [{backend}]: requests={len(requests)} wall_s={walls[backend]:.3f} "
            f"runs={repeat} sim_req_per_wall_s={len(requests) / walls[backend]:,.0f} "
            f"cached_share={res.cached_tokens.sum() / requests.prompt_tokens.sum():.3f} "
            f"idealised_share={requests.cached_tokens.sum() / requests.prompt_tokens.sum():.3f} "
            f"evicted_blocks={res.stats.prefix_evicted_blocks}"
        )
    print(
        f"{label}: fast/python={walls['python'] / walls['fast']:.0f}x "
        f"tables_equal={same_table(results['fast'], results['python'])}"
    )
    return len(requests) / walls["fast"]


def disagg_rate() -> float:
    """Workload (e) on both backends (the compiled pair warm, median of 5 runs); returns its
    simulated requests per wall-second."""
    cfg = replica("dgx-h100", "llama-3.1-8b", budget=8192, max_seqs=256)
    requests = time_scaled(builtin_trace("azure-conv-2023"), 20.0)
    link = KvLink(bandwidth_bytes_per_s=50e9, latency_s=1e-4)
    label = "(e) azure conv 2023 at 20x, P/D pair 2 prefill + 4 decode H100"

    def run(backend: str) -> DisaggResult:
        return disaggregated(cfg, cfg, requests, link, n_prefill=2, n_decode=4, backend=backend)

    disaggregated(cfg, cfg, requests.subset(np.arange(20)), link, backend="fast")  # compile
    results, walls = {}, {}
    for backend, repeat in (("fast", 5), ("python", 1)):
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            results[backend] = run(backend)
            times.append(time.perf_counter() - start)
        walls[backend] = float(np.median(times))
        s = results[backend].result.summary()
        print(
            f"{label} [{backend}]: requests={len(requests)} wall_s={walls[backend]:.3f} "
            f"runs={repeat} sim_req_per_wall_s={len(requests) / walls[backend]:,.0f} "
            f"ttft_p50_s={s['ttft_p50_s']:.3f} tpot_p50_s={s['tpot_p50_s']:.4f}"
        )
    print(
        f"{label}: fast/python={walls['python'] / walls['fast']:.0f}x "
        f"tables_equal={same_table(results['fast'].result, results['python'].result)}"
    )
    return len(requests) / walls["fast"]


def vidur_rate() -> float:
    """Run the peer script and read Vidur's event-loop requests per wall-second (10k, no trace)."""
    proc = subprocess.run(["bash", str(PEERS / "run_vidur.sh")], capture_output=True, text=True, check=True)
    print(proc.stdout)
    block = proc.stdout.split("== n10000_notrace", 1)[1]
    match = re.search(r"loop_req_per_wall_s=(\d+)", block)
    if not match:
        raise SystemExit("could not read Vidur's n10000_notrace result")
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vs-vidur", action="store_true", help="also time Vidur and print the ratio")
    parser.add_argument("--big", action="store_true", help="include 100,000 requests for (a)")
    parser.add_argument("--sessions", action="store_true", help="run (c), the sessions, alone")
    parser.add_argument("--prefix", action="store_true", help="run (d), hashed prefixes, alone")
    parser.add_argument("--disagg", action="store_true", help="run (e), the P/D pair, alone")
    args = parser.parse_args()
    if args.sessions:
        session_rates()
        return
    if args.prefix:
        prefix_rate()
        return
    if args.disagg:
        disagg_rate()
        return

    a100 = replica("a100-8", "llama-3-8b", budget=512, max_seqs=128)
    warm_up(a100)
    ours = both(a100, vidur_workload(10_000), "(a) vidur workload, 10k")
    if args.big:
        both(a100, vidur_workload(100_000, seed=1), "(a) vidur workload, 100k", python=False)
    conv = time_scaled(builtin_trace("azure-conv-2023"), 10.0)
    both(
        replica("dgx-h100", "llama-3.1-8b", budget=8192, max_seqs=256),
        conv,
        "(b) azure conv 2023 at 10x, 1x H100",
    )
    session_rates()
    prefix_rate()
    disagg_rate()
    if args.vs_vidur:
        theirs = vidur_rate()
        print(f"vidur (a) 10k: {theirs:,.0f} simulated requests per wall-second (event loop)")
        print(f"speedup_vs_vidur={ours / theirs:.2f}")


if __name__ == "__main__":
    main()
