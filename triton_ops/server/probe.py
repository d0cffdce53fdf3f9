"""The golden probe: one real inference with an envelope's probe inputs, checked against its answer.

The pure part takes data and returns data: `tensor_array` builds a typed, shape-checked array
from envelope or request values, `describe_difference` says how one output differs from the
answer expected of it (None when it matches), and `probe_inputs` / `probe_expected` /
`compare_outputs` apply them to an envelope's probe. Rollout's shadow comparison (canary vs
stable, `triton_ops.rollout.traffic`) uses the same two functions, so both checks agree on
what a match is: integer, bool and string outputs exactly, floats with
`numpy.isclose(got, expected, rtol, atol)`, NaN only matching NaN. `run_probe` sends the
request to a server over gRPC. A success status with a wrong answer is exactly what this
guards against, so every expected output is compared value by value.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from triton_ops.envelope.model import Envelope, TensorSpec, Tolerance

if TYPE_CHECKING:
    import numpy as np

# Envelopes spell Triton's variable-length string type as in config.pbtxt (TYPE_STRING);
# the client protocol calls it BYTES.
_WIRE_TYPE = {"STRING": "BYTES"}
# numpy dtype of each Triton data type, under both spellings of the string type. BF16 travels
# as float32 arrays (tritonclient converts them).
_NUMPY_TYPES = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32",
    "UINT64": "uint64", "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64", "BF16": "float32",
    "STRING": "object", "BYTES": "object",
}
_TEXT_TYPES = {"STRING", "BYTES"}
EXACT_TYPES = frozenset({"BOOL", "STRING", "BYTES", "INT8", "INT16", "INT32", "INT64",
                         "UINT8", "UINT16", "UINT32", "UINT64"})


class ProbeSetupError(ValueError):
    """The envelope cannot be probed as written (no probe, unknown tensors, wrong shapes)."""


class TensorValueError(ValueError):
    """Values that do not make an array of a tensor's declared type and shape.

    The message continues a sentence that names the tensor: "is not a FP32 array: ..." or
    "has shape [3], but the model takes [N, 3] ..."."""


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


def numpy_dtype(data_type: str) -> Any:
    """The numpy dtype that carries Triton `data_type` (envelope or wire spelling)."""
    import numpy as np

    try:
        return np.dtype(_NUMPY_TYPES[data_type])
    except KeyError:
        raise TensorValueError(f"has data type {data_type}, which has no numpy type") from None


def data_type_of(array: Any) -> str:
    """The Triton data type an array carries (STRING for text), for arrays with no spec."""
    import numpy as np

    dtype = np.asarray(array).dtype
    if dtype.kind in "OSU":
        return "STRING"
    if dtype.kind == "b":
        return "BOOL"
    if dtype.kind in "iu":
        return f"{'U' if dtype.kind == 'u' else ''}INT{dtype.itemsize * 8}"
    return f"FP{dtype.itemsize * 8}" if dtype.kind == "f" else str(dtype).upper()


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


def _as_bytes(value: Any) -> bytes:
    # What tritonclient puts on the wire for a BYTES element.
    if isinstance(value, bytes):
        return bytes(value)
    return value.encode("utf-8") if isinstance(value, str) else str(value).encode("utf-8")


def tensor_array(spec: TensorSpec, value: Any, *, batched: bool,
                 output: bool = False) -> np.ndarray:
    """`value` (nested lists from YAML/JSON, or an array) as an array of `spec`'s type.

    STRING tensors become object arrays of bytes. Integer and bool values must be exactly
    representable (3.5 or 300 for UINT8 are errors, not silently truncated). The shape must
    be the declared dims (-1 takes any size), after a batch dim of at least 1 when `batched`.
    Raises TensorValueError, whose message continues "input 'X' ..." or "output 'Y' ...".
    """
    import numpy as np

    dtype = numpy_dtype(spec.data_type)
    what = f"not a {spec.data_type} array"
    try:
        raw = np.array(value, dtype=object if spec.data_type in _TEXT_TYPES else None)
        if raw.dtype == object and any(isinstance(v, list | tuple) for v in raw.flat):
            raise ValueError("inhomogeneous")
        if spec.data_type in _TEXT_TYPES:
            array = np.array([_as_bytes(v) for v in raw.flat], dtype=object).reshape(raw.shape)
        else:
            with np.errstate(over="ignore", invalid="ignore"):  # lost values are found below
                array = raw.astype(dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        if "inhomogeneous" in str(exc):
            raise TensorValueError(f"is {what}: rows of different lengths (every row must "
                                   "have the same length)") from None
        raise TensorValueError(f"is {what}: {exc}") from None
    if raw.dtype.kind in "biuf" and raw.size:
        if dtype.kind in "biu":
            lost, why = array != raw, f"is not a {spec.data_type} value"
        else:  # a float too large for the type would become inf
            lost, why = np.isinf(array) & np.isfinite(raw), f"is too large for {spec.data_type}"
        if lost.any():
            where = tuple(int(i) for i in np.argwhere(lost)[0])
            raise TensorValueError(f"is {what}: {raw[where].item()!r} at index {list(where)} "
                                   f"{why}")
    if not _shape_ok(array.shape, spec, batched):
        rank = len(spec.dims) + batched
        if array.ndim != rank:
            why = f" ({rank} dimensions" + (", the first one the batch)" if batched else ")")
        else:
            why = " (the first dim is the batch)" if batched else ""
        raise TensorValueError(
            f"has shape {list(array.shape)}, but the model {'returns' if output else 'takes'} "
            f"{_expected_shape(spec, batched)}{why}")
    return array


def describe_difference(name: str, got: Any, want: Any, *, data_type: str,
                        tolerance: Tolerance) -> str | None:
    """How output `name` differs from the answer expected of it; None when it matches.

    `got` None means the output was not in the answer. Integer, bool and string types
    (`data_type`, Triton's name) match exactly; floats where numpy.isclose(got, want, rtol,
    atol) holds, NaN matching only NaN. The message gives how many values differ and the
    worst one (NaN counts as an infinite error) with its index.
    """
    import numpy as np

    if got is None:
        return f"{name}: missing from the server's answer"
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return f"{name}: shape {list(got.shape)}, expected {list(want.shape)}"
    if got.size == 0:
        return None
    if data_type in _TEXT_TYPES or got.dtype.kind in "OSU" or want.dtype.kind in "OSU":
        got_b = np.array([_as_bytes(v) for v in got.flat], dtype=object).reshape(got.shape)
        want_b = np.array([_as_bytes(v) for v in want.flat], dtype=object).reshape(want.shape)
        bad = got_b != want_b
        if not bad.any():
            return None
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        return (f"{name}: {int(bad.sum())} of {bad.size} values differ; first at index "
                f"{list(where)}: got {got_b[where].decode('utf-8', 'replace')!r}, expected "
                f"{want_b[where].decode('utf-8', 'replace')!r}")
    exact = data_type in EXACT_TYPES
    if exact:
        close = got == want
    else:
        close = np.isclose(got.astype(np.float64), want.astype(np.float64),
                           rtol=tolerance.rtol, atol=tolerance.atol, equal_nan=True)
    if close.all():
        return None
    error = np.abs(got.astype(np.float64) - want.astype(np.float64))
    error = np.where(np.isnan(error), np.inf, error)  # NaN is the worst error
    ranked = np.where(close, -1.0, error)
    where = tuple(int(i) for i in np.unravel_index(int(np.argmax(ranked)), ranked.shape))
    rule = "exact match" if exact else f"atol={tolerance.atol:g}, rtol={tolerance.rtol:g}"

    def shown(value: Any) -> str:
        return str(value.item()) if exact else f"{float(value):.6g}"

    return (f"{name}: {int((~close).sum())} of {close.size} values outside tolerance ({rule}); "
            f"max abs error {float(error[where]):.4g} at index {list(where)} "
            f"(got {shown(got[where])}, expected {shown(want[where])})")


def describe_differences(expected: Mapping[str, Any], actual: Mapping[str, Any], *,
                         data_types: Mapping[str, str], tolerance: Tolerance) -> list[str]:
    """`describe_difference` for every expected output, in order; empty when all match.

    An output missing from `data_types` takes the type its expected array carries."""
    found = []
    for name, want in expected.items():
        difference = describe_difference(
            name, actual.get(name), want,
            data_type=data_types.get(name) or data_type_of(want), tolerance=tolerance)
        if difference:
            found.append(difference)
    return found


def probe_inputs(envelope: Envelope) -> dict[str, np.ndarray]:
    """The probe's input arrays, typed and shaped as the envelope declares them.

    Checks the whole probe (its expected outputs too), so an envelope that passes can be
    probed; raises ProbeSetupError saying what to fix."""
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
        try:
            arrays[name] = tensor_array(spec, value, batched=batched)
        except TensorValueError as exc:
            raise ProbeSetupError(f"probe input {name!r} {exc}") from None
    missing = [s.name for s in envelope.inputs if s.name not in arrays and not s.optional]
    if missing:
        raise ProbeSetupError(f"probe.inputs lacks required input(s): {', '.join(missing)}")
    expected = probe_expected(envelope)
    batch_sizes = {a.shape[0] for a in arrays.values() if a.ndim} if batched else set()
    if len(batch_sizes) == 1:
        for name, want in expected.items():
            if want.shape[0] not in batch_sizes:
                raise ProbeSetupError(
                    f"probe.expected {name!r} has {want.shape[0]} rows but the probe inputs "
                    f"have a batch of {batch_sizes.pop()}"
                )
    return arrays


def probe_expected(envelope: Envelope) -> dict[str, np.ndarray]:
    """The probe's expected outputs as arrays of the declared types and shapes."""
    if envelope.probe is None:
        raise ProbeSetupError(f"envelope {envelope.name!r} has no probe section")
    batched = envelope.max_batch_size > 0
    outputs = {spec.name: spec for spec in envelope.outputs}
    unknown = [name for name in envelope.probe.expected if name not in outputs]
    if unknown:
        raise ProbeSetupError(
            f"probe.expected names output(s) the model does not declare: {', '.join(unknown)} "
            f"(outputs: {', '.join(sorted(outputs)) or 'none'})"
        )
    expected: dict[str, np.ndarray] = {}
    for name, value in envelope.probe.expected.items():
        try:
            expected[name] = tensor_array(outputs[name], value, batched=batched, output=True)
        except TensorValueError as exc:
            raise ProbeSetupError(f"probe.expected {name!r} {exc}") from None
    return expected


def output_types(envelope: Envelope) -> dict[str, str]:
    """Output name -> declared Triton data type, the `data_types` of describe_differences."""
    return {spec.name: spec.data_type for spec in envelope.outputs}


def compare_outputs(envelope: Envelope, outputs: Mapping[str, np.ndarray | None]) -> list[str]:
    """What differs between `outputs` and the probe's expected values (empty: all match)."""
    assert envelope.probe is not None
    return describe_differences(probe_expected(envelope), outputs,
                                data_types=output_types(envelope),
                                tolerance=envelope.probe.tolerance)


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
