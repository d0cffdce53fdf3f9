"""Request inputs from the envelope's tensor specs: random data of the right shape and type."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from triton_ops.envelope.model import TensorSpec

if TYPE_CHECKING:
    import numpy as np

_NUMPY_TYPES = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32",
    "UINT64": "uint64", "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64", "STRING": "object",
    "BF16": "float32",  # numpy has no bfloat16; tritonclient sends BF16 from float32
}


def numpy_dtype(data_type: str) -> Any:
    import numpy as np

    return np.dtype(_NUMPY_TYPES[data_type.upper().removeprefix("TYPE_")])


def sample_dims(spec: TensorSpec, rng: np.random.Generator) -> list[int]:
    """The tensor's dims with each variable dim (-1) sampled in 1..its max (16 if unbounded)."""
    dims = []
    for d, m in zip(spec.dims, spec.max_shape(), strict=True):
        dims.append(int(rng.integers(1, (m if m > 0 else 16) + 1)) if d == -1 else d)
    return dims


def random_tensor(spec: TensorSpec, batch: int | None, rng: np.random.Generator,
                  dims: Sequence[int] | None = None) -> np.ndarray:
    """One tensor for `spec` of `dims` (default: sampled), values in the spec's value_range
    or else a range that is safe for most models."""
    import numpy as np

    shape = ([batch] if batch is not None else []) + list(dims or sample_dims(spec, rng))
    dtype = spec.data_type
    if spec.value_range is not None and dtype not in ("STRING", "BOOL"):
        low, high = spec.value_range
        np_type = numpy_dtype(dtype)
        if np.issubdtype(np_type, np.integer):
            return rng.integers(int(low), int(high) + 1, size=shape).astype(np_type)
        return rng.uniform(low, high, size=shape).astype(np_type)
    if dtype == "STRING":
        flat = [f"s{int(v)}".encode() for v in rng.integers(0, 10_000, size=int(np.prod(shape)))]
        return np.array(flat, dtype=object).reshape(shape)
    if dtype == "BOOL":
        return rng.integers(0, 2, size=shape).astype(bool)
    np_type = numpy_dtype(dtype)
    if np.issubdtype(np_type, np.integer):
        # Small non-negative values: valid for embedding indices and token ids alike.
        return rng.integers(0, 100, size=shape).astype(np_type)
    return rng.standard_normal(size=shape).astype(np_type)


def make_input_sets(specs: Sequence[TensorSpec], *, batch: int | None, count: int = 16,
                    seed: int = 0) -> list[dict[str, np.ndarray]]:
    """`count` different input sets (name -> array), optional inputs left out.

    Inputs with the same variable shape (same dims and max dims) get the same sampled shape
    within one set: token ids and their attention mask, say, must agree in length.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    sets = []
    for _ in range(count):
        shared: dict[tuple, list[int]] = {}
        one = {}
        for spec in specs:
            if spec.optional:
                continue
            key = (tuple(spec.dims), tuple(spec.max_shape()))
            dims = shared.setdefault(key, sample_dims(spec, rng))
            one[spec.name] = random_tensor(spec, batch, rng, dims)
        sets.append(one)
    return sets


def triton_type(spec: TensorSpec) -> str:
    return "BYTES" if spec.data_type == "STRING" else spec.data_type
