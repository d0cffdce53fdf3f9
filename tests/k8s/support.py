"""Test helpers: a real Prometheus server (Debian's `prometheus` binary) on a loopback port,
the chart's in-pod script as a module, the chart's restricted-API settings for a real
tritonserver, and plain KServe-v2 HTTP inference."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from triton_ops.server.local import free_port

REPO = Path(__file__).resolve().parents[2]
POD_SCRIPT = REPO / "helm" / "triton" / "files" / "triton_pod.py"
PROMETHEUS_INSTALL = "apt-get install -y prometheus"
# Stands in for the random key of the chart's Secret.
API_KEY = "test-key-0f3a9c"


def chart_restricted_api(key: str = API_KEY) -> tuple[list[str], dict[str, str]]:
    """The tritonserver arguments the chart gives for Triton's restricted APIs, and the
    pod's environment for them, with `key` where the kubelet puts the Secret's value."""
    from triton_ops.k8s import chart

    manifests = chart.render({}, release="demo", namespace="ml")
    deployment = next(m.doc for m in manifests if m.doc["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    args = [arg.replace("$(TRITON_OPS_API_KEY)", key) for arg in container["args"]
            if arg.startswith(("--http-restricted-api=", "--grpc-restricted-protocol="))]
    env = {e["name"]: e.get("value", key) for e in container["env"]
           if e["name"] in ("TRITON_OPS_API_HEADER", "TRITON_OPS_API_KEY")}
    assert len(args) == 2 and len(env) == 2, (container["args"], container["env"])
    return args, env


def require_prometheus() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip(f"the prometheus binary is not installed ({PROMETHEUS_INSTALL}; "
                    ".ci/run installs it)")
    return binary


@contextmanager
def prometheus_server(tmp: Path, jobs: dict[str, list[tuple[str, dict[str, str]]]],
                      scrape_interval: str = "1s") -> Iterator[str]:
    """Start prometheus scraping `jobs` {job: [(host:port, labels)]}; yield its URL."""
    binary = require_prometheus()
    tmp.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {"job_name": job, "metrics_path": "/metrics",
             "static_configs": [{"targets": [t], "labels": labels} for t, labels in targets]}
            for job, targets in jobs.items()
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp / "prometheus.log").open("wb")
    proc = subprocess.Popen(  # noqa: S603
        [binary, f"--config.file={tmp / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
         "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/-/ready", timeout=1).read()
                break
            except (urllib.error.URLError, OSError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("prometheus did not start:\n" +
                                       (tmp / "prometheus.log").read_text()[-3000:]) from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def pod_script(api_env: dict[str, str] | None = None) -> ModuleType:
    """The chart's in-pod script as a module; `api_env` holds its restricted-API key."""
    spec = importlib.util.spec_from_file_location("triton_pod", POD_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if api_env:
        module.API_HEADER = api_env["TRITON_OPS_API_HEADER"]
        module.API_KEY = api_env["TRITON_OPS_API_KEY"]
    return module


def load_versions(http_url: str, model: str, versions: list[int],
                  api_env: dict[str, str] | None = None) -> None:
    """Serve exactly `versions` of `model`, with the chart's own in-pod code."""
    module = pod_script(api_env)
    module.HTTP_URL = f"http://{http_url}"
    module.load_versions(model, versions)


def affine_request(x: list[float]) -> dict[str, Any]:
    return {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": x}]}


def infer(http_url: str, model: str, version: int, payload: dict[str, Any]) -> tuple[int, Any]:
    return post(http_url, f"/v2/models/{model}/versions/{version}/infer", payload)


def post(http_url: str, path: str, payload: dict[str, Any],
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """POST JSON to a Triton's HTTP endpoint: (status, decoded body), errors included."""
    req = urllib.request.Request(
        f"http://{http_url}{path}", data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
