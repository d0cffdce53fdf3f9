"""Choosing the queue policy from measured figures, and the stage's result for best.json.

The rule: among the policies that reject at most `max_nominal_rejected` (0.1%) of requests
at the nominal load (0.8x the goodput), take the one with the most requests answered within
the SLO per second over the overload levels (2x and 3x, summed). It must beat no policy by
more than the noise: by `min_gain` (5%) of no policy's answers or of the goodput, whichever
is more, and by two standard errors of the two counts (Poisson); otherwise no policy helps,
and none is chosen. Policies whose answers are within two standard errors of the most are
equals; among them the policy with fewer settings, then the longer timeout, then the larger
queue, then the one that sheds less at the nominal load wins: on the same config and load a
longer timeout or a larger queue never rejects more at the nominal load, while the nominal
shedding that matters (0.1%) is at the edge of what one window resolves, and the shortest
timeout that passed one window is the one most likely to shed more in the next. For the
same reason a policy that sheds at least as much as one disqualified at the nominal load
(a timeout no longer, a queue no larger) is disqualified with it, whatever its own window
showed.

One window of 1000 requests at the nominal load passes a policy that sheds 0.2% often (no
or one rejection in it): the chosen policy's nominal level is measured again, longer
(`confirmation`), and it must keep its rejections within the limit over both windows
together; otherwise it is turned down and the rule chooses again (measure.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from triton_ops.tune.overload.figures import LevelFigures, PolicyResult
from triton_ops.tune.overload.policy import OverloadPolicy

NOMINAL_LEVEL = 0.8
OVERLOAD_LEVELS = (2.0, 3.0)
LEVELS = (NOMINAL_LEVEL, *OVERLOAD_LEVELS)
MAX_NOMINAL_REJECTED = 0.001
MIN_GAIN = 0.05


@dataclass(frozen=True)
class ChoiceRule:
    nominal_level: float = NOMINAL_LEVEL
    overload_levels: tuple[float, ...] = OVERLOAD_LEVELS
    max_nominal_rejected: float = MAX_NOMINAL_REJECTED
    min_gain: float = MIN_GAIN

    def describe(self) -> str:
        levels = " and ".join(f"{x:g}x" for x in self.overload_levels)
        return (f"most requests answered within the SLO per second at {levels} the goodput, "
                f"among policies rejecting at most {self.max_nominal_rejected:.1%} at "
                f"{self.nominal_level:g}x; it must beat no policy by {self.min_gain:.0%} of "
                "no policy's answers or of the goodput, whichever is more, and by two "
                "standard errors of the counts; of policies within two standard errors of the "
                "most answers, the simpler, then the longer timeout, then the larger queue; "
                "the choice is confirmed by a longer window at the nominal load")


@dataclass(frozen=True)
class Choice:
    """The chosen policy (the reference when no policy helps) and why."""

    policy: OverloadPolicy
    helps: bool
    reason: str
    within_slo_rps: dict[float, float] = field(default_factory=dict)  # level -> answers/s
    reference_within_slo_rps: dict[float, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.to_dict(), "queue_policy": self.policy.config_json(),
            "helps": self.helps, "reason": self.reason,
            "within_slo_rps": [{"level": k, "rps": v} for k, v in self.within_slo_rps.items()],
            "reference_within_slo_rps": [{"level": k, "rps": v}
                                         for k, v in self.reference_within_slo_rps.items()],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Choice:
        return cls(OverloadPolicy.from_dict(data["policy"]), bool(data["helps"]),
                   str(data.get("reason", "")),
                   {float(d["level"]): float(d["rps"]) for d in data.get("within_slo_rps", [])},
                   {float(d["level"]): float(d["rps"])
                    for d in data.get("reference_within_slo_rps", [])})


def _overload_answers(result: PolicyResult, rule: ChoiceRule) -> tuple[int, float] | None:
    """Within-SLO answers summed over the overload levels, and the seconds they took
    (None unless every overload level was measured)."""
    levels = [result.at(level) for level in rule.overload_levels]
    if any(f is None for f in levels):
        return None
    return (sum(f.within_slo for f in levels if f is not None),
            sum(f.seconds for f in levels if f is not None))


def nominal_shed(figures: LevelFigures, rule: ChoiceRule) -> str | None:
    """Why figures at the nominal load disqualify their policy (None: they do not)."""
    if not math.isclose(figures.level, rule.nominal_level):
        return None
    if figures.rejected_share > rule.max_nominal_rejected:
        return (f"rejected {figures.rejected_share:.2%} at {rule.nominal_level:g}x "
                f"(at most {rule.max_nominal_rejected:.1%} allowed)")
    return None


def confirmed_shed(result: PolicyResult, rule: ChoiceRule) -> str | None:
    """Why the nominal level and its confirmation together disqualify the policy (None: they
    do not, or there is no confirmation)."""
    counts = result.rejected_at(rule.nominal_level)
    if result.confirmation is None or counts is None or not counts[1]:
        return None
    rejected, requests = counts
    if rejected / requests > rule.max_nominal_rejected:
        return (f"rejected {rejected / requests:.2%} at {rule.nominal_level:g}x with its "
                f"confirmation ({rejected} of {requests:,}; at most "
                f"{rule.max_nominal_rejected:.1%} allowed)")
    return None


def qualifies(result: PolicyResult, rule: ChoiceRule) -> tuple[bool, str]:
    """Whether a measured policy may be chosen, and if not, why."""
    if result.status != "measured":
        return False, result.reason or result.status
    if result.at(rule.nominal_level) is None:
        return False, f"not measured at {rule.nominal_level:g}x"
    shed = sheds_too_much(result, rule)
    if shed is not None:
        return False, shed
    if _overload_answers(result, rule) is None:
        return False, "not measured at every overload level"
    return True, ""


def sheds_too_much(result: PolicyResult, rule: ChoiceRule) -> str | None:
    """Why the policy's own nominal figures disqualify it (None: they do not)."""
    if result.status == "disqualified":
        return result.reason or result.status
    nominal = result.at(rule.nominal_level)
    if result.status != "measured" or nominal is None:
        return None
    return nominal_shed(nominal, rule) or confirmed_shed(result, rule)


