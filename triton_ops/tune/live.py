"""The live side of `tune`: candidate configs applied to a running Triton, and measured.

`LiveTarget` implements the search's SearchTarget: `load` applies a candidate with the
model-control API (`load_model(name, config=json)`, no server restart); `probe` runs one
open-loop measurement at an arrival rate with the persistent load generator, stops as soon
as the p99 confidence interval decides the SLO (or the windows are stable), diffs Triton's
statistics per window, and appends every window to the measurement log. `profile_service`
measures the cost of one execution per batch size from the same statistics.
"""

from __future__ import annotations

import copy
import json
import math
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from triton_ops.envelope.model import Envelope
from triton_ops.loadgen.engine import LoadGenerator, Window
from triton_ops.tensors import infer_inputs, input_types, make_input_sets
from triton_ops.tune.batcher import Candidate, ServiceProfile
from triton_ops.tune.search import ProbeResult
from triton_ops.tune.server_stats import (
    Counters,
    ServerWindow,
    counters_from_json,
    diff,
    gpu_metrics,
)
from triton_ops.tune.stats import Verdict, judge_windows, quantile_ci, single_window_failure

# Queue delay while profiling: long enough that b requests sent at once execute together.
_PROFILE_DELAY_US = 20_000


def _counted(times: Any) -> list[float]:
    return [v for k, v in times._asdict().items() if k not in ("guest", "guest_nice")]


def candidate_config(base: Mapping[str, Any], candidate: Candidate) -> dict[str, Any]:
    """The model's config (protobuf JSON form) with the candidate's settings put in."""
    cfg = copy.deepcopy(dict(base))
    cfg["max_batch_size"] = candidate.max_batch_size
    if candidate.max_batch_size > 0:
        dyn = dict(cfg.get("dynamic_batching") or {})
        dyn["max_queue_delay_microseconds"] = str(candidate.max_queue_delay_us)
        if candidate.preferred_batch_sizes:
            dyn["preferred_batch_size"] = list(candidate.preferred_batch_sizes)
        else:
            dyn.pop("preferred_batch_size", None)
        cfg["dynamic_batching"] = dyn
    else:
        cfg.pop("dynamic_batching", None)
    groups = [dict(g) for g in cfg.get("instance_group") or [{}]]
    # The candidate's count goes to the first group; others (if any) are dropped so that the
    # instance count means what it says.
    first = groups[0]
    first["count"] = candidate.instance_count
    cfg["instance_group"] = [first]
    return cfg


def candidate_from_config(cfg: Mapping[str, Any]) -> Candidate:
    """The settings of a loaded config, as a Candidate (the baseline)."""
    dyn = cfg.get("dynamic_batching") or {}
    groups = cfg.get("instance_group") or [{}]
    count = sum(int(g.get("count", 1) or 1) for g in groups)
    mbs = int(cfg.get("max_batch_size", 0) or 0)
    pref = tuple(int(p) for p in dyn.get("preferred_batch_size", []) or [] if int(p) <= mbs)
    if pref == (mbs,):
        pref = ()  # Triton fills in [max_batch_size] itself: the same as no preferred sizes
    return Candidate(mbs, int(dyn.get("max_queue_delay_microseconds", 0) or 0) if mbs else 0,
                     max(count, 1), pref if mbs else ())


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


def steal_fraction(before: Any, after: Any) -> float | None:
    """The share of this machine's CPU time the hypervisor gave to other guests between two
    psutil.cpu_times() readings (0 on bare metal; None when unknown)."""
    total = sum(_counted(after)) - sum(_counted(before))
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


