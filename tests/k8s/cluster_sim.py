"""A small cluster for rollout tests: the chart's objects in the API emulator, "pods" that
are real Triton servers, a real Prometheus scraping them, and a gateway that sends traffic
by the HTTPRoute weights (or the replica ratio).

What stands in for Kubernetes components (no API server or kubelet runs here):
- the controller (`Controller`): for each track Deployment it loads the annotated versions
  on that track's Triton with the chart's own in-pod code (triton_pod.load_versions) and
  reports status.readyReplicas from the chart's own readiness check (triton_pod
  probe_model: a real golden-probe inference), as kubelet + deployment controller would;
- the service proxy: the emulator forwards /api/v1/.../services/NAME:http/proxy/... to the
  Triton of that track, with the caller's headers (as the API server does, less its own
  credentials);
- the gateway (`Gateway`): sends requests split by the HTTPRoute's canary weight, or by
  canary/(canary+stable) replicas when there is no Gateway.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import kmock

from triton_ops.k8s import chart
from triton_ops.server.local import LocalTriton

from .emulator import ApiServer, RunningApiServer
from .support import affine_request, pod_script

NS = "ml"
RELEASE = "demo"
FULLNAME = "demo-triton"
PLURALS = {"Deployment": "apps/v1/deployments", "Service": "v1/services",
           "HTTPRoute": "gateway.networking.k8s.io/v1/httproutes"}
PROXY = re.compile(r"^/api/v1/namespaces/[^/]+/services/([^/:]+)(?::[^/]+)?/proxy/(.*)$")


def chart_values(envelope_probe: dict[str, Any] | None, gateway: bool) -> dict[str, Any]:
    return {"models": [{"name": "affine", "versions": {"stable": [1], "canary": [1]},
                        "probe": envelope_probe}],
            "gateway": {"enabled": gateway}, "resources": {"gpus": 0},
            "tracks": {"stable": {"replicas": 2}, "canary": {"replicas": 0}}}


def install_chart(server: RunningApiServer, values: dict[str, Any]) -> None:
    """Create the chart's Deployments, Services and HTTPRoute in the emulator over HTTP."""
    for manifest in chart.render(values, release=RELEASE, namespace=NS):
        doc = manifest.doc
        if doc["kind"] not in PLURALS:
            continue
        group_version_plural = PLURALS[doc["kind"]]
        prefix = "/api/v1" if group_version_plural.startswith("v1/") else \
            "/apis/" + group_version_plural.rsplit("/", 1)[0]
        plural = group_version_plural.rsplit("/", 1)[1]
        req = urllib.request.Request(f"{server.url}{prefix}/namespaces/{NS}/{plural}",
                                     data=json.dumps(doc).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=10).read()


