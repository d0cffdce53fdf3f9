"""The arrival-rate bisection: the highest Poisson rate a config holds under the SLO.

One `BisectionSettings` serves `tune` (baseline and candidates alike) and the benchmark's grid
and head-to-head, so that both measure goodput the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from triton_ops.tune.results import ProbeResult
from triton_ops.tune.stats import QuantileEstimate, Verdict


@dataclass(frozen=True)
class BisectionSettings:
    # Stop when the bracket [passing, failing] is this tight. On a shared machine one config
    # moves more than this between bisections of a CPU-bound model (bench/RESULTS.md), so a
    # finer bracket costs a probe the noise erases.
    rel_tol: float = 0.08
    max_probes: int = 10
    # The baseline is what the answer is compared with: always measured (at least
    # `baseline_min_probes`), with fewer probes at most, so that the search gets the rest.
    baseline_max_probes: int = 7
    baseline_min_probes: int = 2
    floor: float = 1.0  # req/s: below this a config holds nothing worth reporting


class Bisection(NamedTuple):
    goodput: float  # the highest rate that passed; 0 when none did
    p99: QuantileEstimate | None  # at that rate
    generator_limited: bool  # the goodput is a lower bound: the load generator saturated
    probes: list[ProbeResult]


def next_rate(rate: float, result: ProbeResult, lo: float, hi: float, *,
              slo_us: float | None, ceiling: float | None, floor: float) -> float:
    """The rate to probe after `result` at `rate`, with the bracket (lo, hi) already updated."""
    if math.isinf(hi):
        # Far under the SLO: the knee is further away; close to it: small steps. Far below the
        # closed-loop ceiling (the most the system was seen to complete), grow by up to 8x.
        far = slo_us is not None and result.p99.value < slo_us / 3
        if far and ceiling and rate * 4 < ceiling:
            return min(rate * 8, ceiling / 2)
        return rate * (2.0 if far else 1.3)
    if lo == 0.0:
        # Over capacity, an open-loop server completes about its capacity: aim below it.
        step = rate / 1.6
        if result.verdict is Verdict.FAIL and 0 < result.throughput < rate:
            step = min(step, 0.85 * result.throughput)
        return max(step, floor)
    return math.sqrt(lo * hi)


def bisect_rate(probe: Callable[[float], ProbeResult], guess: float,
                settings: BisectionSettings = BisectionSettings(), *,
                should_stop: Callable[[], bool] = lambda: False,
                slo_us: float | None = None, ceiling: float | None = None,
                min_probes: int = 0, max_probes: int | None = None) -> Bisection:
    """Highest passing arrival rate, by bracketing around `guess` then bisecting.

    `min_probes`: probes made even when `should_stop` says stop. A generator-limited probe is
    an upper bound on what can be measured: it closes the bracket from above and the result
    is flagged.
    """
    limit = settings.max_probes if max_probes is None else max_probes
    probes: list[ProbeResult] = []
    lo, hi = 0.0, math.inf
    lo_p99: QuantileEstimate | None = None
    limited = False
    rate = max(guess, settings.floor)
    while len(probes) < limit and (len(probes) < min_probes or not should_stop()):
        result = probe(rate)
        probes.append(result)
        if result.verdict is Verdict.PASS:
            lo, lo_p99 = rate, result.p99
        else:
            hi = rate
            limited = limited or result.verdict is Verdict.GENERATOR_LIMITED
        if lo == 0.0 and not math.isinf(hi) and rate <= settings.floor:
            break
        if lo > 0 and not math.isinf(hi) and hi / lo - 1 <= settings.rel_tol:
            break
        rate = next_rate(rate, result, lo, hi, slo_us=slo_us, ceiling=ceiling,
                         floor=settings.floor)
    return Bisection(lo, lo_p99, limited and lo > 0, probes)


def first_rate(predicted: float, calibration: float, *, ceiling: float | None,
               best_goodput: float = 0.0) -> float:
    """The arrival rate a bisection starts at: the prediction scaled by the measured/predicted
    ratio seen so far, but no higher than half the closed-loop `ceiling` or the best goodput
    measured so far, whichever is higher (half the ceiling when there is no prediction).

    Open-loop Poisson arrivals under a p99 bound hold well below what the whole system
    completes in closed loop (queues form, and on a shared machine the load generator's own
    CPU grows with the rate), while the model, which charges an execution only its compute
    time, can predict more than the ceiling: a probe there fails for sure and costs as much as
    a useful one. From half the ceiling the bisection climbs or halves in one or two probes.
    Starting at the best goodput so far asks first what matters: does this candidate beat it?
    """
    if predicted <= 0:
        return max((ceiling or 2.0) / 2, 1.0)
    guess = predicted * calibration
    if ceiling:
        guess = min(guess, max(ceiling / 2, best_goodput))
    return max(guess, 1.0)
