"""What one queue policy did at one offered load: the figures of the overload stage.

All latencies run from each request's scheduled send time (open-loop arrivals: a late send
is charged to the measurement). A request counts as answered within the SLO only when it
succeeded within the p99 bound; rejected, timed-out (client deadline) and failed requests
never do. The p99 of the answered requests and of the rejections come with order-statistic
confidence intervals and their sample counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from triton_ops.loadgen.outcome import Outcome
from triton_ops.tune.overload.policy import OverloadPolicy
from triton_ops.tune.stats import QuantileEstimate, quantile_ci


def estimate_dict(est: QuantileEstimate) -> dict[str, Any]:
    """A p99 and its interval for JSON (None where there were no samples or no bound)."""
    def finite(x: float) -> float | None:
        return float(x) if math.isfinite(x) else None

    return {"p99_us": finite(est.value), "ci_low_us": finite(est.low),
            "ci_high_us": finite(est.high), "n": est.n, "confidence": est.confidence}


def estimate_from_dict(data: Mapping[str, Any]) -> QuantileEstimate:
    def number(key: str, missing: float) -> float:
        value = data.get(key)
        return missing if value is None else float(value)

    return QuantileEstimate(0.99, number("p99_us", math.nan), number("ci_low_us", -math.inf),
                            number("ci_high_us", math.inf), int(data.get("n", 0)),
                            float(data.get("confidence", 0.95)))


@dataclass(frozen=True)
class LevelFigures:
    """One policy at one offered load (`level` x the config's goodput)."""

    level: float
    target_rps: float  # the rate asked of the load generator
    seconds: float  # the measured window (warm-up excluded)
    requests: int  # scheduled in the window
    answered: int
    within_slo: int
    rejected_queue_full: int
    rejected_timeout: int
    client_timeouts: int
    errors: int
    p99_answered: QuantileEstimate
    p99_rejected: QuantileEstimate
    late_fraction: float  # sends more than the late threshold behind their schedule

    @property
    def offered_rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def within_slo_rps(self) -> float:
        return self.within_slo / self.seconds if self.seconds > 0 else 0.0

    @property
    def rejected(self) -> int:
        return self.rejected_queue_full + self.rejected_timeout

    @property
    def rejected_share(self) -> float:
        return self.rejected / self.requests if self.requests else 0.0

    def rejections_within(self, slo_us: float) -> bool | None:
        """Whether the rejections came back within the SLO at the p99 (None: none seen)."""
        if self.rejected == 0:
            return None
        return self.p99_rejected.value <= slo_us

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level, "target_rps": self.target_rps,
            "offered_rps": self.offered_rps, "seconds": self.seconds,
            "requests": self.requests, "answered": self.answered,
            "within_slo": self.within_slo, "within_slo_rps": self.within_slo_rps,
            "rejected": self.rejected, "rejected_queue_full": self.rejected_queue_full,
            "rejected_timeout": self.rejected_timeout, "rejected_share": self.rejected_share,
            "client_timeouts": self.client_timeouts, "errors": self.errors,
            "p99_answered": estimate_dict(self.p99_answered),
            "p99_rejected": estimate_dict(self.p99_rejected),
            "late_fraction": self.late_fraction,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LevelFigures:
        return cls(
            float(data["level"]), float(data["target_rps"]), float(data["seconds"]),
            int(data["requests"]), int(data["answered"]), int(data["within_slo"]),
            int(data["rejected_queue_full"]), int(data["rejected_timeout"]),
            int(data["client_timeouts"]), int(data["errors"]),
            estimate_from_dict(data["p99_answered"]), estimate_from_dict(data["p99_rejected"]),
            float(data.get("late_fraction", 0.0)),
        )


def level_figures(level: float, target_rps: float, seconds: float,
                  latency_us: Sequence[float], outcomes: Sequence[int], slo_us: float, *,
                  lateness_us: Sequence[float] = (),
                  late_threshold_us: float = 2000.0) -> LevelFigures:
    """The figures from one window's samples: per request its latency (from the scheduled
    send) and its Outcome value, in the same order."""
    if len(latency_us) != len(outcomes):
        raise ValueError("one latency per outcome")
    answered = [lat for lat, o in zip(latency_us, outcomes, strict=True) if o == Outcome.OK]
    rejected = [lat for lat, o in zip(latency_us, outcomes, strict=True)
                if Outcome(o).rejected]
    late = sum(1 for v in lateness_us if v > late_threshold_us)
    return LevelFigures(
        level=level, target_rps=target_rps, seconds=seconds, requests=len(outcomes),
        answered=len(answered), within_slo=sum(1 for lat in answered if lat <= slo_us),
        rejected_queue_full=sum(1 for o in outcomes if o == Outcome.REJECTED_QUEUE_FULL),
        rejected_timeout=sum(1 for o in outcomes if o == Outcome.REJECTED_TIMEOUT),
        client_timeouts=sum(1 for o in outcomes if o == Outcome.CLIENT_TIMEOUT),
        errors=sum(1 for o in outcomes if o == Outcome.ERROR),
        p99_answered=quantile_ci(answered, 0.99), p99_rejected=quantile_ci(rejected, 0.99),
        late_fraction=late / len(lateness_us) if len(lateness_us) else 0.0,
    )


@dataclass(frozen=True)
class PolicyResult:
    """One policy's figures per offered load, in the order measured.

    status: "measured"; "disqualified" when it shed more than allowed at the nominal load
    (the overload levels were then not measured); "failed" when Triton would not load it.
    """

    policy: OverloadPolicy
    levels: tuple[LevelFigures, ...] = ()
    status: str = "measured"
    reason: str = ""
    # The nominal level measured again, longer, once the policy was chosen (overload.choice).
    confirmation: LevelFigures | None = None

    def at(self, level: float) -> LevelFigures | None:
        for figures in self.levels:
            if math.isclose(figures.level, level):
                return figures
        return None

    def rejected_at(self, level: float) -> tuple[int, int] | None:
        """Rejected and scheduled requests at `level`, with the confirmation's when it was
        measured there (None: the level was not measured)."""
        figures = self.at(level)
        if figures is None:
            return None
        windows = [figures]
        if self.confirmation is not None and math.isclose(self.confirmation.level, level):
            windows.append(self.confirmation)
        return sum(f.rejected for f in windows), sum(f.requests for f in windows)

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.to_dict(), "queue_policy": self.policy.config_json(),
                "status": self.status, "reason": self.reason,
                "levels": [f.to_dict() for f in self.levels],
                "confirmation": self.confirmation.to_dict() if self.confirmation else None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolicyResult:
        confirmation = data.get("confirmation")
        return cls(OverloadPolicy.from_dict(data["policy"]),
                   tuple(LevelFigures.from_dict(f) for f in data.get("levels", [])),
                   str(data.get("status", "measured")), str(data.get("reason", "")),
                   LevelFigures.from_dict(confirmation) if confirmation else None)
