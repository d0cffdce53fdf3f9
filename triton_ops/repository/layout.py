"""Model repository layout checks: what Triton expects on disk next to each config.pbtxt.

    <repository>/<model>/config.pbtxt
    <repository>/<model>/<version>/<model file>      version = 1, 2, ... (no leading zeros)

Hidden entries (names starting with '.') are skipped: Triton never loads them, and triton-ops
keeps sealed-version manifests in `<model>/.triton-ops/`. The folders Triton itself reserves
inside a model (`warmup`, `initial_state`, `configs`) are not versions.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from triton_ops.digits import is_ascii_decimal
from triton_ops.findings import CheckResult, Finding, Severity
from triton_ops.modelconfig.autocomplete import ModelFiles, complete, scan_model_files
from triton_ops.modelconfig.parse import ConfigSourceMap
from triton_ops.modelconfig.proto import ModelConfig
from triton_ops.modelconfig.rules import check_config_text, read_config_text
from triton_ops.modelconfig.rules.ensemble import check_ensemble_against

CONFIG_NAME = "config.pbtxt"
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # fullmatch: `$` passes "m\n"
# Folders Triton skips when it looks for versions (model_repository_manager.cc).
RESERVED_FOLDERS = frozenset({"warmup", "initial_state", "configs"})

# The file (or folder) Triton's backends load from each version folder by default.
DEFAULT_FILE_BY_PLATFORM = {
    "tensorrt_plan": "model.plan",
    "onnxruntime_onnx": "model.onnx",
    "pytorch_libtorch": "model.pt",
    "tensorflow_savedmodel": "model.savedmodel",
    "tensorflow_graphdef": "model.graphdef",
}
DEFAULT_FILE_BY_BACKEND = {
    "python": "model.py",
    "onnxruntime": "model.onnx",
    "tensorrt": "model.plan",
    "pytorch": "model.pt",
    "openvino": "model.xml",
}
# Must be a folder / must be a file; anything else may be either (ONNX can be a folder).
MUST_BE_DIR = frozenset({"model.savedmodel"})
MUST_BE_FILE = frozenset({"model.py", "model.plan", "model.pt", "model.graphdef", "model.xml"})


@dataclass
class ModelDirReport:
    """The outcome of checking one model folder, with its parsed config for cross-checks."""

    path: Path
    result: CheckResult
    config: ModelConfig | None = None
    source: ConfigSourceMap | None = None
    versions: set[int] = field(default_factory=set)


def _finding(path: Path, rule: str, message: str,
             severity: Severity = Severity.ERROR) -> Finding:
    return Finding(str(path), 0, 0, rule, severity, message)


def _entry_problem(path: Path) -> str | None:
    """Why `path` cannot be used (symlink loop, dangling link, unreadable), or None."""
    try:
        if path.is_symlink():
            path.resolve(strict=True)
        path.stat()
    except RuntimeError:
        return "symbolic link loop; point the link at a real file or folder"
    except FileNotFoundError:
        return "dangling symbolic link; its target does not exist"
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    if path.is_dir() and not os.access(path, os.R_OK | os.X_OK):
        return "folder cannot be listed (permissions)"
    if path.is_file() and not os.access(path, os.R_OK):
        return "file cannot be read (permissions)"
    return None


def _list_dir(path: Path, findings: list[Finding]) -> list[Path]:
    try:
        return sorted(path.iterdir())
    except OSError as exc:
        findings.append(_finding(path, "repo-unreadable",
                                 f"cannot list folder: {exc.strerror or exc}"))
        return []


def expected_model_file(config: ModelConfig) -> str | None:
    """The file Triton loads from each version folder, or None when none is needed/known."""
    if config.platform == "ensemble":
        return None
    if config.default_model_filename:
        return config.default_model_filename
    if config.platform in DEFAULT_FILE_BY_PLATFORM:
        return DEFAULT_FILE_BY_PLATFORM[config.platform]
    return DEFAULT_FILE_BY_BACKEND.get(config.backend)


def _check_model_file(version_dir: Path, expected: str, findings: list[Finding]) -> None:
    target = version_dir / expected
    if not target.exists() and not target.is_symlink():
        findings.append(_finding(version_dir, "repo-model-file-missing",
                                 f"version folder has no {expected}; put the model file there "
                                 "(or set default_model_filename in config.pbtxt)"))
        return
    problem = _entry_problem(target)
    if problem:
        findings.append(_finding(target, "repo-unreadable", problem))
    elif expected in MUST_BE_DIR and not target.is_dir():
        findings.append(_finding(target, "repo-model-file-kind",
                                 f"{expected} must be a folder (a TensorFlow SavedModel)"))
    elif expected in MUST_BE_FILE and not target.is_file():
        findings.append(_finding(target, "repo-model-file-kind", f"{expected} must be a file"))


def _check_data_files(model_dir: Path, config: ModelConfig, source: ConfigSourceMap,
                      findings: list[Finding]) -> None:
    """Warmup and initial-state data files live in the model's warmup/ and initial_state/."""
    for i, warmup in enumerate(config.model_warmup):
        for key in sorted(warmup.inputs):
            name = warmup.inputs[key].input_data_file
            if name and not (model_dir / "warmup" / name).is_file():
                findings.append(source.finding(
                    ("model_warmup", i, "inputs", key), "repo-data-file-missing",
                    f"warmup input_data_file '{name}' is not in {model_dir / 'warmup'}"))
    for i, state in enumerate(config.sequence_batching.state):
        for j, init in enumerate(state.initial_state):
            if init.data_file and not (model_dir / "initial_state" / init.data_file).is_file():
                findings.append(source.finding(
                    ("sequence_batching", "state", i, "initial_state", j),
                    "repo-data-file-missing",
                    f"initial_state data_file '{init.data_file}' is not in "
                    f"{model_dir / 'initial_state'}"))


