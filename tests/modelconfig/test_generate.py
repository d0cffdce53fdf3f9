"""`triton-ops generate` on hostile and conflicting envelopes: refused with a message, nothing
the user owns overwritten."""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile import alias_bomb_envelope, alias_bomb_in_probe
from typer.testing import CliRunner

from triton_ops.cli.main import app


def generate(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["generate", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        result.exception
    return result.exit_code, result.output


@pytest.mark.timeout(120)  # a hang guard: unrefused, the bomb takes minutes and gigabytes
@pytest.mark.parametrize("check", [False, True])
def test_alias_bomb_is_refused(tmp_path: Path, check: bool) -> None:
    envelopes = tmp_path / "envelopes"
    envelopes.mkdir()
    (envelopes / "bomb.yaml").write_text(alias_bomb_envelope())
    (envelopes / "probe_bomb.yaml").write_text(alias_bomb_in_probe("probe_bomb"))
    repo = tmp_path / "model_repository"
    code, output = generate("--envelopes", str(envelopes), "--repo", str(repo),
                            *(["--check"] if check else []))
    assert code == 1
    assert "bomb.yaml:7:20: aliases repeat more than 10,000 nodes" in output
    assert "probe_bomb.yaml:13:19: aliases repeat" in output
    assert not repo.exists()


# --- two envelopes naming one model ---------------------------------------------------------

def write_envelopes(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, model in files.items():
        (folder / name).write_text(f"name: {model}\nbackend: python\n"
                                   f"batching: {{max_batch_size: {len(name)}}}\n")
    return folder


def test_duplicate_model_name_is_refused_and_nothing_overwritten(tmp_path: Path) -> None:
    envelopes = write_envelopes(tmp_path / "envelopes", {"clf.yaml": "clf", "tiny.yaml": "tiny"})
    repo = tmp_path / "model_repository"
    assert generate("--envelopes", str(envelopes), "--repo", str(repo))[0] == 0
    config = repo / "clf" / "config.pbtxt"
    before = config.read_text()
    write_envelopes(envelopes, {"clf.yml": "clf", "other.yaml": "clf", "new.yaml": "new"})
    for check in (False, True):
        code, output = generate("--envelopes", str(envelopes), "--repo", str(repo),
                                *(["--check"] if check else []))
        assert code == 1
        for name in ("clf.yaml", "clf.yml", "other.yaml"):
            # each file is named, with the line of its `name`, and the others it clashes with
            assert f"{envelopes / name}:1:1: model name 'clf' is also the name in " in output
        assert f"{envelopes / 'clf.yml'}, {envelopes / 'other.yaml'}" in output
        assert "tiny.yaml" not in output
        assert config.read_text() == before
    assert (repo / "new" / "config.pbtxt").exists()  # other envelopes are still rendered
