"""Analysis traffic for targets that drive it themselves: request inputs and output comparison.

Requests come from the envelope (the golden probe's inputs first, then random tensors of the
declared shapes) or from a JSON-lines file (`--requests FILE`: one object per line,
input name -> nested list, WITH the batch dimension when the model batches). Outputs of two
versions are compared with the envelope's tolerance (numpy.allclose semantics).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from triton_ops.envelope.model import Envelope, TensorSpec, Tolerance

if TYPE_CHECKING:
    import numpy as np

_NUMPY_TYPES = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32",
    "UINT64": "uint64", "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64", "STRING": "object",
    "BF16": "float32",
}


class RequestsError(ValueError):
    """A requests file or envelope cannot give valid requests; says where and what to do."""


def _dtype(spec: TensorSpec) -> Any:
    import numpy as np

    return np.dtype(_NUMPY_TYPES[spec.data_type])


def _to_array(spec: TensorSpec, value: Any, batched: bool, where: str) -> np.ndarray:
    import numpy as np

    try:
        if spec.data_type == "STRING":
            array = np.array(value, dtype=object)
        else:
            array = np.array(value, dtype=_dtype(spec))
    except (TypeError, ValueError) as exc:
        raise RequestsError(f"{where}: input {spec.name!r} is not a {spec.data_type} array: "
                            f"{exc}") from None
    expected_rank = len(spec.dims) + (1 if batched else 0)
    if array.ndim != expected_rank:
        raise RequestsError(
            f"{where}: input {spec.name!r} has {array.ndim} dimensions, expected "
            f"{expected_rank} ({'batch + ' if batched else ''}dims {spec.dims})")
    return array


def random_requests(envelope: Envelope, count: int, seed: int = 0) -> list[dict[str, Any]]:
    """`count` requests of batch 1 (when the model batches) with random inputs."""
    import numpy as np

    rng = np.random.default_rng(seed)
    batched = envelope.max_batch_size > 0
    requests = []
    for _ in range(count):
        request = {}
        for spec in envelope.inputs:
            if spec.optional:
                continue
            shape = [int(rng.integers(1, m + 1)) if d == -1 else d
                     for d, m in zip(spec.dims, spec.max_shape(), strict=True)]
            shape = ([1] if batched else []) + shape
            dtype = _dtype(spec)
            if spec.data_type == "STRING":
                values = rng.integers(0, 1000, size=shape)
                array = np.vectorize(lambda v: f"s{v}".encode(), otypes=[object])(values)
            elif spec.data_type == "BOOL":
                array = rng.integers(0, 2, size=shape).astype(bool)
            elif np.issubdtype(dtype, np.integer):
                array = rng.integers(0, 100, size=shape).astype(dtype)
            else:
                array = rng.standard_normal(size=shape).astype(dtype)
            request[spec.name] = array
        requests.append(request)
    return requests


def envelope_requests(envelope: Envelope, count: int = 32, seed: int = 0) -> list[dict[str, Any]]:
    """The golden probe's request (if any) followed by random ones, `count` in all."""
    if not envelope.inputs:
        raise RequestsError(f"envelope of {envelope.name} declares no inputs: give --requests "
                            "FILE with recorded requests")
    requests: list[dict[str, Any]] = []
    if envelope.probe is not None:
        requests.append(probe_inputs(envelope))
    requests.extend(random_requests(envelope, max(count - len(requests), 1), seed))
    return requests


def probe_inputs(envelope: Envelope) -> dict[str, Any]:
    if envelope.probe is None:
        raise RequestsError(f"envelope of {envelope.name} has no probe")
    batched = envelope.max_batch_size > 0
    return {name: _to_array(envelope.tensor(name), value, batched, "envelope probe")
            for name, value in envelope.probe.inputs.items()}


def probe_expected(envelope: Envelope) -> dict[str, Any]:
    if envelope.probe is None:
        raise RequestsError(f"envelope of {envelope.name} has no probe")
    batched = envelope.max_batch_size > 0
    return {name: _to_array(envelope.tensor(name), value, batched, "envelope probe expected")
            for name, value in envelope.probe.expected.items()}


def load_requests_file(path: Path, envelope: Envelope) -> list[dict[str, Any]]:
    """Recorded requests, one JSON object per line; errors name the file and line."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise RequestsError(f"{path}: cannot read: {exc}") from None
    batched = envelope.max_batch_size > 0
    known = {s.name: s for s in envelope.inputs}
    requests = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RequestsError(f"{where}: not JSON ({exc.msg}); each line is one request "
                                '{"INPUT": [[...]]}') from None
        if not isinstance(data, dict) or not data:
            raise RequestsError(f"{where}: a request is a JSON object input name -> array")
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise RequestsError(f"{where}: unknown input(s) {unknown}; the envelope declares "
                                f"{sorted(known)}")
        missing = sorted(n for n, s in known.items() if not s.optional and n not in data)
        if missing:
            raise RequestsError(f"{where}: missing input(s) {missing}")
        requests.append({name: _to_array(known[name], value, batched, where)
                         for name, value in data.items()})
    if not requests:
        raise RequestsError(f"{path}: no requests in the file")
    return requests


def compare_outputs(expected: dict[str, Any], actual: dict[str, Any],
                    tolerance: Tolerance) -> str | None:
    """None when every expected output matches within tolerance, else what differs."""
    import numpy as np

    for name, want in expected.items():
        got = actual.get(name)
        if got is None:
            return f"{name} missing from the answer"
        want_a, got_a = np.asarray(want), np.asarray(got)
        if want_a.shape != got_a.shape:
            return f"{name} shape {list(got_a.shape)} != {list(want_a.shape)}"
        if want_a.dtype == object or got_a.dtype == object:
            if not np.array_equal(want_a, got_a):
                return f"{name} differs"
            continue
        if not np.allclose(got_a, want_a, atol=tolerance.atol, rtol=tolerance.rtol,
                           equal_nan=True):
            diff = np.abs(got_a.astype(np.float64) - want_a.astype(np.float64))
            return (f"{name} max |diff| {float(np.nanmax(diff)):.4g} > atol {tolerance.atol:g}"
                    f" + rtol {tolerance.rtol:g}")
    return None
