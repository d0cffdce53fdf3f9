"""Helm values of the triton chart, derived from envelopes (pure: envelopes in, values out).

One Triton pod serves every model of the release, so the envelopes must agree on the image;
GPU requests, node placement, CPU/memory requests and the autoscaling target are combined
across models. Each model brings its sealed versions and its golden probe, which the chart's
readiness probe infers for real. Given tune results, the stable replica count and the HPA
bounds follow the capacity plan (tune/capacity.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from triton_ops.envelope.model import Envelope, InstanceKind
from triton_ops.envelope.probe_check import probe_problems
from triton_ops.findings import Finding, Severity
from triton_ops.k8s.names import is_dns_label, rollout_object
from triton_ops.tensors import wire_type
from triton_ops.tune.capacity import (
    CapacityPlan,
    HeadroomRule,
    TunedModel,
    plan_capacity,
    plan_release,
)

# The queue may use this share of the p99 latency budget before the HPA adds replicas.
QUEUE_SHARE_OF_P99 = 0.1
MIN_QUEUE_TARGET_US = 200
# GPU Feature Discovery node labels (NVIDIA GPU operator).
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"  # MiB
GPU_COMPUTE_MAJOR_LABEL = "nvidia.com/gpu.compute.major"


@dataclass
class SourcedEnvelope:
    """An envelope and the file it came from (for findings)."""

    envelope: Envelope
    file: str = "<envelope>"
    locate: Any = None  # callable KeyPath -> (line, column), from the loader's SourceMap


@dataclass
class DerivedValues:
    values: dict[str, Any]
    findings: list[Finding] = field(default_factory=list)
    plans: list[CapacityPlan] = field(default_factory=list)  # from tune results, if given

    @property
    def ok(self) -> bool:
        return not any(f.severity is Severity.ERROR for f in self.findings)


def _finding(src: SourcedEnvelope, path: tuple[str | int, ...], rule: str, message: str,
             severity: Severity = Severity.ERROR) -> Finding:
    line, column = src.locate(path) if src.locate else (0, 0)
    return Finding(src.file, line, column, rule, severity, message)


def split_image(image: str) -> dict[str, str]:
    """`repo@sha256:...` or `repo:tag` to the chart's image values."""
    if "@" in image:
        repository, digest = image.split("@", 1)
        return {"repository": repository, "digest": digest, "tag": ""}
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        repository, tag = image.rsplit(":", 1)
        return {"repository": repository, "digest": "", "tag": tag}
    return {"repository": image, "digest": "", "tag": "latest"}


def _shape(value: Any) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return shape


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, list):
        return [x for item in value for x in _flatten(item)]
    return [value]


def probe_values(envelope: Envelope) -> dict[str, Any] | None:
    """The golden probe as a KServe v2 JSON request and flat expected outputs."""
    probe = envelope.probe
    if probe is None:
        return None
    inputs = []
    for name, value in probe.inputs.items():
        spec = envelope.tensor(name)
        inputs.append({"name": name, "shape": _shape(value),
                       "datatype": wire_type(spec.data_type), "data": _flatten(value)})
    expected = {name: {"shape": _shape(value), "data": _flatten(value)}
                for name, value in probe.expected.items()}
    return {
        "request": {"inputs": inputs, "outputs": [{"name": n} for n in probe.expected]},
        "expected": expected,
        "atol": probe.tolerance.atol,
        "rtol": probe.tolerance.rtol,
    }


def _quantity_mib(n_bytes: int) -> str:
    return f"{math.ceil(n_bytes / 1024**2)}Mi"


def _uses_gpu(envelope: Envelope) -> bool:
    if any(g.kind is InstanceKind.GPU for g in envelope.instances):
        return True
    if envelope.instances and all(g.kind is InstanceKind.CPU for g in envelope.instances):
        return False
    hw = envelope.hardware
    return bool(hw.gpu_models or hw.min_gpu_memory or hw.min_compute_capability or
                (envelope.resources.gpu_memory is not None))


