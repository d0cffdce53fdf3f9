"""`triton-ops import` on hostile or broken configs: clear refusals, never a traceback, and an
envelope whose YAML (values and comments) says exactly what the config says.

Triton 2.51 loads tensor names with line breaks, quotes, tabs or NUL (seen with the bundled
server), so import keeps such names; everything it writes into YAML is escaped, so a name
cannot add keys to the envelope.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from google.protobuf import text_format
from typer.testing import CliRunner

from triton_ops.cli.main import app
from triton_ops.envelope.loader import load_envelope
from triton_ops.modelconfig.importer import ImportRefused, envelope_yaml, import_model_dir
from triton_ops.modelconfig.proto import ModelConfig
from triton_ops.modelconfig.render import render_model_config

IO = ('input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
      'output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]\n')
HEAD = 'name: "m"\nbackend: "python"\nmax_batch_size: 0\n'


def model_dir(tmp_path: Path, config: str, name: str = "m",
              versions: tuple[str, ...] = ("1",)) -> Path:
    folder = tmp_path / "model_repository" / name
    for version in versions:
        (folder / version).mkdir(parents=True, exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(config)
    return folder


def run_import(folder: Path, out: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["import", str(folder), "-o", str(out)])
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    return result.exit_code, result.output


# Characters YAML (1.1, as PyYAML reads it) or a terminal treats as line breaks or controls.
HOSTILE_NAMES = [
    "IN\nruntime:\n  image: evil:latest\nx",
    "IN\r\nruntime: {image: evil}",
    "IN\u2028runtime: {image: evil}",
    "IN\x85runtime: {image: evil}",
    "IN\x1b[2J\x1b[31mred",
    'IN" # quote',
    "a\tb",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=repr)
def test_tensor_name_cannot_inject_keys(tmp_path: Path, name: str) -> None:
    quoted = text_format.MessageToString(ModelConfig(name=name)).split(": ", 1)[1].strip()
    config = HEAD + (f'input [ {{ name: {quoted} data_type: TYPE_FP32 dims: [ -1 ] }} ]\n'
                     'output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]\n')
    folder = model_dir(tmp_path, config)
    out = tmp_path / "envelopes" / "m.yaml"
    code, output = run_import(folder, out)
    assert code == 0, output
    text = out.read_text()
    data = yaml.safe_load(text)
    assert set(data) == {"name", "backend", "versions", "inputs", "outputs", "batching"}
    assert data["inputs"][0]["name"] == name
    for line in text.splitlines():
        assert line.startswith(("#", " ", "-")) or line.split(":", 1)[0] in data, line
    assert all(ch == "\n" or ch.isprintable() for ch in text.replace("\t", " "))
    assert "\x1b" not in output  # the notes printed on the terminal are escaped too
    loaded = load_envelope(out)
    assert loaded.envelope is not None and loaded.findings == []
    assert render_model_config(loaded.envelope).input[0].name == name


def test_model_folder_path_cannot_inject_through_the_header(tmp_path: Path) -> None:
    folder = model_dir(tmp_path, HEAD.replace('"m"', '"ok"') + IO,
                       name="ok\nruntime:\n  image: evil")
    result = import_model_dir(folder)
    text = envelope_yaml(result, (folder / "config.pbtxt").as_posix())
    assert "runtime" not in yaml.safe_load(text)
    assert all(line.startswith("#") for line in text.splitlines()[:3])


@pytest.mark.parametrize(("change", "words"), [
    (('data_type: TYPE_FP32 dims: [ 4 ] } ]\noutput', 'data_type: 99 dims: [ 4 ] } ]\noutput'),
     "input 'IN' has data_type 99"),
    (('dims: [ 4 ] } ]\noutput', 'format: 9 dims: [ 4 ] } ]\noutput'),
     "input 'IN' has format 9"),
    (("max_batch_size: 0\n", "max_batch_size: 0\ninstance_group [ { kind: 42 } ]\n"),
     "instance_group 0 has kind 42"),
    (('name: "m"', 'name: "../x"'), "'../x' is not a valid model name"),
    (("max_batch_size: 0", "max_batch_size: -1"), "batching.max_batch_size"),
    (("dims: [ 4 ] } ]\noutput", "dims: [ 0 ] } ]\noutput"), "dimension 0 is invalid"),
    (("max_batch_size: 0\n", "max_batch_size: 0\ninstance_group [ { gpus: [ -1 ] } ]\n"),
     "instances.0.gpus.0"),
    (("max_batch_size: 0\n", "max_batch_size: 0\nversion_policy { specific { versions: -3 } }\n"),
     "version numbers start at 1"),
])
def test_configs_an_envelope_cannot_hold_are_refused_clearly(tmp_path: Path,
                                                            change: tuple[str, str],
                                                            words: str) -> None:
    config = (HEAD + IO).replace(*change)
    assert config != HEAD + IO
    folder = model_dir(tmp_path, config)
    with pytest.raises(ImportRefused, match=None) as refused:
        import_model_dir(folder)
    assert words in str(refused.value)
    out = tmp_path / "out.yaml"
    code, output = run_import(folder, out)
    assert code == 1 and words in output
    assert not out.exists() and not (tmp_path / "x.yaml").exists()


def test_default_output_never_leaves_the_envelopes_folder(tmp_path: Path, monkeypatch) -> None:
    folder = model_dir(tmp_path, (HEAD + IO).replace('name: "m"', 'name: "../../evil"'))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["import", str(folder)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "not a valid model name" in result.output
    assert not (tmp_path.parent / "evil.yaml").exists()
    assert list(tmp_path.rglob("*.yaml")) == []


@pytest.mark.parametrize(("group", "backend", "count"), [
    ("{ kind: KIND_CPU count: -2 }", "python", 1),
    ("{ kind: KIND_CPU count: 0 }", "onnxruntime", 2),
    ("{ kind: KIND_GPU count: -1 }", "onnxruntime", 1),
])
def test_count_below_one_becomes_tritons_default(tmp_path: Path, group: str, backend: str,
                                                 count: int) -> None:
    config = (HEAD.replace('"python"', f'"{backend}"') + IO
              + f"instance_group [ {group} ]\n")
    result = import_model_dir(model_dir(tmp_path, config))
    assert result.data["instances"][0]["count"] == count
    assert any("Triton's default" in note for note in result.notes)


def test_unicode_digit_version_folder_is_ignored(tmp_path: Path) -> None:
    folder = model_dir(tmp_path, HEAD + IO, versions=("1", "²", "3", "04"))
    result = import_model_dir(folder)
    assert result.data["versions"] == [3]