class LiveTarget:
    """Applies candidates to `model` on a running Triton and measures them."""

    def __init__(self, grpc_url: str, model: str, envelope: Envelope, *, slo_us: float,
                 max_error_rate: float, loadgen: LoadGenerator,
                 record: Callable[[dict[str, object]], None],
                 metrics_url: str | None = None, settings: ProbeSettings | None = None,
                 load_timeout_s: float = 120.0, max_workers: int | None = None,
                 record_event: Callable[[str, dict[str, object]], None] = lambda k, d: None,
                 local_server: bool = False,
                 ) -> None:
        import tritonclient.grpc as grpcclient

        self.grpc_url = grpc_url
        self.client = grpcclient.InferenceServerClient(grpc_url)
        self.model = model
        self.envelope = envelope
        self.slo_us = slo_us
        self.max_error_rate = max_error_rate
        self.loadgen = loadgen
        self.record = record
        self.metrics_url = metrics_url
        self.settings = settings or ProbeSettings()
        self.load_timeout_s = load_timeout_s
        self.max_workers = max(max_workers or loadgen.workers, loadgen.workers)
        self.record_event = record_event
        # On the server's own machine, CPU time stolen by the hypervisor is measured per window.
        self.local_server = local_server
        self.was_loaded = self.client.is_model_ready(model)
        if not self.was_loaded:
            self.client.load_model(model)
        self.original = self.client.get_model_config(model, as_json=True)["config"]
        self.loaded: Candidate | None = candidate_from_config(self.original)
        # The config the model runs with now, as the server reports it (None when unknown,
        # e.g. after a failed load), and the config last sent that produced it.
        self.loaded_config: dict[str, Any] | None = dict(self.original)
        self._sent: str | None = None
        self.phase = "search"
        self.probe_steals: list[float | None] = []  # CPU steal of every probe, oldest first
        self._steal_reported = False

    # ---- configs ---------------------------------------------------------------------------
    def load(self, candidate: Candidate) -> str | None:
        from tritonclient.utils import InferenceServerException

        sent = json.dumps(candidate_config(self.original, candidate), sort_keys=True)
        # The model already runs with exactly this config: a reload would only cost time
        # (seconds for a large model on a GPU).
        if sent == self._sent and self.client.is_model_ready(self.model):
            self.loaded = candidate
            return None
        self.loaded, self.loaded_config, self._sent = None, None, None
        try:
            self.client.load_model(self.model, config=sent)
        except InferenceServerException as exc:
            self._reload_original_quietly()
            return str(exc.message() or exc)
        deadline = time.monotonic() + self.load_timeout_s
        while not self.client.is_model_ready(self.model):
            if time.monotonic() > deadline:
                return f"not ready {self.load_timeout_s:.0f} s after loading"
            time.sleep(0.1)
        self.loaded, self._sent = candidate, sent
        # Triton fills in defaults (e.g. preferred_batch_size [max_batch_size]): keep its form
        # to compare with the original.
        self.loaded_config = self.client.get_model_config(self.model, as_json=True)["config"]
        return None

    def _reload_original_quietly(self) -> None:
        try:
            self.client.load_model(self.model, config=json.dumps(self.original))
        except Exception:  # noqa: BLE001 - best effort; restore() reports for real
            pass

    def restore(self) -> None:
        """Put the model back as it was: its original config, or unloaded."""
        if self.was_loaded and self.loaded_config == self.original \
                and self.client.is_model_ready(self.model):
            return  # the model runs with its original config already (the baseline was last)
        self.client.load_model(self.model, config=json.dumps(self.original))
        self.loaded = candidate_from_config(self.original)
        self.loaded_config, self._sent = dict(self.original), None
        if not self.was_loaded:
            self.client.unload_model(self.model)

    def close(self) -> None:
        self.client.close()

    # ---- measurement -----------------------------------------------------------------------
    def counters(self) -> Counters:
        return counters_from_json(
            self.client.get_inference_statistics(self.model, as_json=True), self.model)

    def gpu(self) -> dict[str, float]:
        if not self.metrics_url:
            return {}
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=2) as resp:  # noqa: S310
                return gpu_metrics(resp.read().decode("utf-8", "replace"))
        except (OSError, ValueError):
            return {}

    def probe(self, candidate: Candidate, rate: float, *, final: bool = False) -> ProbeResult:
        result = self._probe_once(candidate, rate, final=final)
        # The generator could not keep the rate: add a worker process (when the machine has
        # cores to spare) and measure again, instead of settling for a flagged result.
        while (result.verdict is Verdict.GENERATOR_LIMITED
               and self.loadgen.workers < self.max_workers):
            self.loadgen.close()
            self.loadgen.workers += 1
            self.loadgen.start()
            self.record_event("workers", {"workers": self.loadgen.workers})
            result = self._probe_once(candidate, rate, final=final)
        # Other guests of the host took the CPU meanwhile: measure again before blaming the
        # config or the generator (a few times at most; then the verdict stands).
        for _ in range(self.settings.disturbed_retries):
            if not disturbed(result, self.settings):
                break
            if steal_persists(self.probe_steals, self.settings):
                if not self._steal_reported:
                    self._steal_reported = True
                    self.record_event("steal_persists", {
                        "probes": self.settings.persistent_steal_probes})
                break
            self._steal_reported = False
            self.record_event("disturbed", {"candidate": candidate, "rate": rate,
                                            "steal": result.steal})
            result = self._probe_once(candidate, rate, final=final)
        return result

    def _probe_once(self, candidate: Candidate, rate: float, *, final: bool = False
                    ) -> ProbeResult:
        import numpy as np

        s = self.settings
        snapshots: dict[int, Counters] = {}
        cpu: dict[int, Any] = {}
        verdicts: list[Verdict] = []
        if self.local_server:
            import psutil

        def at_boundary(k: int) -> None:
            snapshots[k] = self.counters()
            if self.local_server:
                cpu[k] = psutil.cpu_times()

        def judge(windows: list[Window]) -> Verdict:
            last = len(windows) >= (s.final_windows if final else s.max_windows)
            return judge_windows(
                [w.latency_us().tolist() for w in windows],
                [w.service_latency_us().tolist() for w in windows],
                [w.lateness_us().tolist() for w in windows],
                requests=sum(w.requests for w in windows),
                errors=sum(w.errors for w in windows),
                slo_us=self.slo_us, max_error_rate=self.max_error_rate,
                min_samples=s.min_samples, last=last,
                late_threshold_us=s.late_threshold_us, max_late_fraction=s.max_late_fraction)

        def decide(windows: list[Window]) -> bool:
            v = judge(windows)
            verdicts.append(v)
            enough = s.final_windows if final else min(s.min_pass_windows, s.max_windows)
            if len(windows) < enough and v is not Verdict.FAIL:
                return False
            return v is not Verdict.UNSURE

        m = self.loadgen.measure(mode="open", rate=rate, warmup_s=s.warmup_s,
                                 window_s=s.window_s,
                                 max_windows=s.final_windows if final else s.max_windows,
                                 decide=decide, at_boundary=at_boundary)
        self._drain()
        gpu_after = self.gpu()
        verdict = verdicts[-1] if verdicts else Verdict.FAIL
        if verdict is Verdict.UNSURE:
            verdict = Verdict.FAIL
        windows = m.windows
        lat = np.concatenate([w.latency_us() for w in windows]) if windows else np.array([])
        est = quantile_ci(lat.tolist(), 0.99)
        secs = sum(w.seconds for w in windows) or 1.0
        requests = sum(w.requests for w in windows)
        errors = sum(w.errors for w in windows)
        throughput = float(sum(int(w.ok.sum()) for w in windows)) / secs
        steal = (steal_fraction(cpu[-1], cpu[max(cpu)])
                 if windows and -1 in cpu and max(cpu) >= 0 else None)
        for w in windows:
            before, after = snapshots.get(w.index - 1), snapshots.get(w.index)
            server = diff(before, after).to_row() if before and after else {}
            window_steal = (steal_fraction(cpu[w.index - 1], cpu[w.index])
                            if w.index - 1 in cpu and w.index in cpu else None)
            wl = w.latency_us()
            row: dict[str, object] = {
                "time": time.time(), "phase": "final" if final else self.phase,
                "candidate": candidate.key, **candidate.to_dict(),
                "preferred_batch_sizes": "-".join(map(str, candidate.preferred_batch_sizes)),
                "mode": "open", "rate": rate, "window": w.index, "window_s": w.seconds,
                "requests": w.requests, "errors": w.errors, "throughput": w.throughput(),
                "p50_us": float(np.percentile(wl, 50)) if len(wl) else math.nan,
                "p99_us": float(np.percentile(wl, 99)) if len(wl) else math.nan,
                "late_fraction": float(np.mean(w.lateness_us() > s.late_threshold_us))
                if w.requests else 0.0,
                "verdict": verdicts[w.index].value if w.index < len(verdicts) else "",
                "cpu_steal": "" if window_steal is None else round(window_steal, 4),
                **{f"server_{k}": v for k, v in server.items()},
                **{k: v for k, v in gpu_after.items()},
            }
            self.record(row)
        self.probe_steals.append(steal)
        one_bad = final and verdict is not Verdict.PASS and single_window_failure(
            [w.latency_us().tolist() for w in windows], self.slo_us, min_samples=s.min_samples)
        return ProbeResult(rate, verdict, est, throughput,
                           errors / requests if requests else 0.0, m.seconds, steal=steal,
                           one_bad_window=one_bad)

    # ---- profiling ----------------------------------------------------------------------------
    def profile_service(self, max_batch_size: int, *, instances: int = 1,
                        seconds_per_size: float = 0.5, measure_parallel: bool = False,
                        shared_cores: int = 1, measure_cores: bool = False,
                        cpu_model: bool = True) -> ServiceProfile:
        """Cost of one execution per batch size (powers of two up to max_batch_size).

        Batches are formed the way traffic forms them: b single requests in flight at once
        (closed loop) on one instance with a long queue delay, so the dynamic batcher
        executes b separate requests together, and per-request work in the backend is
        counted. The cost is read from Triton's per-batch-size statistics. The per-request
        overhead outside Triton (RPC, client) is the client-measured latency of lone
        requests minus the server's queue + compute time. `shared_cores`: the CPU cores the
        load generator and the server share (the machine's, when the server is embedded; 1
        for a remote server); `measure_cores`: also measure how many of them are busy at the
        ceiling (only meaningful on the server's machine).
        """
        mbs = max(max_batch_size, 1)
        batching = max_batch_size > 0
        base = Candidate(max_batch_size, _PROFILE_DELAY_US if batching else 0, 1)
        error = self.load(base)
        if error is not None:
            raise RuntimeError(f"cannot load the profiling config ({base.label()}): {error}")
        sizes = (sorted({min(2**k, mbs) for k in range(0, int(math.log2(mbs)) + 2)})
                 if batching else [1])
        batch_us: dict[int, float] = {}
        overhead = 0.0
        for b in sizes:
            measured = self._closed_loop_window(b, warmup_s=0.2, window_s=seconds_per_size)
            if measured is None:
                continue
            window, w, _ = measured
            # The targeted size; when the bursts did not arrive within the delay (a slow
            # client), the size they most often formed instead.
            size = b if w.batch_executions.get(b) else max(
                w.batch_executions, key=lambda k: w.batch_executions[k], default=None)
            if size is not None and size in w.batch_compute_us:
                batch_us[size] = w.batch_compute_us[size]
            if b == 1 and w.inferences:
                latencies = window.service_latency_us()
                server_us = (w.queue_us + w.compute_input_us + w.compute_infer_us
                             + w.compute_output_us)
                if len(latencies):
                    overhead = max(0.0, float(latencies.mean()) - server_us)
        self._drain()
        if not batch_us:
            raise RuntimeError("Triton reported no per-batch-size statistics while profiling")
        # The ceiling runs on the same config: under saturation the queue always holds a
        # full batch, so the batcher never waits for the delay.
        ceiling, ceiling_batch, busy = self._ceiling(max_batch_size, measure_cores=measure_cores)
        efficiency = 1.0
        if measure_parallel and instances > 1:
            efficiency = self._parallel_efficiency(max_batch_size, batch_us, seconds_per_size)
        return ServiceProfile(batch_us, overhead_us=overhead, parallel_efficiency=efficiency,
                              ceiling_rps=ceiling, ceiling_batch=ceiling_batch,
                              shared_cores=shared_cores, busy_cores=busy, cpu_model=cpu_model)

    def _ceiling(self, max_batch_size: int, *, measure_cores: bool = False,
                 ) -> tuple[float | None, int | None, float | None]:
        """Closed-loop load on the largest-batch config: the most requests/s the whole system
        (load generator, Triton frontend, model, sharing one machine) completes, its average
        batch, and (measure_cores) how many CPU cores of this machine were busy meanwhile."""
        concurrency = max(8, min(2 * max(max_batch_size, 1), 1024))
        measured = self._closed_loop_window(concurrency, warmup_s=0.5, window_s=1.5)
        self._drain()
        if measured is None:
            return None, None, None
        window, w, busy = measured
        batch = max(1, round(w.avg_batch)) if w.avg_batch else None
        return (window.throughput() or None), batch, busy if measure_cores else None

    def _closed_loop_window(self, concurrency: int, *, warmup_s: float, window_s: float,
                            ) -> tuple[Window, ServerWindow, float | None] | None:
        """One closed-loop window after a warm-up: the client's samples, what the server did
        meanwhile, and how many CPU cores of this machine were busy (None if unknown)."""
        import psutil

        snapshots: dict[int, tuple[Counters, float, Any]] = {}

        def boundary(k: int) -> None:
            snapshots[k] = (self.counters(), time.monotonic(), psutil.cpu_times())

        m = self.loadgen.measure(mode="closed", concurrency=concurrency, warmup_s=warmup_s,
                                 window_s=window_s, max_windows=1, at_boundary=boundary)
        if not m.windows or -1 not in snapshots or 0 not in snapshots:
            return None
        (s0, t0, c0), (s1, t1, c1) = snapshots[-1], snapshots[0]
        idle = (c1.idle - c0.idle) + (getattr(c1, "iowait", 0.0) - getattr(c0, "iowait", 0.0))
        # guest time is already counted in user time on Linux
        total = sum(_counted(c1)) - sum(_counted(c0))
        busy = max(0.0, total - idle) / (t1 - t0) if t1 > t0 and total > 0 else None
        return m.windows[0], diff(s0, s1), busy

    def _drain(self, timeout_s: float = 10.0) -> None:
        """Wait until the server has finished what an overloaded probe left queued."""
        deadline = time.monotonic() + timeout_s
        last = self.counters().inferences
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.counters().inferences
            if now == last:
                return
            last = now

    def _parallel_efficiency(self, max_batch_size: int, batch_us: dict[int, float],
                             seconds: float) -> float:
        """How much a second busy instance adds: same batch on 2 instances, 2 clients."""
        import threading

        import tritonclient.grpc as grpcclient

        b = 1 if max_batch_size <= 1 else min(8, max_batch_size)
        error = self.load(Candidate(max_batch_size, 0, 2))
        if error is not None:
            return 0.5
        batching = max_batch_size > 0
        tensors = make_input_sets(self.envelope.inputs, batch=b if batching else None, count=1)[0]
        before = self.counters()
        stop = time.monotonic() + seconds * 2

        def client_loop() -> None:
            c = grpcclient.InferenceServerClient(self.grpc_url)
            inputs = infer_inputs(tensors, input_types(self.envelope))
            while time.monotonic() < stop:
                c.infer(self.model, inputs)
            c.close()

        threads = [threading.Thread(target=client_loop) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=seconds * 4 + 10)
        w = diff(before, self.counters())
        single = batch_us.get(b)
        both = w.batch_compute_us.get(b)
        if not single or not both:
            return 0.5
        # Two executions overlap: each takes `both`; throughput of two = 2*single/both units.
        return max(0.0, min(1.0, 2 * single / both - 1))

