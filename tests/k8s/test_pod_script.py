"""The chart's in-pod script (helm/triton/files/triton_pod.py) run for real: `serve` wraps a
real tritonserver started with the chart's restricted APIs and serves exactly the annotated
versions; `ready` infers the golden probe; without the pod's key nothing but inference,
health and metadata answers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from triton_ops.k8s.values import probe_values
from triton_ops.server.local import (
    LocalTriton,
    TritonInstall,
    prepare_backend_dir,
    server_environment,
)

from .support import API_KEY, POD_SCRIPT, chart_restricted_api, pod_script, post
from .test_target import ENVELOPE

pytestmark = pytest.mark.slow


def run_ready(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(POD_SCRIPT), "ready"], env=env,
                          capture_output=True, text=True, timeout=60)


def test_serve_loads_exactly_the_annotated_versions_and_ready_infers(
        affine_repository: Path, tmp_path: Path) -> None:
    probes = tmp_path / "probes.json"
    probes.write_text(json.dumps({"affine": probe_values(ENVELOPE)}))
    install = TritonInstall.discover()
    # The command line the chart gives the container, with this machine's ports and backend.
    restricted_args, api_env = chart_restricted_api()
    server = LocalTriton(affine_repository, extra_args=restricted_args)
    server._pick_ports()
    command = server.command(prepare_backend_dir(install))
    env = server_environment(install)
    env.update(TRITON_OPS_VERSIONS='{"affine": [4]}', TRITON_OPS_PROBES=str(probes),
               TRITON_OPS_HTTP_URL=f"http://{server.http_url}",
               TRITON_OPS_LOADED_MARKER=str(tmp_path / "loaded"), **api_env)
    log = (tmp_path / "pod.log").open("wb")
    pod = subprocess.Popen([sys.executable, str(POD_SCRIPT), "serve", "--", *command], env=env,
                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while run_ready(env).returncode != 0:
            assert pod.poll() is None, (tmp_path / "pod.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "pod.log").read_text()[-3000:]
            time.sleep(0.5)
        # Ready only after the wrapper loaded exactly v4 (the first load brings all five).
        assert "triton-ops: all models loaded" in (tmp_path / "pod.log").read_text()
        # Asking for other versions is not ready: not what was loaded.
        other = run_ready({**env, "TRITON_OPS_VERSIONS": '{"affine": [1]}'})
        assert other.returncode == 1 and "still being loaded" in other.stdout
        # A wrong golden answer is not ready, with the difference in the message.
        bad = json.loads(probes.read_text())
        bad["affine"]["expected"]["Y"]["data"][0] = 99.0
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        wrong = run_ready({**env, "TRITON_OPS_PROBES": str(tmp_path / "bad.json")})
        assert wrong.returncode == 1
        assert "Y[0] = -2" in wrong.stdout and "expected 99" in wrong.stdout
        # A version loaded behind the pod's back (unversioned requests would reach it): not
        # ready until it is gone.
        module = pod_script(api_env)
        module.HTTP_URL = env["TRITON_OPS_HTTP_URL"]
        module.load_versions("affine", [4, 5])
        extra = run_ready(env)
        assert extra.returncode == 1 and "affine v5 is loaded but not wanted [4]" in extra.stdout
        module.load_versions("affine", [4])
        assert run_ready(env).returncode == 0
        assert_only_the_pod_may_load(server, api_env)
        # SIGTERM reaches tritonserver through the wrapper, which exits with it.
        pod.send_signal(signal.SIGTERM)
        assert pod.wait(timeout=60) == 0
    finally:
        if pod.poll() is None:
            os.killpg(pod.pid, signal.SIGKILL)
            pod.wait(timeout=10)
        log.close()


def test_bad_versions_variable_is_a_message(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(POD_SCRIPT), "serve", "--", "true"],
                            env={**os.environ, "TRITON_OPS_VERSIONS": "{affine: 1}"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "TRITON_OPS_VERSIONS is not JSON" in result.stderr
    result = subprocess.run([sys.executable, str(POD_SCRIPT), "ready"],
                            env={**os.environ, "TRITON_OPS_VERSIONS": '{"affine": [0]}'},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "must map model names" in result.stderr
    assert "Traceback" not in result.stderr


def assert_only_the_pod_may_load(server: LocalTriton, api_env: dict[str, str]) -> None:
    """Model loads (with file contents: code execution) need the pod's key, over HTTP and
    gRPC; inference, health and metadata do not."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    header = api_env["TRITON_OPS_API_HEADER"]
    load = "/v2/repository/models/affine/load"
    code_in_a_file = {"parameters": {"config": "{}", "file:1/model.py": "aW1wb3J0IG9z"}}
    for headers in ({}, {header: "guess"}):
        status, body = post(server.http_url, load, code_in_a_file, headers)
        assert status == 403 and "restricted" in body["error"], (status, body)
        assert post(server.http_url, "/v2/repository/index", {}, headers)[0] == 403
    x = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    status, answer = post(server.http_url, "/v2/models/affine/versions/4/infer", x)
    assert status == 200 and answer["outputs"][0]["data"] == [2, 4, 6, 8]
    assert post(server.http_url, load, {}, {header: API_KEY})[0] == 200
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        with pytest.raises(InferenceServerException, match="restricted"):
            client.load_model("affine")
        assert client.is_server_live() and client.get_model_metadata("affine")
    finally:
        client.close()
