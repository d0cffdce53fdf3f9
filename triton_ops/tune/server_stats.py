"""Server-side truth: Triton's statistics API and /metrics, turned into per-window numbers.

Pure functions over the JSON that `get_inference_statistics(..., as_json=True)` returns and
the Prometheus text of /metrics; the live runner fetches, these interpret.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

_PHASES = ("queue", "compute_input", "compute_infer", "compute_output")


@dataclass(frozen=True)
class Counters:
    """Cumulative counters of one model (all versions summed)."""

    inferences: int = 0
    executions: int = 0
    success: int = 0
    fail: int = 0
    phase_ns: dict[str, int] = field(default_factory=dict)
    phase_count: dict[str, int] = field(default_factory=dict)
    batch_ns: dict[int, int] = field(default_factory=dict)  # compute ns per batch size
    batch_count: dict[int, int] = field(default_factory=dict)  # executions per batch size


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def counters_from_json(stats: Mapping[str, Any], model: str) -> Counters:
    """Sum the counters of every version of `model` in a statistics response."""
    inferences = executions = success = fail = 0
    phase_ns = {p: 0 for p in _PHASES}
    phase_count = {p: 0 for p in _PHASES}
    batch_ns: dict[int, int] = {}
    batch_count: dict[int, int] = {}
    for entry in stats.get("model_stats", []) or []:
        if entry.get("name") != model:
            continue
        inferences += _int(entry.get("inference_count"))
        executions += _int(entry.get("execution_count"))
        inf = entry.get("inference_stats", {}) or {}
        success += _int((inf.get("success") or {}).get("count"))
        fail += _int((inf.get("fail") or {}).get("count"))
        for p in _PHASES:
            phase_ns[p] += _int((inf.get(p) or {}).get("ns"))
            phase_count[p] += _int((inf.get(p) or {}).get("count"))
        for b in entry.get("batch_stats", []) or []:
            size = _int(b.get("batch_size"))
            ns = sum(_int((b.get(p) or {}).get("ns")) for p in _PHASES[1:])
            count = _int((b.get("compute_infer") or {}).get("count"))
            batch_ns[size] = batch_ns.get(size, 0) + ns
            batch_count[size] = batch_count.get(size, 0) + count
    return Counters(inferences, executions, success, fail, phase_ns, phase_count,
                    batch_ns, batch_count)


@dataclass(frozen=True)
class ServerWindow:
    """What the server did between two snapshots: per-request phase times (µs), batches."""

    inferences: int
    executions: int
    failures: int
    queue_us: float
    compute_input_us: float
    compute_infer_us: float
    compute_output_us: float
    avg_batch: float
    batch_executions: dict[int, int]
    batch_compute_us: dict[int, float]  # mean compute time of one execution of that size

    def to_row(self) -> dict[str, object]:
        row = asdict(self)
        row["batch_executions"] = ";".join(
            f"{k}:{v}" for k, v in sorted(self.batch_executions.items()))
        row["batch_compute_us"] = ";".join(
            f"{k}:{v:.1f}" for k, v in sorted(self.batch_compute_us.items()))
        return row


def diff(before: Counters, after: Counters) -> ServerWindow:
    """The window between two cumulative snapshots."""
    def per(p: str) -> float:
        count = after.phase_count.get(p, 0) - before.phase_count.get(p, 0)
        ns = after.phase_ns.get(p, 0) - before.phase_ns.get(p, 0)
        return ns / count / 1000 if count > 0 else 0.0

    inferences = after.inferences - before.inferences
    executions = after.executions - before.executions
    batch_exec: dict[int, int] = {}
    batch_us: dict[int, float] = {}
    for size, count in after.batch_count.items():
        n = count - before.batch_count.get(size, 0)
        if n > 0:
            batch_exec[size] = n
            batch_us[size] = (after.batch_ns[size] - before.batch_ns.get(size, 0)) / n / 1000
    return ServerWindow(
        inferences=inferences,
        executions=executions,
        failures=after.fail - before.fail,
        queue_us=per("queue"),
        compute_input_us=per("compute_input"),
        compute_infer_us=per("compute_infer"),
        compute_output_us=per("compute_output"),
        avg_batch=inferences / executions if executions > 0 else 0.0,
        batch_executions=batch_exec,
        batch_compute_us=batch_us,
    )


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def gpu_metrics(text: str) -> dict[str, float]:
    """GPU utilisation (0..1, mean over GPUs) and memory used (bytes, summed) from /metrics.

    Empty on CPU-only servers: Triton exports no nv_gpu_* series there.
    """
    util: list[float] = []
    used = 0.0
    seen_mem = False
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        name, value = m.group(1), m.group(3)
        try:
            v = float(value)
        except ValueError:
            continue
        if name == "nv_gpu_utilization":
            util.append(v)
        elif name == "nv_gpu_memory_used_bytes":
            used += v
            seen_mem = True
    out: dict[str, float] = {}
    if util:
        out["gpu_utilization"] = sum(util) / len(util)
    if seen_mem:
        out["gpu_memory_used_bytes"] = used
    return out
