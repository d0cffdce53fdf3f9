"""The command line's surface stays as it is: the `--help` of every command and the exit codes
of representative failures are compared with the recorded ones in tests/cli/data/.

After an intended change, rewrite the records with
`TRITON_OPS_UPDATE_CLI_SNAPSHOTS=1 .venv/bin/pytest tests/cli` and review the diff.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from triton_ops.cli.main import app

DATA = Path(__file__).parent / "data"
HELP = DATA / "help"
EXIT_CODES = DATA / "exit_codes.json"
REPO_ROOT = Path(__file__).resolve().parents[2]
UPDATE = os.environ.get("TRITON_OPS_UPDATE_CLI_SNAPSHOTS") == "1"
# A fixed terminal width: click wraps help text to it (at most 80 columns).
ENV = {"COLUMNS": "100", "TERM": "dumb", "NO_COLOR": "1"}

runner = CliRunner()


def command_paths(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command and subcommand under `command`, as the words that invoke it."""
    yield path
    for name in sorted(getattr(command, "commands", {}) or {}):
        yield from command_paths(command.commands[name], (*path, name))


PATHS = list(command_paths(typer.main.get_command(app)))


def help_file(path: tuple[str, ...]) -> Path:
    return HELP / f"{'_'.join(('triton-ops', *path))}.txt"


def invoke(args: list[str]) -> Any:
    return runner.invoke(app, args, prog_name="triton-ops", env=ENV)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "triton-ops")
def test_help_is_unchanged(path: tuple[str, ...]) -> None:
    result = invoke([*path, "--help"])
    assert result.exit_code == 0, result.output
    recorded = help_file(path)
    if UPDATE:
        recorded.parent.mkdir(parents=True, exist_ok=True)
        recorded.write_text(result.stdout)
    assert recorded.is_file(), f"no recorded help for `triton-ops {' '.join(path)}`"
    assert result.stdout == recorded.read_text()


def test_every_recorded_help_belongs_to_a_command() -> None:
    assert sorted(HELP.glob("*.txt")) == sorted(help_file(p) for p in PATHS)


MISSING_KUBECONFIG = ["--kubeconfig", "missing-kubeconfig"]
K8S_RELEASE = ["--release", "prod", "--prometheus", "http://127.0.0.1:9"]

