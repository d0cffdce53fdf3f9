"""The Kubernetes rollout target: the chart's canary Deployment, traffic shifted by HTTPRoute
weights (Gateway API) or by the replica ratio behind the all-tracks Service, analysis from
Prometheus, state in a ConfigMap + Lease (`ConfigMapStateStore`).

It keeps the `RolloutTarget` invariants:
- stable is not touched until promotion: the canary is a second Deployment whose pod
  template annotation `triton-ops.io/versions` names the versions it serves;
- promotion rolls the stable Deployment to the canary version (maxUnavailable 0, readiness =
  the golden probe) while the canary keeps serving, and only then drains the canary;
- every action is idempotent (patches set absolute values).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from triton_ops.envelope.model import Envelope
from triton_ops.k8s.cluster import (
    Cluster,
    K8sError,
    canary_replicas_for,
    route_canary_weight,
    route_weights,
)
from triton_ops.k8s.names import VERSIONS_ANNOTATION, deployment
from triton_ops.k8s.prometheus import Prometheus, PrometheusError
from triton_ops.k8s.store import ConfigMapStateStore
from triton_ops.rollout.analysis import AgreementSample, WindowMetrics
from triton_ops.rollout.target import TargetError
from triton_ops.tensors import TensorValueError, numpy_dtype, output_types, wire_type


@dataclass
class KubernetesTarget:
    cluster: Cluster
    model: str
    release: str  # the chart's fullname, e.g. "prod-triton"
    prometheus: Prometheus
    envelope: Envelope | None = None
    gateway: bool = True  # HTTPRoute weights; False: replica ratio
    repository: Path | None = None  # a local copy of the model repository, for seal checks
    canary_replicas: int = 1  # canary pods in HTTPRoute mode
    max_canary_replicas: int = 10  # cap in replica-ratio mode
    ready_timeout_s: float = 900.0
    scrape_lag_s: float = 30.0  # wait this long after a window so Prometheus has scraped it
    poll_s: float = 2.0
    request_timeout_s: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time
    store: ConfigMapStateStore = field(init=False)
    _attached: tuple[list[int], int] | None = field(default=None, init=False)
    _requests: list[dict[str, Any]] | None = field(default=None, init=False)
    _sent: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.store = ConfigMapStateStore(self.cluster, self.model)

    # -- names -----------------------------------------------------------------------------
    @property
    def stable_name(self) -> str:
        return deployment(self.release, "stable")

    @property
    def canary_name(self) -> str:
        return deployment(self.release, "canary")

    def describe(self) -> str:
        mode = (f"HTTPRoute {self.release} weights" if self.gateway
                else f"replica ratio behind Service {self.release}")
        return (f"Kubernetes {self.cluster.namespace}/{self.release} ({mode}, metrics from "
                f"{self.prometheus.url})")

    # -- reading the Deployments -------------------------------------------------------------
    def _get(self, name: str) -> dict[str, Any]:
        try:
            return self.cluster.get_deployment(name)
        except K8sError as exc:
            raise TargetError(f"{exc}; is the triton chart installed in namespace "
                              f"{self.cluster.namespace!r} with that release name (its "
                              f"objects are named {self.release}-*)?") from None

    def _patch(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.cluster.patch_deployment(name, patch)
        except K8sError as exc:
            raise TargetError(str(exc)) from None

    @staticmethod
    def versions_of(dep: dict[str, Any]) -> dict[str, list[int]]:
        annotations = (dep.get("spec", {}).get("template", {}).get("metadata", {})
                       .get("annotations") or {})
        try:
            data = json.loads(annotations.get(VERSIONS_ANNOTATION, "{}"))
            return {str(k): [int(v) for v in vs] for k, vs in data.items()}
        except (ValueError, TypeError, AttributeError):
            name = dep.get("metadata", {}).get("name")
            raise TargetError(f"deployment {name}: annotation {VERSIONS_ANNOTATION} is not "
                              "JSON {model: [versions]}; reinstall the chart") from None

    @staticmethod
    def rollout_complete(dep: dict[str, Any]) -> bool:
        """Every replica runs the current template and is ready (readiness = golden probe)."""
        spec, status = dep.get("spec", {}), dep.get("status") or {}
        want = int(spec.get("replicas", 1))
        generation = dep.get("metadata", {}).get("generation")
        observed = status.get("observedGeneration")
        if generation is not None and (observed is None or observed < generation):
            return False
        return (int(status.get("updatedReplicas") or 0) >= want
                and int(status.get("readyReplicas") or 0) >= want
                and int(status.get("replicas") or 0) <= want  # old pods gone
                and int(status.get("unavailableReplicas") or 0) == 0)

    def _wait_complete(self, name: str, what: str) -> dict[str, Any]:
        deadline = self.clock() + self.ready_timeout_s
        while True:
            dep = self._get(name)
            if self.rollout_complete(dep):
                return dep
            if self.clock() >= deadline:
                status = dep.get("status") or {}
                raise TargetError(
                    f"{what}: deployment {name} has {status.get('readyReplicas') or 0}/"
                    f"{dep.get('spec', {}).get('replicas')} ready pods after "
                    f"{self.ready_timeout_s:.0f} s (readiness infers the golden probe); see "
                    f"`kubectl -n {self.cluster.namespace} describe pods -l "
                    f"triton-ops.io/track={name.rsplit('-', 1)[-1]}` and the pod logs")
            self.sleep(self.poll_s)

    def stable_versions(self) -> list[int]:
        """The versions of the model the stable Deployment's pod template names: what
        stable serves once its pods are ready (e.g. the current ones for `rollback`)."""
        return self.versions_of(self._get(self.stable_name)).get(self.model, [])

    def serving_versions(self) -> list[int]:
        stable = self._get(self.stable_name)
        serving: set[int] = set()
        if int((stable.get("status") or {}).get("readyReplicas") or 0) > 0:
            serving.update(self.versions_of(stable).get(self.model, []))
        canary = self._get(self.canary_name)
        if int(canary.get("spec", {}).get("replicas") or 0) > 0 and \
                int((canary.get("status") or {}).get("readyReplicas") or 0) > 0:
            serving.update(self.versions_of(canary).get(self.model, []))
        return sorted(serving)

    def attach(self, stable: list[int], canary: int) -> None:
        self._attached = (list(stable), canary)

    def _rollout(self) -> tuple[list[int], int]:
        if self._attached is None:
            raise TargetError("no rollout attached to the target")
        return self._attached

    def verify_version(self, version: int) -> list[str]:
        if self.repository is None:
            return []  # the repository lives in the cluster's storage; see docs/k8s.md
        from triton_ops.repository.seal import verify_version

        return verify_version(self.repository / self.model, version)

    # -- acting ------------------------------------------------------------------------------
    def _template_patch(self, versions: dict[str, list[int]]) -> dict[str, Any]:
        text = json.dumps(versions, separators=(",", ":"), sort_keys=True)
        return {"template": {"metadata": {"annotations": {VERSIONS_ANNOTATION: text}}}}

    def load_canary(self, stable: list[int], canary: int) -> None:
        versions = self.versions_of(self._get(self.stable_name))
        versions[self.model] = [canary]
        if self.gateway:
            self.set_weight(0)
            replicas = self.canary_replicas
        else:
            replicas = 1  # the least share the replica ratio can give
        self._patch(self.canary_name, {"spec": {"replicas": replicas,
                                                **self._template_patch(versions)}})
        self._wait_complete(self.canary_name, f"canary version {canary}")

    def set_weight(self, weight: int) -> None:
        if self.gateway:
            try:
                route = self.cluster.get_httproute(self.release)
                if route_canary_weight(route, self.canary_name) != weight:
                    spec = route_weights(route, self.stable_name, self.canary_name, weight)
                    self.cluster.patch_httproute(self.release, {"spec": spec})
            except K8sError as exc:
                raise TargetError(str(exc)) from None
            return
        stable = self._get(self.stable_name)
        stable_replicas = int(stable.get("spec", {}).get("replicas") or 1)
        replicas = canary_replicas_for(weight, stable_replicas, self.max_canary_replicas)
        canary = self._get(self.canary_name)
        if weight > 0 and int(canary.get("spec", {}).get("replicas") or 0) != replicas:
            self._patch(self.canary_name, {"spec": {"replicas": replicas}})
            self._wait_complete(self.canary_name, f"scaling the canary to {replicas} pods")

    def collect_window(self, weight: int, duration_s: float) -> WindowMetrics:
        start = self.clock()
        self.sleep(duration_s + self.scrape_lag_s)
        window_s = max(self.clock() - start, duration_s)
        canary_dep = self._get(self.canary_name)
        if int((canary_dep.get("status") or {}).get("readyReplicas") or 0) == 0:
            return WindowMetrics(duration_s=window_s,
                                 canary_down=f"deployment {self.canary_name} has no ready pod")
        stable_versions, canary = self._rollout()
        canary_versions = [canary]
        try:
            stable = self.prometheus.version_window(self.model, stable_versions, window_s)
            canary = self.prometheus.version_window(self.model, canary_versions, window_s)
        except PrometheusError as exc:
            raise TargetError(str(exc)) from None
        return WindowMetrics(stable=stable.window, canary=canary.window, duration_s=window_s)

    # -- shadow comparison through the API server's service proxy ---------------------------
    def _sample_requests(self) -> list[dict[str, Any]]:
        if self._requests is None:
            if self.envelope is None:
                raise TargetError("output agreement needs the model's envelope (--envelope)")
            from triton_ops.rollout.traffic import RequestsError, envelope_requests

            try:
                self._requests = envelope_requests(self.envelope, count=64)
            except RequestsError as exc:
                raise TargetError(str(exc)) from None
        return self._requests

    def _kserve(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.envelope is not None
        inputs = []
        for name, array in request.items():
            data = [v.decode() if isinstance(v, bytes) else v for v in array.flatten().tolist()]
            inputs.append({"name": name, "shape": list(array.shape),
                           "datatype": wire_type(self.envelope.tensor(name).data_type),
                           "data": data})
        return {"inputs": inputs}

    def _infer(self, service: str, version: int, payload: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        path = f"v2/models/{self.model}/versions/{version}/infer"
        status, body = self.cluster.service_post(service, "http", path, payload,
                                                 self.request_timeout_s)
        if status != 200 or not isinstance(body, dict):
            detail = body.get("error") if isinstance(body, dict) else body
            raise TargetError(f"HTTP {status}: {detail}")
        outputs = {}
        for out in body.get("outputs", []):
            data = out.get("data", [])
            if out.get("datatype") == "BYTES":
                outputs[out["name"]] = np.array([d.encode() if isinstance(d, str) else d
                                                 for d in data], dtype=object
                                                ).reshape(out.get("shape", [len(data)]))
            else:
                # Typed as the server says, so an FP32 output whose values happen to be whole
                # numbers is not taken for an integer one.
                try:
                    dtype = numpy_dtype(str(out.get("datatype")))
                except TensorValueError:
                    dtype = None
                outputs[out["name"]] = np.array(data, dtype=dtype).reshape(
                    out.get("shape", [len(data)]))
        return outputs

    def shadow_compare(self, samples: int) -> list[AgreementSample]:
        from triton_ops.envelope.model import Tolerance
        from triton_ops.rollout.traffic import disagreement

        stable, canary = self._rollout()
        stable_version = max(stable)
        tolerance = (self.envelope.probe.tolerance if self.envelope and self.envelope.probe
                     else Tolerance())
        requests = self._sample_requests()
        results = []
        for i in range(samples):
            payload = self._kserve(requests[(self._sent + i) % len(requests)])
            try:
                want = self._infer(f"{self.release}-stable", stable_version, payload)
            except (TargetError, K8sError) as exc:
                results.append(AgreementSample(agree=None, detail=f"stable failed: {exc}"))
                continue
            try:
                got = self._infer(f"{self.release}-canary", canary, payload)
            except (TargetError, K8sError) as exc:
                results.append(AgreementSample(agree=None, canary_error=True,
                                               detail=f"canary failed: {exc}"))
                continue
            difference = disagreement(want, got, tolerance,
                                      output_types(self.envelope) if self.envelope else None)
            results.append(AgreementSample(agree=difference is None, detail=difference or ""))
        self._sent += samples
        return results

    # -- ending ------------------------------------------------------------------------------
    def promote(self, stable: list[int], canary: int) -> None:
        canary_dep = self._get(self.canary_name)
        if self.versions_of(canary_dep).get(self.model) != [canary] or \
                not self.rollout_complete(canary_dep) or \
                int(canary_dep.get("spec", {}).get("replicas") or 0) == 0:
            raise TargetError(f"the canary deployment {self.canary_name} is not serving version "
                              f"{canary} with all pods ready; not promoting")
        versions = self.versions_of(self._get(self.stable_name))
        versions[self.model] = [canary]
        # Rolling update of stable to the canary version; the canary serves meanwhile.
        self._patch(self.stable_name, {"spec": self._template_patch(versions)})
        self._wait_complete(self.stable_name, f"promoting version {canary}")
        self._drain_canary(versions)

    def rollback(self, stable: list[int], canary: int) -> None:
        versions = self.versions_of(self._get(self.stable_name))
        self._drain_canary(versions)

    def _drain_canary(self, versions: dict[str, list[int]]) -> None:
        if self.gateway:
            self.set_weight(0)
        self._patch(self.canary_name, {"spec": {"replicas": 0,
                                                **self._template_patch(versions)}})

    def restore(self, versions: list[int]) -> None:
        current = self.versions_of(self._get(self.stable_name))
        current[self.model] = sorted(versions)
        self._patch(self.stable_name, {"spec": self._template_patch(current)})
        self._wait_complete(self.stable_name, f"restoring versions {versions}")
