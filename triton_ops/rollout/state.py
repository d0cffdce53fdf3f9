"""The rollout state machine: pure data and pure transitions, no I/O, no clock of its own.

    Initializing -> Progressing(step i, weight w) -> [Paused] -> Promoting -> Succeeded
          |                  |                          |           |
          +------------------+------------> RollingBack +-----------+ -> RolledBack | Failed

`transition(state, event, now)` returns the next state and the audit record of the decision;
`next_action(state)` says what the driver (`triton_ops.rollout.engine`) must ask the target
to do next. Targets (single Triton, Kubernetes) never decide: they act and report events.

Safety rules encoded here:
- no data is never a pass: an INCONCLUSIVE window holds the step; too many in a row roll
  back (a progress deadline), they never promote;
- wrong outputs (a critical verdict) roll back at once, other failures after
  `failure_limit` failed windows;
- with `confirm`, the last step pauses until an explicit `promote` command;
- a failed promotion rolls back; a failed rollback ends in Failed (stable was never
  touched, so it still serves) and `triton-ops rollback MODEL` can retry.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from triton_ops.rollout.analysis import AnalysisPolicy, Result, Verdict, WindowMetrics


class Phase(str, Enum):
    INITIALIZING = "Initializing"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    PROMOTING = "Promoting"
    SUCCEEDED = "Succeeded"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"

    @property
    def terminal(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.FAILED)


class Action(str, Enum):
    """What the driver must do for the current phase."""

    LOAD_CANARY = "load-canary"
    ANALYZE = "analyze"  # set the weight, observe one interval, shadow-compare, analyze
    WAIT = "wait"  # paused at a manual gate: poll for commands
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    DONE = "done"


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RolloutSpec(_Data):
    """What the user asked for; fixed for the life of one rollout."""

    model: str
    stable: list[int] = Field(min_length=1, description="versions serving before; untouched")
    canary: int = Field(ge=1)
    steps: list[int] = Field(default_factory=lambda: [10, 25, 50, 100])
    interval_s: float = Field(default=60.0, gt=0, description="length of one analysis window")
    failure_limit: int = Field(default=2, ge=1, description="failed windows before rollback")
    max_inconclusive: int = Field(
        default=5, ge=1, description="inconclusive windows in a row at one step before rollback"
    )
    confirm: bool = Field(default=False, description="pause before promotion for a person")
    shadow_samples: int = Field(default=20, ge=0, description="shadow comparisons per window")
    policy: AnalysisPolicy = Field(default_factory=AnalysisPolicy)

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: list[int]) -> list[int]:
        if not steps:
            raise ValueError("give at least one step weight, e.g. 10,25,50,100")
        if any(not 1 <= w <= 100 for w in steps):
            raise ValueError("step weights are percentages between 1 and 100")
        if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
            raise ValueError("step weights must increase, e.g. 10,25,50,100")
        return steps

    @model_validator(mode="after")
    def _canary_is_new(self) -> RolloutSpec:
        if self.canary in self.stable:
            raise ValueError(f"version {self.canary} already serves as stable")
        return self


class RolloutState(_Data):
    """Everything needed to resume a rollout after the CLI died; persisted after each step."""

    spec: RolloutSpec
    phase: Phase = Phase.INITIALIZING
    step: int = Field(default=0, ge=0, description="index into spec.steps")
    weight: int = Field(default=0, ge=0, le=100, description="canary share of traffic, %")
    failures: int = Field(default=0, ge=0, description="failed windows so far")
    inconclusive: int = Field(default=0, ge=0, description="inconclusive windows in a row")
    windows: int = Field(default=0, ge=0, description="windows analyzed so far")
    baseline_stable_p99_us: float | None = None
    last_verdict: Verdict | None = None
    reason: str = ""
    started_at: float = 0.0
    updated_at: float = 0.0
    revision: int = Field(default=0, ge=0, description="bumped by every transition")

    @property
    def serving(self) -> list[int]:
        """The version list that serves (or should serve) in this phase."""
        if self.phase is Phase.SUCCEEDED:
            return [self.spec.canary]
        if self.phase in (Phase.ROLLED_BACK, Phase.FAILED, Phase.INITIALIZING):
            return list(self.spec.stable)
        return sorted({*self.spec.stable, self.spec.canary})

    @property
    def needs_ready(self) -> list[int]:
        """The versions that must be ready on the target before the driver goes on from
        this phase (resume, promote): stable before the canary is loaded, stable and the
        canary while they are compared, the canary while it is promoted. None while rolling
        back (that serves stable alone wherever it runs) or once the rollout ended. Going on
        without them would judge the absence of a version as the canary's failure."""
        if self.phase is Phase.INITIALIZING:
            return sorted(self.spec.stable)
        if self.phase in (Phase.PROGRESSING, Phase.PAUSED):
            return sorted({*self.spec.stable, self.spec.canary})
        if self.phase is Phase.PROMOTING:
            return [self.spec.canary]
        return []


