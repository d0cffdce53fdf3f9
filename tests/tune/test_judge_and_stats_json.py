"""Window verdicts, Triton statistics diffs and /metrics parsing on fixed data."""

from __future__ import annotations

import pytest

from triton_ops.tune.server_stats import counters_from_json, diff, gpu_metrics
from triton_ops.tune.stats import Verdict, judge_windows

SLO = 10_000.0


def judge(lat: list[list[float]], svc: list[list[float]] | None = None,
          late: list[list[float]] | None = None, **kw: object) -> Verdict:
    svc = svc if svc is not None else lat
    late = late if late is not None else [[0.0] * len(w) for w in lat]
    requests = sum(len(w) for w in lat)
    return judge_windows(lat, svc, late, requests=kw.pop("requests", requests),  # type: ignore[arg-type]
                         errors=kw.pop("errors", 0), slo_us=SLO,  # type: ignore[arg-type]
                         max_error_rate=0.01, **kw)  # type: ignore[arg-type]


def test_fast_server_passes_once_enough_samples() -> None:
    window = [1000.0 + i for i in range(400)]
    assert judge([window]) is Verdict.PASS
    assert judge([window[:100]]) is Verdict.UNSURE
    assert judge([window[:100]], last=True) is Verdict.PASS


def test_slow_server_fails_early() -> None:
    assert judge([[50_000.0] * 150]) is Verdict.FAIL


def test_errors_fail() -> None:
    assert judge([[1000.0] * 400], errors=40, requests=440) is Verdict.FAIL


def test_growing_queue_fails() -> None:
    windows = [[5000.0] * 400, [9000.0] * 400, [20_000.0] * 400]
    assert judge(windows) is Verdict.FAIL


def test_late_generator_is_reported_not_blamed_on_server() -> None:
    lat = [[30_000.0] * 400]  # counted from the schedule: over the SLO
    svc = [[2000.0] * 400]  # the server answered fast once requests went out
    late = [[28_000.0] * 400]
    assert judge(lat, svc, late) is Verdict.GENERATOR_LIMITED
    # Same lateness but the server itself is slow: a real failure.
    assert judge(lat, [[30_000.0] * 400], late) is Verdict.FAIL
    # Late sends that still meet the SLO do not matter.
    assert judge([[5000.0] * 400], [[2000.0] * 400], [[3000.0] * 400]) is Verdict.PASS


def _stats(inferences: int, executions: int, queue_ns: int, infer_ns: int,
           batches: dict[int, tuple[int, int]]) -> dict[str, object]:
    return {"model_stats": [
        {"name": "m", "version": "1", "inference_count": str(inferences),
         "execution_count": str(executions),
         "inference_stats": {
             "success": {"count": str(inferences), "ns": "0"},
             "fail": {"count": "1", "ns": "0"},
             "queue": {"count": str(inferences), "ns": str(queue_ns)},
             "compute_input": {"count": str(inferences), "ns": "0"},
             "compute_infer": {"count": str(inferences), "ns": str(infer_ns)},
             "compute_output": {"count": str(inferences), "ns": "0"},
         },
         "batch_stats": [
             {"batch_size": str(b), "compute_input": {"count": str(n), "ns": "0"},
              "compute_infer": {"count": str(n), "ns": str(ns)},
              "compute_output": {"count": str(n), "ns": "0"}}
             for b, (n, ns) in batches.items()]},
        {"name": "other", "inference_count": "999"},
    ]}


def test_statistics_diff_per_window() -> None:
    before = counters_from_json(_stats(100, 50, 1_000_000, 5_000_000, {1: (10, 10_000_000)}), "m")
    after = counters_from_json(
        _stats(300, 70, 3_000_000, 9_000_000, {1: (10, 10_000_000), 8: (20, 40_000_000)}), "m")
    w = diff(before, after)
    assert w.inferences == 200 and w.executions == 20
    assert w.avg_batch == pytest.approx(10.0)
    assert w.queue_us == pytest.approx(10.0)  # 2 ms over 200 requests
    assert w.compute_infer_us == pytest.approx(20.0)
    assert w.batch_executions == {8: 20}
    assert w.batch_compute_us == {8: pytest.approx(2000.0)}
    assert w.failures == 0
    row = w.to_row()
    assert row["batch_executions"] == "8:20"


def test_gpu_metrics_parse() -> None:
    text = """# HELP nv_gpu_utilization GPU utilization rate [0.0 - 1.0)
# TYPE nv_gpu_utilization gauge
nv_gpu_utilization{gpu_uuid="GPU-1"} 0.5
nv_gpu_utilization{gpu_uuid="GPU-2"} 0.25
nv_gpu_memory_used_bytes{gpu_uuid="GPU-1"} 1000
nv_gpu_memory_used_bytes{gpu_uuid="GPU-2"} 24
nv_inference_count{model="m",version="1"} 5
"""
    assert gpu_metrics(text) == {"gpu_utilization": 0.375, "gpu_memory_used_bytes": 1024.0}
    assert gpu_metrics("nv_inference_count{model=\"m\"} 5\n") == {}
