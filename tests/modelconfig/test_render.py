"""Rendering config.pbtxt from envelopes, and `triton-ops generate`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import text_format
from typer.testing import CliRunner

from triton_ops.cli.main import app
from triton_ops.envelope.model import Envelope
from triton_ops.modelconfig.proto import ModelConfig
from triton_ops.modelconfig.render import (
    RenderError,
    render_config_text,
    render_model_config,
)

ENVELOPE: dict[str, Any] = {
    "name": "clf",
    "backend": "python",
    "versions": [3, 1],
    "inputs": [{"name": "TEXT", "data_type": "TYPE_INT64", "dims": [-1], "max_dims": [128]},
               {"name": "MASK", "data_type": "INT64", "dims": [-1], "max_dims": [128],
                "optional": True, "reshape": []}],
    "outputs": [{"name": "PROBS", "data_type": "FP32", "dims": [3],
                 "label_filename": "labels.txt"}],
    "batching": {"max_batch_size": 32, "dynamic": {
        "preferred_batch_sizes": [8, 16], "max_queue_delay": "1.5ms",
        "priority_levels": 2, "default_priority_level": 1,
        "default_queue_policy": {"timeout_action": "delay", "default_timeout": "2s",
                                 "max_queue_size": 100},
        "priority_queue_policy": {2: {"max_queue_size": 5}, 1: {"default_timeout": "10ms"}}}},
    "instances": [{"kind": "gpu", "count": 2, "gpus": [0, 1], "name": "g"},
                  {"kind": "KIND_CPU", "count": 1}],
    "parameters": {"b": "2", "a": "1"},
    "passthrough": {"responseCache": {"enable": True},
                    "model_warmup": [{"name": "w", "batchSize": 1}]},
}


def render(changes: dict[str, Any] | None = None) -> Any:
    return render_model_config(Envelope.model_validate({**ENVELOPE, **(changes or {})}))


def test_fields_and_units() -> None:
    config = render()
    assert config.name == "clf" and config.backend == "python"
    assert list(config.version_policy.specific.versions) == [1, 3]
    assert config.max_batch_size == 32
    assert config.input[0].data_type == ModelConfig.DESCRIPTOR.fields_by_name[
        "input"].message_type.fields_by_name["data_type"].enum_type.values_by_name[
        "TYPE_INT64"].number
    assert list(config.input[0].dims) == [-1]
    assert config.input[1].optional and config.input[1].HasField("reshape")
    assert list(config.input[1].reshape.shape) == []
    assert config.output[0].label_filename == "labels.txt"
    dyn = config.dynamic_batching
    assert dyn.max_queue_delay_microseconds == 1500
    assert list(dyn.preferred_batch_size) == [8, 16]
    assert dyn.default_queue_policy.default_timeout_microseconds == 2_000_000
    assert dyn.default_queue_policy.max_queue_size == 100
    assert dyn.priority_queue_policy[1].default_timeout_microseconds == 10_000
    assert [g.count for g in config.instance_group] == [2, 1]
    assert list(config.instance_group[0].gpus) == [0, 1]
    assert config.parameters["a"].string_value == "1"
    assert config.response_cache.enable
    assert config.model_warmup[0].batch_size == 1


def test_text_is_deterministic_valid_and_headed() -> None:
    text = render_config_text(Envelope.model_validate(ENVELOPE), "envelopes/clf.yaml")
    assert text == render_config_text(Envelope.model_validate(ENVELOPE), "envelopes/clf.yaml")
    first = text.splitlines()[0]
    assert first.startswith("#") and "envelopes/clf.yaml" in first and "Generated" in first
    parsed = text_format.Parse(text, ModelConfig())
    assert parsed == render()
    # map entries come out sorted, whatever order the envelope lists them in
    assert text.index('key: "a"') < text.index('key: "b"')
    shuffled = {**ENVELOPE, "parameters": {"a": "1", "b": "2"}}
    assert render_config_text(Envelope.model_validate(shuffled), "envelopes/clf.yaml") == text


def test_version_policy_is_always_specific() -> None:
    config = render({"versions": [1]})
    assert config.version_policy.WhichOneof("policy_choice") == "specific"


def test_no_dynamic_batching_section_when_absent() -> None:
    config = render({"batching": {"max_batch_size": 0}})
    assert not config.HasField("dynamic_batching")
    config = render({"batching": {"max_batch_size": 4, "dynamic": {}}})
    assert config.HasField("dynamic_batching")


@pytest.mark.parametrize(("passthrough", "path", "text"), [
    ({"maxBatchSize": 4}, ("passthrough", "maxBatchSize"), "models"),
    ({"instance_group": []}, ("passthrough", "instance_group"), "models"),
    ({"sequenceBatching": {}}, ("passthrough", "sequenceBatching"), "set it in the envelope"),
    ({"modelWarmup": "nope"}, ("passthrough",), "not a valid ModelConfig part"),
    ({"bogusField": 1}, ("passthrough",), "bogusField"),
])
def test_passthrough_errors(passthrough: dict[str, Any], path: tuple[str, ...],
                            text: str) -> None:
    with pytest.raises(RenderError) as info:
        render({"passthrough": passthrough})
    assert info.value.path == path
    assert text in str(info.value)


# --- triton-ops generate ----------------------------------------------------------------------

def setup_envelopes(tmp_path: Path) -> tuple[Path, Path]:
    envelopes, repo = tmp_path / "envelopes", tmp_path / "model_repository"
    envelopes.mkdir()
    (envelopes / "clf.yaml").write_text(yaml.safe_dump(ENVELOPE))
    other = {"name": "tiny", "backend": "python", "batching": {"max_batch_size": 4}}
    (envelopes / "tiny.yaml").write_text(yaml.safe_dump(other))
    return envelopes, repo


def generate(*args: str) -> Any:
    return CliRunner().invoke(app, ["generate", *args])


def test_generate_writes_then_leaves_unchanged_files_alone(tmp_path: Path) -> None:
    envelopes, repo = setup_envelopes(tmp_path)
    result = generate("--envelopes", str(envelopes), "--repo", str(repo))
    assert result.exit_code == 0, result.output
    config = repo / "clf" / "config.pbtxt"
    assert text_format.Parse(config.read_text(), ModelConfig()) == render()
    assert (repo / "tiny" / "config.pbtxt").exists()
    os.utime(config, (1_000_000, 1_000_000))
    result = generate("--envelopes", str(envelopes), "--repo", str(repo))
    assert result.exit_code == 0 and "2 config(s) already up to date" in result.output
    assert config.stat().st_mtime == 1_000_000  # not rewritten
    assert not [p for p in config.parent.iterdir() if p.name.endswith(".tmp")]


def test_generate_check_shows_diff_and_writes_nothing(tmp_path: Path) -> None:
    envelopes, repo = setup_envelopes(tmp_path)
    assert generate("--envelopes", str(envelopes), "--repo", str(repo)).exit_code == 0
    result = generate("--envelopes", str(envelopes), "--repo", str(repo), "--check")
    assert result.exit_code == 0, result.output
    config = repo / "clf" / "config.pbtxt"
    drifted = config.read_text().replace("max_batch_size: 32", "max_batch_size: 64")
    config.write_text(drifted)
    result = generate("--envelopes", str(envelopes), "--repo", str(repo), "--check")
    assert result.exit_code == 1
    assert "-max_batch_size: 64" in result.output and "+max_batch_size: 32" in result.output
    assert "triton-ops generate" in result.output
    assert config.read_text() == drifted
    # without --check the drift is repaired
    assert generate("--envelopes", str(envelopes), "--repo", str(repo)).exit_code == 0
    assert "max_batch_size: 32" in config.read_text()


def test_generate_reports_invalid_envelopes(tmp_path: Path) -> None:
    envelopes, repo = setup_envelopes(tmp_path)
    (envelopes / "bad.yaml").write_text("name: bad\nbackend: python\npassthrough:\n"
                                        "  maxBatchSize: 3\n")
    result = generate("--envelopes", str(envelopes), "--repo", str(repo))
    assert result.exit_code == 1
    assert "bad.yaml:4:3" in result.output
    assert not (repo / "bad").exists()
    assert generate("--envelopes", str(tmp_path / "none"), "--repo", str(repo)).exit_code == 2


@pytest.mark.parametrize("folder", ["envelopes\nresponse_cache { enable: true }\n#",
                                    "envelopes\u2028x", "envelopes\rresponse_cache {}"])
def test_header_comment_escapes_the_envelope_path(tmp_path: Path, folder: str) -> None:
    from triton_ops.modelconfig.proto import ModelConfig

    envelopes = tmp_path / folder
    envelopes.mkdir()
    path = envelopes / "m.yaml"
    path.write_text("name: m\nbackend: python\n")
    result = generate("--envelopes", str(path), "--repo", str(tmp_path / "repo"))
    assert result.exit_code == 0, result.output
    text = (tmp_path / "repo" / "m" / "config.pbtxt").read_text()
    config = text_format.Parse(text, ModelConfig())
    assert not config.HasField("response_cache")
    header = [line for line in text.split("\n") if not line.startswith("#")][0]
    assert header.startswith("name:"), text
