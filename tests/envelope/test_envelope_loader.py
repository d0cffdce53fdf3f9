"""Bad envelope files give located findings, never exceptions."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest
from hostile import alias_bomb_envelope, alias_bomb_in_probe

from triton_ops.envelope.loader import (
    MAX_ALIAS_NODES,
    MAX_FILE_BYTES,
    EnvelopeError,
    did_you_mean,
    load_envelope,
    parse_yaml,
    require_envelope,
)

GOOD = "name: m\nbackend: python\nbatching:\n  max_batch_size: 4\n"


def load(tmp_path: Path, content: str | bytes, name: str = "m.yaml") -> tuple[str, int, str]:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    loaded = load_envelope(path)
    assert loaded.envelope is None
    first = loaded.findings[0]
    assert first.file == str(path)
    return first.rule, first.line, first.message


def test_good_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(GOOD)
    loaded = load_envelope(path)
    assert loaded.findings == [] and loaded.envelope is not None
    assert loaded.source.locate(("batching", "max_batch_size")) == (4, 3)


@pytest.mark.parametrize(("content", "rule", "line", "text"), [
    ("name: m\nbackend: [python\n", "yaml-syntax", 3, ""),
    ("name: m\nbackend: python\nname: n\n", "yaml-duplicate-key", 3, "first defined on line 1"),
    ("name: m\nbackend: python\nbatching:\n  max_batch_size: lots\n", "envelope-schema", 4,
     "batching.max_batch_size"),
    ("name: m\nbackend: python\nbatching:\n  dynamic:\n    preferd: [1]\n",
     "envelope-unknown-key", 5, "did you mean 'preferred_batch_sizes'?"),
    ("name: m\nbackend: python\nbatchign: {}\n", "envelope-unknown-key", 3,
     "did you mean 'batching'?"),
    ("name: m\nbackend: python\nresources:\n  gpu_memory: {weights: lots}\n",
     "envelope-schema", 4, "not a size"),
    ("name: ../etc\nbackend: python\n", "envelope-schema", 1, "not a valid model name"),
    ("name: a/b\nbackend: python\n", "envelope-schema", 1, "no '/'"),
    ("name: m\nbackend: python\nbatching:\n  dynamic: {}\n  sequence: {}\n", "envelope-schema", 3,
     "a model has one scheduler"),
    ("- just\n- a list\n", "envelope-schema", 1, "must be a YAML mapping"),
    ("# only a comment\n", "yaml-syntax", 1, "document is empty"),
    ("", "envelope-empty", 0, "empty"),
])
def test_bad_content(tmp_path: Path, content: str, rule: str, line: int, text: str) -> None:
    got_rule, got_line, message = load(tmp_path, content)
    assert (got_rule, got_line) == (rule, line), message
    assert text in message


def test_binary_non_utf8_and_huge(tmp_path: Path) -> None:
    assert load(tmp_path, b"\x00\x01\x02")[0] == "envelope-binary"
    rule, _, message = load(tmp_path, b"name: caf\xe9\n")
    assert rule == "envelope-encoding" and "UTF-8" in message
    rule, _, message = load(tmp_path, "a: b\n" * (MAX_FILE_BYTES // 5 + 1))
    assert rule == "envelope-too-large" and str(MAX_FILE_BYTES) in message


def test_symlink_loop_and_missing(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    os.symlink(b, a)
    os.symlink(a, b)
    loaded = load_envelope(a)
    assert loaded.findings[0].rule == "envelope-unreadable"
    assert "loop" in loaded.findings[0].message
    loaded = load_envelope(tmp_path / "nope.yaml")
    assert loaded.findings[0].rule == "envelope-unreadable"


def test_deeply_nested_document(tmp_path: Path) -> None:
    rule, _, _ = load(tmp_path, "passthrough: " + "[" * 5000 + "]" * 5000 + "\n")
    assert rule in ("yaml-syntax", "envelope-schema")


# A hang guard, not a timing assertion: unrefused, the bomb takes minutes and gigabytes.
@pytest.mark.timeout(60)
@pytest.mark.parametrize("text", [alias_bomb_envelope(), alias_bomb_in_probe()],
                         ids=["unknown-keys", "probe"])
def test_alias_bomb_is_refused_at_the_alias_without_expanding(tmp_path: Path,
                                                               text: str) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    tracemalloc.start()
    try:
        loaded = load_envelope(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert loaded.envelope is None
    [finding] = loaded.findings
    assert (finding.file, finding.rule) == (str(path), "yaml-alias-expansion")
    # laugh_0..laugh_3 repeat 8,289 nodes; the first *laugh_3 (7,381 more) passes the limit.
    line = text.splitlines()[finding.line - 1]
    assert "&laugh_4 [*laugh_3" in line and line[finding.column - 1:].startswith("*laugh_3")
    assert f"{MAX_ALIAS_NODES:,}" in finding.message and "*laugh_3" in finding.message
    assert peak < 20 * 2**20  # nothing was expanded


def test_alias_bomb_is_refused_on_every_envelope_path(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb_in_probe())
    with pytest.raises(EnvelopeError) as err:  # tune, rollout, probe
        require_envelope(path)
    assert err.value.findings[0].rule == "yaml-alias-expansion"
    _, _, findings = parse_yaml(alias_bomb_envelope(), "sealed envelope")  # rollout's seals
    assert [f.rule for f in findings] == ["yaml-alias-expansion"]


def test_aliases_within_the_limit_load_and_locate(tmp_path: Path) -> None:
    text = ("name: m\nbackend: python\n"
            "inputs:\n  - {name: A, data_type: FP32, dims: &dims [4]}\n"
            "  - {name: B, data_type: FP32, dims: *dims}\n"
            "outputs: [{name: Y, data_type: FP32, dims: *dims}]\n"
            "instances:\n  - &group {kind: CPU, count: 1}\n  - <<: *group\n    count: 2\n"
            "batching: {max_batch_size: lots}\n")
    path = tmp_path / "m.yaml"
    path.write_text(text)
    loaded = load_envelope(path)
    assert [(f.rule, f.line) for f in loaded.findings] == [("envelope-schema", 11)]
    path.write_text(text.replace("lots", "4"))
    envelope = load_envelope(path).envelope
    assert envelope is not None
    assert [t.dims for t in (*envelope.inputs, *envelope.outputs)] == [[4], [4], [4]]
    assert [g.count for g in envelope.instances] == [1, 2]


def test_did_you_mean() -> None:
    known = ["preferred_batch_sizes", "max_queue_delay", "preserve_ordering"]
    assert did_you_mean("preferd", known) == ["preferred_batch_sizes"]
    assert did_you_mean("max_queue_dealy", known) == ["max_queue_delay"]
    assert did_you_mean("delay", known) == ["max_queue_delay"]
    assert did_you_mean("zzz", known) == []


@pytest.mark.timeout(120)
@pytest.mark.parametrize("args", [["tune", "bomb", "--budget", "60s"], ["probe", "bomb"],
                                  ["rollout", "bomb", "--canary", "1"]],
                         ids=["tune", "probe", "rollout"])
def test_commands_that_read_an_envelope_refuse_an_alias_bomb(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    from typer.testing import CliRunner

    from triton_ops.cli.main import app

    (tmp_path / "envelopes").mkdir()
    (tmp_path / "envelopes" / "bomb.yaml").write_text(alias_bomb_in_probe())
    model = tmp_path / "model_repository" / "bomb"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.py").write_text("# model\n")
    (model / "config.pbtxt").write_text('name: "bomb"\nbackend: "python"\n')
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        result.exception
    assert result.exit_code in (1, 2)
    assert "bomb.yaml:13:19:" in result.output and "aliases repeat" in result.output
