"""Rollouts against the real embedded Triton, with faulty canaries.

In every scenario a client on the stable path keeps sending requests during the whole
rollout and must see ZERO failures; the end state must be consistent (fully promoted or
fully rolled back); and the model must never be without a ready version.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from rollout_models import MODEL, envelope, make_repo

from triton_ops.repository.seal import publish
from triton_ops.rollout.analysis import policy_from_envelope
from triton_ops.rollout.engine import Engine, RolloutRefused
from triton_ops.rollout.single import SingleTritonTarget, store_for
from triton_ops.rollout.state import Phase, RolloutSpec
from triton_ops.rollout.traffic import envelope_requests
from triton_ops.server.local import LocalTriton, ServerError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

CLI = [sys.executable, "-m", "triton_ops.cli.main"]


class PathClient:
    """Sends a request every few ms (to `version`, or unversioned) and checks that the model
    has a ready version, until stopped; records every failure."""

    def __init__(self, grpc_url: str, version: str = "") -> None:
        self.grpc_url = grpc_url
        self.version = version
        self.sent = 0
        self.failures: list[str] = []
        self.not_ready = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import numpy as np
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(self.grpc_url)
        x = np.array([[1.0, -2.0, 3.0, 4.0]], dtype=np.float32)
        try:
            while not self._stop.is_set():
                tensor = grpcclient.InferInput("X", [1, 4], "FP32")
                tensor.set_data_from_numpy(x)
                self.sent += 1
                try:
                    result = client.infer(MODEL, [tensor], model_version=self.version,
                                          client_timeout=10)
                    y = result.as_numpy("Y")
                    if not np.allclose(y, x * 2):
                        self.failures.append(f"wrong answer {y.tolist()}")
                except Exception as exc:  # noqa: BLE001 - every failure counts
                    self.failures.append(str(exc)[:200])
                try:
                    if not client.is_model_ready(MODEL):
                        self.not_ready += 1
                except Exception:  # noqa: BLE001
                    self.not_ready += 1
                self._stop.wait(0.01)
        finally:
            client.close()

    def __enter__(self) -> PathClient:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def setup(tmp_path: Path, start_triton, canary: str, seal: bool = True):
    repo = make_repo(tmp_path, {1: "good", 2: canary})
    publish(repo / MODEL, 1)
    if seal:
        publish(repo / MODEL, 2)
    server = start_triton(repo, models=[MODEL])
    env = envelope()
    target = SingleTritonTarget(grpc_url=server.grpc_url, repository=repo, model=MODEL,
                                envelope=env, requests=envelope_requests(env, 16), rate=60,
                                concurrency=4, timeout_s=10)
    return repo, server, target


def spec(**kw) -> RolloutSpec:
    values = {"model": MODEL, "stable": [1], "canary": 2, "steps": [50, 100],
              "interval_s": 1.0, "failure_limit": 2, "shadow_samples": 10,
              "policy": policy_from_envelope(envelope(), min_requests=20, max_p99_ratio=3.0,
                                             p99_slack_us=30_000)}
    values.update(kw)
    return RolloutSpec(**values)


def why(reason: str, server: LocalTriton) -> str:
    """`reason`, and if the server is gone, how it ended and the end of its log."""
    try:
        server.check_alive(during="the rollout")
    except ServerError as exc:
        return f"{reason}\n{exc}"
    return reason


def ready_versions(target: SingleTritonTarget) -> list[int]:
    return [v for v in (1, 2) if target._ready(v)]


@pytest.mark.parametrize("behaviour, reason", [
    ("errors", "error-rate"),
    ("slow", "p99-latency"),
    ("wrong", "output-agreement"),
    ("dies", "in a row"),
    ("load-fails", "failed to load"),
])
def test_faulty_canary_rolls_back_and_stable_never_fails(tmp_path, start_triton,
                                                         behaviour, reason):
    repo, server, target = setup(tmp_path, start_triton, behaviour)
    try:
        with PathClient(server.grpc_url, version="1") as stable_path:
            state = Engine(target).start(spec())
        assert state.phase is Phase.ROLLED_BACK, why(state.reason, server)
        assert reason in state.reason
        assert stable_path.sent > 50
        assert stable_path.failures == []
        assert stable_path.not_ready == 0
        assert ready_versions(target) == [1]
        assert store_for(repo, MODEL).load().phase is Phase.ROLLED_BACK
        verdicts = [r.get("verdict") for r in target.store.read_audit()]
        if behaviour != "load-fails":
            assert "FAIL" in verdicts and "PASS" not in verdicts[-1:]
    finally:
        target.close()


def test_healthy_canary_is_promoted_without_a_gap(tmp_path, start_triton):
    repo, server, target = setup(tmp_path, start_triton, "good")
    try:
        with PathClient(server.grpc_url) as unversioned:
            state = Engine(target).start(spec(failure_limit=3))
        assert state.phase is Phase.SUCCEEDED, why(state.reason, server)
        assert unversioned.failures == [] and unversioned.not_ready == 0
        assert ready_versions(target) == [2]
        assert target.store.known_good() == [[1], [2]]
    finally:
        target.close()


def test_tampered_sealed_version_is_refused_before_load(tmp_path, start_triton):
    repo, server, target = setup(tmp_path, start_triton, "good")
    (repo / MODEL / "2" / "model.py").write_text("raise SystemExit('tampered')\n")
    try:
        with pytest.raises(RolloutRefused, match="model.py was modified"):
            Engine(target).start(spec())
        assert ready_versions(target) == [1]
        assert "scaler:2" not in server.log_path.read_text()  # never even tried to load it
        assert target.store.load() is None
    finally:
        target.close()


def cli(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, **kw)


def wait_for(predicate, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_killed_mid_rollout_then_resumed_from_another_shell(tmp_path, start_triton):
    repo, server, target = setup(tmp_path, start_triton, "good")
    target.close()
    store = store_for(repo, MODEL)
    common = ["--repo", str(repo)]
    with PathClient(server.grpc_url) as unversioned:
        driver = subprocess.Popen(
            [*CLI, "rollout", MODEL, "--canary", "2", "--url", server.grpc_url,
             "--steps", "50,100", "--interval", "2s", "--rate", "50",
             "--envelopes", str(tmp_path / "envelopes"), "--max-p99-ratio", "3",
             "--p99-slack", "30ms", "--failure-limit", "3", *common],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_for(lambda: any(r.get("event") == "canary-loaded"
                                 for r in store.read_audit()))
            time.sleep(0.7)  # in the middle of the first analysis window
        finally:
            os.kill(driver.pid, signal.SIGKILL)
            driver.communicate(timeout=30)
        persisted = store.load()
        assert persisted.phase is Phase.PROGRESSING
        status = cli("rollout", "status", MODEL, *common)
        assert "NOT DRIVEN" in status.stdout.replace("\n", " ")
        resumed = cli("rollout", "resume", MODEL, "--format", "json", *common)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert '"phase": "Succeeded"' in resumed.stdout
    assert unversioned.failures == [] and unversioned.not_ready == 0
    events = [r["event"] for r in store.read_audit()]
    assert "resumed" in events and events[-1] == "promoted"


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
        return True
    return False


def test_killed_on_the_embedded_server_resumes_only_where_the_versions_serve(
        tmp_path, start_triton):
    """The driver ran on an embedded Triton and was SIGKILLed: that server stopped with it.
    `resume` (and `promote`) without --url refuse with exit 2 and change nothing; with the
    --url of a server that lacks the canary too; with a server that serves both versions
    the rollout goes on and is promoted, with no failure of its own making."""
    repo = make_repo(tmp_path, {1: "good", 2: "good"})
    publish(repo / MODEL, 1)
    publish(repo / MODEL, 2)
    store = store_for(repo, MODEL)
    common = ["--repo", str(repo)]
    driver = subprocess.Popen(
        [*CLI, "rollout", MODEL, "--canary", "2", "--steps", "50,100", "--interval", "2s",
         "--rate", "50", "--envelopes", str(tmp_path / "envelopes"), "--max-p99-ratio", "3",
         "--p99-slack", "30ms", "--failure-limit", "3", *common],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: any(r.get("event") == "canary-loaded" for r in store.read_audit()),
                 timeout_s=150)
        time.sleep(0.7)  # in the middle of the first analysis window
    finally:
        os.kill(driver.pid, signal.SIGKILL)
        driver.communicate(timeout=30)
    started = next(r for r in store.read_audit() if r.get("event") == "started")
    embedded = re.search(r"Triton 127\.0\.0\.1:(\d+)", started["reason"])
    assert embedded, started["reason"]
    wait_for(lambda: not port_open(int(embedded.group(1))), timeout_s=60)  # its watchdog

    def files() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(store.directory.iterdir())}

    persisted = files()
    assert store.load().phase is Phase.PROGRESSING
    for action in ("resume", "promote"):
        refused = cli("rollout", action, MODEL, *common)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        message = " ".join(refused.stderr.split())
        assert "embedded Triton server, which stopped with the process that drove it" in message
        assert "--url HOST:PORT" in message and "versions [1, 2] of scaler" in message
        assert "Traceback" not in refused.stderr
        assert files() == persisted
    status = cli("rollout", "status", MODEL, *common)
    assert f"rollout resume {MODEL} --url HOST:PORT" in " ".join(status.stdout.split())

    server = start_triton(repo, models=[MODEL])  # serves version 1 only (its config)
    lacking = cli("rollout", "resume", MODEL, "--url", server.grpc_url, *common)
    assert lacking.returncode == 2, lacking.stdout + lacking.stderr
    assert "versions [2] of scaler are not ready" in " ".join(lacking.stderr.split())
    assert files() == persisted
    loader = SingleTritonTarget(grpc_url=server.grpc_url, repository=repo, model=MODEL,
                                envelope=envelope(), requests=envelope_requests(envelope(), 4))
    try:
        loader.load_canary([1], 2)  # now it serves both, as the embedded one did
    finally:
        loader.close()
    with PathClient(server.grpc_url) as unversioned:
        resumed = cli("rollout", "resume", MODEL, "--url", server.grpc_url, "--format", "json",
                      *common)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert json.loads(resumed.stdout)["phase"] == "Succeeded"
    assert unversioned.failures == [] and unversioned.not_ready == 0
    audit = store.read_audit()
    events = [r["event"] for r in audit]
    assert events.count("resumed") == 1 and events[-1] == "promoted"
    after = audit[events.index("resumed"):]
    assert [r["verdict"] for r in after if r["event"] == "window-analyzed"] == ["PASS", "PASS"]
    assert not any("not found" in str(r.get("reason")) for r in audit)


def test_abort_and_confirm_from_another_shell(tmp_path, start_triton):
    repo, server, target = setup(tmp_path, start_triton, "good")
    target.close()
    store = store_for(repo, MODEL)
    common = ["--repo", str(repo)]
    with PathClient(server.grpc_url, version="1") as stable_path:
        driver = subprocess.Popen(
            [*CLI, "rollout", MODEL, "--canary", "2", "--url", server.grpc_url,
             "--steps", "100", "--interval", "1s", "--rate", "50", "--confirm",
             "--envelopes", str(tmp_path / "envelopes"), "--max-p99-ratio", "3",
             "--p99-slack", "30ms", "--failure-limit", "3", "--format", "json", *common],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: (store.load() is not None
                              and store.load().phase is Phase.PAUSED), timeout_s=90)
            aborted = cli("rollout", "abort", MODEL, *common)
            assert aborted.returncode == 0, aborted.stderr
            out, err = driver.communicate(timeout=60)
        finally:
            if driver.poll() is None:
                driver.kill()
    assert driver.returncode == 1, out + err
    assert '"phase": "RolledBack"' in out
    assert "aborted by" in store.load().reason
    assert stable_path.failures == [] and stable_path.not_ready == 0
    target2 = SingleTritonTarget(grpc_url=server.grpc_url, repository=repo, model=MODEL,
                                 envelope=envelope(), requests=envelope_requests(envelope(), 4))
    try:
        assert ready_versions(target2) == [1]
    finally:
        target2.close()


def test_abort_does_not_wait_for_the_window_to_end(tmp_path, start_triton):
    repo, server, target = setup(tmp_path, start_triton, "good")
    target.close()
    store = store_for(repo, MODEL)
    driver = subprocess.Popen(
        [*CLI, "rollout", MODEL, "--canary", "2", "--url", server.grpc_url,
         "--steps", "50,100", "--interval", "10m", "--rate", "20",
         "--envelopes", str(tmp_path / "envelopes"), "--repo", str(repo)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: any(r.get("event") == "canary-loaded" for r in store.read_audit()))
        aborted = cli("rollout", "abort", MODEL, "--repo", str(repo))
        assert aborted.returncode == 0, aborted.stderr
        out, _ = driver.communicate(timeout=60)  # far less than the 10-minute window
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 1, out
    state = store.load()
    assert state.phase is Phase.ROLLED_BACK and "aborted by" in state.reason
