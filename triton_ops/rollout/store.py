"""The state store of one model's rollouts: a folder of small files, written atomically.

    state.json      the current RolloutState (replaced atomically after every transition)
    audit.jsonl     one AuditRecord per decision, appended (fsync'd)
    lock            held (fcntl, via filelock) by the process driving the rollout; the OS
                    releases it when that process dies, so `resume` can take over
    command.json    a person's promote/abort, left for the driving process to pick up
    known_good.json the versions that served successfully, newest last (for `rollback`)
    target.json     how to reach the target again (the options the rollout started with)

Every target keeps one store per model: the single-Triton target under
`<model>/.triton-ops/rollout/`, a Kubernetes target wherever it chooses.

Documents that are not what triton-ops writes (edited by hand, another program, a disk
error) are a StoreError naming the file (and line), never a traceback and never silently
replaced. The one exception is a torn audit record: a driver killed in the middle of an
append leaves the start of a JSON object, which is skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from triton_ops.fileio import WriteError, atomic_write_text, os_error_reason, write_error
from triton_ops.rollout.state import AuditRecord, Command, RolloutState, first_validation_error

# Version numbers as Triton's version folders name them (int64, from 1).
_VERSION_MAX = 2**63 - 1


class StoreError(Exception):
    """The store cannot be read or written; the message says which file and what to do."""


class RolloutLocked(StoreError):
    """Another process drives this model's rollout."""


# -- the documents, parsed (shared by every store) ---------------------------------------------

def _json(text: str) -> Any:
    """json.loads, with nesting too deep for Python's parser as a ValueError too."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def parse_audit(data: bytes | str, where: str) -> list[dict[str, Any]]:
    """The records of an audit log (JSON lines). A line that starts an object but is cut
    short is a torn write (its writer died) and is skipped; any other line that is not a
    JSON object, or not UTF-8, is a StoreError naming `where` and the line."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    records = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise StoreError(f"{where}:{number}: not UTF-8 text; the audit log holds one JSON "
                             "object per line: move the file away (it is a record only, "
                             "nothing reads it back to drive a rollout)") from None
        try:
            record = json.loads(text)
        except RecursionError:
            record = None
        except ValueError:
            if text.lstrip().startswith("{"):
                continue  # torn
            record = None
        if not isinstance(record, dict):
            raise StoreError(f"{where}:{number}: not a JSON object; the audit log holds one "
                             "record per line: move the file away (it is a record only, "
                             "nothing reads it back to drive a rollout)")
        records.append(record)
    return records


def parse_state(text: str, where: str, remedy: str) -> RolloutState:
    """The rollout state in `text`; a StoreError naming `where`, the first field that is not
    valid, then `remedy` (what to do, which depends on where the store keeps it)."""
    try:
        return RolloutState.model_validate_json(text)
    except ValidationError as exc:
        detail = first_validation_error(exc)
        raise StoreError(f"{where}: not a valid rollout state ({detail}); {remedy}") from None


def parse_known_good(text: str, where: str) -> list[list[int]]:
    """The known-good history: a JSON list of non-empty version lists, e.g. [[1], [2, 3]]."""
    try:
        data = _json(text)
    except ValueError:
        data = None
    if not isinstance(data, list) or not all(
            isinstance(item, list) and item and all(_is_version(v) for v in item)
            for item in data):
        raise StoreError(f"{where}: not a list of version lists such as [[1], [2, 3]] (the "
                         "versions that served well, newest last, which `rollback` picks "
                         "from): restore it, or move it away to start a new history")
    return [sorted(item) for item in data]


def _is_version(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)
            and 1 <= value <= _VERSION_MAX)


