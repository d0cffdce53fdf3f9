"""Thin adapters over the official kubernetes client: connection, the rollout state in a
ConfigMap (optimistic concurrency on resourceVersion), the one-rollout-per-model Lease,
Events, and the two ways of shifting traffic (HTTPRoute weights, replica ratio).

Every call goes through `Cluster`, which turns API errors into `K8sError` with a message that
says what to do. The kubernetes package is imported here only, never at CLI start-up.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MERGE_PATCH = "application/merge-patch+json"
GATEWAY_GROUP = "gateway.networking.k8s.io"
GATEWAY_VERSION = "v1"


class K8sError(Exception):
    """A Kubernetes call failed; the message names the object and what to do."""


class Conflict(K8sError):
    """The object changed since it was read (409): re-read and try again."""


class NotFound(K8sError):
    pass


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def micro_time(t: dt.datetime) -> str:
    """Kubernetes MicroTime: RFC 3339 with microseconds, UTC."""
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def connect(kubeconfig: str | Path | None = None, context: str | None = None) -> Any:
    """An ApiClient from a kubeconfig (--kubeconfig, $KUBECONFIG, ~/.kube/config) or, when
    none exists and the process runs in a pod, the in-cluster service account."""
    import yaml
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    configuration = client.Configuration()
    env_paths = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    default = Path("~/.kube/config").expanduser()
    path = str(kubeconfig) if kubeconfig else (env_paths[0] if env_paths else
                                               (str(default) if default.exists() else None))
    try:
        if path is not None:
            config.load_kube_config(config_file=path, context=context,
                                    client_configuration=configuration)
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            raise K8sError("no kubeconfig found (--kubeconfig, $KUBECONFIG, ~/.kube/config) and "
                           "not running in a pod: point triton-ops at your cluster")
    except (ConfigException, OSError, yaml.YAMLError, TypeError, KeyError) as exc:
        raise K8sError(f"cannot load the Kubernetes configuration {path or '(in-cluster)'}: "
                       f"{exc}") from None
    return client.ApiClient(configuration)


def default_namespace(kubeconfig: str | Path | None = None, context: str | None = None) -> str:
    """The namespace of the kubeconfig's context, else the pod's, else "default"."""
    try:
        from kubernetes import config

        _, active = config.list_kube_config_contexts(config_file=str(kubeconfig) if kubeconfig
                                                     else None)
        if context:
            contexts, _ = config.list_kube_config_contexts(
                config_file=str(kubeconfig) if kubeconfig else None)
            active = next((c for c in contexts if c["name"] == context), active)
        ns = (active or {}).get("context", {}).get("namespace")
        if ns:
            return str(ns)
    except Exception:  # noqa: BLE001 - no kubeconfig: fall through to the in-cluster namespace
        pass
    sa_ns = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    if sa_ns.exists():
        return sa_ns.read_text().strip()
    return "default"


def _api_error(exc: Exception, what: str) -> K8sError:
    status = getattr(exc, "status", None)
    body = getattr(exc, "body", None) or ""
    try:
        message = json.loads(body).get("message", body)
    except (ValueError, AttributeError):
        message = body or str(exc)
    if status == 409:
        return Conflict(f"{what}: {message}")
    if status == 404:
        return NotFound(f"{what}: not found ({message})")
    if status in (401, 403):
        return K8sError(f"{what}: forbidden ({message}); the rollout needs the Role the chart "
                        "creates (rbac.create) bound to your user or service account")
    if status is None:
        return K8sError(f"{what}: cannot reach the Kubernetes API: {exc}")
    return K8sError(f"{what}: HTTP {status}: {message}")


@dataclass
class Cluster:
    """The namespace-scoped calls the rollout makes, on one ApiClient."""

    api: Any
    namespace: str

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn()
        except ApiException as exc:
            raise _api_error(exc, what) from None
        except (HTTPError, OSError) as exc:
            raise _api_error(exc, what) from None

    @property
    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api)

    @property
    def apps(self) -> Any:
        from kubernetes import client

        return client.AppsV1Api(self.api)

    @property
    def coordination(self) -> Any:
        from kubernetes import client

        return client.CoordinationV1Api(self.api)

    @property
    def custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.api)

    def _dict(self, obj: Any) -> dict[str, Any]:
        return obj if isinstance(obj, dict) else self.api.sanitize_for_serialization(obj)

    # -- ConfigMaps ----------------------------------------------------------------------
    def get_configmap(self, name: str) -> dict[str, Any] | None:
        try:
            return self._dict(self._call(f"configmap {self.namespace}/{name}",
                                         lambda: self.core.read_namespaced_config_map(
                                             name, self.namespace)))
        except NotFound:
            return None

    def create_configmap(self, name: str, data: dict[str, str],
                         labels: dict[str, str] | None = None) -> dict[str, Any]:
        body = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "labels": labels or {}}, "data": data}
        return self._dict(self._call(f"create configmap {self.namespace}/{name}",
                                     lambda: self.core.create_namespaced_config_map(
                                         self.namespace, body)))

    def patch_configmap(self, name: str, data: dict[str, str | None],
                        resource_version: str) -> dict[str, Any]:
        """Merge `data` (None deletes a key) if the object is still at `resource_version`."""
        body = {"metadata": {"resourceVersion": resource_version}, "data": data}
        return self._dict(self._call(f"update configmap {self.namespace}/{name}",
                                     lambda: self.core.patch_namespaced_config_map(
                                         name, self.namespace, body,
                                         _content_type=MERGE_PATCH)))

    # -- Leases --------------------------------------------------------------------------
    def get_lease(self, name: str) -> dict[str, Any] | None:
        try:
            return self._dict(self._call(f"lease {self.namespace}/{name}",
                                         lambda: self.coordination.read_namespaced_lease(
                                             name, self.namespace)))
        except NotFound:
            return None

    def create_lease(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name}, "spec": spec}
        return self._dict(self._call(f"create lease {self.namespace}/{name}",
                                     lambda: self.coordination.create_namespaced_lease(
                                         self.namespace, body)))

    def patch_lease(self, name: str, spec: dict[str, Any], resource_version: str
                    ) -> dict[str, Any]:
        body = {"metadata": {"resourceVersion": resource_version}, "spec": spec}
        return self._dict(self._call(f"update lease {self.namespace}/{name}",
                                     lambda: self.coordination.patch_namespaced_lease(
                                         name, self.namespace, body,
                                         _content_type=MERGE_PATCH)))

    # -- Events --------------------------------------------------------------------------
    def emit_event(self, involved: dict[str, Any], reason: str, message: str,
                   warning: bool = False) -> None:
        """A core/v1 Event about `involved` (kubectl describe / get events show it)."""
        stamp = now_utc()
        name = f"{involved['name']}.{time.time_ns():x}"[:253]
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": self.namespace},
            "involvedObject": {**involved, "namespace": self.namespace},
            "reason": reason, "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "firstTimestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lastTimestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "count": 1,
            "source": {"component": "triton-ops", "host": socket.gethostname()},
            "reportingComponent": "triton-ops",
            "reportingInstance": socket.gethostname()[:128],
        }
        self._call(f"create event about {involved['name']}",
                   lambda: self.core.create_namespaced_event(self.namespace, body))

    # -- Deployments ---------------------------------------------------------------------
    def get_deployment(self, name: str) -> dict[str, Any]:
        return self._dict(self._call(f"deployment {self.namespace}/{name}",
                                     lambda: self.apps.read_namespaced_deployment(
                                         name, self.namespace)))

    def patch_deployment(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self._dict(self._call(f"update deployment {self.namespace}/{name}",
                                     lambda: self.apps.patch_namespaced_deployment(
                                         name, self.namespace, patch,
                                         _content_type=MERGE_PATCH)))

    # -- HTTPRoute -----------------------------------------------------------------------
    def get_httproute(self, name: str) -> dict[str, Any]:
        return self._dict(self._call(
            f"httproute {self.namespace}/{name}",
            lambda: self.custom.get_namespaced_custom_object(
                GATEWAY_GROUP, GATEWAY_VERSION, self.namespace, "httproutes", name)))

    def patch_httproute(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self._dict(self._call(
            f"update httproute {self.namespace}/{name}",
            lambda: self.custom.patch_namespaced_custom_object(
                GATEWAY_GROUP, GATEWAY_VERSION, self.namespace, "httproutes", name, patch,
                _content_type=MERGE_PATCH)))

    # -- Service proxy -------------------------------------------------------------------
    def service_post(self, service: str, port: str, path: str, payload: dict[str, Any],
                     timeout_s: float = 30.0) -> tuple[int, Any]:
        """POST JSON to a Service through the API server's proxy (works wherever kubectl
        does: no port-forward, no ingress). Returns (status, decoded body)."""
        resource = (f"/api/v1/namespaces/{self.namespace}/services/{service}:{port}/proxy/"
                    f"{path.lstrip('/')}")

        def call() -> tuple[int, Any]:
            method, url, headers, body, post = self.api.param_serialize(
                "POST", resource, header_params={"Content-Type": "application/json",
                                                 "Accept": "application/json"},
                body=payload, auth_settings=["BearerToken"])
            resp = self.api.call_api(method, url, headers, body, post,
                                     _request_timeout=timeout_s)
            raw = resp.read()
            try:
                return resp.status, json.loads(raw) if raw else None
            except ValueError:
                return resp.status, raw.decode(errors="replace")

        return self._call(f"proxy to service {service}", call)


# -- traffic: pure arithmetic, unit-tested ------------------------------------------------
def route_weights(route: dict[str, Any], stable_service: str, canary_service: str,
                  weight: int) -> dict[str, Any]:
    """The HTTPRoute spec with `weight`% on canary_service and the rest on stable_service in
    every rule that references both; raises K8sError when no rule does."""
    spec = json.loads(json.dumps(route.get("spec", {})))
    touched = 0
    for rule in spec.get("rules", []):
        refs = rule.get("backendRefs", [])
        names = {r.get("name") for r in refs}
        if {stable_service, canary_service} <= names:
            for ref in refs:
                if ref.get("name") == canary_service:
                    ref["weight"] = weight
                elif ref.get("name") == stable_service:
                    ref["weight"] = 100 - weight
            touched += 1
    if not touched:
        name = route.get("metadata", {}).get("name")
        raise K8sError(f"HTTPRoute {name} has no rule with backendRefs to both "
                       f"{stable_service} and {canary_service}; install the chart with "
                       "gateway.enabled=true or use the replica-ratio mode (no --gateway)")
    return spec


def route_canary_weight(route: dict[str, Any], canary_service: str) -> int | None:
    for rule in route.get("spec", {}).get("rules", []):
        refs = rule.get("backendRefs", [])
        total = sum(int(r.get("weight", 1)) for r in refs)
        for ref in refs:
            if ref.get("name") == canary_service and total:
                return round(100 * int(ref.get("weight", 1)) / total)
    return None


def canary_replicas_for(weight: int, stable_replicas: int, max_canary: int) -> int:
    """Canary replicas so that canary/(canary+stable) is as close to weight% as allowed.

    The stable Deployment is never scaled down before promotion, so the share is reached by
    adding canary pods: c = ceil(s * w / (100 - w)), at least 1 while w > 0, at most
    max_canary (at w = 100 the canary gets max_canary pods next to stable's)."""
    if weight <= 0:
        return 0
    if weight >= 100:
        return max_canary
    return max(1, min(max_canary, math.ceil(stable_replicas * weight / (100 - weight))))
