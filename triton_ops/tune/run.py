"""`tune` end to end: server, load generator, profile, baseline, search, re-measure, restore.

Everything measured is appended to <out>/measurements.csv as it happens; the profile, the
baseline and each finished candidate go to <out>/state.json so that `--resume <out>`
continues an interrupted run without measuring them again. The model's original config is
put back in a `finally` block, so Ctrl-C and errors leave the server as it was found.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from triton_ops.envelope.model import Envelope, InstanceKind
from triton_ops.tune.batcher import Candidate, ServiceProfile, predict_goodput
from triton_ops.tune.search import (
    CandidateResult,
    FinalTiming,
    SearchOutcome,
    bisect_rate,
    candidate_space,
    first_rate,
    prune_by_memory,
    run_search,
)
from triton_ops.tune.stats import QuantileEstimate

# Kept back at the end of the budget for writing best.json and report.html.
REPORT_RESERVE_S = 4.0

EventSink = Callable[[str, dict[str, object]], None]


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
    settings: Any = None  # live.ProbeSettings


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


def _estimate_to_dict(est: QuantileEstimate | None) -> dict[str, float] | None:
    if est is None:
        return None
    return {"p99_us": est.value, "ci_low_us": est.low, "ci_high_us": est.high, "n": est.n,
            "confidence": est.confidence}


def _estimate_from_dict(data: dict[str, Any] | None) -> QuantileEstimate | None:
    if not data:
        return None
    return QuantileEstimate(0.99, float(data["p99_us"]), float(data["ci_low_us"]),
                            float(data["ci_high_us"]), int(data["n"]),
                            float(data.get("confidence", 0.95)))


def result_to_dict(r: CandidateResult) -> dict[str, Any]:
    return {
        "candidate": r.candidate.to_dict(), "predicted_goodput": r.predicted_goodput,
        "goodput": r.goodput, "p99": _estimate_to_dict(r.p99_at_goodput), "status": r.status,
        "reason": r.reason, "generator_limited": r.generator_limited, "seconds": r.seconds,
        "probes": len(r.probes),
    }


def result_from_dict(data: dict[str, Any]) -> CandidateResult:
    return CandidateResult(
        Candidate.from_dict(data["candidate"]), float(data["predicted_goodput"]),
        float(data["goodput"]), _estimate_from_dict(data.get("p99")), data["status"],
        data.get("reason", ""), bool(data.get("generator_limited")),
        seconds=float(data.get("seconds", 0.0)),
    )


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
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        tmp.replace(self.path)


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


def _same_machine(endpoints: Any) -> bool:
    """Whether the server shares this machine's CPU cores with the load generator."""
    host = endpoints.grpc_url.rsplit(":", 1)[0].strip("[]")
    return bool(endpoints.embedded) or host in ("127.0.0.1", "localhost", "::1")


