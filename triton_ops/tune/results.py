"""What a tune run measured: one probe, one candidate's bisection, the whole search (plain data).

`result_to_dict` / `result_from_dict` are the form state.json keeps for `--resume`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from triton_ops.tune.batcher import Candidate
from triton_ops.tune.stats import QuantileEstimate, Verdict


@dataclass
class ProbeResult:
    """One measurement of one candidate at one arrival rate."""

    rate: float  # requested arrival rate (req/s)
    verdict: Verdict
    p99: QuantileEstimate  # latency in microseconds
    throughput: float = 0.0  # completed requests/s
    error_rate: float = 0.0
    seconds: float = 0.0
    # share of the server machine's CPU the hypervisor gave to other guests (None: unknown)
    steal: float | None = None
    # a failure decided by one window while the others together pass (a re-measurement
    # measures such a rate once more before stepping down)
    one_bad_window: bool = False


@dataclass
class CandidateResult:
    candidate: Candidate
    predicted_goodput: float  # what the model ranked it with, before it was measured
    goodput: float = 0.0  # highest rate that passed; 0 when none did
    p99_at_goodput: QuantileEstimate | None = None
    status: str = "measured"  # measured | infeasible | skipped
    reason: str = ""
    generator_limited: bool = False  # the goodput is a lower bound: the client saturated
    probes: list[ProbeResult] = field(default_factory=list)
    seconds: float = 0.0
    why: str = ""  # why the search measured it (its rank, or an end of unresolved delays)


@dataclass
class Remeasurement:
    """One config's longer re-measurement at the end of a run: every probe, in order."""

    candidate: Candidate
    probes: list[ProbeResult] = field(default_factory=list)
    # the highest rate that held; 0.0 when none of the probes held; None when it could not
    # be re-measured at all (no budget left, or it failed to load)
    rate: float | None = None

    @property
    def last(self) -> ProbeResult | None:
        return self.probes[-1] if self.probes else None

    @property
    def held(self) -> bool:
        return bool(self.rate)


@dataclass
class StopMargin:
    """Why the search stopped before the budget: every remaining candidate is predicted
    clearly worse than the best measured one, by at least `fraction` of it."""

    best_remaining: Candidate
    optimistic_goodput: float  # the most the best remaining one is expected to hold
    best_measured: Candidate
    best_goodput: float

    @property
    def fraction(self) -> float:
        return 1.0 - self.optimistic_goodput / self.best_goodput if self.best_goodput else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"best_remaining": self.best_remaining.to_dict(),
                "optimistic_goodput": self.optimistic_goodput,
                "best_measured": self.best_measured.to_dict(),
                "best_goodput": self.best_goodput, "fraction_below": self.fraction}


@dataclass
class SearchOutcome:
    results: list[CandidateResult]
    # the search's winner (highest goodput in the bisections), or the runner-up that held
    # better than it when re-measured
    best: CandidateResult | None
    final: ProbeResult | None  # the re-measurement of the best at its goodput
    final_rate: float
    calibration: float  # median measured/predicted goodput
    stopped_by_budget: bool
    baseline: CandidateResult | None = None
    baseline_final: ProbeResult | None = None  # the baseline re-measured the same way
    baseline_final_rate: float = 0.0
    keep_baseline: bool = False  # recommend the current config, not `best`
    reason: str = ""  # why the current config is kept
    notes: list[str] = field(default_factory=list)  # e.g. a re-measurement that did not fit
    # every re-measurement, in the order made (the chosen config's says what was tried)
    remeasurements: list[Remeasurement] = field(default_factory=list)
    stop: str = ""  # why the search stopped measuring candidates
    stop_margin: StopMargin | None = None  # set when it stopped because the rest were worse

    @property
    def chosen(self) -> CandidateResult | None:
        """The recommendation: the baseline when it is kept, else the winner."""
        return self.baseline if self.keep_baseline else self.best

    def remeasurement_of(self, candidate: Candidate) -> Remeasurement | None:
        """The last re-measurement of `candidate`, if it was re-measured."""
        found = [r for r in self.remeasurements if r.candidate.key == candidate.key]
        return found[-1] if found else None


def estimate_to_dict(est: QuantileEstimate | None) -> dict[str, float] | None:
    if est is None:
        return None
    return {"p99_us": est.value, "ci_low_us": est.low, "ci_high_us": est.high, "n": est.n,
            "confidence": est.confidence}


def estimate_from_dict(data: dict[str, Any] | None) -> QuantileEstimate | None:
    if not data:
        return None
    return QuantileEstimate(0.99, float(data["p99_us"]), float(data["ci_low_us"]),
                            float(data["ci_high_us"]), int(data["n"]),
                            float(data.get("confidence", 0.95)))


def result_to_dict(r: CandidateResult) -> dict[str, Any]:
    return {
        "candidate": r.candidate.to_dict(), "predicted_goodput": r.predicted_goodput,
        "goodput": r.goodput, "p99": estimate_to_dict(r.p99_at_goodput), "status": r.status,
        "reason": r.reason, "generator_limited": r.generator_limited, "seconds": r.seconds,
        "probes": len(r.probes), "why": r.why,
    }


def result_from_dict(data: dict[str, Any]) -> CandidateResult:
    return CandidateResult(
        Candidate.from_dict(data["candidate"]), float(data["predicted_goodput"]),
        float(data["goodput"]), estimate_from_dict(data.get("p99")), data["status"],
        data.get("reason", ""), bool(data.get("generator_limited")),
        seconds=float(data.get("seconds", 0.0)), why=str(data.get("why", "")),
    )
