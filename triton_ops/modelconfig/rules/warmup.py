"""model_warmup rules: a warmup sample is a real request, so it must be a valid one."""

from __future__ import annotations

from collections.abc import Iterator

from triton_ops.modelconfig.proto import ModelConfig, model_config_pb2
from triton_ops.modelconfig.rules.registry import E, Issue, W, enum_name, rule

SRC = "core:src/backend_model_instance.cc GenerateWarmupData"


@rule("config-warmup-input-data", E,
      "each warmup input gives zero_data, random_data or input_data_file, and fixed dims",
      SRC)
def input_data(config: ModelConfig) -> Iterator[Issue]:
    for i, w in enumerate(config.model_warmup):
        if w.batch_size == 0:
            continue  # Triton skips batch-0 samples
        for key in sorted(w.inputs):
            value = w.inputs[key]
            path = ("model_warmup", i, "inputs", key)
            if value.WhichOneof("input_data_type") is None:
                yield path, (f"warmup input '{key}' needs zero_data: true, random_data: true or "
                             "input_data_file")
            if any(d == -1 for d in value.dims):
                yield path, f"warmup input '{key}' must give every dimension (no -1)"


@rule("config-warmup-batch-size", E,
      "a warmup batch_size is at most max_batch_size (1 for a non-batching model)",
      "observed: Triton 2.51 refuses ('batch size N ... max allowed is M'), and now and then "
      "crashes (signal 11) loading it")
def batch_size(config: ModelConfig) -> Iterator[Issue]:
    limit = max(config.max_batch_size, 1)
    for i, w in enumerate(config.model_warmup):
        if w.batch_size > limit:
            yield ("model_warmup", i, "batch_size"), (
                f"warmup batch_size {w.batch_size} exceeds what the model accepts ({limit})")


@rule("config-warmup-inputs-match", E,
      "a warmup sample gives every required model input with the model's data_type and a "
      "shape its dims allow", "observed: Triton 2.51 request validation refuses the warmup sample")
def inputs_match(config: ModelConfig) -> Iterator[Issue]:
    if config.platform == "ensemble":
        return
    model_inputs = {io.name: io for io in config.input}
    for i, w in enumerate(config.model_warmup):
        if w.batch_size == 0:
            continue
        path = ("model_warmup", i)
        controls = {ci.name for ci in config.sequence_batching.control_input}
        for name, io in model_inputs.items():
            if name not in w.inputs and not io.optional and name not in controls:
                yield path, f"warmup sample '{w.name}' does not give required input '{name}'"
        for key in sorted(w.inputs):
            io = model_inputs.get(key)
            if io is None:
                continue
            value = w.inputs[key]
            if value.data_type != io.data_type:
                have = enum_name(model_config_pb2.DataType, value.data_type)
                want = enum_name(model_config_pb2.DataType, io.data_type)
                yield (*path, "inputs", key), (f"warmup input '{key}' is {have} but the model "
                                               f"input is {want}")
            dims = list(io.dims)
            given = list(value.dims)
            if len(given) != len(dims) or any(
                    d not in (-1, g) for d, g in zip(dims, given, strict=True)):
                yield (*path, "inputs", key), (f"warmup input '{key}' has dims {given}, the "
                                               f"model input expects {dims}")


@rule("config-warmup-unknown-input", W,
      "a warmup input that is not a model input is ignored",
      "observed: Triton 2.51 loads it")
def unknown_input(config: ModelConfig) -> Iterator[Issue]:
    names = {io.name for io in config.input}
    names |= {ci.name for ci in config.sequence_batching.control_input}
    for i, w in enumerate(config.model_warmup):
        for key in sorted(w.inputs):
            if key not in names:
                yield ("model_warmup", i, "inputs", key), (f"warmup input '{key}' is not an "
                                                           "input of this model")
