"""`tune` end to end: server, load generator, profile, baseline, search, re-measure, restore.

Everything measured is appended to <out>/measurements.csv as it happens; the profile, the
baseline and each finished candidate go to <out>/state.json so that `--resume <out>`
continues an interrupted run without measuring them again. The model's original config is
put back in a `finally` block, so Ctrl-C and errors leave the server as it was found. A run
that fails before anything was measured leaves no results folder behind.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from triton_ops.envelope.model import Envelope, InstanceKind
from triton_ops.fileio import atomic_write_text
from triton_ops.tune.batcher import Candidate
from triton_ops.tune.budget import Budget, FinalTiming
from triton_ops.tune.events import (
    CandidateInfeasible,
    CandidateMeasured,
    CandidateSkipped,
    EventSink,
    PhaseStarted,
    TuneEvent,
    ignore,
)
from triton_ops.tune.overload.config import ProtectedConfig, protected_config
from triton_ops.tune.overload.stage import OVERLOAD_SHARE, OverloadStage, overload_share_s
from triton_ops.tune.prober import ProbeSettings, WindowRow
from triton_ops.tune.ranking import candidate_space, prune_by_memory
from triton_ops.tune.results import (
    CandidateResult,
    SearchOutcome,
    result_from_dict,
    result_to_dict,
)
from triton_ops.tune.search import Search, SearchSettings

# Kept back at the end of the budget for writing best.json and report.html, stopping the
# embedded server and exiting.
REPORT_RESERVE_S = 5.0


class TuneError(RuntimeError):
    """A condition `tune` cannot work around; the message says what to do."""


@dataclass
class TuneOptions:
    model: str
    envelope: Envelope
    repository: Path
    url: str | None = None
    http_url: str | None = None
    metrics_url: str | None = None
    slo_us: float | None = None
    budget_s: float = 600.0
    out_dir: Path | None = None
    resume: bool = False
    allow_reload: bool = False
    workers: int = 1
    max_workers: int | None = None  # None: up to half the CPU cores when the generator lags
    max_batch_sizes: list[int] | None = None
    delays_us: list[int] | None = None
    instance_counts: list[int] | None = None
    preferred: bool = False
    max_measured: int = 12
    seed: int = 0
    settings: ProbeSettings | None = None
    search: SearchSettings | None = None
    # The overload stage (queue policy past the knee) after the batching choice.
    overload: bool = True
    # When the budget started (time.monotonic()); None: when tune() is called. The CLI passes
    # its process's start, so that the whole command ends within the budget.
    started: float | None = None


@dataclass
class TuneResult:
    best: dict[str, Any]
    out_dir: Path
    outcome: SearchOutcome | None = None
    notes: list[str] = field(default_factory=list)


def default_out_dir(model: str, now: datetime | None = None) -> Path:
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    return Path("tune-results") / model / stamp


def default_space(envelope: Envelope, slo_us: float) -> tuple[list[int], list[int], list[int]]:
    """Batch sizes: powers of two up to twice the envelope's (at most 256); delays well under
    the SLO; 1-2 instances (CPU) or 1-3 (GPU)."""
    top = max(envelope.max_batch_size, 1)
    if envelope.max_batch_size == 0:
        sizes = [0]
    else:
        limit = min(max(top * 2, 8), 256)
        sizes = [2**k for k in range(0, int(math.log2(limit)) + 1)]
    delays = [d for d in (0, 100, 500, 1000, 2000, 5000, 10000) if d <= slo_us / 4] or [0]
    kinds = {g.kind for g in envelope.instances}
    counts = [1, 2] if (not kinds or kinds <= {InstanceKind.CPU}) else [1, 2, 3]
    return sizes, delays, counts


def space_problem(envelope: Envelope, sizes: list[int] | None, delays: list[int] | None,
                  counts: list[int] | None) -> str | None:
    """What is wrong with a search space given by the user, or None."""
    batches = envelope.max_batch_size > 0
    for size in sizes or []:
        if batches and size < 1:
            return (f"--max-batch-sizes: {size} is not a batch size; {envelope.name} batches, "
                    "so give sizes of 1 or more, e.g. 1,4,16,64")
        if not batches and size != 0:
            return (f"--max-batch-sizes: {envelope.name} does not batch (max_batch_size 0 in "
                    "its envelope), so its requests carry no batch dimension; leave the "
                    "option out")
    if any(d < 0 for d in delays or []):
        return "--delays: a queue delay cannot be negative, e.g. 0,500us,2ms"
    for count in counts or []:
        if count < 1:
            return f"--instances: {count} is not an instance count; give 1 or more, e.g. 1,2"
    return None


class RunState:
    """state.json in the output folder: what a resumed run must not redo (atomic writes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {}
        if path.exists():
            try:
                self.data = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise TuneError(f"{path}: cannot read the saved state ({exc}); start a new "
                                "run without --resume") from None

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.data, indent=2, default=str))


