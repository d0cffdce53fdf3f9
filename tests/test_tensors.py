"""Tensors: data types, random request data within a spec's bounds, gRPC inputs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from triton_ops.envelope.model import TensorSpec
from triton_ops.tensors import (
    TensorValueError,
    infer_inputs,
    make_input_sets,
    numpy_dtype,
    wire_type,
)


def test_shapes_types_and_variable_dims() -> None:
    specs = [
        TensorSpec(name="F", data_type="FP32", dims=[32]),
        TensorSpec(name="IDS", data_type="INT64", dims=[-1], max_dims=[128]),
        TensorSpec(name="T", data_type="STRING", dims=[1]),
        TensorSpec(name="OPT", data_type="FP16", dims=[2], optional=True),
    ]
    sets = make_input_sets(specs, batch=1, count=20, seed=3)
    assert len(sets) == 20
    lengths = set()
    for s in sets:
        assert set(s) == {"F", "IDS", "T"}  # optional inputs are left out
        assert s["F"].shape == (1, 32) and s["F"].dtype == np.float32
        assert s["IDS"].dtype == np.int64 and 1 <= s["IDS"].shape[1] <= 128
        lengths.add(s["IDS"].shape[1])
        assert s["T"].dtype == object and isinstance(s["T"][0, 0], bytes)
    assert len(lengths) > 1  # variable dims are sampled, not fixed
    unbatched = make_input_sets(specs[:1], batch=None, count=1)[0]
    assert unbatched["F"].shape == (32,)
    assert wire_type(specs[2].data_type) == "BYTES"
    again = make_input_sets(specs, batch=1, count=20, seed=3)
    assert all(np.array_equal(a["F"], b["F"]) for a, b in zip(sets, again, strict=True))


def test_inputs_of_one_variable_shape_agree_in_length() -> None:
    # token ids and their attention mask: a model refuses a request whose lengths differ
    specs = [TensorSpec(name="INPUT_IDS", data_type="INT64", dims=[-1], max_dims=[128]),
             TensorSpec(name="ATTENTION_MASK", data_type="INT64", dims=[-1], max_dims=[128]),
             TensorSpec(name="OTHER", data_type="FP32", dims=[-1], max_dims=[64])]
    sets = make_input_sets(specs, batch=1, count=30, seed=5)
    assert all(s["INPUT_IDS"].shape == s["ATTENTION_MASK"].shape for s in sets)
    assert len({s["INPUT_IDS"].shape for s in sets}) > 1
    # a differently bounded input is sampled on its own
    assert any(s["OTHER"].shape[1] != s["INPUT_IDS"].shape[1] for s in sets)


def test_value_range_bounds_generated_values() -> None:
    specs = [TensorSpec(name="MASK", data_type="INT64", dims=[-1], max_dims=[16],
                        value_range=(1, 1)),
             TensorSpec(name="IDS", data_type="INT32", dims=[8], value_range=(5, 7)),
             TensorSpec(name="X", data_type="FP32", dims=[64], value_range=(-0.5, 0.5))]
    for s in make_input_sets(specs, batch=1, count=10, seed=1):
        assert (s["MASK"] == 1).all()
        assert set(np.unique(s["IDS"])) <= {5, 6, 7}
        assert s["X"].dtype == np.float32 and -0.5 <= s["X"].min() <= s["X"].max() <= 0.5


def test_value_range_low_above_high_is_refused() -> None:
    import pydantic

    with pytest.raises(pydantic.ValidationError, match="low 2 is above high 1"):
        TensorSpec(name="M", data_type="INT64", dims=[4], value_range=(2, 1))


def test_data_types_in_every_spelling() -> None:
    for spelling in ("STRING", "TYPE_STRING", "BYTES", "string"):
        assert wire_type(spelling) == "BYTES"
        assert numpy_dtype(spelling) == np.dtype(object)
    assert wire_type("TYPE_FP32") == wire_type("FP32") == "FP32"
    assert numpy_dtype("TYPE_UINT8") == np.uint8
    assert numpy_dtype("BF16") == np.float32  # tritonclient sends BF16 from float32 arrays
    with pytest.raises(TensorValueError, match="has data type FP8, which has no numpy type"):
        numpy_dtype("FP8")


def test_infer_inputs_carry_the_wire_type_shape_and_data() -> None:
    from tritonclient.utils import deserialize_bytes_tensor

    arrays = {"X": np.arange(6, dtype=np.float32).reshape(2, 3),
              "S": np.array([[b"a"], [b"bc"]], dtype=object)}
    x, s = infer_inputs(arrays, {"X": "FP32", "S": "STRING"})
    assert (x.name(), x.datatype(), x.shape()) == ("X", "FP32", [2, 3])
    assert (s.name(), s.datatype(), s.shape()) == ("S", "BYTES", [2, 1])
    assert np.frombuffer(x._get_content(), np.float32).tolist() == [0, 1, 2, 3, 4, 5]
    assert deserialize_bytes_tensor(s._get_content()).tolist() == [b"a", b"bc"]


def test_importing_tensors_loads_neither_numpy_nor_tritonclient() -> None:
    code = ("import sys, triton_ops.tensors; "
            "print(sorted(m for m in ('numpy', 'tritonclient', 'pydantic') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out.strip() == "[]"
