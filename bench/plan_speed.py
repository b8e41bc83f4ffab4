"""How long `megawatt plan` takes on the embedded default plan (3 years x 12 quarters x 6
suppliers x 5 classes), by phase: capacity runs (cold: simulated, or warm: from a cache folder),
the three MILP solves (HiGHS), the Monte Carlo draws and the tornado.

  python bench/plan_speed.py [--workers 2] [--cache DIR] [--draws N]

With `--cache DIR` a second run is warm. Last line:
`capacity_s=<number> milp_s=<number> max_solve_s=<number> risk_s=<number> wall_s=<number>`.
"""

from __future__ import annotations

import argparse
import time

from megawatt.deal import SimulatedCapacity, load_plan, run_plan
from megawatt.report.cache import DiskCache


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache", default=None, help="capacity cache folder (default: none, cold)")
    parser.add_argument("--draws", type=int, default=None)
    args = parser.parse_args()
    start = time.perf_counter()
    source = SimulatedCapacity(args.workers, DiskCache(args.cache) if args.cache else None)
    result = run_plan(load_plan(), capacity=source, workers=args.workers, draws=args.draws)
    wall = time.perf_counter() - start
    solves = {k: v for k, v in result.timings.items() if k.startswith("solve_")}
    for name, seconds in solves.items():
        print(f"{name.removeprefix('solve_').removesuffix('_s')}: {seconds:.2f} s")
    print(
        f"capacity_s={result.timings['capacity_s']:.1f} milp_s={sum(solves.values()):.2f} "
        f"max_solve_s={max(solves.values()):.2f} risk_s={result.timings['risk_s']:.1f} wall_s={wall:.1f}"
    )


if __name__ == "__main__":
    main()