class MeasurementLog:
    """measurements.csv, appended one row at a time (a crash loses at most the current row)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.columns: list[str] | None = None
        if path.exists() and path.stat().st_size > 0:
            import csv

            with path.open(newline="") as f:
                self.columns = next(csv.reader(f), None)

    def append(self, row: dict[str, object]) -> None:
        import csv

        if self.columns is None:
            self.columns = list(row)
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(self.columns)
        extra = [k for k in row if k not in self.columns]
        if extra:
            # A new column (e.g. GPU metrics appearing): rewrite the file with it, atomically.
            import pandas as pd

            table = pd.read_csv(self.path)
            self.columns += extra
            table = table.reindex(columns=self.columns)
            tmp = self.path.with_suffix(".tmp")
            table.to_csv(tmp, index=False)
            tmp.replace(self.path)
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([row.get(c, "") for c in self.columns])


class Recorder:
    """Where a run's measurements go as they happen: window rows to measurements.csv (with the
    CPU steal of each window kept for the run's note), finished candidates to state.json."""

    def __init__(self, out_dir: Path, state: RunState, forward: EventSink) -> None:
        self.log = MeasurementLog(out_dir / "measurements.csv")
        self.state = state
        self.forward = forward
        self.window_steals: list[float] = []

    def row(self, probe: int, row: WindowRow) -> None:
        if row.cpu_steal is not None:
            self.window_steals.append(row.cpu_steal)
        self.log.append({"probe": probe, **row.to_csv()})

    def event(self, event: TuneEvent) -> None:
        match event:
            case CandidateMeasured(result=result, baseline=False) | CandidateInfeasible(
                    result=result):
                self.state.data.setdefault("candidates", []).append(result_to_dict(result))
                self.state.save()
        self.forward(event)


def same_machine(grpc_url: str, embedded: bool) -> bool:
    """Whether the server shares this machine's CPU cores with the load generator."""
    host = grpc_url.rsplit(":", 1)[0].strip("[]")
    return embedded or host in ("127.0.0.1", "localhost", "::1")


@contextmanager
def results_folder(out_dir: Path) -> Iterator[Path]:
    """Create `out_dir` for a run; when the run fails before anything was measured, remove
    what was created for it (its files, the folder and parents it needed), nothing else."""
    created = [p for p in [out_dir, *out_dir.parents] if not p.exists()]
    files = [out_dir / name for name in ("state.json", "measurements.csv")]
    new_files = [f for f in files if not f.exists()]
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        yield out_dir
    except BaseException:
        if not _holds_measurements(out_dir):
            for f in new_files:
                f.unlink(missing_ok=True)
            for folder in created:
                try:
                    folder.rmdir()  # only while empty: another run may have written there
                except OSError:
                    break
        raise


def _holds_measurements(out_dir: Path) -> bool:
    """Whether a run left something worth resuming (its profile is saved)."""
    try:
        return "profile" in json.loads((out_dir / "state.json").read_text())
    except (OSError, ValueError):
        return False


