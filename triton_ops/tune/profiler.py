"""The service profile of a model on a live Triton: what one execution costs per batch size,
what a request costs outside Triton, the closed-loop ceiling of the whole system, and what a
second instance adds. The batcher model (triton_ops.tune.batcher) predicts from it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from triton_ops.tune.batcher import Candidate, ServiceProfile
from triton_ops.tune.control import ModelControl
from triton_ops.tune.prober import counted_cpu
from triton_ops.tune.server_stats import Counters, ServerWindow, diff

if TYPE_CHECKING:
    from triton_ops.loadgen.engine import LoadGenerator, Window

# Queue delay while profiling: long enough that b requests sent at once execute together.
PROFILE_DELAY_US = 20_000


@dataclass(frozen=True)
class ProfilePlan:
    """What to profile: batch sizes up to `max_batch_size`; `instances` > 1 measures what a
    second instance adds. `shared_cores`: the CPU cores the load generator and the server
    share (the machine's, when the server is embedded; 1 for a remote server);
    `measure_cores`: also measure how many of them are busy at the ceiling (only meaningful
    on the server's machine); `cpu_model`: the executions themselves run on the CPU."""

    max_batch_size: int
    instances: int = 1
    shared_cores: int = 1
    measure_cores: bool = False
    cpu_model: bool = True
    seconds_per_size: float = 0.5


@dataclass
class ClosedLoopWindow:
    """One closed-loop window: the client's samples, what the server did meanwhile, and how
    many CPU cores of this machine were busy (None if unknown)."""

    window: Window
    server: ServerWindow
    busy_cores: float | None
    seconds: float  # between the two statistics snapshots


def execution_gap_us(server: ServerWindow, seconds: float, max_batch_size: int) -> float | None:
    """Per execution, the time one instance spent outside the compute Triton reports, over a
    window in which it was saturated (every batch formed full: at least 90% of the max on
    average); None when it was not, since idle time would then count as gap."""
    if server.executions <= 0 or seconds <= 0 or \
            server.avg_batch < 0.9 * max(max_batch_size, 1):
        return None
    compute = sum(n * server.batch_compute_us.get(b, 0.0)
                  for b, n in server.batch_executions.items()) / server.executions
    return max(0.0, seconds * 1e6 / server.executions - compute)


class BoundaryMarks:
    """Server counters, clock and CPU times at each window boundary of a measurement."""

    def __init__(self, control: ModelControl) -> None:
        self.control = control
        self.at: dict[int, tuple[Counters, float, Any]] = {}

    def mark(self, k: int) -> None:
        import psutil

        self.at[k] = (self.control.counters(), time.monotonic(), psutil.cpu_times())


class Profiler:
    """Measures a `ServiceProfile` through the model control and the load generator."""

    def __init__(self, control: ModelControl, loadgen: LoadGenerator) -> None:
        self.control = control
        self.loadgen = loadgen

    def profile(self, plan: ProfilePlan) -> ServiceProfile:
        """Cost of one execution per batch size (powers of two up to max_batch_size).

        Batches are formed the way traffic forms them: b single requests in flight at once
        (closed loop) on one instance with a long queue delay, so the dynamic batcher executes
        b separate requests together, and per-request work in the backend is counted. The cost
        is read from Triton's per-batch-size statistics. The per-request overhead outside
        Triton (RPC, client) is the client-measured latency of lone requests minus the
        server's queue + compute time.
        """
        batching = plan.max_batch_size > 0
        base = Candidate(plan.max_batch_size, PROFILE_DELAY_US if batching else 0, 1)
        error = self.control.load(base)
        if error is not None:
            raise RuntimeError(f"cannot load the profiling config ({base.label()}): {error}")
        batch_us, overhead = self._batch_costs(plan)
        # The ceiling runs on the same config: under saturation the queue always holds a full
        # batch, so the batcher never waits for the delay.
        ceiling = self.ceiling(plan.max_batch_size)
        gap = execution_gap_us(ceiling.server, ceiling.seconds, plan.max_batch_size) \
            if ceiling else None
        efficiency = 1.0
        if plan.instances > 1:
            efficiency = self._parallel_efficiency(plan.max_batch_size, batch_us,
                                                   plan.seconds_per_size)
        return ServiceProfile(
            batch_us, overhead_us=overhead, parallel_efficiency=efficiency,
            execution_gap_us=gap or 0.0,
            ceiling_rps=(ceiling.window.throughput() or None) if ceiling else None,
            ceiling_batch=max(1, round(ceiling.server.avg_batch))
            if ceiling and ceiling.server.avg_batch else None,
            shared_cores=plan.shared_cores,
            busy_cores=ceiling.busy_cores if ceiling and plan.measure_cores else None,
            cpu_model=plan.cpu_model)

    def _batch_costs(self, plan: ProfilePlan) -> tuple[dict[int, float], float]:
        """Mean compute time of one execution per batch size, and the per-request overhead
        outside Triton (from lone requests)."""
        mbs = max(plan.max_batch_size, 1)
        sizes = (sorted({min(2**k, mbs) for k in range(0, int(math.log2(mbs)) + 2)})
                 if plan.max_batch_size > 0 else [1])
        batch_us: dict[int, float] = {}
        overhead = 0.0
        for b in sizes:
            measured = self.closed_loop_window(b, warmup_s=0.2, window_s=plan.seconds_per_size)
            if measured is None:
                continue
            w = measured.server
            # The targeted size; when the bursts did not arrive within the delay (a slow
            # client), the size they most often formed instead.
            size = b if w.batch_executions.get(b) else max(
                w.batch_executions, key=lambda k: w.batch_executions[k], default=None)
            if size is not None and size in w.batch_compute_us:
                batch_us[size] = w.batch_compute_us[size]
            if b == 1 and w.inferences:
                latencies = measured.window.service_latency_us()
                server_us = (w.queue_us + w.compute_input_us + w.compute_infer_us
                             + w.compute_output_us)
                if len(latencies):
                    overhead = max(0.0, float(latencies.mean()) - server_us)
        self.control.drain()
        if not batch_us:
            raise RuntimeError("Triton reported no per-batch-size statistics while profiling")
        return batch_us, overhead

    def ceiling(self, max_batch_size: int) -> ClosedLoopWindow | None:
        """Closed-loop load on the largest-batch config: the most requests/s the whole system
        (load generator, Triton frontend, model, sharing one machine) completes, its average
        batch, and how many CPU cores of this machine were busy meanwhile."""
        concurrency = max(8, min(2 * max(max_batch_size, 1), 1024))
        measured = self.closed_loop_window(concurrency, warmup_s=0.5, window_s=1.5)
        self.control.drain()
        return measured

    def closed_loop_window(self, concurrency: int, *, warmup_s: float, window_s: float
                           ) -> ClosedLoopWindow | None:
        """One closed-loop window after a warm-up."""
        marks = BoundaryMarks(self.control)
        m = self.loadgen.measure(mode="closed", concurrency=concurrency, warmup_s=warmup_s,
                                 window_s=window_s, max_windows=1, at_boundary=marks.mark)
        if not m.windows or -1 not in marks.at or 0 not in marks.at:
            return None
        (s0, t0, c0), (s1, t1, c1) = marks.at[-1], marks.at[0]
        idle = (c1.idle - c0.idle) + (getattr(c1, "iowait", 0.0) - getattr(c0, "iowait", 0.0))
        total = sum(counted_cpu(c1)) - sum(counted_cpu(c0))
        busy = max(0.0, total - idle) / (t1 - t0) if t1 > t0 and total > 0 else None
        return ClosedLoopWindow(m.windows[0], diff(s0, s1), busy, t1 - t0)

    def _parallel_efficiency(self, max_batch_size: int, batch_us: dict[int, float],
                             seconds: float) -> float:
        """How much a second busy instance adds: the compute time of one execution of the
        same batch size with two instances executing at once, against one alone."""
        b = 1 if max_batch_size <= 1 else min(8, max_batch_size)
        # max_batch_size b and a long delay: 2b requests in flight form two batches of b,
        # one per instance.
        paired = Candidate(b if max_batch_size > 0 else 0,
                           PROFILE_DELAY_US if max_batch_size > 1 else 0, 2)
        if self.control.load(paired) is not None:
            return 0.5
        measured = self.closed_loop_window(2 * b, warmup_s=0.3, window_s=seconds * 2)
        self.control.drain()
        single = batch_us.get(b)
        both = measured.server.batch_compute_us.get(b) if measured else None
        if not single or not both:
            return 0.5
        # Two executions overlap: each takes `both`; throughput of two = 2*single/both units.
        return max(0.0, min(1.0, 2 * single / both - 1))
