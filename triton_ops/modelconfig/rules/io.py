"""Input/output rules (ValidateIOShape, ValidateModelInput/Output, ValidateBatchIO)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from math import prod
from typing import Any

from triton_ops.modelconfig.proto import ModelConfig, model_config_pb2
from triton_ops.modelconfig.rules.registry import ConfigContext, E, Issue, W, enum_name, rule

SRC = "core:src/model_config_utils.cc"
WILDCARD = -1
TENSORRT = "tensorrt_plan"
_FORMAT_3D = {model_config_pb2.ModelInput.FORMAT_NHWC, model_config_pb2.ModelInput.FORMAT_NCHW}


def _ios(config: ModelConfig) -> Iterator[tuple[str, int, Any]]:
    for i, io in enumerate(config.input):
        yield "input", i, io
    for i, io in enumerate(config.output):
        yield "output", i, io


def _label(kind: str, io: Any) -> str:
    return f"{kind} '{io.name}'" if io.name else kind


@rule("config-io-name-missing", E, "every input and output needs a non-empty 'name'",
      f"{SRC} ValidateIOShape")
def name_missing(config: ModelConfig) -> Iterator[Issue]:
    for kind, i, io in _ios(config):
        if not io.name:
            yield (kind, i), f"{kind} #{i + 1} has no name: add name: \"...\""


@rule("config-io-name-duplicate", E,
      "input names are unique, and output names are unique (Triton core loads duplicates, "
      "but a request can only address one of them)",
      "judgement: stricter than Triton 2.51, which loads duplicates (observed)")
def name_duplicate(config: ModelConfig) -> Iterator[Issue]:
    for kind in ("input", "output"):
        seen: dict[str, int] = {}
        for i, io in enumerate(getattr(config, kind)):
            if io.name and io.name in seen:
                yield (kind, i, "name"), (f"{kind} name '{io.name}' is also used by {kind} "
                                          f"#{seen[io.name] + 1}; rename one of them")
            seen.setdefault(io.name, i)


@rule("config-io-data-type-missing", E,
      "every input and output needs a 'data_type', unless the backend completes it from the "
      "model file at load (then: config-autocomplete)", f"{SRC} ValidateIOShape",
      context=True)
def data_type_missing(ctx: ConfigContext) -> Iterator[Issue]:
    if ctx.completion.io_completer() is not None:
        return
    for kind, i, io in _ios(ctx.config):
        if io.data_type == model_config_pb2.TYPE_INVALID:
            yield (kind, i), f"{_label(kind, io)} has no data_type: add e.g. data_type: TYPE_FP32"


@rule("config-io-dims-missing", E,
      "every input and output needs 'dims' (a batching scalar is dims: [ 1 ] with "
      "reshape: { shape: [ ] }), unless the backend completes them from the model file at "
      "load (then: config-autocomplete)", f"{SRC} ValidateIOShape", context=True)
def dims_missing(ctx: ConfigContext) -> Iterator[Issue]:
    if ctx.completion.io_completer() is not None:
        return
    for kind, i, io in _ios(ctx.config):
        if not io.dims:
            yield (kind, i), (f"{_label(kind, io)} has no dims: give its shape without the "
                              "batch dimension, e.g. dims: [ 3, 224, 224 ]")


@rule("config-io-dim-invalid", E, "each dimension is an integer >= 1, or -1 for variable size",
      f"{SRC} ValidateIOShape")
def dim_invalid(config: ModelConfig) -> Iterator[Issue]:
    for kind, i, io in _ios(config):
        for d, dim in enumerate(io.dims):
            if dim < 1 and dim != WILDCARD:
                yield (kind, i, "dims", d), (f"{_label(kind, io)} has dimension {dim}; use an "
                                             "integer >= 1, or -1 for a variable-size dimension")


@rule("config-io-reshape-empty-nonbatching", E,
      "an empty reshape (scalar) is only allowed when max_batch_size > 0",
      f"{SRC} ValidateIOShape")
def reshape_empty(config: ModelConfig) -> Iterator[Issue]:
    if config.max_batch_size != 0:
        return
    for kind, i, io in _ios(config):
        if io.HasField("reshape") and not io.reshape.shape:
            yield (kind, i, "reshape"), (f"{_label(kind, io)}: an empty reshape makes a scalar, "
                                         "which a non-batching model (max_batch_size 0) cannot "
                                         "have; remove the reshape")


@rule("config-io-reshape-dim-invalid", E,
      "each reshape dimension is an integer >= 1, or -1", f"{SRC} ValidateIOShape")
def reshape_dim_invalid(config: ModelConfig) -> Iterator[Issue]:
    for kind, i, io in _ios(config):
        for d, dim in enumerate(io.reshape.shape):
            if dim < 1 and dim != WILDCARD:
                yield ((kind, i, "reshape", "shape", d),
                       f"{_label(kind, io)} reshape has dimension {dim}; use >= 1 or -1")


def _element_count(dims: Sequence[int]) -> int:
    return WILDCARD if any(d == WILDCARD for d in dims) else prod(dims)


def _chunks(dims: Sequence[int]) -> list[int]:
    """Element counts of the runs of fixed dimensions between variable-size ones."""
    counts, current = [], 1
    for d in dims:
        if d == WILDCARD:
            counts.append(current)
            current = 1
        else:
            current *= d
    counts.append(current)
    return counts


@rule("config-io-reshape-mismatch", E,
      "dims and reshape hold the same number of elements (checked between variable-size "
      "dimensions too)", f"{SRC} ValidateIOShape")
def reshape_mismatch(config: ModelConfig) -> Iterator[Issue]:
    for kind, i, io in _ios(config):
        if not io.HasField("reshape") or not io.dims:
            continue
        dims, shape = list(io.dims), list(io.reshape.shape)
        if any(d < 1 and d != WILDCARD for d in dims + shape):
            continue  # reported by the dimension rules
        path = (kind, i, "reshape")
        dims_n, shape_n = _element_count(dims), _element_count(shape)
        if not shape:
            if dims_n != 1:
                yield path, (f"{_label(kind, io)}: an empty reshape needs dims with exactly one "
                             f"element, but dims {dims} hold {dims_n}")
            continue
        if dims_n != shape_n:
            yield path, (f"{_label(kind, io)}: dims {dims} and reshape {shape} hold different "
                         "numbers of elements")
        elif dims_n == WILDCARD:
            a, b = _chunks(dims), _chunks(shape)
            if len(a) != len(b):
                yield path, (f"{_label(kind, io)}: dims {dims} and reshape {shape} have different "
                             "numbers of variable-size (-1) dimensions")
            elif a != b:
                yield path, (f"{_label(kind, io)}: dims {dims} and reshape {shape} differ in size "
                             "between their variable-size (-1) dimensions")


@rule("config-io-format-dims", E, "an input with format FORMAT_NHWC/FORMAT_NCHW has 3 dims",
      f"{SRC} ValidateModelInput")
def format_dims(config: ModelConfig) -> Iterator[Issue]:
    for i, io in enumerate(config.input):
        if io.format in _FORMAT_3D and len(io.dims) != 3:
            yield ("input", i, "format"), (f"input '{io.name}' has an image format, which needs "
                                           f"exactly 3 dims (it has {len(io.dims)})")


@rule("config-io-shape-tensor-platform", E,
      "is_shape_tensor is only supported on the tensorrt_plan platform (given, or inferred "
      "from the model file)", f"{SRC} ValidateModelInput / ValidateModelOutput", context=True)
def shape_tensor_platform(ctx: ConfigContext) -> Iterator[Issue]:
    config = ctx.config
    if config.platform == TENSORRT or ctx.completion.backend_pending:
        return
    for kind, i, io in _ios(config):
        if io.is_shape_tensor:
            yield (kind, i, "is_shape_tensor"), (f"{_label(kind, io)}: shape tensors are only "
                                                 "supported for platform tensorrt_plan; remove "
                                                 "is_shape_tensor")


@rule("config-io-non-linear-format", E,
      "is_non_linear_format_io is only for tensorrt_plan (given, or inferred from the model "
      "file) and needs 3 dims", f"{SRC} ValidateNonLinearFormatIO", context=True)
def non_linear(ctx: ConfigContext) -> Iterator[Issue]:
    config = ctx.config
    for kind, i, io in _ios(config):
        if not io.is_non_linear_format_io:
            continue
        path = (kind, i, "is_non_linear_format_io")
        if config.platform != TENSORRT and not ctx.completion.backend_pending:
            yield path, (f"{_label(kind, io)}: non-linear IO format is only supported for "
                         "platform tensorrt_plan")
        elif len(io.dims) != 3:
            yield path, f"{_label(kind, io)}: non-linear IO format needs exactly 3 dims"


@rule("config-io-ragged-no-batching", W,
      "allow_ragged_batch has no effect unless the model batches (max_batch_size > 0 and a "
      "dynamic or sequence batcher)",
      "judgement: Triton 2.51 loads it (observed); see docs/user_guide/ragged_batching.md")
def ragged_no_batching(config: ModelConfig) -> Iterator[Issue]:
    batches = config.max_batch_size > 0 and (config.HasField("dynamic_batching")
                                             or config.HasField("sequence_batching"))
    if batches:
        return
    for i, io in enumerate(config.input):
        if io.allow_ragged_batch:
            yield ("input", i, "allow_ragged_batch"), (
                f"input '{io.name}' allows ragged batches, but this model never forms batches "
                "(needs max_batch_size > 0 and dynamic_batching); remove allow_ragged_batch or "
                "enable batching")


@rule("config-io-variable-dims-not-ragged", W,
      "a batching model with a variable (-1) input dim and no allow_ragged_batch only batches "
      "requests of exactly the same shape",
      "judgement: the dynamic batcher joins requests of different shapes only for ragged "
      "inputs; see docs/user_guide/ragged_batching.md")
def variable_dims_not_ragged(config: ModelConfig) -> Iterator[Issue]:
    if config.max_batch_size <= 0 or not config.HasField("dynamic_batching"):
        return
    for i, io in enumerate(config.input):
        if -1 in io.dims and not io.allow_ragged_batch and not io.is_shape_tensor:
            yield ("input", i, "dims"), (
                f"input '{io.name}' has a variable dim but no allow_ragged_batch: the dynamic "
                "batcher only joins requests of exactly the same shape, so requests of "
                "different lengths run one by one. Set allow_ragged_batch: true if the model "
                "takes each request's own shape (the Python backend does; other backends need "
                "a batch_input), or pad requests to a few fixed lengths")


_BATCH_INPUT_TYPES = {model_config_pb2.TYPE_INT32, model_config_pb2.TYPE_FP32}


@rule("config-batch-kind-unknown", E,
      "a batch_input or batch_output kind is one Triton defines", f"{SRC} ValidateBatchIO "
      "('unknown batch input kind' / 'unknown batch output kind')")
def batch_kind_unknown(config: ModelConfig) -> Iterator[Issue]:
    for field, enum in (("batch_input", model_config_pb2.BatchInput.Kind),
                        ("batch_output", model_config_pb2.BatchOutput.Kind)):
        for i, b in enumerate(getattr(config, field)):
            if b.kind not in enum.values():
                yield (field, i, "kind"), (f"{field} kind {b.kind} is no value Triton defines; "
                                           f"use one of {', '.join(enum.keys())}")


@rule("config-batch-input-source-count", E,
      "every batch_input kind takes exactly one source_input", f"{SRC} ValidateBatchIO")
def batch_input_sources(config: ModelConfig) -> Iterator[Issue]:
    for i, bi in enumerate(config.batch_input):
        if len(bi.source_input) != 1:
            kind = enum_name(model_config_pb2.BatchInput.Kind, bi.kind)
            yield ("batch_input", i), (f"batch input kind {kind} expects 1 source_input, got "
                                       f"{len(bi.source_input)}")


@rule("config-batch-input-data-type", E, "a batch_input's data_type is TYPE_INT32 or TYPE_FP32",
      f"{SRC} ValidateBatchIO")
def batch_input_type(config: ModelConfig) -> Iterator[Issue]:
    for i, bi in enumerate(config.batch_input):
        if bi.data_type not in _BATCH_INPUT_TYPES:
            yield ("batch_input", i, "data_type"), (
                f"batch input '{bi.target_name}' has data_type "
                f"{enum_name(model_config_pb2.DataType, bi.data_type)}; use TYPE_INT32 or "
                "TYPE_FP32")


@rule("config-batch-input-source-unknown", E,
      "batch_input/batch_output source_input names an input of the model",
      f"{SRC} ValidateBatchIO")
def batch_source_unknown(config: ModelConfig) -> Iterator[Issue]:
    names = {io.name for io in config.input}
    for field in ("batch_input", "batch_output"):
        for i, b in enumerate(getattr(config, field)):
            for j, src in enumerate(b.source_input):
                if src not in names:
                    yield (field, i, "source_input", j), (
                        f"{field} source_input '{src}' is not an input of this model; inputs: "
                        f"{', '.join(sorted(names)) or 'none'}")


@rule("config-batch-input-target-missing", W,
      "a batch_input without target_name gives the model a tensor with no name",
      "judgement: ValidateBatchIO does not check it")
def batch_input_target(config: ModelConfig) -> Iterator[Issue]:
    for i, bi in enumerate(config.batch_input):
        if not bi.target_name:
            yield ("batch_input", i), ("batch_input has no target_name: name the tensor the "
                                       "model receives")


@rule("config-batch-output-target", E,
      "batch_output target_name entries name outputs of the model, each once",
      f"{SRC} ValidateBatchIO")
def batch_output_target(config: ModelConfig) -> Iterator[Issue]:
    names = {io.name for io in config.output}
    for i, bo in enumerate(config.batch_output):
        path = ("batch_output", i)
        if len(bo.source_input) != 1:
            yield path, f"batch output expects 1 source_input, got {len(bo.source_input)}"
        seen: set[str] = set()
        for j, target in enumerate(bo.target_name):
            if target not in names:
                yield (*path, "target_name", j), (f"batch_output target '{target}' is not an "
                                                  "output of this model")
            elif target in seen:
                yield (*path, "target_name", j), f"batch_output target '{target}' is listed twice"
            seen.add(target)
