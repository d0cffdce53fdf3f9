"""Request inputs from tensor specs."""

from __future__ import annotations

import numpy as np

from triton_ops.envelope.model import TensorSpec
from triton_ops.loadgen.inputs import make_input_sets, triton_type


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
    assert triton_type(specs[2]) == "BYTES"
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
    import pytest

    with pytest.raises(pydantic.ValidationError, match="low 2 is above high 1"):
        TensorSpec(name="M", data_type="INT64", dims=[4], value_range=(2, 1))
