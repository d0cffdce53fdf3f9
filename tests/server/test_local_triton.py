"""LocalTriton against the real embedded tritonserver: start, stop, and how it fails."""

from __future__ import annotations

import glob
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from triton_ops.server import _watchdog
from triton_ops.server import local as local_module
from triton_ops.server.endpoints import TritonEndpoints, open_server, remote_endpoints
from triton_ops.server.local import LocalTriton, ServerError, TritonInstall, prepare_backend_dir

IDENTITY_CONFIG = """
name: "{name}"
backend: "python"
max_batch_size: 8
input [{{ name: "X" data_type: TYPE_FP32 dims: [4] }}]
output [{{ name: "Y" data_type: TYPE_FP32 dims: [4] }}]
instance_group [{{ kind: KIND_CPU count: 1 }}]
"""

DOUBLE_MODEL = """
import time
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        {init}

    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "X").as_numpy()
            {execute}
            y = pb_utils.Tensor("Y", (x * 2).astype(np.float32))
            out.append(pb_utils.InferenceResponse([y]))
        return out
"""


def add_model(repo: Path, name: str, init: str = "pass", execute: str = "pass") -> None:
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(IDENTITY_CONFIG.format(name=name))
    (repo / name / "1" / "model.py").write_text(
        textwrap.dedent(DOUBLE_MODEL).format(init=init, execute=execute)
    )


@pytest.fixture
def small_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    add_model(repo, "double")
    return repo


def double(server: LocalTriton, timeout: float = 30.0) -> np.ndarray:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput("X", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.arange(4, dtype=np.float32).reshape(1, 4))
    try:
        return client.infer("double", [tensor], client_timeout=timeout).as_numpy("Y")
    finally:
        client.close()


def group_alive(pgid: int) -> list[int]:
    return _watchdog.group_members(pgid)


def wait_group_gone(pgid: int, timeout: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return []
        time.sleep(0.1)
    return group_alive(pgid)


@pytest.mark.slow
def test_start_serves_and_stop_leaves_nothing(small_repo: Path, start_triton) -> None:
    server = start_triton(small_repo, models=["double"])
    np.testing.assert_array_equal(double(server), [[0, 2, 4, 6]])
    # every endpoint is on loopback and answers
    assert server.grpc_url.startswith("127.0.0.1:") and server.http_url.startswith("127.0.0.1:")
    with urllib.request.urlopen(f"http://{server.http_url}/v2/health/ready", timeout=5) as r:
        assert r.status == 200
    with urllib.request.urlopen(server.metrics_url, timeout=5) as r:
        assert 'nv_inference_request_success{model="double",version="1"} 1' in r.read().decode()
    pgid = server.pid
    assert pgid is not None
    members = group_alive(pgid)
    assert len(members) >= 2, "the server and its Python-backend stub share one process group"
    regions = _watchdog.shm_regions(members)
    assert regions, "the stub's shared-memory region is named on its command line"
    server.stop()
    assert not server.running
    assert wait_group_gone(pgid, 5) == []
    assert not [r for r in regions if os.path.exists(f"/dev/shm/{r}")]
    server.stop()  # idempotent


@pytest.mark.slow
def test_modules_at_the_repository_root_are_not_imported(small_repo: Path,
                                                         start_triton) -> None:
    """The stub puts its working folder first on sys.path: the server must not run in the
    repository, where anyone who can add a model could shadow numpy for every model."""
    (small_repo / "numpy.py").write_text("raise ImportError('planted at the root')\n")
    (small_repo / "triton_python_backend_utils.py").write_text("raise ImportError('planted')\n")
    server = start_triton(small_repo, models=["double"])
    np.testing.assert_array_equal(double(server), [[0, 2, 4, 6]])


@pytest.mark.slow
def test_model_failing_at_initialize_gives_its_error(tmp_path: Path, start_triton) -> None:
    repo = tmp_path / "repo"
    add_model(repo, "broken", init="raise RuntimeError('weights file w.bin is missing-42')")
    with pytest.raises(ServerError) as info:
        start_triton(repo, models=["broken"])
    message = str(info.value)
    assert "exited" in message and "during startup" in message
    assert "weights file w.bin is missing-42" in message  # the model's own error, from the log
    assert "broken" in message


@pytest.mark.slow
def test_unknown_model_and_bad_flag_fail_with_log(small_repo: Path, start_triton) -> None:
    with pytest.raises(ServerError, match="(?s)exited.*nope"):
        start_triton(small_repo, models=["nope"])
    with pytest.raises(ServerError, match="(?s)exited.*--no-such-flag"):
        start_triton(small_repo, extra_args=["--no-such-flag=1"])


@pytest.mark.slow
def test_startup_timeout_stops_the_server(tmp_path: Path, start_triton) -> None:
    repo = tmp_path / "repo"
    add_model(repo, "double", init="time.sleep(60)")
    server = LocalTriton(repo, models=["double"], startup_timeout_s=3, log_path=tmp_path / "l")
    started = time.monotonic()
    with pytest.raises(ServerError, match="did not become ready within 3 s"):
        server.start()
    assert time.monotonic() - started < 30
    assert not server.running


@pytest.mark.slow
def test_port_taken_explicitly_is_a_clear_error(small_repo: Path, start_triton) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ServerError, match=f"port {port} on 127.0.0.1 is already in use"):
            start_triton(small_repo, models=["double"], grpc_port=port)