def _scan_model_dir(model_dir: Path) -> ModelDirReport:
    findings: list[Finding] = []
    report = ModelDirReport(model_dir, CheckResult(findings=findings))
    unusable = _unusable_model_dir(model_dir)
    if unusable:
        findings.append(unusable)
        return report
    if not _SAFE_NAME.fullmatch(model_dir.name):
        findings.append(_finding(model_dir, "repo-model-name-chars",
                                 f"model name '{model_dir.name}' has characters other than "
                                 "letters, digits, '_', '-' and '.'; clients must URL-escape "
                                 "it in /v2/models/<name> requests. Rename the folder",
                                 Severity.WARNING))
    files = scan_model_files(model_dir)
    _check_config(report, files)
    version_dirs = _version_dirs(model_dir, findings)
    report.versions = set(version_dirs)
    config, source = report.config, report.source
    if config is None or source is None:
        return report
    if config.name and config.name != model_dir.name:
        findings.append(source.finding(("name",), "repo-config-name-mismatch",
                                       f"config name '{config.name}' differs from its folder "
                                       f"'{model_dir.name}'; Triton refuses to load it. Make "
                                       "them equal"))
    _check_versions(model_dir, config, source, version_dirs, findings)
    _check_model_files(model_dir, config, files, version_dirs, findings)
    _check_data_files(model_dir, config, source, findings)
    return report


def _unusable_model_dir(model_dir: Path) -> Finding | None:
    """Why `model_dir` cannot be checked as a model (unreadable, not a folder), or None."""
    problem = _entry_problem(model_dir)
    if problem:
        return _finding(model_dir, "repo-unreadable", problem)
    if not model_dir.is_dir():
        return _finding(model_dir, "repo-model-not-folder",
                        "a model must be a folder holding config.pbtxt and versions")
    return None


def _check_config(report: ModelDirReport, files: ModelFiles) -> None:
    """Read and check the model's config.pbtxt into `report` (its config and source map
    stay None when it cannot be read)."""
    model_dir, findings = report.path, report.result.findings
    config_path = model_dir / CONFIG_NAME
    if config_path.exists() or config_path.is_symlink():
        text, read_findings = read_config_text(config_path)
        findings.extend(read_findings)
        report.result.files_checked = 1
    else:
        # Triton completes a missing config like an empty one, from the model folder.
        text = ""
        findings.append(_finding(model_dir, "repo-config-missing",
                                 "no config.pbtxt: Triton would have to auto-complete the "
                                 "config from the model file (not every backend can); commit a "
                                 "config.pbtxt so it can be checked", Severity.WARNING))
    if text is not None:
        config, source, config_findings = check_config_text(text, str(config_path), files)
        findings.extend(config_findings)
        report.config, report.source = config, source