def check_options(options: TuneOptions) -> float:
    """Refuse what cannot run, before anything starts; the SLO (µs)."""
    envelope = options.envelope
    slo_us = options.slo_us or (envelope.slo.p99_latency if envelope.slo else None)
    if not slo_us:
        raise TuneError(f"no latency SLO for {options.model}: give --slo-p99 (e.g. 50ms) or set "
                        "slo.p99_latency in the envelope")
    if not envelope.inputs:
        raise TuneError(f"the envelope of {options.model} lists no inputs: tune builds requests "
                        "from inputs[].name/data_type/dims; add them")
    if options.url and not options.allow_reload:
        raise TuneError(
            f"{options.url} is a remote server: tune reloads {options.model} with each candidate "
            "config, which affects its live traffic. Pass --allow-reload to accept that, or "
            "run without --url to tune on an embedded server")
    problem = space_problem(envelope, options.max_batch_sizes, options.delays_us,
                            options.instance_counts)
    if problem:
        raise TuneError(problem)
    return float(slo_us)


def open_state(out_dir: Path, options: TuneOptions) -> RunState:
    """The run's state.json, checked against --resume and the model."""
    state = RunState(out_dir / "state.json")
    if options.resume and not state.data:
        raise TuneError(f"{out_dir} holds no state.json: nothing to resume; run without --resume")
    if not options.resume and state.data:
        # Never mix a new run into an earlier one's results (or silently reuse its profile).
        raise TuneError(f"{out_dir} already holds a tune run (state.json): pass --resume "
                        f"{out_dir} to continue it, or choose another --out")
    if state.data and state.data.get("model") not in (None, options.model):
        raise TuneError(f"{out_dir} is a run of model {state.data.get('model')!r}, "
                        f"not {options.model!r}")
    return state


def search_space(options: TuneOptions, slo_us: float, on_event: EventSink
                 ) -> tuple[list[Candidate], list[CandidateResult]]:
    """The candidates to consider, and those skipped because their memory does not fit."""
    envelope = options.envelope
    sizes, delays, counts = default_space(envelope, slo_us)
    space = candidate_space(options.max_batch_sizes or sizes, options.delays_us or delays,
                            options.instance_counts or counts, preferred=options.preferred)
    per_instance = available = None
    gm = envelope.resources.gpu_memory
    if any(g.kind is InstanceKind.GPU for g in envelope.instances) and gm is not None:
        per_instance = gm.per_instance
        total = envelope.hardware.smallest_gpu_memory()
        available = int(total * (1 - gm.headroom)) if total else None
    space, skipped = prune_by_memory(space, per_instance_bytes=per_instance,
                                     available_bytes=available)
    for s in skipped:
        on_event(CandidateSkipped(s.candidate, s.reason))
    if not space:
        raise TuneError("no candidate config fits the memory envelope; lower the batch sizes "
                        "or instance counts, or check resources.gpu_memory")
    return space, skipped


