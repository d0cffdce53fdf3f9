"""The golden probe: one real inference with an envelope's probe inputs, checked against its answer.

The pure part (`probe_inputs`, `compare_outputs`) takes an envelope and arrays and returns
data; `run_probe` sends the request to a server over gRPC. A success status with a wrong
answer is exactly what this guards against, so every expected output is compared value by
value with the envelope's tolerance.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from triton_ops.envelope.model import Envelope, TensorSpec

if TYPE_CHECKING:
    import numpy as np

# Envelopes spell Triton's variable-length string type as in config.pbtxt (TYPE_STRING);
# the client protocol calls it BYTES.
_WIRE_TYPE = {"STRING": "BYTES"}
_EXACT_TYPES = {"BOOL", "STRING", "INT8", "INT16", "INT32", "INT64",
                "UINT8", "UINT16", "UINT32", "UINT64"}


class ProbeSetupError(ValueError):
    """The envelope cannot be probed as written (no probe, unknown tensors, wrong shapes)."""


@dataclass
class ProbeResult:
    """Outcome of one probe. `ok` only when the request succeeded AND every output matched."""

    ok: bool
    differences: list[str] = field(default_factory=list)
    latency_s: float = 0.0
    error: str | None = None
    model: str = ""
    version: str = ""

    def summary(self) -> str:
        target = f"{self.model}" + (f" version {self.version}" if self.version else "")
        if self.error:
            return f"{target}: UNHEALTHY: {self.error}"
        if self.differences:
            return f"{target}: UNHEALTHY, the answer differs from the golden one:\n" + "\n".join(
                f"  {d}" for d in self.differences
            )
        return f"{target}: healthy (golden answer matched in {self.latency_s * 1000:.1f} ms)"


def wire_type(spec: TensorSpec) -> str:
    return _WIRE_TYPE.get(spec.data_type, spec.data_type)


def _numpy_dtype(spec: TensorSpec) -> Any:
    import numpy as np
    from tritonclient.utils import triton_to_np_dtype

    if spec.data_type == "BF16":
        return np.float32  # tritonclient sends BF16 from float32 arrays
    dtype = triton_to_np_dtype(wire_type(spec))
    if dtype is None:
        raise ProbeSetupError(f"tensor {spec.name}: data type {spec.data_type} cannot be probed")
    return dtype


def _shape_ok(shape: tuple[int, ...], spec: TensorSpec, batched: bool) -> bool:
    dims = list(spec.dims)  # the client sends `dims`; `reshape` is applied inside Triton
    if batched:
        if len(shape) != len(dims) + 1 or shape[0] < 1:
            return False
        shape = shape[1:]
    if len(shape) != len(dims):
        return False
    return all(d == -1 or d == s for d, s in zip(dims, shape, strict=True))


def _expected_shape(spec: TensorSpec, batched: bool) -> str:
    dims = ["N"] if batched else []
    dims += ["*" if d == -1 else str(d) for d in spec.dims]
    return "[" + ", ".join(dims) + "]"


def probe_inputs(envelope: Envelope) -> dict[str, np.ndarray]:
    """The probe's input arrays, typed and shaped as the envelope declares them."""
    import numpy as np

    if envelope.probe is None:
        raise ProbeSetupError(
            f"envelope {envelope.name!r} has no probe section: add probe.inputs and "
            "probe.expected (a golden request and its answer)"
        )
    if not envelope.probe.expected:
        raise ProbeSetupError(f"envelope {envelope.name!r}: probe.expected lists no outputs")
    batched = envelope.max_batch_size > 0
    declared = {spec.name: spec for spec in envelope.inputs}
    arrays: dict[str, np.ndarray] = {}
    for name, value in envelope.probe.inputs.items():
        spec = declared.get(name)
        if spec is None:
            raise ProbeSetupError(
                f"probe input {name!r} is not one of the model's inputs "
                f"({', '.join(declared) or 'none declared'})"
            )
        dtype = _numpy_dtype(spec)
        try:
            if spec.data_type == "STRING":
                array = np.array(
                    [v.encode() if isinstance(v, str) else v for v in np.ravel(value)],
                    dtype=np.object_,
                ).reshape(np.shape(value))
            else:
                array = np.array(value, dtype=dtype)
        except (TypeError, ValueError) as exc:
            raise ProbeSetupError(
                f"probe input {name!r}: the values are not a regular {spec.data_type} "
                f"array ({exc}); every row must have the same length"
            ) from None
        if not _shape_ok(array.shape, spec, batched):
            raise ProbeSetupError(
                f"probe input {name!r} has shape {list(array.shape)}, but the model takes "
                f"{_expected_shape(spec, batched)}"
                + (" (the first dim is the batch)" if batched else "")
            )
        arrays[name] = array
    missing = [s.name for s in envelope.inputs if s.name not in arrays and not s.optional]
    if missing:
        raise ProbeSetupError(f"probe.inputs lacks required input(s): {', '.join(missing)}")
    outputs = {spec.name: spec for spec in envelope.outputs}
    unknown = [name for name in envelope.probe.expected if name not in outputs]
    if unknown:
        raise ProbeSetupError(
            f"probe.expected names output(s) the model does not declare: {', '.join(unknown)} "
            f"(outputs: {', '.join(sorted(outputs)) or 'none'})"
        )
    batch_sizes = {a.shape[0] for a in arrays.values() if a.ndim} if batched else set()
    for name, value in envelope.probe.expected.items():
        spec = outputs[name]
        try:
            expected = np.array(value, dtype=np.object_ if spec.data_type == "STRING"
                                else np.float64)
        except (TypeError, ValueError) as exc:
            raise ProbeSetupError(
                f"probe.expected {name!r}: the values are not a regular {spec.data_type} "
                f"array ({exc}); every row must have the same length"
            ) from None
        if not _shape_ok(expected.shape, spec, batched):
            raise ProbeSetupError(
                f"probe.expected {name!r} has shape {list(expected.shape)}, but the model "
                f"returns {_expected_shape(spec, batched)}"
            )
        if batched and len(batch_sizes) == 1 and expected.shape[0] not in batch_sizes:
            raise ProbeSetupError(
                f"probe.expected {name!r} has {expected.shape[0]} rows but the probe inputs "
                f"have a batch of {batch_sizes.pop()}"
            )
    return arrays


