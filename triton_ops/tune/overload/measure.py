"""The overload stage on a running Triton: load the chosen config with each queue policy,
offer open-loop Poisson load at multiples of its goodput, and record what came back.

Each policy is applied with the model-control API (`load_model(name, config=json)`: the
model's own config with the chosen batching settings and the policy put in, no restart).
Between two loads the server is left to drain what the last one queued, so that one level's
backlog is not charged to the next. The model's original config is put back at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from triton_ops.envelope.model import Envelope
from triton_ops.tune.batcher import Candidate
from triton_ops.tune.control import ModelControl, candidate_config
from triton_ops.tune.events import (
    LevelMeasured,
    NominalConfirmed,
    OverloadEvent,
    PolicyDone,
    PolicyLoading,
)
from triton_ops.tune.overload.choice import (
    LEVELS,
    Choice,
    ChoiceRule,
    OverloadResult,
    choose_policy,
    confirmed_shed,
    nominal_shed,
    shed_like,
    slow_rejections,
)
from triton_ops.tune.overload.figures import LevelFigures, PolicyResult, level_figures
from triton_ops.tune.overload.policy import OverloadPolicy

# Requests the chosen policy's nominal level is measured again for. With the first window's
# 1000 the limit then holds over 4000: a policy that sheds 0.2% passes both about one time in
# ten (the first window alone: four in ten), one that sheds 0.04% about nine in ten.
CONFIRM_REQUESTS = 3000


@dataclass(frozen=True)
class OverloadSettings:
    levels: tuple[float, ...] = LEVELS  # multiples of the goodput; the nominal one first
    warmup_s: float = 1.0
    window_s: float = 4.0
    # The nominal level's window (None: `window_s`): long enough that one rejection is not
    # already more than the 0.1% the choice allows (`nominal_window_s`).
    nominal_window_s: float | None = None
    # The client's deadline; anything later is not within the SLO anyway. None: 4x the SLO,
    # at least 1 s.
    client_timeout_s: float | None = None
    late_threshold_us: float = 2000.0
    drain_timeout_s: float = 60.0
    # A policy that sheds too much at the nominal load cannot be chosen: skip its overload
    # levels (they would only spend time).
    skip_disqualified: bool = True
    load_timeout_s: float = 120.0
    max_inflight: int = 20000
    # Requests the chosen policy's nominal level is measured again for (0: not confirmed),
    # and what a confirmation costs besides its warm-up and window (a model load, drains).
    confirm_requests: int = CONFIRM_REQUESTS
    confirm_overhead_s: float = 3.0

    def confirm_window_s(self, nominal_rps: float) -> float:
        return self.confirm_requests / nominal_rps if nominal_rps > 0 else 0.0

    def confirm_seconds(self, goodput_rps: float) -> float:
        """What confirming a choice costs: its warm-up, its window at the nominal level and
        the overhead (a model load, drains)."""
        return (self.warmup_s + self.confirm_window_s(self.levels[0] * goodput_rps)
                + self.confirm_overhead_s)

    def timeout_s(self, slo_us: float) -> float:
        if self.client_timeout_s is not None:
            return self.client_timeout_s
        return max(1.0, 4 * slo_us / 1e6)


NOT_MEASURED = "not measured"
# Requests at the nominal level: one rejection among them is the 0.1% the choice allows.
MIN_NOMINAL_REQUESTS = 1000


def overload_config(base: Mapping[str, Any], candidate: Candidate,
                    policy: OverloadPolicy) -> dict[str, Any]:
    """The model's config (protobuf JSON form) with the candidate's batching settings and
    the policy as the dynamic batcher's default_queue_policy.

    A model that does not batch (max_batch_size 0) keeps a `dynamic_batching {}` for the
    policy: Triton applies the queue policy whenever the dynamic batcher is on.
    """
    cfg = candidate_config(base, candidate)
    dyn = dict(cfg.get("dynamic_batching") or {})
    dyn.pop("default_queue_policy", None)
    queue_policy = policy.config_json()
    if queue_policy is not None:
        dyn["default_queue_policy"] = queue_policy
    if dyn or candidate.max_batch_size > 0:
        cfg["dynamic_batching"] = dyn
    return cfg


class PolicyTarget:
    """The model on a running Triton (through tune's `ModelControl`), loaded with one policy
    after another on the chosen batching settings."""

    def __init__(self, control: ModelControl, candidate: Candidate) -> None:
        self.control = control
        self.candidate = candidate

    def load(self, policy: OverloadPolicy) -> str | None:
        """Load the model with the policy; the server's message when it refuses."""
        return self.control.load_config(
            overload_config(self.control.original, self.candidate, policy))

    def drain(self, timeout_s: float) -> bool:
        """Wait until the queue is empty: no request finished for half a second."""
        return self.control.drain(timeout_s, quiet_s=0.5)


def nominal_window_s(window_s: float, nominal_rps: float, *,
                     min_requests: int = MIN_NOMINAL_REQUESTS) -> float:
    """The nominal level's window: `window_s`, or long enough for `min_requests` requests."""
    return max(window_s, min_requests / nominal_rps) if nominal_rps > 0 else window_s


def measure_level(loadgen: Any, level: float, rate: float, slo_us: float,
                  settings: OverloadSettings, *, window_s: float | None = None
                  ) -> LevelFigures:
    """Open-loop Poisson arrivals at `rate` for one window after a warm-up."""
    import numpy as np

    m = loadgen.measure(mode="open", rate=rate, warmup_s=settings.warmup_s,
                        window_s=window_s or settings.window_s, max_windows=1,
                        max_inflight=settings.max_inflight)
    windows = m.windows
    if not windows:
        raise RuntimeError(f"the load generator returned no window at {rate:.0f} req/s")
    latency = np.concatenate([(w.done - np.minimum(w.sched, w.sent)) * 1e6 for w in windows])
    outcomes = np.concatenate([w.outcomes() for w in windows])
    lateness = np.concatenate([w.lateness_us() for w in windows])
    return level_figures(level, rate, sum(w.seconds for w in windows), latency.tolist(),
                         outcomes.tolist(), slo_us, lateness_us=lateness.tolist(),
                         late_threshold_us=settings.late_threshold_us)


def measure_policy(target: PolicyTarget, loadgen: Any, policy: OverloadPolicy,
                   goodput_rps: float, slo_us: float, settings: OverloadSettings,
                   rule: ChoiceRule | None, on_event: Callable[[OverloadEvent], None],
                   ) -> PolicyResult:
    """One policy at every level, in the order of `settings.levels` (the nominal one first)."""
    on_event(PolicyLoading(policy))
    target.drain(settings.drain_timeout_s)
    error = target.load(policy)
    if error is not None:
        result = PolicyResult(policy, status="failed", reason=f"Triton refused it: {error}")
        on_event(PolicyDone(result))
        return result
    levels: list[LevelFigures] = []
    notes: list[str] = []
    for i, level in enumerate(settings.levels):
        window = settings.nominal_window_s if i == 0 else None
        figures = measure_level(loadgen, level, level * goodput_rps, slo_us, settings,
                                window_s=window)
        levels.append(figures)
        on_event(LevelMeasured(policy, figures))
        if not target.drain(settings.drain_timeout_s):
            notes.append(f"still busy {settings.drain_timeout_s:.0f} s after {level:g}x: the "
                         "next load started on a backlog")
        shed = None if policy.is_reference or rule is None else nominal_shed(figures, rule)
        if shed is not None and settings.skip_disqualified:
            result = PolicyResult(policy, tuple(levels), "disqualified", shed)
            on_event(PolicyDone(result))
            return result
    result = PolicyResult(policy, tuple(levels), "measured", "; ".join(notes))
    on_event(PolicyDone(result))
    return result


# (a time.monotonic() time, a policy's estimated cost in seconds)
Deadline = tuple[float, Callable[[OverloadPolicy], float]]


def measure_overload(grpc_url: str, model: str, envelope: Envelope, candidate: Candidate,
                     goodput_rps: float, slo_us: float, *,
                     policies: Sequence[OverloadPolicy] | None = None,
                     later: Sequence[OverloadPolicy] = (),
                     settings: OverloadSettings | None = None, rule: ChoiceRule | None = None,
                     workers: int = 1, control: ModelControl | None = None,
                     deadline: Deadline | None = None, keep_s: float = 0.0,
                     on_event: Callable[[OverloadEvent], None] = lambda e: None,
                     ) -> OverloadResult:
    """Measure `policies` (default: policy_space from the goodput and SLO) on `candidate`,
    choose one and confirm it (its nominal level again, `settings.confirm_requests`
    requests; turned down, the next is chosen and confirmed), then `later` in the time left.
    With its own `ModelControl` (none given) the model is put back as it was at the end;
    with the caller's, the caller restores it. `deadline`: a policy or confirmation that
    would end after it is recorded as not measured, or not made; `keep_s`: the time the
    first policies leave for the confirmation (those that would eat into it are measured
    after it, with `later`)."""
    from triton_ops.tune.overload.policy import policy_space

    settings = settings or OverloadSettings()
    if rule is None and len(settings.levels) >= 2:
        rule = ChoiceRule(settings.levels[0], tuple(settings.levels[1:]))
    if policies is None:
        policies = policy_space(goodput_rps, slo_us, max_batch_size=candidate.max_batch_size,
                                max_queue_delay_us=candidate.max_queue_delay_us)
    own_control = control is None
    if control is None:
        control = ModelControl(grpc_url, model, load_timeout_s=settings.load_timeout_s)
    loadgen = _overload_loadgen(grpc_url, model, envelope, candidate, slo_us, settings, workers)
    run = _StageRun(PolicyTarget(control, candidate), loadgen, goodput_rps, slo_us, settings,
                    rule, deadline, on_event)
    try:
        results = run.confirm_choice(run.measure_all(policies, keep_s=keep_s))
        pending = [r.policy for r in results if r.status == NOT_MEASURED] + list(later)
        if pending:
            # Each leaves the time of one confirmation, which it may need if chosen.
            measured = [r for r in results if r.status != NOT_MEASURED]
            results = run.confirm_choice(measured + run.measure_all(
                pending, keep_s=run.confirm_seconds() if settings.confirm_requests else 0.0,
                known=measured))
            order = {p: i for i, p in enumerate([*policies, *later])}
            results.sort(key=lambda r: order.get(r.policy, len(order)))
    finally:
        try:
            run.target.drain(settings.drain_timeout_s)
            if own_control:
                control.restore()
        finally:
            loadgen.close()
            if own_control:
                control.close()
    choice, rule, notes = _choice(results, rule, slo_us)
    return OverloadResult(goodput_rps, slo_us, candidate.to_dict(), tuple(results), choice,
                          rule, notes + run.unconfirmed_note(results, choice))


@dataclass
class _StageRun:
    """Policies measured one after another on one target, within the deadline."""

    target: PolicyTarget
    loadgen: Any
    goodput_rps: float
    slo_us: float
    settings: OverloadSettings
    rule: ChoiceRule | None
    deadline: Deadline | None
    on_event: Callable[[OverloadEvent], None]

    def fits(self, seconds: float) -> bool:
        return self.deadline is None or time.monotonic() + seconds <= self.deadline[0]

    def measure_all(self, policies: Sequence[OverloadPolicy], keep_s: float = 0.0,
                    known: Sequence[PolicyResult] = ()) -> list[PolicyResult]:
        """Each policy that fits before the deadline with `keep_s` to spare. One that sheds
        at least as much as a policy already disqualified at the nominal load (in `known` or
        measured here) is disqualified with it, unmeasured."""
        results: list[PolicyResult] = []
        for p in policies:
            implied = self._implied_shed(p, [*known, *results])
            if implied is not None:
                result = PolicyResult(p, (), "disqualified", implied)
                self.on_event(PolicyDone(result))
            elif self.deadline is None or self.fits(self.deadline[1](p) + keep_s):
                result = measure_policy(self.target, self.loadgen, p, self.goodput_rps,
                                        self.slo_us, self.settings, self.rule, self.on_event)
            else:
                result = PolicyResult(p, (), NOT_MEASURED, "no time left in the stage's share "
                                      "of the budget")
            results.append(result)
        return results

    def _implied_shed(self, policy: OverloadPolicy, known: Sequence[PolicyResult]
                      ) -> str | None:
        if self.rule is None or not self.settings.skip_disqualified or policy.is_reference:
            return None
        return shed_like(policy, known, self.rule)

    def confirm_seconds(self) -> float:
        return self.settings.confirm_seconds(self.goodput_rps)

    def confirm_choice(self, results: list[PolicyResult]) -> list[PolicyResult]:
        """Confirm the chosen policy's nominal level; one turned down makes way for the next
        choice, confirmed in turn, while time is left."""
        results = list(results)
        while self.settings.confirm_requests > 0 and self.rule is not None:
            choice = _choice(results, self.rule, self.slo_us)[0]
            if choice is None or not choice.helps:
                break
            i = next(k for k, r in enumerate(results) if r.policy == choice.policy)
            if results[i].confirmation is not None or not self.fits(self.confirm_seconds()):
                break
            results[i] = confirm_policy(self.target, self.loadgen, results[i],
                                        self.goodput_rps, self.slo_us, self.settings,
                                        self.rule, self.on_event)
        return results

    def unconfirmed_note(self, results: Sequence[PolicyResult], choice: Choice | None
                         ) -> tuple[str, ...]:
        if self.settings.confirm_requests <= 0 or choice is None or not choice.helps:
            return ()
        chosen = next(r for r in results if r.policy == choice.policy)
        if chosen.confirmation is not None:
            return ()
        return (f"{chosen.policy.label()}: its {self.settings.levels[0]:g}x level was measured "
                "once, not confirmed (no time left)",)


def confirm_policy(target: PolicyTarget, loadgen: Any, result: PolicyResult,
                   goodput_rps: float, slo_us: float, settings: OverloadSettings,
                   rule: ChoiceRule, on_event: Callable[[OverloadEvent], None]
                   ) -> PolicyResult:
    """The policy's nominal level once more, for `settings.confirm_requests` requests; the
    result carries it, and is disqualified when both windows together shed too much."""
    policy = result.policy
    on_event(PolicyLoading(policy))
    target.drain(settings.drain_timeout_s)
    error = target.load(policy)
    if error is not None:
        return replace(result, status="failed", reason=f"Triton refused it: {error}")
    level = settings.levels[0]
    rate = level * goodput_rps
    figures = measure_level(loadgen, level, rate, slo_us, settings,
                            window_s=settings.confirm_window_s(rate))
    target.drain(settings.drain_timeout_s)
    confirmed = replace(result, confirmation=figures)
    shed = confirmed_shed(confirmed, rule)
    if shed is not None:
        confirmed = replace(confirmed, status="disqualified", reason=shed)
    on_event(NominalConfirmed(confirmed, shed is None))
    return confirmed


def _overload_loadgen(grpc_url: str, model: str, envelope: Envelope, candidate: Candidate,
                      slo_us: float, settings: OverloadSettings, workers: int) -> Any:
    """An open-loop load generator whose client deadline is the stage's (started)."""
    from triton_ops.loadgen.engine import LoadGenerator

    loadgen = LoadGenerator(grpc_url, model, envelope.inputs,
                            outputs=[o.name for o in envelope.outputs],
                            batching=candidate.max_batch_size > 0, workers=workers,
                            timeout_s=settings.timeout_s(slo_us))
    loadgen.start()
    return loadgen


def _choice(results: Sequence[PolicyResult], rule: ChoiceRule | None, slo_us: float,
            ) -> tuple[Choice | None, ChoiceRule, tuple[str, ...]]:
    """The choice and notes on it, or None with a note saying why none could be made."""
    if rule is None:
        return None, ChoiceRule(), ("no choice: measure a nominal and an overload level",)
    try:
        choice = choose_policy(results, rule)
    except ValueError as exc:
        return None, rule, (f"no choice: {exc}",)
    chosen = next(r for r in results if r.policy == choice.policy)
    slow = slow_rejections(chosen, slo_us)
    return choice, rule, (slow,) if slow else ()