def tune(options: TuneOptions, on_event: EventSink = lambda k, d: None) -> TuneResult:
    """Run the whole tuning loop; see the module docstring."""
    from triton_ops.loadgen.engine import LoadGenerator
    from triton_ops.server.endpoints import open_server
    from triton_ops.tune.live import LiveTarget, ProbeSettings, steal_note
    from triton_ops.tune.report import write_outputs

    started = time.monotonic()
    envelope = options.envelope
    slo_us = options.slo_us or (envelope.slo.p99_latency if envelope.slo else None)
    if not slo_us:
        raise TuneError(f"no latency SLO for {options.model}: give --slo-p99 (e.g. 50ms) or set "
                        "slo.p99_latency in the envelope")
    max_error_rate = envelope.slo.max_error_rate if envelope.slo else 0.001
    if not envelope.inputs:
        raise TuneError(f"the envelope of {options.model} lists no inputs: tune builds requests "
                        "from inputs[].name/data_type/dims; add them")
    if options.url and not options.allow_reload:
        raise TuneError(
            f"{options.url} is a remote server: tune reloads {options.model} with each candidate "
            "config, which affects its live traffic. Pass --allow-reload to accept that, or "
            "run without --url to tune on an embedded server")
    out_dir = options.out_dir or default_out_dir(options.model)
    out_dir.mkdir(parents=True, exist_ok=True)
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
    state.data.setdefault("model", options.model)
    state.data.setdefault("started", datetime.now(timezone.utc).isoformat())
    state.data["slo_p99_us"] = slo_us
    state.save()
    log = MeasurementLog(out_dir / "measurements.csv")
    settings = options.settings or ProbeSettings(late_threshold_us=max(2000.0, 0.05 * slo_us))
    sizes, delays, counts = default_space(envelope, slo_us)
    space_sizes = options.max_batch_sizes or sizes
    space = candidate_space(space_sizes, options.delays_us or delays,
                            options.instance_counts or counts, preferred=options.preferred)
    per_instance = None
    available = None
    gpu_kind = any(g.kind is InstanceKind.GPU for g in envelope.instances)
    gm = envelope.resources.gpu_memory
    if gpu_kind and gm is not None:
        per_instance = gm.per_instance
        total = envelope.hardware.smallest_gpu_memory()
        available = int(total * (1 - gm.headroom)) if total else None
    space, skipped = prune_by_memory(space, per_instance_bytes=per_instance,
                                     available_bytes=available)
    for s in skipped:
        on_event("skipped", {"candidate": s.candidate, "reason": s.reason})
    if not space:
        raise TuneError("no candidate config fits the memory envelope; lower the batch sizes "
                        "or instance counts, or check resources.gpu_memory")
    batching = any(c.max_batch_size > 0 for c in space)
    outcome: SearchOutcome | None = None
    baseline: CandidateResult | None = None
    profile: ServiceProfile | None = None
    window_steals: list[float] = []  # CPU steal per measurement window (server's machine)
    on_event("phase", {"name": "server", "elapsed": time.monotonic() - started})
    with open_server(options.url, options.repository, [options.model],
                     http_url=options.http_url, metrics_url=options.metrics_url) as ep:
        lg = LoadGenerator(ep.grpc_url, options.model, envelope.inputs,
                           outputs=[o.name for o in envelope.outputs],
                           batching=envelope.max_batch_size > 0, workers=options.workers,
                           timeout_s=max(2.0, min(10.0, 20 * slo_us / 1e6)), seed=options.seed)
        lg.start()
        probe_counter = [0]

        def record(row: dict[str, object]) -> None:
            steal = row.get("cpu_steal")
            if isinstance(steal, float | int):
                window_steals.append(float(steal))
            log.append({"probe": probe_counter[0], **row})

        target = LiveTarget(ep.grpc_url, options.model, envelope, slo_us=slo_us,
                            max_error_rate=max_error_rate, loadgen=lg, record=record,
                            metrics_url=ep.metrics_url, settings=settings,
                            max_workers=options.max_workers or max(1, (os.cpu_count() or 2) // 2),
                            record_event=on_event, local_server=_same_machine(ep))
        original_probe = target.probe

        def counted_probe(candidate: Candidate, rate: float, *, final: bool = False) -> Any:
            probe_counter[0] += 1
            on_event("probe", {"candidate": candidate, "rate": rate, "final": final,
                               "elapsed": time.monotonic() - started})
            return original_probe(candidate, rate, final=final)

        target.probe = counted_probe  # type: ignore[method-assign]
        try:
            base_cand = target.loaded or Candidate(envelope.max_batch_size, 0, 1)
            state.data["original_config"] = target.original
            # 1. Profile the cost per batch size (once; reused on --resume).
            if "profile" in state.data:
                profile = ServiceProfile.from_dict(state.data["profile"])
            else:
                on_event("phase", {"name": "profile", "elapsed": time.monotonic() - started})
                top = max(c.max_batch_size for c in space) if batching else 0
                profile = target.profile_service(
                    top, instances=max(c.instance_count for c in space),
                    measure_parallel=any(c.instance_count > 1 for c in space),
                    shared_cores=(os.cpu_count() or 1) if _same_machine(ep) else 1,
                    measure_cores=_same_machine(ep),
                    cpu_model=not (envelope.instances
                               and all(g.kind == "GPU" for g in envelope.instances)))
                state.data["profile"] = profile.to_dict()
                state.save()
            # 2. The baseline: the config the model had, measured the same way.
            if "baseline" in state.data:
                baseline = result_from_dict(state.data["baseline"])
            else:
                on_event("phase", {"name": "baseline", "elapsed": time.monotonic() - started})
                target.phase = "baseline"
                t0 = time.monotonic()
                predicted = predict_goodput(base_cand, profile, slo_us)
                t_load = time.monotonic()
                err = target.load(base_cand)
                state.data["load_s"] = time.monotonic() - t_load
                if err is not None:
                    raise TuneError(f"cannot reload the model's own config: {err}")
                # Then re-measuring the baseline last leaves nothing to restore.
                state.data["baseline_restores"] = target.loaded_config == target.original
                # Same start as every candidate's: the prediction, but no higher than half
                # the closed-loop ceiling (open-loop arrivals hold well below it).
                guess = (first_rate(predicted, 1.0, ceiling=profile.ceiling_rps) if predicted
                         else (profile.ceiling_rps or 10.0) / 2)
                goodput, p99, limited, probes = bisect_rate(
                    lambda r: target.probe(base_cand, r), guess, slo_us=slo_us,
                    rel_tol=0.08, max_probes=7, ceiling=profile.ceiling_rps,
                    # the baseline is what the answer is compared with: always measure it
                    min_probes=2,
                    should_stop=lambda: time.monotonic() - started > options.budget_s * 0.5)
                baseline = CandidateResult(base_cand, predicted, goodput, p99,
                                           generator_limited=limited, probes=probes,
                                           seconds=time.monotonic() - t0)
                state.data["baseline"] = result_to_dict(baseline)
                state.save()
                on_event("measured", {"result": baseline, "baseline": True})
            # 3. Search: predicted goodput first, bisection on the promising ones.
            done = [result_from_dict(d) for d in state.data.get("candidates", [])]
            done_keys = {r.candidate.key for r in done}
            if baseline.candidate.key not in done_keys:
                done.append(baseline)
            target.phase = "search"

            def search_event(kind: str, data: dict[str, object]) -> None:
                if kind in ("measured", "infeasible"):
                    result = data.get("result")
                    if result is None:
                        result = CandidateResult(data["candidate"], 0.0,  # type: ignore[arg-type]
                                                 status="infeasible", reason=str(data["reason"]))
                    state.data.setdefault("candidates", []).append(
                        result_to_dict(result))  # type: ignore[arg-type]
                    state.save()
                on_event(kind, data)

            elapsed = time.monotonic() - started
            # The budget covers the re-measurements and the restore too: run_search keeps
            # time for them, estimated from a model load and a re-measurement probe (the
            # longest seen while searching, when longer).
            final_probe_s = settings.warmup_s + settings.window_s * settings.final_windows + 1.0
            timing = FinalTiming(load_s=float(state.data.get("load_s", 2.0)),
                                 final_probe_s=final_probe_s,
                                 baseline_restores=bool(state.data.get("baseline_restores")))
            outcome = run_search(
                space, profile, slo_us, target,
                budget_s=max(0.0, options.budget_s - elapsed),
                reserve_s=REPORT_RESERVE_S,
                max_measured=options.max_measured, done=done, on_event=search_event,
                probe_s=settings.warmup_s + settings.window_s * settings.max_windows,
                baseline=baseline, timing=timing,
            )
        finally:
            on_event("phase", {"name": "restore", "elapsed": time.monotonic() - started})
            try:
                target.restore()
            finally:
                target.close()
                lg.close()
    note = steal_note(window_steals, settings.max_steal_fraction)
    if note is not None and outcome is not None:
        outcome.notes.append(note)
    elapsed = time.monotonic() - started
    best = write_outputs(out_dir, options.model, slo_us, outcome, baseline, profile, skipped,
                         elapsed_s=elapsed, budget_s=options.budget_s)
    state.data["finished"] = datetime.now(timezone.utc).isoformat()
    state.save()
    return TuneResult(best, out_dir, outcome)
