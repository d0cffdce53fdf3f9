"""A model's rollout state in the cluster, so status|resume|abort|promote work from any
machine with access to it:

    ConfigMap triton-ops-rollout-<model>   state.json, audit.jsonl, command.json,
                                           known_good.json; every write is a merge patch
                                           carrying the resourceVersion it was computed from
                                           (409 -> re-read, recompute, retry)
    Lease     triton-ops-rollout-<model>   held, and renewed, by the process driving the
                                           rollout: two rollouts of one model cannot run at
                                           once; an expired lease may be taken over (resume)
    Events    one per audit record, about the ConfigMap (kubectl describe configmap ...)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import PurePosixPath
from typing import Any

from pydantic import ValidationError

from triton_ops.k8s.cluster import Cluster, Conflict, K8sError, micro_time, now_utc
from triton_ops.k8s.names import rollout_object
from triton_ops.rollout.state import AuditRecord, Command, Phase, RolloutState
from triton_ops.rollout.store import (
    RolloutLocked,
    StateStore,
    StoreError,
    parse_audit,
    parse_known_good,
    parse_state,
    parse_target_options,
)

STATE_KEY = "state.json"
AUDIT_KEY = "audit.jsonl"
COMMAND_KEY = "command.json"
KNOWN_GOOD_KEY = "known_good.json"
TARGET_KEY = "target.json"  # how to reach the target again (resume/promote from anywhere)
# A ConfigMap holds at most 1 MiB; the oldest audit lines go first past this size (every
# record is also an Event, and `kubectl get events` keeps its own history).
AUDIT_LIMIT_BYTES = 512 * 1024
WRITE_ATTEMPTS = 20
WARNING_PHASES = (Phase.ROLLING_BACK, Phase.ROLLED_BACK, Phase.FAILED)


def _event_reason(event: str) -> str:
    return "".join(part.capitalize() for part in event.replace("_", "-").split("-")) or "Rollout"


def _parse_time(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    if isinstance(value, str) and value:
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
    return None


class LeaseLock:
    """A coordination.k8s.io/v1 Lease as a mutual-exclusion lock with expiry."""

    def __init__(self, cluster: Cluster, name: str, identity: str, duration_s: int = 30,
                 clock: Callable[[], dt.datetime] = now_utc):
        self.cluster = cluster
        self.name = name
        self.identity = identity
        self.duration_s = duration_s
        self.clock = clock
        self.lost = False
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def holder(self) -> tuple[str | None, bool]:
        """(holder identity, whether its hold is still valid now)."""
        lease = self.cluster.get_lease(self.name)
        if lease is None:
            return None, False
        return self._holder_of(lease)

    def _holder_of(self, lease: dict[str, Any]) -> tuple[str | None, bool]:
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or None
        renewed = _parse_time(spec.get("renewTime")) or _parse_time(spec.get("acquireTime"))
        duration = int(spec.get("leaseDurationSeconds") or self.duration_s)
        valid = bool(holder and renewed and
                     renewed + dt.timedelta(seconds=duration) > self.clock())
        return holder, valid

    def acquire(self) -> None:
        """Take the lease or raise RolloutLocked naming the holder."""
        stamp = micro_time(self.clock())
        spec = {"holderIdentity": self.identity, "leaseDurationSeconds": self.duration_s,
                "acquireTime": stamp, "renewTime": stamp}
        lease = self.cluster.get_lease(self.name)
        if lease is None:
            try:
                self.cluster.create_lease(self.name, {**spec, "leaseTransitions": 0})
                self.lost = False
                return
            except Conflict:
                lease = self.cluster.get_lease(self.name)
                if lease is None:
                    raise RolloutLocked(f"lease {self.name} changed while taking it; "
                                        "try again") from None
        holder, valid = self._holder_of(lease)
        if valid and holder != self.identity:
            raise RolloutLocked(
                f"another triton-ops process drives this rollout (lease {self.cluster.namespace}"
                f"/{self.name} held by {holder}); use `triton-ops rollout status|promote|abort` "
                "or wait for it to stop (its lease expires "
                f"{self.duration_s} s after its last renewal)")
        transitions = int((lease.get("spec") or {}).get("leaseTransitions") or 0)
        try:
            self.cluster.patch_lease(self.name, {**spec, "leaseTransitions": transitions + 1},
                                     lease["metadata"]["resourceVersion"])
        except Conflict:
            raise RolloutLocked(f"another process took lease {self.name} at the same "
                                "moment; check `triton-ops rollout status`") from None
        self.lost = False

    def renew(self) -> bool:
        """Push renewTime forward; False (and `lost`) when someone else holds it now."""
        lease = self.cluster.get_lease(self.name)
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
            self.lost = True
            return False
        try:
            self.cluster.patch_lease(self.name, {"renewTime": micro_time(self.clock())},
                                     lease["metadata"]["resourceVersion"])
        except Conflict:
            return self.renew()
        return True

    def release(self) -> None:
        self._stop_renewing()
        with contextlib.suppress(K8sError):
            lease = self.cluster.get_lease(self.name)
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                self.cluster.patch_lease(self.name, {"holderIdentity": None, "renewTime": None},
                                         lease["metadata"]["resourceVersion"])

    def start_renewing(self) -> None:
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(self.duration_s / 3):
                try:
                    if not self.renew():
                        return
                except K8sError:
                    continue  # a blip: try again at the next tick, the lease has slack

        self._renewer = threading.Thread(target=loop, name=f"lease-{self.name}", daemon=True)
        self._renewer.start()

    def _stop_renewing(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=10)
            self._renewer = None


class ConfigMapStateStore(StateStore):
    """`StateStore` kept in a ConfigMap and a Lease of the model's namespace."""

    def __init__(self, cluster: Cluster, model: str, *, lease_duration_s: int = 30,
                 identity: str | None = None, emit_events: bool = True):
        self.cluster = cluster
        self.model = model
        self.name = rollout_object(model)
        # `directory` names the store in messages; nothing is written to disk.
        super().__init__(PurePosixPath(f"configmap/{cluster.namespace}/{self.name}"))
        self.identity = identity or f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self.lease = LeaseLock(cluster, self.name, self.identity, lease_duration_s)
        self.emit_events = emit_events

    # -- the ConfigMap -------------------------------------------------------------------
    def _read(self) -> tuple[dict[str, str], str | None]:
        cm = self.cluster.get_configmap(self.name)
        if cm is None:
            return {}, None
        return dict(cm.get("data") or {}), cm["metadata"]["resourceVersion"]

    def _update(self, change: Callable[[dict[str, str]], dict[str, str | None]]) -> None:
        """Apply `change(current data)` with optimistic concurrency (retry on 409)."""
        for attempt in range(WRITE_ATTEMPTS):
            if attempt:  # jittered backoff so that two writers stop colliding
                time.sleep(random.uniform(0.0, min(0.5, 0.02 * 2 ** attempt)))
            data, version = self._read()
            patch = change(data)
            if not patch:
                return
            try:
                if version is None:
                    self.cluster.create_configmap(
                        self.name, {k: v for k, v in patch.items() if v is not None},
                        labels={"app.kubernetes.io/managed-by": "triton-ops",
                                "triton-ops.io/rollout-model": self.name.removeprefix(
                                    "triton-ops-rollout-")})
                else:
                    self.cluster.patch_configmap(self.name, patch, version)
                return
            except Conflict:
                continue
        raise StoreError(f"{self.directory}: changed by others {WRITE_ATTEMPTS} times in a row "
                         "while writing; try again")

    def _wrap(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except K8sError as exc:
            raise StoreError(str(exc)) from None

    # -- state ---------------------------------------------------------------------------
    def load(self) -> RolloutState | None:
        data, _ = self._wrap(self._read)
        text = data.get(STATE_KEY)
        if not text:
            return None
        return parse_state(text, self._where(STATE_KEY),
                           "written by another triton-ops version or edited by hand: delete "
                           "the ConfigMap's state.json key and set the served versions with "
                           "`triton-ops rollback`")

    def save(self, state: RolloutState) -> None:
        text = state.model_dump_json(indent=2) + "\n"
        self._wrap(lambda: self._update(lambda _: {STATE_KEY: text}))

    # -- audit ---------------------------------------------------------------------------
    def append_audit(self, record: AuditRecord | dict[str, Any]) -> None:
        data = record.model_dump(mode="json") if isinstance(record, AuditRecord) else record
        line = json.dumps(data, sort_keys=True, default=str) + "\n"

        def change(current: dict[str, str]) -> dict[str, str | None]:
            text = current.get(AUDIT_KEY, "") + line
            while len(text.encode()) > AUDIT_LIMIT_BYTES and "\n" in text[:-1]:
                text = text.split("\n", 1)[1]
            return {AUDIT_KEY: text}

        self._wrap(lambda: self._update(change))
        if self.emit_events:
            self._event(data)

    def _event(self, data: dict[str, Any]) -> None:
        phase = data.get("phase")
        warning = phase in {p.value for p in WARNING_PHASES} or "fail" in str(data.get("event"))
        message = (f"{data.get('model')} v{data.get('canary')}: {data.get('from_phase')} -> "
                   f"{phase} at {data.get('weight')}%: {data.get('reason', '')}")
        try:
            self.cluster.emit_event({"apiVersion": "v1", "kind": "ConfigMap", "name": self.name},
                                    _event_reason(str(data.get("event", ""))), message, warning)
        except K8sError:
            pass  # events are best effort: the audit log in the ConfigMap is the record

    def read_audit(self) -> list[dict[str, Any]]:
        data, _ = self._wrap(self._read)
        return parse_audit(data.get(AUDIT_KEY, ""), self._where(AUDIT_KEY))

    def _where(self, key: str) -> str:
        """How messages name one key of the ConfigMap."""
        return f"{self.directory} {key}"

    # -- lock ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        self._wrap(self.lease.acquire)
        self.lease.start_renewing()
        try:
            yield
        finally:
            self.lease.release()

    def is_locked(self) -> bool:
        holder, valid = self._wrap(self.lease.holder)
        return valid and holder != self.identity

    def owner(self) -> str:
        holder, valid = self._wrap(self.lease.holder)
        if not holder:
            return "nobody"
        return f"{holder}" + ("" if valid else " (lease expired)")

    # -- commands ------------------------------------------------------------------------
    def send_command(self, command: Command) -> None:
        text = command.model_dump_json() + "\n"
        self._wrap(lambda: self._update(lambda _: {COMMAND_KEY: text}))

    def take_command(self) -> Command | None:
        taken: list[str] = []

        def change(current: dict[str, str]) -> dict[str, str | None]:
            taken.clear()
            if COMMAND_KEY not in current:
                return {}
            taken.append(current[COMMAND_KEY])
            return {COMMAND_KEY: None}

        self._wrap(lambda: self._update(change))
        if not taken:
            return None
        try:
            return Command.model_validate_json(taken[0])
        except ValidationError:
            return None

    def pending_command(self) -> bool:
        data, _ = self._wrap(self._read)
        return COMMAND_KEY in data

    # -- known good ----------------------------------------------------------------------
    def known_good(self) -> list[list[int]]:
        data, _ = self._wrap(self._read)
        return parse_known_good(data.get(KNOWN_GOOD_KEY, "[]"), self._where(KNOWN_GOOD_KEY))

    def record_known_good(self, versions: list[int]) -> None:
        def change(current: dict[str, str]) -> dict[str, str | None]:
            history = parse_known_good(current.get(KNOWN_GOOD_KEY, "[]"),
                                       self._where(KNOWN_GOOD_KEY))
            if history and history[-1] == sorted(versions):
                return {}
            history.append(sorted(versions))
            return {KNOWN_GOOD_KEY: json.dumps(history[-50:]) + "\n"}

        self._wrap(lambda: self._update(change))

    # -- how to reach the target again ------------------------------------------------------
    def save_target_options(self, options: dict[str, Any]) -> None:
        text = json.dumps(options, indent=2, sort_keys=True) + "\n"
        self._wrap(lambda: self._update(lambda _: {TARGET_KEY: text}))

    def target_options(self) -> dict[str, Any]:
        data, _ = self._wrap(self._read)
        return parse_target_options(data.get(TARGET_KEY, "{}"), self._where(TARGET_KEY))
