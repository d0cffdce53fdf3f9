"""Tensors as triton-ops sends and checks them: one place for what every capability needs.

- data types: the numpy dtype (`numpy_dtype`) and the client-protocol name (`wire_type`) of
  each Triton data type;
- typed arrays: `tensor_array` turns envelope or request values (nested lists) into an array
  of a spec's type and shape, refusing values it would have to change;
- random request data within a spec's bounds (`make_input_sets`), for load generation and
  rollout traffic;
- gRPC request inputs from arrays (`infer_inputs`);
- output comparison (`compare_outputs`, `describe_difference`): integer, bool and string
  outputs exactly, floats where `numpy.isclose(got, expected, rtol, atol)` holds, NaN matching
  only NaN; each difference says how many values differ and the worst one, with its index.

The chart's in-pod script (helm/triton/files/triton_pod.py) must stay stdlib-only and keeps a
copy of the comparison; tests/k8s/test_pod_comparison.py holds the two to the same verdicts
and messages. numpy and tritonclient are imported inside the functions that need them, so
that `triton-ops --help` and `validate` never load them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from tritonclient.grpc import InferInput

    from triton_ops.envelope.model import Envelope, TensorSpec, Tolerance

# numpy dtype of each Triton data type, under both spellings of the string type (config.pbtxt
# and envelopes say STRING, the client protocol says BYTES). BF16 travels as float32 arrays
# (numpy has no bfloat16; tritonclient converts them).
_NUMPY_TYPES = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32",
    "UINT64": "uint64", "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64", "BF16": "float32",
    "STRING": "object", "BYTES": "object",
}
TEXT_TYPES = frozenset({"STRING", "BYTES"})
# Compared value for value; a tolerance would hide a wrong class id or token.
EXACT_TYPES = frozenset({"BOOL", "STRING", "BYTES", "INT8", "INT16", "INT32", "INT64",
                         "UINT8", "UINT16", "UINT32", "UINT64"})
# Sizes drawn for a variable dim that has no max_dims.
UNBOUNDED_DIM = 8
# Random integers when a spec gives no value_range: valid embedding indices and token ids.
DEFAULT_INT_HIGH = 99


class TensorValueError(ValueError):
    """Values that do not make an array of a tensor's declared type and shape.

    The message continues a sentence that names the tensor: "is not a FP32 array: ..." or
    "has shape [3], but the model takes [N, 3] ..."."""


# -- data types ------------------------------------------------------------------------------

def _short_type(data_type: str) -> str:
    return data_type.upper().removeprefix("TYPE_")


def wire_type(data_type: str) -> str:
    """The client protocol's name of Triton `data_type` (TYPE_STRING / STRING travel as BYTES)."""
    short = _short_type(data_type)
    return "BYTES" if short == "STRING" else short


def numpy_dtype(data_type: str) -> np.dtype[Any]:
    """The numpy dtype that carries Triton `data_type` (envelope, config or wire spelling)."""
    import numpy as np

    try:
        return np.dtype(_NUMPY_TYPES[_short_type(data_type)])
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


def input_types(envelope: Envelope) -> dict[str, str]:
    """Input name -> declared Triton data type (the `data_types` of `infer_inputs`)."""
    return {spec.name: spec.data_type for spec in envelope.inputs}


def output_types(envelope: Envelope) -> dict[str, str]:
    """Output name -> declared Triton data type (the `data_types` of `compare_outputs`)."""
    return {spec.name: spec.data_type for spec in envelope.outputs}


# -- typed arrays from values ----------------------------------------------------------------

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
    text = spec.data_type in TEXT_TYPES
    what = f"not a {spec.data_type} array"
    try:
        raw = np.array(value, dtype=object if text else None)
        if raw.dtype == object and any(isinstance(v, list | tuple) for v in raw.flat):
            raise ValueError("inhomogeneous")
        if text:
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


# -- random request data ---------------------------------------------------------------------

def sample_dims(spec: TensorSpec, rng: np.random.Generator) -> list[int]:
    """The tensor's dims with each variable dim (-1) drawn in 1..its max_dims entry
    (1..UNBOUNDED_DIM when it has none)."""
    dims = []
    for d, m in zip(spec.dims, spec.max_shape(), strict=True):
        dims.append(int(rng.integers(1, (m if m > 0 else UNBOUNDED_DIM) + 1)) if d == -1 else d)
    return dims


