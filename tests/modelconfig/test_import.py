"""`triton-ops import`: config.pbtxt -> envelope, and import then generate round trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from google.protobuf import text_format
from typer.testing import CliRunner

from triton_ops.cli.main import app
from triton_ops.envelope.loader import load_envelope
from triton_ops.modelconfig.importer import (
    ImportRefused,
    config_to_envelope,
    import_model_dir,
)
from triton_ops.modelconfig.proto import ModelConfig
from triton_ops.modelconfig.render import render_model_config

CONFIGS = {
    "python_classifier": """
name: "python_classifier"
backend: "python"
max_batch_size: 64
version_policy { specific { versions: [1, 2] } }
input [ { name: "TEXT" data_type: TYPE_STRING dims: [1] } ]
output [ { name: "PROBS" data_type: TYPE_FP32 dims: [3] } ]
dynamic_batching { preferred_batch_size: [16, 32] max_queue_delay_microseconds: 500 }
instance_group [ { kind: KIND_CPU count: 2 } ]
parameters { key: "EXECUTION_ENV_PATH" value { string_value: "$$TRITON_MODEL_DIRECTORY/env.tgz" } }
""",
    "resnet_onnx": """
name: "resnet_onnx"
platform: "onnxruntime_onnx"
max_batch_size: 32
version_policy { specific { versions: 1 } }
input [ { name: "x" data_type: TYPE_FP16 format: FORMAT_NCHW dims: [3, 224, 224] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [1000] reshape { shape: [1, 1000] }
           label_filename: "labels.txt" } ]
dynamic_batching {
  max_queue_delay_microseconds: 2500
  priority_levels: 2
  default_priority_level: 2
  default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 100000
                         allow_timeout_override: true max_queue_size: 64 }
  priority_queue_policy { key: 1 value { max_queue_size: 8 } }
}
instance_group [ { name: "gpu" kind: KIND_GPU count: 2 gpus: [0, 1] } ]
model_warmup [ { name: "zeros" batch_size: 4
                 inputs { key: "x" value { data_type: TYPE_FP16 dims: [3, 224, 224]
                                           zero_data: true } } } ]
optimization { execution_accelerators { gpu_execution_accelerator [
    { name: "tensorrt" parameters { key: "precision_mode" value: "FP16" } } ] }
  input_pinned_memory { enable: true } }
response_cache { enable: true }
""",
    "bert_trt": """
name: "bert_trt"
backend: "tensorrt"
max_batch_size: 128
version_policy { specific { versions: [3] } }
input [ { name: "input_ids" data_type: TYPE_INT32 dims: [-1] allow_ragged_batch: true },
        { name: "lengths" data_type: TYPE_INT32 dims: [1] optional: true } ]
output [ { name: "logits" data_type: TYPE_FP16 dims: [2] } ]
batch_input [ { kind: BATCH_ACCUMULATED_ELEMENT_COUNT target_name: "offsets"
                data_type: TYPE_INT32 source_input: "input_ids" } ]
dynamic_batching { }
instance_group [ { kind: KIND_GPU count: 1 profile: ["0", "1"] } ]
metric_tags { key: "team" value: "search" }
model_transaction_policy { decoupled: false }
default_model_filename: "model.engine"
""",
    "pipeline": """
name: "pipeline"
platform: "ensemble"
max_batch_size: 8
version_policy { specific { versions: 1 } }
input [ { name: "RAW" data_type: TYPE_UINT8 dims: [-1] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [10] } ]
ensemble_scheduling { step [
  { model_name: "pre" model_version: -1 input_map { key: "IN" value: "RAW" }
    output_map { key: "OUT" value: "mid" } },
  { model_name: "clf" model_version: -1 input_map { key: "IN" value: "mid" }
    output_map { key: "OUT" value: "OUT" } } ] }
