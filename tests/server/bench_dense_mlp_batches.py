"""Measure dense_mlp's cost per execution by batch size through the real embedded Triton.

Not a test (timings are not asserted): run it to see the batching knee that `tune` relies on.

    .venv/bin/python tests/server/bench_dense_mlp_batches.py [--requests 200]

One request at a time with batch B, so every execution has exactly B items (sizes taken in
turn, 10 requests at a time); the numbers are
Triton's own per-batch-size statistics (compute_infer = the model's execute()), averaged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from triton_ops.server.local import LocalTriton

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per batch size")
    parser.add_argument("--sizes", default="1,2,4,8,16,32,64")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rng = np.random.default_rng(0)
    with LocalTriton(ROOT / "model_repository", models=["dense_mlp"]) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        tensors = {}
        for size in sizes:
            tensors[size] = grpcclient.InferInput("FEATURES", [size, 32], "FP32")
            tensors[size].set_data_from_numpy(rng.standard_normal((size, 32), dtype=np.float32))
        # Round-robin over the sizes in small groups, so that load from other processes on a
        # shared machine spreads over every size instead of skewing one.
        group = 10
        for _ in range(max(1, args.requests // group)):
            for size in sizes:
                for _ in range(group):
                    client.infer("dense_mlp", [tensors[size]], client_timeout=30)
        stats = client.get_inference_statistics("dense_mlp", as_json=True)
        client.close()
    batch_stats = {int(b["batch_size"]): b for b in stats["model_stats"][0]["batch_stats"]}
    executions = max(1, args.requests // group) * group
    print(f"dense_mlp, {executions} executions per batch size (Triton batch statistics)")
    header = ("batch", "infer ms/exec", "total ms/exec", "us/item", "vs batch 1")
    print(f"{header[0]:>5} {header[1]:>14} {header[2]:>14} {header[3]:>9} {header[4]:>10}")
    base = None
    for size in sizes:
        b = batch_stats[size]
        count = int(b["compute_infer"]["count"])
        infer = int(b["compute_infer"]["ns"]) / count / 1e6
        total = sum(int(b[k]["ns"]) for k in ("compute_input", "compute_infer",
                                              "compute_output")) / count / 1e6
        per_item = total / size * 1000
        base = base or per_item
        print(f"{size:>5} {infer:>14.3f} {total:>14.3f} {per_item:>9.1f} {per_item / base:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
