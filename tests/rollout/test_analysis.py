from triton_ops.envelope.model import Envelope
from triton_ops.rollout.analysis import (
    AgreementSample,
    AnalysisPolicy,
    Result,
    VersionWindow,
    WindowMetrics,
    analyze,
    percentile,
    policy_from_envelope,
)

POLICY = AnalysisPolicy(min_requests=20, min_agreement_samples=5, max_error_rate=0.01)


def window(stable=(100, 0, 2000.0), canary=(50, 0, 2100.0), agree=10, differ=0, **kw):
    return WindowMetrics(
        stable=VersionWindow(requests=stable[0], errors=stable[1], p99_latency_us=stable[2]),
        canary=VersionWindow(requests=canary[0], errors=canary[1], p99_latency_us=canary[2]),
        agreement=[AgreementSample(agree=True)] * agree
        + [AgreementSample(agree=False, detail="OUT max |diff| 1.0")] * differ,
        **kw,
    )


def test_healthy_canary_passes():
    verdict = analyze(window(), POLICY)
    assert verdict.result is Result.PASS
    assert {c.name for c in verdict.checks} == {"error-rate", "p99-latency", "output-agreement"}


def test_no_data_is_inconclusive_never_pass():
    verdict = analyze(WindowMetrics(), POLICY)
    assert verdict.result is Result.INCONCLUSIVE
    assert "minimum" in verdict.reason


def test_too_few_canary_requests_is_inconclusive():
    assert analyze(window(canary=(5, 0, 2000.0)), POLICY).result is Result.INCONCLUSIVE


def test_too_few_shadow_samples_is_inconclusive():
    assert analyze(window(agree=2), POLICY).result is Result.INCONCLUSIVE


def test_errors_fail_even_with_little_data():
    verdict = analyze(window(canary=(5, 3, 2000.0)), POLICY)
    assert verdict.result is Result.FAIL
    assert not verdict.critical
    assert "error-rate" in verdict.reason


def test_error_rate_no_worse_than_stable_is_tolerated():
    verdict = analyze(window(stable=(100, 10, 2000.0), canary=(50, 4, 2000.0)), POLICY)
    assert verdict.result is Result.PASS


def test_slow_canary_fails_relative_bound():
    verdict = analyze(window(canary=(50, 0, 60_000.0)), POLICY)
    assert verdict.result is Result.FAIL
    assert "p99-latency" in verdict.reason


def test_slo_bound_fails_a_canary_when_stable_meets_it():
    policy = POLICY.model_copy(update={"p99_slo_us": 10_000})
    verdict = analyze(window(stable=(100, 0, 8_000.0), canary=(50, 0, 11_000.0)), policy)
    assert verdict.result is Result.FAIL
    assert "SLO" in verdict.reason


def test_slo_breached_by_both_versions_holds_instead_of_blaming_the_canary():
    policy = POLICY.model_copy(update={"p99_slo_us": 10_000})
    verdict = analyze(window(stable=(100, 0, 20_000.0), canary=(50, 0, 21_000.0)), policy)
    assert verdict.result is Result.INCONCLUSIVE
    assert "overloaded" in verdict.reason
    worse = analyze(window(stable=(100, 0, 20_000.0), canary=(50, 0, 90_000.0)), policy)
    assert worse.result is Result.FAIL


def test_baseline_used_when_stable_had_no_traffic():
    metrics = window(stable=(0, 0, None), canary=(100, 0, 3000.0))
    assert analyze(metrics, POLICY).result is Result.INCONCLUSIVE
    assert analyze(metrics, POLICY, baseline_stable_p99_us=2000.0).result is Result.PASS
    slow = window(stable=(0, 0, None), canary=(100, 0, 90_000.0))
    assert analyze(slow, POLICY, baseline_stable_p99_us=2000.0).result is Result.FAIL


def test_wrong_outputs_fail_critically():
    verdict = analyze(window(differ=1), POLICY)
    assert verdict.result is Result.FAIL
    assert verdict.critical
    assert "OUT max |diff| 1.0" in verdict.reason


def test_disagreement_budget():
    policy = POLICY.model_copy(update={"max_disagreement_rate": 0.2})
    assert analyze(window(agree=9, differ=1), policy).result is Result.PASS


def test_canary_down_fails_critically():
    verdict = analyze(window(canary_down="version 2 is not ready"), POLICY)
    assert verdict.result is Result.FAIL and verdict.critical


def test_percentile_matches_linear_interpolation():
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile(list(map(float, range(101))), 99) == 99.0
    assert VersionWindow.from_latencies([1.0] * 10, errors=2).requests == 12


def test_policy_from_envelope():
    env = Envelope.model_validate({
        "name": "m", "backend": "python",
        "slo": {"p99_latency": "25ms", "max_error_rate": 0.02},
    })
    policy = policy_from_envelope(env, min_requests=7, max_p99_ratio=None)
    assert policy.p99_slo_us == 25_000
    assert policy.max_error_rate == 0.02
    assert policy.min_requests == 7


def test_shadow_pairs_give_the_relative_bound_at_full_weight():
    paired = [AgreementSample(agree=True, stable_latency_us=1000.0, canary_latency_us=1100.0)
              for _ in range(10)]
    metrics = WindowMetrics(canary=VersionWindow(requests=100, p99_latency_us=3000.0),
                            agreement=paired)
    verdict = analyze(metrics, POLICY)
    assert verdict.result is Result.PASS
    assert "same 10 shadow requests" in verdict.reason
    slow = [AgreementSample(agree=True, stable_latency_us=1000.0, canary_latency_us=80_000.0)
            for _ in range(10)]
    metrics = WindowMetrics(canary=VersionWindow(requests=100, p99_latency_us=3000.0),
                            agreement=slow)
    assert analyze(metrics, POLICY).result is Result.FAIL


def test_shadow_canary_errors_count_as_errors():
    failed = [AgreementSample(agree=None, canary_error=True, detail="canary failed: x")] * 3
    metrics = window()
    metrics.agreement = metrics.agreement + failed
    verdict = analyze(metrics, POLICY)
    assert verdict.result is Result.FAIL and "error-rate" in verdict.reason
