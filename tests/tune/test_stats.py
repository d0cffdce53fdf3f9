"""Quantile confidence intervals, SLO verdicts and window stability on fixed data."""

from __future__ import annotations

import math
import random

import pytest

from triton_ops.tune.stats import (
    Verdict,
    order_statistic_bounds,
    quantile_ci,
    single_window_failure,
    slo_verdict,
    trend_rising,
    windows_stable,
)


def test_p99_of_1_to_1000_is_990_with_bracketing_interval() -> None:
    est = quantile_ci([float(v) for v in range(1000, 0, -1)], 0.99)
    assert est.value == 990
    assert est.n == 1000
    assert est.low < 990 < est.high
    # Known exact 95% interval for n=1000, q=0.99: order statistics around 984..996.
    assert 982 <= est.low <= 986
    assert 995 <= est.high <= 998


def test_too_few_samples_have_no_upper_bound() -> None:
    est = quantile_ci([1.0, 2.0, 3.0, 4.0, 5.0], 0.99)
    assert est.high == math.inf
    assert not est.bounded


def test_empty_samples() -> None:
    est = quantile_ci([], 0.99)
    assert est.n == 0 and math.isnan(est.value)
    assert slo_verdict(est, 10.0) is Verdict.UNSURE


def test_bounds_reject_bad_arguments() -> None:
    with pytest.raises(ValueError):
        order_statistic_bounds(10, 1.5)
    with pytest.raises(ValueError):
        order_statistic_bounds(10, 0.5, confidence=1.0)


def test_interval_covers_true_quantile_at_nominal_rate() -> None:
    # Exponential(1): true p99 = ln(100). Coverage over 400 seeded trials must be ~>= 95%.
    true_p99 = math.log(100)
    rng = random.Random(7)
    covered = 0
    trials = 400
    for _ in range(trials):
        est = quantile_ci([rng.expovariate(1.0) for _ in range(800)], 0.99)
        covered += est.low <= true_p99 <= est.high
    assert covered / trials >= 0.92


def test_large_n_uses_normal_approximation_consistently() -> None:
    lo_exact, hi_exact = order_statistic_bounds(20000, 0.99)
    lo_approx, hi_approx = order_statistic_bounds(20001, 0.99)
    assert abs(lo_exact - lo_approx) <= 3 and abs(hi_exact - hi_approx) <= 3


def test_verdict_decides_when_interval_is_one_side() -> None:
    samples = [float(v) for v in range(1, 1001)]
    est = quantile_ci(samples, 0.99)
    assert slo_verdict(est, 2000.0) is Verdict.PASS
    assert slo_verdict(est, 500.0) is Verdict.FAIL
    assert slo_verdict(est, 990.5) is Verdict.UNSURE
    assert slo_verdict(est, 990.5, stable=True) is Verdict.PASS
    assert slo_verdict(est, 989.5, stable=True) is Verdict.FAIL


def test_window_stability_and_trend() -> None:
    assert windows_stable([10.0, 10.5, 9.8])
    assert not windows_stable([10.0, 10.5])
    assert not windows_stable([5.0, 10.0, 15.0])
    assert windows_stable([50.0, 10.0, 10.2, 9.9])  # only the last three count
    assert trend_rising([1.0, 2.0, 4.0])
    assert not trend_rising([1.0, 1.1, 1.2])
    assert not trend_rising([4.0, 2.0, 1.0])


def test_single_window_failure_needs_one_bad_window_and_passing_others() -> None:
    rng = random.Random(7)
    good = [[rng.uniform(10_000, 30_000) for _ in range(600)] for _ in range(5)]
    stall = [rng.uniform(10_000, 30_000) for _ in range(540)] + [90_000.0] * 60
    # One stalled second among good ones: the others alone pass the 50 ms SLO.
    assert single_window_failure([*good[:3], stall, good[3]], 50_000.0)
    # The stall as the only window so far: nothing to compare it with.
    assert not single_window_failure([stall], 50_000.0)
    # Two bad windows: not one hiccup (e.g. a queue that keeps growing).
    assert not single_window_failure([good[0], stall, stall], 50_000.0)
    # No bad window at all: the failure came from elsewhere (errors, the pooled tail).
    assert not single_window_failure(good, 50_000.0)
    # Too few samples in the other windows to say they pass.
    assert not single_window_failure([good[0][:100], stall], 50_000.0)
