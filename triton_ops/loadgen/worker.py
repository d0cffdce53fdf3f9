"""One load-generator worker process: an asyncio gRPC client driven over a pipe.

Commands (tuples) from the parent:
  ("run", RunSpec as dict) -- generate load; per window, send ("window", index, samples) as
                              soon as every request scheduled in that window has finished;
  ("stop",)                -- stop generating, wait for in-flight requests, reply ("stopped",);
  ("exit",)                -- close the client and end the process.
Latency in open-loop mode runs from the SCHEDULED send time, so a late send is charged to the
measurement instead of silently lowering the offered load (no coordinated omission); each
sample also records how late it was sent, so that the parent can tell when this process
could not keep up with the requested rate.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from triton_ops.loadgen.outcome import Outcome, outcome_of

_WAKE_EARLY_S = 0.0005
# The longest the arrivals go on after the last window while its requests are in flight.
TAIL_MAX_S = 1.0


@dataclass
class _WindowBuf:
    pending: int = 0
    closed: bool = False  # no more requests will be scheduled in it
    sched: list[float] = field(default_factory=list)
    sent: list[float] = field(default_factory=list)
    done: list[float] = field(default_factory=list)
    ok: list[bool] = field(default_factory=list)
    outcome: list[int] = field(default_factory=list)  # loadgen.outcome.Outcome values

    def record(self, sched: float, sent: float, done: float, outcome: Outcome) -> None:
        self.sched.append(sched)
        self.sent.append(sent)
        self.done.append(done)
        self.ok.append(outcome is Outcome.OK)
        self.outcome.append(int(outcome))

    def samples(self, start: float, end: float) -> dict[str, Any]:
        """The window's samples as the parent merges them (engine._merge)."""
        import numpy as np

        return {
            "sched": np.asarray(self.sched), "sent": np.asarray(self.sent),
            "done": np.asarray(self.done), "ok": np.asarray(self.ok, dtype=bool),
            "outcome": np.asarray(self.outcome, dtype=np.uint8),
            "start": start, "end": end,
        }


