"""Integers the envelope renders into config.pbtxt are bounded as the ModelConfig proto is.

A value the proto field cannot hold (max_batch_size 2^31 in an int32, a dim of 2^63 in an
int64, a delay beyond uint64) is a schema finding with its line, not a crash of `generate`
or an "internal error" from `validate`. The bounds are checked against the field types in
the ModelConfig descriptor, so a proto change that widens or narrows a field is noticed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from triton_ops.cli.main import app
from triton_ops.envelope.loader import load_envelope
from triton_ops.modelconfig.proto import ModelConfig
from triton_ops.modelconfig.render import render_model_config

INT32_MAX, UINT32_MAX = 2**31 - 1, 2**32 - 1
INT64_MAX, UINT64_MAX = 2**63 - 1, 2**64 - 1

BASE: dict[str, Any] = {
    "name": "m", "backend": "python",
    "inputs": [{"name": "IN", "data_type": "FP32", "dims": [4]}],
    "outputs": [{"name": "OUT", "data_type": "FP32", "dims": [4]}],
    "batching": {"max_batch_size": 8, "dynamic": {
        "default_queue_policy": {"default_timeout": 1000},
        "priority_levels": 2, "default_priority_level": 1,
        "priority_queue_policy": {1: {"max_queue_size": 4}}}},
    "instances": [{"kind": "CPU", "count": 1}],
    "versions": [1],
}


def with_value(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


def proto_field(*path: str) -> Any:
    """The descriptor of a ModelConfig field, e.g. proto_field("instance_group", "count")."""
    descriptor = ModelConfig.DESCRIPTOR
    field = None
    for name in path:
        field = descriptor.fields_by_name[name]
        descriptor = field.message_type
    return field


def proto_max(field: Any) -> int:
    from google.protobuf.descriptor import FieldDescriptor as F

    return {F.TYPE_INT32: INT32_MAX, F.TYPE_UINT32: UINT32_MAX, F.TYPE_INT64: INT64_MAX,
            F.TYPE_UINT64: UINT64_MAX}[field.type]


DB = "dynamic_batching"
QP = ("dynamic_batching", "default_queue_policy")
# (envelope path, the ModelConfig field it renders into): the largest value the field holds
# must pass, one more must be refused.
BOUNDED: list[tuple[tuple[Any, ...], Any]] = [
    (("batching", "max_batch_size"), proto_field("max_batch_size")),
    (("batching", "dynamic", "max_queue_delay"),
     proto_field(DB, "max_queue_delay_microseconds")),
    (("batching", "dynamic", "preferred_batch_sizes"), proto_field(DB, "preferred_batch_size")),
    (("batching", "dynamic", "priority_levels"), proto_field(DB, "priority_levels")),
    (("batching", "dynamic", "default_priority_level"),
     proto_field(DB, "default_priority_level")),
    (("batching", "dynamic", "default_queue_policy", "default_timeout"),
     proto_field(*QP, "default_timeout_microseconds")),
    (("batching", "dynamic", "priority_queue_policy", 1, "max_queue_size"),
     proto_field(*QP, "max_queue_size")),
    (("instances", 0, "count"), proto_field("instance_group", "count")),
    (("instances", 0, "gpus"), proto_field("instance_group", "gpus")),
    (("inputs", 0, "dims", 0), proto_field("input", "dims")),
    (("inputs", 0, "reshape"), proto_field("input", "reshape", "shape")),
    (("outputs", 0, "dims", 0), proto_field("output", "dims")),
    (("versions", 0), proto_field("version_policy", "specific", "versions")),
]
REPEATED = {"preferred_batch_sizes", "gpus", "reshape"}


def value_at(path: tuple[Any, ...], value: int) -> dict[str, Any]:
    """BASE with `value` at `path` (a one-element list for repeated fields), still valid
    in every other respect."""
    data = with_value(path, [value] if path[-1] in REPEATED else value)
    if path[:2] == ("inputs", 0):
        data["inputs"][0]["max_dims"] = [value] if path[-1] == "dims" else None
        if path[-1] == "reshape":
            data["inputs"][0]["dims"] = [min(value, INT64_MAX)]
    if path[-1] == "gpus":
        data["instances"][0]["kind"] = "GPU"
    if path[-1] == "preferred_batch_sizes":
        data["batching"]["max_batch_size"] = min(value, INT32_MAX)
    if path[-1] == "default_priority_level":
        data["batching"]["dynamic"]["priority_levels"] = min(value, UINT64_MAX)
    return data


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    envelopes = tmp_path / "envelopes"
    envelopes.mkdir(exist_ok=True)
    path = envelopes / "m.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _id(value: Any) -> str:
    return ".".join(map(str, value)) if isinstance(value, tuple) else value.full_name


@pytest.mark.parametrize(("path", "field"), BOUNDED, ids=_id)
def test_value_beyond_the_proto_field_is_a_schema_finding(tmp_path: Path, path: tuple[Any, ...],
                                                          field: Any) -> None:
    envelope = write(tmp_path, value_at(path, proto_max(field) + 1))
    loaded = load_envelope(envelope)
    assert loaded.envelope is None
    assert [f.rule for f in loaded.findings] == ["envelope-schema"], loaded.findings
    assert loaded.findings[0].line > 1  # points at the value, not the top of the file
    result = CliRunner().invoke(app, ["validate", str(envelope.parent)])
    assert result.exit_code == 1 and "internal error" not in result.output
    result = CliRunner().invoke(app, ["generate", "--envelopes", str(envelope.parent),
                                      "--repo", str(tmp_path / "repo")])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(("path", "field"), BOUNDED, ids=_id)
def test_largest_value_renders(tmp_path: Path, path: tuple[Any, ...], field: Any) -> None:
    loaded = load_envelope(write(tmp_path, value_at(path, proto_max(field))))
    assert loaded.envelope is not None, loaded.findings
    render_model_config(loaded.envelope)  # every field holds its value


def test_huge_duration_with_a_unit_is_a_schema_finding(tmp_path: Path) -> None:
    data = with_value(("batching", "dynamic", "max_queue_delay"), "9999999999999999h")
    loaded = load_envelope(write(tmp_path, data))
    assert [f.rule for f in loaded.findings] == ["envelope-schema"]


@pytest.mark.parametrize(("path", "value"), [
    (("batching", "dynamic", "max_queue_delay"), "1" * 400 + "s"),
    (("batching", "dynamic", "default_queue_policy", "default_timeout"), "1" * 400 + "ms"),
    (("resources", "host_memory"), "1" * 400 + "GiB"),
    (("resources", "host_memory"), 2**64),
])
def test_long_digit_strings_are_findings_not_overflow_errors(tmp_path: Path, path: tuple[Any, ...],
                                                             value: Any) -> None:
    data = with_value(path[:-1], {}) if path[0] == "resources" else BASE
    data = yaml.safe_load(yaml.safe_dump(data))
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    loaded = load_envelope(write(tmp_path, data))
    assert [f.rule for f in loaded.findings] == ["envelope-schema"]
    assert "too large" in loaded.findings[0].message
