"""derive_values on plain envelopes: each part of the chart values and the findings that stop
a release, in the order they are reported (image, then each model, then placement)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from triton_ops.envelope.model import Envelope
from triton_ops.findings import Severity
from triton_ops.k8s.values import SourcedEnvelope, derive_values

DATA = Path(__file__).parent / "data" / "envelopes"
GPU = yaml.safe_load((DATA / "affine.yaml").read_text())
CPU = yaml.safe_load((DATA / "cpu_echo.yaml").read_text())


def source(base: dict[str, Any], **changes: Any) -> SourcedEnvelope:
    """`base` with top-level sections replaced (None drops one), from a file named after it."""
    data = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return SourcedEnvelope(Envelope.model_validate(data), f"{data['name']}.yaml")


def rules(sources: list[SourcedEnvelope]) -> list[str]:
    return [f.rule for f in derive_values(sources).findings]


def test_no_envelopes_is_an_error() -> None:
    derived = derive_values([])
    assert derived.values == {} and not derived.ok
    assert rules([]) == ["helm-no-envelopes"]


def test_without_an_image_the_chart_default_is_kept_with_a_warning() -> None:
    derived = derive_values([source(GPU, runtime=None), source(CPU, runtime=None)])
    assert "image" not in derived.values
    assert [(f.file, f.rule, f.severity) for f in derived.findings] == [
        ("affine.yaml", "helm-image-default", Severity.WARNING)]
    assert derived.ok


def test_an_unpinned_image_is_kept_and_refused_unless_allowed() -> None:
    tagged = source(GPU, runtime={"image": "registry:5000/triton/server:24.10"})
    derived = derive_values([tagged])
    assert derived.values["image"] == {"repository": "registry:5000/triton/server",
                                       "digest": "", "tag": "24.10"}
    assert rules([tagged]) == ["helm-image-unpinned"]
    allowed = source(GPU, runtime={"image": "triton/server", "allow_unpinned_image": True})
    assert derive_values([allowed]).values["image"]["tag"] == "latest"
    assert rules([allowed]) == []


def test_cpu_only_release_has_no_gpu_placement_and_no_tolerations() -> None:
    values = derive_values([source(CPU)]).values
    assert values["resources"] == {"gpus": 0, "requests": {"cpu": "0.5", "memory": "512Mi"},
                                   "limits": {"memory": "512Mi"}}
    assert values["nodeSelector"] == {} and values["affinity"] == {}
    assert values["tolerations"] == []
    assert list(values) == ["image", "models", "resources", "nodeSelector", "affinity",
                            "tolerations", "autoscaling"]


def test_gpu_placement_takes_the_most_demanding_model() -> None:
    big = source(GPU, name="big", hardware={"min_gpu_memory": "40GiB",
                                            "min_compute_capability": "9.0"},
                 instances=[{"kind": "GPU", "count": 1, "gpus": [0, 1]}])
    values = derive_values([source(GPU), big]).values
    terms = values["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": ["40959"]},
        {"key": "nvidia.com/gpu.compute.major", "operator": "Gt", "values": ["8"]}]
    assert values["resources"]["gpus"] == 2
    assert "tolerations" not in values


def test_queue_time_target_is_a_share_of_the_tightest_p99_with_a_floor() -> None:
    assert derive_values([source(GPU), source(CPU)]).values["autoscaling"] == {
        "targetQueueTimeUs": 500}
    tight = source(CPU, slo={"p99_latency": "1ms"})
    assert derive_values([tight]).values["autoscaling"] == {"targetQueueTimeUs": 200}
    assert "autoscaling" not in derive_values([source(CPU, slo=None)]).values


def test_findings_come_image_first_then_per_model_then_placement() -> None:
    def image(n: int) -> dict[str, str]:
        return {"image": f"triton/server@sha256:{n:064d}"}

    sources = [
        source(GPU, hardware={"min_compute_capability": "eight"}, runtime=image(1)),
        source(CPU, probe=None, runtime=image(2)),
        source(CPU, name="cpu-echo-v2", runtime=image(3)),
        source(GPU, name="other", probe={"inputs": {"Z": [1]}, "expected": {}},
               runtime=image(4)),
    ]
    derived = derive_values(sources)
    assert "image" not in derived.values
    assert [(f.file, f.rule) for f in derived.findings] == [
        ("affine.yaml", "helm-image-mismatch"),
        ("cpu.echo_v2.yaml", "helm-image-mismatch"),
        ("cpu-echo-v2.yaml", "helm-image-mismatch"),
        ("other.yaml", "helm-image-mismatch"),
        ("cpu.echo_v2.yaml", "helm-no-probe"),
        ("cpu-echo-v2.yaml", "helm-name-clash"),
        ("other.yaml", "envelope-probe"),
        ("other.yaml", "envelope-probe"),
        ("other.yaml", "envelope-probe"),
        ("affine.yaml", "helm-compute-capability"),
    ]
    assert [m["probe"] is None for m in derived.values["models"]] == [False, True, False, True]
