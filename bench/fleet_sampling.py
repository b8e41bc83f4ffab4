"""Sampled versus exact simulation of a 200-replica pool: p50/p99 TTFT and throughput.

  python bench/fleet_sampling.py [--replicas 200] [--k 20] [--duration 600] [--replica-router random]

One pool of H200 replicas (Llama-3.1-8B, FP8, TP1) at about 70% of its capacity serves a
chat-like mix (FACTS.md B.7 consumer chat: prompt lognormal median 1,000, sigma 1.0; output
median 130, sigma 0.9). Exact mode simulates every replica; sampled mode simulates k of them
with k/N of the traffic. Prints both, the sampled mode's 95% bootstrap intervals, and the
relative differences (the fleet issue asks for <= 3%).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from megawatt.fleet import simulate_pool
from megawatt.hardware import load_catalog
from megawatt.model import load_model
from megawatt.perf import Deployment
from megawatt.serving import ReplicaConfig, Slo, capacity
from megawatt.workload import Lognormal, Mix, Poisson, RequestClass

CHAT = Mix(
    (
        RequestClass(
            "chat",
            1.0,
            Lognormal(1000, 1.0, max_tokens=16_000),
            Lognormal(130, 0.9, max_tokens=4_000),
            source="FACTS.md B.7",
        ),
    )
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replicas", type=int, default=200)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--load", type=float, default=0.7)
    parser.add_argument("--replica-router", default="random")
    args = parser.parse_args()
    cat = load_catalog()
    system = cat.system("hgx-h200")
    dep = Deployment(
        model=load_model("llama-3.1-8b"),
        system=system,
        device=cat.device(system.device_id),
        tp=1,
        weight_dtype="fp8",
    )
    cfg = ReplicaConfig.of(dep)
    probe = CHAT.sample(np.random.default_rng(0), 4000, Poisson(1.0))
    cap = capacity(cfg, probe, np.asarray(probe.arrival_s), Slo(2.0, 0.1), rel_tol=0.03)
    rate = args.load * cap.rate_per_s * args.replicas
    print(
        f"replica capacity {cap.rate_per_s:.2f} req/s at p99 TTFT <= 2 s, TPOT <= 100 ms; "
        f"pool load {rate:,.0f} req/s ({args.load:.0%})"
    )
    runs = {}
    for mode in ("exact", "sampled"):
        start = time.perf_counter()
        runs[mode] = simulate_pool(
            "h200",
            cfg,
            args.replicas,
            CHAT,
            Poisson(rate),
            args.duration,
            mode=mode,
            k=args.k,
            replica_router=args.replica_router,
            seed=(1 if mode == "exact" else 2,),
        )
        run = runs[mode]
        print(
            f"{mode:>7}: {run.n_simulated} replicas, {run.n_requests:,} requests, "
            f"TTFT p50 {run.percentile('ttft_s', 50) * 1e3:.1f} ms, "
            f"p99 {run.percentile('ttft_s', 99) * 1e3:.1f} ms, "
            f"output {run.output_tokens_per_s:,.0f} tok/s ({time.perf_counter() - start:.1f} s)"
        )
    ex, sa = runs["exact"], runs["sampled"]
    for label, stat, q in (
        ("TTFT p50", "ttft_s", 50),
        ("TTFT p99", "ttft_s", 99),
        ("throughput", "throughput", 0),
    ):
        e = ex.output_tokens_per_s if stat == "throughput" else ex.percentile(stat, q)
        s = sa.output_tokens_per_s if stat == "throughput" else sa.percentile(stat, q)
        lo, hi = sa.interval(stat, q)
        print(
            f"{label:>10}: exact {e:.4g}, sampled {s:.4g} [{lo:.4g}, {hi:.4g}], "
            f"difference {abs(s - e) / e:.1%}, exact inside the interval: {lo <= e <= hi}"
        )


if __name__ == "__main__":
    main()
