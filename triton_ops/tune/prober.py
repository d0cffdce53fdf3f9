"""One open-loop measurement of the loaded config at an arrival rate, window by window.

`Prober.probe` runs the persistent load generator at a Poisson rate, stops as soon as the p99
confidence interval decides the SLO (or the windows are stable), diffs Triton's statistics per
window, and returns the verdict with one typed row per window (the columns of
measurements.csv). A probe the load generator could not keep up with is measured again with
one more worker process (while cores allow); a failure while other guests of the host took the
CPU is measured again a few times.
"""

from __future__ import annotations

import math
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from triton_ops.tune.batcher import Candidate
from triton_ops.tune.events import (
    EventSink,
    ProbeDisturbed,
    StealPersists,
    WorkersAdded,
    ignore,
)
from triton_ops.tune.results import ProbeResult
from triton_ops.tune.server_stats import Counters, ServerWindow, diff, gpu_metrics
from triton_ops.tune.stats import Verdict, judge_windows, quantile_ci, single_window_failure

if TYPE_CHECKING:
    from triton_ops.loadgen.engine import LoadGenerator, Window


@dataclass
class ProbeSettings:
    warmup_s: float = 0.7
    window_s: float = 1.0
    max_windows: int = 5
    # A pass needs this many windows (a failure may end a probe after one): one lucky second
    # is not a rate the config holds.
    min_pass_windows: int = 2
    min_samples: int = 300  # before the CI may decide (n>=300 bounds a p99 from above)
    final_windows: int = 6
    late_threshold_us: float = 1000.0  # a send this late counts as late
    max_late_fraction: float = 0.01
    # A failed or generator-limited probe on the server's machine is repeated (at most
    # `disturbed_retries` times) when the hypervisor stole more than this share of the
    # machine's CPU meanwhile.
    max_steal_fraction: float = 0.05
    disturbed_retries: int = 2
    # When this many probes in a row were disturbed, the steal is the machine's state, not a
    # passing hiccup: measuring again would measure the same conditions and only spend the
    # budget, so failures stand until a probe is measured undisturbed again.
    persistent_steal_probes: int = 3

    def probe_s(self) -> float:
        """The longest a search probe takes."""
        return self.warmup_s + self.window_s * self.max_windows

    def final_probe_s(self) -> float:
        """The longest a re-measurement probe takes (plus a second of draining)."""
        return self.warmup_s + self.window_s * self.final_windows + 1.0


def arrival_seed(rate: float, final: bool, schedules: int = 0) -> int:
    """The arrival schedule of a probe: every config probed at one rate (search probes alike,
    re-measurement probes alike) gets the same Poisson arrivals, so that two configs compared
    at a rate meet the same bursts; a re-measurement does not replay the search's probe, and
    another family of `schedules` other arrivals."""
    return (round(rate * 1000) * 2 + int(final) + schedules * 1_000_003) % 2**31


def counted_cpu(times: Any) -> list[float]:
    """psutil.cpu_times() fields that add up to the machine's CPU time (guest time is
    already counted in user time on Linux)."""
    return [v for k, v in times._asdict().items() if k not in ("guest", "guest_nice")]


def steal_fraction(before: Any, after: Any) -> float | None:
    """The share of this machine's CPU time the hypervisor gave to other guests between two
    psutil.cpu_times() readings (0 on bare metal; None when unknown)."""
    total = sum(counted_cpu(after)) - sum(counted_cpu(before))
    if total <= 0 or not hasattr(after, "steal"):
        return None
    return max(0.0, after.steal - before.steal) / total


