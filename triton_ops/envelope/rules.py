"""Envelope rules: what `triton-ops validate` checks in an envelope beyond its schema.

Each rule has an id (`envelope-<what>`), a severity and a doc string (shown in
docs/validate.md). A check takes an `EnvelopeContext` and yields `(key path, message)` pairs;
the key path is located in the envelope YAML through the loader's SourceMap, so every finding
points at the line to change.

Rules that compare the envelope with its model folder (versions, model file) run only when a
model repository is known; they are skipped when none is. The rules that compare the envelope
with the ModelConfig it renders and with the committed config.pbtxt belong to the gate
(`triton_ops.validate.envelope_config`), which runs them together with these.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from triton_ops.envelope.loader import KeyPath, LoadedEnvelope
from triton_ops.envelope.model import Envelope, InstanceKind
from triton_ops.findings import Finding, Severity

Issue = tuple[KeyPath, str]

# A max queue delay above this fraction of the p99 SLO leaves too little of the latency
# budget for the inference itself and the network: a warning. At or above the SLO: an error.
QUEUE_DELAY_WARN_FRACTION = 0.2

IMAGE_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}\Z")  # \Z: `$` accepts a trailing newline

# Model file Triton looks for in each version folder when default_model_filename is unset.
DEFAULT_MODEL_FILES: dict[str, str] = {
    "python": "model.py",
    "onnxruntime": "model.onnx",
    "onnxruntime_onnx": "model.onnx",
    "pytorch": "model.pt",
    "pytorch_libtorch": "model.pt",
    "tensorrt": "model.plan",
    "tensorrt_plan": "model.plan",
    "openvino": "model.xml",
    "tensorflow_graphdef": "model.graphdef",
    "tensorflow_savedmodel": "model.savedmodel",
}

@dataclass
class EnvelopeContext:
    envelope: Envelope
    path: Path
    repo: Path | None = None
    # What several rules of one envelope need and is costly to make (e.g. the rendered
    # config), made by the first rule that asks.
    cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def model_dir(self) -> Path | None:
        return self.repo / self.envelope.name if self.repo is not None else None


CheckFn = Callable[[EnvelopeContext], Iterable[Issue]]


@dataclass(frozen=True)
class Rule:
    id: str
    severity: Severity
    doc: str
    check: CheckFn
    needs_repo: bool = False


RULES: dict[str, Rule] = {}


def rule(rule_id: str, severity: Severity, doc: str, needs_repo: bool = False, *,
         registry: dict[str, Rule] = RULES) -> Callable[[CheckFn], CheckFn]:
    """Register a check as rule `rule_id` in `registry` (default: the envelope rules)."""
    def register(fn: CheckFn) -> CheckFn:
        if rule_id in registry:
            raise ValueError(f"duplicate rule id {rule_id}")
        registry[rule_id] = Rule(rule_id, severity, doc, fn, needs_repo)
        return fn

    return register


E, W = Severity.ERROR, Severity.WARNING


def human_size(n: float) -> str:
    """A byte count for people: "14.4GiB", "512MiB"."""
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(n) >= factor:
            return f"{n / factor:.3g}{unit}" if n % factor else f"{int(n // factor)}{unit}"
    return f"{int(n)}B"


def human_duration(us: float) -> str:
    if us >= 1_000_000:
        return f"{us / 1_000_000:g}s"
    if us >= 1000:
        return f"{us / 1000:g}ms"
    return f"{us:g}us"


@rule("envelope-name-file", E,
      "The envelope's `name` equals its file name (envelopes/<name>.yaml): commands find an "
      "envelope by model name.")
def name_matches_file(ctx: EnvelopeContext) -> Iterator[Issue]:
    stem = ctx.path.name.rsplit(".", 1)[0]
    if stem != ctx.envelope.name:
        yield ("name",), (f"name {ctx.envelope.name!r} does not match the file name "
                          f"{ctx.path.name!r}; rename the file to {ctx.envelope.name}.yaml")


@rule("envelope-input-max-dims", E,
      "Every input with a variable (-1) dim gives max_dims: the largest request size, used "
      "for admission, GPU memory estimates and load generation.")
def input_max_dims(ctx: EnvelopeContext) -> Iterator[Issue]:
    for i, spec in enumerate(ctx.envelope.inputs):
        if -1 in spec.dims and spec.max_dims is None and not spec.is_shape_tensor:
            example = [d if d != -1 else "<max>" for d in spec.dims]
            yield ("inputs", i, "dims"), (
                f"input {spec.name!r} has variable dims {spec.dims} but no max_dims; add "
                f"max_dims: [{', '.join(str(d) for d in example)}] with the largest size a "
                "request may use")


def instances_per_gpu(envelope: Envelope) -> int | None:
    """Most instances that land on one GPU, or None when the model runs on CPUs only.

    A group with a `gpus` list puts `count` instances on EACH listed GPU; a group without one
    puts `count` on every GPU. No instance group at all means one instance per GPU.
    """
    groups = [g for g in envelope.instances
              if g.kind in (InstanceKind.GPU, InstanceKind.AUTO)]
    if not envelope.instances:
        return 1
    if not groups:
        return None
    unbound = sum(g.count for g in groups if not g.gpus)
    devices = {d for g in groups for d in g.gpus}
    per_device = [unbound + sum(g.count for g in groups if d in g.gpus) for d in devices]
    return max(per_device, default=unbound)


@rule("envelope-memory-fit", E,
      "weights + max_batch_size x activation_per_item + workspace, per instance, times the "
      "instances on one GPU (instance groups' count and gpus), fits the smallest allowed GPU "
      "(hardware.gpu_models / min_gpu_memory) after the `headroom` fraction is kept free.")
def memory_fits(ctx: EnvelopeContext) -> Iterator[Issue]:
    env = ctx.envelope
    memory = env.resources.gpu_memory
    smallest = env.hardware.smallest_gpu_memory()
    if memory is None or smallest is None:
        return
    per_gpu = instances_per_gpu(env)
    if per_gpu is None:
        return
    per_instance = memory.per_instance(env.max_batch_size)
    need = per_gpu * per_instance
    usable = smallest * (1 - memory.headroom)
    if need > usable:
        yield ("resources", "gpu_memory"), (
            f"{per_gpu} instance(s) on one GPU need {human_size(need)} "
            f"({human_size(memory.weights)} weights + {max(env.max_batch_size, 1)} x "
            f"{human_size(memory.activation_per_item)} activations + "
            f"{human_size(memory.workspace)} workspace each), but the smallest allowed GPU "
            f"has {human_size(smallest)} and {human_size(usable)} usable after "
            f"{memory.headroom:.0%} headroom; lower max_batch_size or the instance count, "
            "or require larger GPUs"
        )


@rule("envelope-queue-delay-exceeds-slo", E,
      "dynamic batching's max_queue_delay is below the p99 latency SLO: a request may wait "
      "that long in the queue before it even runs.")
def queue_delay_exceeds_slo(ctx: EnvelopeContext) -> Iterator[Issue]:
    dynamic, slo = ctx.envelope.batching.dynamic, ctx.envelope.slo
    if dynamic is None or slo is None:
        return
    if dynamic.max_queue_delay >= slo.p99_latency:
        yield ("batching", "dynamic", "max_queue_delay"), (
            f"max_queue_delay {human_duration(dynamic.max_queue_delay)} is not below the p99 "
            f"SLO {human_duration(slo.p99_latency)}: queueing alone can break the SLO; keep "
            f"it under {QUEUE_DELAY_WARN_FRACTION:.0%} of the SLO "
            f"({human_duration(slo.p99_latency * QUEUE_DELAY_WARN_FRACTION)})"
        )


@rule("envelope-queue-delay-large", W,
      f"max_queue_delay is at most {QUEUE_DELAY_WARN_FRACTION:.0%} of the p99 SLO, leaving "
      "the rest of the latency budget for inference and transport.")
def queue_delay_large(ctx: EnvelopeContext) -> Iterator[Issue]:
    dynamic, slo = ctx.envelope.batching.dynamic, ctx.envelope.slo
    if dynamic is None or slo is None:
        return
    limit = slo.p99_latency * QUEUE_DELAY_WARN_FRACTION
    if limit < dynamic.max_queue_delay < slo.p99_latency:
        yield ("batching", "dynamic", "max_queue_delay"), (
            f"max_queue_delay {human_duration(dynamic.max_queue_delay)} is "
            f"{dynamic.max_queue_delay / slo.p99_latency:.0%} of the p99 SLO "
            f"{human_duration(slo.p99_latency)}; keep it under "
            f"{QUEUE_DELAY_WARN_FRACTION:.0%} ({human_duration(limit)}) so inference fits"
        )


@rule("envelope-preferred-batch-size", E,
      "Every preferred batch size is between 1 and max_batch_size (Triton refuses larger ones).")
def preferred_batch_sizes(ctx: EnvelopeContext) -> Iterator[Issue]:
    dynamic = ctx.envelope.batching.dynamic
    if dynamic is None:
        return
    max_batch = ctx.envelope.max_batch_size
    for i, size in enumerate(dynamic.preferred_batch_sizes):
        path = ("batching", "dynamic", "preferred_batch_sizes", i)
        if size < 1:
            yield path, f"preferred batch size {size} must be at least 1"
        elif size > max_batch:
            yield path, (f"preferred batch size {size} exceeds max_batch_size {max_batch}; "
                         "lower it or raise max_batch_size")


@rule("envelope-image-unpinned", E,
      "runtime.image is pinned by digest (name@sha256:<64 hex>) so every rollout runs the same "
      "bytes; set runtime.allow_unpinned_image: true to accept a tag.")
def image_pinned(ctx: EnvelopeContext) -> Iterator[Issue]:
    runtime = ctx.envelope.runtime
    if not runtime.image or runtime.allow_unpinned_image:
        return
    if "@sha256:" in runtime.image and not IMAGE_DIGEST.search(runtime.image):
        yield ("runtime", "image"), (f"image {runtime.image!r} has a malformed digest: "
                                     "expected @sha256: followed by 64 lowercase hex digits")
    elif not IMAGE_DIGEST.search(runtime.image):
        yield ("runtime", "image"), (
            f"image {runtime.image!r} is not pinned by digest; use "
            f"{runtime.image.split('@')[0]}@sha256:<digest> (`docker buildx imagetools "
            "inspect` shows it) or set runtime.allow_unpinned_image: true")


@rule("envelope-model-folder-missing", E,
      "The model repository has a folder for the envelope's model.", needs_repo=True)
def model_folder(ctx: EnvelopeContext) -> Iterator[Issue]:
    model_dir = ctx.model_dir
    if model_dir is not None and not model_dir.is_dir():
        yield ("name",), (f"model folder {model_dir} does not exist; create it with the "
                          "version folders and run `triton-ops generate`")


@rule("envelope-version-folder-missing", E,
      "Every version listed in `versions` has a folder <repo>/<name>/<version>/.",
      needs_repo=True)
def version_folders(ctx: EnvelopeContext) -> Iterator[Issue]:
    model_dir = ctx.model_dir
    if model_dir is None or not model_dir.is_dir():
        return
    for i, version in enumerate(ctx.envelope.versions):
        if not (model_dir / str(version)).is_dir():
            yield ("versions", i), (f"version {version} is listed but {model_dir}/{version}/ "
                                    "does not exist; add the folder or drop the version")


def model_file_name(envelope: Envelope) -> str | None:
    """The file Triton loads from each version folder, when the backend has a known default."""
    if envelope.default_model_filename:
        return envelope.default_model_filename
    for key in (envelope.backend, envelope.platform):
        if key and key in DEFAULT_MODEL_FILES:
            return DEFAULT_MODEL_FILES[key]
    return None


@rule("envelope-model-file-missing", E,
      "Each version folder holds the backend's model file (default_model_filename, else the "
      "backend default: model.py for python, model.onnx for onnxruntime, model.pt for "
      "pytorch, model.plan for tensorrt, ...).", needs_repo=True)
def model_file(ctx: EnvelopeContext) -> Iterator[Issue]:
    model_dir = ctx.model_dir
    filename = model_file_name(ctx.envelope)
    if model_dir is None or filename is None or not model_dir.is_dir():
        return
    for i, version in enumerate(ctx.envelope.versions):
        folder = model_dir / str(version)
        if folder.is_dir() and not (folder / filename).exists():
            yield ("versions", i), (f"{folder}/{filename} is missing: the "
                                    f"{ctx.envelope.backend or ctx.envelope.platform} backend "
                                    "loads it from each version folder")


@rule("envelope-probe", E,
      "The golden probe fits the model: its inputs and expected outputs name the model's "
      "tensors, every required input is given, shapes are the declared dims (after a batch "
      "dim of 1..max_batch_size when the model batches, within max_dims), values are of the "
      "tensor's data type and every number is finite.")
def probe_fits_tensors(ctx: EnvelopeContext) -> Iterator[Issue]:
    from triton_ops.envelope.probe_check import probe_problems

    yield from probe_problems(ctx.envelope)


def check_envelope(loaded: LoadedEnvelope, repo: Path | None = None,
                   rules: Mapping[str, Rule] = RULES) -> list[Finding]:
    """Schema findings of a loaded envelope plus the findings of `rules` (default: the
    envelope rules; the gate adds its config rules); rules that need the model repository run
    only when `repo` is given."""
    if loaded.envelope is None:
        return list(loaded.findings)
    ctx = EnvelopeContext(loaded.envelope, loaded.path, repo)
    findings = list(loaded.findings)
    for registered in rules.values():
        if registered.needs_repo and repo is None:
            continue
        try:
            for path, message in registered.check(ctx):
                findings.append(loaded.source.finding(path, registered.id, message,
                                                      registered.severity))
        except Exception as exc:  # a rule bug must not hide the other findings
            findings.append(loaded.source.finding(
                (), registered.id, f"internal error in rule {registered.id}: {exc!r}; please "
                "report this envelope to the triton-ops maintainers"))
    return findings


__all__ = ["RULES", "QUEUE_DELAY_WARN_FRACTION", "EnvelopeContext", "Issue", "Rule",
           "check_envelope", "instances_per_gpu", "model_file_name", "rule"]