# Failures found before anything is started: no Triton, no cluster (the kubeconfig is missing).
FAILURES: dict[str, list[str]] = {
    "validate bad format": ["validate", "--format", "xml"],
    "validate missing path": ["validate", "missing.yaml"],
    "validate invalid envelope": ["validate", "invalid/dense_mlp.yaml"],
    "generate missing envelopes": ["generate", "--envelopes", "missing"],
    "import missing model": ["import", "missing"],
    "import onto an existing envelope": ["import", "model_repository/dense_mlp", "-o",
                                         "envelopes/dense_mlp.yaml"],
    "serve missing repository": ["serve", "--repo", "missing"],
    "serve unknown model": ["serve", "--models", "nope"],
    "probe bad version": ["probe", "dense_mlp", "--version", "x"],
    "probe missing envelope": ["probe", "nope"],
    "probe invalid envelope": ["probe", "dense_mlp", "--envelopes", "invalid"],
    "tune bad format": ["tune", "dense_mlp", "--format", "xml"],
    "tune short budget": ["tune", "dense_mlp", "--budget", "10s"],
    "tune missing envelope": ["tune", "nope"],
    "publish unknown model": ["publish", "nope", "1"],
    "publish missing version": ["publish", "dense_mlp", "9"],
    "rollout bad steps": ["rollout", "dense_mlp", "--canary", "2", "--steps", "50,x"],
    "rollout bad interval": ["rollout", "dense_mlp", "--canary", "2", "--interval", "soon"],
    "rollout zero timeout": ["rollout", "dense_mlp", "--canary", "2", "--timeout", "0s"],
    "rollout bad format": ["rollout", "dense_mlp", "--canary", "2", "--format", "xml"],
    "rollout missing envelope": ["rollout", "dense_mlp", "--canary", "2", "--envelopes",
                                 "missing"],
    "rollout invalid envelope": ["rollout", "dense_mlp", "--canary", "2", "--envelope",
                                 "invalid/dense_mlp.yaml"],
    "rollout unknown model": ["rollout", "nope", "--canary", "2"],
    "rollout without canary": ["rollout", "start", "dense_mlp"],
    "rollout unknown target": ["rollout", "dense_mlp", "--canary", "2", "--target", "nomad"],
    "rollout k8s option on single": ["rollout", "dense_mlp", "--canary", "2", "--release",
                                     "prod"],
    "rollout k8s without release": ["rollout", "dense_mlp", "--canary", "2", "--target", "k8s"],
    "rollout k8s single option": ["rollout", "dense_mlp", "--canary", "2", "--target", "k8s",
                                  "--url", "127.0.0.1:1", *K8S_RELEASE, *MISSING_KUBECONFIG],
    "rollout k8s no cluster": ["rollout", "start", "dense_mlp", "--canary", "2", "--target=k8s",
                               *K8S_RELEASE, *MISSING_KUBECONFIG],
    "rollout status none": ["rollout", "status", "dense_mlp"],
    "rollout status unknown model": ["rollout", "status", "nope"],
    "rollout status k8s no cluster": ["rollout", "status", "dense_mlp", "--target", "k8s",
                                      *MISSING_KUBECONFIG],
    "rollout resume unknown model": ["rollout", "resume", "nope"],
    "rollout resume k8s no cluster": ["rollout", "resume", "dense_mlp", "--target", "k8s",
                                      *MISSING_KUBECONFIG],
    "rollout abort none": ["rollout", "abort", "dense_mlp"],
    "rollout abort k8s no cluster": ["rollout", "abort", "dense_mlp", "--target", "k8s",
                                     *MISSING_KUBECONFIG],
    "rollout promote none": ["rollout", "promote", "dense_mlp"],
    "rollback unknown model": ["rollback", "nope"],
    "helm-values invalid envelope": ["helm-values", "--envelopes", "invalid"],
    "k8s rollout without release": ["k8s", "rollout", "dense_mlp", "--canary", "2"],
    "k8s rollout missing envelope": ["k8s", "rollout", "dense_mlp", "--canary", "2",
                                     *K8S_RELEASE, "--envelopes", "missing"],
    "k8s rollout bad ready timeout": ["k8s", "rollout", "dense_mlp", "--canary", "2",
                                      *K8S_RELEASE, "--ready-timeout", "soon"],
    "k8s rollout no cluster": ["k8s", "rollout", "dense_mlp", "--canary", "2", *K8S_RELEASE,
                               *MISSING_KUBECONFIG],
    "k8s status no cluster": ["k8s", "status", "dense_mlp", *MISSING_KUBECONFIG],
    "k8s resume no cluster": ["k8s", "resume", "dense_mlp", *MISSING_KUBECONFIG],
    "k8s abort no cluster": ["k8s", "abort", "dense_mlp", *MISSING_KUBECONFIG],
    "k8s promote no cluster": ["k8s", "promote", "dense_mlp", *MISSING_KUBECONFIG],
    "k8s rollback no cluster": ["k8s", "rollback", "dense_mlp", *MISSING_KUBECONFIG],
}


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkout-like folder: envelopes/, model_repository/ with dense_mlp (version 1 only),
    and invalid/dense_mlp.yaml, an envelope with a schema error."""
    (tmp_path / "envelopes").mkdir()
    shutil.copy(REPO_ROOT / "envelopes" / "dense_mlp.yaml", tmp_path / "envelopes")
    shutil.copytree(REPO_ROOT / "model_repository" / "dense_mlp",
                    tmp_path / "model_repository" / "dense_mlp",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (tmp_path / "invalid").mkdir()
    (tmp_path / "invalid" / "dense_mlp.yaml").write_text(
        "name: dense_mlp\nbackend: python\nbatching: {max_batch_size: lots}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def recorded_exit_codes() -> Iterator[dict[str, int]]:
    codes: dict[str, int] = json.loads(EXIT_CODES.read_text()) if EXIT_CODES.is_file() else {}
    yield codes
    if UPDATE:
        EXIT_CODES.write_text(json.dumps(dict(sorted(codes.items())), indent=2) + "\n")


@pytest.mark.parametrize("case", FAILURES)
def test_exit_code_is_unchanged(case: str, project: Path,
                                recorded_exit_codes: dict[str, int]) -> None:
    result = invoke(FAILURES[case])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    if UPDATE:
        recorded_exit_codes[case] = result.exit_code
    assert case in recorded_exit_codes, f"no recorded exit code for {case!r}"
    assert result.exit_code == recorded_exit_codes[case], result.output


def test_every_recorded_exit_code_has_a_case() -> None:
    assert sorted(json.loads(EXIT_CODES.read_text())) == sorted(FAILURES)