# Events: what happened, reported by the driver after asking the target to act.

class CanaryLoaded(_Data):
    kind: Literal["canary-loaded"] = "canary-loaded"


class CanaryLoadFailed(_Data):
    kind: Literal["canary-load-failed"] = "canary-load-failed"
    error: str


class WindowAnalyzed(_Data):
    kind: Literal["window-analyzed"] = "window-analyzed"
    metrics: WindowMetrics
    verdict: Verdict


class Promoted(_Data):
    kind: Literal["promoted"] = "promoted"


class PromotionFailed(_Data):
    kind: Literal["promotion-failed"] = "promotion-failed"
    error: str


class RolledBack(_Data):
    kind: Literal["rolled-back"] = "rolled-back"


class RollbackFailed(_Data):
    kind: Literal["rollback-failed"] = "rollback-failed"
    error: str


class Command(_Data):
    """A person's command from `triton-ops rollout promote|abort MODEL`."""

    kind: Literal["command"] = "command"
    action: Literal["promote", "abort"]
    by: str = ""


Event = (CanaryLoaded | CanaryLoadFailed | WindowAnalyzed | Promoted | PromotionFailed
         | RolledBack | RollbackFailed | Command)


class AuditRecord(_Data):
    """One decision, as written (one JSON line each) to the audit log."""

    time: float
    model: str
    canary: int
    event: str
    from_phase: Phase
    phase: Phase
    step: int
    weight: int
    verdict: Result | None = None
    reason: str = ""
    metrics: dict[str, Any] | None = None
    checks: list[dict[str, Any]] | None = None


def new_state(spec: RolloutSpec, now: float) -> RolloutState:
    return RolloutState(spec=spec, phase=Phase.INITIALIZING, weight=0, started_at=now,
                        updated_at=now, reason=f"loading version {spec.canary} next to "
                        f"{spec.stable}")


def next_action(state: RolloutState) -> Action:
    return {
        Phase.INITIALIZING: Action.LOAD_CANARY,
        Phase.PROGRESSING: Action.ANALYZE,
        Phase.PAUSED: Action.WAIT,
        Phase.PROMOTING: Action.PROMOTE,
        Phase.ROLLING_BACK: Action.ROLLBACK,
    }.get(state.phase, Action.DONE)


def _after_pass(state: RolloutState) -> dict[str, Any]:
    spec = state.spec
    following = state.step + 1
    if following < len(spec.steps):
        weight = spec.steps[following]
        return {"phase": Phase.PROGRESSING, "step": following, "weight": weight,
                "inconclusive": 0, "reason": f"step {state.step + 1} passed; canary weight "
                f"{state.weight}% -> {weight}%"}
    if spec.confirm:
        return {"phase": Phase.PAUSED, "inconclusive": 0,
                "reason": "analysis passed at every step; waiting for "
                f"`triton-ops rollout promote {spec.model}`"}
    return {"phase": Phase.PROMOTING, "inconclusive": 0,
            "reason": "analysis passed at every step; promoting"}


def _on_window(state: RolloutState, event: WindowAnalyzed) -> dict[str, Any]:
    verdict = event.verdict
    changes: dict[str, Any] = {"windows": state.windows + 1, "last_verdict": verdict}
    stable = event.metrics.stable
    if (stable.p99_latency_us is not None
            and stable.requests - stable.errors >= state.spec.policy.min_requests):
        changes["baseline_stable_p99_us"] = stable.p99_latency_us
    if verdict.result is Result.PASS:
        changes.update(_after_pass(state))
    elif verdict.result is Result.FAIL:
        failures = state.failures + 1
        changes["failures"] = failures
        changes["inconclusive"] = 0
        if verdict.critical:
            changes.update(phase=Phase.ROLLING_BACK,
                           reason=f"critical failure, rolling back: {verdict.reason}")
        elif failures >= state.spec.failure_limit:
            changes.update(phase=Phase.ROLLING_BACK,
                           reason=f"{failures} failed windows (limit "
                           f"{state.spec.failure_limit}), rolling back: {verdict.reason}")
        else:
            changes["reason"] = (f"window failed ({failures}/{state.spec.failure_limit}), "
                                 f"holding step: {verdict.reason}")
    else:
        inconclusive = state.inconclusive + 1
        changes["inconclusive"] = inconclusive
        if inconclusive >= state.spec.max_inconclusive:
            changes.update(phase=Phase.ROLLING_BACK,
                           reason=f"{inconclusive} inconclusive windows in a row: not enough "
                           f"data to judge the canary, rolling back: {verdict.reason}")
        else:
            changes["reason"] = f"inconclusive, holding step: {verdict.reason}"
    return changes


