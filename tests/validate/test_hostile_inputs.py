"""Hostile inputs: every command that reads envelopes or model folders answers them with a
finding or a message and an exit code, never a traceback.

The corpus holds what an attacker or a careless edit puts in a pull request: names with line
breaks (that would add keys to YAML or fields to config.pbtxt), integers beyond what their
config.pbtxt field holds, NaN and infinity, enum numbers Triton does not define, path
traversal in names, Unicode digits as version folders, probes that name no tensor, broken
sequence batchers, configs Triton completes at load.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from triton_ops.cli.main import app

BASE: dict[str, Any] = {
    "name": "m", "backend": "python",
    "inputs": [{"name": "IN", "data_type": "FP32", "dims": [4]}],
    "outputs": [{"name": "OUT", "data_type": "FP32", "dims": [4]}],
    "batching": {"max_batch_size": 4},
}


def envelope(**changes: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(BASE))
    data.update(changes)
    return data


# name -> envelope data (written with yaml.safe_dump, so every string is exact)
HOSTILE_ENVELOPES: dict[str, dict[str, Any]] = {
    "name_trailing_newline": envelope(name="m\n"),
    "name_injects_key": envelope(name="m\nruntime: {image: evil}"),
    "name_traversal": envelope(name="../../etc/passwd"),
    "max_batch_size_int32_overflow": envelope(batching={"max_batch_size": 2**31}),
    "count_int32_overflow": envelope(instances=[{"kind": "CPU", "count": 2**31}]),
    "dims_int64_overflow": envelope(inputs=[{"name": "IN", "data_type": "FP32",
                                             "dims": [2**63]}]),
    "version_int64_overflow": envelope(versions=[2**63]),
    "delay_uint64_overflow": envelope(batching={"max_batch_size": 4, "dynamic": {
        "max_queue_delay": "9" * 400 + "h"}}),
    "cpu_infinite": envelope(resources={"cpu": float("inf")}),
    "throughput_nan": envelope(slo={"p99_latency": "10ms", "target_throughput": float("nan")}),
    "probe_names_no_tensor": envelope(probe={"inputs": {"NOT_A_TENSOR": [[1]]},
                                             "expected": {"OUT": [[1, 2, 3, 4]]}}),
    "probe_nan": envelope(probe={"inputs": {"IN": [[float("nan"), 0, 0, 0]]},
                                 "expected": {"OUT": [[1, 2, 3, 4]]}}),
    "probe_deeply_nested": envelope(probe={"inputs": {"IN": [[[[[[[[[[1]]]]]]]]]]},
                                           "expected": {"OUT": [[1, 2, 3, 4]]}}),
    "tensor_name_injects": envelope(inputs=[{"name": "IN\nruntime:\n  image: evil",
                                             "data_type": "FP32", "dims": [4]}]),
    "sequence_broken_controls": envelope(batching={"max_batch_size": 4, "sequence": {
        "controls": [{"name": "S", "kind": "START"},
                     {"name": "C", "kind": "CORRID", "data_type": "FP32"}],
        "states": [{"input_name": "A", "output_name": "B", "data_type": "FP32", "dims": [2],
                    "initial_state": [{"data_type": "INT8", "dims": [3], "zero_data": True},
                                      {"name": "x", "data_type": "FP32", "dims": [2]}]}]}}),
    "sequence_and_dynamic": envelope(batching={"max_batch_size": 4, "dynamic": {},
                                               "sequence": {}}),
}

IO = ('input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
      'output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]\n')
HEAD = 'backend: "python"\nmax_batch_size: 0\n'
# model folder name -> (config.pbtxt text or None, extra entries: path -> file text or None
# for a folder)
HOSTILE_MODELS: dict[str, tuple[str | None, dict[str, str | None]]] = {
    "tensor_name_newline": (HEAD + 'input [ { name: "IN\\nruntime:\\n  image: evil" '
                            'data_type: TYPE_FP32 dims: [ 4 ] } ]\n', {}),
    "data_type_99": (HEAD + IO.replace("data_type: TYPE_FP32 dims", "data_type: 99 dims", 1),
                     {}),
    "kind_42": (HEAD + IO + "instance_group [ { kind: 42 } ]\n", {}),
    "format_9": (HEAD + IO.replace("dims: [ 4 ] } ]\noutput", "format: 9 dims: [ 4 ] } ]\n"
                                   "output"), {}),
    "control_kind_9": (HEAD + IO + 'sequence_batching { control_input [ { name: "S" control '
                       '[ { kind: 9 int32_false_true: [ 0, 1 ] } ] } ] }\n', {}),
    "name_traversal": ('name: "../x"\n' + HEAD + IO, {}),
    "count_negative": (HEAD + IO + "instance_group [ { kind: KIND_CPU count: -3 } ]\n", {}),
    "unicode_digit_version": (HEAD + IO, {"²": None, "²/model.py": ""}),
    "empty_config": ("", {}),
    "no_config": (None, {}),
    "hidden_folder_first": ("max_batch_size: 0\n" + IO, {".aaa": None}),
    "huge_int_in_config": ("max_batch_size: 99999999999999999999\n" + HEAD, {}),
    "sequence_duplicate_controls": (HEAD + IO + 'sequence_batching { control_input [ { name: '
                                    '"S" control [ { kind: CONTROL_SEQUENCE_START '
                                    'int32_false_true: [ 0, 1 ] } ] }, { name: "S" control [ '
                                    '{ kind: CONTROL_SEQUENCE_END int32_false_true: [ 0, 1 ] '
                                    '} ] } ] }\n', {}),
}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    envelopes = tmp_path / "envelopes"
    envelopes.mkdir()
    for name, data in HOSTILE_ENVELOPES.items():
        if data["name"] == "m":  # the name is not the point: it matches the file name
            data = {**data, "name": name}
        (envelopes / f"{name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    repo = tmp_path / "model_repository"
    for name, (config, extra) in HOSTILE_MODELS.items():
        folder = repo / name
        (folder / "1").mkdir(parents=True)
        (folder / "1" / "model.py").write_text("")
        if config is not None:
            (folder / "config.pbtxt").write_text(config)
        for rel, text in extra.items():
            if text is None:
                (folder / rel).mkdir(parents=True, exist_ok=True)
            else:
                (folder / rel).write_text(text)
    return tmp_path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"{args}: {result.exception!r}"
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output



def test_validate_reports_every_hostile_input(corpus: Path) -> None:
    for fmt in ("human", "json", "github", "junit"):
        code, _ = run("validate", "--format", fmt, str(corpus / "envelopes"),
                      str(corpus / "model_repository"))
        assert code == 1
    code, output = run("validate", "--format", "json", str(corpus / "envelopes"),
                       str(corpus / "model_repository"))
    data = json.loads(output)
    assert not [f for f in data["findings"] if "internal error" in f["message"]]
    flagged = {Path(f["file"]).name for f in data["findings"] if f["severity"] == "error"}
    for name in set(HOSTILE_ENVELOPES) - VALID:
        assert f"{name}.yaml" in flagged, name


@pytest.mark.parametrize("check", [False, True])
def test_generate_refuses_without_traceback(corpus: Path, check: bool) -> None:
    args = ["generate", "--envelopes", str(corpus / "envelopes"), "--repo",
            str(corpus / "generated")]
    code, _ = run(*args, *(["--check"] if check else []))
    assert code == 1
    generated = corpus / "generated"
    names = {p.name for p in generated.iterdir()} if generated.exists() else set()
    assert all("\n" not in name and ".." not in name for name in names), names


@pytest.mark.parametrize("model", sorted(HOSTILE_MODELS))
def test_import_answers_every_hostile_model(corpus: Path, model: str) -> None:
    out = corpus / "imported" / f"{model}.yaml"
    code, output = run("import", str(corpus / "model_repository" / model), "-o", str(out))
    assert code in (0, 1, 2), output
    if code == 0:
        data = yaml.safe_load(out.read_text())
        assert "runtime" not in data  # nothing injected through a name
    else:
        assert not out.exists()


def test_helm_values_answers_hostile_envelopes(corpus: Path) -> None:
    code, _ = run("helm-values", "--envelopes", str(corpus / "envelopes"))
    assert code == 1


def each_envelope(corpus: Path) -> list[Path]:
    return sorted((corpus / "envelopes").glob("*.yaml"))


# Envelopes whose config renders fine (the probe or a name Triton accepts is the point):
# generate writes their config, validate reports the rest.
RENDERABLE = {"probe_names_no_tensor", "probe_nan", "probe_deeply_nested", "tensor_name_injects",
              "sequence_broken_controls"}
VALID = {"tensor_name_injects"}  # Triton loads any tensor name; the YAML escapes it


@pytest.mark.parametrize("command", [
    lambda path: ["validate", str(path)],
    lambda path: ["generate", "--envelopes", str(path), "--repo", str(path.parent / "gen")],
], ids=["validate", "generate"])
def test_each_hostile_envelope_alone(corpus: Path, command: Callable[[Path], list[str]]) -> None:
    from triton_ops.validate.envelope_config import check_envelope_file

    for path in each_envelope(corpus):
        args = command(path)
        code, _ = run(*args)
        if args[0] == "generate":
            assert code == (0 if path.stem in RENDERABLE else 1), path.name
        elif path.stem in VALID:  # its model folder is missing here, nothing else is wrong
            assert check_envelope_file(path, repo=None).findings == [], path.name
        else:
            assert code == 1, path.name