@pytest.mark.slow
def test_port_taken_after_picking_is_retried(small_repo: Path, start_triton,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A free port can be taken between picking it and the server binding it."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        real = local_module.free_port
        picks = iter([taken])
        monkeypatch.setattr(local_module, "free_port", lambda: next(picks, None) or real())
        server = start_triton(small_repo, models=["double"])
        assert taken not in (server.grpc_port, server.http_port, server.metrics_port)
        np.testing.assert_array_equal(double(server), [[0, 2, 4, 6]])


def test_missing_stub_is_a_clear_error(tmp_path: Path) -> None:
    real = TritonInstall.discover()
    install = TritonInstall(real.binary, real.python_backend, tmp_path / "no-stubs", real.libs_dir)
    major, minor = sys.version_info[:2]
    with pytest.raises(ServerError, match=rf"no Python-backend stub for Python {major}\.{minor}"):
        prepare_backend_dir(install, tmp_path / "cache")
    with pytest.raises(ServerError, match="no Python-backend stub"):
        LocalTriton(tmp_path, install=install, cache_dir=tmp_path / "cache").start()


def test_backend_dir_is_cached_and_repaired(tmp_path: Path) -> None:
    install = TritonInstall.discover()
    first = prepare_backend_dir(install, tmp_path)
    stub = first / "python" / "triton_python_backend_stub"
    assert stub.is_file() and os.access(stub, os.X_OK)
    assert (first / "python" / "libtriton_python.so").is_file()
    assert prepare_backend_dir(install, tmp_path) == first
    stub.unlink()  # a damaged cache is rebuilt, not used
    assert prepare_backend_dir(install, tmp_path) == first and stub.is_file()


def test_missing_repository_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="does not exist"):
        LocalTriton(tmp_path / "absent").start()


@pytest.mark.slow
def test_server_killed_mid_request(tmp_path: Path, start_triton) -> None:
    repo = tmp_path / "repo"
    add_model(repo, "double", execute="time.sleep(20)")
    server = start_triton(repo, models=["double"])
    outcome: dict[str, object] = {}

    def request() -> None:
        started = time.monotonic()
        try:
            double(server, timeout=60)
            outcome["result"] = "answered"
        except InferenceServerException as exc:
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=request)
    thread.start()
    time.sleep(1.5)  # the request is inside execute()
    assert server.pid is not None
    os.killpg(server.pid, signal.SIGKILL)
    thread.join(timeout=30)
    assert not thread.is_alive(), "the client hung after the server died"
    assert "error" in outcome, outcome
    assert float(outcome["seconds"]) < 15  # type: ignore[arg-type]
    assert "unavailable" in str(outcome["error"]).lower() or "connect" in str(outcome["error"])
    # The kernel may still be tearing the process down when the client sees the connection
    # drop: give it a few seconds to become reapable.
    deadline = time.monotonic() + 10
    with pytest.raises(ServerError, match="killed by signal 9"):
        while time.monotonic() < deadline:
            server.check_alive()
            time.sleep(0.1)


