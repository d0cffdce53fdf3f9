"""The golden probe against the envelope's tensors, in plain Python (no numpy at import).

A probe that names no tensor, has a shape the dims refuse, or holds a value its data type
cannot carry would fail `triton-ops probe`, the rollout's health check and the chart's
readiness probe, so `validate` reports it first and `helm-values` refuses it. The checks
follow what `triton_ops.server.probe.tensor_array` accepts when it builds the request: the
shape is the declared dims (a batch dim first when the model batches), integer and bool
values must be exactly representable, and every number must be finite (the KServe JSON
request and the Helm values cannot carry NaN or infinity).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from triton_ops.envelope.model import Envelope, TensorSpec

KeyPath = tuple[str | int, ...]
Issue = tuple[KeyPath, str]

_INT_RANGES = {
    "INT8": (-(2**7), 2**7 - 1), "INT16": (-(2**15), 2**15 - 1),
    "INT32": (-(2**31), 2**31 - 1), "INT64": (-(2**63), 2**63 - 1),
    "UINT8": (0, 2**8 - 1), "UINT16": (0, 2**16 - 1), "UINT32": (0, 2**32 - 1),
    "UINT64": (0, 2**64 - 1),
}
# Largest finite value of each float type; anything beyond would become infinity.
_FLOAT_MAX = {"FP16": 65504.0, "BF16": 3.3895313892515355e38, "FP32": 3.4028234663852886e38,
              "FP64": 1.7976931348623157e308}


def _shape(value: Any, rank: int) -> tuple[list[int], str | None]:
    """The shape of nested lists (looked at up to `rank` + 1 levels), or why it has none."""
    shape: list[int] = []
    level = [value]
    while len(shape) <= rank and level and all(isinstance(v, list) for v in level):
        lengths = {len(v) for v in level}
        if len(lengths) > 1:
            return shape, "rows of different lengths (every row must have the same length)"
        shape.append(lengths.pop())
        level = [item for v in level for item in v]
    if level and any(isinstance(v, list) for v in level) and len(shape) <= rank:
        return shape, "rows of different lengths (every row must have the same length)"
    return shape, None


def _expected_shape(spec: TensorSpec, batched: bool) -> str:
    dims = (["N"] if batched else []) + ["*" if d == -1 else str(d) for d in spec.dims]
    return "[" + ", ".join(dims) + "]"


def _shape_problem(spec: TensorSpec, shape: list[int], batched: bool, max_batch_size: int,
                   output: bool) -> str | None:
    takes = "returns" if output else "takes"
    expected = _expected_shape(spec, batched)
    if batched and shape[:1] == [0]:
        return "is an empty batch: give at least one row"
    if len(shape) != len(spec.dims) + batched:
        return f"has shape {shape}, but the model {takes} {expected}"
    if batched:
        if shape[0] > max_batch_size:
            return (f"has a batch of {shape[0]}, which exceeds max_batch_size "
                    f"{max_batch_size}")
    sizes = shape[1:] if batched else shape
    for i, (dim, size) in enumerate(zip(spec.dims, sizes, strict=True)):
        if dim != -1 and dim != size:
            return f"has shape {shape}, but the model {takes} {expected}"
        if dim == -1 and spec.max_dims is not None and not output and size > spec.max_dims[i]:
            return (f"has size {size} in dim {i}, above its max_dims {spec.max_dims[i]}: a "
                    "request that large is refused by admission")
    return None


def _value_problem(data_type: str, value: Any) -> str | None:
    """Why `value` is not an element of `data_type`, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return "is not a finite number"
    if data_type == "STRING":
        return None if isinstance(value, str | int | float | bool) else \
            f"is not a {data_type} value"
    if not isinstance(value, int | float):  # bool is an int
        return f"is not a {data_type} value"
    if data_type == "BOOL":
        return None if value in (0, 1) else f"is not a {data_type} value"
    if data_type in _INT_RANGES:
        low, high = _INT_RANGES[data_type]
        exact = isinstance(value, int) or value.is_integer()
        return None if exact and low <= value <= high else f"is not a {data_type} value"
    if abs(value) > _FLOAT_MAX[data_type]:
        return f"is too large for {data_type}"
    return None


def _elements(value: Any, depth: int, index: tuple[int, ...] = ()) -> Iterator[
        tuple[tuple[int, ...], Any]]:
    if depth == 0:
        yield index, value
        return
    for i, item in enumerate(value):
        yield from _elements(item, depth - 1, (*index, i))


def tensor_problem(spec: TensorSpec, value: Any, *, batched: bool, max_batch_size: int,
                   output: bool = False) -> tuple[str | None, list[int]]:
    """Why `value` cannot be sent (or compared) as `spec`, and its shape."""
    rank = len(spec.dims) + batched
    shape, problem = _shape(value, rank)
    if problem is not None:
        return f"is not a {spec.data_type} array: {problem}", shape
    problem = _shape_problem(spec, shape, batched, max_batch_size, output)
    if problem is not None:
        return problem, shape
    for index, element in _elements(value, rank):
        why = _value_problem(spec.data_type, element)
        if why is not None:
            return (f"is not a {spec.data_type} array: {element!r} at index {list(index)} "
                    f"{why}"), shape
    return None, shape


def probe_problems(envelope: Envelope) -> Iterator[Issue]:
    """(key path, message) for everything in the probe the model would not take or give."""
    probe = envelope.probe
    if probe is None:
        return
    batched = envelope.max_batch_size > 0
    limit = envelope.max_batch_size
    inputs = {spec.name: spec for spec in envelope.inputs}
    outputs = {spec.name: spec for spec in envelope.outputs}
    batches: set[int] = set()
    for name, value in probe.inputs.items():
        spec = inputs.get(name)
        if spec is None:
            yield ("probe", "inputs", name), (
                f"probe input {name!r} is not an input of the model; its inputs: "
                f"{', '.join(inputs) or 'none declared'}")
            continue
        problem, shape = tensor_problem(spec, value, batched=batched, max_batch_size=limit)
        if problem is not None:
            yield ("probe", "inputs", name), f"probe input {name!r} {problem}"
        elif batched:
            batches.add(shape[0])
    missing = [s.name for s in envelope.inputs if not s.optional and s.name not in probe.inputs]
    if missing:
        yield ("probe", "inputs"), ("probe.inputs lacks required input "
                                    f"{', '.join(repr(m) for m in missing)}")
    if not probe.expected:
        yield ("probe", "expected"), ("probe.expected lists no outputs: give the answer the "
                                      "probe must get back")
    for name, value in probe.expected.items():
        spec = outputs.get(name)
        if spec is None:
            yield ("probe", "expected", name), (
                f"probe.expected {name!r} is not an output of the model; its outputs: "
                f"{', '.join(outputs) or 'none declared'}")
            continue
        problem, shape = tensor_problem(spec, value, batched=batched, max_batch_size=limit,
                                        output=True)
        if problem is not None:
            yield ("probe", "expected", name), f"probe.expected {name!r} {problem}"
        elif batched and len(batches) == 1 and shape[0] not in batches:
            yield ("probe", "expected", name), (
                f"probe.expected {name!r} has {shape[0]} rows but the probe inputs have a "
                f"batch of {batches.pop()}")


__all__ = ["probe_problems", "tensor_problem"]
