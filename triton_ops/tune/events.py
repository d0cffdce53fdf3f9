"""What a tune run reports while it runs: small immutable events, one class per kind.

The search and the live pieces emit them through one callable (`EventSink`); the CLI matches
on the class to print progress, and the run matches on the ones that must be saved for
`--resume`. No event carries a number that was not measured or predicted as named.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from triton_ops.tune.batcher import Candidate
from triton_ops.tune.overload.figures import LevelFigures, PolicyResult
from triton_ops.tune.overload.policy import OverloadPolicy
from triton_ops.tune.results import CandidateResult


@dataclass(frozen=True)
class PhaseStarted:
    """server, profile, baseline, search, remeasure, restore."""

    name: str


@dataclass(frozen=True)
class CandidateSkipped:
    """Left out before measuring (e.g. its GPU memory envelope does not fit)."""

    candidate: Candidate
    reason: str


@dataclass(frozen=True)
class CandidateStarted:
    candidate: Candidate
    predicted: float
    why: str  # why this one now (its rank, or the other end of delays the model cannot separate)


@dataclass(frozen=True)
class CandidateMeasured:
    result: CandidateResult
    baseline: bool = False


@dataclass(frozen=True)
class CandidateInfeasible:
    """Triton refused to load it; the search goes on."""

    result: CandidateResult


@dataclass(frozen=True)
class ProbeStarted:
    candidate: Candidate
    rate: float
    final: bool


@dataclass(frozen=True)
class DelaysUnresolved:
    """The model cannot separate these queue delays of one batch size and instance count, so
    both ends are measured."""

    low: Candidate
    high: Candidate
    resolution: float  # relative: the model's own spread between its predictions


@dataclass(frozen=True)
class SearchStopped:
    reason: str


@dataclass(frozen=True)
class RunnerUpRemeasured:
    candidate: Candidate
    previous: Candidate


@dataclass(frozen=True)
class ContenderRemeasured:
    """`candidate` measured alike with the winner in the search (or above the rate the winner
    held): probed at `rate`, a rate of the winner's re-measurement, to compare them there."""

    candidate: Candidate
    winner: Candidate
    rate: float


@dataclass(frozen=True)
class BaselineKept:
    reason: str


@dataclass(frozen=True)
class Note:
    text: str


@dataclass(frozen=True)
class WorkersAdded:
    """The load generator could not keep the rate: one more worker process."""

    workers: int


@dataclass(frozen=True)
class ProbeDisturbed:
    """A probe failed while other guests of the host took the CPU: measured again."""

    candidate: Candidate
    rate: float
    steal: float


@dataclass(frozen=True)
class StealPersists:
    """The last `probes` probes were all disturbed: failures stand from now on."""

    probes: int


# ---- the overload stage ------------------------------------------------------------------

@dataclass(frozen=True)
class OverloadStarted:
    """The overload stage begins on the chosen config: its share of the budget, the policies
    it will measure, and those left out for lack of time."""

    seconds: float
    share: float
    policies: tuple[OverloadPolicy, ...]
    left_out: tuple[OverloadPolicy, ...]
    window_s: float
    nominal_window_s: float | None = None  # the 0.8x level's, when longer


@dataclass(frozen=True)
class OverloadSkipped:
    reason: str


@dataclass(frozen=True)
class PolicyLoading:
    policy: OverloadPolicy


@dataclass(frozen=True)
class LevelMeasured:
    policy: OverloadPolicy
    figures: LevelFigures


@dataclass(frozen=True)
class PolicyDone:
    result: PolicyResult


@dataclass(frozen=True)
class NominalConfirmed:
    """The chosen policy's nominal level measured again (`result.confirmation`); `kept`:
    its rejections over both windows stayed within the limit."""

    result: PolicyResult
    kept: bool


OverloadEvent = PolicyLoading | LevelMeasured | PolicyDone | NominalConfirmed

TuneEvent = (PhaseStarted | CandidateSkipped | CandidateStarted | CandidateMeasured
             | CandidateInfeasible | ProbeStarted | DelaysUnresolved | SearchStopped
             | RunnerUpRemeasured | ContenderRemeasured | BaselineKept | Note | WorkersAdded
             | ProbeDisturbed | StealPersists | OverloadStarted | OverloadSkipped
             | PolicyLoading | LevelMeasured | PolicyDone | NominalConfirmed)

EventSink = Callable[[TuneEvent], None]


def ignore(event: TuneEvent) -> None:
    """The default sink."""