def parse_target_options(text: str, where: str) -> dict[str, Any]:
    """The recorded options a target was built with: a JSON object."""
    try:
        data = _json(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise StoreError(f"{where}: not a JSON object of the options the rollout was started "
                         "with; give them again (e.g. --url) or move the file away")
    return data


class StateStore:
    def __init__(self, directory: Path | str):
        self.directory = Path(directory)
        self.state_path = self.directory / "state.json"
        self.audit_path = self.directory / "audit.jsonl"
        self.lock_path = self.directory / "lock"
        self.owner_path = self.directory / "owner.json"
        self.command_path = self.directory / "command.json"
        self.known_good_path = self.directory / "known_good.json"
        self.target_path = self.directory / "target.json"

    # -- files ---------------------------------------------------------------------------
    def _read_bytes(self, path: Path) -> bytes | None:
        """The content of `path`, None when it does not exist; StoreError when unreadable."""
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"{path}: cannot read: {os_error_reason(path, exc)}") from None

    def _write(self, path: Path, text: str) -> None:
        try:
            atomic_write_text(path, text)
        except WriteError as exc:
            raise StoreError(str(exc)) from None

    def _read_text(self, path: Path) -> str | None:
        data = self._read_bytes(path)
        if data is None:
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StoreError(f"{path}: not UTF-8 text (byte {exc.start}); triton-ops writes "
                             "it as JSON: restore it or move it away") from None

    # -- state -------------------------------------------------------------------------
    def load(self) -> RolloutState | None:
        """The persisted state, None when no rollout ever ran; StoreError when unreadable."""
        text = self._read_text(self.state_path)
        if text is None:
            return None
        return parse_state(text, str(self.state_path),
                           "it was written by another triton-ops version or edited by hand: "
                           "move it away and use `triton-ops rollback` to set the served "
                           "versions")

    def save(self, state: RolloutState) -> None:
        self._write(self.state_path, state.model_dump_json(indent=2) + "\n")

    # -- audit log ---------------------------------------------------------------------
    def append_audit(self, record: AuditRecord | dict[str, Any]) -> None:
        data = record.model_dump(mode="json") if isinstance(record, AuditRecord) else record
        line = json.dumps(data, sort_keys=True, default=str) + "\n"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            # One write() of one line in append mode: concurrent appenders never interleave.
            fd = os.open(self.audit_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = "\n" + line  # after a torn record: never join it
                os.write(fd, line.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StoreError(str(write_error(self.audit_path, exc))) from None

    def read_audit(self) -> list[dict[str, Any]]:
        data = self._read_bytes(self.audit_path)
        return [] if data is None else parse_audit(data, str(self.audit_path))

    # -- lock --------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the model's rollout lock, or raise RolloutLocked naming the holder."""
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.lock_path), timeout=0)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        except Timeout:
            raise RolloutLocked(
                f"another triton-ops process drives this rollout ({self.owner()}); use "
                "`triton-ops rollout status|promote|abort` or stop that process first"
            ) from None
        except OSError as exc:
            raise StoreError(str(write_error(self.lock_path, exc))) from None
        try:
            self._write(self.owner_path, json.dumps(
                {"pid": os.getpid(), "host": socket.gethostname()}) + "\n")
            yield
        finally:
            with contextlib.suppress(OSError):
                self.owner_path.unlink()
            lock.release()

    def is_locked(self) -> bool:
        """Whether a live process holds the lock right now (nothing is written)."""
        from filelock import FileLock, Timeout

        if not self.lock_path.exists():
            return False  # a holder creates it
        probe = FileLock(str(self.lock_path), timeout=0)
        try:
            probe.acquire()
        except Timeout:
            return True
        except OSError as exc:
            raise StoreError(f"{self.lock_path}: cannot open: {exc.strerror or exc}") from None
        probe.release()
        return False

    def owner(self) -> str:
        try:
            data = json.loads(self.owner_path.read_text(encoding="utf-8"))
            return f"pid {data['pid']} on {data['host']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "owner unknown"

    # -- commands from other shells ----------------------------------------------------
    def send_command(self, command: Command) -> None:
        self._write(self.command_path, command.model_dump_json() + "\n")

    def take_command(self) -> Command | None:
        """The pending command, removed from the store; None when there is none."""
        data = self._read_bytes(self.command_path)
        if data is None:
            return None
        with contextlib.suppress(FileNotFoundError):
            self.command_path.unlink()
        try:
            return Command.model_validate_json(data)
        except ValidationError:
            return None  # not a command triton-ops wrote: dropped

    def pending_command(self) -> bool:
        return self.command_path.exists()

    # -- known-good versions -----------------------------------------------------------
    def known_good(self) -> list[list[int]]:
        """Version lists that served successfully, oldest first."""
        text = self._read_text(self.known_good_path)
        return [] if text is None else parse_known_good(text, str(self.known_good_path))

    def record_known_good(self, versions: list[int]) -> None:
        history = self.known_good()
        if history and history[-1] == sorted(versions):
            return
        history.append(sorted(versions))
        self._write(self.known_good_path, json.dumps(history[-50:]) + "\n")

    # -- how to reach the target again -------------------------------------------------
    def save_target_options(self, options: dict[str, Any]) -> None:
        """Record the options the target was built with, for `resume` from another shell."""
        self._write(self.target_path, json.dumps(options, indent=2) + "\n")

    def target_options(self) -> dict[str, Any]:
        """The recorded target options; empty when none were recorded."""
        text = self._read_text(self.target_path)
        return {} if text is None else parse_target_options(text, str(self.target_path))
