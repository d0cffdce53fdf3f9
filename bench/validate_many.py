"""`triton-ops validate` over 1,000 envelopes and their generated model folders.

Target: < 2 s for the whole command (process start included).
Run: .venv/bin/python bench/validate_many.py [--count N] [--repeat R]
The envelopes (with SLO, memory, hardware and image sections, so every rule runs) and the
model repository are generated in a temp dir with `triton-ops generate`; then
`triton-ops validate` is timed (fastest and median of R runs, wall clock and CPU) on:
  - the envelopes alone (no model repository: schema and envelope rules),
  - the envelopes compared with their model folders (drift, versions, model files),
  - envelopes + repository (adds Triton's load-time rules and the layout of every folder).
The target applies to the fastest run of the first (as `timeit` does: slower runs measure
other processes on a shared machine); the others show where time goes.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 2.0
CLI = [sys.executable, "-c", "from triton_ops.cli.main import main; main()"]

ENVELOPE = """\
name: model_{i:04d}
backend: python
versions: [1]
inputs:
  - {{name: TEXT, data_type: INT64, dims: [-1], max_dims: [128]}}
  - {{name: MASK, data_type: INT64, dims: [-1], max_dims: [128], optional: true}}
outputs:
  - {{name: PROBS, data_type: FP32, dims: [{classes}]}}
batching:
  max_batch_size: 32
  dynamic:
    preferred_batch_sizes: [8, 16]
    max_queue_delay: {delay}us
instances:
  - {{kind: GPU, count: 2}}
resources:
  gpu_memory: {{weights: 1GiB, activation_per_item: 16MiB, workspace: 256MiB, headroom: 0.1}}
hardware:
  gpu_models: [T4, A10G]
slo:
  p99_latency: 50ms
runtime:
  image: nvcr.io/nvidia/tritonserver@sha256:{digest}
parameters:
  tokenizer: bert-base-uncased
"""


def run(args: list[str], cwd: Path) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """(wall seconds, CPU seconds of the child, process)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        envelopes = root / "envelopes"
        envelopes.mkdir()
        for i in range(args.count):
            text = ENVELOPE.format(i=i, classes=2 + i % 7, delay=100 + i % 900,
                                   digest=f"{i:064x}")
            (envelopes / f"model_{i:04d}.yaml").write_text(text)
        # Envelopes alone first: no model_repository/ exists yet.
        cases = [("envelopes only", ["envelopes"])]
        results = {}
        for label, paths in cases:
            results[label] = measure(label, paths, root, args)
        for i in range(args.count):
            version = root / "model_repository" / f"model_{i:04d}" / "1"
            version.mkdir(parents=True)
            (version / "model.py").write_text("# stand-in model\n")
        wall, _cpu, proc = run(["generate"], root)
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-2000:])
            return 1
        print(f"generate {args.count} configs: {wall:.2f} s")
        for label, paths in (("envelopes vs their model folders",
                              ["envelopes", "--repo", "model_repository"]),
                             ("envelopes + repository", [])):
            results[label] = measure(label, paths, root, args)
    if any(r is None for r in results.values()):
        return 1
    headline = results["envelopes only"] or 0.0
    print(f"validate {args.count} envelopes: {headline:.2f} s (fastest run; target < {TARGET_S} s) "
          f"{'OK' if headline < TARGET_S else 'OVER TARGET'}")
    return 0 if headline < TARGET_S else 1


def measure(label: str, paths: list[str], root: Path, args: argparse.Namespace
            ) -> float | None:
    run(["validate", *paths, "--format", "json"], root)  # warm the page cache
    walls, cpus = [], []
    for _ in range(args.repeat):
        wall, cpu, proc = run(["validate", *paths, "--format", "json"], root)
        if proc.returncode != 0:
            print(f"{label}: validate failed\n", proc.stdout[-3000:], proc.stderr[-2000:])
            return None
        walls.append(wall)
        cpus.append(cpu)
    fastest = min(walls)
    print(f"validate {args.count} envelopes, {label}: fastest {fastest:.2f} s, median "
          f"{statistics.median(walls):.2f} s wall; median {statistics.median(cpus):.2f} s CPU")
    return fastest


if __name__ == "__main__":
    sys.exit(main())
