"""Test helpers: a real Prometheus server (Debian's `prometheus` binary) on a loopback port,
the chart's in-pod script as a module, and plain KServe-v2 HTTP inference."""

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


def pod_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("triton_pod", POD_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_versions(http_url: str, model: str, versions: list[int]) -> None:
    """Serve exactly `versions` of `model`, with the chart's own in-pod code."""
    module = pod_script()
    module.HTTP_URL = f"http://{http_url}"
    module.load_versions(model, versions)


def affine_request(x: list[float]) -> dict[str, Any]:
    return {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": x}]}


def infer(http_url: str, model: str, version: int, payload: dict[str, Any]) -> tuple[int, Any]:
    req = urllib.request.Request(
        f"http://{http_url}/v2/models/{model}/versions/{version}/infer",
        data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
