"""A 750 MW fleet serving one simulated hour of ChatGPT's average traffic.

  python bench/fleet_scale.py [--mode sampled|exact] [--option NAME] [--model ID] [--rate 28900]
                              [--hours 1] [--k 8]

Takes an option of the default scenario (default: the CS-3 + GB200 mix), gives each pool the
smallest plan that holds the model and its longest request, sizes the pools from the budget,
splits ChatGPT's ~28,900 prompts/s (FACTS.md C.1) over the pools in proportion to their
capacity at the SLO, and simulates the hour (every request followed to completion): k replicas
per pool in sampled mode (the default), every replica in exact mode (~100 M requests, streamed
into latency histograms: memory bounded by the replicas, not the requests). Progress goes to
stderr. Last line: `wall_s=<number> peak_rss_mb=<number> requests=<number>`, where requests is
the fleet's requests in the hour (in sampled mode the simulated replicas stand for the rest).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np

from megawatt.fleet import PoolRun, PowerBudget, simulate_pool, size_pool
from megawatt.model import load_model
from megawatt.plan import PoolSettings, candidates
from megawatt.scenario import load_scenario
from megawatt.serving import ReplicaConfig, Slo, capacity
from megawatt.study import traffic_mix
from megawatt.units import MW
from megawatt.workload import Poisson


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--option", default="Mix (25% CS-3, 75% GB200)")
    parser.add_argument("--model", default="gpt-oss-120b")
    parser.add_argument("--rate", type=float, default=28_900.0, help="fleet prompts per second")
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--k", type=int, default=8, help="replicas simulated per pool")
    parser.add_argument("--replica-router", default="random")
    parser.add_argument("--mode", choices=("sampled", "exact"), default="sampled")
    args = parser.parse_args()
    start = time.perf_counter()

    sc = load_scenario()
    option = next(o for o in sc.options if o.name == args.option)
    catalog = sc.catalog()
    model = load_model(args.model)
    mix = traffic_mix(sc, model)
    slo = Slo(sc.slo.ttft_p99_s, sc.slo.tpot_p99_s)
    it_w = PowerBudget(sc.budget.facility_mw * MW, sc.budget.pue).it_w
    rng = np.random.default_rng([sc.seed, 1])
    probe = mix.sample(rng, 400, Poisson(1.0))
    longest = int((probe.prompt_tokens + probe.output_tokens).max())

    pools = []
    for pool in option.pools:
        system = catalog.system(pool.system)
        device = catalog.device(system.device_id)
        dep = candidates(model, system, device, PoolSettings(engine=pool.engine), longest)[0]
        cfg = ReplicaConfig.of(dep)
        cap = capacity(cfg, probe, np.asarray(probe.arrival_s), slo, rel_tol=0.1)
        size = size_pool(it_w * pool.power_share, system, dep.n_devices, field=pool.system)
        pools.append((pool, system, dep, cfg, cap.rate_per_s * size.n_replicas, size))
    total_cap = sum(p[4] for p in pools)
    print(
        f"{option.name}, {model.id}: fleet capacity at the SLO {total_cap:,.0f} requests/s, "
        f"demand {args.rate:,.0f} prompts/s"
    )

    duration_s = args.hours * 3600.0
    represented = 0.0
    simulated = 0
    facility_w = 0.0
    ticks = {"done": 0, "last": time.perf_counter(), "start": time.perf_counter()}

    def progress(n: int) -> None:
        ticks["done"] += n
        now = time.perf_counter()
        if now - ticks["last"] >= 10.0:
            ticks["last"] = now
            rate = ticks["done"] / (now - ticks["start"])
            print(f"  simulated {ticks['done']:,} requests ({rate:,.0f}/s)", file=sys.stderr, flush=True)

    for j, (pool, system, dep, cfg, cap_rate, size) in enumerate(pools):
        rate = args.rate * cap_rate / total_cap
        run = simulate_pool(
            pool.system,
            cfg,
            size.n_replicas,
            mix,
            Poisson(rate),
            duration_s,
            mode=args.mode,
            k=args.k,
            replica_router=args.replica_router,
            seed=(sc.seed, j),
            progress=progress,
        )
        represented += run.n_requests * run.scale
        simulated += run.n_requests
        busy = run.busy_fraction
        power = size.n_systems * (system.idle_power_w + (system.power_w - system.idle_power_w) * busy)
        facility_w += power * sc.budget.pue
        t50, t99 = run.percentile("ttft_s", 50), run.percentile("ttft_s", 99)
        ttft_ci = tput_ci = ""
        if isinstance(run, PoolRun):  # sampled: bootstrap intervals across the replicas
            lo, hi = run.interval("ttft_s", 99)
            tlo, thi = run.interval("throughput")
            ttft_ci, tput_ci = f" [{lo:.3f}, {hi:.3f}]", f" [{tlo / 1e6:.2f}, {thi / 1e6:.2f}]"
        print(
            f"  {pool.system}: {dep.label}; {size.n_replicas:,} replicas ({run.n_simulated:,} simulated, "
            f"{run.n_requests:,} requests), {rate:,.0f} req/s, TTFT p50 {t50:.3f} s p99 {t99:.3f} s"
            f"{ttft_ci}, TPOT p50 {run.percentile('tpot_s', 50) * 1e3:.1f} ms, "
            f"output {run.output_tokens_per_s / 1e6:.2f}M tok/s{tput_ci}, "
            f"busy {busy:.1%}, {power / MW:.1f} MW IT"
        )
    print(
        f"facility power {facility_w / MW:.1f} MW; simulated {simulated:,} requests standing for "
        f"{represented:,.0f}"
    )
    wall = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"wall_s={wall:.1f} peak_rss_mb={rss_mb:.0f} requests={represented:.0f}")


if __name__ == "__main__":
    main()
