"""Ensemble rules (ValidateEnsembleSchedulingConfig, BuildEnsembleGraph).

Checks needing the composing models' configs (their inputs, outputs, max_batch_size) are in
`check_ensemble_against` and run by the repository check, where those configs are known.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from triton_ops.modelconfig.proto import ModelConfig, model_config_pb2
from triton_ops.modelconfig.rules.registry import E, Issue, enum_name, rule

SRC = "core:src/model_config_utils.cc ValidateEnsembleSchedulingConfig"
ES = "ensemble_scheduling"


def _is_ensemble(config: ModelConfig) -> bool:
    return config.platform == "ensemble" or config.HasField(ES)


@rule("config-ensemble-platform", E,
      "ensemble_scheduling goes with platform 'ensemble', and platform 'ensemble' needs "
      "ensemble_scheduling", f"{SRC} / ValidateModelConfig")
def platform(config: ModelConfig) -> Iterator[Issue]:
    if config.HasField(ES) and config.platform != "ensemble":
        yield (ES,), "ensemble_scheduling needs platform: \"ensemble\""
    if config.platform == "ensemble" and not config.HasField(ES):
        yield ("platform",), "platform 'ensemble' needs an ensemble_scheduling { step [...] }"


@rule("config-ensemble-forbidden-field", E,
      "an ensemble has no instance_group, optimization or model_warmup", SRC)
def forbidden(config: ModelConfig) -> Iterator[Issue]:
    if not config.HasField(ES):
        return
    if config.instance_group:
        yield ("instance_group",), "an ensemble has no instance_group: remove it"
    if config.HasField("optimization"):
        yield ("optimization",), "an ensemble has no optimization settings: remove them"
    if config.model_warmup:
        yield ("model_warmup",), "an ensemble cannot be warmed up: remove model_warmup"


@rule("config-ensemble-step", E,
      "an ensemble has steps, each with model_name, input_map and output_map",
      "core:src/model_config_utils.cc BuildEnsembleGraph")
def steps(config: ModelConfig) -> Iterator[Issue]:
    if not config.HasField(ES):
        return
    if not config.ensemble_scheduling.step:
        yield (ES,), "ensemble_scheduling has no step: add at least one"
    for i, step in enumerate(config.ensemble_scheduling.step):
        path = (ES, "step", i)
        if not step.model_name:
            yield path, f"step {i} has no model_name"
        if not step.input_map:
            yield path, f"step {i} has no input_map"
        if not step.output_map:
            yield path, f"step {i} has no output_map"


@rule("config-ensemble-tensor-written-twice", E,
      "an ensemble tensor appears in the output_map of one step only, once",
      "core:src/model_config_utils.cc BuildEnsembleGraph")
def written_twice(config: ModelConfig) -> Iterator[Issue]:
    writers: dict[str, int] = {}
    inputs = {io.name for io in config.input}
    for i, step in enumerate(config.ensemble_scheduling.step):
        for key in sorted(step.output_map):
            tensor = step.output_map[key]
            path = (ES, "step", i, "output_map", key)
            if tensor in writers:
                yield path, (f"ensemble tensor '{tensor}' is already written by step "
                             f"{writers[tensor]}; give it another name")
            elif tensor in inputs:
                yield path, (f"ensemble tensor '{tensor}' is an ensemble input and cannot also "
                             "be written by a step")
            writers.setdefault(tensor, i)


def _dataflow(config: ModelConfig) -> tuple[set[str], dict[str, list[str]], dict[str, int]]:
    """Which tensors become available from the ensemble inputs; tensor -> its producers."""
    producers: dict[str, list[str]] = {}
    writer: dict[str, int] = {}
    for i, step in enumerate(config.ensemble_scheduling.step):
        for tensor in step.output_map.values():
            producers.setdefault(tensor, []).extend(step.input_map.values())
            writer.setdefault(tensor, i)
    ready = {io.name for io in config.input}
    changed = True
    while changed:
        changed = False
        for step in config.ensemble_scheduling.step:
            if all(t in ready for t in step.input_map.values()):
                for tensor in step.output_map.values():
                    if tensor not in ready:
                        ready.add(tensor)
                        changed = True
    return ready, producers, writer


def _cycle(producers: Mapping[str, list[str]], start: str) -> list[str] | None:
    """A cycle through `start` in the tensor dependency graph, if one exists."""
    stack = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, trail = stack.pop()
        for prev in producers.get(node, []):
            if prev == start:
                return trail
            if prev not in seen:
                seen.add(prev)
                stack.append((prev, [*trail, prev]))
    return None


@rule("config-ensemble-dataflow", E,
      "every ensemble input is used, every ensemble output is written from the inputs, every "
      "internal tensor is both written and read, and steps form no cycle",
      "core:src/model_config_utils.cc ValidateEnsembleSchedulingConfig")
def dataflow(config: ModelConfig) -> Iterator[Issue]:
    if not config.HasField(ES) or not config.ensemble_scheduling.step:
        return
    ready, producers, writer = _dataflow(config)
    consumers: dict[str, int] = {}
    for i, step in enumerate(config.ensemble_scheduling.step):
        for tensor in step.input_map.values():
            consumers.setdefault(tensor, i)
    outputs = {io.name for io in config.output}
    for i, io in enumerate(config.input):
        if io.name not in consumers:
            yield ("input", i), (f"ensemble input '{io.name}' is not used by any step's "
                                 "input_map")
    for i, io in enumerate(config.output):
        if io.name not in writer:
            yield ("output", i), (f"ensemble output '{io.name}' is not written by any step's "
                                  "output_map")
        elif io.name not in ready:
            yield ("output", i), _not_ready(io.name, producers, ready)
    reported = set()
    for i, step in enumerate(config.ensemble_scheduling.step):
        for key in sorted(step.input_map):
            tensor = step.input_map[key]
            if tensor not in ready and tensor not in writer and tensor not in reported:
                reported.add(tensor)
                yield (ES, "step", i, "input_map", key), (
                    f"step {i} reads '{tensor}', which is neither an ensemble input nor written "
                    "by any step")
        for key in sorted(step.output_map):
            tensor = step.output_map[key]
            if tensor in outputs or tensor in reported:
                continue
            if tensor not in consumers:
                reported.add(tensor)
                yield (ES, "step", i, "output_map", key), (
                    f"ensemble tensor '{tensor}' is written but never read; map it to an "
                    "ensemble output or drop it")
            elif tensor not in ready:
                reported.add(tensor)
                yield (ES, "step", i, "output_map", key), _not_ready(tensor, producers, ready)


def _not_ready(tensor: str, producers: Mapping[str, list[str]], ready: set[str]) -> str:
    """Explain why `tensor` never becomes available: a cycle, or an unconnected source."""
    seen, queue = {tensor}, [tensor]
    while queue:
        node = queue.pop(0)
        cycle = _cycle(producers, node)
        if cycle:
            loop = " <- ".join([*cycle, node])
            where = "" if node == tensor else f" (through '{node}')"
            return (f"ensemble tensor '{tensor}' can never be computed{where}: the steps form a "
                    f"cycle {loop}; break the cycle")
        for prev in producers.get(node, []):
            if prev not in ready and prev not in seen:
                seen.add(prev)
                queue.append(prev)
    missing = sorted(t for t in producers.get(tensor, []) if t not in ready)
    return (f"ensemble tensor '{tensor}' can never be computed: it depends on "
            f"{', '.join(repr(t) for t in missing)}, which no step provides from the inputs")


def _dims_compatible(a: list[int], b: list[int]) -> bool:
    if len(a) != len(b):
        return False
    return all(x == y or -1 in (x, y) for x, y in zip(a, b, strict=True))


def check_ensemble_against(config: ModelConfig,
                           models: Mapping[str, ModelConfig | None]) -> Iterator[Issue]:
    """Cross-check an ensemble's steps against the composing models' configs.

    `models` maps model names found in the repository to their parsed config (None when the
    folder exists but its config could not be read). Mirrors ValidateEnsembleConfig.
    """
    if not config.HasField(ES):
        return
    batching = config.max_batch_size > 0
    tensors: dict[str, tuple[int, list[int], str]] = {}
    for io in list(config.input) + list(config.output):
        dims = list(io.reshape.shape) if io.HasField("reshape") else list(io.dims)
        tensors[io.name] = (io.data_type, ([-1] if batching else []) + dims, config.name)
    for i, step in enumerate(config.ensemble_scheduling.step):
        path = (ES, "step", i)
        if step.model_name not in models:
            yield (*path, "model_name"), (f"step {i} uses model '{step.model_name}', which is "
                                          "not in this repository")
            continue
        member = models[step.model_name]
        if member is None:
            continue
        if member.max_batch_size != 0 and member.max_batch_size < config.max_batch_size:
            yield (*path, "model_name"), (
                f"ensemble max_batch_size {config.max_batch_size} is larger than model "
                f"'{step.model_name}' allows ({member.max_batch_size}); lower the ensemble's "
                "max_batch_size")
        m_batching = member.max_batch_size > 0
        m_inputs = {io.name: io for io in member.input}
        m_outputs = {io.name: io for io in member.output}
        for key in sorted(step.input_map):
            if key not in m_inputs:
                yield (*path, "input_map", key), (
                    f"model '{step.model_name}' has no input '{key}'; its inputs: "
                    f"{', '.join(sorted(m_inputs)) or 'none'}")
        for name, io in m_inputs.items():
            if name not in step.input_map and not io.optional:
                yield (*path, "input_map"), (f"input '{name}' of model '{step.model_name}' is "
                                             "not mapped to any ensemble tensor")
        for key in sorted(step.output_map):
            if key not in m_outputs:
                yield (*path, "output_map", key), (
                    f"model '{step.model_name}' has no output '{key}'; its outputs: "
                    f"{', '.join(sorted(m_outputs)) or 'none'}")
        pairs = [(step.input_map[k], m_inputs[k], ("input_map", k))
                 for k in sorted(step.input_map) if k in m_inputs]
        pairs += [(step.output_map[k], m_outputs[k], ("output_map", k))
                  for k in sorted(step.output_map) if k in m_outputs]
        for tensor, io, where in pairs:
            full = ([-1] if m_batching else []) + list(io.dims)
            if tensor not in tensors:
                tensors[tensor] = (io.data_type, full, step.model_name)
                continue
            dtype, dims, origin = tensors[tensor]
            if dtype != io.data_type:
                types = model_config_pb2.DataType
                yield (*path, *where), (
                    f"ensemble tensor '{tensor}' is {enum_name(types, dtype)} in "
                    f"'{origin}' but {enum_name(types, io.data_type)} in "
                    f"'{step.model_name}'")
            elif not _dims_compatible(dims, full):
                yield (*path, *where), (
                    f"ensemble tensor '{tensor}' has shape {dims} in '{origin}' but {full} in "
                    f"'{step.model_name}' (batch dimension included)")
