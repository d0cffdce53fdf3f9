"""PromQL analysis against a real Prometheus scraping real embedded Triton servers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from triton_ops.k8s.prometheus import Prometheus, PrometheusError
from triton_ops.rollout.analysis import AnalysisPolicy, Result, WindowMetrics, analyze
from triton_ops.server.local import LocalTriton

from .support import affine_request, infer, load_versions, prometheus_server, require_prometheus

pytestmark = pytest.mark.slow


@dataclass
class Fleet:
    stable: LocalTriton
    canary: LocalTriton
    prometheus: str


def wait_for(prom: Prometheus, promql: str, value: float, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if prom.scalar(promql) == value:
            return
        time.sleep(0.3)
    raise AssertionError(f"{promql} never reached {value} (last {prom.scalar(promql)})")


@pytest.fixture(scope="module")
def fleet(affine_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    require_prometheus()
    tmp = tmp_path_factory.mktemp("prom-fleet")
    # Two pods' worth of Triton: stable serves v1 with latency summaries (as the chart
    # configures), the canary serves v3 (fails on X[0] > 0) without them.
    stable = LocalTriton(affine_repository, log_path=tmp / "stable.log", startup_timeout_s=120,
                         extra_args=["--metrics-config=summary_latencies=true"])
    canary = LocalTriton(affine_repository, log_path=tmp / "canary.log", startup_timeout_s=120)
    with stable, canary:
        load_versions(stable.http_url, "affine", [1])
        load_versions(canary.http_url, "affine", [3])
        target = {"stable": stable, "canary": canary}
        jobs = {"triton": [(s.metrics_url.split("//")[1].split("/")[0],
                            {"namespace": "ml", "track": track}) for track, s in target.items()]}
        with prometheus_server(tmp / "prometheus", jobs) as url:
            prom = Prometheus(url)
            # Counters must be scraped at 0 first, or increase() sees no increase at all.
            wait_for(prom, 'count(nv_inference_request_success{model="affine"} == 0)', 2)
            # Traffic: stable 40 good; canary 20 good + 10 failing.
            for i in range(40):
                assert infer(stable.http_url, "affine", 1, affine_request([i, 1, 2, 3]))[0] == 200
            for i in range(30):
                x = -1.0 if i < 20 else 1.0
                status, _ = infer(canary.http_url, "affine", 3, affine_request([x, 0, 0, 0]))
                assert (status == 200) == (i < 20)
            wait_for(prom, 'sum(nv_inference_request_success{model="affine",version="1"})', 40)
            wait_for(prom, 'sum(nv_inference_request_failure{model="affine",version="3"})', 10)
            yield Fleet(stable, canary, url)


def test_per_version_counts_and_latency(fleet: Fleet) -> None:
    prom = Prometheus(fleet.prometheus, matchers=['namespace="ml"'])
    stable = prom.version_window("affine", [1], 120)
    canary = prom.version_window("affine", [3], 120)
    # Exact counts: without counter resets the window's growth is max - min, not increase()
    # (which extrapolates to the window edges: +43% here with two samples per series).
    assert stable.window.requests == 40
    assert stable.window.errors == 0
    assert stable.latency_source == "p99 (summary)"
    assert stable.window.p99_latency_us and stable.window.p99_latency_us > 0
    assert canary.window.requests == 30
    assert canary.window.errors == 10
    # The canary pod runs without summaries: the mean latency is used and labelled so.
    assert canary.latency_source == "mean (no summary)"
    assert canary.window.p99_latency_us and canary.window.p99_latency_us > 0


def test_verdicts_from_prometheus_windows(fleet: Fleet) -> None:
    prom = Prometheus(fleet.prometheus)
    policy = AnalysisPolicy(min_requests=20, min_agreement_samples=0)
    stable = prom.version_window("affine", [1], 120).window
    failing = prom.version_window("affine", [3], 120).window
    verdict = analyze(WindowMetrics(stable=stable, canary=failing), policy)
    assert verdict.result is Result.FAIL
    assert "error-rate" in verdict.reason
    # A version nobody served: no data is never a pass.
    silent = prom.version_window("affine", [2], 120)
    assert silent.window.requests == 0 and silent.latency_source == "none"
    verdict = analyze(WindowMetrics(stable=stable, canary=silent.window), policy)
    assert verdict.result is Result.INCONCLUSIVE


def test_matchers_narrow_to_one_release(fleet: Fleet) -> None:
    other = Prometheus(fleet.prometheus, matchers=['namespace="other"'])
    assert other.version_window("affine", [1], 120).window.requests == 0
    by_track = Prometheus(fleet.prometheus, matchers=['track="canary"'])
    assert by_track.version_window("affine", [1], 120).window.requests == 0
    with pytest.raises(PrometheusError, match="not a label matcher"):
        Prometheus(fleet.prometheus, matchers=["namespace=ml"])


def test_unreachable_or_bad_queries_are_messages(fleet: Fleet) -> None:
    with pytest.raises(PrometheusError, match="cannot query Prometheus at http://127.0.0.1:9"):
        Prometheus("http://127.0.0.1:9").version_window("affine", [1], 60)
    with pytest.raises(PrometheusError, match="HTTP 400"):
        Prometheus(fleet.prometheus).query("sum(")

