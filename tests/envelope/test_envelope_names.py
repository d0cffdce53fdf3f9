"""Names are matched whole: a trailing newline is not a valid part of any name.

Python's `re.match(r"...$")` accepts a string with one trailing newline (`$` also matches
before it), so every pattern that validates a name must use `fullmatch`.
"""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from triton_ops.cli.main import app
from triton_ops.envelope.loader import load_envelope
from triton_ops.envelope.rules import check_envelope
from triton_ops.findings import Severity
from triton_ops.repository.layout import check_model_dir

TRAILING_NEWLINE_NAME = 'name: "dense_mlp\\n"\nbackend: python\n'


def test_model_name_with_trailing_newline_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "dense_mlp.yaml"
    path.write_text(TRAILING_NEWLINE_NAME)
    loaded = load_envelope(path)
    assert loaded.envelope is None
    assert [f.rule for f in loaded.findings] == ["envelope-schema"]
    assert "not a valid model name" in loaded.findings[0].message


def test_generate_creates_no_folder_for_such_a_name(tmp_path: Path) -> None:
    envelopes = tmp_path / "envelopes"
    envelopes.mkdir()
    (envelopes / "dense_mlp.yaml").write_text(TRAILING_NEWLINE_NAME)
    repo = tmp_path / "model_repository"
    result = CliRunner().invoke(app, ["generate", "--envelopes", str(envelopes),
                                      "--repo", str(repo)])
    assert result.exit_code == 1
    assert not repo.exists() or list(repo.iterdir()) == []


def test_image_digest_with_trailing_newline_is_not_pinned(tmp_path: Path) -> None:
    digest = "0" * 64
    path = tmp_path / "m.yaml"
    path.write_text(f'name: m\nbackend: python\nruntime:\n  image: "img@sha256:{digest}\\n"\n')
    loaded = load_envelope(path)
    assert loaded.envelope is not None
    rules = {f.rule for f in check_envelope(loaded) if f.severity is Severity.ERROR}
    assert "envelope-image-unpinned" in rules


def test_model_folder_name_with_trailing_newline_is_flagged(tmp_path: Path) -> None:
    folder = tmp_path / "m\n"
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.py").write_text("")
    (folder / "config.pbtxt").write_text('backend: "python"\n')
    rules = {f.rule for f in check_model_dir(folder).findings}
    assert "repo-model-name-chars" in rules