def random_tensor(spec: TensorSpec, batch: int | None, rng: np.random.Generator,
                  dims: Sequence[int] | None = None) -> np.ndarray:
    """One tensor for `spec` of `dims` (default: drawn by `sample_dims`) after a batch dim of
    `batch` (none when None). Values lie in the spec's value_range when it has one; else
    integers 0..99, standard-normal floats, random bools and short byte strings."""
    import numpy as np

    shape = ([batch] if batch is not None else []) + list(dims or sample_dims(spec, rng))
    data_type = spec.data_type
    if data_type in TEXT_TYPES:
        flat = [f"s{int(v)}".encode() for v in rng.integers(0, 10_000, size=int(np.prod(shape)))]
        return np.array(flat, dtype=object).reshape(shape)
    if data_type == "BOOL":
        return rng.integers(0, 2, size=shape).astype(bool)
    dtype = numpy_dtype(data_type)
    if spec.value_range is not None:
        low, high = spec.value_range
        if np.issubdtype(dtype, np.integer):
            return rng.integers(int(low), int(high) + 1, size=shape).astype(dtype)
        return rng.uniform(low, high, size=shape).astype(dtype)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, DEFAULT_INT_HIGH + 1, size=shape).astype(dtype)
    return rng.standard_normal(size=shape).astype(dtype)


def make_input_sets(specs: Sequence[TensorSpec], *, batch: int | None, count: int = 16,
                    seed: int = 0) -> list[dict[str, np.ndarray]]:
    """`count` different random input sets (name -> array), optional inputs left out.

    Inputs with the same variable shape (same dims and max dims) get the same drawn shape
    within one set: token ids and their attention mask, say, must agree in length. The same
    `seed` gives the same sets.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    sets = []
    for _ in range(count):
        shared: dict[tuple[tuple[int, ...], tuple[int, ...]], list[int]] = {}
        one = {}
        for spec in specs:
            if spec.optional:
                continue
            key = (tuple(spec.dims), tuple(spec.max_shape()))
            dims = shared.setdefault(key, sample_dims(spec, rng))
            one[spec.name] = random_tensor(spec, batch, rng, dims)
        sets.append(one)
    return sets


# -- gRPC request inputs ---------------------------------------------------------------------

def infer_inputs(arrays: Mapping[str, np.ndarray],
                 data_types: Mapping[str, str]) -> list[InferInput]:
    """tritonclient gRPC `InferInput`s holding `arrays`, typed by `data_types` (input name ->
    Triton data type in any spelling, e.g. `input_types(envelope)`)."""
    from tritonclient.grpc import InferInput

    inputs = []
    for name, array in arrays.items():
        tensor = InferInput(name, list(array.shape), wire_type(data_types[name]))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


# -- output comparison -----------------------------------------------------------------------

def _text_difference(name: str, got: np.ndarray, want: np.ndarray) -> str | None:
    import numpy as np

    got_b = np.array([_as_bytes(v) for v in got.flat], dtype=object).reshape(got.shape)
    want_b = np.array([_as_bytes(v) for v in want.flat], dtype=object).reshape(want.shape)
    bad = got_b != want_b
    if not bad.any():
        return None
    where = tuple(int(i) for i in np.argwhere(bad)[0])
    return (f"{name}: {int(bad.sum())} of {bad.size} values differ; first at index "
            f"{list(where)}: got {got_b[where].decode('utf-8', 'replace')!r}, expected "
            f"{want_b[where].decode('utf-8', 'replace')!r}")


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
    if data_type in TEXT_TYPES or got.dtype.kind in "OSU" or want.dtype.kind in "OSU":
        return _text_difference(name, got, want)
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


def compare_outputs(expected: Mapping[str, Any], actual: Mapping[str, Any],
                    tolerance: Tolerance, data_types: Mapping[str, str] | None = None
                    ) -> list[str]:
    """What differs between `actual` outputs and `expected` ones: one `describe_difference`
    per expected output that does not match, in order; empty when all match.

    `data_types` (output name -> Triton type, e.g. `output_types(envelope)`) says which
    outputs compare exactly; an output it does not name takes its expected array's type.
    """
    types = data_types or {}
    found = []
    for name, want in expected.items():
        difference = describe_difference(name, actual.get(name), want,
                                          data_type=types.get(name) or data_type_of(want),
                                          tolerance=tolerance)
        if difference:
            found.append(difference)
    return found
