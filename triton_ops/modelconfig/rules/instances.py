"""instance_group rules (ValidateInstanceGroup, NormalizeInstanceGroup)."""

from __future__ import annotations

from collections.abc import Iterator

from triton_ops.digits import is_ascii_decimal
from triton_ops.modelconfig.proto import ModelConfig, model_config_pb2
from triton_ops.modelconfig.rules.registry import ConfigContext, E, Issue, W, enum_name, rule

SRC = "core:src/model_config_utils.cc"
_Group = model_config_pb2.ModelInstanceGroup


@rule("config-instance-kind-unknown", E,
      "an instance group's kind is KIND_AUTO, KIND_GPU, KIND_CPU or KIND_MODEL",
      f"{SRC} ValidateInstanceGroup ('unexpected kind'; seen refused by Triton 2.51)")
def kind_unknown(config: ModelConfig) -> Iterator[Issue]:
    for i, group in enumerate(config.instance_group):
        if group.kind not in _Group.Kind.values():
            yield ("instance_group", i, "kind"), (
                f"instance group kind {group.kind} is no value Triton defines; use KIND_GPU, "
                "KIND_CPU, KIND_AUTO or KIND_MODEL")


@rule("config-instance-gpus-kind", E,
      "only KIND_GPU (or KIND_AUTO) instance groups may list 'gpus'",
      f"{SRC} ValidateInstanceGroup")
def gpus_kind(config: ModelConfig) -> Iterator[Issue]:
    for i, group in enumerate(config.instance_group):
        if group.gpus and group.kind in (_Group.KIND_CPU, _Group.KIND_MODEL):
            kind = enum_name(_Group.Kind, group.kind)
            yield ("instance_group", i, "gpus"), (f"instance group has kind {kind} but lists "
                                                  "gpus; remove gpus or use KIND_GPU")


@rule("config-instance-gpu-negative", E, "GPU ids in 'gpus' are >= 0",
      f"{SRC} ValidateInstanceGroup")
def gpu_negative(config: ModelConfig) -> Iterator[Issue]:
    for i, group in enumerate(config.instance_group):
        for j, gpu in enumerate(group.gpus):
            if gpu < 0:
                yield ("instance_group", i, "gpus", j), f"GPU id {gpu} does not exist"


@rule("config-instance-count-negative", W,
      "an instance count below 1 is silently replaced by Triton's default (1, or 2 for CPU "
      "onnxruntime/tensorflow)", f"{SRC} NormalizeInstanceGroup / SetDefaultInstanceCount")
def count_negative(config: ModelConfig) -> Iterator[Issue]:
    for i, group in enumerate(config.instance_group):
        if group.count < 0:
            yield ("instance_group", i, "count"), (f"count {group.count} is replaced by "
                                                   "Triton's default; set count: 1 or more")


@rule("config-instance-profile", E,
      "instance group 'profile' is TensorRT-only (platform tensorrt_plan, given or inferred "
      "from the model file) and holds non-negative integers",
      f"{SRC} ValidateInstanceGroup / GetProfileIndex", context=True)
def profile(ctx: ConfigContext) -> Iterator[Issue]:
    config = ctx.config
    for i, group in enumerate(config.instance_group):
        for j, prof in enumerate(group.profile):
            path = ("instance_group", i, "profile", j)
            if ctx.completion.backend_pending:
                break  # the platform comes from the model file: config-autocomplete says so
            if config.platform != "tensorrt_plan":
                yield path, ("'profile' is only supported for TensorRT models (platform "
                             "tensorrt_plan); remove it")
                break
            if not is_ascii_decimal(prof.strip()):
                yield path, f"profile '{prof}' must be a non-negative integer such as \"0\""


@rule("config-instance-name-duplicate", W, "instance group names are unique",
      "judgement: Triton does not check it")
def name_duplicate(config: ModelConfig) -> Iterator[Issue]:
    seen: set[str] = set()
    for i, group in enumerate(config.instance_group):
        if group.name and group.name in seen:
            yield ("instance_group", i, "name"), f"instance group name '{group.name}' is reused"
        seen.add(group.name)


@rule("config-rate-limiter-resource", W,
      "rate_limiter resources have a name, appear once per group and have count >= 1",
      "judgement: Triton 2.51 loads such groups (observed)")
def rate_limiter(config: ModelConfig) -> Iterator[Issue]:
    for i, group in enumerate(config.instance_group):
        seen: set[str] = set()
        for j, res in enumerate(group.rate_limiter.resources):
            path = ("instance_group", i, "rate_limiter", "resources", j)
            if not res.name:
                yield path, "rate limiter resource has no name"
            elif res.name in seen:
                yield (*path, "name"), f"resource '{res.name}' is listed twice in this group"
            if res.count == 0:
                yield path, f"resource '{res.name}' has count 0 and limits nothing"
            seen.add(res.name)
