"""Reading ModelConfig fields as plain values, and naming the fields two configs differ in."""

from __future__ import annotations

from google.protobuf import text_format

from triton_ops.modelconfig.fields import differing_fields, field_value
from triton_ops.modelconfig.proto import ModelConfig


def config(text: str) -> ModelConfig:
    return text_format.Parse(text, ModelConfig())


def test_field_value_gives_plain_values() -> None:
    c = config('name: "m" max_batch_size: 8 input { name: "X" dims: [4] } '
               'parameters { key: "k" value { string_value: "v" } }')
    assert field_value(c, "name") == "m" and field_value(c, "max_batch_size") == 8
    assert field_value(c, "dynamic_batching") is None  # unset message, not an empty one
    assert [i.name for i in field_value(c, "input")] == ["X"]
    assert list(field_value(c, "parameters")) == ["k"]
    assert field_value(config("dynamic_batching {}"), "dynamic_batching") is not None


def test_differing_fields_names_each_top_level_field_once() -> None:
    a = config('name: "m" max_batch_size: 8 input { name: "X" dims: [4] }')
    assert differing_fields(a, config(str(a))) == []
    b = config('name: "m" max_batch_size: 16 input { name: "X" dims: [5] } '
               'dynamic_batching {}')
    assert differing_fields(a, b) == ["dynamic_batching", "input", "max_batch_size"]
    assert differing_fields(b, a) == ["dynamic_batching", "input", "max_batch_size"]