def proxy_setup(tritons: dict[str, LocalTriton]) -> Any:
    """Emulator setup: forward service-proxy requests to the track's Triton."""
    def forward(request: kmock.Request) -> Any:
        match = PROXY.match(request.url.path)
        assert match, request.url
        track = match.group(1).rsplit("-", 1)[-1]
        url = f"http://{tritons[track].http_url}/{match.group(2)}"
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("authorization", "host", "content-length",
                                        "connection", "accept-encoding")}
        req = urllib.request.Request(url, data=request.body, method="POST",
                                     headers={**headers, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
            raise kmock.KubernetesError(status=exc.code, reason="ProxyError",
                                        message=body.get("error", "")) from None

    def setup(emulator: ApiServer) -> None:
        emulator["post", re.compile(PROXY.pattern)] << forward

    return setup


@dataclass
class Controller:
    server: RunningApiServer
    tritons: dict[str, LocalTriton]
    model: str = "affine"
    api_env: dict[str, str] = field(default_factory=dict)  # the pods' restricted-API key
    loaded: dict[str, list[int]] = field(default_factory=dict)
    max_replicas: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.pods = {}
        for track, triton in self.tritons.items():
            module = pod_script(self.api_env)
            module.HTTP_URL = f"http://{triton.http_url}"
            self.pods[track] = module

    def deployments(self) -> dict[str, dict[str, Any]]:
        return {name.rsplit("-", 1)[-1]: obj for (_, name), obj in
                self.server.objects("apps/v1/deployments").items()}

    def step(self, probes: dict[str, Any]) -> None:
        for track, dep in self.deployments().items():
            replicas = int(dep["spec"].get("replicas", 1))
            self.max_replicas[track] = max(self.max_replicas.get(track, 0), replicas)
            annotations = dep["spec"]["template"]["metadata"]["annotations"]
            versions = json.loads(annotations["triton-ops.io/versions"])[self.model]
            pod = self.pods[track]
            ready = 0
            if replicas > 0:
                if self.loaded.get(track) != versions:
                    try:
                        pod.load_versions(self.model, versions)
                    except pod.PodError as exc:  # like a pod that never becomes ready
                        self.errors.append(str(exc))
                    self.loaded[track] = versions
                problems = [pod.probe_model(self.model, v, probes.get(self.model))
                            for v in versions]
                ready = replicas if not any(problems) else 0
            status = {"observedGeneration": dep["metadata"].get("generation", 1),
                      "replicas": replicas, "updatedReplicas": replicas,
                      "readyReplicas": ready, "availableReplicas": ready,
                      "unavailableReplicas": replicas - ready}
            if dep.get("status") != status:
                key = (kmock.resource("apps/v1/deployments"), NS, dep["metadata"]["name"])
                self.server.call(lambda key=key, status=status:
                                 self.server.emulator.objects[key].patch({"status": status}))

    def start(self, probes: dict[str, Any]) -> Controller:
        def loop() -> None:
            while not self._stop.wait(0.2):
                try:
                    self.step(probes)
                except Exception as exc:  # noqa: BLE001 - surfaced by the test
                    self.errors.append(repr(exc))
        self._thread = threading.Thread(target=loop, name="controller", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)


@dataclass
class Gateway:
    """Live traffic: X[0] uniform in [-1, 1], split between the tracks like the data plane."""

    server: RunningApiServer
    tritons: dict[str, LocalTriton]
    gateway: bool
    rate: float = 40.0
    sent: dict[str, int] = field(default_factory=lambda: {"stable": 0, "canary": 0})
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def canary_share(self) -> float:
        if self.gateway:
            route = self.server.objects("gateway.networking.k8s.io/v1/httproutes")[
                (NS, FULLNAME)]
            refs = {r["name"]: r["weight"] for r in route["spec"]["rules"][0]["backendRefs"]}
            total = sum(refs.values())
            return refs[f"{FULLNAME}-canary"] / total if total else 0.0
        deps = {name.rsplit("-", 1)[-1]: obj for (_, name), obj in
                self.server.objects("apps/v1/deployments").items()}
        ready = {t: int((d.get("status") or {}).get("readyReplicas") or 0)
                 for t, d in deps.items()}
        total = ready["stable"] + ready["canary"]
        return ready["canary"] / total if total else 0.0

    def start(self) -> Gateway:
        rng = random.Random(7)

        def loop() -> None:
            while not self._stop.wait(1 / self.rate):
                deps = {name.rsplit("-", 1)[-1]: obj for (_, name), obj in
                        self.server.objects("apps/v1/deployments").items()}
                track = "canary" if rng.random() < self.canary_share() else "stable"
                annotations = deps[track]["spec"]["template"]["metadata"]["annotations"]
                version = json.loads(annotations["triton-ops.io/versions"])["affine"][-1]
                x = [rng.uniform(-1, 1), 1.0, 2.0, 3.0]
                body = json.dumps(affine_request(x)).encode()
                req = urllib.request.Request(
                    f"http://{self.tritons[track].http_url}/v2/models/affine/versions/"
                    f"{version}/infer", data=body, headers={"Content-Type": "application/json"})
                try:
                    urllib.request.urlopen(req, timeout=10).read()
                except (urllib.error.URLError, OSError):
                    pass  # failures are what the analysis must see, via Triton's counters
                self.sent[track] += 1

        self._thread = threading.Thread(target=loop, name="gateway", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)


def wait_until(predicate: Any, timeout_s: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