def _on_command(state: RolloutState, event: Command) -> dict[str, Any]:
    who = f" by {event.by}" if event.by else ""
    if event.action == "abort":
        if state.phase is Phase.PROMOTING:
            return {"reason": f"abort{who} ignored: the promotion is already under way"}
        return {"phase": Phase.ROLLING_BACK, "reason": f"aborted{who}"}
    if state.phase in (Phase.PAUSED, Phase.PROGRESSING):
        return {"phase": Phase.PROMOTING, "reason": f"promotion confirmed{who}"}
    return {"reason": f"promote{who} ignored in phase {state.phase.value}"}


def transition(state: RolloutState, event: Event, now: float) -> tuple[RolloutState,
                                                                       AuditRecord]:
    """Apply one event. Events that make no sense in the current phase change nothing but
    are still audited (with the reason they were ignored)."""
    changes: dict[str, Any]
    phase = state.phase
    if phase.terminal:
        changes = {}  # a finished rollout keeps its final state and reason
        record_reason = f"{event.kind} ignored: rollout already {phase.value}"
    else:
        record_reason = ""
        if isinstance(event, CanaryLoaded) and phase is Phase.INITIALIZING:
            weight = state.spec.steps[0]
            changes = {"phase": Phase.PROGRESSING, "step": 0, "weight": weight,
                       "reason": f"version {state.spec.canary} loaded next to "
                       f"{state.spec.stable}; canary weight {weight}%"}
        elif isinstance(event, CanaryLoadFailed) and phase is Phase.INITIALIZING:
            changes = {"phase": Phase.ROLLING_BACK,
                       "reason": f"canary failed to load: {event.error}"}
        elif isinstance(event, WindowAnalyzed) and phase is Phase.PROGRESSING:
            changes = _on_window(state, event)
        elif isinstance(event, Promoted) and phase is Phase.PROMOTING:
            changes = {"phase": Phase.SUCCEEDED, "weight": 100,
                       "reason": f"version {state.spec.canary} promoted: serving "
                       f"[{state.spec.canary}]"}
        elif isinstance(event, PromotionFailed) and phase is Phase.PROMOTING:
            changes = {"phase": Phase.ROLLING_BACK,
                       "reason": f"promotion failed, rolling back: {event.error}"}
        elif isinstance(event, RolledBack) and phase is Phase.ROLLING_BACK:
            changes = {"phase": Phase.ROLLED_BACK, "weight": 0,
                       "reason": f"rolled back to {state.spec.stable} ({state.reason})"}
        elif isinstance(event, RollbackFailed) and phase is Phase.ROLLING_BACK:
            changes = {"phase": Phase.FAILED,
                       "reason": f"rollback failed: {event.error} (while: {state.reason}); "
                       f"run `triton-ops rollback {state.spec.model}`"}
        elif isinstance(event, Command):
            changes = _on_command(state, event)
        else:
            changes = {}
            record_reason = f"{event.kind} ignored in phase {phase.value}"
    changes["updated_at"] = now
    changes["revision"] = state.revision + 1
    new = state.model_copy(update=changes)
    record = AuditRecord(
        time=now, model=state.spec.model, canary=state.spec.canary, event=event.kind,
        from_phase=phase, phase=new.phase, step=new.step, weight=new.weight,
        reason=record_reason or new.reason,
    )
    if isinstance(event, WindowAnalyzed):
        record.verdict = event.verdict.result
        record.metrics = event.metrics.model_dump(exclude={"agreement"}) | {
            "agreement_compared": len(event.metrics.compared),
            "agreement_differ": len(event.metrics.disagreements),
        }
        record.checks = [c.model_dump(mode="json") for c in event.verdict.checks]
    return new, record


def first_validation_error(exc: ValidationError) -> str:
    """The first problem of a pydantic error, as "field.path: message" (just the message
    when it belongs to the model as a whole, e.g. a rule across several fields)."""
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first.get("loc", ()))
    # pydantic prefixes the text of a ValueError raised by a validator with "Value error, "
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{field}: {message}" if field else message

