"""`triton-ops serve` as a user runs it: a foreground process, stopped by SIGTERM or Ctrl-C."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from triton_ops.envelope import require_envelope
from triton_ops.server import _watchdog
from triton_ops.server.probe import run_probe

SERVE = [sys.executable, "-m", "triton_ops.cli.main", "serve"]


def _lines(stream, out: queue.Queue) -> None:
    for line in stream:
        out.put(line)
    out.put(None)


def _read_until(lines: queue.Queue, marker: str, timeout: float) -> str:
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        seen += line
        if marker in line:
            return seen
    raise AssertionError(f"{marker!r} not printed within {timeout} s; output so far:\n{seen}")


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_serve_runs_until_signalled(triton_repo: Path, envelopes_dir: Path, tmp_path: Path,
                                    stop_signal: int) -> None:
    proc = subprocess.Popen(
        [*SERVE, "--repo", str(triton_repo), "--models", "dense_mlp,text_classifier",
         "--log-file", str(tmp_path / "server.log")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    try:
        banner = _read_until(lines, "Press Ctrl-C to stop.", 120)
        grpc = re.search(r"grpc:\s+(127\.0\.0\.1:\d+)", banner)
        pid = re.search(r"pid (\d+)", banner)
        assert grpc and pid, banner
        assert "models:  dense_mlp, text_classifier" in banner
        assert re.search(r"metrics: http://127\.0\.0\.1:\d+/metrics", banner)
        result = run_probe(require_envelope(envelopes_dir / "dense_mlp.yaml"), grpc.group(1))
        assert result.ok, result.summary()
        proc.send_signal(stop_signal)
        assert proc.wait(timeout=60) == 0
        assert "tritonserver stopped" in _read_until(lines, "tritonserver stopped", 10)
        assert _watchdog.group_members(int(pid.group(1))) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_serve_all_models_reports_the_ones_that_fail(triton_repo: Path, tmp_path: Path) -> None:
    """Without --models every model is tried; one that cannot load is named, the rest served."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dense_mlp", "text_classifier"):
        (repo / name).symlink_to(triton_repo / name, target_is_directory=True)
    broken = repo / "broken" / "1"
    broken.mkdir(parents=True)
    (repo / "broken" / "config.pbtxt").write_text(
        (triton_repo / "dense_mlp" / "config.pbtxt").read_text().replace("dense_mlp", "broken"))
    (broken / "model.py").write_text(
        "class TritonPythonModel:\n    def initialize(self, args):\n"
        "        raise RuntimeError('no weights for broken')\n")
    proc = subprocess.Popen([*SERVE, "--repo", str(repo)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    try:
        banner = _read_until(lines, "Press Ctrl-C to stop.", 120)
        assert "models:  dense_mlp, text_classifier" in banner
        assert "NOT LOADED broken" in banner and "no weights for broken" in banner
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_usage_errors(tmp_path: Path, triton_repo: Path) -> None:
    result = subprocess.run([*SERVE, "--repo", str(tmp_path / "nope")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "does not exist" in result.stderr
    result = subprocess.run([*SERVE, "--repo", str(triton_repo), "--models", "dense_mlp,nosuch"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "no model nosuch" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_serve_requested_model_that_fails_exits_1(tmp_path: Path, triton_repo: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "bad" / "1").mkdir(parents=True)
    (repo / "bad" / "config.pbtxt").write_text(
        (triton_repo / "dense_mlp" / "config.pbtxt").read_text().replace("dense_mlp", "bad"))
    (repo / "bad" / "1" / "model.py").write_text("raise ImportError('missing dependency xyz')\n")
    result = subprocess.run([*SERVE, "--repo", str(repo), "--models", "bad"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "missing dependency xyz" in result.stderr
    assert "Traceback (most recent call last)" not in result.stderr.split("Errors in the")[0]
