"""The overload stage's share of a tune run: how long it may take, and what fits in that time.

`tune` gives the stage `OVERLOAD_SHARE` of its budget, kept back from the search. Each policy
costs a model load, then per load level a warm-up, a measurement window and a drain; the
reference (no policy) also drains the backlog its overload levels leave. The plan takes the
longest window with which every policy fits; when none does, the shortest window and the
policies that fit, in the order of the space (no policy first). Fewer than two policies
cannot be compared: then the stage is skipped, and the plan says why. The plan leaves time
to confirm the choice (`confirm_seconds`) when two policies still fit; the policies it
leaves out are measured after the confirmation, each leaving the time of another.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from triton_ops.tune.batcher import Candidate
from triton_ops.tune.events import OverloadSkipped, OverloadStarted
from triton_ops.tune.overload.choice import LEVELS, OverloadResult
from triton_ops.tune.overload.config import ProtectedConfig
from triton_ops.tune.overload.measure import OverloadSettings, nominal_window_s
from triton_ops.tune.overload.policy import OverloadPolicy

if TYPE_CHECKING:
    from triton_ops.envelope.model import Envelope
    from triton_ops.tune.control import ModelControl

OVERLOAD_SHARE = 0.3
# (warm-up, window) seconds per load level, longest first.
WINDOWS = ((1.0, 4.0), (1.0, 3.0), (0.5, 2.0))
DRAIN_S = 0.6  # a drain with nothing queued: the quiet time and one poll
START_S = 2.0  # the stage's own load generator starting


@dataclass(frozen=True)
class StageTiming:
    levels: tuple[float, ...]
    warmup_s: float
    window_s: float
    load_s: float  # one model load, as tune saw it
    nominal_window_s: float | None = None  # the first level's window (None: window_s)

    def level_seconds(self, index: int) -> float:
        window = self.nominal_window_s if index == 0 and self.nominal_window_s else self.window_s
        return self.warmup_s + window

    def policy_seconds(self, policy: OverloadPolicy) -> float:
        """One policy: its load, and per level warm-up, window and drain; the reference's
        queue also holds what arrived above the goodput at each overload level."""
        seconds = self.load_s + DRAIN_S
        for i, level in enumerate(self.levels):
            level_s = self.level_seconds(i)
            seconds += level_s + DRAIN_S
            if policy.is_reference:
                seconds += max(0.0, level - 1.0) * level_s
        return seconds

    def stage_seconds(self, policies: Sequence[OverloadPolicy]) -> float:
        """The stage's own start and these policies, one after another."""
        return START_S + sum(self.policy_seconds(p) for p in policies)


@dataclass(frozen=True)
class StagePlan:
    seconds: float  # the time the stage has
    timing: StageTiming
    policies: tuple[OverloadPolicy, ...]  # to measure, in order
    left_out: tuple[OverloadPolicy, ...]  # no time for them
    skip_reason: str | None = None  # set: the stage does not run
    confirm_reserved: bool = False  # the policies leave the time of one confirmation

    def estimate_s(self) -> float:
        return self.timing.stage_seconds(self.policies)


def plan_stage(seconds: float, policies: Sequence[OverloadPolicy], *,
               levels: tuple[float, ...], load_s: float, goodput_rps: float = 0.0
               ) -> StagePlan:
    """The longest window with which every policy fits in `seconds`, or the shortest and
    the policies that fit. See the module docstring. With the goodput, the nominal level's
    window is long enough for the requests that resolve its rejection limit, unless then
    fewer than two policies fit (the nominal level then has the others' window)."""
    plan = _plan(seconds, policies, levels=levels, load_s=load_s, goodput_rps=goodput_rps)
    if plan.skip_reason is not None and goodput_rps:
        shorter = _plan(seconds, policies, levels=levels, load_s=load_s, goodput_rps=0.0)
        if shorter.skip_reason is None:
            return shorter
    return plan


def _plan(seconds: float, policies: Sequence[OverloadPolicy], *, levels: tuple[float, ...],
          load_s: float, goodput_rps: float) -> StagePlan:
    def timing_for(warmup_s: float, window_s: float) -> StageTiming:
        nominal = nominal_window_s(window_s, levels[0] * goodput_rps) if goodput_rps else None
        return StageTiming(levels, warmup_s, window_s, load_s, nominal)

    timing = timing_for(*WINDOWS[-1])
    for warmup_s, window_s in WINDOWS:
        timing = timing_for(warmup_s, window_s)
        if timing.stage_seconds(policies) <= seconds:
            return StagePlan(seconds, timing, tuple(policies), ())
    fitting: list[OverloadPolicy] = []
    used = START_S
    for policy in policies:
        cost = timing.policy_seconds(policy)
        if used + cost > seconds:
            break
        fitting.append(policy)
        used += cost
    left_out = tuple(p for p in policies if p not in fitting)
    if len(fitting) < 2:
        needed = timing.stage_seconds(policies[:2])
        return StagePlan(seconds, timing, (), tuple(policies), skip_reason=(
            f"its share of the budget ({seconds:.0f} s) does not fit no policy and one policy "
            f"({needed:.0f} s); give a longer --budget, or --no-overload"))
    return StagePlan(seconds, timing, tuple(fitting), left_out)


def confirm_seconds(goodput_rps: float, load_s: float) -> float:
    """Confirming the choice (measure.confirm_policy) with the shortest warm-up, before the
    plan has chosen one."""
    return OverloadSettings(warmup_s=WINDOWS[-1][0],
                            confirm_overhead_s=_confirm_overhead_s(load_s)
                            ).confirm_seconds(goodput_rps)


