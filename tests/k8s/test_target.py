"""The Kubernetes rollout target driven by the real rollout engine: the chart's objects in the
API emulator (real client, real HTTP), real Triton servers as the stable and canary pods, a
real Prometheus scraping them, and live traffic split by the HTTPRoute weights or the
replica ratio. See cluster_sim.py for what stands in for Kubernetes components."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from triton_ops.envelope.loader import require_envelope
from triton_ops.k8s.cluster import Cluster, connect
from triton_ops.k8s.prometheus import Prometheus
from triton_ops.k8s.target import KubernetesTarget
from triton_ops.k8s.values import probe_values
from triton_ops.rollout.analysis import AnalysisPolicy
from triton_ops.rollout.engine import Engine, RolloutRefused
from triton_ops.rollout.state import Phase, RolloutSpec
from triton_ops.rollout.target import RolloutTarget
from triton_ops.server.local import LocalTriton

from .cluster_sim import (
    FULLNAME,
    NS,
    Controller,
    Gateway,
    chart_values,
    install_chart,
    proxy_setup,
    wait_until,
)
from .emulator import RunningApiServer, api_server
from .support import affine_request, chart_restricted_api, prometheus_server, require_prometheus

pytestmark = pytest.mark.slow
ENVELOPE = require_envelope(Path(__file__).parent / "data" / "affine_envelope.yaml")
PROBE = probe_values(ENVELOPE)


@dataclass
class Fleet:
    tritons: dict[str, LocalTriton]
    prometheus: str
    api_env: dict[str, str]  # the pods' key for Triton's restricted APIs


@pytest.fixture(scope="module")
def fleet(affine_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    require_prometheus()
    tmp = tmp_path_factory.mktemp("k8s-fleet")
    # The pods' tritonserver as the chart starts it: only inference, health and metadata
    # answer without the key.
    restricted_args, api_env = chart_restricted_api()
    tritons = {track: LocalTriton(affine_repository, log_path=tmp / f"{track}.log",
                                  startup_timeout_s=120,
                                  extra_args=["--metrics-config=summary_latencies=true",
                                              *restricted_args])
               for track in ("stable", "canary")}
    with tritons["stable"], tritons["canary"]:
        jobs = {"triton": [(t.metrics_url.split("//")[1].split("/")[0], {"namespace": NS})
                           for t in tritons.values()]}
        with prometheus_server(tmp / "prometheus", jobs) as url:
            yield Fleet(tritons, url, api_env)


@dataclass
class Sim:
    server: RunningApiServer
    cluster: Cluster
    controller: Controller
    gateway: Gateway
    fleet: Fleet

    def target(self, gateway: bool = True, **kwargs: object) -> KubernetesTarget:
        return KubernetesTarget(
            cluster=self.cluster, model="affine", release=FULLNAME,
            prometheus=Prometheus(self.fleet.prometheus, matchers=[f'namespace="{NS}"']),
            envelope=ENVELOPE, gateway=gateway, scrape_lag_s=2.5, poll_s=0.2,
            ready_timeout_s=30, **kwargs)  # type: ignore[arg-type]

    def deployment(self, track: str) -> dict:
        return self.server.objects("apps/v1/deployments")[(NS, f"{FULLNAME}-{track}")]

    def route_weights(self) -> list[int]:
        route = self.server.objects("gateway.networking.k8s.io/v1/httproutes")[(NS, FULLNAME)]
        return [r["weight"] for r in route["spec"]["rules"][0]["backendRefs"]]


def make_sim(fleet: Fleet, tmp_path: Path, gateway: bool) -> Iterator[Sim]:
    with api_server(proxy_setup(fleet.tritons)) as server:
        install_chart(server, chart_values(PROBE, gateway))
        cluster = Cluster(connect(server.kubeconfig(tmp_path / "kubeconfig", NS)), NS)
        controller = Controller(server, fleet.tritons, api_env=fleet.api_env).start(
            {"affine": PROBE})
        wait_until(lambda: int((server.objects("apps/v1/deployments")[
            (NS, f"{FULLNAME}-stable")].get("status") or {}).get("readyReplicas") or 0) == 2,
            what="stable ready")
        traffic = Gateway(server, fleet.tritons, gateway).start()
        try:
            yield Sim(server, cluster, controller, traffic, fleet)
        finally:
            traffic.stop()
            controller.stop()


@pytest.fixture
def sim(fleet: Fleet, tmp_path: Path) -> Iterator[Sim]:
    yield from make_sim(fleet, tmp_path, gateway=True)


@pytest.fixture
def ratio_sim(fleet: Fleet, tmp_path: Path) -> Iterator[Sim]:
    yield from make_sim(fleet, tmp_path, gateway=False)


def spec(canary: int, **overrides: object) -> RolloutSpec:
    values: dict[str, object] = dict(
        model="affine", stable=[1], canary=canary, steps=[50, 100], interval_s=2.0,
        failure_limit=1, max_inconclusive=3, shadow_samples=5,
        policy=AnalysisPolicy(min_requests=10, min_agreement_samples=3, max_error_rate=0.01,
                              p99_slo_us=2_000_000, p99_slack_us=300_000))
    values.update(overrides)
    return RolloutSpec.model_validate(values)


def test_good_version_is_promoted_by_httproute_weights(sim: Sim) -> None:
    target = sim.target()
    assert isinstance(target, RolloutTarget)
    assert target.serving_versions() == [1]
    seen: list[tuple[str, int]] = []
    engine = Engine(target, poll_s=0.2,
                    listener=lambda state, record: seen.append((state.phase.value,
                                                                sim.route_weights()[1])))
    state = engine.start(spec(4))
    assert state.phase is Phase.SUCCEEDED, state.reason
    # The canary took 50% then 100% of the live traffic before promotion.
    assert ("Progressing", 50) in seen and ("Promoting", 100) in seen
    assert sim.gateway.sent["canary"] > 20
    # Stable now serves 4 (rolled, probe-checked), canary drained, route back on stable.
    assert '"affine":[4]' in sim.deployment("stable")["spec"]["template"]["metadata"][
        "annotations"]["triton-ops.io/versions"]
    assert sim.deployment("canary")["spec"]["replicas"] == 0
    assert sim.route_weights() == [100, 0]
    wait_until(lambda: target.serving_versions() == [4], what="stable serving 4")
    # Audit in the ConfigMap, an Event per decision, the lease released.
    audit = target.store.read_audit()
    assert [r["event"] for r in audit][-1] == "promoted"
    assert sum(1 for r in audit if r.get("verdict") == "PASS") == 2
    events = sim.server.objects("v1/events")
    assert len(events) == len(audit)
    assert not target.store.is_locked()
    assert target.store.known_good()[-1] == [4]
    assert not sim.controller.errors


def test_failing_version_is_rolled_back_and_stable_untouched(sim: Sim) -> None:
    target = sim.target()
    stable_before = sim.deployment("stable")["spec"]
    state = Engine(target, poll_s=0.2).start(spec(3))
    assert state.phase is Phase.ROLLED_BACK, state.reason
    assert "error-rate" in state.reason
    assert sim.deployment("stable")["spec"] == stable_before
    assert sim.deployment("canary")["spec"]["replicas"] == 0
    assert sim.route_weights() == [100, 0]
    warnings = [e for e in sim.server.objects("v1/events").values() if e["type"] == "Warning"]
    assert any(e["reason"] == "RolledBack" for e in warnings)


def test_wrong_answers_are_caught_by_shadow_comparison_through_the_service_proxy(
        sim: Sim) -> None:
    # v5 passes the golden probe (ready) and answers 200, but adds 0.5 whenever X[0] > 0:
    # counters look healthy, outputs are not.
    target = sim.target()
    state = Engine(target, poll_s=0.2).start(spec(5))
    assert state.phase is Phase.ROLLED_BACK, state.reason
    assert "output-agreement" in state.reason
    assert state.last_verdict is not None and state.last_verdict.critical


def test_replica_ratio_without_a_gateway(ratio_sim: Sim) -> None:
    target = ratio_sim.target(gateway=False, max_canary_replicas=4)
    state = Engine(target, poll_s=0.2).start(spec(4))
    assert state.phase is Phase.SUCCEEDED, state.reason
    # 50% next to 2 stable pods = 2 canary pods; 100% = the cap.
    assert ratio_sim.controller.max_replicas["canary"] == 4
    assert ratio_sim.deployment("canary")["spec"]["replicas"] == 0
    assert ratio_sim.deployment("stable")["spec"]["replicas"] == 2
    assert ratio_sim.gateway.sent["canary"] > 20


@pytest.mark.parametrize("version", [2, 9], ids=["fails-golden-probe", "not-in-repository"])
def test_canary_that_never_becomes_ready_is_abandoned(sim: Sim, version: int) -> None:
    # v2 loads but answers the golden probe wrong; v9 does not exist: neither gets ready.
    target = sim.target()
    target.ready_timeout_s = 3
    state = Engine(target, poll_s=0.2,
                   sleep=lambda s: time.sleep(min(s, 0.5))).start(spec(version))
    assert state.phase in (Phase.ROLLED_BACK, Phase.FAILED)
    assert "ready pods" in state.reason or "ready pods" in str(target.store.read_audit())
    assert sim.deployment("canary")["spec"]["replicas"] == 0


def test_second_rollout_is_refused_and_abort_works_from_another_machine(sim: Sim) -> None:
    import threading

    driver = sim.target()
    results: dict[str, object] = {}
    thread = threading.Thread(target=lambda: results.setdefault(
        "state", Engine(driver, poll_s=0.2).start(spec(4, steps=[10, 20, 30, 40, 50]))))
    thread.start()
    # Another machine: its own client and store on the same cluster.
    other = sim.target()
    wait_until(lambda: other.store.is_locked() or "state" in results, what="rollout started")
    with pytest.raises(RolloutRefused, match="still Initializing|still Progressing|lease"):
        Engine(other, poll_s=0.2).start(spec(4))
    wait_until(lambda: (st := other.store.load()) is not None and
               st.phase is Phase.PROGRESSING, what="progressing")
    state, drove = Engine(other, poll_s=0.2).command("abort", by="bob@laptop")
    assert not drove  # the driver picked the command up
    thread.join(timeout=120)
    final = results["state"]
    assert final.phase is Phase.ROLLED_BACK  # type: ignore[attr-defined]
    assert "bob@laptop" in final.reason  # type: ignore[attr-defined]


def test_cli_rollout_and_status_on_the_cluster(sim: Sim, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from triton_ops.cli.main import app

    kubeconfig = str(tmp_path / "kubeconfig")  # written by the sim fixture
    common = ["--kubeconfig", kubeconfig, "-n", NS]
    envelope = str(Path(__file__).parent / "data" / "affine_envelope.yaml")
    runner = CliRunner()
    wrong = runner.invoke(app, ["k8s", "rollout", "affine", "--canary", "4", "--release",
                                "nope", "--prometheus", sim.fleet.prometheus,
                                "--envelope", envelope, *common])
    assert wrong.exit_code == 2 and "is the triton chart installed in namespace" in wrong.output
    result = runner.invoke(app, [
        "k8s", "rollout", "affine", "--canary", "4", "--release", "demo",
        "--prometheus", sim.fleet.prometheus, "--match", f'namespace="{NS}"',
        "--envelope", envelope, "--steps", "50,100", "--interval", "2s", "--scrape-lag", "2.5s",
        "--min-requests", "10", "--shadow-samples", "5", "--p99-slack", "300ms",
        "--format", "json", *common])
    assert result.exit_code == 0, result.output
    final = json.loads(result.stdout[result.stdout.index("{"):])
    assert final["phase"] == "Succeeded" and final["serving"] == [4]
    status = runner.invoke(app, ["k8s", "status", "affine", "--format", "json", *common])
    assert status.exit_code == 0, status.output
    data = json.loads(status.stdout)
    assert data["state"]["phase"] == "Succeeded" and data["driven"] is False
    text = runner.invoke(app, ["k8s", "status", "affine", *common])
    assert "phase     Succeeded" in text.output
    # abort of a finished rollout changes nothing and says so by its exit code.
    abort = runner.invoke(app, ["k8s", "abort", "affine", *common])
    assert abort.exit_code == 0, abort.output
    # Back to the previous known-good versions, from the record in the cluster.
    back = runner.invoke(app, ["k8s", "rollback", "affine", *common])
    assert back.exit_code == 0, back.output
    assert "stable serves [1] (was [4])" in back.output
    wait_until(lambda: sim.target().serving_versions() == [1], what="stable back on 1")
    none = runner.invoke(app, ["k8s", "status", "other", *common])
    assert none.exit_code == 1 and "no rollout of other" in none.output


class _Killed(Exception):
    pass


def test_resume_from_another_machine_after_the_driver_died(sim: Sim) -> None:
    import threading

    from triton_ops.k8s.store import ConfigMapStateStore

    driver = sim.target()
    driver.store = ConfigMapStateStore(driver.cluster, "affine", lease_duration_s=3)
    dead = threading.Event()
    release = threading.Event()

    def sleep(seconds: float) -> None:
        # The driver "dies" while paused at the manual gate: it stops renewing its lease and
        # never acts again (no clean-up runs, as with a killed process).
        state = driver.store.load()
        if state is not None and state.phase is Phase.PAUSED:
            driver.store.lease._stop_renewing()
            dead.set()
            release.wait(120)
            raise _Killed
        time.sleep(seconds)

    thread = threading.Thread(target=lambda: pytest.raises(_Killed, Engine(
        driver, poll_s=0.2, sleep=sleep).start, spec(4, steps=[50], confirm=True)))
    thread.start()
    try:
        assert dead.wait(90), "the driver never reached the manual gate"
        other = sim.target()
        assert other.store.is_locked()  # the dead driver's lease has not expired yet
        wait_until(lambda: not other.store.is_locked(), timeout_s=10, what="lease expiry")
        results: dict[str, object] = {}
        resumer = threading.Thread(target=lambda: results.setdefault(
            "state", Engine(other, poll_s=0.2).resume()))
        resumer.start()
        third = sim.target()
        wait_until(lambda: third.store.is_locked(), what="resumed")
        state, drove = Engine(third, poll_s=0.2).command("promote", by="carol@ops")
        assert not drove
        resumer.join(timeout=120)
        final = results["state"]
        assert final.phase is Phase.SUCCEEDED, final.reason  # type: ignore[attr-defined]
        events = [r["event"] for r in third.store.read_audit()]
        assert "resumed" in events and events[-1] == "promoted"
    finally:
        release.set()
        thread.join(timeout=30)


def test_the_service_proxy_reaches_inference_but_not_model_loads(sim: Sim) -> None:
    """The rollout's Role may proxy to the track Services; through that path a model load
    (which may carry the model's files: code execution in the pod) is refused, with or
    without a guessed header, while inference answers."""
    service = f"{FULLNAME}-stable"
    status, answer = sim.cluster.service_post(service, "http", "v2/models/affine/versions/1/"
                                              "infer", affine_request([1.0, 2.0, 3.0, 4.0]))
    assert status == 200 and answer["outputs"][0]["data"] == [2.0, 4.0, 6.0, 8.0]
    files = {"parameters": {"config": "{}", "file:1/model.py": "aW1wb3J0IG9z"}}
    for path in ("v2/repository/models/affine/load", "v2/repository/models/affine/unload",
                 "v2/repository/index"):
        status, body = sim.cluster.service_post(service, "http", path, files)
        assert status == 403 and "restricted" in body["message"], (path, status, body)
    # The caller's headers reach Triton through the proxy: knowing the header is no help.
    api = sim.cluster.api
    method, url, headers, body, post = api.param_serialize(
        "POST", f"/api/v1/namespaces/{NS}/services/{service}:http/proxy/v2/repository/"
        "models/affine/load", body=files, auth_settings=["BearerToken"],
        header_params={"Content-Type": "application/json", "triton-ops-api-key": "guess"})
    response = api.call_api(method, url, headers, body, post)
    assert response.status == 403 and b"restricted" in response.read()