def shed_like(policy: OverloadPolicy, results: Sequence[PolicyResult], rule: ChoiceRule
              ) -> str | None:
    """Why a policy of `results` that sheds too much at the nominal load disqualifies
    `policy`, which sheds at least as much (None when none does)."""
    for other in results:
        if other.policy == policy or other.policy.is_reference:
            continue
        if policy.sheds_at_least_as_much_as(other.policy) \
                and sheds_too_much(other, rule) is not None:
            return (f"sheds at least as much at {rule.nominal_level:g}x as "
                    f"{other.policy.label()}, which was disqualified there")
    return None


def _rates(result: PolicyResult, rule: ChoiceRule) -> dict[float, float]:
    return {lvl: f.within_slo_rps for lvl in rule.overload_levels
            if (f := result.at(lvl)) is not None}


def _describe(result: PolicyResult, rule: ChoiceRule) -> str:
    rates = ", ".join(f"{r:.0f}/s at {lvl:g}x" for lvl, r in _rates(result, rule).items())
    return f"{result.policy.label()} ({rates} within the SLO)"


def _goodput(reference: PolicyResult, rule: ChoiceRule) -> float:
    """The goodput the levels are multiples of (0 when the figures do not say)."""
    nominal = reference.at(rule.nominal_level)
    return nominal.target_rps / nominal.level if nominal and nominal.level > 0 else 0.0


@dataclass(frozen=True)
class _Ranked:
    """A qualifying policy's overload answers (summed over the levels) and nominal shed."""

    result: PolicyResult
    count: int
    seconds: float
    shed: float

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def noise(self, other: _Ranked) -> float:
        """Two standard errors of the difference of the two rates (Poisson counts)."""
        return 2 * math.sqrt(self.count / self.seconds**2 + other.count / other.seconds**2)

    def preference(self) -> tuple[int, int, int, float]:
        policy = self.result.policy
        return (policy.settings, -policy.timeout_us, -policy.max_queue_size, self.shed)


def _safest_of_equals(ranked: Sequence[_Ranked]) -> _Ranked:
    """The policy the rule takes: of those within the noise of the most answers, the one
    preferred (`_Ranked.preference`)."""
    most = max(ranked, key=lambda r: r.rate)
    equals = [r for r in ranked if most.rate - r.rate <= most.noise(r)]
    return min(equals, key=lambda r: r.preference())


