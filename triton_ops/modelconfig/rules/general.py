"""Model-level rules: name, platform/backend, max_batch_size, version policy, caches, metrics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from triton_ops.modelconfig.parse import FieldPath
from triton_ops.modelconfig.proto import ModelConfig
from triton_ops.modelconfig.rules.registry import ConfigContext, E, Issue, W, rule

SRC = "core:src/model_config_utils.cc"

# Platform -> the backend Triton's auto-complete assigns to it (AutoCompleteBackendFields),
# and the backend "type" both must agree on (GetBackendType / GetBackendTypeFromPlatform).
PLATFORM_BACKEND = {
    "tensorflow_graphdef": "tensorflow",
    "tensorflow_savedmodel": "tensorflow",
    "tensorrt_plan": "tensorrt",
    "onnxruntime_onnx": "onnxruntime",
    "pytorch_libtorch": "pytorch",
}
ENSEMBLE = "ensemble"
KNOWN_PLATFORMS = frozenset({*PLATFORM_BACKEND, ENSEMBLE})
# Backends whose platform Triton cross-checks; any other backend name (python, openvino, fil,
# dali, vllm, a custom one) accepts any platform.
TYPED_BACKENDS = frozenset(PLATFORM_BACKEND.values())
KNOWN_BACKENDS = frozenset({*TYPED_BACKENDS, "python", "openvino", "fil", "dali", "vllm",
                            "tensorrtllm", "identity", "repeat", "square", "pytorch"})
BACKEND_DEFAULT_FILE = {
    "tensorrt": "model.plan", "onnxruntime": "model.onnx", "pytorch": "model.pt",
    "python": "model.py", "openvino": "model.xml",
}
TF_FILE = {"tensorflow_savedmodel": "model.savedmodel", "tensorflow_graphdef": "model.graphdef"}


@rule("config-name-missing", W,
      "config has no 'name'; Triton fills it from the folder name, but a config that names "
      "its model can be checked on its own", f"{SRC} AutoCompleteBackendFields", context=True)
def name_missing(ctx: ConfigContext) -> Iterator[Issue]:
    if not ctx.written.name:
        yield (), "no 'name': add name: \"<model folder name>\" (Triton uses the folder name)"


@rule("config-backend-missing", W,
      "neither 'platform' nor 'backend' is set: Triton picks the backend from the file names "
      "in the model's first folder (auto-complete)",
      f"{SRC} AutoCompleteBackendFields / ValidateModelConfig", context=True)
def backend_missing(ctx: ConfigContext) -> Iterator[Issue]:
    written = ctx.written
    if written.platform or written.backend or written.default_model_filename:
        return
    completion = ctx.completion
    picked = dict(completion.inferred)
    if "backend" in picked and completion.files is not None:
        where = f"{completion.files.first_folder}/" if completion.files.first_folder else \
            f"the model name {completion.files.model_name!r}"
        yield (), (f"neither 'platform' nor 'backend' is set; Triton picks backend "
                   f"'{picked['backend']}' from {where}. Set backend: "
                   f"\"{picked['backend']}\" so the config says what it is")
    elif completion.undetermined is None:
        yield (), ("neither 'platform' nor 'backend' is set; Triton will infer it from the "
                   "files in the model's first folder. Set backend: \"python\" / "
                   "\"onnxruntime\" / ... explicitly")


@rule("config-platform-unknown", E,
      "'platform' names no platform Triton knows and no 'backend' is set",
      f"{SRC} ValidateModelConfig ('unexpected platform type')")
def platform_unknown(config: ModelConfig) -> Iterator[Issue]:
    if config.platform and not config.backend and config.platform not in KNOWN_PLATFORMS:
        known = ", ".join(sorted(KNOWN_PLATFORMS))
        yield ("platform",), (f"unknown platform '{config.platform}'; use one of {known}, "
                              "or set 'backend' instead")


@rule("config-platform-backend-mismatch", E,
      "'platform' and 'backend' name different frameworks",
      f"{SRC} ValidateModelConfig ('unexpected platform and backend pair')")
def platform_backend_mismatch(config: ModelConfig) -> Iterator[Issue]:
    backend, platform = config.backend, config.platform
    if backend in TYPED_BACKENDS and platform and platform != ENSEMBLE:
        if PLATFORM_BACKEND.get(platform) != backend:
            expected = sorted(p for p, b in PLATFORM_BACKEND.items() if b == backend)
            yield ("platform",), (f"platform '{platform}' does not go with backend "
                                  f"'{backend}'; use platform {' or '.join(expected)} or "
                                  "remove 'platform'")


@rule("config-tensorflow-platform-missing", W,
      "backend 'tensorflow' without a platform: Triton must find model.savedmodel or "
      "model.graphdef to pick one", f"{SRC} AutoCompleteBackendFields")
def tensorflow_platform(config: ModelConfig) -> Iterator[Issue]:
    if (config.backend == "tensorflow" and not config.platform
            and config.default_model_filename not in TF_FILE.values()):
        yield ("backend",), ("backend 'tensorflow' needs a platform: set platform: "
                             "\"tensorflow_savedmodel\" or \"tensorflow_graphdef\"")


@rule("config-ensemble-backend", E,
      "an ensemble must have platform 'ensemble' and no 'backend'",
      f"{SRC} ValidateModelConfig")
def ensemble_backend(config: ModelConfig) -> Iterator[Issue]:
    if config.platform == ENSEMBLE and config.backend:
        yield ("backend",), "an ensemble has no backend: remove the 'backend' line"


@rule("config-max-batch-size-negative", E, "'max_batch_size' must be >= 0",
      f"{SRC} ValidateModelConfig")
def max_batch_size_negative(config: ModelConfig) -> Iterator[Issue]:
    if config.max_batch_size < 0:
        yield ("max_batch_size",), (f"max_batch_size is {config.max_batch_size}; use 0 for a "
                                    "model that does not batch, or the largest batch it takes")


@rule("config-version-policy-specific-empty", E,
      "a 'specific' version policy lists no versions: Triton refuses a model with no version "
      "to serve",
      "core:src/model_repository_manager.cc GetModelVersionsFromPath")
def specific_empty(config: ModelConfig) -> Iterator[Issue]:
    vp = config.version_policy
    if vp.WhichOneof("policy_choice") == "specific" and not vp.specific.versions:
        yield ("version_policy", "specific"), ("version_policy specific lists no versions: "
                                               "list the versions to serve")


@rule("config-version-policy-latest-zero", E,
      "a 'latest' version policy with num_versions 0: Triton refuses a model with no version "
      "to serve",
      "core:src/model_repository_manager.cc GetModelVersionsFromPath")
def latest_zero(config: ModelConfig) -> Iterator[Issue]:
    vp = config.version_policy
    if vp.WhichOneof("policy_choice") == "latest" and vp.latest.num_versions < 1:
        yield ("version_policy", "latest"), ("version_policy latest has num_versions 0: "
                                             "set num_versions: 1 or more")


@rule("config-version-policy-duplicate", W,
      "a 'specific' version policy lists a version twice",
      "judgement: harmless to Triton, always a typo")
def specific_duplicate(config: ModelConfig) -> Iterator[Issue]:
    seen: set[int] = set()
    for i, v in enumerate(config.version_policy.specific.versions):
        if v in seen:
            yield ("version_policy", "specific", "versions", i), f"version {v} is listed twice"
        seen.add(v)


@rule("config-version-policy-negative", E,
      "version numbers are >= 0 (they are folder names)",
      "core:src/model_repository_manager.cc GetModelVersionsFromPath")
def specific_negative(config: ModelConfig) -> Iterator[Issue]:
    for i, v in enumerate(config.version_policy.specific.versions):
        if v < 0:
            yield (("version_policy", "specific", "versions", i),
                   f"version {v} cannot exist: version folders are named 1, 2, 3, ...")


@rule("config-response-cache-sequence", E,
      "the response cache cannot be enabled on a sequence-batching model",
      f"{SRC} ValidateModelConfig")
def cache_sequence(config: ModelConfig) -> Iterator[Issue]:
    if config.HasField("sequence_batching") and config.response_cache.enable:
        yield ("response_cache",), ("response_cache is not supported with sequence_batching: "
                                    "set response_cache { enable: false }")


@rule("config-response-cache-decoupled", E,
      "the response cache cannot be enabled on a decoupled model", f"{SRC} ValidateModelConfig")
def cache_decoupled(config: ModelConfig) -> Iterator[Issue]:
    if config.model_transaction_policy.decoupled and config.response_cache.enable:
        yield ("response_cache",), ("response_cache is not supported for decoupled models: "
                                    "set response_cache { enable: false }")


@rule("config-model-metrics", E,
      "each model_metrics.metric_control needs a metric_identifier with a family and "
      "histogram_options with buckets", f"{SRC} ValidateModelMetrics")
def model_metrics(config: ModelConfig) -> Iterator[Issue]:
    for i, mc in enumerate(config.model_metrics.metric_control):
        path = ("model_metrics", "metric_control", i)
        if not mc.HasField("metric_identifier"):
            yield path, "metric_control needs a metric_identifier { family: \"...\" }"
        elif not mc.metric_identifier.family:
            yield (*path, "metric_identifier"), "metric_identifier needs a non-empty 'family'"
        if not mc.HasField("histogram_options"):
            yield path, "metric_control needs histogram_options { buckets: [...] }"
        elif not mc.histogram_options.buckets:
            yield (*path, "histogram_options"), "histogram_options needs non-empty 'buckets'"


# Enum fields whose unknown values Triton refuses: they have error rules of their own.
_REFUSED_ENUMS = frozenset({"inference.ModelInstanceGroup.kind", "inference.BatchInput.kind",
                            "inference.BatchOutput.kind"})


def _unknown_enums(message: Any, path: FieldPath) -> Iterator[tuple[FieldPath, Any, int]]:
    """(path, field, number) of every enum field set to a number its enum does not define."""
    for field, value in message.ListFields():
        here = (*path, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            if value_field.message_type is not None:
                for key in sorted(value):
                    yield from _unknown_enums(value[key], (*here, key))
        elif field.message_type is not None:
            items = enumerate(value) if field.is_repeated else [(None, value)]
            for i, item in items:
                yield from _unknown_enums(item, here if i is None else (*here, i))
        elif field.enum_type is not None:
            numbers = enumerate(value) if field.is_repeated else [(None, value)]
            for i, number in numbers:
                if number not in field.enum_type.values_by_number:
                    yield (here if i is None else (*here, i)), field, number


@rule("config-enum-unknown", W,
      "every enum field (data_type, format, control kind, timeout_action, ...) holds a value "
      "Triton defines",
      "judgement: Triton 2.51 loads data_type 99, format 9 or control kind 9 (observed), but "
      "no request can use such a tensor or control")
def enum_unknown(config: ModelConfig) -> Iterator[Issue]:
    for path, field, number in _unknown_enums(config, ()):
        if field.full_name in _REFUSED_ENUMS:
            continue
        allowed = ", ".join(v.name for v in field.enum_type.values)
        yield path, (f"{field.name} {number} is no value Triton defines; use one of {allowed}")
