"""Sealed (published) model versions: a sha256 manifest per version, never rewritten.

`triton-ops publish MODEL N` records every file under <model>/N/ with its size and sha256,
plus the config.pbtxt and envelope it was published with, in
`<model>/.triton-ops/seals/N.json`. Triton ignores that folder (it is not a number), and the
repository checks accept dot-folders. Publishing N again with the same content is a no-op;
with other content it is refused. `validate` reports any change to a sealed version as an
error (`verify_sealed_versions`), and a rollout re-verifies a version right before loading it.

What a seal covers is everything Triton or Python could load for the version:
- every file of the version folder. Only regular files are read, never followed out of the
  folder: a FIFO, a device, a socket, a link to a folder or to outside the version, or a
  dangling link cannot be sealed (reading /dev/zero or opening a FIFO never returns);
- Python bytecode caches (`__pycache__/*.pyc`) are not sealed but checked: Python runs a
  cache instead of its source (an "unchecked-hash" cache without even looking at the
  source), and the Python backend writes one at the first load. A cache passes only when
  its code is exactly the compiled source next to it; anything else is reported;
- Python modules directly in the model folder are refused: the Python backend puts that
  folder on sys.path, so model.py would import them although no seal covers them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib.machinery
import importlib.util
import json
import marshal
import os
import re
import stat
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import CodeType
from typing import Any

from triton_ops.digits import is_ascii_decimal
from triton_ops.fileio import write_error
from triton_ops.findings import Finding, Severity

SEAL_FOLDER = ".triton-ops"
SEAL_SCHEMA = "triton-ops/seal-v1"
_CHUNK = 1024 * 1024
# Bytecode caches are read whole to be checked; no cache of a model file comes near this.
MAX_BYTECODE_BYTES = 64 * 1024 * 1024
_CACHE_NAME = re.compile(r"(?P<stem>[^.]+)\.(?P<tag>[^.]+)(?:\.opt-(?P<opt>[12]))?\.pyc")

FILE_KIND_RULE = "sealed-version-file-kind"
BYTECODE_RULE = "sealed-version-bytecode"
IMPORTABLE_RULE = "sealed-model-importable"


class SealError(Exception):
    """Publishing is refused or a seal cannot be read; the message says what to do."""


@dataclass(frozen=True)
class PublishResult:
    model: str
    version: int
    manifest_path: Path
    files: int
    created: bool  # False when the version was already sealed with the same content


@dataclass(frozen=True)
class Unsealable:
    """An entry a seal cannot vouch for: `where` is relative to the model folder."""

    path: Path
    where: str
    rule: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class VersionContents:
    """What a seal records of a version folder (`files`), and what it cannot cover."""

    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    unsealable: list[Unsealable] = field(default_factory=list)


def seals_dir(model_dir: Path) -> Path:
    return Path(model_dir) / SEAL_FOLDER / "seals"


def manifest_path(model_dir: Path, version: int) -> Path:
    return seals_dir(model_dir) / f"{version}.json"


class _NotReadable(Exception):
    """Why an entry cannot be read as a regular file of the version."""


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _regular_file(path: Path, version_real: Path) -> Path:
    """The regular file `path` is, or a link inside the version folder leads to.

    Decided from lstat/stat before anything is opened: opening a FIFO blocks.
    """
    try:
        mode = os.lstat(path).st_mode
        if not stat.S_ISLNK(mode):
            if stat.S_ISREG(mode):
                return path
            raise _NotReadable(f"{_kind(mode)}: only regular files can be part of a version")
        try:
            target = Path(os.path.realpath(path, strict=True))
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _NotReadable("a symbolic link loop") from None
            raise _NotReadable(f"a symbolic link to {os.readlink(path)}, which does not "
                               "exist") from None
        mode = os.stat(target).st_mode
    except OSError as exc:
        raise _NotReadable(f"cannot be read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise _NotReadable(f"a symbolic link to {_kind(mode)} ({target}): only regular "
                           "files can be part of a version")
    if version_real not in target.parents:
        raise _NotReadable(f"a symbolic link to {target}, outside the version folder: "
                           "copy the file into the version instead")
    return target


def _open_regular(path: Path) -> Any:
    # O_NONBLOCK: should `path` have been swapped for a FIFO since the check, open returns.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _NotReadable("changed into something other than a regular file while read")
    return os.fdopen(fd, "rb")


def _digest(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    size = 0
    try:
        with _open_regular(path) as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise _NotReadable(f"cannot be read: {exc.strerror or exc}") from None
    return {"sha256": digest.hexdigest(), "size": size}


def _bytecode_problem(cache: Path, real: Path, version_real: Path) -> str | None:
    """Why Python could run `cache` (a __pycache__/*.pyc, whose content is in `real`) instead
    of the source beside its folder, or None when its code is exactly that source compiled
    (what Python writes at import).

    Code objects compare equal when their bytecode, constants, names and line tables are
    equal, whatever file name they were compiled under (the repository may sit elsewhere
    here than on the server). marshal is not hardened against hostile bytes, but they are
    only compared, never run, and malformed ones raise and are reported.
    """
    delete = "delete the __pycache__ folder (the source is what is sealed)"
    match = _CACHE_NAME.fullmatch(cache.name)
    if match is None:
        return f"not a name Python gives a bytecode cache; {delete}"
    stem = match["stem"]
    if match["tag"] != sys.implementation.cache_tag:
        return (f"bytecode of another Python ({match['tag']}) that this one "
                f"({sys.implementation.cache_tag}) cannot check; {delete}")
    try:
        source = _regular_file(cache.parent.parent / f"{stem}.py", version_real)
        with _open_regular(source) as handle:
            source_bytes = handle.read()
    except (_NotReadable, OSError):
        return f"bytecode of {stem}.py, but there is no {stem}.py beside it; {delete}"
    try:
        with _open_regular(real) as handle:
            data = handle.read(MAX_BYTECODE_BYTES + 1)
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    if len(data) >= 16 and data[:4] != importlib.util.MAGIC_NUMBER:
        return (f"bytecode of another Python (magic {data[:4].hex()}) that this one cannot "
                f"check; {delete}")
    cached: object = None
    if 16 <= len(data) <= MAX_BYTECODE_BYTES:
        try:
            cached = marshal.loads(data[16:])
        except (ValueError, EOFError, TypeError):
            cached = None
    try:
        compiled = compile(source_bytes, str(source), "exec", dont_inherit=True,
                           optimize=int(match["opt"] or 0))
    except (SyntaxError, ValueError):
        compiled = None
    if not isinstance(cached, CodeType) or compiled is None or cached != compiled:
        return (f"not the compiled {stem}.py: Python would run this bytecode instead of the "
                f"sealed source; {delete}")
    return None


def scan_version(version_dir: Path) -> VersionContents:
    """The files of a version folder as a seal records them ({relative posix path:
    {"sha256", "size"}}), and every entry a seal cannot cover.

    Bytecode caches are checked against their source rather than recorded: Python writes
    them at the first load.
    """
    version_dir = Path(version_dir)
    version_real = Path(os.path.realpath(version_dir))
    contents = VersionContents()

    def refuse(path: Path, rule: str, reason: str) -> None:
        where = f"{version_dir.name}/{path.relative_to(version_dir).as_posix()}"
        contents.unsealable.append(Unsealable(path, where, rule, reason))

    def unlistable(exc: OSError) -> None:
        refuse(Path(exc.filename), FILE_KIND_RULE,
               f"folder cannot be listed: {exc.strerror or exc}")

    for root, dirs, names in os.walk(version_dir, onerror=unlistable):
        here = Path(root)
        for name in sorted(dirs):
            if os.path.islink(here / name):  # os.walk does not follow it: say so
                dirs.remove(name)
                refuse(here / name, FILE_KIND_RULE, "a symbolic link to a folder: seals "
                       "follow no folder links; put the files themselves in the version")
        dirs.sort()
        for name in sorted(names):
            path = here / name
            try:
                real = _regular_file(path, version_real)
                if here.name == "__pycache__" and name.endswith(".pyc"):
                    problem = _bytecode_problem(path, real, version_real)
                    if problem:
                        refuse(path, BYTECODE_RULE, problem)
                    continue
                contents.files[path.relative_to(version_dir).as_posix()] = _digest(real)
            except _NotReadable as exc:
                refuse(path, FILE_KIND_RULE, str(exc))
    return contents


def importable_modules(model_dir: Path) -> list[Unsealable]:
    """Python modules directly in the model folder, next to the version folders."""
    suffixes = tuple(importlib.machinery.all_suffixes())
    found = []
    try:
        names = sorted(os.listdir(model_dir))
    except OSError:
        return []  # the repository checks report an unreadable model folder
    for name in names:
        path = Path(model_dir) / name
        if name.startswith(".") or not name.endswith(suffixes) or path.is_dir():
            continue
        found.append(Unsealable(
            path, name, IMPORTABLE_RULE, "a Python module next to the version folders: the "
            "Python backend puts the model folder on sys.path, so model.py would import it, "
            "and no seal covers it; move it into the version folders"))
    return found


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
    return sorted(int(p.stem) for p in folder.glob("*.json") if is_ascii_decimal(p.stem))


def publish(model_dir: Path, version: int, envelope_path: Path | None = None) -> PublishResult:
    """Seal <model_dir>/<version>/. Idempotent for identical content, refused otherwise."""
    model_dir = Path(model_dir)
    version_dir = model_dir / str(version)
    if version < 1:
        raise SealError("version numbers start at 1")
    if not version_dir.is_dir():
        raise SealError(f"{version_dir} does not exist: put the model files of version "
                        f"{version} there first")
    contents = scan_version(version_dir)
    unsealable = contents.unsealable + importable_modules(model_dir)
    if unsealable:
        raise SealError(f"version {version} of {model_dir.name} cannot be sealed: "
                        + "; ".join(str(u) for u in unsealable))
    files = contents.files
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
    contents = scan_version(version_dir)
    problems = [str(u) for u in contents.unsealable + importable_modules(model_dir)]
    return problems + [f"{version_dir.name}/{line}" for line in
                       describe_changes(manifest["files"], contents.files)]


def verify_sealed_versions(model_dir: Path) -> list[Finding]:
    """Findings for `validate`: an ERROR for every change to a sealed version of this model
    (rule `sealed-version-modified`), for an unreadable seal (`sealed-version-unreadable`),
    for what a seal cannot cover (`sealed-version-file-kind`, `sealed-version-bytecode`,
    `sealed-model-importable`), and a WARNING when config.pbtxt differs from the one a
    version was sealed with (`sealed-config-changed`)."""
    model_dir = Path(model_dir)
    versions = sealed_versions(model_dir)
    findings = [Finding(str(u.path), 0, 0, u.rule, Severity.ERROR, str(u))
                for u in (importable_modules(model_dir) if versions else [])]
    for version in versions:
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
        contents = scan_version(version_dir)
        findings.extend(Finding(str(u.path), 0, 0, u.rule, Severity.ERROR,
                                f"{u}; version {version} of {model_dir.name} is sealed")
                        for u in contents.unsealable)
        current = contents.files
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