CHILD = """
import sys, threading, time
from triton_ops.server.local import LocalTriton
server = LocalTriton(sys.argv[1], models=["double"], log_path=sys.argv[2])
if sys.argv[3] == "thread":  # the kernel's parent-death signal does not apply: the watchdog must
    t = threading.Thread(target=server.start); t.start(); t.join()
else:
    server.start()
print(server.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.slow
@pytest.mark.parametrize("start_in", ["main", "thread"])
def test_no_orphans_when_the_caller_is_killed(small_repo: Path, tmp_path: Path,
                                              start_in: str) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = subprocess.Popen(
        [sys.executable, str(script), str(small_repo), str(tmp_path / "log"), start_in],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        line = child.stdout.readline() if child.stdout else ""
        assert line.strip().isdigit(), (tmp_path / "log").read_text()[-2000:]
        pgid = int(line)
        members = group_alive(pgid)
        regions = _watchdog.shm_regions(members)
        assert len(members) >= 2 and regions
        child.kill()
        child.wait(timeout=10)
        assert wait_group_gone(pgid, 20) == [], "server or stub outlived its killed caller"
        leaked = [r for r in regions if glob.glob(f"/dev/shm/{r}")]
        assert leaked == []
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


@pytest.mark.slow
def test_open_server_embedded_and_remote(small_repo: Path) -> None:
    with open_server(None, small_repo, ["double"]) as endpoints:
        assert endpoints.embedded and endpoints.local is not None
        assert endpoints.metrics_url and endpoints.metrics_url.endswith("/metrics")
        remote = remote_endpoints(endpoints.grpc_url, http_url=endpoints.http_url)
        with open_server(endpoints.grpc_url, "unused", [], http_url=endpoints.http_url) as again:
            assert again == remote and not again.embedded
            np.testing.assert_array_equal(double(endpoints.local), [[0, 2, 4, 6]])
        pgid = endpoints.local.pid
        log_dir = endpoints.local.log_path.parent
        assert log_dir.is_dir()
    assert pgid is not None and wait_group_gone(pgid, 5) == []
    assert not log_dir.exists(), "a cleanly stopped embedded server leaves no temp log behind"


@pytest.mark.parametrize(("url", "grpc", "http", "metrics"), [
    ("triton:9001", "triton:9001", "triton:8000", "http://triton:8002/metrics"),
    ("grpc://10.0.0.5", "10.0.0.5:8001", "10.0.0.5:8000", "http://10.0.0.5:8002/metrics"),
    ("[::1]:7001", "[::1]:7001", "[::1]:8000", "http://[::1]:8002/metrics"),
])
def test_remote_endpoints(url: str, grpc: str, http: str, metrics: str) -> None:
    assert remote_endpoints(url) == TritonEndpoints(grpc, http, metrics, embedded=False)


def test_remote_endpoints_overrides_and_errors() -> None:
    got = remote_endpoints("h:1", http_url="http://h:2", metrics_url="h:3")
    assert (got.http_url, got.metrics_url) == ("h:2", "http://h:3/metrics")
    with pytest.raises(ValueError, match="bad port"):
        remote_endpoints("h:99999")
    with pytest.raises(ValueError, match="empty"):
        remote_endpoints(" ")


@pytest.mark.parametrize(("url", "why"), [
    ("127.0.0.1:99999", "bad port '99999'"),
    ("127.0.0.1:0", "bad port '0'"),  # was taken for the default port 8001
    ("127.0.0.1:-1", "bad port '-1'"),
    ("127.0.0.1:abc", "bad port 'abc'"),
    ("[::1]:8001x", "bad port '8001x'"),
    ("127.0.0.1:", "no port after ':'"),
    ("127.0.0.1:٨٠٠١", "bad port"),  # Arabic-Indic digits: int() takes them
    ("127.0.0.1:+1", "bad port '+1'"), ("127.0.0.1:1_000", "bad port '1_000'"),
    (":abc", "no host"),
    ("http://", "no host"),
    ("[::1", "Invalid IPv6 URL"),
    ("[not-an-address]:8001", "not-an-address"),
    ("::1", "put an IPv6 address in brackets"),
    ("a b:8001", "not a host name"),
    ("host:8001/v2/models", "a server URL has no path"),
    ("host:8001?x=1", "a server URL has no path"),
    ("user@host:8001", "no user name"),
])
def test_server_urls_that_name_no_server_say_why(url: str, why: str) -> None:
    from triton_ops.server.endpoints import normalise_host_port

    with pytest.raises(ValueError) as err:
        normalise_host_port(url, 8001)
    assert f"server URL {url!r}: " in str(err.value) and why in str(err.value)
    assert "use HOST:PORT" in str(err.value)


@pytest.mark.parametrize(("url", "normalised"), [
    ("Triton.Example:9001", "triton.example:9001"), ("grpc://10.0.0.5/", "10.0.0.5:8001"),
    ("[::1]", "[::1]:8001"), ("[2001:db8::1]:1", "[2001:db8::1]:1"), (" h:65535 ", "h:65535"),
    ("my_host-1.svc", "my_host-1.svc:8001"),
])
def test_server_urls_are_normalised(url: str, normalised: str) -> None:
    from triton_ops.server.endpoints import normalise_host_port

    assert normalise_host_port(url, 8001) == normalised


@pytest.mark.parametrize("port", [0, -1, 65536, 99999, True])
@pytest.mark.parametrize("name", ["grpc_port", "http_port", "metrics_port"])
def test_fixed_ports_out_of_range_are_refused_before_anything_starts(
        tmp_path: Path, name: str, port: int) -> None:
    with pytest.raises(ValueError, match=rf"{name} {port!r} is not a TCP port: use 1-65535"):
        LocalTriton(tmp_path, **{name: port})  # type: ignore[arg-type]



@pytest.mark.parametrize(("url", "loopback"), [
    ("127.0.0.1:8001", True), ("localhost:1", True), ("[::1]:8001", True), ("::1", True),
    ("grpc://127.0.0.1:5", True), ("10.0.0.1:8001", False), ("triton:8001", False),
])
def test_is_loopback(url: str, loopback: bool) -> None:
    from triton_ops.server.endpoints import grpc_channel_args, is_loopback

    assert is_loopback(url) is loopback
    assert (grpc_channel_args(url) is not None) is loopback
