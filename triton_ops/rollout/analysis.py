"""Canary analysis: one window of metrics for stable and canary in, a Verdict out.

Pure core: plain data in, plain data out, no I/O. Every rollout target (the single Triton
that drives its own traffic, Kubernetes with Prometheus) fills a `WindowMetrics` for one
analysis interval and calls `analyze`. The verdict is

- PASS: every check had enough data and passed;
- FAIL: at least one check failed (with `critical` set when the failure must roll back at
  once, whatever the failure limit: the canary answered with wrong outputs);
- INCONCLUSIVE: no check failed but at least one lacked data. The engine holds the step
  and never promotes on an inconclusive window.

A model can answer 200 with a wrong output, so besides error rate and latency the verdict
checks OUTPUT AGREEMENT: a sample of identical requests sent to both versions, their outputs
compared with the envelope's tolerance (`AgreementSample`).
"""

from __future__ import annotations

import math
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field


class Result(str, Enum):
    PASS = "PASS"
    FAIL = "FAIL"
    INCONCLUSIVE = "INCONCLUSIVE"


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VersionWindow(_Data):
    """What one version served during one analysis window."""

    requests: int = Field(default=0, ge=0, description="requests sent (successes + errors)")
    errors: int = Field(default=0, ge=0, description="requests that failed (any error status)")
    p99_latency_us: float | None = Field(
        default=None, ge=0, description="p99 of successful requests; None when none succeeded"
    )

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @classmethod
    def from_latencies(cls, latencies_us: list[float], errors: int) -> VersionWindow:
        """Build from raw successful-request latencies (microseconds) and an error count."""
        return cls(
            requests=len(latencies_us) + errors,
            errors=errors,
            p99_latency_us=percentile(latencies_us, 99.0) if latencies_us else None,
        )


class AgreementSample(_Data):
    """One request sent to both versions and the outputs compared (shadow comparison).

    `agree` is None when the comparison could not be made (the stable side failed, or the
    canary failed: that failure is counted as a canary error, not as a disagreement).
    """

    agree: bool | None
    detail: str = ""
    canary_error: bool = Field(default=False, description="the canary's request failed")
    stable_latency_us: float | None = Field(default=None, ge=0)
    canary_latency_us: float | None = Field(default=None, ge=0)


class WindowMetrics(_Data):
    """Everything observed for one analysis interval, on the same traffic."""

    stable: VersionWindow = Field(default_factory=VersionWindow)
    canary: VersionWindow = Field(default_factory=VersionWindow)
    agreement: list[AgreementSample] = Field(default_factory=list)
    duration_s: float = Field(default=0.0, ge=0)
    canary_down: str | None = Field(
        default=None,
        description="set by the target when the canary is not ready at all (process died, "
        "unloaded): a failure with no need for statistics",
    )

    @property
    def compared(self) -> list[AgreementSample]:
        return [s for s in self.agreement if s.agree is not None]

    @property
    def disagreements(self) -> list[AgreementSample]:
        return [s for s in self.agreement if s.agree is False]


class AnalysisPolicy(_Data):
    """Thresholds of the analysis; `policy_from_envelope` fills them from an envelope."""

    min_requests: int = Field(default=20, ge=1, description="canary requests per window")
    min_agreement_samples: int = Field(default=5, ge=0, description="0 turns shadow off")
    max_error_rate: float = Field(default=0.001, ge=0, le=1)
    p99_slo_us: float | None = Field(default=None, gt=0, description="absolute p99 bound")
    max_p99_ratio: float = Field(
        default=1.5, ge=1, description="canary p99 may be at most this times stable's ..."
    )
    p99_slack_us: float = Field(
        default=5000, ge=0, description="... plus this slack, so sub-ms noise never fails"
    )
    max_disagreement_rate: float = Field(
        default=0.0, ge=0, le=1, description="fraction of shadow samples allowed to differ"
    )
    disagreement_is_critical: bool = Field(
        default=True, description="wrong outputs roll back at once, ignoring the failure limit"
    )


