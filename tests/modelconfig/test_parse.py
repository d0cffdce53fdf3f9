"""Parsing config.pbtxt: locations of fields, and parse errors as located findings."""

from __future__ import annotations

from pathlib import Path

import pytest

from triton_ops.findings import Severity
from triton_ops.modelconfig.parse import ConfigSourceMap, parse_config_text
from triton_ops.modelconfig.rules import check_config_file

TEXT = """\
name: "m"   # a comment
max_batch_size: 8
input [
  {
    name: "a"
    dims: [ 1, -1 ]
  },
  { name: "b" }
]
dynamic_batching {
  priority_queue_policy { key: 2 value { max_queue_size: 3 } }
  priority_queue_policy: {
    key: 1
    value { max_queue_size: 4 }
  }
}
"""


def test_locations_of_fields_elements_and_map_entries() -> None:
    config, source, findings = parse_config_text(TEXT, "c.pbtxt")
    assert findings == [] and config is not None
    assert config.input[1].name == "b"
    assert source.locate(("name",)) == (1, 1)
    assert source.locate(("max_batch_size",)) == (2, 1)
    assert source.locate(("input", 0)) == (4, 3)
    assert source.locate(("input", 0, "dims", 1)) == (6, 16)
    assert source.locate(("input", 1, "name")) == (8, 5)
    assert source.locate(("dynamic_batching", "priority_queue_policy", 2)) == (11, 25)
    assert source.locate(("dynamic_batching", "priority_queue_policy", 1)) == (12, 26)
    assert source.locate(("dynamic_batching", "priority_queue_policy", 1, "value",
                          "max_queue_size")) == (14, 13)


def test_unknown_paths_fall_back_to_nearest_parent() -> None:
    _, source, _ = parse_config_text(TEXT, "c.pbtxt")
    assert source.locate(("input", 1, "data_type")) == (8, 3)
    assert source.locate(("output", 0)) == (1, 1)
    finding = source.finding(("input", 0, "dims"), "r", "msg", Severity.WARNING)
    assert (finding.file, finding.line, finding.column) == ("c.pbtxt", 6, 5)
    assert ConfigSourceMap("x").locate(("a",)) == (1, 1)


@pytest.mark.parametrize(("text", "line", "column", "needle"), [
    ('name: "m"\nmax_batch_sise: 4\n', 2, 1, "did you mean 'max_batch_size'"),
    ('name: "m"\ninput [ { dimz: [ 1 ] } ]\n', 2, 11, "did you mean 'dims'"),
    ('name: "m"\ninput [ { data_type: TYPE_FP23 } ]\n', 2, 22, "'TYPE_FP23' is not a value"),
    ('name: "m"\nname: "n"\n', 2, 7, 'multiple "name" fields'),
    ('name: "m"\ninput [ { dims: [ 1 2 ] } ]\n', 2, 21, 'Expected ","'),
    ('name: "m"\ninput {\n', 2, 7, 'Expected "}"'),
    ('name: "m"\nmax_batch_size: 99999999999\n', 2, 17, "out of range"),
    ('name: "m"\nmax_batch_size: "8"\n', 2, 17, "integer"),
    ('\ufeffname: "m"\n', 1, 1, "byte-order mark"),
    ('platform: "ensemble"\nsequence_batching { }\nensemble_scheduling { }\n', 3, 1,
     "another member of oneof"),
])
def test_parse_errors_are_located_findings(text: str, line: int, column: int,
                                           needle: str) -> None:
    config, _, findings = parse_config_text(text, "c.pbtxt")
    assert config is None
    [finding] = findings
    assert finding.rule == "config-parse" and finding.severity is Severity.ERROR
    assert (finding.line, finding.column) == (line, column), finding
    assert needle in finding.message, finding.message


@pytest.mark.parametrize(("content", "rule"), [
    (b"name: \x00\x01", "config-file-binary"),
    (b"name: \"\xff\xfe\"", "config-file-encoding"),
])
def test_unreadable_files_are_findings(tmp_path: Path, content: bytes, rule: str) -> None:
    path = tmp_path / "config.pbtxt"
    path.write_bytes(content)
    result = check_config_file(path)
    assert [f.rule for f in result.findings] == [rule]


def test_empty_file_is_an_empty_config(tmp_path: Path) -> None:
    # Triton completes an empty config.pbtxt from the model folder: not an unreadable file.
    path = tmp_path / "config.pbtxt"
    path.write_bytes(b"")
    result = check_config_file(path)
    assert result.findings and all(f.severity is Severity.WARNING for f in result.findings)
    assert "config-file-empty" not in {f.rule for f in result.findings}


def test_missing_file_is_a_finding(tmp_path: Path) -> None:
    result = check_config_file(tmp_path / "nope.pbtxt")
    assert [f.rule for f in result.findings] == ["config-file-unreadable"]


def test_crlf_line_endings_keep_locations() -> None:
    config, source, findings = parse_config_text(TEXT.replace("\n", "\r\n"), "c.pbtxt")
    assert findings == [] and config is not None
    assert source.locate(("input", 0, "dims", 1)) == (6, 16)
