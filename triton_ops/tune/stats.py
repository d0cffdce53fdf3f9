"""Latency statistics: quantiles with distribution-free confidence intervals, window stability.

A p99 taken from a few hundred samples is noisy. Every quantile here comes with an exact
order-statistic confidence interval (binomial, no assumption on the latency distribution):
for sorted samples x(1) <= ... <= x(n), [x(l), x(u)] covers the true q-quantile with
probability >= confidence when P(l <= B < u) >= confidence for B ~ Binomial(n, q).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class QuantileEstimate:
    """A sample quantile and its confidence interval (same unit as the samples)."""

    q: float
    value: float
    low: float
    high: float  # math.inf when there are too few samples to bound it from above
    n: int
    confidence: float

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.high) and math.isfinite(self.low)

    def relative_half_width(self) -> float:
        if not self.bounded or self.value <= 0:
            return math.inf
        return (self.high - self.low) / (2 * self.value)


def _binom_log_pmf(n: int, q: float) -> list[float]:
    lq, l1q = math.log(q), math.log1p(-q)
    lgn = math.lgamma(n + 1)
    return [lgn - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * lq + (n - k) * l1q
            for k in range(n + 1)]


def order_statistic_bounds(n: int, q: float, confidence: float = 0.95) -> tuple[int, int]:
    """0-based indices (l, u) into n sorted samples with P(x[l] <= Q_q <= x[u]) >= confidence.

    u == n means there is no finite upper bound (too few samples); l == -1 no lower bound.
    The interval is chosen about symmetric in tail probability (alpha/2 each side), the
    usual exact nonparametric quantile interval.
    """
    if not 0 < q < 1:
        raise ValueError("q must be in (0, 1)")
    if not 0 < confidence < 1:
        raise ValueError("confidence must be in (0, 1)")
    if n <= 0:
        return -1, n
    alpha = 1.0 - confidence
    if n > 20000:
        # Normal approximation of Binomial(n, q) with continuity; exact enough at this size.
        z = _normal_quantile(1 - alpha / 2)
        sd = math.sqrt(n * q * (1 - q))
        lo = math.floor(n * q - z * sd) - 1
        hi = math.ceil(n * q + z * sd)
        return max(lo, -1), min(hi, n)
    pmf = [math.exp(v) for v in _binom_log_pmf(n, q)]
    # P(x[l] <= Q) = P(B >= l + 1); P(x[u] >= Q) = P(B <= u).  (B = samples below Q.)
    cdf = 0.0
    lo = -1
    for k in range(n + 1):
        cdf += pmf[k]  # P(B <= k)
        if cdf <= alpha / 2:
            lo = k  # P(B <= k) <= alpha/2  ->  x[k] (0-based) is still a valid lower bound
        else:
            break
    cdf = 0.0
    hi = n
    for k in range(n, -1, -1):
        cdf += pmf[k]  # P(B >= k)
        if cdf <= alpha / 2:
            hi = k - 1  # P(B >= k) <= alpha/2 -> P(B <= k-1) >= 1 - alpha/2
        else:
            break
    return lo, hi


def _normal_quantile(p: float) -> float:
    """Inverse standard normal CDF."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(p)


def quantile_ci(samples: Sequence[float], q: float = 0.99,
                confidence: float = 0.95) -> QuantileEstimate:
    """The q-quantile of `samples` (nearest-rank) with an order-statistic confidence interval."""
    data = sorted(samples)
    n = len(data)
    if n == 0:
        return QuantileEstimate(q, math.nan, math.nan, math.inf, 0, confidence)
    rank = min(n - 1, max(0, math.ceil(q * n) - 1))
    lo, hi = order_statistic_bounds(n, q, confidence)
    low = data[lo] if lo >= 0 else -math.inf
    high = data[hi] if hi < n else math.inf
    return QuantileEstimate(q, data[rank], low, high, n, confidence)


class Verdict(str, Enum):
    """Where a measured p99 stands against the SLO."""

    PASS = "pass"  # upper confidence bound under the SLO (or stable and under it)
    FAIL = "fail"  # lower confidence bound over the SLO, or too many errors
    UNSURE = "unsure"  # the interval straddles the SLO and more samples are needed
    GENERATOR_LIMITED = "generator-limited"  # the load generator could not keep the rate