@dataclass(frozen=True)
class RunSchedule:
    """When a run's warm-up and windows begin and end (time.monotonic seconds)."""

    start: float
    warmup: float
    window: float
    max_windows: int

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> RunSchedule:
        return cls(float(spec["start_at"]), float(spec["warmup_s"]), float(spec["window_s"]),
                   int(spec["max_windows"]))

    @property
    def end(self) -> float:
        """When the last window ends: no request is scheduled from then on."""
        return self.start + self.warmup + self.window * self.max_windows

    def index_of(self, t: float) -> int:
        """The window a request scheduled at `t` belongs to; -1 during the warm-up and after
        the last window."""
        if t < self.start + self.warmup or t >= self.end:
            return -1
        return int((t - self.start - self.warmup) // self.window)

    def tail_end(self, timeout_s: float) -> float:
        """The latest time an arrival may be scheduled after the last window (see
        _Run._open_loop)."""
        return self.end + min(timeout_s, TAIL_MAX_S)

    def window_end(self, k: int) -> float:
        return self.start + self.warmup + (k + 1) * self.window


class _Worker:
    def __init__(self, conn: Connection, url: str, model: str, inputs: list[dict[str, Any]],
                 types: dict[str, str], outputs: list[str]) -> None:
        self.conn = conn
        self.url = url
        self.model = model
        self.raw_inputs = inputs
        self.types = types
        self.output_names = outputs
        self.stop_flag = False
        self.exit_flag = False
        self.commands: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    def _build(self) -> None:
        from tritonclient.grpc import InferRequestedOutput

        from triton_ops.tensors import infer_inputs

        self.request_inputs = [infer_inputs(tensors, self.types) for tensors in self.raw_inputs]
        self.request_outputs = [InferRequestedOutput(n) for n in self.output_names] or None

    async def main(self) -> None:
        from tritonclient.grpc.aio import InferenceServerClient

        self._build()
        loop = asyncio.get_running_loop()
        loop.add_reader(self.conn.fileno(), self._on_command)
        self.client = InferenceServerClient(self.url)
        self.conn.send(("ready",))
        try:
            while not self.exit_flag:
                cmd = await self.commands.get()
                if cmd[0] == "exit":
                    break
                if cmd[0] == "run":
                    self.stop_flag = False
                    await _Run(self, cmd[1]).execute()
                    self.conn.send(("stopped",))
                # a "stop" with nothing running needs no answer beyond the one sent after each run
        finally:
            loop.remove_reader(self.conn.fileno())
            await self.client.close()

    def _on_command(self) -> None:
        while self.conn.poll():
            try:
                cmd = self.conn.recv()
            except EOFError:
                self.exit_flag = True
                self.stop_flag = True
                self.commands.put_nowait(("exit",))
                return
            if cmd[0] == "stop":
                self.stop_flag = True
            elif cmd[0] == "exit":
                self.stop_flag = True
                self.exit_flag = True
                self.commands.put_nowait(cmd)
            else:
                self.commands.put_nowait(cmd)


class _Run:
    """One "run" command: schedule requests, record each in the window it was scheduled in,
    and send each window to the parent once every request scheduled in it has finished.

    The worker's stop_flag (set by a "stop" from the parent) ends it early; the windows not
    yet sent are then dropped.
    """

    def __init__(self, worker: _Worker, spec: dict[str, Any]) -> None:
        import numpy as np

        self.worker = worker
        self.spec = spec
        self.schedule = RunSchedule.from_spec(spec)
        self.timeout = float(spec["timeout_s"])
        self.rng = np.random.default_rng(int(spec["seed"]))
        self.windows: dict[int, _WindowBuf] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.requests_sent = 0  # picks the next input set, round robin
        self.next_to_send = 0  # next window index to report
        self.request_done = asyncio.Event()

    @property
    def stopping(self) -> bool:
        return self.worker.stop_flag

    async def execute(self) -> None:
        flush_task = asyncio.ensure_future(self._flush_while_running())
        await asyncio.sleep(max(0.0, self.schedule.start - time.monotonic()))
        if self.spec["mode"] == "open":
            await self._open_loop(float(self.spec["rate"]), int(self.spec["max_inflight"]))
        else:
            await asyncio.gather(*(self._closed_loop()
                                   for _ in range(int(self.spec["concurrency"]))))
        await self._finish_in_flight()
        flush_task.cancel()
        if not self.stopping:
            self._flush(final=True)

    async def _open_loop(self, rate: float, max_inflight: int) -> None:
        """Poisson arrivals at `rate`, each request a task of its own.

        The arrivals go on after the last window while its requests are in flight (up to
        TAIL_MAX_S; those requests belong to no window): the last window's requests then
        wait as the others did. A stream that stops leaves them alone in the server, where
        Triton's dynamic batcher can hold them until its idle wake-up (half a second).
        """
        t = self.schedule.start
        tail_end = self.schedule.tail_end(self.timeout)
        while not self.stopping:
            t += float(self.rng.exponential(1.0 / rate))
            if t >= self.schedule.end and (t >= tail_end or not self._windows_in_flight()):
                break
            delay = t - time.monotonic()
            if delay > _WAKE_EARLY_S:
                # epoll rounds timeouts UP to whole milliseconds: aim half a millisecond
                # early so sends land within about +-0.5 ms of their schedule.
                await asyncio.sleep(delay - _WAKE_EARLY_S)
            else:
                # Behind schedule: still yield, so responses are processed between sends.
                await asyncio.sleep(0)
            while len(self.tasks) >= max_inflight and not self.stopping:
                # Server far behind: holding back shows up as late sends.
                await asyncio.sleep(0.001)
            self._spawn(t)

    async def _closed_loop(self) -> None:
        """One client: the next request as soon as the previous one is answered."""
        while not self.stopping:
            now = time.monotonic()
            if now >= self.schedule.end:
                return
            await self._request(now)

    def _windows_in_flight(self) -> bool:
        """A request scheduled in one of the windows is still waiting for its answer."""
        return any(buf.pending for k, buf in self.windows.items() if k >= 0)

    def _spawn(self, sched: float) -> None:
        task = asyncio.ensure_future(self._request(sched))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _request(self, sched: float) -> None:
        worker = self.worker
        buf = self.windows.setdefault(self.schedule.index_of(sched), _WindowBuf())
        buf.pending += 1
        inputs = worker.request_inputs[self.requests_sent % len(worker.request_inputs)]
        self.requests_sent += 1
        sent = time.monotonic()
        outcome = Outcome.OK
        try:
            await worker.client.infer(worker.model, inputs, outputs=worker.request_outputs,
                                      client_timeout=self.timeout)
        except Exception as exc:  # noqa: BLE001 - every failure is an error sample
            outcome = outcome_of(exc)
        buf.record(sched, sent, time.monotonic(), outcome)
        buf.pending -= 1
        self.request_done.set()

    async def _flush_while_running(self) -> None:
        while self.next_to_send < self.schedule.max_windows and not self.stopping:
            try:
                await asyncio.wait_for(self.request_done.wait(), timeout=0.05)
            except asyncio.TimeoutError:
                pass
            self.request_done.clear()
            self._flush()

    async def _finish_in_flight(self) -> None:
        """Let in-flight requests finish (bounded by the request timeout), then cancel the
        rest."""
        deadline = time.monotonic() + self.timeout + 1.0
        while self.tasks and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            if not self.stopping:
                self._flush()
        for task in list(self.tasks):
            task.cancel()

    def _flush(self, final: bool = False) -> None:
        """Send the windows that are over and have no request in flight, in order (all of
        them when `final`)."""
        now = time.monotonic()
        while self.next_to_send < self.schedule.max_windows:
            k = self.next_to_send
            w_end = self.schedule.window_end(k)
            buf = self.windows.get(k, _WindowBuf())
            if not final and (now < w_end or buf.pending > 0):
                return
            self.worker.conn.send(("window", k, buf.samples(w_end - self.schedule.window,
                                                            w_end)))
            self.windows.pop(k, None)
            self.next_to_send += 1


def worker_main(conn: Connection, url: str, model: str, inputs: list[dict[str, Any]],
                types: dict[str, str], outputs: list[str]) -> None:
    """Entry point of a worker process (spawned)."""
    import os
    import signal

    # Ctrl-C in a terminal reaches the whole process group: the parent decides when workers
    # stop (and restores the server first), so workers ignore it instead of dying mid-run.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    try:
        # On a machine shared with the server, a late generator distorts what it measures:
        # ask for a slightly higher priority when allowed (ignored otherwise).
        os.nice(-5)
    except OSError:
        pass
    try:
        asyncio.run(_Worker(conn, url, model, inputs, types, outputs).main())
    except Exception as exc:  # noqa: BLE001 - the parent turns it into a clear message
        try:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
        except OSError:
            pass