def tune(options: TuneOptions, on_event: EventSink = ignore) -> TuneResult:
    """Run the whole tuning loop; see the module docstring."""
    slo_us = check_options(options)
    out_dir = options.out_dir or default_out_dir(options.model)
    settings = options.settings or ProbeSettings(late_threshold_us=max(2000.0, 0.05 * slo_us))
    with results_folder(out_dir):
        state = open_state(out_dir, options)
        # The search keeps the overload stage's share back, with the report's.
        overload_s = overload_share_s(options.budget_s) if options.overload else 0.0
        budget = Budget.starting_now(
            options.budget_s, reserve_s=REPORT_RESERVE_S + overload_s,
            probe_s=settings.probe_s(),
            started=options.started,
            first=FinalTiming(load_s=float(state.data.get("load_s", 0.0)),
                              final_probe_s=settings.final_probe_s(),
                              baseline_restores=bool(state.data.get("baseline_restores"))))
        space, skipped = search_space(options, slo_us, on_event)
        state.data.setdefault("model", options.model)
        state.data.setdefault("started", datetime.now(timezone.utc).isoformat())
        state.data["slo_p99_us"] = slo_us
        state.save()
        recorder = Recorder(out_dir, state, on_event)
        outcome, search, stage = _run_live(options, slo_us, settings, budget, space, state,
                                           recorder)
    from triton_ops.tune.prober import steal_note
    from triton_ops.tune.report import best_summary, write_report

    note = steal_note(recorder.window_steals, settings.max_steal_fraction)
    if note is not None:
        outcome.notes.append(note)
    best = best_summary(options.model, slo_us, outcome, search.base, search.service, skipped,
                        elapsed_s=budget.elapsed(), budget_s=options.budget_s)
    best["out_dir"] = str(out_dir)
    if stage is not None:
        best.update(stage.to_best())
    best["capacity"] = capacity_plan(options.envelope, best)
    write_report(out_dir, best, outcome, slo_us)
    state.data["finished"] = datetime.now(timezone.utc).isoformat()
    state.save()
    return TuneResult(best, out_dir, outcome)


def capacity_plan(envelope: Envelope, best: dict[str, Any]) -> dict[str, Any] | None:
    """Replicas for the envelope's slo.target_throughput from the measured goodput (None when
    the envelope names no target or nothing was confirmed)."""
    from triton_ops.tune.capacity import CapacityError, plan_capacity, tuned_from_best

    target = envelope.slo.target_throughput if envelope.slo else None
    if not target:
        return None
    try:
        tuned = tuned_from_best(best, best.get("out_dir", "."))
    except CapacityError:
        return None
    return plan_capacity(target, tuned).to_dict()


def _run_live(options: TuneOptions, slo_us: float, settings: ProbeSettings, budget: Budget,
              space: list[Candidate], state: RunState, recorder: Recorder
              ) -> tuple[SearchOutcome, Search, OverloadStage | None]:
    """Server, live target, the search's steps, then the overload stage on the chosen config;
    the original config restored at the end."""
    from triton_ops.server.endpoints import open_server

    recorder.forward(PhaseStarted("server"))
    with open_server(options.url, options.repository, [options.model],
                     http_url=options.http_url, metrics_url=options.metrics_url) as ep:
        with LiveParts(options, ep.grpc_url, ep.metrics_url, slo_us, settings, space,
                       local=same_machine(ep.grpc_url, ep.embedded), recorder=recorder) as live:
            done = [result_from_dict(d) for d in state.data.get("candidates", [])]
            search = Search(space, slo_us, live.target, budget,
                            settings=_search_settings(options), done=done,
                            baseline=result_from_dict(state.data["baseline"])
                            if "baseline" in state.data else None,
                            on_event=recorder.event)
            try:
                _profile_and_baseline(search, state, live)
                outcome = search.run()
                stage = None
                if options.overload:
                    stage = _overload_stage(options, slo_us, outcome, search, live, budget)
                return outcome, search, stage
            finally:
                recorder.forward(PhaseStarted("restore"))
                live.control.restore()


def _overload_stage(options: TuneOptions, slo_us: float, outcome: SearchOutcome,
                    search: Search, live: LiveParts, budget: Budget) -> OverloadStage:
    """The overload stage on the config the search chose, at its confirmed goodput, in the
    time kept back for it (before the restore and the report)."""
    from triton_ops.tune.report import best_summary

    chosen = best_summary(options.model, slo_us, outcome, search.base, search.service, [],
                          elapsed_s=0.0, budget_s=options.budget_s)
    seconds = budget.left() - REPORT_RESERVE_S - budget.load_estimate()
    measured = [(r.candidate, r.goodput) for r in outcome.results
                if r.status == "measured" and r.goodput > 0]

    def protect(candidate: Candidate, goodput: float) -> ProtectedConfig:
        return protected_config(candidate, goodput, measured, search.service, slo_us)

    return OverloadStage.run(
        live.grpc_url, options.envelope, chosen, slo_us, seconds=seconds,
        share=OVERLOAD_SHARE, load_s=budget.load_estimate(), control=live.control,
        workers=options.workers, on_event=live.recorder.event, protect=protect)