def slo_verdict(estimate: QuantileEstimate, slo: float, *, stable: bool = False) -> Verdict:
    """Decide pass/fail as soon as the confidence interval lies on one side of the SLO.

    When the windows are stable but the interval still straddles the SLO (the true p99 is
    within noise of the bound), the point estimate decides: more samples would not change
    the answer much and the search must move on.
    """
    if estimate.n == 0:
        return Verdict.UNSURE
    if estimate.low > slo:
        return Verdict.FAIL
    if estimate.high <= slo:
        return Verdict.PASS
    if stable:
        return Verdict.PASS if estimate.value <= slo else Verdict.FAIL
    return Verdict.UNSURE


def windows_stable(window_p99s: Sequence[float], *, tolerance: float = 0.15,
                   last: int = 3) -> bool:
    """True when the p99 of the last `last` windows agree within `tolerance` of their mean.

    Model Analyzer judges stability on average latency; the tail moves first when a
    server starts to fall behind, so the p99 of each window is compared instead.
    """
    tail = [v for v in window_p99s[-last:] if math.isfinite(v)]
    if len(tail) < last:
        return False
    mean = sum(tail) / len(tail)
    if mean <= 0:
        return True
    return (max(tail) - min(tail)) / mean <= 2 * tolerance


def trend_rising(window_p99s: Sequence[float], *, factor: float = 1.5) -> bool:
    """True when each of the last three windows is worse than the one before and the last is
    `factor` times the first: the queue is growing, the rate is over capacity."""
    tail = window_p99s[-3:]
    if len(tail) < 3 or not all(math.isfinite(v) for v in tail):
        return False
    return tail[0] < tail[1] < tail[2] and tail[2] >= factor * tail[0]


def window_p99s(latency_us: Sequence[Sequence[float]]) -> list[float]:
    """The p99 of each window's samples (inf for a window without any)."""
    return [quantile_ci(w, 0.99).value if len(w) else math.inf for w in latency_us]


def judge_windows(
    latency_us: Sequence[Sequence[float]],
    service_us: Sequence[Sequence[float]],
    lateness_us: Sequence[Sequence[float]],
    *,
    requests: int,
    errors: int,
    slo_us: float,
    max_error_rate: float,
    min_samples: int = 300,
    last: bool = False,
    late_threshold_us: float = 2000.0,
    max_late_fraction: float = 0.01,
) -> Verdict:
    """The verdict on a measurement so far (one list of samples per window).

    latency_us: from the scheduled send time (what counts); service_us: from the actual send
    (server and network only); lateness_us: how late each request went out. Late sends are
    already charged in latency_us, so they only matter when they decide the outcome: a run
    that fails counted from the schedule but passes counted from the actual sends, with
    many late sends, says nothing about the server -> GENERATOR_LIMITED, not FAIL.
    """
    if requests and errors >= 3 and errors / requests > max_error_rate:
        return Verdict.FAIL
    lat = [v for w in latency_us for v in w]
    svc = [v for w in service_us for v in w]
    late = [v for w in lateness_us for v in w]
    p99s = window_p99s(latency_us)
    if trend_rising(p99s) and p99s[-1] > slo_us:
        return Verdict.FAIL  # the queue keeps growing: over capacity
    enough = len(lat) >= min_samples
    if not enough and not last:
        # Early exit only when even the server-side part is clearly over the SLO.
        if len(svc) >= 100 and quantile_ci(svc, 0.99).low > slo_us:
            return Verdict.FAIL
        return Verdict.UNSURE
    stable = last or windows_stable(p99s)
    scheduled = slo_verdict(quantile_ci(lat, 0.99), slo_us, stable=stable)
    if scheduled is Verdict.PASS:
        return Verdict.PASS
    served = slo_verdict(quantile_ci(svc, 0.99), slo_us, stable=stable)
    if served is Verdict.FAIL:
        return Verdict.FAIL
    late_fraction = sum(1 for v in late if v > late_threshold_us) / len(late) if late else 0.0
    if scheduled is Verdict.FAIL and late_fraction > max_late_fraction:
        return Verdict.GENERATOR_LIMITED
    return scheduled


def single_window_failure(latency_us: Sequence[Sequence[float]], slo_us: float, *,
                          min_samples: int = 300) -> bool:
    """True when exactly one window's p99 is over the SLO and the other windows together
    pass it (with at least `min_samples` of them): one bad second decided the measurement.

    On a shared machine such a second is often a stall of the whole machine, not the
    config's doing; a growing queue shows as several bad windows instead.
    """
    p99s = window_p99s(latency_us)
    bad = [i for i, v in enumerate(p99s) if v > slo_us]
    if len(bad) != 1:
        return False
    rest = [v for i, w in enumerate(latency_us) if i != bad[0] for v in w]
    if len(rest) < min_samples:
        return False
    return slo_verdict(quantile_ci(rest, 0.99), slo_us, stable=True) is Verdict.PASS
