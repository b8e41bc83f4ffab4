"""What session affinity buys a pool: coding-agent sessions on k replicas routed sticky (every
turn of a session to one replica), least-outstanding per turn, or at random per turn.

Workload: `default_session_classes()`'s coding agent (megawatt.workload.sessions, sources there)
on gpt-oss-120b (native MXFP4 experts) with one GB200 GPU a replica, vLLM-style scheduling, 8,192
tokens a step, 256 sequences (as bench/serving_speed.py's replica helper). `--sessions` sessions
(300) start as a Poisson process at `--load` (0.8) times k times one replica's session capacity,
which the bench measures first: the highest Poisson start rate at which one replica keeps every
turn's p99 TTFT within 5 s and p99 TPOT within 0.1 s (the default scenario's SLO, an assumption
stated in data/scenarios/default.yaml), with every turn on that replica and the table's idealised
cached tokens (`serving.drivers.capacity` with session links, compiled engine).

Each router then serves the same table on `--k` (4) Python replicas jointly
(`fleet.affinity.affinity_gain`), with the hashed prefix cache (every replica's own LRU cache of
512-token blocks: the physical model) and, with `--cache both` (the default), the idealised one
(the table's cached tokens on the replica of the turn before, none elsewhere).

Figures of the default run (seed 0; 36,645 turns; capacity 0.0371 sessions/s a replica, TTFT-bound;
starts at 0.1187/s; about 4 minutes on 2 CPU cores, 1.4 GB):

  cache   router             task p50 s  task p99 s  cached  TTFT p50 s  TTFT p99 s
  hashed  sticky                    435      26,114   0.891       0.067       0.950
  hashed  least_outstanding         523      26,528   0.611       0.240       1.930
  hashed  random                    560      27,179   0.584       0.311       2.613
  ideal   sticky                    434      26,270   0.869       0.108       0.945
  ideal   least_outstanding         647      27,609   0.306       0.619       2.573
  ideal   random                    658      28,808   0.214       0.836       3.915

  python bench/affinity.py                    # k=4, 300 sessions, 0.8 of capacity, both caches
  python bench/affinity.py --cache hashed --k 8 --load 0.6
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from megawatt.fleet.affinity import affinity_gain
from megawatt.hardware import load_catalog
from megawatt.model import load_model
from megawatt.perf import Deployment
from megawatt.serving import ReplicaConfig, Slo
from megawatt.serving.drivers import capacity
from megawatt.workload.sessions import default_session_classes, sample_sessions

SLO = Slo(ttft_p99_s=5.0, tpot_p99_s=0.10)  # the default scenario's (an assumption there)
MODEL = "gpt-oss-120b"


def replica() -> ReplicaConfig:
    """gpt-oss-120b on one GB200 GPU (bench/serving_speed.py's replica helper)."""
    cat = load_catalog()
    system = cat.system("gb200-nvl72")
    dep = Deployment(
        model=load_model(MODEL),
        system=system,
        device=cat.device(system.device_id),
        tp=1,
        weight_dtype="native",
        engine="vllm",
        max_num_seqs=256,
        max_num_batched_tokens=8192,
    )
    return ReplicaConfig.of(dep)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--k", type=int, default=4, help="replicas in the pool (4)")
    parser.add_argument("--sessions", type=int, default=300, help="sessions (300)")
    parser.add_argument("--load", type=float, default=0.8, help="start rate over k x capacity (0.8)")
    parser.add_argument("--cache", choices=("hashed", "ideal", "both"), default="both")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    cfg = replica()
    agent = next(c for c in default_session_classes() if c.name == "coding-agent")
    rng = np.random.default_rng(args.seed)
    unit = np.cumsum(rng.exponential(1.0, args.sessions))  # session starts at rate 1
    table = sample_sessions(
        (agent,), rng, unit, max_context_tokens=load_model(MODEL).max_context_tokens,
        class_id=np.zeros(args.sessions, np.int64),
    )
    req = table.requests
    print(
        f"coding-agent sessions: {table.n_sessions} sessions, {len(req):,} turns, mean prompt "
        f"{req.prompt_tokens.mean():,.0f} tokens, mean output {req.output_tokens.mean():,.0f}, "
        f"table's cached share {req.cached_tokens.sum() / req.prompt_tokens.sum():.3f}; replica "
        f"KV {cfg.kv.capacity_bytes / cfg.kv.bytes_per_token / 1e6:.2f} M tokens (full attention)"
    )
    start = time.perf_counter()
    cap = capacity(cfg, req, unit[table.session], SLO, links=(table.parent, table.gap_s))
    print(
        f"one replica's session capacity (every turn there, idealised cache): "
        f"{cap.rate_per_s:.4f} sessions/s, limited by {', '.join(cap.limited_by) or '-'} "
        f"({time.perf_counter() - start:.0f} s)"
    )
    rate = args.load * args.k * cap.rate_per_s
    pool = table.with_starts(unit / rate)
    print(
        f"pool: k={args.k} replicas, Poisson starts at {rate:.4f} sessions/s "
        f"({args.load:g} x k x capacity)"
    )
    caches = ("hashed", "ideal") if args.cache == "both" else (args.cache,)
    for cache in caches:
        start = time.perf_counter()
        gain = affinity_gain(cfg, pool, args.k, seed=args.seed, cache=cache)
        wall = time.perf_counter() - start
        print(f"cache={cache} ({wall:.0f} s for {len(gain.rows)} routers)")
        print(
            f"  {'router':<18} {'task p50 s':>10} {'task p99 s':>10} {'cached':>7} "
            f"{'TTFT p50 s':>10} {'TTFT p99 s':>10} {'prefill Mtok':>12} {'busy max/mean':>14} "
            f"{'evicted blocks':>14}"
        )
        for row in gain.rows:
            run = row.run
            busy = run.busy_s / run.end_s
            evicted = sum(r.stats.prefix_evicted_blocks for r in run.replicas)
            print(
                f"  {row.router:<18} {row.task_p50_s:>10.0f} {row.task_p99_s:>10.0f} "
                f"{row.cache_hit_share:>7.3f} {row.ttft_p50_s:>10.3f} {row.ttft_p99_s:>10.3f} "
                f"{row.prefill_tokens / 1e6:>12.1f} {busy.max():>6.2f}/{busy.mean():<7.2f} "
                f"{evicted:>14,}"
            )


if __name__ == "__main__":
    main()