""",
}


def parse(text: str) -> ModelConfig:
    return text_format.Parse(text, ModelConfig())


def model_dir(tmp_path: Path, name: str, text: str, versions: tuple[int, ...] = (1,)) -> Path:
    folder = tmp_path / "model_repository" / name
    for v in versions:
        (folder / str(v)).mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(text)
    return folder


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_import_then_generate_reproduces_the_config(tmp_path: Path, name: str) -> None:
    folder = model_dir(tmp_path, name, CONFIGS[name])
    out = tmp_path / "envelopes" / f"{name}.yaml"
    result = CliRunner().invoke(app, ["import", str(folder), "-o", str(out)])
    assert result.exit_code == 0, result.output
    loaded = load_envelope(out)  # the written YAML itself, through the real loader
    assert loaded.findings == [], loaded.findings
    assert loaded.envelope is not None
    assert render_model_config(loaded.envelope) == parse(CONFIGS[name])
    # generate leaves the model's config semantically unchanged
    result = CliRunner().invoke(app, ["generate", "--envelopes", str(out), "--repo",
                                      str(tmp_path / "model_repository")])
    assert result.exit_code == 0, result.output
    assert parse((folder / "config.pbtxt").read_text()) == parse(CONFIGS[name])


def test_written_yaml_uses_human_units_and_passthrough(tmp_path: Path) -> None:
    folder = model_dir(tmp_path, "resnet_onnx", CONFIGS["resnet_onnx"])
    data = import_model_dir(folder).data
    dynamic = data["batching"]["dynamic"]
    assert dynamic["max_queue_delay"] == "2500us"
    assert dynamic["default_queue_policy"]["default_timeout"] == "100ms"
    assert set(data["passthrough"]) == {"modelWarmup", "optimization", "responseCache"}
    # int64 fields as numbers, not protobuf JSON's strings
    assert data["passthrough"]["modelWarmup"][0]["inputs"]["x"]["dims"] == [3, 224, 224]
    text = CliRunner().invoke(app, ["import", str(folder), "-o", "-"]).output
    assert "max_queue_delay: 2500us" in text and "default_timeout: 100ms" in text
    assert text.startswith("# Envelope imported by `triton-ops import`")


def test_sequence_batching_is_adopted(tmp_path: Path) -> None:
    text = CONFIGS["python_classifier"].replace(
        "dynamic_batching { preferred_batch_size: [16, 32] max_queue_delay_microseconds: 500 }",
        "sequence_batching { max_sequence_idle_microseconds: 5000000 }")
    folder = model_dir(tmp_path, "python_classifier", text)
    result = import_model_dir(folder)
    assert result.data["batching"]["sequence"] == {"max_sequence_idle": "5s"}
    out = tmp_path / "x.yaml"
    cli = CliRunner().invoke(app, ["import", str(folder), "-o", str(out)])
    assert cli.exit_code == 0, cli.output
    loaded = load_envelope(out)
    assert loaded.envelope is not None
    assert render_model_config(loaded.envelope) == parse(text)


def test_implicit_version_policy_becomes_explicit(tmp_path: Path) -> None:
    text = CONFIGS["python_classifier"].replace(
        "version_policy { specific { versions: [1, 2] } }", "")
    folder = model_dir(tmp_path, "python_classifier", text, versions=(1, 4, 7))
    result = import_model_dir(folder)
    assert result.data["versions"] == [7]
    assert any("version_policy" in n for n in result.notes)
    latest = text + "version_policy { latest { num_versions: 2 } }\n"
    (folder / "config.pbtxt").write_text(latest)
    assert import_model_dir(folder).data["versions"] == [4, 7]
    (folder / "config.pbtxt").write_text(text + "version_policy { all { } }\n")
    assert import_model_dir(folder).data["versions"] == [1, 4, 7]


def test_empty_name_takes_the_folder_name(tmp_path: Path) -> None:
    text = CONFIGS["python_classifier"].replace('name: "python_classifier"', "")
    folder = model_dir(tmp_path, "python_classifier", text)
    result = import_model_dir(folder)
    assert result.data["name"] == "python_classifier"


def test_unsupported_instance_features_are_refused() -> None:
    config = parse(CONFIGS["python_classifier"])
    config.instance_group[0].rate_limiter.priority = 1
    with pytest.raises(ImportRefused, match="rate_limiter"):
        config_to_envelope(config)


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    folder = model_dir(tmp_path, "python_classifier", CONFIGS["python_classifier"])
    out = tmp_path / "env.yaml"
    out.write_text("keep me\n")
    result = CliRunner().invoke(app, ["import", str(folder), "-o", str(out)])
    assert result.exit_code == 1 and "--force" in result.output
    assert out.read_text() == "keep me\n"
    result = CliRunner().invoke(app, ["import", str(folder), "-o", str(out), "--force"])
    assert result.exit_code == 0
    assert yaml.safe_load(out.read_text())["name"] == "python_classifier"


def test_unparsable_and_missing_configs(tmp_path: Path) -> None:
    folder = model_dir(tmp_path, "broken", "max_batch_size: [\n")
    result = CliRunner().invoke(app, ["import", str(folder), "-o", str(tmp_path / "b.yaml")])
    assert result.exit_code == 1 and "cannot parse" in result.output
    assert "Traceback" not in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(app, ["import", str(empty), "-o", str(tmp_path / "e.yaml")])
    assert result.exit_code == 1 and "config.pbtxt does not exist" in result.output
    result = CliRunner().invoke(app, ["import", str(tmp_path / "nowhere")])
    assert result.exit_code == 2


def test_import_does_not_modify_the_model_folder(tmp_path: Path) -> None:
    folder = model_dir(tmp_path, "bert_trt", CONFIGS["bert_trt"])
    config = folder / "config.pbtxt"
    before = (config.read_bytes(), config.stat().st_mtime_ns)
    CliRunner().invoke(app, ["import", str(folder), "-o", str(tmp_path / "b.yaml")])
    assert (config.read_bytes(), config.stat().st_mtime_ns) == before


def test_output_that_is_a_folder_is_a_usage_error(tmp_path: Path) -> None:
    folder = model_dir(tmp_path, "python_classifier", CONFIGS["python_classifier"])
    result = CliRunner().invoke(app, ["import", str(folder), "-o", str(tmp_path), "--force"])
    assert result.exit_code == 2 and "is a folder" in result.output


def test_instance_count_zero_is_normalised_and_noted(tmp_path: Path) -> None:
    text = CONFIGS["python_classifier"].replace("count: 2", "count: 0")
    folder = model_dir(tmp_path, "python_classifier", text)
    result = import_model_dir(folder)
    assert result.data["instances"][0]["count"] == 1
    assert any("count 0" in note for note in result.notes)
