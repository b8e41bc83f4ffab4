"""How long `megawatt validate` takes on the packaged measurements (102 rows): the issue asks for
under 2 minutes on a 2-core machine.

  python bench/validate_speed.py              # 2 worker processes, like a 2-core machine
  python bench/validate_speed.py --workers 1
"""

from __future__ import annotations

import argparse
import time

from megawatt.validate import load_measurements, validate

LIMIT_S = 120.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    rows = load_measurements()
    start = time.perf_counter()
    result = validate(rows, workers=args.workers)
    wall = time.perf_counter() - start
    s = result.summary()
    gpu = s["gpu_output_tokens_per_s"]
    print(
        f"rows={s['n_rows']} predicted={s['n_predicted']} workers={args.workers} "
        f"mape={s['mape']:.3f} gpu_output_tokens_per_s_mape={gpu['mape']:.3f}"
    )
    verdict = "within" if wall < LIMIT_S else "OVER"
    print(f"wall_s={wall:.1f} ({verdict} the {LIMIT_S:.0f} s budget)")


if __name__ == "__main__":
    main()
