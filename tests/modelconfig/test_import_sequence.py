"""Stateful models in envelopes: sequence batching imports, renders and generates back equal.

The corpus is Triton's own sequence-batching configs (direct and oldest strategies, START,
END, READY and CORRID controls, implicit state with initial state, growable memory, an
iterative sequence), plus the streaming model of the rules' test data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import text_format
from typer.testing import CliRunner

from triton_ops.cli.main import app
from triton_ops.envelope.loader import load_envelope
from triton_ops.envelope.rules import check_envelope
from triton_ops.findings import Severity
from triton_ops.modelconfig.importer import import_model_dir
from triton_ops.modelconfig.proto import ModelConfig
from triton_ops.modelconfig.render import render_model_config
from triton_ops.validate.envelope_config import RULES as GATE_RULES

DATA = Path(__file__).parent / "data"
CORPUS = sorted([*(DATA / "sequence_corpus").glob("*.pbtxt"), *DATA.glob("sequence*.pbtxt")])
# What import normalises on purpose (and notes): the version policy is made explicit,
# instance counts below 1 become Triton's default, an empty name the folder's.
NORMALISED = ("version_policy", "instance_group", "name")


def parse(text: str) -> ModelConfig:
    return text_format.Parse(text, ModelConfig())


def without_normalised(config: ModelConfig) -> ModelConfig:
    copy = ModelConfig()
    copy.CopyFrom(config)
    for name in NORMALISED:
        copy.ClearField(name)
    return copy


def model_folder(tmp_path: Path, path: Path) -> tuple[Path, ModelConfig]:
    config = parse(path.read_text())
    folder = tmp_path / "model_repository" / (config.name or path.stem)
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(path.read_text())
    return folder, config


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_import_then_generate_gives_the_config_back(tmp_path: Path, path: Path) -> None:
    folder, original = model_folder(tmp_path, path)
    out = tmp_path / "envelopes" / f"{folder.name}.yaml"
    result = CliRunner().invoke(app, ["import", str(folder), "-o", str(out)])
    assert result.exit_code == 0, result.output
    loaded = load_envelope(out)
    assert loaded.findings == [] and loaded.envelope is not None, loaded.findings
    assert loaded.envelope.batching.sequence is not None
    rendered = render_model_config(loaded.envelope)
    assert rendered.sequence_batching == original.sequence_batching
    assert without_normalised(rendered) == without_normalised(original)
    result = CliRunner().invoke(app, ["generate", "--envelopes", str(out), "--repo",
                                      str(folder.parent)])
    assert result.exit_code == 0, result.output
    generated = parse((folder / "config.pbtxt").read_text())
    assert without_normalised(generated) == without_normalised(original)


def test_corpus_names_its_sources() -> None:
    sources = (DATA / "sequence_corpus" / "SOURCES.txt").read_text()
    for path in (DATA / "sequence_corpus").glob("*.pbtxt"):
        assert f"{path.name}: triton-inference-server/server/" in sources


def test_import_writes_readable_sequence_sections(tmp_path: Path) -> None:
    folder, _ = model_folder(tmp_path, DATA / "sequence.pbtxt")
    sequence = import_model_dir(folder).data["batching"]["sequence"]
    assert sequence["max_sequence_idle"] == "5s"
    assert sequence["oldest"] == {"max_candidate_sequences": 16,
                                  "preferred_batch_sizes": [4, 8], "max_queue_delay": "1ms"}
    assert sequence["controls"][0] == {"name": "START", "kind": "START",
                                       "fp32_false_true": [0.0, 1.0]}
    assert sequence["controls"][3] == {"name": "CORRID", "kind": "CORRID",
                                       "data_type": "UINT64"}
    assert sequence["states"][0]["initial_state"] == [
        {"name": "zeros", "data_type": "FP32", "dims": [256], "zero_data": True}]


def test_controls_of_one_tensor_stay_one_control_input(tmp_path: Path) -> None:
    text = ('name: "m"\nbackend: "python"\nmax_batch_size: 4\nsequence_batching { direct { '
            'max_queue_delay_microseconds: 100 minimum_slot_utilization: 0.5 } control_input '
            '[ { name: "FLAGS" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: '
            '[ 0, 1 ] }, { kind: CONTROL_SEQUENCE_END int32_false_true: [ 0, 1 ] } ] } ] }\n')
    folder = tmp_path / "m"
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(text)
    result = import_model_dir(folder)
    controls = result.data["batching"]["sequence"]["controls"]
    assert [c["kind"] for c in controls] == ["START", "END"]
    from triton_ops.envelope.model import Envelope

    rendered = render_model_config(Envelope.model_validate(result.data))
    assert rendered.sequence_batching == parse(text).sequence_batching


ENVELOPE: dict[str, Any] = {
    "name": "m", "backend": "python",
    "inputs": [{"name": "IN", "data_type": "FP32", "dims": [4]}],
    "outputs": [{"name": "OUT", "data_type": "FP32", "dims": [4]}],
    "batching": {"max_batch_size": 4, "sequence": {
        "max_sequence_idle": "5s",
        "oldest": {"max_candidate_sequences": 8, "preferred_batch_sizes": [2, 4],
                   "max_queue_delay": "1ms"},
        "controls": [{"name": "START", "kind": "CONTROL_SEQUENCE_START",
                      "bool_false_true": [False, True]},
                     {"name": "CORRID", "kind": "corrid", "data_type": "TYPE_STRING"}],
        "states": [{"input_name": "S_IN", "output_name": "S_OUT", "data_type": "FP32",
                    "dims": [16], "initial_state": [
                        {"name": "zeros", "data_type": "FP32", "dims": [16],
                         "zero_data": True}]}]}},
}


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def sequence_with(**changes: Any) -> dict[str, Any]:
    data = yaml.safe_load(yaml.safe_dump(ENVELOPE))
    data["batching"]["sequence"].update(changes)
    return data


def test_envelope_with_sequence_batching_is_clean(tmp_path: Path) -> None:
    loaded = load_envelope(write(tmp_path, ENVELOPE))
    assert loaded.envelope is not None, loaded.findings
    assert check_envelope(loaded, None, GATE_RULES) == []
    sequence = render_model_config(loaded.envelope).sequence_batching
    from triton_ops.modelconfig.proto import model_config_pb2

    corrid = sequence.control_input[1].control[0]
    assert corrid.kind == model_config_pb2.ModelSequenceBatching.Control.CONTROL_SEQUENCE_CORRID
    assert corrid.data_type == model_config_pb2.TYPE_STRING
    assert list(sequence.oldest.preferred_batch_size) == [2, 4]
    assert sequence.state[0].initial_state[0].zero_data


@pytest.mark.parametrize(("data", "words"), [
    ({**ENVELOPE, "batching": {"max_batch_size": 4, "dynamic": {}, "sequence": {}}},
     "a model has one scheduler"),
    (sequence_with(direct={}), "give one strategy"),
    (sequence_with(controls=[{"name": "S", "kind": "BEGIN"}]), "batching.sequence.controls.0.kind"),
    (sequence_with(controls=[{"name": "C", "kind": "CORRID", "data_type": "TYPE_UUID"}]),
     "unknown data type"),
    (sequence_with(max_sequence_idle="2^64us"), "max_sequence_idle"),
    (sequence_with(states=[{"input_name": "A", "initial_state": [
        {"zero_data": True, "data_file": "x.bin"}]}]), "not both"),
])
def test_sequence_schema_errors(tmp_path: Path, data: dict[str, Any], words: str) -> None:
    loaded = load_envelope(write(tmp_path, data))
    assert loaded.envelope is None
    assert any(words in f.message for f in loaded.findings), loaded.findings


@pytest.mark.parametrize(("changes", "rule"), [
    ({"controls": [{"name": "START", "kind": "START"}]}, "config-sequence-control-values"),
    ({"controls": [{"name": "C", "kind": "CORRID", "data_type": "FP32"}]},
     "config-sequence-control-corrid"),
    ({"controls": [{"name": "A", "kind": "START", "int32_false_true": [0, 1]},
                   {"name": "B", "kind": "START", "int32_false_true": [0, 1]}]},
     "config-sequence-control-kind-duplicate"),
    ({"oldest": {"preferred_batch_sizes": [8]}}, "config-sequence-preferred-size"),
    ({"direct": {"minimum_slot_utilization": 1.5}, "oldest": None},
     "config-sequence-slot-utilization"),
    ({"states": [{"input_name": "S_IN", "output_name": "S_OUT", "data_type": "FP32",
                  "dims": [16], "initial_state": [{"name": "z", "data_type": "INT32",
                                                   "dims": [16], "zero_data": True}]}]},
     "config-sequence-initial-state-match"),
])
def test_envelope_sequence_is_checked_with_tritons_rules(tmp_path: Path,
                                                         changes: dict[str, Any],
                                                         rule: str) -> None:
    loaded = load_envelope(write(tmp_path, sequence_with(**changes)))
    assert loaded.envelope is not None, loaded.findings
    found = [f for f in check_envelope(loaded, None, GATE_RULES)
             if f.rule == "envelope-sequence-batching"]
    assert found and all(f.severity is Severity.ERROR for f in found)
    assert any(f"[{rule}]" in f.message for f in found), [f.message for f in found]
    assert all(f.line > 1 for f in found)  # located inside batching.sequence
