"""A model of Triton's dynamic batcher: predicts p99 latency and goodput of a candidate config.

The service time of one execution per batch size is profiled once from the server's own
statistics (`ServiceProfile`); a discrete-event simulation of the dynamic batcher (max batch
size, preferred sizes, max queue delay, N instances sharing the machine) then predicts the
latency distribution at any Poisson arrival rate, so that only the promising candidates are
measured on the live server.

Batch formation follows Triton's documented behaviour: when an instance is free the batcher
takes queued requests; it dispatches at once when the queue holds the target batch (the
largest preferred size, else max_batch_size), otherwise it waits for more requests until the
oldest one has waited max_queue_delay and then sends what it has (up to max_batch_size).

With a queue policy (a timeout or a queue size), Triton's batcher does not prepare the next
batch while the instances are busy (the priority queue turns prefetching off), and when an
instance frees with requests queued, the next batch sometimes starts only when the next
request arrives (`QUEUE_POLICY_STALL_SHARE` of those hand-overs, traced on the bundled
Triton; docs/overload.md). `simulate(..., stall_share=...)` models that wait.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

# Triton 2.51 with a queue policy: the share of hand-overs (an instance frees while requests
# are queued) after which the next batch waited for the next arrival (bench/RESULTS.md).
QUEUE_POLICY_STALL_SHARE = 0.25


@dataclass(frozen=True, order=True)
class Candidate:
    """One point of the search space: the settings `tune` changes."""

    max_batch_size: int
    max_queue_delay_us: int
    instance_count: int
    preferred_batch_sizes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.instance_count < 1:
            raise ValueError("instance_count must be >= 1")
        if self.max_batch_size < 0 or self.max_queue_delay_us < 0:
            raise ValueError("max_batch_size and max_queue_delay_us must be >= 0")
        for p in self.preferred_batch_sizes:
            if not 1 <= p <= max(self.max_batch_size, 1):
                raise ValueError(f"preferred batch size {p} is outside 1..{self.max_batch_size}")

    @property
    def key(self) -> str:
        pref = "-".join(str(p) for p in self.preferred_batch_sizes) or "none"
        return (f"mbs{self.max_batch_size}_delay{self.max_queue_delay_us}us_"
                f"inst{self.instance_count}_pref{pref}")

    def label(self) -> str:
        pref = f" pref={list(self.preferred_batch_sizes)}" if self.preferred_batch_sizes else ""
        return (f"max_batch={self.max_batch_size} delay={self.max_queue_delay_us}us "
                f"instances={self.instance_count}{pref}")

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["preferred_batch_sizes"] = list(self.preferred_batch_sizes)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Candidate:
        return cls(
            max_batch_size=int(data["max_batch_size"]),  # type: ignore[arg-type]
            max_queue_delay_us=int(data["max_queue_delay_us"]),  # type: ignore[arg-type]
            instance_count=int(data["instance_count"]),  # type: ignore[arg-type]
            preferred_batch_sizes=tuple(
                int(p) for p in data.get("preferred_batch_sizes") or ()  # type: ignore[union-attr]
            ),
        )


@dataclass
class ServiceProfile:
    """What one execution costs, per batch size, and what a request costs outside Triton.

    batch_us: microseconds of one execution (compute input + infer + output) per batch size,
    from Triton's per-batch-size statistics. Sizes not profiled are interpolated linearly
    (and extrapolated from the two largest ones).
    overhead_us: per-request latency outside queue and compute (RPC, serialisation, client).
    execution_gap_us: per execution, the time an instance is occupied beyond the compute time
    Triton reports (the scheduler's and the backend's hand-over of the batch and its
    responses), measured on one saturated instance. Larger batches pay it less often per
    request; a second instance hides it while the first one computes.
    parallel_efficiency: how much a second concurrently busy instance adds (1 = perfect
    scaling, 0 = instances only take turns on the same cores).
    contention: how much slower an execution is under load than alone (the load generator,
    the server's frontend and other processes share the machine), measured under load.
    ceiling_rps: the most requests/s the whole system (client, frontend, model) completed
    with batches of `ceiling_batch`, while `busy_cores` CPU cores were busy (measured when
    the load generator runs on the server's machine; None: all `shared_cores`). What a
    request costs beyond its execution (`request_cost_us`, in core-microseconds: RPC,
    serialisation, the load generator) is what those cores spent per request, less the
    execution's own share when the model runs on the CPU (`cpu_model`). The machine's
    `shared_cores` bound every config at shared_cores / (CPU cost per request).
    """

    batch_us: dict[int, float]
    overhead_us: float = 0.0
    parallel_efficiency: float = 1.0
    execution_gap_us: float = 0.0
    contention: float = 1.0
    ceiling_rps: float | None = None
    ceiling_batch: int | None = None
    shared_cores: int = 1
    busy_cores: float | None = None
    cpu_model: bool = True
    _sizes: list[int] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.batch_us:
            raise ValueError("a service profile needs the cost of at least one batch size")
        self.batch_us = {int(k): float(v) for k, v in self.batch_us.items()}
        self._sizes = sorted(self.batch_us)

    def service_us(self, batch: int) -> float:
        sizes = self._sizes
        if batch in self.batch_us:
            return self.batch_us[batch]
        if len(sizes) == 1:
            # One point: assume cost proportional to the batch (pessimistic for batching).
            return self.batch_us[sizes[0]] * batch / sizes[0]
        i = bisect.bisect_left(sizes, batch)
        if i == 0:
            lo, hi = sizes[0], sizes[1]
        elif i == len(sizes):
            lo, hi = sizes[-2], sizes[-1]
        else:
            lo, hi = sizes[i - 1], sizes[i]
        t_lo, t_hi = self.batch_us[lo], self.batch_us[hi]
        value = t_lo + (t_hi - t_lo) * (batch - lo) / (hi - lo)
        return max(value, min(self.batch_us.values()) * 0.5)

    @property
    def request_cost_us(self) -> float:
        if not self.ceiling_rps or not self.ceiling_batch:
            return 0.0
        b = self.ceiling_batch
        busy = self.shared_cores if self.busy_cores is None else self.busy_cores
        per_request = busy * 1e6 / self.ceiling_rps
        execution = self.service_us(b) * self.contention / b if self.cpu_model else 0.0
        return max(0.0, per_request - execution)

    def speedup(self, busy: int) -> float:
        """Aggregate throughput of `busy` concurrently executing instances, in units of one."""
        return 1.0 + (busy - 1) * max(0.0, min(1.0, self.parallel_efficiency))

    def throughput(self, batch: int, instances: int) -> float:
        """Inferences/s of `instances` instances that always execute batches of `batch`: the
        device's share (parallel efficiency) or the instances' own cycles (compute plus the
        execution gap), whichever is lower."""
        compute = self.service_us(batch) * self.contention
        device = self.speedup(instances) * batch / compute
        cycles = instances * batch / (compute + self.execution_gap_us)
        return 1e6 * min(device, cycles)

    def capacity(self, candidate: Candidate) -> float:
        """Upper bound on the throughput (inferences/s) of a candidate config."""
        top = max(candidate.max_batch_size, 1)
        k = candidate.instance_count
        best_batch = max(range(1, top + 1), key=lambda b: self.throughput(b, k))
        capacity = self.throughput(best_batch, k)
        cost = self.request_cost_us
        if cost <= 0:
            return capacity
        # The machine's cores are shared by everything a request costs (and, for CPU
        # models, by the executions themselves).
        per_request_us = self.service_us(best_batch) * self.contention / best_batch
        cpu_us = cost + (per_request_us if self.cpu_model else 0.0)
        return min(capacity, self.shared_cores * 1e6 / cpu_us)

    def to_dict(self) -> dict[str, object]:
        return {
            "batch_us": {str(k): v for k, v in sorted(self.batch_us.items())},
            "overhead_us": self.overhead_us,
            "parallel_efficiency": self.parallel_efficiency,
            "execution_gap_us": self.execution_gap_us,
            "contention": self.contention,
            "ceiling_rps": self.ceiling_rps,
            "ceiling_batch": self.ceiling_batch,
            "shared_cores": self.shared_cores,
            "busy_cores": self.busy_cores,
            "cpu_model": self.cpu_model,
            "request_cost_us": self.request_cost_us,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ServiceProfile:
        return cls(
            batch_us={int(k): float(v) for k, v in data["batch_us"].items()},  # type: ignore[union-attr]
            overhead_us=float(data.get("overhead_us", 0.0)),  # type: ignore[arg-type]
            parallel_efficiency=float(data.get("parallel_efficiency", 1.0)),  # type: ignore[arg-type]
            execution_gap_us=float(data.get("execution_gap_us", 0.0)),  # type: ignore[arg-type]
            contention=float(data.get("contention", 1.0)),  # type: ignore[arg-type]
            ceiling_rps=float(data["ceiling_rps"]) if data.get("ceiling_rps") else None,  # type: ignore[arg-type]
            ceiling_batch=int(data["ceiling_batch"]) if data.get("ceiling_batch") else None,  # type: ignore[arg-type]
            shared_cores=int(data.get("shared_cores", 1)),  # type: ignore[arg-type]
            busy_cores=(float(data["busy_cores"])  # type: ignore[arg-type]
                        if data.get("busy_cores") is not None else None),
            cpu_model=bool(data.get("cpu_model", True)),
        )


@dataclass(frozen=True)
class SimResult:
    latencies_us: list[float]
    batch_sizes: list[int]
    waits_us: list[float] = field(default_factory=list)  # in the queue, until dispatched

    def p99_us(self) -> float:
        if not self.latencies_us:
            return math.nan
        data = sorted(self.latencies_us)
        return data[min(len(data) - 1, math.ceil(0.99 * len(data)) - 1)]

    def mean_batch(self) -> float:
        return sum(self.batch_sizes) / len(self.batch_sizes) if self.batch_sizes else 0.0


def poisson_arrivals_us(rate_per_s: float, n: int, seed: int = 0) -> list[float]:
    """Arrival times (µs) of n Poisson arrivals; same seed = same unit-rate sequence scaled,
    so predictions at different rates use common random numbers (monotone in the rate)."""
    rng = random.Random(seed)
    scale = 1e6 / rate_per_s
    t = 0.0
    out = []
    for _ in range(n):
        t += rng.expovariate(1.0) * scale
        out.append(t)
    return out


class BatcherQueue:
    """Requests waiting in the dynamic batcher, admitted from an arrival sequence as simulated
    time passes."""

    def __init__(self, arrivals_us: list[float]) -> None:
        self.arrivals = arrivals_us
        self.next = 0  # the first arrival not admitted yet
        self.waiting: deque[float] = deque()

    def pending(self) -> bool:
        return self.next < len(self.arrivals) or bool(self.waiting)

    def admit_until(self, t: float) -> None:
        while self.next < len(self.arrivals) and self.arrivals[self.next] <= t:
            self.waiting.append(self.arrivals[self.next])
            self.next += 1

    def dispatch(self, free_at: float, target: int, max_bs: int, delay: float,
                 stalled: bool = False) -> tuple[float, int]:
        """When the next batch goes to the instance free at `free_at`, and its size: at once
        when `target` requests wait, else when the oldest has waited `delay` or the target is
        reached, whichever comes first (what waits then, up to `max_bs`). `stalled`: when
        requests are queued at `free_at`, the batcher wakes only at the next arrival."""
        self.admit_until(free_at)
        if stalled and self.waiting and self.waiting[0] < free_at \
                and self.next < len(self.arrivals):
            free_at = self.arrivals[self.next]
        if not self.waiting:
            self.admit_until(self.arrivals[self.next])
        t = max(free_at, self.waiting[0])
        self.admit_until(t)
        if len(self.waiting) >= target:
            return t, target
        deadline = self.waiting[0] + delay
        if deadline > t:
            j = self.next + target - len(self.waiting) - 1
            t = self.arrivals[j] if j < len(self.arrivals) and self.arrivals[j] <= deadline \
                else deadline
            self.admit_until(t)
        return t, min(len(self.waiting), max_bs)


def execution_cores(profile: ServiceProfile, arrivals_us: list[float]) -> float:
    """The cores a CPU model's executions share at the arrivals' rate.

    A CPU model's executions share the machine's cores with the requests' own CPU work (RPC,
    frontend, load generator), which grows with the arrival rate: what is left for the
    executions is shared by the instances executing at once. Known only where the busy cores
    were measured (the server on this machine). A GPU model's executions do not compete for
    the cores (its capacity bound covers the CPU side)."""
    n = len(arrivals_us)
    if not profile.cpu_model or profile.busy_cores is None:
        return math.inf
    rate_per_us = n / arrivals_us[-1] if n and arrivals_us[-1] > 0 else 0.0
    return max(0.25, profile.shared_cores - rate_per_us * profile.request_cost_us)


def simulate(candidate: Candidate, profile: ServiceProfile, arrivals_us: list[float],
             *, warmup_fraction: float = 0.1, stall_share: float = 0.0, seed: int = 0
             ) -> SimResult:
    """Run the dynamic batcher over `arrivals_us`; latencies of the requests after warm-up.

    stall_share: the share of hand-overs with requests queued after which the batcher waits
    for the next arrival (`QUEUE_POLICY_STALL_SHARE` with a queue policy; drawn with `seed`).
    """
    max_bs = max(candidate.max_batch_size, 1)
    target = max(candidate.preferred_batch_sizes) if candidate.preferred_batch_sizes else max_bs
    target = min(target, max_bs)
    delay = float(candidate.max_queue_delay_us) if candidate.max_batch_size > 0 else 0.0
    free: list[float] = [0.0] * candidate.instance_count  # heap of times instances free up
    busy_until: list[float] = []  # when the executions in progress end their compute
    queue = BatcherQueue(arrivals_us)
    cores = execution_cores(profile, arrivals_us)
    latencies: list[float] = []
    waits: list[float] = []
    batches: list[int] = []
    skip = int(len(arrivals_us) * warmup_fraction)
    stalls = random.Random(seed)
    done = 0
    while queue.pending():
        stalled = stall_share > 0 and stalls.random() < stall_share
        t, size = queue.dispatch(free[0], target, max_bs, delay, stalled)
        heapq.heappop(free)
        # Instances executing at time t share the device (parallel efficiency) and the cores
        # left to executions: slow this one down accordingly.
        busy_until = [e for e in busy_until if e > t]
        k = len(busy_until) + 1
        slowdown = max(1.0, k / min(profile.speedup(k), cores))
        computed = t + profile.service_us(size) * profile.contention * slowdown
        busy_until.append(computed)
        # The instance is free again (and the responses out) after the execution gap.
        end = computed + profile.execution_gap_us
        heapq.heappush(free, end)
        batches.append(size)
        for _ in range(size):
            arrival = queue.waiting.popleft()
            if done >= skip:
                latencies.append(end - arrival + profile.overhead_us)
                waits.append(t - arrival)
            done += 1
    return SimResult(latencies, batches, waits)


def predict_p99_us(candidate: Candidate, profile: ServiceProfile, rate_per_s: float,
                   *, n_requests: int = 3000, seed: int = 0) -> float:
    """Predicted p99 latency (µs) at a Poisson arrival rate; inf when over capacity."""
    if rate_per_s <= 0:
        return 0.0
    if rate_per_s >= profile.capacity(candidate):
        return math.inf
    arrivals = poisson_arrivals_us(rate_per_s, n_requests, seed)
    return simulate(candidate, profile, arrivals).p99_us()


def predict_wait_share(candidate: Candidate, profile: ServiceProfile, rate_per_s: float,
                       wait_us: float, *, n_requests: int = 10_000, seed: int = 0,
                       stall_share: float = QUEUE_POLICY_STALL_SHARE) -> float:
    """Predicted share of requests that wait in the queue longer than `wait_us` before their
    batch is dispatched, at a Poisson arrival rate: what a queue timeout of `wait_us` would
    reject there (1.0 when over capacity). The timeout is a queue policy: by default the
    batcher stalls as Triton's does with one (`QUEUE_POLICY_STALL_SHARE`)."""
    if rate_per_s <= 0:
        return 0.0
    if rate_per_s >= profile.capacity(candidate):
        return 1.0
    waits = simulate(candidate, profile, poisson_arrivals_us(rate_per_s, n_requests, seed),
                     stall_share=stall_share, seed=seed).waits_us
    return sum(1 for w in waits if w > wait_us) / len(waits) if waits else 0.0


def full_batch_us(candidate: Candidate, profile: ServiceProfile) -> float:
    """How long an instance is busy with a full batch under load (compute and hand-over)."""
    size = max(candidate.max_batch_size, 1)
    return profile.service_us(size) * profile.contention + profile.execution_gap_us


def predict_goodput(candidate: Candidate, profile: ServiceProfile, slo_us: float,
                    *, rel_tol: float = 0.02, n_requests: int = 3000, seed: int = 0) -> float:
    """Highest Poisson arrival rate (req/s) whose predicted p99 stays under `slo_us`."""
    hi = profile.capacity(candidate) * 0.999
    if predict_p99_us(candidate, profile, hi * 0.01, n_requests=n_requests, seed=seed) > slo_us:
        return 0.0
    lo = hi * 0.01
    if predict_p99_us(candidate, profile, hi, n_requests=n_requests, seed=seed) <= slo_us:
        return hi
    while (hi - lo) > rel_tol * hi:
        mid = math.sqrt(lo * hi) if hi / lo > 4 else (lo + hi) / 2
        if predict_p99_us(candidate, profile, mid, n_requests=n_requests, seed=seed) <= slo_us:
            lo = mid
        else:
            hi = mid
    return lo



def predict_goodput_range(candidate: Candidate, profile: ServiceProfile, slo_us: float, *,
                          seeds: tuple[int, ...] = (0, 1, 2), rel_tol: float = 0.02,
                          n_requests: int = 3000) -> tuple[float, float]:
    """The goodputs the model cannot tell apart from its prediction: the lowest and highest
    prediction over arrival sequences of different seeds, the highest widened by the
    bisection's tolerance (the true crossing lies at most that far above a passing rate)."""
    values = [predict_goodput(candidate, profile, slo_us, rel_tol=rel_tol,
                              n_requests=n_requests, seed=s) for s in seeds]
    return min(values), max(values) / (1 - rel_tol)
