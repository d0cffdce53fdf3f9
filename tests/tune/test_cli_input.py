"""Bad input to `triton-ops tune` gets a message and exit 2, never a traceback; a run that fails
before anything was measured leaves no results folder behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ENVELOPE = str(REPO_ROOT / "envelopes" / "dense_mlp.yaml")


def tune(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "triton_ops.cli.main", "tune", "dense_mlp",
                           "--envelope", ENVELOPE, *args],
                          capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.mark.parametrize("args, message", [
    (["--max-batch-sizes", "0,-1"], "--max-batch-sizes: 0 is not a batch size; dense_mlp "
                                     "batches, so give sizes of 1 or more"),
    (["--max-batch-sizes", "4,-1"], "--max-batch-sizes: -1 is not a batch size"),
    (["--instances", "0"], "--instances: 0 is not an instance count; give 1 or more"),
    (["--instances", "1,-2"], "--instances: -2 is not an instance count"),
    (["--url", "127.0.0.1:99999", "--allow-reload"],
     "--url: server URL '127.0.0.1:99999': bad port '99999'"),
    (["--url", "127.0.0.1:0", "--allow-reload"], "--url: server URL '127.0.0.1:0': bad port '0'"),
    (["--budget", "600"], "--budget 600: add a unit: 600s"),
])
def test_bad_options_get_a_message_and_exit_2(tmp_path: Path, args: list[str],
                                              message: str) -> None:
    proc = tune(tmp_path, *args, "--out", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_run_that_fails_before_measuring_leaves_no_results_folder(tmp_path: Path) -> None:
    # Nothing listens on port 1: the run fails while connecting, before any measurement.
    out = tmp_path / "results" / "run"
    proc = tune(tmp_path, "--url", "127.0.0.1:1", "--allow-reload", "--out", str(out))
    assert proc.returncode == 1, proc.stderr
    assert "cannot reach the Triton server at 127.0.0.1:1" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not out.parent.exists()
    # A folder that was there before is left as it was (only what the run created goes).
    kept = tmp_path / "mine"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    proc = tune(tmp_path, "--url", "127.0.0.1:1", "--allow-reload", "--out", str(kept))
    assert proc.returncode == 1
    assert [p.name for p in kept.iterdir()] == ["notes.txt"]