class Check(_Data):
    """One named check of a verdict."""

    name: str
    result: Result
    reason: str


class Verdict(_Data):
    result: Result
    critical: bool = False
    checks: list[Check] = Field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        """The reasons of the checks that decided the verdict."""
        deciding = [c for c in self.checks if c.result is self.result]
        return [f"{c.name}: {c.reason}" for c in (deciding or self.checks)]

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile with linear interpolation (numpy's default), without numpy."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _error_check(m: WindowMetrics, policy: AnalysisPolicy) -> Check:
    stable = m.stable
    # Shadow requests are canary traffic too: a canary that fails them has failed requests.
    shadow_errors = sum(1 for s in m.agreement if s.canary_error)
    canary = VersionWindow(requests=m.canary.requests + len(m.agreement),
                           errors=m.canary.errors + shadow_errors)
    # The canary may be as bad as stable is on the same traffic (a shared-infrastructure
    # problem is not the canary's fault), never worse than that and the SLO's error budget.
    limit = max(policy.max_error_rate, stable.error_rate if stable.requests else 0.0)
    observed = f"canary {canary.errors}/{canary.requests} = {canary.error_rate:.2%}"
    if canary.error_rate > limit and canary.errors > 0:
        # Failing needs no minimum count: errors already seen cannot be unseen.
        return Check(name="error-rate", result=Result.FAIL,
                     reason=f"{observed} > limit {limit:.2%}")
    if canary.requests < policy.min_requests:
        return Check(name="error-rate", result=Result.INCONCLUSIVE,
                     reason=f"{canary.requests} canary requests < minimum {policy.min_requests}")
    return Check(name="error-rate", result=Result.PASS, reason=f"{observed} <= {limit:.2%}")


def _latency_check(m: WindowMetrics, policy: AnalysisPolicy,
                   baseline_stable_p99_us: float | None) -> Check:
    canary = m.canary
    successes = canary.requests - canary.errors
    if canary.p99_latency_us is None or successes < policy.min_requests:
        return Check(name="p99-latency", result=Result.INCONCLUSIVE,
                     reason=f"{successes} successful canary requests < minimum "
                     f"{policy.min_requests}")
    p99 = canary.p99_latency_us
    stable_ok = m.stable.requests - m.stable.errors
    stable_p99 = m.stable.p99_latency_us if stable_ok >= policy.min_requests else None
    if policy.p99_slo_us is not None and p99 > policy.p99_slo_us:
        slo_text = (f"canary p99 {p99 / 1000:.1f} ms > SLO {policy.p99_slo_us / 1000:.1f} ms")
        if stable_p99 is not None and stable_p99 > policy.p99_slo_us:
            # Stable breaks the SLO on the same traffic: the server is overloaded and the
            # SLO cannot tell the versions apart. Hold (never promote); the relative bound
            # below still fails a canary that is clearly worse.
            bound = stable_p99 * policy.max_p99_ratio + policy.p99_slack_us
            if p99 > bound:
                return Check(name="p99-latency", result=Result.FAIL,
                             reason=f"{slo_text}, and above stable's "
                             f"{stable_p99 / 1000:.1f} ms (bound {bound / 1000:.1f} ms)")
            return Check(name="p99-latency", result=Result.INCONCLUSIVE,
                         reason=f"{slo_text}, but stable breaks it too ({stable_p99 / 1000:.1f}"
                         " ms): the server is overloaded, lower --rate")
        return Check(name="p99-latency", result=Result.FAIL, reason=slo_text)
    # The relative bound compares like with like: the window's two versions when stable got
    # enough of the window's traffic; else the shadow pairs (the same requests sent to both,
    # one at a time); else stable's p99 from earlier windows.
    paired = [(s.stable_latency_us, s.canary_latency_us) for s in m.agreement
              if s.stable_latency_us is not None and s.canary_latency_us is not None]
    if stable_p99 is not None:
        observed, reference = p99, stable_p99
        source = "canary p99 {o} vs stable {r} in this window"
    elif paired and len(paired) >= max(1, policy.min_agreement_samples):
        observed = percentile([c for _, c in paired], 99.0)
        reference = percentile([s for s, _ in paired], 99.0)
        source = f"canary p99 {{o}} vs stable {{r}} on the same {len(paired)} shadow requests"
    elif baseline_stable_p99_us is not None:
        observed, reference = p99, baseline_stable_p99_us
        source = "canary p99 {o} vs stable baseline {r} from earlier windows"
    else:
        return Check(name="p99-latency", result=Result.INCONCLUSIVE,
                     reason="no stable latency to compare with (too few stable requests and "
                     "shadow samples)")
    bound = reference * policy.max_p99_ratio + policy.p99_slack_us
    text = (source.format(o=f"{observed / 1000:.1f} ms", r=f"{reference / 1000:.1f} ms")
            + f" (bound {bound / 1000:.1f} ms)")
    if observed > bound:
        return Check(name="p99-latency", result=Result.FAIL, reason=text)
    return Check(name="p99-latency", result=Result.PASS, reason=text)


def _agreement_check(m: WindowMetrics, policy: AnalysisPolicy) -> Check | None:
    if policy.min_agreement_samples == 0 and not m.agreement:
        return None
    compared = m.compared
    wrong = m.disagreements
    if compared:
        rate = len(wrong) / len(compared)
        if wrong and rate > policy.max_disagreement_rate:
            example = wrong[0].detail or "outputs differ"
            return Check(name="output-agreement", result=Result.FAIL,
                         reason=f"{len(wrong)}/{len(compared)} shadow samples differ beyond "
                         f"tolerance (first: {example})")
    if len(compared) < policy.min_agreement_samples:
        return Check(name="output-agreement", result=Result.INCONCLUSIVE,
                     reason=f"{len(compared)} shadow samples compared < minimum "
                     f"{policy.min_agreement_samples}")
    return Check(name="output-agreement", result=Result.PASS,
                 reason=f"{len(compared) - len(wrong)}/{len(compared)} shadow samples agree")


def analyze(metrics: WindowMetrics, policy: AnalysisPolicy,
            baseline_stable_p99_us: float | None = None) -> Verdict:
    """Judge one window. FAIL beats INCONCLUSIVE beats PASS; no data never passes.

    `baseline_stable_p99_us` is stable's p99 from earlier windows, used for the relative
    latency bound when this window sent too little traffic to stable (e.g. at weight 100).
    """
    if metrics.canary_down:
        check = Check(name="canary-ready", result=Result.FAIL, reason=metrics.canary_down)
        return Verdict(result=Result.FAIL, critical=True, checks=[check])
    checks = [_error_check(metrics, policy), _latency_check(metrics, policy,
                                                            baseline_stable_p99_us)]
    agreement = _agreement_check(metrics, policy)
    if agreement is not None:
        checks.append(agreement)
    results = {c.result for c in checks}
    if Result.FAIL in results:
        critical = any(c.result is Result.FAIL and c.name == "output-agreement"
                       for c in checks) and policy.disagreement_is_critical
        return Verdict(result=Result.FAIL, critical=critical, checks=checks)
    if Result.INCONCLUSIVE in results:
        return Verdict(result=Result.INCONCLUSIVE, checks=checks)
    return Verdict(result=Result.PASS, checks=checks)


def policy_from_envelope(envelope: object, **overrides: object) -> AnalysisPolicy:
    """Thresholds from an envelope's SLO (p99 bound, error budget), then explicit overrides."""
    values: dict[str, object] = {}
    slo = getattr(envelope, "slo", None)
    if slo is not None:
        values["p99_slo_us"] = float(slo.p99_latency)
        values["max_error_rate"] = float(slo.max_error_rate)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return AnalysisPolicy.model_validate(values)