def choose_policy(results: Sequence[PolicyResult], rule: ChoiceRule | None = None) -> Choice:
    """Apply the rule of the module docstring to measured policies."""
    rule = rule or ChoiceRule()
    if not rule.overload_levels:
        raise ValueError("the rule names no overload level")
    reference = next((r for r in results if r.policy.is_reference), None)
    if reference is None or _overload_answers(reference, rule) is None:
        raise ValueError("the reference (no policy) must be measured at every overload level")
    ref_count, ref_seconds = _overload_answers(reference, rule)  # type: ignore[misc]
    ref_rates = _rates(reference, rule)
    ranked = []
    alike: list[str] = []  # passed their own window, disqualified with a looser policy
    for r in results:
        if r.policy.is_reference or not qualifies(r, rule)[0]:
            continue
        if (like := shed_like(r.policy, results, rule)) is not None:
            alike.append(f"{r.policy.label()} {like}")
            continue
        count, seconds = _overload_answers(r, rule)  # type: ignore[misc]
        rejected, requests = r.rejected_at(rule.nominal_level) or (0, 0)
        shed = rejected / requests if requests else 0.0
        ranked.append(_Ranked(r, count, seconds, shed))
    if not ranked:
        return Choice(OverloadPolicy(), False,
                      "no policy helps: none kept its rejections within "
                      f"{rule.max_nominal_rejected:.1%} at {rule.nominal_level:g}x"
                      + "".join(f" ({a})" for a in alike)
                      + f"; {_describe(reference, rule)} stays", ref_rates, ref_rates)
    chosen = _safest_of_equals(ranked)
    best, count, seconds = chosen.result, chosen.count, chosen.seconds
    # Compare rates per second of window (the levels of two policies may differ in length).
    ref_per_s, best_per_s = ref_count / ref_seconds, count / seconds
    noise = 2 * math.sqrt(count / seconds**2 + ref_count / ref_seconds**2)
    gain = best_per_s - ref_per_s
    # Where no policy answers (almost) nothing in time, a few answers more are no help: the
    # gain is judged against the goodput too.
    if gain <= rule.min_gain * max(ref_per_s, _goodput(reference, rule)) or gain <= noise:
        return Choice(OverloadPolicy(), False,
                      f"no policy helps: the best, {_describe(best, rule)}, does not beat "
                      f"{_describe(reference, rule)} by more than the noise", ref_rates,
                      ref_rates)
    return Choice(best.policy, True,
                  f"{_describe(best, rule)} beats {_describe(reference, rule)}",
                  _rates(best, rule), ref_rates)


def slow_rejections(result: PolicyResult, slo_us: float) -> str | None:
    """A warning when a policy's rejections came back later than the SLO (p99) at some load:
    its clients wait that long to be told, and may retry late. None when they did not."""
    late = [f for f in result.levels if f.rejections_within(slo_us) is False]
    if not late:
        return None
    worst = max(late, key=lambda f: f.p99_rejected.value)
    return (f"{result.policy.label()}: its rejections took {worst.p99_rejected.value / 1000:.0f} "
            f"ms at the p99 at {worst.level:g}x (n={worst.p99_rejected.n}), over the SLO of "
            f"{slo_us / 1000:g} ms: clients wait that long to be told")


@dataclass(frozen=True)
class OverloadResult:
    """The overload stage: what was measured on which config, and the choice."""

    goodput_rps: float
    slo_us: float
    config: dict[str, Any]  # the batching config measured (Candidate.to_dict())
    results: tuple[PolicyResult, ...]
    choice: Choice | None
    rule: ChoiceRule = ChoiceRule()
    notes: tuple[str, ...] = ()
    # When `config` is not the config tune chose for goodput: its own measured goodput (search)
    # and why the stage measured it instead.
    config_goodput_rps: float | None = None
    config_reason: str | None = None

    def chosen_result(self) -> PolicyResult | None:
        if self.choice is None:
            return None
        return next((r for r in self.results if r.policy == self.choice.policy), None)

    def holds_at(self, level: float) -> float | None:
        """Requests one server answers within the SLO per second at `level` x the goodput
        offered, with the chosen policy (None when not measured)."""
        chosen = self.chosen_result()
        figures = chosen.at(level) if chosen else None
        return figures.within_slo_rps if figures else None

    def to_dict(self) -> dict[str, Any]:
        """best.json's `overload`."""
        return {
            "goodput_rps": self.goodput_rps, "slo_p99_us": self.slo_us, "config": self.config,
            "levels": [self.rule.nominal_level, *self.rule.overload_levels],
            "rule": self.rule.describe(),
            "max_nominal_rejected": self.rule.max_nominal_rejected,
            "min_gain": self.rule.min_gain,
            "policies": [r.to_dict() for r in self.results],
            "chosen": self.choice.to_dict() if self.choice else None,
            "holds_at_2x_rps": self.holds_at(2.0),
            "notes": list(self.notes),
            "config_goodput_rps": self.config_goodput_rps,
            "config_reason": self.config_reason,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OverloadResult:
        levels = [float(x) for x in data.get("levels", LEVELS)]
        rule = ChoiceRule(levels[0], tuple(levels[1:]),
                          float(data.get("max_nominal_rejected", MAX_NOMINAL_REJECTED)),
                          float(data.get("min_gain", MIN_GAIN)))
        chosen = data.get("chosen")
        return cls(float(data["goodput_rps"]), float(data["slo_p99_us"]),
                   dict(data.get("config") or {}),
                   tuple(PolicyResult.from_dict(r) for r in data.get("policies", [])),
                   Choice.from_dict(chosen) if chosen else None, rule,
                   tuple(data.get("notes", [])),
                   (float(data["config_goodput_rps"])
                    if data.get("config_goodput_rps") is not None else None),
                   data.get("config_reason"))