def compare_outputs(envelope: Envelope, outputs: dict[str, np.ndarray | None]) -> list[str]:
    """What differs between `outputs` and the probe's expected values (empty: all match)."""
    import numpy as np

    assert envelope.probe is not None
    tol = envelope.probe.tolerance
    differences: list[str] = []
    for name, expected_value in envelope.probe.expected.items():
        spec = envelope.tensor(name)
        got = outputs.get(name)
        if got is None:
            differences.append(f"{name}: not returned by the server")
            continue
        if spec.data_type == "STRING":
            expected = np.array(expected_value, dtype=np.object_)
            got = np.vectorize(
                lambda v: v.decode("utf-8", "replace") if isinstance(v, bytes) else v,
                otypes=[np.object_],
            )(got) if got.size else got
        else:
            expected = np.array(expected_value, dtype=np.float64)
        if got.shape != expected.shape:
            differences.append(
                f"{name}: shape {list(got.shape)}, expected {list(expected.shape)}"
            )
            continue
        if got.size == 0:
            continue
        if spec.data_type == "STRING":
            bad = got != expected
            if bad.any():
                where = tuple(int(i) for i in np.argwhere(bad)[0])
                differences.append(
                    f"{name}: {int(bad.sum())} of {bad.size} values differ; first at index "
                    f"{where}: got {got[where]!r}, expected {expected[where]!r}"
                )
            continue
        actual = got.astype(np.float64)
        exact = spec.data_type in _EXACT_TYPES
        if exact:
            close = actual == expected
        else:
            close = np.isclose(actual, expected, rtol=tol.rtol, atol=tol.atol)
        if close.all():
            continue
        error = np.abs(actual - expected)
        error = np.where(np.isnan(error), np.inf, error)  # NaN is the worst error
        ranked = np.where(close, -1.0, error)
        where = tuple(int(i) for i in np.unravel_index(int(np.argmax(ranked)), ranked.shape))
        rule = "exact match" if exact else f"atol={tol.atol:g}, rtol={tol.rtol:g}"
        differences.append(
            f"{name}: {int((~close).sum())} of {close.size} values outside tolerance "
            f"({rule}); max abs error {float(error[where]):.6g} at index {list(where)} "
            f"(got {actual[where]:.6g}, expected {expected[where]:.6g})"
        )
    return differences


def run_probe(
    envelope: Envelope,
    grpc_url: str,
    *,
    model_name: str | None = None,
    model_version: str = "",
    timeout_s: float = 10.0,
) -> ProbeResult:
    """Send the envelope's golden request to `grpc_url` and compare the answer.

    Raises ProbeSetupError when the envelope itself cannot be probed; server-side problems
    (unreachable, model not ready, inference error, wrong answer) come back in the result.
    """
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from triton_ops.server.endpoints import grpc_channel_args

    name = model_name or envelope.name
    version = str(model_version or "")
    arrays = probe_inputs(envelope)
    assert envelope.probe is not None
    result = ProbeResult(ok=False, model=name, version=version)
    try:
        client = grpcclient.InferenceServerClient(
            grpc_url, channel_args=grpc_channel_args(grpc_url)
        )
    except Exception as exc:  # noqa: BLE001 - a bad URL is reported, not raised
        result.error = f"cannot connect to {grpc_url}: {exc}"
        return result
    try:
        try:
            ready = client.is_model_ready(name, version, client_timeout=timeout_s)
        except InferenceServerException as exc:
            result.error = f"server at {grpc_url} did not answer: {_message(exc)}"
            return result
        if not ready:
            which = f"{name!r}" + (f" version {version}" if version else "")
            result.error = (
                f"model {which} is not ready on {grpc_url} (not loaded, still loading, or "
                "its load failed: see the server log)"
            )
            return result
        inputs = []
        for input_name, array in arrays.items():
            tensor = grpcclient.InferInput(
                input_name, list(array.shape), wire_type(envelope.tensor(input_name))
            )
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        requested = [grpcclient.InferRequestedOutput(o) for o in envelope.probe.expected]
        start = time.perf_counter()
        try:
            response = client.infer(
                name, inputs, model_version=version, outputs=requested, client_timeout=timeout_s
            )
        except InferenceServerException as exc:
            result.latency_s = time.perf_counter() - start
            result.error = f"inference failed: {_message(exc)}"
            return result
        result.latency_s = time.perf_counter() - start
        outputs = {o: response.as_numpy(o) for o in envelope.probe.expected}
        result.differences = compare_outputs(envelope, outputs)
        result.ok = not result.differences
        return result
    finally:
        client.close()


def _message(exc: Exception) -> str:
    message = getattr(exc, "message", None)
    text = message() if callable(message) else str(exc)
    return " ".join(str(text).split()) or type(exc).__name__