def _confirm_overhead_s(load_s: float) -> float:
    """A confirmation's model load and its two drains."""
    return load_s + 2 * DRAIN_S


def overload_share_s(budget_s: float) -> float:
    """The seconds of a tune budget kept back for the overload stage."""
    return OVERLOAD_SHARE * budget_s


@dataclass(frozen=True)
class OverloadStage:
    """What the stage did within a tune run: its plan, its result, or why it did not run."""

    share: float
    seconds: float
    plan: StagePlan | None = None
    result: OverloadResult | None = None
    elapsed_s: float = 0.0
    not_run: str | None = None  # why there is no result

    @classmethod
    def run(cls, grpc_url: str, envelope: Envelope, chosen: Mapping[str, Any], slo_us: float,
            *, seconds: float, share: float, load_s: float, control: ModelControl,
            workers: int, on_event: Callable[[Any], None],
            protect: Callable[[Candidate, float], ProtectedConfig] | None = None
            ) -> OverloadStage:
        """Plan the stage for the chosen config (best.json's form) and measure it, or the
        config `protect` names for it (`overload.config.protected_config`), at multiples of
        the goodput of the config measured: the one `--apply` writes with the policy and
        the capacity plan counts replicas of, so that 0.8x is the load a replica carries at
        the plan's utilisation cap."""
        started = time.monotonic()
        if not chosen.get("slo_met") or not chosen.get("goodput") or not chosen.get("chosen"):
            return cls._skipped(share, seconds, "no config was confirmed under the SLO: there is "
                                "no goodput to offer multiples of", on_event)
        from triton_ops.tune.overload.policy import policy_space

        protected = (protect or _itself)(Candidate.from_dict(chosen["chosen"]),
                                         float(chosen["goodput"]))
        candidate, goodput = protected.candidate, protected.goodput_rps
        policies = policy_space(goodput, slo_us, max_batch_size=candidate.max_batch_size,
                                max_queue_delay_us=candidate.max_queue_delay_us,
                                full_batch_us=protected.full_batch_us)
        # The plan leaves time to confirm the choice, unless then too little is left for it.
        plan = replace(plan_stage(seconds - confirm_seconds(goodput, load_s), policies,
                                  levels=LEVELS, load_s=load_s, goodput_rps=goodput),
                       confirm_reserved=True)
        if plan.skip_reason is not None:
            plan = plan_stage(seconds, policies, levels=LEVELS, load_s=load_s,
                              goodput_rps=goodput)
        plan = replace(plan, seconds=seconds)
        if plan.skip_reason is not None:
            return cls._skipped(share, seconds, plan.skip_reason, on_event, plan)
        on_event(OverloadStarted(seconds, share, plan.policies, plan.left_out,
                                 plan.timing.window_s, plan.timing.nominal_window_s))
        result, failure = _measure(grpc_url, envelope, candidate, goodput, slo_us, plan,
                                   control, workers, on_event)
        if result is not None and protected.reason is not None:
            result = replace(result, config_goodput_rps=protected.goodput_rps,
                             config_reason=protected.reason)
        return cls(share, seconds, plan, result, time.monotonic() - started, failure)

    @classmethod
    def _skipped(cls, share: float, seconds: float, reason: str,
                 on_event: Callable[[Any], None], plan: StagePlan | None = None
                 ) -> OverloadStage:
        on_event(OverloadSkipped(reason))
        return cls(share, seconds, plan, not_run=reason)

    def to_best(self) -> dict[str, Any]:
        """best.json's `overload` (None when the stage has no result) and `overload_stage`."""
        plan = self.plan
        stage = {
            "budget_share": self.share, "seconds": round(self.seconds, 1),
            "elapsed_s": round(self.elapsed_s, 1), "not_run": self.not_run,
            "warmup_s": plan.timing.warmup_s if plan else None,
            "window_s": plan.timing.window_s if plan else None,
            "nominal_window_s": plan.timing.nominal_window_s if plan else None,
        }
        return {"overload": self.result.to_dict() if self.result else None,
                "overload_stage": stage}


def _itself(candidate: Candidate, goodput: float) -> ProtectedConfig:
    return ProtectedConfig(candidate, goodput, None)


def _measure(grpc_url: str, envelope: Envelope, candidate: Any, goodput: float,
             slo_us: float, plan: StagePlan, control: ModelControl, workers: int,
             on_event: Callable[[Any], None]) -> tuple[OverloadResult | None, str | None]:
    """The measurement; a failure is reported, and the batching result stands."""
    from triton_ops.tune.overload.measure import measure_overload

    settings = OverloadSettings(warmup_s=plan.timing.warmup_s, window_s=plan.timing.window_s,
                                nominal_window_s=plan.timing.nominal_window_s,
                                drain_timeout_s=max(5.0, min(60.0, plan.seconds / 4)),
                                confirm_overhead_s=_confirm_overhead_s(plan.timing.load_s))
    # Every policy of the space is offered: one disqualified at the nominal load costs one
    # level instead of three, which may leave time for one the plan left out.
    deadline = (time.monotonic() + plan.seconds - START_S, plan.timing.policy_seconds)
    # The plan's time for the confirmation is kept while its policies run longer than planned.
    keep_s = settings.confirm_seconds(goodput) if plan.confirm_reserved else 0.0
    try:
        return measure_overload(grpc_url, envelope.name, envelope, candidate, goodput, slo_us,
                                policies=plan.policies, later=plan.left_out, settings=settings,
                                workers=workers, control=control, deadline=deadline,
                                keep_s=keep_s, on_event=on_event), None
    except Exception as exc:  # noqa: BLE001 - the stage is an addition to the batching result
        return None, f"the overload stage failed: {exc}"
