"""Repository layout checks on real folders (tmp_path), and ensembles against their members."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from triton_ops.findings import Severity
from triton_ops.repository.layout import check_model_dir, check_repository

DATA = Path(__file__).parents[1] / "modelconfig" / "data"
IO = ('input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
      'output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]\n')


def model(repo: Path, name: str, body: str = 'backend: "python"\nmax_batch_size: 8\n' + IO,
          files: dict[str, str | None] | None = None, config_name: str | None = None) -> Path:
    """A model folder; `files` maps relative paths to content (None: a folder)."""
    folder = repo / name
    folder.mkdir(parents=True)
    (folder / "config.pbtxt").write_text(f'name: "{config_name or name}"\n{body}')
    for rel, content in (files if files is not None else {"1/model.py": "pass\n"}).items():
        target = folder / rel
        if content is None:
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
    return folder


def rules(result) -> list[str]:
    return sorted(f.rule for f in result.findings)


def test_clean_python_model(tmp_path: Path) -> None:
    folder = model(tmp_path, "scorer", files={"1/model.py": "", "2/model.py": "",
                                              ".triton-ops/sealed.json": "{}",
                                              ".cache/x": "", "warmup/sample.bin": ""})
    result = check_model_dir(folder)
    assert result.findings == [] and result.files_checked == 1


def test_version_folder_names(tmp_path: Path) -> None:
    folder = model(tmp_path, "m", files={"1/model.py": "", "latest/model.py": "",
                                         "01/model.py": ""})
    found = [f for f in check_model_dir(folder).findings]
    assert [f.rule for f in found] == ["repo-version-folder-name"] * 2
    assert {Path(f.file).name for f in found} == {"latest", "01"}


def test_missing_config_is_a_warning(tmp_path: Path) -> None:
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "model.onnx").write_text("")
    result = check_model_dir(tmp_path / "m")
    # Triton completes the config from model.onnx: warnings only, no errors.
    assert ("repo-config-missing", Severity.WARNING) in [(f.rule, f.severity)
                                                          for f in result.findings]
    assert all(f.severity is Severity.WARNING for f in result.findings)


def test_config_name_must_match_folder(tmp_path: Path) -> None:
    folder = model(tmp_path, "m", config_name="other")
    [finding] = check_model_dir(folder).findings
    assert finding.rule == "repo-config-name-mismatch"
    assert (finding.file, finding.line) == (str(folder / "config.pbtxt"), 1)


def test_no_version_folder(tmp_path: Path) -> None:
    folder = model(tmp_path, "m", files={})
    assert rules(check_model_dir(folder)) == ["repo-no-version"]


def test_specific_versions_must_exist(tmp_path: Path) -> None:
    body = ('backend: "python"\nmax_batch_size: 0\n' + IO
            + "version_policy { specific { versions: [ 1, 3 ] } }\n")
    [finding] = check_model_dir(model(tmp_path, "m", body)).findings
    assert finding.rule == "repo-version-missing" and finding.line == 6 and "3" in finding.message


@pytest.mark.parametrize(("body", "files", "expected"), [
    ('backend: "python"\n', {"1/model.pt": ""}, ["repo-model-file-missing"]),
    ('backend: "python"\ndefault_model_filename: "main.py"\n', {"1/main.py": ""}, []),
    ('platform: "onnxruntime_onnx"\n', {"1/model.onnx/model.onnx": ""}, []),
    ('backend: "onnxruntime"\n', {"1/model.onnx": ""}, []),
    ('platform: "tensorrt_plan"\n', {"1/model.plan": ""}, []),
    ('platform: "tensorrt_plan"\n', {"1/model.onnx": ""}, ["repo-model-file-missing"]),
    ('platform: "pytorch_libtorch"\n', {"1/model.pt": ""}, []),
    ('platform: "tensorflow_savedmodel"\n', {"1/model.savedmodel/saved_model.pb": ""}, []),
    ('platform: "tensorflow_savedmodel"\n', {"1/model.savedmodel": ""},
     ["repo-model-file-kind"]),
    ('platform: "tensorflow_graphdef"\n', {"1/model.graphdef": ""}, []),
    ('backend: "python"\n', {"1/model.py/x": ""}, ["repo-model-file-kind"]),
    ("", {"1/model.onnx": ""}, ["config-backend-missing"]),
    ("", {"1/weights.bin": ""}, ["repo-backend-undetermined"]),
])
def test_model_file_per_backend(tmp_path: Path, body: str, files: dict[str, str],
                                expected: list[str]) -> None:
    folder = model(tmp_path, "m", body + "max_batch_size: 0\n" + IO, files=files)
    assert rules(check_model_dir(folder)) == expected


def test_symlink_loop_and_dangling_link(tmp_path: Path) -> None:
    folder = model(tmp_path, "m")
    (folder / "2").symlink_to(folder / "2")
    (folder / "3").symlink_to(folder / "missing")
    result = check_model_dir(folder)
    assert rules(result) == ["repo-unreadable", "repo-unreadable"]
    assert {"symbolic link loop" in f.message for f in result.findings} == {True, False}


def test_config_symlink_loop(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.py").write_text("")
    (folder / "config.pbtxt").symlink_to(folder / "config.pbtxt")
    assert rules(check_model_dir(folder)) == ["config-file-unreadable"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_config(tmp_path: Path) -> None:
    folder = model(tmp_path, "m")
    (folder / "config.pbtxt").chmod(0)
    try:
        assert rules(check_model_dir(folder)) == ["config-file-unreadable"]
    finally:
        (folder / "config.pbtxt").chmod(0o644)


def test_bad_config_findings_carry_config_lines(tmp_path: Path) -> None:
    folder = model(tmp_path, "m", 'backend: "python"\nmax_batch_size: -1\n' + IO)
    [finding] = check_model_dir(folder).findings
    assert (finding.rule, finding.line) == ("config-max-batch-size-negative", 3)


def test_data_files(tmp_path: Path) -> None:
    body = ('backend: "python"\nmax_batch_size: 8\n' + IO + 'model_warmup [ { name: "w" '
            'batch_size: 1 inputs { key: "IN" value { data_type: TYPE_FP32 dims: [ 4 ] '
            'input_data_file: "in.bin" } } } ]\n')
    folder = model(tmp_path, "m", body)
    assert rules(check_model_dir(folder)) == ["repo-data-file-missing"]
    (folder / "warmup").mkdir()
    (folder / "warmup" / "in.bin").write_bytes(b"\0" * 16)
    assert rules(check_model_dir(folder)) == []


def test_repository_skips_hidden_and_files(tmp_path: Path) -> None:
    model(tmp_path, "good")
    model(tmp_path, ".staging", config_name="whatever")
    (tmp_path / "README.md").write_text("models")
    model(tmp_path, "odd name")
    result = check_repository(tmp_path)
    assert rules(result) == ["repo-model-name-chars"]
    assert result.files_checked == 2


def test_repository_must_be_a_folder(tmp_path: Path) -> None:
    assert rules(check_repository(tmp_path / "nope")) == ["repo-unreadable"]
    assert rules(check_repository(tmp_path)) == ["repo-empty"]


def _pipeline_repo(repo: Path, encoder_mbs: int = 16, pooler_versions: tuple = ("1",),
                   tokenizer_io: str | None = None) -> None:
    (repo / "text_pipeline").mkdir(parents=True)
    (repo / "text_pipeline" / "1").mkdir()
    (repo / "text_pipeline" / "config.pbtxt").write_text((DATA / "ensemble.pbtxt").read_text())
    model(repo, "tokenizer", 'backend: "python"\nmax_batch_size: 16\n' + (tokenizer_io or (
        'input [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
        'output [ { name: "INPUT_IDS" data_type: TYPE_INT64 dims: [ 128 ] },'
        ' { name: "ATTENTION_MASK" data_type: TYPE_INT64 dims: [ 128 ] } ]\n')))
    model(repo, "encoder", f'platform: "onnxruntime_onnx"\nmax_batch_size: {encoder_mbs}\n'
          'input [ { name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] },'
          ' { name: "attention_mask" data_type: TYPE_INT64 dims: [ -1 ] } ]\n'
          'output [ { name: "last_hidden_state" data_type: TYPE_FP32 dims: [ -1, 768 ] } ]\n',
          files={"1/model.onnx": ""})
    model(repo, "pooler", 'backend: "python"\nmax_batch_size: 0\n'
          'input [ { name: "HIDDEN" data_type: TYPE_FP32 dims: [ -1, -1, 768 ] },'
          ' { name: "MASK" data_type: TYPE_INT64 dims: [ -1, 128 ] } ]\n'
          'output [ { name: "POOLED" data_type: TYPE_FP32 dims: [ -1, 768 ] } ]\n',
          files={f"{v}/model.py": "" for v in pooler_versions})


def test_realistic_ensemble_repository_is_clean(tmp_path: Path) -> None:
    _pipeline_repo(tmp_path)
    result = check_repository(tmp_path)
    assert result.findings == [] and result.files_checked == 4


def test_ensemble_member_batch_size_and_version(tmp_path: Path) -> None:
    _pipeline_repo(tmp_path, encoder_mbs=8, pooler_versions=("2",))
    found = check_repository(tmp_path).findings
    assert [f.rule for f in found] == ["repo-ensemble-member"] * 2
    messages = " ".join(f.message for f in found)
    assert "larger than model 'encoder' allows (8)" in messages
    assert "version 1 of 'pooler'" in messages
    assert {f.line for f in found} == {21, 29}


def test_ensemble_member_missing_and_mismatched(tmp_path: Path) -> None:
    _pipeline_repo(tmp_path, tokenizer_io=(
        'input [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
        'output [ { name: "INPUT_IDS" data_type: TYPE_INT32 dims: [ 128 ] },'
        ' { name: "MASK" data_type: TYPE_INT64 dims: [ 128 ] } ]\n'))
    import shutil

    shutil.rmtree(tmp_path / "pooler")
    messages = [f.message for f in check_repository(tmp_path).findings]
    assert any("'pooler', which is not in this repository" in m for m in messages)
    assert any("no output 'ATTENTION_MASK'" in m for m in messages)
    assert any("'ids' is TYPE_INT32 in 'tokenizer' but TYPE_INT64 in 'encoder'" in m
               for m in messages), messages
