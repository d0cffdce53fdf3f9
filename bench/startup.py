"""Start-up cost of the CLI: `triton-ops --help` minus a bare `python -c pass`.

Target: < 0.35 s. Run: .venv/bin/python bench/startup.py [--runs N]
Each command runs N times (after one warm-up for the file cache); the medians are compared.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

TARGET_S = 0.35


def median_wall(cmd: list[str], runs: int) -> float:
    subprocess.run(cmd, capture_output=True, check=True)  # warm the page cache
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    bare = median_wall([sys.executable, "-c", "pass"], args.runs)
    cli = [sys.executable, "-c", "from triton_ops.cli.main import main; main()", "--help"]
    help_s = median_wall(cli, args.runs)
    validate_help = median_wall([*cli[:-1], "validate", "--help"], args.runs)
    extra = help_s - bare
    print(f"python -c pass:            {bare:.3f} s")
    print(f"triton-ops --help:         {help_s:.3f} s")
    print(f"triton-ops validate --help:{validate_help:.3f} s")
    print(f"start-up cost (--help - bare): {extra:.3f} s  (target < {TARGET_S} s) "
          f"{'OK' if extra < TARGET_S else 'OVER TARGET'}")
    return 0 if extra < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
