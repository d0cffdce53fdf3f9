"""Sealed (published) model versions: a sha256 manifest per version, never rewritten.

`triton-ops publish MODEL N` records every file under <model>/N/ with its size and sha256,
plus the config.pbtxt and envelope it was published with, in
`<model>/.triton-ops/seals/N.json`. Triton ignores that folder (it is not a number), and the
repository checks accept dot-folders. Publishing N again with the same content is a no-op;
with other content it is refused. `validate` reports any change to a sealed version as an
error (`verify_sealed_versions`), and a rollout re-verifies a version right before loading it.

Python caches (`__pycache__`, `*.pyc`) are not part of a version: Triton's Python backend
writes them next to model.py when it loads the model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from triton_ops.fileio import write_error
from triton_ops.findings import Finding, Severity

SEAL_FOLDER = ".triton-ops"
SEAL_SCHEMA = "triton-ops/seal-v1"
_IGNORED_DIRS = {"__pycache__", ".ipynb_checkpoints"}
_IGNORED_SUFFIXES = (".pyc", ".pyo")
_CHUNK = 1024 * 1024


class SealError(Exception):
    """Publishing is refused or a seal cannot be read; the message says what to do."""


@dataclass(frozen=True)
class PublishResult:
    model: str
    version: int
    manifest_path: Path
    files: int
    created: bool  # False when the version was already sealed with the same content


def seals_dir(model_dir: Path) -> Path:
    return Path(model_dir) / SEAL_FOLDER / "seals"


def manifest_path(model_dir: Path, version: int) -> Path:
    return seals_dir(model_dir) / f"{version}.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def hash_version(version_dir: Path) -> dict[str, dict[str, Any]]:
    """{relative posix path: {"sha256", "size"}} of every file of a version folder.

    Symbolic links are followed (the content is what Triton loads); caches are skipped.
    """
    files: dict[str, dict[str, Any]] = {}
    for root, dirs, names in os.walk(version_dir, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d not in _IGNORED_DIRS)
        for name in sorted(names):
            if name.endswith(_IGNORED_SUFFIXES):
                continue
            path = Path(root) / name
            rel = path.relative_to(version_dir).as_posix()
            try:
                files[rel] = {"sha256": _sha256(path), "size": path.stat().st_size}
            except OSError as exc:
                raise SealError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return files


def _read_optional(path: Path | None) -> str | None:
    if path is None or not path.is_file():
        return None
    return path.read_text(encoding="utf-8", errors="replace")


def _write_once(path: Path, text: str) -> None:
    """Create `path` atomically; never replace an existing seal. WriteError (naming `path`)
    when it cannot be written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, path)  # fails if a seal appeared meanwhile: sealing is first-wins
    except FileExistsError as exc:
        if path.exists() or path.is_symlink():
            raise SealError(f"{path} already exists (published concurrently?)") from None
        raise write_error(path, exc) from None  # a file where the seals folder goes
    except OSError as exc:
        raise write_error(path, exc) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def load_manifest(model_dir: Path, version: int) -> dict[str, Any] | None:
    """The seal of `version`, None when it was never published; SealError when unreadable."""
    path = manifest_path(model_dir, version)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):  # no seals folder: nothing was sealed
        return None
    except RecursionError:
        raise SealError(f"{path}: unreadable seal (nested too deeply); restore it from "
                        "version control (seals are never edited by hand)") from None
    except (OSError, ValueError) as exc:
        raise SealError(f"{path}: unreadable seal ({exc}); restore it from version control "
                        "(seals are never edited by hand)") from None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(data, dict) or data.get("schema") != SEAL_SCHEMA or not isinstance(
            files, dict) or not all(isinstance(entry, dict) and isinstance(
                entry.get("sha256"), str) for entry in files.values()):
        raise SealError(f"{path}: not a {SEAL_SCHEMA} seal (each entry of `files` is an "
                        "object with the file's sha256); restore it from version control")
    return data


def sealed_versions(model_dir: Path) -> list[int]:
    folder = seals_dir(model_dir)
    if not folder.is_dir():
        return []
    return sorted(int(p.stem) for p in folder.glob("*.json") if p.stem.isdigit())


