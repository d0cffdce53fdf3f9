"""Configs Triton completes at load: from the model folder (backend and platform from the file
names, AutoCompleteBackendFields) and from the model file (inputs, outputs, dims and data
types, filled by the backend).

Checked alone, a config cannot be completed here: what Triton would complete is a warning,
not an error. Checked in its model folder, the backend Triton would pick is inferred the way
Triton does (the first folder in sort order, its file names), and the rules that depend on
the platform use it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from triton_ops.cli.main import app
from triton_ops.findings import Finding, Severity
from triton_ops.modelconfig.importer import ImportRefused, import_model_dir
from triton_ops.repository.layout import check_model_dir
from triton_ops.validate import PathKind, classify_path, validate_paths

CORPUS = Path(__file__).parent / "data" / "triton_autocomplete"
NOTE = "completed by Triton from the model file at load; not checked here"

MODEL_PY = "class TritonPythonModel:\n    def execute(self, requests):\n        return []\n"
AUTOCOMPLETE_PY = """class TritonPythonModel:
    @staticmethod
    def auto_complete_config(config):
        config.add_input({"name": "IN", "data_type": "TYPE_FP32", "dims": [4]})
        config.add_output({"name": "OUT", "data_type": "TYPE_FP32", "dims": [4]})
        return config

    def execute(self, requests):
        return []
