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

from triton_ops.fileio import atomic_write_text
from triton_ops.rollout.state import AuditRecord, Command, RolloutState


class StoreError(Exception):
    """The store cannot be read or written; the message says which file and what to do."""


class RolloutLocked(StoreError):
    """Another process drives this model's rollout."""


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

    # -- state -------------------------------------------------------------------------
    def load(self) -> RolloutState | None:
        """The persisted state, None when no rollout ever ran; StoreError when unreadable."""
        try:
            text = self.state_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"{self.state_path}: cannot read: {exc.strerror or exc}") from None
        try:
            return RolloutState.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise StoreError(
                f"{self.state_path}: not a valid rollout state ({where}: {first['msg']}); "
                "it was written by another triton-ops version or edited by hand: move it "
                "away and use `triton-ops rollback` to set the served versions"
            ) from None

    def save(self, state: RolloutState) -> None:
        atomic_write_text(self.state_path, state.model_dump_json(indent=2) + "\n")

    # -- audit log ---------------------------------------------------------------------
    def append_audit(self, record: AuditRecord | dict[str, Any]) -> None:
        data = record.model_dump(mode="json") if isinstance(record, AuditRecord) else record
        line = json.dumps(data, sort_keys=True, default=str) + "\n"
        self.directory.mkdir(parents=True, exist_ok=True)
        # One write() of one line in append mode: concurrent appenders never interleave.
        fd = os.open(self.audit_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def read_audit(self) -> list[dict[str, Any]]:
        if not self.audit_path.exists():
            return []
        records = []
        for line in self.audit_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                with contextlib.suppress(json.JSONDecodeError):  # a torn last line
                    records.append(json.loads(line))
        return records

    # -- lock --------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the model's rollout lock, or raise RolloutLocked naming the holder."""
        from filelock import FileLock, Timeout

        self.directory.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.lock_path), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise RolloutLocked(
                f"another triton-ops process drives this rollout ({self.owner()}); use "
                "`triton-ops rollout status|promote|abort` or stop that process first"
            ) from None
        try:
            atomic_write_text(self.owner_path, json.dumps(
                {"pid": os.getpid(), "host": socket.gethostname()}) + "\n")
            yield
        finally:
            with contextlib.suppress(OSError):
                self.owner_path.unlink()
            lock.release()

    def is_locked(self) -> bool:
        """Whether a live process holds the lock right now."""
        try:
            with self.lock():
                return False
        except RolloutLocked:
            return True

    def owner(self) -> str:
        try:
            data = json.loads(self.owner_path.read_text(encoding="utf-8"))
            return f"pid {data['pid']} on {data['host']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "owner unknown"

    # -- commands from other shells ----------------------------------------------------
    def send_command(self, command: Command) -> None:
        atomic_write_text(self.command_path, command.model_dump_json() + "\n")

    def take_command(self) -> Command | None:
        """The pending command, removed from the store; None when there is none."""
        try:
            text = self.command_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        with contextlib.suppress(FileNotFoundError):
            self.command_path.unlink()
        try:
            return Command.model_validate_json(text)
        except ValidationError:
            return None

    def pending_command(self) -> bool:
        return self.command_path.exists()

    # -- known-good versions -----------------------------------------------------------
    def known_good(self) -> list[list[int]]:
        """Version lists that served successfully, oldest first."""
        try:
            data = json.loads(self.known_good_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        if not isinstance(data, list):
            return []
        return [[int(v) for v in item] for item in data if isinstance(item, list)]

    def record_known_good(self, versions: list[int]) -> None:
        history = self.known_good()
        if history and history[-1] == sorted(versions):
            return
        history.append(sorted(versions))
        atomic_write_text(self.known_good_path, json.dumps(history[-50:]) + "\n")

    # -- how to reach the target again -------------------------------------------------
    def save_target_options(self, options: dict[str, Any]) -> None:
        """Record the options the target was built with, for `resume` from another shell."""
        atomic_write_text(self.target_path, json.dumps(options, indent=2) + "\n")

    def target_options(self) -> dict[str, Any]:
        """The recorded target options; empty when none (or unreadable) were recorded."""
        try:
            options = json.loads(self.target_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return options if isinstance(options, dict) else {}