def steal_note(window_steals: list[float], limit: float) -> str | None:
    """A warning for best.json when, over a run's measurement windows, the hypervisor gave
    other guests more than `limit` of this machine's CPU at the median: retries cannot make
    up for that, and the figures are less certain than their confidence intervals say."""
    if not window_steals:
        return None
    ordered = sorted(window_steals)
    median = ordered[len(ordered) // 2]
    if median <= limit:
        return None
    return (f"other guests of the host took {median:.0%} of this machine's CPU at the median "
            f"of {len(ordered)} measurement windows (up to {ordered[-1]:.0%}): the figures are "
            "less certain than their confidence intervals say; measure again when the machine "
            "is quieter")


def disturbed(result: ProbeResult, settings: ProbeSettings) -> bool:
    """A probe that failed, or whose load generator fell behind, while other guests of the
    host took more CPU than allowed: that may be their doing, not the config's, so it
    deserves another measurement."""
    return (result.verdict in (Verdict.FAIL, Verdict.GENERATOR_LIMITED)
            and result.steal is not None and result.steal > settings.max_steal_fraction)


def steal_persists(probe_steals: list[float | None], settings: ProbeSettings) -> bool:
    """True when the last `persistent_steal_probes` probes all lost more than the allowed
    share of the CPU to other guests (`probe_steals`: one entry per probe, oldest first)."""
    n = settings.persistent_steal_probes
    recent = probe_steals[-n:]
    return n > 0 and len(recent) == n and all(
        s is not None and s > settings.max_steal_fraction for s in recent)


@dataclass(frozen=True)
class WindowRow:
    """One measurement window: a row of measurements.csv."""

    time: float
    phase: str  # baseline | search | final
    candidate: Candidate
    rate: float
    window: int
    window_s: float
    requests: int
    errors: int
    throughput: float
    p50_us: float
    p99_us: float
    late_fraction: float
    verdict: str
    cpu_steal: float | None
    server: ServerWindow | None = None
    gpu: Mapping[str, float] = field(default_factory=dict)
    mode: str = "open"

    def to_csv(self) -> dict[str, object]:
        c = self.candidate
        return {
            "time": self.time, "phase": self.phase, "candidate": c.key,
            "max_batch_size": c.max_batch_size, "max_queue_delay_us": c.max_queue_delay_us,
            "instance_count": c.instance_count,
            "preferred_batch_sizes": "-".join(map(str, c.preferred_batch_sizes)),
            "mode": self.mode, "rate": self.rate, "window": self.window,
            "window_s": self.window_s, "requests": self.requests, "errors": self.errors,
            "throughput": self.throughput, "p50_us": self.p50_us, "p99_us": self.p99_us,
            "late_fraction": self.late_fraction, "verdict": self.verdict,
            "cpu_steal": "" if self.cpu_steal is None else round(self.cpu_steal, 4),
            **({f"server_{k}": v for k, v in self.server.to_row().items()}
               if self.server is not None else {}),
            **dict(self.gpu),
        }


@dataclass
class ProbeOutcome:
    result: ProbeResult
    rows: list[WindowRow]  # every window measured, retries included


class WindowWatch:
    """The bookkeeping of one probe: server counters and CPU times at each window boundary, and
    the verdict after each window (the load generator calls `at_boundary` and `decide`)."""

    def __init__(self, counters: Callable[[], Counters], settings: ProbeSettings, *,
                 slo_us: float, max_error_rate: float, final: bool, cpu: bool) -> None:
        self.counters = counters
        self.settings = settings
        self.slo_us = slo_us
        self.max_error_rate = max_error_rate
        self.final = final
        self.measure_cpu = cpu
        self.snapshots: dict[int, Counters] = {}
        self.cpu: dict[int, Any] = {}
        self.verdicts: list[Verdict] = []

    @property
    def max_windows(self) -> int:
        return self.settings.final_windows if self.final else self.settings.max_windows

    def at_boundary(self, k: int) -> None:
        self.snapshots[k] = self.counters()
        if self.measure_cpu:
            import psutil

            self.cpu[k] = psutil.cpu_times()

    def judge(self, windows: list[Window]) -> Verdict:
        s = self.settings
        return judge_windows(
            [w.latency_us().tolist() for w in windows],
            [w.service_latency_us().tolist() for w in windows],
            [w.lateness_us().tolist() for w in windows],
            requests=sum(w.requests for w in windows), errors=sum(w.errors for w in windows),
            slo_us=self.slo_us, max_error_rate=self.max_error_rate,
            min_samples=s.min_samples, last=len(windows) >= self.max_windows,
            late_threshold_us=s.late_threshold_us, max_late_fraction=s.max_late_fraction)

    def decide(self, windows: list[Window]) -> bool:
        v = self.judge(windows)
        self.verdicts.append(v)
        s = self.settings
        enough = s.final_windows if self.final else min(s.min_pass_windows, s.max_windows)
        if len(windows) < enough and v is not Verdict.FAIL:
            return False
        return v is not Verdict.UNSURE

    def verdict(self) -> Verdict:
        v = self.verdicts[-1] if self.verdicts else Verdict.FAIL
        return Verdict.FAIL if v is Verdict.UNSURE else v

    def steal(self, first: int, last: int) -> float | None:
        if first in self.cpu and last in self.cpu and last > first:
            return steal_fraction(self.cpu[first], self.cpu[last])
        return None

    def server_window(self, index: int) -> ServerWindow | None:
        before, after = self.snapshots.get(index - 1), self.snapshots.get(index)
        return diff(before, after) if before and after else None


class Prober:
    """Open-loop probes of the loaded config through a persistent load generator."""

    def __init__(self, loadgen: LoadGenerator, counters: Callable[[], Counters],
                 drain: Callable[[], None], *, slo_us: float, max_error_rate: float,
                 settings: ProbeSettings | None = None, metrics_url: str | None = None,
                 local_server: bool = False, max_workers: int | None = None,
                 on_event: EventSink = ignore) -> None:
        self.loadgen = loadgen
        self.counters = counters
        self.drain = drain
        self.slo_us = slo_us
        self.max_error_rate = max_error_rate
        self.settings = settings or ProbeSettings()
        self.metrics_url = metrics_url
        # On the server's own machine, CPU time stolen by the hypervisor is measured per window.
        self.local_server = local_server
        self.max_workers = max(max_workers or loadgen.workers, loadgen.workers)
        self.on_event = on_event
        self.probe_steals: list[float | None] = []  # CPU steal of every probe, oldest first
        self._steal_reported = False
        # Which family of arrival schedules the probes send (`arrival_seed`): a caller that
        # repeats a comparison changes it between repetitions.
        self.schedules = 0

    def probe(self, candidate: Candidate, rate: float, *, final: bool = False,
              phase: str = "search") -> ProbeOutcome:
        rows: list[WindowRow] = []
        result = self._probe_once(candidate, rate, final, phase, rows)
        # The generator could not keep the rate: add a worker process (when the machine has
        # cores to spare) and measure again, instead of settling for a flagged result.
        while (result.verdict is Verdict.GENERATOR_LIMITED
               and self.loadgen.workers < self.max_workers):
            self.loadgen.close()
            self.loadgen.workers += 1
            self.loadgen.start()
            self.on_event(WorkersAdded(self.loadgen.workers))
            result = self._probe_once(candidate, rate, final, phase, rows)
        # Other guests of the host took the CPU meanwhile: measure again before blaming the
        # config or the generator (a few times at most; then the verdict stands).
        for _ in range(self.settings.disturbed_retries):
            if not disturbed(result, self.settings):
                break
            if steal_persists(self.probe_steals, self.settings):
                if not self._steal_reported:
                    self._steal_reported = True
                    self.on_event(StealPersists(self.settings.persistent_steal_probes))
                break
            self._steal_reported = False
            self.on_event(ProbeDisturbed(candidate, rate, result.steal or 0.0))
            result = self._probe_once(candidate, rate, final, phase, rows)
        return ProbeOutcome(result, rows)

    def _probe_once(self, candidate: Candidate, rate: float, final: bool, phase: str,
                    rows: list[WindowRow]) -> ProbeResult:
        import numpy as np

        s = self.settings
        watch = WindowWatch(self.counters, s, slo_us=self.slo_us,
                            max_error_rate=self.max_error_rate, final=final,
                            cpu=self.local_server)
        m = self.loadgen.measure(mode="open", rate=rate, warmup_s=s.warmup_s,
                                 window_s=s.window_s, max_windows=watch.max_windows,
                                 decide=watch.decide, at_boundary=watch.at_boundary,
                                 seed=arrival_seed(rate, final, self.schedules))
        self.drain()
        gpu = self.gpu()
        windows = m.windows
        for w in windows:
            rows.append(self._row(w, watch, candidate, rate, "final" if final else phase, gpu))
        lat = np.concatenate([w.latency_us() for w in windows]) if windows else np.array([])
        secs = sum(w.seconds for w in windows) or 1.0
        requests = sum(w.requests for w in windows)
        errors = sum(w.errors for w in windows)
        steal = watch.steal(-1, max(watch.cpu)) if windows and watch.cpu else None
        self.probe_steals.append(steal)
        verdict = watch.verdict()
        one_bad = final and verdict is not Verdict.PASS and single_window_failure(
            [w.latency_us().tolist() for w in windows], self.slo_us, min_samples=s.min_samples)
        return ProbeResult(rate, verdict, quantile_ci(lat.tolist(), 0.99),
                           float(sum(int(w.ok.sum()) for w in windows)) / secs,
                           errors / requests if requests else 0.0, m.seconds, steal=steal,
                           one_bad_window=one_bad)

    def _row(self, w: Window, watch: WindowWatch, candidate: Candidate, rate: float,
             phase: str, gpu: Mapping[str, float]) -> WindowRow:
        import numpy as np

        wl = w.latency_us()
        return WindowRow(
            time=time.time(), phase=phase, candidate=candidate, rate=rate, window=w.index,
            window_s=w.seconds, requests=w.requests, errors=w.errors,
            throughput=w.throughput(),
            p50_us=float(np.percentile(wl, 50)) if len(wl) else math.nan,
            p99_us=float(np.percentile(wl, 99)) if len(wl) else math.nan,
            late_fraction=float(np.mean(w.lateness_us() > self.settings.late_threshold_us))
            if w.requests else 0.0,
            verdict=watch.verdicts[w.index].value if w.index < len(watch.verdicts) else "",
            cpu_steal=watch.steal(w.index - 1, w.index), server=watch.server_window(w.index),
            gpu=gpu)

    def gpu(self) -> dict[str, float]:
        if not self.metrics_url:
            return {}
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=2) as resp:  # noqa: S310
                return gpu_metrics(resp.read().decode("utf-8", "replace"))
        except (OSError, ValueError):
            return {}
