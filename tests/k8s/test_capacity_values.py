"""`helm-values --tune-results`: the replica count and HPA bounds from tune output folders."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from triton_ops.cli.main import app
from triton_ops.envelope.model import Envelope
from triton_ops.findings import Severity
from triton_ops.k8s import chart
from triton_ops.k8s.values import SourcedEnvelope, capacity_values, merge_values
from triton_ops.tune.capacity import TunedModel

DATA = Path(__file__).parent / "data" / "envelopes"


def envelopes(tmp_path: Path, target: float | None = 500.0) -> Path:
    """The test envelopes, affine with a target throughput (cpu.echo_v2 without one)."""
    folder = tmp_path / "envelopes"
    folder.mkdir()
    affine = (DATA / "affine.yaml").read_text()
    if target is not None:
        affine = affine.replace("slo: {p99_latency: 20ms}",
                                f"slo: {{p99_latency: 20ms, target_throughput: {target:g}}}")
    (folder / "affine.yaml").write_text(affine)
    (folder / "cpu_echo.yaml").write_text((DATA / "cpu_echo.yaml").read_text())
    return folder


def tune_folder(tmp_path: Path, name: str, best: dict) -> Path:
    folder = tmp_path / "tune-results" / name
    folder.mkdir(parents=True)
    (folder / "best.json").write_text(json.dumps(best))
    return folder


def run(*args: str) -> object:
    return CliRunner().invoke(app, ["helm-values", *args])


def test_tune_results_set_replicas_and_hpa_bounds_and_the_chart_passes(tmp_path: Path) -> None:
    env_dir = envelopes(tmp_path)
    run_dir = tune_folder(tmp_path, "affine", {
        "model": "affine", "goodput": 180.0, "slo_met": True, "overload": {
            "holds_at_2x_rps": 150.0, "chosen": {"policy": {"label": "timeout 2ms REJECT"}}}})
    out = tmp_path / "values.yaml"
    result = run("--envelopes", str(env_dir), "--tune-results", str(run_dir), "--check",
                 "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "capacity plan for affine: 5 replicas" in result.output
    assert "HPA 5..8" in result.output and "timeout 2ms REJECT" in result.output
    assert "valid against Kubernetes" in result.output
    assert "no capacity plan for cpu.echo_v2" in result.output  # no target: not counted
    values = yaml.safe_load(out.read_text())
    assert values["tracks"] == {"stable": {"replicas": 5}}
    assert values["autoscaling"] == {"targetQueueTimeUs": 500, "minReplicas": 5,
                                     "maxReplicas": 8}
    # Rendered: the stable Deployment runs 5 replicas; with the HPA on, it scales 5..8.
    manifests = chart.render(values, release="demo", namespace="ml")
    stable = next(m.doc for m in manifests if m.doc["kind"] == "Deployment"
                  and m.doc["metadata"]["name"].endswith("-stable"))
    assert stable["spec"]["replicas"] == 5
    scaled = merge_values(values, {"autoscaling": {"enabled": True}})
    manifests = chart.render(scaled, release="demo", namespace="ml")
    assert chart.lint(scaled) == [] and chart.validate(manifests) == []
    hpa = next(m.doc for m in manifests if m.doc["kind"] == "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (5, 8)


def test_without_tune_results_nothing_changes(tmp_path: Path) -> None:
    env_dir = envelopes(tmp_path)
    plain = run("--envelopes", str(env_dir))
    assert plain.exit_code == 0, plain.output
    values = yaml.safe_load(plain.stdout)
    assert "tracks" not in values and set(values["autoscaling"]) == {"targetQueueTimeUs"}
    assert "capacity plan" not in plain.output


def test_bad_tune_folders_are_refused_with_their_path(tmp_path: Path) -> None:
    env_dir = envelopes(tmp_path)
    missing = run("--envelopes", str(env_dir), "--tune-results", str(tmp_path / "nope"))
    assert missing.exit_code == 2 and "no best.json here" in missing.output
    failed = tune_folder(tmp_path, "failed", {"model": "affine", "goodput": 0.0,
                                              "slo_met": False})
    result = run("--envelopes", str(env_dir), "--tune-results", str(failed))
    assert result.exit_code == 2
    assert f"{failed}/best.json: tune confirmed no goodput for affine" in result.output
    other = tune_folder(tmp_path, "other", {"model": "resnet", "goodput": 10.0})
    result = run("--envelopes", str(env_dir), "--tune-results", str(other))
    assert result.exit_code == 1 and "helm-tune-unknown-model" in result.output
    for r in (missing, result):
        assert "Traceback" not in r.output


def sourced(name: str, target: float | None) -> SourcedEnvelope:
    slo = {"p99_latency": "20ms"} | ({"target_throughput": target} if target else {})
    return SourcedEnvelope(Envelope.model_validate({"name": name, "backend": "python",
                                                    "slo": slo}), f"{name}.yaml")


def test_models_of_one_release_add_up_and_problems_are_findings() -> None:
    sources = [sourced("a", 500.0), sourced("b", 100.0), sourced("c", None)]
    tuned = [TunedModel("a", 180.0, "ra"), TunedModel("b", 400.0, "rb"),
             TunedModel("c", 50.0, "rc")]
    values, findings, plans = capacity_values(sources, tuned)
    # (500 / 180 + 100 / 400) / 0.8 = 3.79 -> 4, + 1
    assert values == {"tracks": {"stable": {"replicas": 5}},
                      "autoscaling": {"minReplicas": 5, "maxReplicas": 9}}
    assert [p.models for p in plans] == [("a",), ("b",), ("a", "b")]
    assert {(f.rule, f.file) for f in findings} == {("helm-no-target-throughput", "c.yaml"),
                                                   ("helm-tune-unplanned", "c.yaml")}
    assert all(f.severity is Severity.WARNING for f in findings)
    # a duplicate or a stranger is an error, and then nothing is planned
    values, findings, plans = capacity_values(
        sources, [*tuned, TunedModel("a", 170.0, "ra2"), TunedModel("z", 1.0, "rz")])
    assert values == {} and plans == []
    errors = {(f.rule, f.file) for f in findings if f.severity is Severity.ERROR}
    assert errors == {("helm-tune-duplicate", "ra2/best.json"),
                      ("helm-tune-unknown-model", "rz/best.json")}
    # no model has a target: nothing to set
    assert capacity_values([sourced("c", None)], [TunedModel("c", 5.0, "rc")])[0] == {}
