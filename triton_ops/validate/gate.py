"""What `triton-ops validate` checks for each path it is given.

A path may be an envelope file, a folder of envelopes, a model repository, a model folder or
a single config.pbtxt (then only its text is checked). Envelopes are compared with their model
folder in the model repository: the one given with `repo`, else a model repository among the
paths, else `model_repository/` next to the envelopes folder, else `model_repository/` in the
working folder; when none exists those folder rules are skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from triton_ops.findings import CheckResult, Finding, Severity

DEFAULT_PATHS = ("envelopes", "model_repository")
ENVELOPE_SUFFIXES = (".yaml", ".yml")


@dataclass
class GateResult(CheckResult):
    """A CheckResult that also names the files checked (one JUnit testcase each)."""

    files: list[str] = field(default_factory=list)


class UsageProblem(Exception):
    """The command was asked something it cannot do (e.g. a path that does not exist)."""


class PathKind(str, Enum):
    ENVELOPE = "envelope"
    ENVELOPE_DIR = "envelope folder"
    REPOSITORY = "model repository"
    MODEL_DIR = "model folder"
    CONFIG = "config.pbtxt"
    EMPTY_DIR = "empty folder"


def _listdir(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as entries:
            return sorted(entries, key=lambda e: e.name)
    except OSError:
        return []


def classify_path(path: Path) -> PathKind:
    """What kind of input `path` is. Raises UsageProblem when it is none."""
    if not os.path.lexists(path):
        raise UsageProblem(f"{path} does not exist")
    if path.is_dir():
        entries = _listdir(path)
        names = {e.name for e in entries}
        if "config.pbtxt" in names:
            return PathKind.MODEL_DIR
        if any(e.name.endswith(ENVELOPE_SUFFIXES) for e in entries):
            return PathKind.ENVELOPE_DIR
        for entry in entries:
            if entry.is_dir() and os.path.lexists(os.path.join(entry.path, "config.pbtxt")):
                return PathKind.REPOSITORY
        # A folder of model folders still being set up is a repository; otherwise empty.
        if any(e.is_dir() for e in entries):
            return PathKind.REPOSITORY
        return PathKind.EMPTY_DIR
    if path.name.endswith(".pbtxt"):
        return PathKind.CONFIG
    if path.name.endswith(ENVELOPE_SUFFIXES) or path.is_symlink():
        return PathKind.ENVELOPE
    raise UsageProblem(f"{path} is neither an envelope (.yaml), a config.pbtxt nor a folder "
                       "of them")


def _find_repo(kinds: list[tuple[Path, PathKind]], repo: Path | None) -> Path | None:
    if repo is not None:
        return repo
    for path, kind in kinds:
        if kind is PathKind.REPOSITORY:
            return path
    return None


def _repo_for(envelope_dir: Path, repo: Path | None) -> Path | None:
    if repo is not None:
        return repo
    for candidate in (envelope_dir.parent / DEFAULT_PATHS[1], Path(DEFAULT_PATHS[1])):
        if candidate.is_dir():
            return candidate
    return None


def _envelope_files(folder: Path) -> list[Path]:
    return [folder / e.name for e in _listdir(folder)
            if e.name.endswith(ENVELOPE_SUFFIXES) and not e.name.startswith(".")]


def _sealed(model_dir: Path) -> list[Finding]:
    """Changes to published (sealed) versions of a model: they must never change."""
    from triton_ops.repository.seal import verify_sealed_versions

    return verify_sealed_versions(model_dir)


def validate_paths(paths: list[Path | str] | None = None, repo: Path | str | None = None
                   ) -> CheckResult:
    """Run every check that applies to `paths` (default: envelopes/ and model_repository/).

    Raises UsageProblem when a path does not exist, or when no path was given and neither
    default folder exists.
    """
    from triton_ops.envelope.rules import check_envelope_file

    repo_path = Path(repo) if repo is not None else None
    if repo_path is not None and not repo_path.is_dir():
        raise UsageProblem(f"model repository {repo_path} is not a folder")
    if not paths:
        paths = [p for p in DEFAULT_PATHS if Path(p).exists()]
        if not paths:
            raise UsageProblem("nothing to validate: no envelopes/ or model_repository/ here; "
                               "give the paths to check")
    kinds = [(Path(p), classify_path(Path(p))) for p in paths]
    repo_path = _find_repo(kinds, repo_path)
    result = GateResult()
    for path, kind in kinds:
        if kind is PathKind.ENVELOPE:
            result.extend(check_envelope_file(path, _repo_for(path.parent, repo_path)))
            result.files.append(str(path))
        elif kind is PathKind.ENVELOPE_DIR:
            envelope_repo = _repo_for(path, repo_path)
            for file in _envelope_files(path):
                result.extend(check_envelope_file(file, envelope_repo))
                result.files.append(str(file))
        elif kind is PathKind.REPOSITORY:
            from triton_ops.repository.layout import check_repository

            result.extend(check_repository(path))
            for entry in _listdir(path):
                if entry.is_dir() and not entry.name.startswith("."):
                    result.findings.extend(_sealed(Path(entry.path)))
            result.files.extend(str(path / e.name / "config.pbtxt") for e in _listdir(path)
                                if os.path.lexists(os.path.join(e.path, "config.pbtxt")))
        elif kind is PathKind.MODEL_DIR:
            from triton_ops.repository.layout import check_model_dir

            result.extend(check_model_dir(path))
            result.findings.extend(_sealed(path))
            result.files.append(str(path / "config.pbtxt"))
        elif kind is PathKind.CONFIG:
            from triton_ops.modelconfig.rules import check_config_file

            result.extend(check_config_file(path))
            result.files.append(str(path))
        else:
            result.findings.append(Finding(str(path), 0, 0, "validate-empty", Severity.WARNING,
                                           "folder holds no envelopes, config.pbtxt or model "
                                           "folders; nothing was checked"))
    result.findings = result.sorted()
    return result
