"""The Helm chart offline: rendered with the bundled Helm SDK, linted, and every manifest
validated against the strict Kubernetes schemas of a pinned release."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from hostile import alias_bomb_in_probe
from typer.testing import CliRunner

from triton_ops.cli.main import app
from triton_ops.k8s import chart
from triton_ops.k8s.values_io import values_from_dir

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data" / "envelopes"
EXAMPLE_ENVELOPES = sorted((REPO / "envelopes").glob("*.yaml"))

FULL = {
    "gateway": {"enabled": True, "canaryWeight": 10, "hostnames": ["triton.example.com"]},
    "autoscaling": {"enabled": True},
    "serviceMonitor": {"enabled": True},
    "modelRepository": {"uri": "s3://bucket/models", "credentialsSecret": "s3-creds"},
    "image": {"digest": "sha256:" + "b" * 64},
}


def by_kind(manifests: list[chart.Manifest], kind: str) -> list[dict]:
    return [m.doc for m in manifests if m.doc["kind"] == kind]


def check_chart(values: dict) -> list[chart.Manifest]:
    manifests = chart.render(values, release="demo", namespace="ml")
    assert chart.lint(values) == []
    assert chart.validate(manifests) == []
    return manifests


def test_default_values_render_lint_and_validate() -> None:
    manifests = check_chart({})
    kinds = sorted(m.doc["kind"] for m in manifests)
    assert kinds == sorted(["ConfigMap", "Deployment", "Deployment", "PodDisruptionBudget",
                            "ServiceAccount", "ServiceAccount", "Role", "RoleBinding",
                            "Secret", "Service", "Service", "Service"])


def test_every_optional_object_renders_and_validates() -> None:
    manifests = check_chart(FULL)
    hpa = by_kind(manifests, "HorizontalPodAutoscaler")[0]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == \
        "triton_queue_duration_us_per_request"
    stable = next(d for d in by_kind(manifests, "Deployment") if d["metadata"]["name"].endswith(
        "-stable"))
    # The HPA owns the stable replica count.
    assert "replicas" not in stable["spec"]
    container = stable["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "nvcr.io/nvidia/tritonserver@sha256:" + "b" * 64
    assert "--model-repository=s3://bucket/models" in container["args"]
    assert container["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert by_kind(manifests, "ServiceMonitor")[0]["spec"]["endpoints"][0]["port"] == "metrics"


def test_httproute_splits_by_weight_between_track_services() -> None:
    manifests = check_chart(FULL)
    route = by_kind(manifests, "HTTPRoute")[0]
    refs = route["spec"]["rules"][0]["backendRefs"]
    assert [(r["name"], r["weight"]) for r in refs] == [("demo-triton-stable", 90),
                                                       ("demo-triton-canary", 10)]
    services = {s["metadata"]["name"]: s for s in by_kind(manifests, "Service")}
    for ref in refs:
        svc = services[ref["name"]]
        assert ref["port"] in [p["port"] for p in svc["spec"]["ports"]]
    # Without a Gateway the all-tracks Service spreads traffic by replica ratio.
    assert "triton-ops.io/track" not in services["demo-triton"]["spec"]["selector"]


def test_out_of_range_weight_fails_with_a_message() -> None:
    values = copy.deepcopy(FULL)
    values["gateway"]["canaryWeight"] = 150
    with pytest.raises(chart.ChartError, match="canaryWeight must be between 0 and 100"):
        chart.render(values)


def test_schema_validation_catches_an_invalid_manifest() -> None:
    # Negative control: the validator must reject what the API server would.
    manifests = chart.render({"resources": {"requests": {"cpu": ["2"]}}})
    problems = chart.validate(manifests)
    assert any("Deployment/" in p and "resources.requests.cpu" in p for p in problems)


def test_probes_startup_readiness_liveness() -> None:
    manifests = check_chart({"probes": {"coldStartSeconds": 905, "periodSeconds": 10}})
    container = by_kind(manifests, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    ready_cmd = ["python3", "/opt/triton-ops/triton_pod.py", "ready"]
    assert container["readinessProbe"]["exec"]["command"] == ready_cmd
    assert container["startupProbe"]["exec"]["command"] == ready_cmd
    assert container["startupProbe"]["failureThreshold"] == 91  # ceil(905 / 10)
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    env = {e["name"]: e for e in container["env"]}
    assert env["TRITON_OPS_VERSIONS"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.annotations['triton-ops.io/versions']"
    assert "--model-control-mode=explicit" in container["args"]


def test_rbac_is_least_privilege() -> None:
    manifests = check_chart(FULL)
    role = by_kind(manifests, "Role")[0]
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        assert not set(rule["verbs"]) & {"delete", "deletecollection", "list", "watch"} or \
            rule["resources"] == ["leases"]
        if set(rule["verbs"]) - {"create"} and rule["resources"] != ["events"]:
            assert rule.get("resourceNames"), rule
    names = {n for r in role["rules"] for n in r.get("resourceNames", [])}
    assert names == {"demo-triton-stable", "demo-triton-canary", "demo-triton",
                     "demo-triton-stable:http", "demo-triton-canary:http",
                     "triton-ops-rollout-dense-mlp"}


@pytest.mark.parametrize("directory", [DATA, *([REPO / "envelopes"] if EXAMPLE_ENVELOPES else [])],
                         ids=lambda p: p.name)
def test_values_from_envelopes_render_and_validate(directory: Path) -> None:
    derived = values_from_dir(directory)
    assert derived.ok, derived.findings
    check_chart(derived.values)


def test_each_example_envelope_alone() -> None:
    if not EXAMPLE_ENVELOPES:
        pytest.skip("no example envelopes in envelopes/ yet")
    import shutil
    import tempfile

    for envelope in EXAMPLE_ENVELOPES:
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(envelope, tmp)
            derived = values_from_dir(tmp)
            assert derived.ok, (envelope, derived.findings)
            check_chart(derived.values)


def test_derived_values_from_envelope_sections() -> None:
    values = values_from_dir(DATA).values
    assert values["image"]["digest"].startswith("sha256:")
    models = {m["name"]: m for m in values["models"]}
    assert models["affine"]["versions"] == {"stable": [1, 2], "canary": [1, 2]}
    probe = models["affine"]["probe"]
    assert probe["request"]["inputs"] == [{"name": "X", "shape": [1, 4], "datatype": "FP32",
                                           "data": [1, 2, 3, 4]}]
    assert probe["expected"] == {"Y": {"shape": [1, 4], "data": [2, 4, 6, 8]}}
    assert models["cpu.echo_v2"]["probe"]["request"]["inputs"][0]["datatype"] == "BYTES"
    assert values["resources"]["gpus"] == 1
    assert values["resources"]["requests"] == {"cpu": "2.5", "memory": "4608Mi"}
    terms = values["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    expressions = {e["key"]: e["values"] for e in terms["nodeSelectorTerms"][0]["matchExpressions"]}
    # A10G and L4 both have 24 GiB; compute capability 8.6 means major > 7.
    assert expressions == {"nvidia.com/gpu.memory": ["24575"],
                           "nvidia.com/gpu.compute.major": ["7"]}
    # 10% of the tightest p99 (5 ms).
    assert values["autoscaling"]["targetQueueTimeUs"] == 500
    manifests = check_chart(values)
    rbac_names = {n for r in by_kind(manifests, "Role")[0]["rules"]
                  for n in r.get("resourceNames", [])}
    assert "triton-ops-rollout-cpu-echo-v2" in rbac_names


def test_cli_writes_values_and_checks_the_chart(tmp_path: Path) -> None:
    out = tmp_path / "values.yaml"
    result = CliRunner().invoke(app, ["helm-values", "--envelopes", str(DATA), "-o", str(out),
                                      "--check"])
    assert result.exit_code == 0, result.output
    assert "valid against Kubernetes" in result.output
    assert "name: affine" in out.read_text()


def test_cli_reports_bad_envelopes_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text((DATA / "affine.yaml").read_text())
    other = (DATA / "cpu_echo.yaml").read_text().replace("sha256:aaaa", "sha256:cccc")
    (tmp_path / "b.yaml").write_text(other)
    (tmp_path / "c.yaml").write_text("name: broken\nbackend: python\nbatching: {max_batch: 1}\n")
    result = CliRunner().invoke(app, ["helm-values", "--envelopes", str(tmp_path)])
    assert result.exit_code == 1
    assert "c.yaml:3:" in result.output and "unknown key 'max_batch'" in result.output
    assert "a.yaml:11:" in result.output and "helm-image-mismatch" in result.output
    assert "Traceback" not in result.output


def test_cli_warns_about_unpinned_image(tmp_path: Path) -> None:
    text = (DATA / "affine.yaml").read_text().replace(
        "tritonserver@sha256:" + "a" * 64, "tritonserver:24.10-py3")
    (tmp_path / "a.yaml").write_text(text)
    result = CliRunner().invoke(app, ["helm-values", "--envelopes", str(tmp_path)])
    assert result.exit_code == 1
    assert "not pinned by digest" in result.output
    result = CliRunner().invoke(app, ["helm-values", "--envelopes", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "not a directory" in result.output


@pytest.mark.timeout(120)  # a hang guard: unrefused, the probe expands to gigabytes
def test_cli_refuses_an_alias_bomb_in_a_probe(tmp_path: Path) -> None:
    (tmp_path / "bomb.yaml").write_text(alias_bomb_in_probe())
    out = tmp_path / "values.yaml"
    result = CliRunner().invoke(app, ["helm-values", "--envelopes", str(tmp_path), "-o",
                                      str(out)])
    assert result.exit_code == 1 and not out.exists()
    assert "bomb.yaml:13:19:" in result.output and "[yaml-alias-expansion]" in result.output
    assert "Traceback" not in result.output


# --- security: what the rollout's service proxy (and any client) can reach, how pods run ----

RESTRICTED = "model-repository,model-config,shared-memory,statistics,trace,logging"


def containers(manifests: list[chart.Manifest]) -> list[dict]:
    return [c for d in by_kind(manifests, "Deployment")
            for c in d["spec"]["template"]["spec"]["containers"]]


def test_triton_apis_but_inference_health_and_metadata_need_the_pod_key() -> None:
    manifests = check_chart(FULL)
    [secret] = by_kind(manifests, "Secret")
    assert secret["metadata"]["name"] == "demo-triton-api-key"
    assert len(secret["data"]["api-key"]) >= 40  # base64 of a random value
    for container in containers(manifests):
        assert f"--http-restricted-api={RESTRICTED}:triton-ops-api-key=$(TRITON_OPS_API_KEY)" \
            in container["args"]
        assert f"--grpc-restricted-protocol={RESTRICTED}:triton-ops-api-key=" \
            "$(TRITON_OPS_API_KEY)" in container["args"]
        env = {e["name"]: e for e in container["env"]}
        assert env["TRITON_OPS_API_KEY"]["valueFrom"]["secretKeyRef"] == {
            "name": "demo-triton-api-key", "key": "api-key"}
        assert env["TRITON_OPS_API_HEADER"]["value"] == "triton-ops-api-key"
    # Whoever may proxy to the Services (the rollout's Role) cannot read the key.
    role = by_kind(manifests, "Role")[0]
    reachable = {res for rule in role["rules"] for res in rule["resources"]}
    assert not reachable & {"secrets", "pods/exec", "pods/attach", "pods/portforward"}


def test_an_existing_secret_holds_the_key() -> None:
    manifests = check_chart({**FULL, "restrictedApi": {"existingSecret": "site-triton-key"}})
    assert by_kind(manifests, "Secret") == []
    for container in containers(manifests):
        env = {e["name"]: e for e in container["env"]}
        assert env["TRITON_OPS_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == \
            "site-triton-key"


def test_pods_run_as_non_root_without_privileges() -> None:
    for values in ({}, FULL):
        manifests = check_chart(values)
        for deployment in by_kind(manifests, "Deployment"):
            pod = deployment["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["runAsUser"] == 1000  # triton-server in NGC images
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            for container in pod["containers"]:
                context = container["securityContext"]
                assert context["allowPrivilegeEscalation"] is False
                assert context["capabilities"] == {"drop": ["ALL"]}
