"""The accelerator-like example model on the real embedded Triton: its answer, its cost curve,
its one simulated device, and a short tune run on it."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from triton_ops.envelope.loader import require_envelope
from triton_ops.modelconfig.render import render_config_text
from triton_ops.server.probe import run_probe
from triton_ops.tune.control import ModelControl

REPO_ROOT = Path(__file__).resolve().parents[2]
ENVELOPE = REPO_ROOT / "envelopes" / "accel_sim.yaml"

pytestmark = pytest.mark.slow


def with_parameters(repo: Path, tmp_path: Path, **parameters: str) -> Path:
    """accel_sim's envelope with other parameters, rendered into the repository copy."""
    data = yaml.safe_load(ENVELOPE.read_text())
    data["parameters"].update(parameters)
    path = tmp_path / "accel_sim.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    (repo / "accel_sim" / "config.pbtxt").write_text(
        render_config_text(require_envelope(path), path.name))
    return path


def infer(url: str, rows: np.ndarray) -> np.ndarray:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    tensor = grpcclient.InferInput("INPUT", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    out = client.infer("accel_sim", [tensor], client_timeout=30).as_numpy("OUTPUT")
    client.close()
    return out


def test_answers_the_golden_probe_and_keeps_rows_apart(  # type: ignore[no-untyped-def]
        start_triton, model_repository_copy: Path) -> None:
    server = start_triton(model_repository_copy, models=["accel_sim"])
    result = run_probe(require_envelope(ENVELOPE), server.grpc_url)
    assert result.ok, result.error
    rows = np.random.default_rng(3).uniform(-5, 5, size=(6, 8)).astype(np.float32)
    out = infer(server.grpc_url, rows)
    np.testing.assert_allclose(out, 2 * rows + 1, rtol=1e-6)
    np.testing.assert_allclose(infer(server.grpc_url, rows[2:3])[0], out[2], rtol=1e-6)


def test_an_execution_costs_fixed_plus_per_item(  # type: ignore[no-untyped-def]
        start_triton, model_repository_copy: Path, tmp_path: Path) -> None:
    with_parameters(model_repository_copy, tmp_path, fixed_us="30000", per_item_us="5000")
    server = start_triton(model_repository_copy, models=["accel_sim"])
    control = ModelControl(server.grpc_url, "accel_sim")
    try:
        for batch in (1, 8):
            before = control.counters()
            for _ in range(3):
                infer(server.grpc_url, np.ones((batch, 8), np.float32))
            after = control.counters()
            per_execution_us = (after.batch_ns[batch] - before.batch_ns.get(batch, 0)) / 3 / 1000
            expected = 30_000 + 5_000 * batch
            # a sleep never ends early; on a busy machine it may end a few ms late
            assert expected <= per_execution_us < expected + 15_000, (batch, per_execution_us)
    finally:
        control.close()


def test_instances_take_turns_on_one_device(  # type: ignore[no-untyped-def]
        start_triton, model_repository_copy: Path, tmp_path: Path) -> None:
    path = with_parameters(model_repository_copy, tmp_path, fixed_us="300000", per_item_us="0")
    data = yaml.safe_load(path.read_text())
    data["instances"][0]["count"] = 2
    data["batching"] = {"max_batch_size": 1}  # two requests, two executions: never one batch
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    (model_repository_copy / "accel_sim" / "config.pbtxt").write_text(
        render_config_text(require_envelope(path), path.name))
    server = start_triton(model_repository_copy, models=["accel_sim"])
    infer(server.grpc_url, np.ones((1, 8), np.float32))  # both stubs up and warm
    done: list[float] = []
    start = time.monotonic()
    threads = [threading.Thread(target=lambda: (infer(server.grpc_url,
                                                      np.ones((1, 8), np.float32)),
                                                done.append(time.monotonic() - start)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    # Two instances, one device: the second execution waits for the first (about 0.3 s
    # each), where two devices would answer both after about 0.3 s.
    assert len(done) == 2 and max(done) >= 0.59 and min(done) < 0.5, done


def test_tune_on_accel_sim_end_to_end_with_the_overload_stage(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "triton_ops.cli.main", "tune", "accel_sim",
         "--envelope", str(ENVELOPE), "--repository", str(REPO_ROOT / "model_repository"),
         "--budget", "120s", "--max-batch-sizes", "4,16", "--delays", "0,10ms",
         "--instances", "1", "--out", str(out), "--format", "json"],
        capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode in (0, 1), proc.stderr
    best = json.loads(proc.stdout)
    assert best["elapsed_s"] <= 120 + 15
    assert best["baseline"]["config"]["max_batch_size"] == 32
    assert best["candidates"] and all("predicted_goodput" in c for c in best["candidates"])
    if best["confirmed"] is True:
        assert best["goodput"] > 0 and best["remeasured"]["p99_us"] <= best["slo_p99_us"]
    elif best["confirmed"] is False:
        assert best["goodput"] is None and proc.returncode == 1
    report = (out / "report.html").read_text()
    assert report.index('class="summary"') < report.index("<h2>Candidates")
    stage = best["overload_stage"]
    assert stage["budget_share"] == 0.3 and "overload stage:" in proc.stderr
    if not best["slo_met"]:
        assert best["overload"] is None and stage["not_run"]
        return
    # the envelope's slo.target_throughput (500 req/s) against the measured goodput
    plan = best["capacity"]
    overload = best["overload"]
    helps_elsewhere = overload["config_reason"] and overload["chosen"]["helps"]
    assert plan["target_rps"] == 500 and plan["goodput_rps"] == (
        overload["config_goodput_rps"] if helps_elsewhere else best["goodput"])
    assert plan["replicas"] == plan["needed"] + 1
    # the loads are multiples of the goodput of the config measured
    assert overload["goodput_rps"] == (overload["config_goodput_rps"]
                                       if overload["config_reason"] else best["goodput"])
    # the chosen config, or a measured one whose full batch leaves room (and says why)
    assert overload["config"] == best["chosen"] or overload["config_reason"]
    assert overload["config"] in [c["config"] for c in best["candidates"]] + [best["chosen"]]
    reference = overload["policies"][0]
    assert reference["policy"]["label"] == "no policy" and reference["status"] == "measured"
    assert [f["level"] for f in reference["levels"]] == [0.8, 2.0, 3.0]
    measured = [p for p in overload["policies"] if p["status"] != "not measured"]
    assert len(measured) >= 2
    for policy in measured:
        for f in policy["levels"]:
            assert f["requests"] > 0 and f["errors"] == 0
            assert f["answered"] + f["rejected"] + f["client_timeouts"] == f["requests"]
            assert f["p99_answered"]["n"] == f["answered"]
    assert reference["levels"][0]["rejected"] == 0
    assert overload["chosen"] is not None or overload["notes"]
    assert "Past the knee" in report and "Within-SLO answers vs offered load" in report