"""
IO = ('input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
      'output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]\n')
NO_DIMS = ('input [ { name: "IN" data_type: TYPE_FP32 } ]\n'
           'output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]\n')


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity is Severity.ERROR]


def rules(findings: list[Finding]) -> set[str]:
    return {f.rule for f in findings}


# --- alone: Triton's own configs that rely on auto-complete ------------------------------------

@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.glob("*.pbtxt")))
def test_tritons_own_autocomplete_configs_have_no_errors_alone(name: str) -> None:
    result = validate_paths([CORPUS / name])
    assert errors(result.findings) == [], [(f.rule, f.message) for f in result.findings]


def test_corpus_names_its_sources() -> None:
    sources = (CORPUS / "SOURCES.txt").read_text()
    for path in CORPUS.glob("*.pbtxt"):
        assert f"{path.name}: triton-inference-server/" in sources, path.name


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.pbtxt"
    path.write_text(text)
    return path


def test_missing_dims_alone_is_a_warning_for_backends_that_complete(tmp_path: Path) -> None:
    for backend in ("onnxruntime", "tensorrt", "python", "openvino"):
        findings = validate_paths([write_config(tmp_path, f'backend: "{backend}"\n'
                                                + NO_DIMS)]).findings
        assert errors(findings) == [], (backend, findings)
        notes = [f for f in findings if f.rule == "config-autocomplete"]
        assert notes and all(NOTE in f.message for f in notes)
        assert "'IN'" in notes[0].message and notes[0].line == 2


@pytest.mark.parametrize("head", ['backend: "pytorch"\n', 'platform: "pytorch_libtorch"\n'])
def test_missing_dims_is_an_error_where_nothing_completes_them(tmp_path: Path, head: str) -> None:
    findings = validate_paths([write_config(tmp_path, head + NO_DIMS)]).findings
    assert "config-io-dims-missing" in rules(errors(findings))


def test_empty_config_alone_is_not_an_error(tmp_path: Path) -> None:
    for text in ("", "\n\n", "# only a comment\n"):
        findings = validate_paths([write_config(tmp_path, text)]).findings
        assert errors(findings) == [], (text, findings)


def test_platform_specific_rule_waits_for_the_platform_alone(tmp_path: Path) -> None:
    text = 'instance_group [ { profile: "0" } ]\n'
    findings = validate_paths([write_config(tmp_path, text)]).findings
    assert errors(findings) == []
    assert any(f.rule == "config-autocomplete" and "profile" in f.message for f in findings)
    # a backend named explicitly is checked: profile is TensorRT-only
    findings = validate_paths([write_config(tmp_path, 'backend: "onnxruntime"\n'
                                            + text)]).findings
    assert "config-instance-profile" in rules(errors(findings))
    # backend tensorrt without platform: Triton fills platform tensorrt_plan, profile is fine
    findings = validate_paths([write_config(tmp_path, 'backend: "tensorrt"\n' + text)]).findings
    assert errors(findings) == []


# --- in the model folder: what Triton infers from the files -------------------------------------

def model(tmp_path: Path, config: str | None, files: dict[str, str | None],
          name: str = "m") -> Path:
    folder = tmp_path / "repo" / name
    folder.mkdir(parents=True)
    if config is not None:
        (folder / "config.pbtxt").write_text(config)
    for rel, text in files.items():
        target = folder / rel
        if text is None:
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    return folder


@pytest.mark.parametrize(("model_file", "refused"), [
    ("1/model.plan", False), ("1/model.onnx", True), ("1/model.py", True),
    ("1/model.savedmodel/", True), ("1/model.pt", True),
])
def test_profile_uses_the_platform_inferred_from_the_file(tmp_path: Path, model_file: str,
                                                          refused: bool) -> None:
    files = {model_file.rstrip("/"): None if model_file.endswith("/") else "x"}
    folder = model(tmp_path, "max_batch_size: 0\n" + IO
                   + 'instance_group [ { kind: KIND_CPU profile: "0" } ]\n', files)
    found = rules(errors(check_model_dir(folder).findings))
    assert ("config-instance-profile" in found) == refused, found


@pytest.mark.parametrize(("files", "errors_expected"), [
    ({"1/model.py": MODEL_PY}, set()),
    ({"1/model.py": MODEL_PY, ".aaa/notes.txt": "x"}, {"repo-backend-undetermined"}),
    ({"1/readme.txt": "x", "2/model.py": MODEL_PY}, {"repo-backend-undetermined"}),
    ({"1/model.savedmodel/saved_model.pb": "x"}, set()),
    ({"1/model.xml": "x"}, set()),
    ({"1/weights.bin": "x"}, {"repo-backend-undetermined"}),
])
def test_backend_is_inferred_like_triton_does(tmp_path: Path, files: dict[str, str],
                                              errors_expected: set[str]) -> None:
    folder = model(tmp_path, "max_batch_size: 0\n" + IO, files)
    found = rules(errors(check_model_dir(folder).findings))
    assert found == errors_expected


def test_custom_backend_from_the_model_name(tmp_path: Path) -> None:
    folder = model(tmp_path, "max_batch_size: 0\n" + IO, {"1/model.identity": "x"},
                   name="m.identity")
    assert errors(check_model_dir(folder).findings) == []


@pytest.mark.parametrize(("model_py", "refused"), [(AUTOCOMPLETE_PY, False), (MODEL_PY, True)])
def test_python_gaps_depend_on_auto_complete_config(tmp_path: Path, model_py: str,
                                                    refused: bool) -> None:
    folder = model(tmp_path, 'backend: "python"\n' + NO_DIMS, {"1/model.py": model_py})
    findings = check_model_dir(folder).findings
    assert ("config-io-dims-missing" in rules(errors(findings))) == refused
    if not refused:
        assert "config-autocomplete" in rules(findings)


def test_missing_dims_with_model_pt_is_an_error(tmp_path: Path) -> None:
    folder = model(tmp_path, NO_DIMS, {"1/model.pt": "x"})
    assert "config-io-dims-missing" in rules(errors(check_model_dir(folder).findings))


def test_model_folder_without_config(tmp_path: Path) -> None:
    folder = model(tmp_path, None, {"1/model.py": AUTOCOMPLETE_PY})
    assert classify_path(folder) is PathKind.MODEL_DIR
    result = validate_paths([folder])
    assert errors(result.findings) == []
    assert "repo-config-missing" in rules(result.findings)
    undetermined = model(tmp_path, None, {"1/weights.bin": "x"}, name="n")
    assert "repo-backend-undetermined" in rules(errors(validate_paths([undetermined]).findings))


def test_empty_config_in_its_folder(tmp_path: Path) -> None:
    folder = model(tmp_path, "", {"1/model.py": MODEL_PY})
    assert errors(validate_paths([folder]).findings) == []


# --- import infers the backend the same way --------------------------------------------------

@pytest.mark.parametrize(("files", "key", "value"), [
    ({"1/model.py": MODEL_PY}, "backend", "python"),
    ({"1/model.onnx": "x"}, "backend", "onnxruntime"),
    ({"1/model.plan": "x"}, "backend", "tensorrt"),
    ({"1/model.savedmodel/saved_model.pb": "x"}, "platform", "tensorflow_savedmodel"),
    ({"1/model.graphdef": "x"}, "platform", "tensorflow_graphdef"),
    ({"1/model.xml": "x"}, "backend", "openvino"),
    ({"1/model.pt": "x"}, "backend", "pytorch"),
])
def test_import_infers_the_backend_from_the_model_file(tmp_path: Path, files: dict[str, str],
                                                       key: str, value: str) -> None:
    folder = model(tmp_path, 'name: "m"\nmax_batch_size: 0\n' + IO, files)
    result = import_model_dir(folder)
    assert result.data[key] == value
    assert any("infers" in note and value in note for note in result.notes)
    out = tmp_path / "m.yaml"
    cli = CliRunner().invoke(app, ["import", str(folder), "-o", str(out)])
    assert cli.exit_code == 0, cli.output


def test_import_refuses_when_triton_could_not_pick_a_backend(tmp_path: Path) -> None:
    folder = model(tmp_path, 'name: "m"\nmax_batch_size: 0\n' + IO, {"1/weights.bin": "x"})
    with pytest.raises(ImportRefused, match="cannot pick a backend"):
        import_model_dir(folder)


def test_import_of_an_empty_config(tmp_path: Path) -> None:
    folder = model(tmp_path, "", {"1/model.py": AUTOCOMPLETE_PY})
    result = import_model_dir(folder)
    assert result.data["name"] == "m" and result.data["backend"] == "python"


def test_import_default_count_follows_the_inferred_backend(tmp_path: Path) -> None:
    folder = model(tmp_path, 'name: "m"\nmax_batch_size: 0\n' + IO
                   + "instance_group [ { kind: KIND_CPU } ]\n", {"1/model.onnx": "x"})
    result = import_model_dir(folder)
    assert result.data["backend"] == "onnxruntime"
    assert result.data["instances"][0]["count"] == 2  # Triton's CPU default for onnxruntime
