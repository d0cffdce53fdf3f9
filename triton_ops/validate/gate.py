"""What `triton-ops validate` checks for each path it is given.

A path may be an envelope file, a folder of envelopes, a model repository, a model folder or
a single config.pbtxt (then only its text is checked). Envelopes are compared with their model
folder in the model repository: the one given with `repo`, else a model repository among the
paths, else `model_repository/` next to the envelopes folder, else `model_repository/` in the
working folder; when none exists those folder rules are skipped.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from triton_ops.digits import is_ascii_decimal, is_version_folder_name
from triton_ops.findings import CheckResult, Finding, Severity

if TYPE_CHECKING:
    from triton_ops.envelope.names import NameClaim

DEFAULT_PATHS = ("envelopes", "model_repository")
_RESERVED_FOLDERS = frozenset({"warmup", "initial_state", "configs"})
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
        if "config.pbtxt" in names or _is_model_without_config(entries):
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


def _is_folder(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a symlink loop, an unreadable target: not a folder to look into
        return False


def _is_model_without_config(entries: list[os.DirEntry[str]]) -> bool:
    """A model folder whose config Triton completes at load: no config.pbtxt, and its
    folders are versions (1, 2, ...) or Triton's reserved ones, at least one a version."""
    folders = [e.name for e in entries if _is_folder(e) and not e.name.startswith(".")]
    versions = [name for name in folders if is_version_folder_name(name)]
    return bool(versions) and all(name in versions or name in _RESERVED_FOLDERS
                                  for name in folders)


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


# Jobs: (function, args, weight). Each function returns a CheckResult; the weight (files it
# reads) decides whether running jobs in forked worker processes pays for itself.
Job = tuple[Callable[..., CheckResult], tuple[Any, ...], int]
CHUNK = 100  # envelopes per job
PARALLEL_MIN_WEIGHT = 200
JOBS_ENV = "TRITON_OPS_JOBS"


@dataclass
class EnvelopeResult(CheckResult):
    """Findings of a batch of envelopes, and the model name each valid one claims."""

    claims: list[NameClaim] = field(default_factory=list)


def _check_envelopes(files: list[Path], repo: Path | None) -> EnvelopeResult:
    from triton_ops.envelope.loader import load_envelope
    from triton_ops.envelope.names import NameClaim
    from triton_ops.envelope.rules import check_envelope
    from triton_ops.validate.envelope_config import RULES

    result = EnvelopeResult()
    for file in files:
        loaded = load_envelope(file)
        result.extend(CheckResult(check_envelope(loaded, repo, RULES), files_checked=1))
        if loaded.envelope is not None:
            repo_name = str(repo) if repo is not None else None
            result.claims.append(NameClaim(loaded.envelope.name, str(file), repo_name))
    return result


def _check_repository(path: Path) -> CheckResult:
    from triton_ops.repository.layout import check_repository

    result = check_repository(path)
    for entry in _listdir(path):
        if entry.is_dir() and not entry.name.startswith("."):
            result.findings.extend(_sealed(Path(entry.path)))
    return result


def _check_model_dir(path: Path) -> CheckResult:
    from triton_ops.repository.layout import check_model_dir

    result = check_model_dir(path)
    result.findings.extend(_sealed(path))
    return result


def _check_config(path: Path) -> CheckResult:
    from triton_ops.modelconfig.rules import check_config_file

    return check_config_file(path)


def _worker_count() -> int:
    configured = os.environ.get(JOBS_ENV, "")
    if is_ascii_decimal(configured) and int(configured) > 0:
        return int(configured)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _run_jobs(jobs: list[Job]) -> list[CheckResult]:
    """Run the jobs, in forked worker processes when there is enough work and cores.

    Parsing YAML and text-format protobuf is CPU-bound pure Python, so threads would not help;
    forked workers inherit the already imported modules and start in milliseconds. Set
    TRITON_OPS_JOBS=1 to run everything in this process.
    """
    import multiprocessing
    import threading

    workers = min(_worker_count(), len(jobs), 8)
    weight = sum(job[2] for job in jobs)
    # Forking a process that runs other threads can deadlock the child (a lock held by a
    # thread that does not exist there): only the single-threaded CLI case forks.
    if (workers < 2 or weight < PARALLEL_MIN_WEIGHT or threading.active_count() > 1
            or "fork" not in multiprocessing.get_all_start_methods()):
        return [fn(*args) for fn, args, _ in jobs]
    from concurrent.futures import ProcessPoolExecutor

    # Heaviest first, so that a long job (a whole repository) starts right away.
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i][2])
    results: list[CheckResult | None] = [None] * len(jobs)
    with ProcessPoolExecutor(max_workers=workers,
                             mp_context=multiprocessing.get_context("fork")) as pool:
        futures = {i: pool.submit(jobs[i][0], *jobs[i][1]) for i in order}
        for i, future in futures.items():
            results[i] = future.result()
    return [r for r in results if r is not None]


