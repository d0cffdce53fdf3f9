"""The rollout driver: asks the target to act for the current phase, feeds what happened to
the pure state machine, persists the new state and appends the audit record, and repeats
until a terminal phase.

It owns no policy (that is `state.transition` and `analysis.analyze`) and no I/O of its own
beyond the target and its store, and takes its clock and sleep as arguments, so every path
runs in unit tests with an in-memory target.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from triton_ops.rollout.analysis import analyze
from triton_ops.rollout.state import (
    Action,
    AuditRecord,
    CanaryLoaded,
    CanaryLoadFailed,
    Command,
    Event,
    Phase,
    Promoted,
    PromotionFailed,
    RollbackFailed,
    RolledBack,
    RolloutSpec,
    RolloutState,
    WindowAnalyzed,
    new_state,
    next_action,
    transition,
)
from triton_ops.rollout.store import RolloutLocked, StateStore, StoreError
from triton_ops.rollout.target import RolloutTarget, TargetError

Listener = Callable[[RolloutState, AuditRecord], None]


class RolloutRefused(Exception):
    """The rollout cannot start (exit code 2): nothing was changed on the target.

    A StoreError before the target is touched (the lock is held, a store file cannot be
    read or written) is a refusal too; once the rollout acts, a StoreError escapes as it is:
    the persisted state is the last one written, and `resume` goes on from it."""


@dataclass
class Engine:
    target: RolloutTarget
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    listener: Listener | None = None
    poll_s: float = 0.5
    rollback_attempts: int = 3

    @property
    def store(self) -> StateStore:
        return self.target.store

    # -- checks before anything is touched -----------------------------------------------
    def preflight(self, spec: RolloutSpec) -> None:
        """Refuse (RolloutRefused) before touching the target: tampered or unsealed canary,
        tampered stable, a rollout of this model still open, stable not what serves."""
        previous = self.store.load()
        if previous is not None and not previous.phase.terminal:
            raise RolloutRefused(
                f"a rollout of {spec.model} to version {previous.spec.canary} is still "
                f"{previous.phase.value}: run `triton-ops rollout resume {spec.model}` or "
                f"`triton-ops rollout abort {spec.model}` first"
            )
        problems = self.target.verify_version(spec.canary)
        if problems:
            raise RolloutRefused(f"version {spec.canary} cannot be rolled out: "
                                 + "; ".join(problems))
        for version in spec.stable:
            stable_problems = [p for p in self.target.verify_version(version)
                               if "not sealed" not in p]
            if stable_problems:
                raise RolloutRefused(f"stable version {version} was modified after it was "
                                     "sealed: " + "; ".join(stable_problems))
        try:
            serving = self.target.serving_versions()
        except TargetError as exc:
            raise RolloutRefused(f"cannot reach the target: {exc}") from None
        if not serving:
            raise RolloutRefused(
                f"no version of {spec.model} is ready on {self.target.describe()}: a canary "
                "needs a stable version to compare with (load one with `triton-ops serve`)")
        if spec.canary in serving:
            raise RolloutRefused(f"version {spec.canary} already serves ({serving})")
        if sorted(serving) != sorted(spec.stable):
            raise RolloutRefused(f"the stable versions given {spec.stable} are not what "
                                 f"serves now {serving}")

    # -- running -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The model's rollout lock for the block; RolloutRefused when another process
        holds it or it cannot be taken."""
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(self.store.lock())
            except StoreError as exc:
                raise RolloutRefused(str(exc)) from None
            yield

    def start(self, spec: RolloutSpec, target_options: dict[str, Any] | None = None
              ) -> RolloutState:
        """Preflight, take the lock, and drive a new rollout to its end. `target_options`
        (how the target was reached) are recorded with it, for `resume` from another shell."""
        with self._locked():
            try:
                self.preflight(spec)
                if target_options is not None:
                    self.store.save_target_options(target_options)
                self.store.record_known_good(spec.stable)
                state = new_state(spec, self.clock())
                self.store.save(state)
                self.store.append_audit(AuditRecord(
                    time=state.started_at, model=spec.model, canary=spec.canary,
                    event="started", from_phase=state.phase, phase=state.phase, step=0,
                    weight=0, reason=f"rollout of {spec.model} version {spec.canary} started "
                    f"on {self.target.describe()}; steps {spec.steps}"))
            except StoreError as exc:  # nothing was done on the target yet
                raise RolloutRefused(str(exc)) from None
            self._notify(state, None)
            return self._drive(state)

    def resume(self) -> RolloutState:
        """Take over a persisted rollout (the CLI that drove it died) and drive it to its end."""
        with self._locked():
            try:
                state = self.store.load()
                if state is None:
                    raise RolloutRefused(f"no rollout of {self.target.model} to resume")
                if not state.phase.terminal:
                    self.store.append_audit(AuditRecord(
                        time=self.clock(), model=state.spec.model, canary=state.spec.canary,
                        event="resumed", from_phase=state.phase, phase=state.phase,
                        step=state.step, weight=state.weight,
                        reason=f"resumed in phase {state.phase.value}"))
            except StoreError as exc:  # nothing was done on the target yet
                raise RolloutRefused(str(exc)) from None
            return self._drive(state)

    def command(self, action: str, by: str = "") -> tuple[RolloutState, bool]:
        """Promote or abort from another shell. When a process drives the rollout, leave it
        the command and wait for it to act; when none does, act here. Returns the state and
        whether this process drove the rollout itself."""
        cmd = Command(action=action, by=by)  # type: ignore[arg-type]
        state = self.store.load()
        if state is None:
            raise RolloutRefused(f"no rollout of {self.target.model}")
        if state.phase.terminal:
            return state, False
        try:
            with self.store.lock():
                state = self.store.load() or state
                state = self._apply(state, cmd)
                return self._drive(state), True
        except RolloutLocked:
            self.store.send_command(cmd)
            return state, False

    def _drive(self, state: RolloutState) -> RolloutState:
        self.target.attach(state.spec.stable, state.spec.canary)
        while not state.phase.terminal:
            pending = self.store.take_command()
            if pending is not None:
                state = self._apply(state, pending)
                continue
            action = next_action(state)
            if action is Action.WAIT:
                self.sleep(self.poll_s)
                continue
            state = self._apply(state, self._act(state, action))
        return state

    def _act(self, state: RolloutState, action: Action) -> Event:
        spec, target = state.spec, self.target
        if action is Action.LOAD_CANARY:
            problems = target.verify_version(spec.canary)
            if problems:  # re-verified right before loading: a change since start is refused
                return CanaryLoadFailed(error="; ".join(problems))
            try:
                target.load_canary(spec.stable, spec.canary)
            except TargetError as exc:
                return CanaryLoadFailed(error=str(exc))
            return CanaryLoaded()
        if action is Action.ANALYZE:
            try:
                target.set_weight(state.weight)
                metrics = target.collect_window(state.weight, spec.interval_s)
                if (spec.shadow_samples and not metrics.canary_down
                        and not self.store.pending_command()):
                    metrics.agreement = target.shadow_compare(spec.shadow_samples)
            except TargetError as exc:
                from triton_ops.rollout.analysis import WindowMetrics

                metrics = WindowMetrics(canary_down=f"observing the window failed: {exc}")
            verdict = analyze(metrics, spec.policy, state.baseline_stable_p99_us)
            return WindowAnalyzed(metrics=metrics, verdict=verdict)
        if action is Action.PROMOTE:
            problems = target.verify_version(spec.canary)
            if problems:
                return PromotionFailed(error="; ".join(problems))
            try:
                target.promote(spec.stable, spec.canary)
            except TargetError as exc:
                return PromotionFailed(error=str(exc))
            return Promoted()
        if action is Action.ROLLBACK:
            error = ""
            for attempt in range(self.rollback_attempts):
                try:
                    target.rollback(spec.stable, spec.canary)
                    return RolledBack()
                except TargetError as exc:
                    error = str(exc)
                    self.sleep(min(2.0 ** attempt, 10.0))
            return RollbackFailed(error=error)
        raise AssertionError(f"no action for {action}")  # pragma: no cover

    def _apply(self, state: RolloutState, event: Event) -> RolloutState:
        new, record = transition(state, event, self.clock())
        self.store.save(new)
        self.store.append_audit(record)
        if new.phase is Phase.SUCCEEDED:
            self.store.record_known_good([new.spec.canary])
        self._notify(new, record)
        return new

    def _notify(self, state: RolloutState, record: AuditRecord | None) -> None:
        if self.listener is not None and record is not None:
            self.listener(state, record)


def exit_code(state: RolloutState) -> int:
    """0 promoted, 1 rolled back or failed (2, refused, never reaches a state)."""
    return 0 if state.phase is Phase.SUCCEEDED else 1