def derive_values(sources: Sequence[SourcedEnvelope]) -> DerivedValues:
    """The chart values for a release serving these envelopes' models."""
    if not sources:
        return DerivedValues({}, [Finding("<envelopes>", 0, 0, "helm-no-envelopes",
                                          Severity.ERROR, "no envelopes given")])
    values: dict[str, Any] = {}
    image, image_findings = _image_values(sources)
    if image is not None:
        values["image"] = image
    values["models"], model_findings = _model_values(sources)
    gpu_sources = [s for s in sources if _uses_gpu(s.envelope)]
    values["resources"] = _resource_values(sources, gpu_sources)
    expressions, placement_findings = _gpu_node_expressions(gpu_sources)
    values["nodeSelector"] = {}
    values["affinity"] = ({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": expressions}]}}} if expressions else {})
    if not gpu_sources:
        values["tolerations"] = []
    target = _queue_time_target_us(sources)
    if target is not None:
        values["autoscaling"] = {"targetQueueTimeUs": target}
    return DerivedValues(values, [*image_findings, *model_findings, *placement_findings])


def _image_values(sources: Sequence[SourcedEnvelope],
                  ) -> tuple[dict[str, str] | None, list[Finding]]:
    """The image values, None for the chart's default; one pod serves every model, so all
    pinned images must be the same."""
    images = {s.envelope.runtime.image: s for s in sources if s.envelope.runtime.image}
    if len(images) > 1:
        return None, [_finding(src, ("runtime", "image"), "helm-image-mismatch",
                               f"image {image} differs from the other envelopes'; one Triton "
                               "pod serves all models of a release: use one image or one "
                               "release per image")
                      for image, src in images.items()]
    if not images:
        return None, [Finding(sources[0].file, 1, 1, "helm-image-default", Severity.WARNING,
                              "no envelope sets runtime.image: the chart's default image "
                              "(a tag, not a digest) is used; pin one in runtime.image")]
    image, src = next(iter(images.items()))
    values = split_image(image)
    if not values["digest"] and not src.envelope.runtime.allow_unpinned_image:
        return values, [_finding(src, ("runtime", "image"), "helm-image-unpinned",
                                 f"image {image} is not pinned by digest; write it as "
                                 "repository@sha256:... so every pod runs the same bits")]
    return values, []


def _model_values(sources: Sequence[SourcedEnvelope],
                  ) -> tuple[list[dict[str, Any]], list[Finding]]:
    """Each model's name, versions and golden probe, with what stops the chart serving it."""
    findings: list[Finding] = []
    models = []
    seen: dict[str, str] = {}
    for src in sources:
        env = src.envelope
        obj = rollout_object(env.name)
        if obj in seen and seen[obj] != env.name:
            findings.append(_finding(src, ("name",), "helm-name-clash",
                                     f"models {seen[obj]!r} and {env.name!r} map to the same "
                                     f"Kubernetes name {obj}; rename one"))
        seen[obj] = env.name
        if not is_dns_label(obj):
            findings.append(_finding(src, ("name",), "helm-name", f"{obj} is not a valid "
                                     "Kubernetes name; use a shorter model name"))
        if env.probe is None:
            findings.append(_finding(src, (), "helm-no-probe", f"{env.name} has no golden "
                                     "probe: readiness only checks the model is loaded, not that "
                                     "it answers right; add a 'probe' section",
                                     Severity.WARNING))
        # A probe the model cannot take would fail every readiness check: refuse it here.
        probe_issues = list(probe_problems(env))
        for path, message in probe_issues:
            findings.append(_finding(src, path, "envelope-probe", message))
        models.append({
            "name": env.name,
            "versions": {"stable": list(env.versions), "canary": list(env.versions)},
            "probe": None if probe_issues else probe_values(env),
        })
    return models, findings


def _resource_values(sources: Sequence[SourcedEnvelope],
                     gpu_sources: Sequence[SourcedEnvelope]) -> dict[str, Any]:
    """The pod's GPUs, and CPU and memory summed over the models."""
    resources: dict[str, Any] = {"gpus": 0, "requests": {}, "limits": {}}
    if gpu_sources:
        gpu_ids = {i for s in gpu_sources for g in s.envelope.instances for i in g.gpus}
        resources["gpus"] = max(len(gpu_ids), 1)
    cpus = [s.envelope.resources.cpu for s in sources if s.envelope.resources.cpu]
    if cpus:
        total = round(sum(cpus), 3)
        resources["requests"]["cpu"] = str(int(total)) if total.is_integer() else str(total)
    host = [s.envelope.resources.host_memory for s in sources if s.envelope.resources.host_memory]
    if host:
        resources["requests"]["memory"] = _quantity_mib(sum(host))
        resources["limits"]["memory"] = _quantity_mib(sum(host))
    return resources


def _gpu_node_expressions(gpu_sources: Sequence[SourcedEnvelope],
                          ) -> tuple[list[dict[str, Any]], list[Finding]]:
    """Node affinity match expressions on GPU Feature Discovery labels: enough GPU memory
    and a high enough compute capability for every model."""
    expressions = []
    memories = [m for s in gpu_sources if (m := s.envelope.hardware.smallest_gpu_memory())]
    if memories:
        mib = max(memories) // 1024**2
        expressions.append({"key": GPU_MEMORY_LABEL, "operator": "Gt", "values": [str(mib - 1)]})
    findings = []
    majors = []
    for s in gpu_sources:
        cc = s.envelope.hardware.min_compute_capability
        if cc:
            try:
                majors.append(int(cc.split(".")[0]))
            except ValueError:
                findings.append(_finding(s, ("hardware", "min_compute_capability"),
                                         "helm-compute-capability",
                                         f"{cc!r} is not a compute capability such as 8.0"))
    if majors:
        expressions.append({"key": GPU_COMPUTE_MAJOR_LABEL, "operator": "Gt",
                            "values": [str(max(majors) - 1)]})
    return expressions, findings


def _queue_time_target_us(sources: Sequence[SourcedEnvelope]) -> int | None:
    """The HPA's queue-time target: a share of the tightest p99 SLO, None without an SLO."""
    slos = [s.envelope.slo.p99_latency for s in sources if s.envelope.slo]
    if not slos:
        return None
    return max(MIN_QUEUE_TARGET_US, int(min(slos) * QUEUE_SHARE_OF_P99))


def capacity_values(sources: Sequence[SourcedEnvelope], tuned: Sequence[TunedModel],
                    rule: HeadroomRule | None = None,
                    ) -> tuple[dict[str, Any], list[Finding], list[CapacityPlan]]:
    """The stable replica count and HPA bounds from tune results (tune/capacity.py's rule).

    Returns the values to merge (empty when nothing can be planned), findings, and the plans:
    one per model with a tune result and a target throughput, then the release's when the
    release serves several. Models without either are named in a warning: one pod serves
    every model, so a replica count that leaves one out is too low by its share.
    """
    rule = rule or HeadroomRule()
    findings: list[Finding] = []
    by_model = {s.envelope.name: s for s in sources}
    results: dict[str, TunedModel] = {}
    for t in tuned:
        where = f"{t.source}/best.json"
        if t.model not in by_model:
            findings.append(Finding(where, 0, 0, "helm-tune-unknown-model", Severity.ERROR,
                                    f"a tune result for {t.model!r}, which no envelope of this "
                                    "release describes; drop it or add the model's envelope"))
        elif t.model in results:
            findings.append(Finding(where, 0, 0, "helm-tune-duplicate", Severity.ERROR,
                                    f"a second tune result for {t.model!r} (the other: "
                                    f"{results[t.model].source}); pass one per model"))
        else:
            results[t.model] = t
    plans: list[CapacityPlan] = []
    unplanned: list[str] = []
    for name, src in by_model.items():
        target = src.envelope.slo.target_throughput if src.envelope.slo else None
        if name in results and target is None:
            findings.append(_finding(src, ("slo",) if src.envelope.slo else (),
                                     "helm-no-target-throughput",
                                     f"{name} has no slo.target_throughput: there is no load "
                                     "to plan replicas for; set it (inferences/s)",
                                     Severity.WARNING))
        if name in results and target is not None:
            plans.append(plan_capacity(target, results[name], rule))
        else:
            unplanned.append(name)
    if any(f.severity is Severity.ERROR for f in findings) or not plans:
        return {}, findings, []
    for name in unplanned:
        findings.append(_finding(by_model[name], ("name",), "helm-tune-unplanned",
                                 f"no capacity plan for {name} (it needs a tune result and "
                                 "slo.target_throughput): one pod serves every model, so the "
                                 "replica count leaves out its load", Severity.WARNING))
    release = plan_release(plans, rule)
    if len(plans) > 1:
        plans.append(release)
    values = {"tracks": {"stable": {"replicas": release.replicas}},
              "autoscaling": {"minReplicas": release.hpa_min, "maxReplicas": release.hpa_max}}
    return values, findings, plans


def merge_values(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """`base` with `patch` merged in, mappings key by key (neither is modified)."""
    out = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_values(out[key], value)
        else:
            out[key] = value
    return out
