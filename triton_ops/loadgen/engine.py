"""The persistent load generator: worker processes kept alive across measurements.

`LoadGenerator` spawns its workers once (each an asyncio gRPC client, see worker.py) and then
runs measurements on demand: open-loop Poisson arrivals at a rate, or closed-loop
concurrency, split evenly over the workers (the superposition of Poisson streams is
Poisson). A measurement is a warm-up followed by windows; after each window the caller's
`decide` sees all windows so far and says whether to stop (e.g. once the p99 is decided).
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from triton_ops.envelope.model import TensorSpec
from triton_ops.tensors import make_input_sets

if TYPE_CHECKING:
    import numpy as np


class LoadGenError(RuntimeError):
    """The load generator could not start or lost a worker."""


@dataclass
class Window:
    """The requests SCHEDULED in one window, from all workers (times: time.monotonic s)."""

    index: int
    start: float
    end: float
    sched: np.ndarray
    sent: np.ndarray
    done: np.ndarray
    ok: np.ndarray
    # Per request, a loadgen.outcome.Outcome value (None from a source that does not tell
    # rejections from other errors: then every failure counts as an error).
    outcome: np.ndarray | None = None

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def latency_us(self) -> np.ndarray:
        """From the scheduled send time: what a user arriving then would see.

        A send that went out up to half a millisecond early (timer granularity) is timed from
        when it actually went out.
        """
        import numpy as np

        return (self.done - np.minimum(self.sched, self.sent))[self.ok] * 1e6

    def service_latency_us(self) -> np.ndarray:
        """From the actual send time: the server and network part alone."""
        return (self.done - self.sent)[self.ok] * 1e6

    def lateness_us(self) -> np.ndarray:
        return (self.sent - self.sched) * 1e6

    @property
    def requests(self) -> int:
        return int(len(self.sched))

    @property
    def errors(self) -> int:
        return int((~self.ok).sum())

    def throughput(self) -> float:
        return float(self.ok.sum()) / self.seconds if self.seconds > 0 else 0.0

    def outcomes(self) -> np.ndarray:
        """Each request's Outcome value (see loadgen.outcome)."""
        import numpy as np

        from triton_ops.loadgen.outcome import Outcome

        if self.outcome is not None:
            return self.outcome
        return np.where(self.ok, int(Outcome.OK), int(Outcome.ERROR)).astype(np.uint8)

    def rejected_mask(self) -> np.ndarray:
        """Requests Triton's queue policy rejected (queue full or queue timeout)."""
        import numpy as np

        from triton_ops.loadgen.outcome import REJECTED

        return np.isin(self.outcomes(), REJECTED)

    @property
    def rejected(self) -> int:
        return int(self.rejected_mask().sum())

    def count(self, outcome: int) -> int:
        return int((self.outcomes() == int(outcome)).sum())

    def rejection_latency_us(self) -> np.ndarray:
        """How long a rejected request took to be told so, from its scheduled send time."""
        import numpy as np

        return (self.done - np.minimum(self.sched, self.sent))[self.rejected_mask()] * 1e6


@dataclass
class Measurement:
    mode: str
    level: float  # rate (req/s) or concurrency
    windows: list[Window]
    warmup_s: float
    seconds: float


def _merge(index: int, parts: Sequence[dict[str, Any]]) -> Window:
    import numpy as np

    outcomes = [p.get("outcome") for p in parts]
    return Window(
        index=index,
        start=min(p["start"] for p in parts),
        end=max(p["end"] for p in parts),
        sched=np.concatenate([p["sched"] for p in parts]),
        sent=np.concatenate([p["sent"] for p in parts]),
        done=np.concatenate([p["done"] for p in parts]),
        ok=np.concatenate([p["ok"] for p in parts]).astype(bool),
        outcome=(np.concatenate(outcomes).astype(np.uint8)
                 if all(o is not None for o in outcomes) else None),
    )


