"""The whole tune loop against a real embedded Triton, with a short budget and small space."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from triton_ops.envelope.loader import require_envelope
from triton_ops.tune.run import TuneError, TuneOptions, tune

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_remote_server_needs_allow_reload(tmp_path: Path) -> None:
    env = require_envelope(REPO_ROOT / "envelopes" / "dense_mlp.yaml")
    options = TuneOptions(model="dense_mlp", envelope=env, repository=tmp_path,
                          url="10.0.0.1:8001", out_dir=tmp_path / "out")
    with pytest.raises(TuneError, match="--allow-reload"):
        tune(options)


def test_cli_rejects_bad_input(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "triton_ops.cli.main", "tune", *args],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)

    missing = run("nope")
    assert missing.returncode == 2 and "no envelope for model 'nope'" in missing.stderr
    assert "Traceback" not in missing.stderr
    bad_budget = run("dense_mlp", "--envelope", str(REPO_ROOT / "envelopes" / "dense_mlp.yaml"),
                     "--budget", "soon")
    assert bad_budget.returncode == 2 and "not a duration" in bad_budget.stderr
    no_state = run("dense_mlp", "--envelope", str(REPO_ROOT / "envelopes" / "dense_mlp.yaml"),
                   "--resume", str(tmp_path))
    assert no_state.returncode == 2 and "state.json" in no_state.stderr
    # --out on an earlier run's folder: refused before any server starts, the run kept
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "state.json").write_text('{"model": "dense_mlp", "profile": {}}')
    reused = run("dense_mlp", "--envelope", str(REPO_ROOT / "envelopes" / "dense_mlp.yaml"),
                 "--repository", str(REPO_ROOT / "model_repository"), "--out", str(earlier))
    assert reused.returncode != 0 and "already holds a tune run" in reused.stderr
    assert "--resume" in reused.stderr and "Traceback" not in reused.stderr
    assert (earlier / "state.json").read_text() == '{"model": "dense_mlp", "profile": {}}'


@pytest.mark.slow
def test_tune_dense_mlp_end_to_end(tmp_path: Path, start_triton,  # type: ignore[no-untyped-def]
                                   model_repository_copy: Path) -> None:
    import tritonclient.grpc as grpcclient

    repo = model_repository_copy
    server = start_triton(repo, models=["dense_mlp"])
    client = grpcclient.InferenceServerClient(server.grpc_url)
    original = client.get_model_config("dense_mlp", as_json=True)["config"]
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "triton_ops.cli.main", "tune", "dense_mlp",
         "--envelope", str(REPO_ROOT / "envelopes" / "dense_mlp.yaml"),
         "--repository", str(repo), "--url", server.grpc_url,
         "--metrics-url", server.metrics_url, "--allow-reload",
         "--budget", "75s", "--max-batch-sizes", "1,32", "--delays", "0,2ms",
         "--instances", "1", "--format", "json", "--out", str(out), "--no-overload"],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode in (0, 1), proc.stderr  # 1 = nothing met the SLO (noisy machine)
    best = json.loads(proc.stdout)
    assert best == json.loads((out / "best.json").read_text())
    assert best["model"] == "dense_mlp" and best["slo_p99_us"] == 50_000
    assert best["baseline"]["config"]["max_batch_size"] == 64
    assert best["elapsed_s"] <= 75 + 30  # the budget, plus restore and report
    if best["slo_met"]:
        assert proc.returncode == 0
        assert best["chosen"]["max_batch_size"] in (1, 32, 64)
        assert best["remeasured"]["p99_us"] <= best["slo_p99_us"]
        assert best["remeasured"]["p99_ci_low_us"] <= best["remeasured"]["p99_us"]
        assert best["goodput"] > 0
    table = pd.read_csv(out / "measurements.csv")
    assert len(table) > 0
    assert {"candidate", "rate", "p99_us", "verdict", "server_avg_batch",
            "server_queue_us"} <= set(table.columns)
    # the server runs on this machine: CPU stolen by the hypervisor is a share, per window
    steal = table["cpu_steal"].dropna()
    assert len(steal) and steal.between(0, 1).all()
    assert set(table["phase"]) >= {"baseline"}
    # The baseline's bisection starts no higher than half the closed-loop ceiling.
    ceiling = best["profile"]["ceiling_rps"]
    first = table[table["phase"] == "baseline"]["rate"].iloc[0]
    assert not ceiling or first <= ceiling / 2 + 1e-6
    report = (out / "report.html").read_text()
    assert "<svg" in report and "dense_mlp" in report
    state = json.loads((out / "state.json").read_text())
    assert "profile" in state and "baseline" in state
    # The server is left as it was found.
    assert client.get_model_config("dense_mlp", as_json=True)["config"] == original
    assert client.is_model_ready("dense_mlp")
    client.close()


@pytest.mark.slow
def test_ctrl_c_restores_config_and_resume_continues(  # type: ignore[no-untyped-def]
    tmp_path: Path, start_triton, model_repository_copy: Path
) -> None:
    import signal
    import time

    import tritonclient.grpc as grpcclient

    repo = model_repository_copy
    server = start_triton(repo, models=["dense_mlp"])
    client = grpcclient.InferenceServerClient(server.grpc_url)
    original = client.get_model_config("dense_mlp", as_json=True)["config"]
    out = tmp_path / "out"
    args = [sys.executable, "-m", "triton_ops.cli.main", "tune", "dense_mlp",
            "--envelope", str(REPO_ROOT / "envelopes" / "dense_mlp.yaml"),
            "--repository", str(repo), "--url", server.grpc_url, "--allow-reload",
            "--budget", "40s", "--max-batch-sizes", "1,32", "--delays", "0",
            "--instances", "1", "--format", "json", "--no-overload"]
    proc = subprocess.Popen([*args, "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    # Interrupt once the profile is saved (the run is then reloading and measuring).
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        state = out / "state.json"
        if state.exists() and "profile" in state.read_text():
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "--resume" in stderr
    assert "Traceback" not in stderr
    assert client.get_model_config("dense_mlp", as_json=True)["config"] == original
    # --resume reuses the saved profile instead of measuring it again.
    saved_profile = json.loads((out / "state.json").read_text())["profile"]
    resumed = subprocess.run([*args, "--resume", str(out)], capture_output=True, text=True,
                             timeout=240, cwd=tmp_path)
    assert resumed.returncode in (0, 1), resumed.stderr
    assert "Traceback" not in resumed.stderr
    state = json.loads((out / "state.json").read_text())
    assert state["profile"] == saved_profile and "finished" in state
    assert (out / "best.json").exists()
    assert client.get_model_config("dense_mlp", as_json=True)["config"] == original
    client.close()
