"""Start-up cost of the CLI: `triton-ops --help` minus a bare `python -c pass`.

Target: < 0.35 s. Run: .venv/bin/python bench/startup.py [--runs N]
Each command runs N times (after one warm-up for the file cache). The fastest run of each is
compared (as `timeit` does: slower runs measure other processes on a shared machine, not this
code); medians are printed too.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

TARGET_S = 0.35


def wall_times(cmd: list[str], runs: int) -> tuple[float, float]:
    """(fastest, median) wall-clock seconds of `cmd` over `runs` runs."""
    subprocess.run(cmd, capture_output=True, check=True)  # warm the page cache
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    bare, bare_med = wall_times([sys.executable, "-c", "pass"], args.runs)
    cli = [sys.executable, "-c", "from triton_ops.cli.main import main; main()", "--help"]
    help_s, help_med = wall_times(cli, args.runs)
    sub, sub_med = wall_times([*cli[:-1], "validate", "--help"], args.runs)
    extra = help_s - bare
    print(f"{'':28}{'fastest':>9}{'median':>9}")
    print(f"{'python -c pass':28}{bare:9.3f}{bare_med:9.3f}")
    print(f"{'triton-ops --help':28}{help_s:9.3f}{help_med:9.3f}")
    print(f"{'triton-ops validate --help':28}{sub:9.3f}{sub_med:9.3f}")
    print(f"start-up cost (--help - bare): {extra:.3f} s (median {help_med - bare_med:.3f} s), "
          f"target < {TARGET_S} s: {'OK' if extra < TARGET_S else 'OVER TARGET'}")
    return 0 if extra < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
