"""Commands that rewrite a file the user owns keep its permission bits: a 0644 config.pbtxt,
envelope or values file stays 0644 whatever the umask (a temporary file's 0600 must not
replace it), and a new file gets the mode the umask gives, as an editor would write it.

(`tune --apply` is covered in tests/tune/, the rollout state file in tests/rollout/.)
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from triton_ops.cli.main import app

K8S_DATA = Path(__file__).parent / "k8s" / "data" / "envelopes"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def private_umask() -> Iterator[None]:
    """umask 077: a file created now would be 0600, so only a kept mode can be 0644."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def write_envelope(folder: Path, max_batch_size: int) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / "clf.yaml"
    path.write_text(yaml.safe_dump({"name": "clf", "backend": "python",
                                    "batching": {"max_batch_size": max_batch_size}}))
    return path


def test_generate_keeps_the_mode_of_config_pbtxt(tmp_path: Path, private_umask: None) -> None:
    envelopes, repo = tmp_path / "envelopes", tmp_path / "model_repository"
    write_envelope(envelopes, 4)
    run("generate", "--envelopes", str(envelopes), "--repo", str(repo))
    config = repo / "clf" / "config.pbtxt"
    config.chmod(0o644)
    write_envelope(envelopes, 8)
    assert "written" in run("generate", "--envelopes", str(envelopes), "--repo", str(repo))
    assert "max_batch_size: 8" in config.read_text()
    assert mode(config) == 0o644


def test_generate_creates_configs_with_the_umask_mode(tmp_path: Path) -> None:
    envelopes, repo = tmp_path / "envelopes", tmp_path / "model_repository"
    write_envelope(envelopes, 4)
    old = os.umask(0o022)
    try:
        run("generate", "--envelopes", str(envelopes), "--repo", str(repo))
    finally:
        os.umask(old)
    assert mode(repo / "clf" / "config.pbtxt") == 0o644


def test_import_keeps_the_mode_of_the_envelope(tmp_path: Path, private_umask: None) -> None:
    envelopes, repo = tmp_path / "envelopes", tmp_path / "model_repository"
    envelope = write_envelope(envelopes, 4)
    run("generate", "--envelopes", str(envelopes), "--repo", str(repo))
    envelope.chmod(0o644)
    run("import", str(repo / "clf"), "-o", str(envelope), "--force")
    assert "max_batch_size: 4" in envelope.read_text()
    assert mode(envelope) == 0o644


def test_helm_values_keeps_the_mode_of_its_output(tmp_path: Path, private_umask: None) -> None:
    out = tmp_path / "values.yaml"
    out.write_text("# to be replaced\n")
    out.chmod(0o644)
    run("helm-values", "--envelopes", str(K8S_DATA), "-o", str(out))
    assert "name: affine" in out.read_text()
    assert mode(out) == 0o644