def validate_paths(paths: list[Path | str] | None = None, repo: Path | str | None = None
                   ) -> GateResult:
    """Run every check that applies to `paths` (default: envelopes/ and model_repository/).

    Raises UsageProblem when a path does not exist, or when no path was given and neither
    default folder exists.
    """
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
    jobs: list[Job] = []
    for path, kind in kinds:
        if kind is PathKind.ENVELOPE:
            jobs.append((_check_envelopes, ([path], _repo_for(path.parent, repo_path)), 1))
            result.files.append(str(path))
        elif kind is PathKind.ENVELOPE_DIR:
            envelope_repo = _repo_for(path, repo_path)
            files = _envelope_files(path)
            for start in range(0, len(files), CHUNK):
                chunk = files[start:start + CHUNK]
                jobs.append((_check_envelopes, (chunk, envelope_repo), len(chunk)))
            result.files.extend(str(f) for f in files)
        elif kind is PathKind.REPOSITORY:
            configs = [str(path / e.name / "config.pbtxt") for e in _listdir(path)
                       if os.path.lexists(os.path.join(e.path, "config.pbtxt"))]
            jobs.append((_check_repository, (path,), len(configs)))
            result.files.extend(configs)
        elif kind is PathKind.MODEL_DIR:
            jobs.append((_check_model_dir, (path,), 1))
            result.files.append(str(path / "config.pbtxt"))
        elif kind is PathKind.CONFIG:
            jobs.append((_check_config, (path,), 1))
            result.files.append(str(path))
        else:
            result.findings.append(Finding(str(path), 0, 0, "validate-empty", Severity.WARNING,
                                           "folder holds no envelopes, config.pbtxt or model "
                                           "folders; nothing was checked"))
    claims: list[NameClaim] = []
    for job_result in _run_jobs(jobs):
        result.extend(job_result)
        claims.extend(getattr(job_result, "claims", []))
    if claims:
        from triton_ops.envelope.names import duplicate_name_findings

        result.findings.extend(duplicate_name_findings(claims))
    result.findings.extend(_orphan_configs(kinds))
    result.findings = result.sorted()
    return result


ORPHAN_RULE = "envelope-orphan-config"


def _orphan_configs(kinds: list[tuple[Path, PathKind]]) -> list[Finding]:
    """Generated config.pbtxt files whose envelope is gone (checked when both are validated).

    Without its envelope nothing keeps such a config in line with the others: `generate`
    skips it and drift goes unnoticed.
    """
    from triton_ops.modelconfig.render import GENERATED_MARK

    envelope_dirs = [p for p, k in kinds if k is PathKind.ENVELOPE_DIR]
    repos = [p for p, k in kinds if k is PathKind.REPOSITORY]
    if not envelope_dirs or not repos:
        return []
    names = {f.name.rsplit(".", 1)[0] for d in envelope_dirs for f in _envelope_files(d)}
    findings = []
    for repo in repos:
        for entry in _listdir(repo):
            config = Path(entry.path) / "config.pbtxt"
            if entry.name in names or entry.name.startswith(".") or not config.is_file():
                continue
            try:
                with config.open("rb") as handle:
                    head = handle.read(200).decode("utf-8", "replace")
            except OSError:
                continue
            if head.startswith(GENERATED_MARK):
                source = head[len(GENERATED_MARK):].split(". ", 1)[0]
                findings.append(Finding(
                    str(config), 1, 1, ORPHAN_RULE, Severity.ERROR,
                    f"generated from {source}, which is not among the envelopes; restore the "
                    f"envelope, adopt the config with `triton-ops import {repo / entry.name}`, "
                    "or delete the model folder"))
    return findings
