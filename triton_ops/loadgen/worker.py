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

_WAKE_EARLY_S = 0.0005


@dataclass
class _WindowBuf:
    pending: int = 0
    closed: bool = False  # no more requests will be scheduled in it
    sched: list[float] = field(default_factory=list)
    sent: list[float] = field(default_factory=list)
    done: list[float] = field(default_factory=list)
    ok: list[bool] = field(default_factory=list)
    outcome: list[int] = field(default_factory=list)  # loadgen.outcome.Outcome values


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
                    await self._run(cmd[1])
                    self.conn.send(("stopped",))
                # a "stop" with nothing running needs no answer beyond the one _run sends
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

    async def _run(self, spec: dict[str, Any]) -> None:
        import numpy as np
        from tritonclient.utils import InferenceServerException

        from triton_ops.loadgen.outcome import Outcome, classify_error

        start = float(spec["start_at"])
        warmup = float(spec["warmup_s"])
        window = float(spec["window_s"])
        max_windows = int(spec["max_windows"])
        timeout = float(spec["timeout_s"])
        end = start + warmup + window * max_windows
        rng = np.random.default_rng(int(spec["seed"]))
        windows: dict[int, _WindowBuf] = {}
        tasks: set[asyncio.Task[None]] = set()
        n_inputs = len(self.request_inputs)
        counter = 0
        next_to_send = 0  # next window index to report
        self.flush_event = asyncio.Event()

        def index_of(t: float) -> int:
            return -1 if t < start + warmup else int((t - start - warmup) // window)

        async def one(sched: float) -> None:
            nonlocal counter
            k = index_of(sched)
            buf = windows.setdefault(k, _WindowBuf())
            buf.pending += 1
            inputs = self.request_inputs[counter % n_inputs]
            counter += 1
            sent = time.monotonic()
            outcome = Outcome.OK
            try:
                await self.client.infer(self.model, inputs, outputs=self.request_outputs,
                                        client_timeout=timeout)
            except InferenceServerException as exc:
                outcome = classify_error(exc.status(), exc.message())
            except Exception:  # noqa: BLE001 - every failure is an error sample
                outcome = Outcome.ERROR
            done = time.monotonic()
            buf.sched.append(sched)
            buf.sent.append(sent)
            buf.done.append(done)
            buf.ok.append(outcome is Outcome.OK)
            buf.outcome.append(int(outcome))
            buf.pending -= 1
            self.flush_event.set()

        def spawn(sched: float) -> None:
            task = asyncio.ensure_future(one(sched))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        def flush(final: bool = False) -> None:
            nonlocal next_to_send
            now = time.monotonic()
            while next_to_send < max_windows:
                k = next_to_send
                w_end = start + warmup + (k + 1) * window
                buf = windows.get(k, _WindowBuf())
                if not final and (now < w_end or buf.pending > 0):
                    return
                self.conn.send(("window", k, {
                    "sched": np.asarray(buf.sched), "sent": np.asarray(buf.sent),
                    "done": np.asarray(buf.done), "ok": np.asarray(buf.ok, dtype=bool),
                    "outcome": np.asarray(buf.outcome, dtype=np.uint8),
                    "start": w_end - window, "end": w_end,
                }))
                windows.pop(k, None)
                next_to_send += 1

        async def flusher() -> None:
            while next_to_send < max_windows and not self.stop_flag:
                try:
                    await asyncio.wait_for(self.flush_event.wait(), timeout=0.05)
                except asyncio.TimeoutError:
                    pass
                self.flush_event.clear()
                flush()

        flush_task = asyncio.ensure_future(flusher())
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        if spec["mode"] == "open":
            rate = float(spec["rate"])
            max_inflight = int(spec["max_inflight"])
            t = start
            while not self.stop_flag:
                t += float(rng.exponential(1.0 / rate))
                if t >= end:
                    break
                delay = t - time.monotonic()
                if delay > _WAKE_EARLY_S:
                    # epoll rounds timeouts UP to whole milliseconds: aim half a millisecond
                    # early so sends land within about +-0.5 ms of their schedule.
                    await asyncio.sleep(delay - _WAKE_EARLY_S)
                else:
                    # Behind schedule: still yield, so responses are processed between sends.
                    await asyncio.sleep(0)
                while len(tasks) >= max_inflight and not self.stop_flag:
                    # Server far behind: holding back shows up as late sends.
                    await asyncio.sleep(0.001)
                spawn(t)
        else:
            concurrency = int(spec["concurrency"])

            async def closed_loop() -> None:
                while not self.stop_flag:
                    now = time.monotonic()
                    if now >= end:
                        return
                    await one(now)

            await asyncio.gather(*(closed_loop() for _ in range(concurrency)))
        # Let in-flight requests finish (bounded by the request timeout), then report.
        deadline = time.monotonic() + timeout + 1.0
        while tasks and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            if not self.stop_flag:
                flush()
        for task in list(tasks):
            task.cancel()
        flush_task.cancel()
        if not self.stop_flag:
            flush(final=True)


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