def publish(model_dir: Path, version: int, envelope_path: Path | None = None) -> PublishResult:
    """Seal <model_dir>/<version>/. Idempotent for identical content, refused otherwise."""
    model_dir = Path(model_dir)
    version_dir = model_dir / str(version)
    if version < 1:
        raise SealError("version numbers start at 1")
    if not version_dir.is_dir():
        raise SealError(f"{version_dir} does not exist: put the model files of version "
                        f"{version} there first")
    files = hash_version(version_dir)
    if not files:
        raise SealError(f"{version_dir} is empty: nothing to publish")
    existing = load_manifest(model_dir, version)
    path = manifest_path(model_dir, version)
    if existing is not None:
        if existing["files"] == files:
            return PublishResult(model_dir.name, version, path, len(files), created=False)
        changed = describe_changes(existing["files"], files)
        raise SealError(
            f"version {version} of {model_dir.name} is already published with other content "
            f"({'; '.join(changed[:5])}): sealed versions are immutable. Restore the sealed "
            f"files, or publish the new content as a new version (e.g. "
            f"{max(sealed_versions(model_dir)) + 1})"
        )
    config = _read_optional(model_dir / "config.pbtxt")
    envelope = _read_optional(envelope_path)
    manifest = {
        "schema": SEAL_SCHEMA,
        "model": model_dir.name,
        "version": version,
        "sealed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": files,
        "config": config,
        "config_sha256": hashlib.sha256(config.encode()).hexdigest() if config else None,
        "envelope": envelope,
        "envelope_path": str(envelope_path) if envelope is not None else None,
    }
    _write_once(path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return PublishResult(model_dir.name, version, path, len(files), created=True)


def describe_changes(sealed: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human lines for each file added, removed or modified since sealing."""
    lines = []
    for rel in sorted(set(sealed) | set(current)):
        if rel not in current:
            lines.append(f"{rel} was removed")
        elif rel not in sealed:
            lines.append(f"{rel} was added")
        elif sealed[rel].get("sha256") != current[rel].get("sha256"):
            lines.append(f"{rel} was modified (sha256 differs from the seal)")
    return lines


def verify_version(model_dir: Path, version: int) -> list[str]:
    """Why `version` must not be loaded: not sealed, unreadable seal, or changed files.
    Empty when it is sealed and every file matches its checksum."""
    model_dir = Path(model_dir)
    try:
        manifest = load_manifest(model_dir, version)
    except SealError as exc:
        return [str(exc)]
    if manifest is None:
        return [f"version {version} of {model_dir.name} is not sealed: run "
                f"`triton-ops publish {model_dir.name} {version}` first"]
    version_dir = model_dir / str(version)
    if not version_dir.is_dir():
        return [f"{version_dir} is missing although version {version} was sealed"]
    try:
        current = hash_version(version_dir)
    except SealError as exc:
        return [str(exc)]
    return [f"{version_dir.name}/{line}" for line in describe_changes(manifest["files"],
                                                                       current)]


def verify_sealed_versions(model_dir: Path) -> list[Finding]:
    """Findings for `validate`: an ERROR for every change to a sealed version of this model
    (rule `sealed-version-modified`), for an unreadable seal (`sealed-version-unreadable`),
    and a WARNING when config.pbtxt differs from the one a version was sealed with
    (`sealed-config-changed`)."""
    model_dir = Path(model_dir)
    findings: list[Finding] = []
    for version in sealed_versions(model_dir):
        seal = manifest_path(model_dir, version)
        try:
            manifest = load_manifest(model_dir, version)
        except SealError as exc:
            findings.append(Finding(str(seal), 0, 0, "sealed-version-unreadable",
                                    Severity.ERROR, str(exc)))
            continue
        if manifest is None:
            continue
        version_dir = model_dir / str(version)
        if not version_dir.is_dir():
            findings.append(Finding(str(version_dir), 0, 0, "sealed-version-modified",
                                    Severity.ERROR, f"version {version} was sealed but its "
                                    "folder is missing; restore it"))
            continue
        try:
            current = hash_version(version_dir)
        except SealError as exc:
            findings.append(Finding(str(version_dir), 0, 0, "sealed-version-modified",
                                    Severity.ERROR, str(exc)))
            continue
        sealed_files = manifest["files"]
        for rel in sorted(set(sealed_files) | set(current)):
            if rel in sealed_files and rel in current and (
                    sealed_files[rel].get("sha256") == current[rel].get("sha256")):
                continue
            what = ("removed" if rel not in current else "added" if rel not in sealed_files
                    else "modified")
            findings.append(Finding(
                str(version_dir / rel), 0, 0, "sealed-version-modified", Severity.ERROR,
                f"{rel} was {what} after version {version} of {model_dir.name} was sealed "
                f"({seal.name}); sealed versions are immutable: restore the file, or publish "
                "the change as a new version"))
        config = _read_optional(model_dir / "config.pbtxt")
        sealed_sha = manifest.get("config_sha256")
        if config is not None and sealed_sha and (
                hashlib.sha256(config.encode()).hexdigest() != sealed_sha):
            findings.append(Finding(
                str(model_dir / "config.pbtxt"), 1, 1, "sealed-config-changed",
                Severity.WARNING, f"config.pbtxt differs from the one version {version} was "
                "sealed with; a rollout serves versions with the current config"))
    return findings
