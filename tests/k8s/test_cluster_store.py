"""The Kubernetes layer with the real kubernetes client over real HTTP against the kmock API
emulator (plus resourceVersion conflicts, see emulator.py): state ConfigMap, Lease, Events,
HTTPRoute weights, replica ratio."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import kmock
import pytest
from typer.testing import CliRunner

from triton_ops.cli.main import app
from triton_ops.k8s.cluster import (
    Cluster,
    Conflict,
    K8sError,
    canary_replicas_for,
    connect,
    default_namespace,
    route_canary_weight,
    route_weights,
)
from triton_ops.k8s.prometheus import Prometheus
from triton_ops.k8s.store import ConfigMapStateStore, LeaseLock
from triton_ops.k8s.target import KubernetesTarget
from triton_ops.rollout.state import AuditRecord, Command, Phase, RolloutSpec, new_state
from triton_ops.rollout.store import RolloutLocked
from triton_ops.rollout.target import TargetError

from .cluster_sim import chart_values, install_chart
from .emulator import RunningApiServer, api_server

NS = "ml"


@pytest.fixture
def server() -> Iterator[RunningApiServer]:
    with api_server() as srv:
        yield srv


@pytest.fixture
def cluster(server: RunningApiServer, tmp_path: Path) -> Cluster:
    kubeconfig = server.kubeconfig(tmp_path / "kubeconfig", namespace=NS)
    assert default_namespace(kubeconfig) == NS
    return Cluster(connect(kubeconfig), NS)


def test_kubeconfig_errors_are_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bad").write_text("clusters: [")
    with pytest.raises(K8sError, match="cannot load the Kubernetes configuration"):
        connect(tmp_path / "bad")
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(K8sError, match="no kubeconfig found"):
        connect()


def test_unreachable_api_is_a_message(tmp_path: Path) -> None:
    from .emulator import RunningApiServer as R

    fake = R(None, "http://127.0.0.1:9", None)  # type: ignore[arg-type]
    cl = Cluster(connect(fake.kubeconfig(tmp_path / "kc")), NS)
    with pytest.raises(K8sError, match="cannot reach the Kubernetes API"):
        cl.get_deployment("x")


def test_configmap_write_with_stale_resource_version_conflicts(cluster: Cluster) -> None:
    created = cluster.create_configmap("c", {"a": "1"})
    rv = created["metadata"]["resourceVersion"]
    cluster.patch_configmap("c", {"b": "2"}, rv)
    with pytest.raises(Conflict):
        cluster.patch_configmap("c", {"b": "3"}, rv)
    assert cluster.get_configmap("c")["data"] == {"a": "1", "b": "2"}
    assert cluster.get_configmap("missing") is None


def spec() -> RolloutSpec:
    return RolloutSpec(model="affine", stable=[1], canary=2, steps=[10, 50, 100])


def test_state_audit_commands_known_good_round_trip(cluster: Cluster,
                                                    server: RunningApiServer) -> None:
    store = ConfigMapStateStore(cluster, "affine")
    assert store.load() is None and store.read_audit() == [] and store.known_good() == []
    state = new_state(spec(), 1000.0)
    store.save(state)
    assert store.load() == state
    record = AuditRecord(time=1.0, model="affine", canary=2, event="window-analyzed",
                         from_phase=Phase.PROGRESSING, phase=Phase.ROLLING_BACK, step=0,
                         weight=10, reason="error-rate: canary 3/20 > 0.1%")
    store.append_audit(record)
    store.append_audit(record.model_copy(update={"event": "rolled-back",
                                                 "phase": Phase.ROLLED_BACK}))
    assert [r["event"] for r in store.read_audit()] == ["window-analyzed", "rolled-back"]
    store.record_known_good([1])
    store.record_known_good([1])
    store.record_known_good([2])
    assert store.known_good() == [[1], [2]]
    assert not store.pending_command() and store.take_command() is None
    store.send_command(Command(action="abort", by="alice"))
    assert store.pending_command()
    assert store.take_command() == Command(action="abort", by="alice")
    assert store.take_command() is None
    # Everything lives in one ConfigMap named after the model; each record is an Event.
    cms = server.objects("v1/configmaps")
    assert set(cms[(NS, "triton-ops-rollout-affine")]["data"]) == {
        "state.json", "audit.jsonl", "known_good.json"}
    events = sorted(server.objects("v1/events").values(), key=lambda e: e["metadata"]["name"])
    assert [(e["reason"], e["type"]) for e in events] == [("WindowAnalyzed", "Warning"),
                                                          ("RolledBack", "Warning")]
    assert events[0]["involvedObject"] == {"apiVersion": "v1", "kind": "ConfigMap",
                                           "name": "triton-ops-rollout-affine", "namespace": NS}
    assert "error-rate: canary 3/20" in events[0]["message"]


@pytest.mark.parametrize("key, text, message", [
    ("state.json", "{not json", r"state\.json: not a valid rollout state"),
    ("audit.jsonl", '{"event": "a"}\n[1, 2]\n', r"audit\.jsonl:2: not a JSON object"),
    ("audit.jsonl", '"x"\n', r"audit\.jsonl:1: not a JSON object"),
    ("known_good.json", '{"a": 1}', r"known_good\.json: not a list of version lists"),
    ("known_good.json", '[[1, "x"]]', r"known_good\.json: not a list of version lists"),
    ("known_good.json", '[["²"]]', r"known_good\.json: not a list of version lists"),
    ("known_good.json", "[[1.5]]", r"known_good\.json: not a list of version lists"),
    ("known_good.json", "[" * 100_000, r"known_good\.json: not a list of version lists"),
    ("target.json", "[1]", r"target\.json: not a JSON object"),
])
def test_configmap_keys_that_are_not_what_triton_ops_writes_are_store_errors(
        cluster: Cluster, server: RunningApiServer, tmp_path: Path, key: str, text: str,
        message: str) -> None:
    from triton_ops.rollout.store import StoreError

    store = ConfigMapStateStore(cluster, "affine")
    store.save(new_state(spec(), 1000.0))
    cluster.patch_configmap(store.name, {key: text},
                            cluster.get_configmap(store.name)["metadata"]["resourceVersion"])
    read = {"state.json": store.load, "audit.jsonl": store.read_audit,
            "known_good.json": store.known_good, "target.json": store.target_options}[key]
    with pytest.raises(StoreError, match=rf"configmap/{NS}/triton-ops-rollout-affine {message}"):
        read()
    if key == "known_good.json":
        with pytest.raises(StoreError, match=message):
            store.record_known_good([3])
        assert cluster.get_configmap(store.name)["data"][key] == text  # never overwritten
    # The commands that read the key say the same, with exit 2 and no traceback.
    command = {"target.json": "resume", "known_good.json": None}.get(key, "status")
    if command is not None:
        kubeconfig = str(server.kubeconfig(tmp_path / "kc", NS))
        result = CliRunner().invoke(app, ["k8s", command, "affine", "--kubeconfig", kubeconfig])
        assert result.exception is None or isinstance(result.exception, SystemExit), \
            repr(result.exception)
        assert result.exit_code == 2, result.output
        assert re.search(message, result.output.replace("\n", "")), result.output


def test_a_command_from_another_machine_survives_concurrent_state_writes(
        cluster: Cluster) -> None:
    # Two stores = two machines. The driver keeps saving state while another machine sends
    # a command: optimistic concurrency must keep both writes.
    driver = ConfigMapStateStore(cluster, "affine")
    other = ConfigMapStateStore(cluster, "affine")
    state = new_state(spec(), 0.0)
    driver.save(state)
    errors: list[BaseException] = []

    def keep_saving() -> None:
        try:
            for i in range(30):
                driver.save(state.model_copy(update={"revision": i}))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=keep_saving)
    thread.start()
    for _ in range(5):
        other.send_command(Command(action="promote", by="bob"))
    thread.join(timeout=60)
    assert not errors
    assert driver.load().revision == 29
    assert driver.take_command() == Command(action="promote", by="bob")


def test_stale_writes_are_retried_not_lost(cluster: Cluster) -> None:
    store = ConfigMapStateStore(cluster, "affine")
    store.record_known_good([1])
    reads = {"n": 0}
    original = store._read

    def racing_read() -> tuple[dict[str, str], str | None]:
        data, version = original()
        reads["n"] += 1
        if reads["n"] == 1:  # someone else writes between our read and our patch
            ConfigMapStateStore(cluster, "affine").record_known_good([7])
        return data, version

    store._read = racing_read  # type: ignore[method-assign]
    store.record_known_good([2])
    assert reads["n"] == 2  # the first patch conflicted, the second (recomputed) landed
    assert store.known_good() == [[1], [7], [2]]


def test_lease_excludes_a_second_rollout_and_expires(cluster: Cluster) -> None:
    first = ConfigMapStateStore(cluster, "affine", lease_duration_s=30)
    second = ConfigMapStateStore(cluster, "affine", lease_duration_s=30)
    with first.lock():
        assert second.is_locked()
        assert first.identity in second.owner()
        with pytest.raises(RolloutLocked, match="held by"):
            with second.lock():
                pass
    # Released: the second can take it.
    assert not second.is_locked()
    with second.lock():
        assert first.is_locked()
    # A holder that died leaves a lease that expires; then it can be taken over.
    clock = {"now": dt.datetime.now(dt.timezone.utc)}
    dead = LeaseLock(cluster, "triton-ops-rollout-other", "dead-host/1", 15,
                     clock=lambda: clock["now"])
    dead.acquire()
    alive = LeaseLock(cluster, "triton-ops-rollout-other", "alive/2", 15,
                      clock=lambda: clock["now"])
    with pytest.raises(RolloutLocked):
        alive.acquire()
    clock["now"] += dt.timedelta(seconds=16)
    alive.acquire()
    assert alive.holder() == ("alive/2", True)
    assert not dead.renew() and dead.lost
    lease = cluster.get_lease("triton-ops-rollout-other")
    assert lease["spec"]["leaseTransitions"] == 1


def test_lease_is_renewed_while_held(cluster: Cluster) -> None:
    store = ConfigMapStateStore(cluster, "affine", lease_duration_s=3)
    with store.lock():
        first = cluster.get_lease(store.name)["spec"]["renewTime"]
        deadline = dt.datetime.now() + dt.timedelta(seconds=10)
        while cluster.get_lease(store.name)["spec"]["renewTime"] == first:
            assert dt.datetime.now() < deadline, "the lease was never renewed"
            threading.Event().wait(0.2)
    assert "holderIdentity" not in cluster.get_lease(store.name)["spec"]


ROUTE = {
    "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
    "metadata": {"name": "demo-triton"},
    "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [
        {"name": "demo-triton-stable", "port": 8000, "weight": 100},
        {"name": "demo-triton-canary", "port": 8000, "weight": 0}]}]},
}


def test_route_weight_arithmetic() -> None:
    spec_ = route_weights(ROUTE, "demo-triton-stable", "demo-triton-canary", 25)
    assert [r["weight"] for r in spec_["rules"][0]["backendRefs"]] == [75, 25]
    assert ROUTE["spec"]["rules"][0]["backendRefs"][0]["weight"] == 100  # input untouched
    assert route_canary_weight({"spec": spec_}, "demo-triton-canary") == 25
    with pytest.raises(K8sError, match="no rule with backendRefs to both"):
        route_weights(ROUTE, "demo-triton-stable", "other", 10)


def test_replica_ratio_arithmetic() -> None:
    assert canary_replicas_for(0, 4, 10) == 0
    assert canary_replicas_for(10, 4, 10) == 1     # 1/5 = 20%: the least above 0
    assert canary_replicas_for(50, 4, 10) == 4
    assert canary_replicas_for(75, 4, 10) == 10    # wanted 12, capped
    assert canary_replicas_for(100, 4, 6) == 6


def test_httproute_patch_through_the_custom_objects_api(cluster: Cluster) -> None:
    cluster.custom.create_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", NS, "httproutes", ROUTE)
    route = cluster.get_httproute("demo-triton")
    cluster.patch_httproute("demo-triton", {"spec": route_weights(
        route, "demo-triton-stable", "demo-triton-canary", 10)})
    assert route_canary_weight(cluster.get_httproute("demo-triton"), "demo-triton-canary") == 10
    with pytest.raises(K8sError, match="not found"):
        cluster.get_httproute("nope")


def test_rollout_target_k8s_maps_to_the_k8s_commands(server: RunningApiServer,
                                                     tmp_path: Path) -> None:
    kubeconfig = str(server.kubeconfig(tmp_path / "kc", NS))

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, list(args))
        return result.exit_code, result.output

    # Without --target the rollout is the single Triton's (its repository has no model m).
    assert run("rollout", "m", "--canary", "2")[1].startswith(
        "error: model_repository/m does not exist")
    for args in (["rollout", "m", "--canary", "2", "--target", "k8s"],
                 ["rollout", "start", "m", "--target=k8s", "--canary", "2"]):
        code, output = run(*args, "--kubeconfig", kubeconfig)
        assert code == 2 and "--release is required with --target k8s" in output
    code, output = run("rollout", "abort", "m", "--target", "k8s", "-n", "x",
                       "--kubeconfig", kubeconfig)
    assert code == 2 and "no Kubernetes rollout of m recorded in namespace x" in output
    code, output = run("rollout", "status", "affine", "--target", "k8s",
                       "--kubeconfig", kubeconfig)
    assert code == 1 and "no rollout of affine recorded in configmap/ml/" in output


def test_stable_versions_are_what_the_stable_template_names(server: RunningApiServer,
                                                            cluster: Cluster) -> None:
    install_chart(server, chart_values(None, True))
    target = KubernetesTarget(cluster=cluster, model="affine", release="demo-triton",
                              prometheus=Prometheus("http://127.0.0.1:9"))
    assert target.stable_versions() == [1]  # no pod is ready here: the template counts
    cluster.patch_deployment("demo-triton-stable", {"spec": {"template": {"metadata": {
        "annotations": {"triton-ops.io/versions": '{"affine": [3, 4], "other": [7]}'}}}}})
    assert target.stable_versions() == [3, 4]
    other = KubernetesTarget(cluster=cluster, model="affine", release="nope-triton",
                             prometheus=Prometheus("http://127.0.0.1:9"))
    with pytest.raises(TargetError, match="is the triton chart installed in namespace 'ml'"):
        other.stable_versions()


def test_rollout_target_k8s_runs_on_the_release_with_the_kubernetes_defaults(
        server: RunningApiServer, cluster: Cluster, tmp_path: Path) -> None:
    """`rollout --target k8s` builds the Kubernetes target from its options, records them in
    the rollout's ConfigMap, and takes the k8s defaults (5m windows, 100 requests)."""
    install_chart(server, chart_values(None, True))
    key = (kmock.resource("apps/v1/deployments"), NS, "demo-triton-stable")
    server.call(lambda: server.emulator.objects[key].patch({"status": {
        "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2}}))
    envelope = str(Path(__file__).parent / "data" / "affine_envelope.yaml")
    kubeconfig = str(server.kubeconfig(tmp_path / "kc", NS))
    # No pod ever gets ready here: with --ready-timeout 0s the canary fails to load at once.
    result = CliRunner().invoke(app, [
        "rollout", "affine", "--canary", "4", "--target", "k8s", "--release", "demo",
        "--prometheus", "http://127.0.0.1:9", "--ready-timeout", "0s", "--envelope", envelope,
        "--kubeconfig", kubeconfig, "--format", "json"])
    assert result.exit_code == 1, result.output
    final = json.loads(result.stdout)
    assert final["phase"] == "RolledBack" and final["stable"] == [1]
    store = ConfigMapStateStore(cluster, "affine")
    state = store.load()
    assert state is not None
    assert state.spec.interval_s == 300 and state.spec.policy.min_requests == 100
    options = store.target_options()
    assert (options["release"], options["prometheus"], options["ready_timeout_s"],
            options["repo"]) == ("demo", "http://127.0.0.1:9", 0.0, None)
    status = CliRunner().invoke(app, ["rollout", "status", "affine", "--target", "k8s",
                                      "--kubeconfig", kubeconfig])
    assert status.exit_code == 0 and "phase     RolledBack" in status.output
