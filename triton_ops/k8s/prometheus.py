"""Canary analysis windows from Prometheus: PromQL over Triton's per-version counters and
latency summaries, into the rollout engine's `WindowMetrics` (the verdict rules are the
engine's, shared with the single-server target).

Per version v of model m over a window of W seconds (extra label matchers, e.g. the
namespace, narrow the series to one release):

    requests  growth of nv_inference_request_success{m,v} + of nv_inference_request_failure
    errors    growth of nv_inference_request_failure{m,v}
              where growth over W = per series max_over_time - min_over_time (exact: Triton's
              counters only grow) unless the series reset in W (a restarted pod), where
              increase() is used; plain increase() extrapolates to the window edges and
              overstated counts by 40% in tests with few scrapes per window
    p99       max(max_over_time(nv_inference_request_summary_us{m,v,quantile="0.99"}[W]))
              (Triton's own latency summary, --metrics-config=summary_latencies=true: the
              chart turns it on; the worst pod's p99 in the window)
    fallback  without the summary: sum(increase(nv_inference_request_duration_us[W]))
              / sum(increase(nv_inference_request_success[W])), the MEAN latency, which the
              latency check then judges (less sensitive than a p99; the report says so)

No series (nothing served, or Prometheus has not scraped yet) means 0 requests: the engine's
analysis calls such a window INCONCLUSIVE, never PASS.
"""

from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field

from triton_ops.rollout.analysis import VersionWindow

# Matched with fullmatch (`$` would let a trailing newline through); one line each.
_LABEL_VALUE = re.compile(r'[^"\\\n]*')
_MATCHER = re.compile(r'[ \t]*[A-Za-z_][A-Za-z0-9_]*[ \t]*(=|!=|=~|!~)[ \t]*"[^"\\\n]*"[ \t]*')


class PrometheusError(Exception):
    """Prometheus could not be queried; the message says which URL and why."""


def growth(series: str, window: str) -> str:
    """PromQL: how much counter `series` grew in `window`, summed over series; exact for
    series without resets, increase() for those that reset (see the module docstring)."""
    r = f"{series}[{window}]"
    return (f"sum((max_over_time({r}) - min_over_time({r}) unless resets({r}) > 0) "
            f"or (increase({r}) and resets({r}) > 0))")


@dataclass
class VersionSample:
    window: VersionWindow
    latency_source: str  # "p99 (summary)", "mean (no summary)" or "none"


@dataclass
class Prometheus:
    url: str
    matchers: Sequence[str] = field(default_factory=tuple)
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        for matcher in self.matchers:
            if not _MATCHER.fullmatch(matcher):
                raise PrometheusError(f"{matcher!r} is not a label matcher such as "
                                      'namespace="ml"')

    def query(self, promql: str, at: float | None = None) -> list[tuple[dict[str, str], float]]:
        """An instant query: [(labels, value)]."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:  # noqa: S310
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read()).get("error", "")
            except ValueError:
                detail = ""
            raise PrometheusError(f"{self.url}: query {promql!r} failed: HTTP {exc.code} "
                                  f"{detail}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise PrometheusError(f"cannot query Prometheus at {self.url}: "
                                  f"{getattr(exc, 'reason', exc)}; check --prometheus") from None
        if body.get("status") != "success":
            raise PrometheusError(f"{self.url}: query {promql!r} failed: {body.get('error')}")
        data = body.get("data", {})
        if data.get("resultType") == "scalar":
            return [({}, float(data["result"][1]))]
        return [(item.get("metric", {}), float(item["value"][1]))
                for item in data.get("result", [])]

    def scalar(self, promql: str, at: float | None = None) -> float | None:
        """The single value of an aggregated query; None for no data or NaN."""
        result = self.query(promql, at)
        if not result:
            return None
        value = result[0][1]
        return None if math.isnan(value) or math.isinf(value) else value

    def selector(self, model: str, versions: Sequence[int], *extra: str) -> str:
        if not _LABEL_VALUE.fullmatch(model):
            raise PrometheusError(f"model name {model!r} cannot be used in a PromQL matcher")
        version_re = "|".join(str(int(v)) for v in versions)
        parts = [f'model="{model}"', f'version=~"{version_re}"', *self.matchers, *extra]
        return "{" + ",".join(parts) + "}"

    def version_window(self, model: str, versions: Sequence[int], window_s: float,
                       at: float | None = None) -> VersionSample:
        """What `versions` of `model` served in the `window_s` seconds before `at`."""
        w = f"{max(1, math.ceil(window_s))}s"
        sel = self.selector(model, versions)
        success = self.scalar(growth("nv_inference_request_success" + sel, w), at)
        failure = self.scalar(growth("nv_inference_request_failure" + sel, w), at)
        ok = round(success or 0.0)
        errors = round(failure or 0.0)
        p99_sel = self.selector(model, versions, 'quantile="0.99"')
        p99 = self.scalar(f"max(max_over_time(nv_inference_request_summary_us{p99_sel}[{w}]))",
                          at)
        source = "p99 (summary)"
        if p99 is None and ok:
            total = self.scalar(growth("nv_inference_request_duration_us" + sel, w), at)
            p99 = (total / success) if (total is not None and success) else None
            source = "mean (no summary)"
        if not ok:
            p99, source = None, "none"
        return VersionSample(VersionWindow(requests=ok + errors, errors=errors,
                                           p99_latency_us=p99), source)