def _version_dirs(model_dir: Path, findings: list[Finding]) -> dict[int, Path]:
    """The model's version folders by version; other entries Triton would trip on are
    reported."""
    version_dirs: dict[int, Path] = {}
    for entry in _list_dir(model_dir, findings):
        if entry.name.startswith("."):
            continue  # hidden: ignored by Triton; .triton-ops holds sealed-version manifests
        if entry.name == CONFIG_NAME:
            continue  # already read (and reported) by _check_config
        problem = _entry_problem(entry)
        if problem:
            findings.append(_finding(entry, "repo-unreadable", problem))
            continue
        if not entry.is_dir() or entry.name in RESERVED_FOLDERS:
            continue
        if not is_ascii_decimal(entry.name) or (len(entry.name) > 1 and entry.name.startswith("0")):
            findings.append(_finding(entry, "repo-version-folder-name",
                                     f"'{entry.name}' is not a version folder name (1, 2, 3, "
                                     "...; no leading zeros): Triton ignores it. Rename it, or "
                                     "start its name with '.' to keep it out of the repository"))
            continue
        version_dirs[int(entry.name)] = entry
    return version_dirs


def _check_versions(model_dir: Path, config: ModelConfig, source: ConfigSourceMap,
                    version_dirs: dict[int, Path], findings: list[Finding]) -> None:
    """There is a version to serve, and every version the policy lists has its folder."""
    if not version_dirs:
        findings.append(_finding(model_dir, "repo-no-version",
                                 "no version folder: add one named 1 holding the model file"))
    elif config.version_policy.WhichOneof("policy_choice") == "specific":
        for i, v in enumerate(config.version_policy.specific.versions):
            if v not in version_dirs:
                findings.append(source.finding(
                    ("version_policy", "specific", "versions", i), "repo-version-missing",
                    f"version {v} is listed in version_policy but folder {model_dir / str(v)} "
                    "does not exist"))


def _check_model_files(model_dir: Path, config: ModelConfig, files: ModelFiles,
                       version_dirs: dict[int, Path], findings: list[Finding]) -> None:
    """Each version folder holds the file the (auto-completed) backend loads."""
    completion = complete(config, files)
    expected = expected_model_file(completion.config)
    if completion.undetermined is not None:
        findings.append(_finding(model_dir, "repo-backend-undetermined",
                                 f"{completion.undetermined}; set backend in config.pbtxt"))
    elif expected:
        for version_dir in version_dirs.values():
            _check_model_file(version_dir, expected, findings)


def check_model_dir(model_dir: Path) -> CheckResult:
    """Check one model folder: its config.pbtxt (text and rules) and its layout on disk."""
    return _scan_model_dir(Path(model_dir)).result


def check_repository(repo: Path) -> CheckResult:
    """Check every model folder of a model repository, and ensembles against their members."""
    repo = Path(repo)
    result = CheckResult()
    problem = _entry_problem(repo)
    if problem or not repo.is_dir():
        result.findings.append(_finding(repo, "repo-unreadable",
                                        problem or "not a folder: give the model repository"))
        return result
    reports: dict[str, ModelDirReport] = {}
    for entry in _list_dir(repo, result.findings):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and not entry.is_symlink():
            continue  # Triton only looks at folders
        report = _scan_model_dir(entry)
        result.extend(report.result)
        reports[entry.name] = report
    if not reports and not result.findings:
        result.findings.append(_finding(repo, "repo-empty", "the repository holds no model "
                                        "folder", Severity.WARNING))

    models = {name: r.config for name, r in reports.items()}
    for report in reports.values():
        config, source = report.config, report.source
        if config is None or source is None or not config.HasField("ensemble_scheduling"):
            continue
        for path, message in check_ensemble_against(config, models):
            result.findings.append(source.finding(path, "repo-ensemble-member", message))
        for i, step in enumerate(config.ensemble_scheduling.step):
            member = reports.get(step.model_name)
            if member and step.model_version > 0 and step.model_version not in member.versions:
                result.findings.append(source.finding(
                    ("ensemble_scheduling", "step", i, "model_version"), "repo-ensemble-member",
                    f"step {i} asks for version {step.model_version} of '{step.model_name}', "
                    "which has no such version folder"))
    return result


__all__ = ["ModelDirReport", "check_model_dir", "check_repository", "expected_model_file"]