def _search_settings(options: TuneOptions) -> SearchSettings:
    return replace(options.search or SearchSettings(), max_measured=options.max_measured)


def _profile_and_baseline(search: Search, state: RunState, live: LiveParts) -> None:
    """Steps 1 and 2, each measured once and saved (a resumed run reuses them)."""
    from triton_ops.tune.batcher import ServiceProfile

    state.data["original_config"] = live.control.original
    if "profile" in state.data:
        search.service = ServiceProfile.from_dict(state.data["profile"])
    else:
        state.data["profile"] = search.profile().to_dict()
        state.save()
    if search.base is None:
        base = search.baseline(live.control.original_candidate)
        if base.status != "measured":
            raise TuneError(f"cannot reload the model's own config: {base.reason}")
        # Then re-measuring the baseline last leaves nothing to restore.
        search.budget.baseline_restores = live.control.runs_original()
        state.data["baseline_restores"] = search.budget.baseline_restores
        state.data["load_s"] = search.budget.load_estimate()
        state.data["baseline"] = result_to_dict(base)
        state.save()


class LiveParts:
    """The load generator, model control, prober and profiler of one run, closed together."""

    def __init__(self, options: TuneOptions, grpc_url: str, metrics_url: str | None,
                 slo_us: float, settings: ProbeSettings, space: list[Candidate], *,
                 local: bool, recorder: Recorder) -> None:
        self.options = options
        self.grpc_url = grpc_url
        self.metrics_url = metrics_url
        self.slo_us = slo_us
        self.settings = settings
        self.space = space
        self.local = local
        self.recorder = recorder

    def __enter__(self) -> LiveParts:
        from triton_ops.loadgen.engine import LoadGenerator
        from triton_ops.tune.control import ModelControl
        from triton_ops.tune.live import LiveTarget
        from triton_ops.tune.prober import Prober
        from triton_ops.tune.profiler import Profiler

        o, env = self.options, self.options.envelope
        self.loadgen = LoadGenerator(
            self.grpc_url, o.model, env.inputs, outputs=[x.name for x in env.outputs],
            batching=env.max_batch_size > 0, workers=o.workers,
            timeout_s=max(2.0, min(10.0, 20 * self.slo_us / 1e6)), seed=o.seed)
        self.loadgen.start()
        try:
            self.control = ModelControl(self.grpc_url, o.model)
        except BaseException:
            self.loadgen.close()
            raise
        prober = Prober(self.loadgen, self.control.counters, self.control.drain,
                        slo_us=self.slo_us,
                        max_error_rate=env.slo.max_error_rate if env.slo else 0.001,
                        settings=self.settings, metrics_url=self.metrics_url,
                        local_server=self.local,
                        max_workers=o.max_workers or max(1, (os.cpu_count() or 2) // 2),
                        on_event=self.recorder.event)
        self.target = LiveTarget(self.control, prober, Profiler(self.control, self.loadgen),
                                 self._plan(), record=self.recorder.row)
        return self

    def _plan(self) -> Any:
        from triton_ops.tune.profiler import ProfilePlan

        env, space = self.options.envelope, self.space
        batching = any(c.max_batch_size > 0 for c in space)
        return ProfilePlan(
            max_batch_size=max(c.max_batch_size for c in space) if batching else 0,
            instances=max(c.instance_count for c in space),
            shared_cores=(os.cpu_count() or 1) if self.local else 1,
            measure_cores=self.local,
            cpu_model=not (env.instances and all(g.kind == "GPU" for g in env.instances)))

    def __exit__(self, *exc: object) -> None:
        try:
            self.control.close()
        finally:
            self.loadgen.close()