class LoadGenerator:
    """Worker processes driving one model on one Triton over gRPC.

    inputs: the model's input specs (from the envelope); each request carries one item
    (batch dim 1) when `batching`, else the bare shape.
    """

    def __init__(self, url: str, model: str, inputs: Sequence[TensorSpec], *,
                 outputs: Sequence[str] = (), batching: bool = True, workers: int = 1,
                 timeout_s: float = 10.0, seed: int = 0, start_timeout_s: float = 60.0) -> None:
        self.url = url
        self.model = model
        self.specs = list(inputs)
        self.outputs = list(outputs)
        self.batching = batching
        self.workers = max(1, int(workers))
        self.timeout_s = timeout_s
        self.seed = seed
        self.start_timeout_s = start_timeout_s
        self._procs: list[Any] = []
        self._conns: list[Any] = []
        self._runs = 0

    def __enter__(self) -> LoadGenerator:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def start(self) -> None:
        from triton_ops.loadgen.worker import worker_main

        if self._procs:
            return
        ctx = mp.get_context("spawn")  # no fork: the parent may hold gRPC threads
        types = {s.name: s.data_type for s in self.specs}
        for i in range(self.workers):
            inputs = make_input_sets(self.specs, batch=1 if self.batching else None,
                                     seed=self.seed + i)
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, name=f"triton-ops-loadgen-{i}",
                               args=(child, self.url, self.model, inputs, types, self.outputs),
                               daemon=True)
            proc.start()
            child.close()
            self._procs.append(proc)
            self._conns.append(parent)
        for conn in self._conns:
            msg = self._recv(conn, self.start_timeout_s)
            if msg[0] != "ready":
                self.close()
                raise LoadGenError(f"load generator worker failed to start: {msg}")

    def _recv(self, conn: Any, timeout: float) -> tuple[Any, ...]:
        if not conn.poll(timeout):
            raise LoadGenError(f"load generator worker silent for {timeout:.0f} s")
        try:
            msg = conn.recv()
        except EOFError:
            raise LoadGenError("a load generator worker exited unexpectedly") from None
        if msg[0] == "error":
            raise LoadGenError(f"load generator worker failed: {msg[1]}")
        return msg

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.send(("stop",))
                conn.send(("exit",))
            except OSError:
                pass
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=2)
        for conn in self._conns:
            conn.close()
        self._procs, self._conns = [], []

    def measure(self, *, mode: str = "open", rate: float = 0.0, concurrency: int = 0,
                warmup_s: float = 1.0, window_s: float = 1.0, max_windows: int = 5,
                decide: Callable[[list[Window]], bool] = lambda ws: False,
                at_boundary: Callable[[int], None] = lambda k: None,
                max_inflight: int = 2048, seed: int | None = None) -> Measurement:
        """Run one measurement; stops after max_windows or when `decide(windows)` is True.

        `seed`: runs with the same seed, rate and worker count send the same arrival schedule
        (None: a schedule of its own for every run).

        at_boundary(-1) is called when the warm-up ends and at_boundary(k) when window k's
        samples have arrived (for per-window server statistics).
        """
        if mode not in ("open", "closed"):
            raise ValueError("mode is 'open' (rate) or 'closed' (concurrency)")
        if mode == "open" and rate <= 0:
            raise ValueError("open-loop mode needs a rate > 0")
        if mode == "closed" and concurrency < 1:
            raise ValueError("closed-loop mode needs a concurrency >= 1")
        if not self._procs:
            self.start()
        self._runs += 1
        t0 = time.monotonic()
        start_at = t0 + 0.05
        n = self.workers
        for i, conn in enumerate(self._conns):
            per_conc = concurrency // n + (1 if i < concurrency % n else 0)
            conn.send(("run", {
                "mode": mode, "rate": rate / n, "concurrency": max(per_conc, 0),
                "start_at": start_at, "warmup_s": warmup_s, "window_s": window_s,
                "max_windows": max_windows, "timeout_s": self.timeout_s,
                "seed": (self.seed * 7919 + (self._runs if seed is None else seed) * 101 + i),
                "max_inflight": max_inflight,
            }))
        boundary = start_at + warmup_s
        time.sleep(max(0.0, boundary - time.monotonic()))
        at_boundary(-1)
        windows: list[Window] = []
        stopped = [False] * n
        limit = window_s + self.timeout_s + 5.0
        try:
            for k in range(max_windows):
                parts = []
                for i, conn in enumerate(self._conns):
                    while not stopped[i]:
                        msg = self._recv(conn, limit)
                        if msg[0] == "window" and msg[1] == k:
                            parts.append(msg[2])
                            break
                        if msg[0] == "stopped":
                            stopped[i] = True
                            break
                if not parts:
                    break
                windows.append(_merge(k, parts))
                at_boundary(k)
                if decide(windows):
                    break
        finally:
            for i, conn in enumerate(self._conns):
                if not stopped[i]:
                    conn.send(("stop",))
            for i, conn in enumerate(self._conns):
                while not stopped[i]:
                    msg = self._recv(conn, self.timeout_s + 10.0)
                    if msg[0] == "stopped":
                        stopped[i] = True
        return Measurement(mode, rate if mode == "open" else concurrency, windows, warmup_s,
                           time.monotonic() - t0)

