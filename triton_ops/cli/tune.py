"""CLI commands of the tune capability: `triton-ops tune MODEL`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def _int_list(text: str | None, what: str, *, durations: bool = False) -> list[int] | None:
    if not text:
        return None
    from triton_ops.envelope.units import parse_duration_us

    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            if durations and not part.isdigit():
                out.append(parse_duration_us(part))
            else:
                out.append(int(part))  # a bare number of a duration means µs
        except ValueError as exc:
            raise typer.BadParameter(f"{what}: {part!r} is not valid ({exc})") from None
    return out


def tune_command(
    model: str = typer.Argument(..., help="Model name (envelopes/<model>.yaml)"),
    envelope: Path | None = typer.Option(  # noqa: B008 - typer declares options as defaults
        None, help="Envelope file (default: envelopes/<model>.yaml)"),
    envelopes_dir: Path = typer.Option(  # noqa: B008
        Path("envelopes"), help="Folder of envelopes"),
    repository: Path = typer.Option(  # noqa: B008
        Path("model_repository"), help="Model repository"),
    url: str | None = typer.Option(None, help="gRPC host:port of a running Triton (default: "
                                   "start an embedded one)"),
    http_url: str | None = typer.Option(None, help="HTTP host:port of the remote server"),
    metrics_url: str | None = typer.Option(None, help="Metrics URL of the remote server"),
    slo_p99: str | None = typer.Option(None, help="p99 latency SLO, e.g. 50ms (default: the "
                                       "envelope's slo.p99_latency)"),
    budget: str = typer.Option("10m", help="Time budget, e.g. 3m, 90s"),
    out: Path | None = typer.Option(  # noqa: B008
        None, help="Output folder (default tune-results/<model>/<UTC time>/)"),
    resume: Path | None = typer.Option(  # noqa: B008
        None, help="Continue the interrupted run in this folder"),
    output_format: str = typer.Option(
        "text", "--format", help="text or json (best.json on stdout)"),
    apply: bool = typer.Option(False, "--apply", help="Write the chosen settings into the "
                               "envelope and regenerate config.pbtxt"),
    allow_reload: bool = typer.Option(False, help="Allow reloading the model on a remote server"),
    workers: int = typer.Option(1, min=1, max=64, help="Load generator processes to start"),
    max_workers: int | None = typer.Option(
        None, min=1, max=64, help="Add generator processes up to this many when the generator "
        "cannot keep the rate (default: half the CPU cores)"),
    max_batch_sizes: str | None = typer.Option(None, help="Comma list, e.g. 1,4,16,64"),
    delays: str | None = typer.Option(
        None, help="Comma list of max queue delays, e.g. 0,500us,2ms"),
    instances: str | None = typer.Option(None, help="Comma list of instance counts, e.g. 1,2"),
    preferred: bool = typer.Option(False, help="Also try preferred batch sizes"),
    max_measured: int = typer.Option(12, min=1, help="Measure at most this many candidates"),
    overload: bool = typer.Option(
        True, "--overload/--no-overload", help="After the batching choice, measure queue "
        "policies at 0.8x, 2x and 3x its goodput and choose one (a share of --budget)"),
) -> None:
    """Find the max_batch_size / max_queue_delay / instance count with the highest goodput
    under a p99 SLO, measured on a live Triton."""
    from rich.console import Console

    # soft_wrap: a message is never broken inside a path; the terminal wraps long lines.
    err = Console(stderr=True, soft_wrap=True)
    try:
        if output_format not in ("text", "json"):
            raise UsageError("--format is text or json")
        budget_s, slo_us = _durations(budget, slo_p99)
        env_path, env = _envelope(model, envelope, envelopes_dir)
        for option, value in (("--url", url), ("--http-url", http_url)):
            _check_server_url(option, value)
        if resume is not None and not (resume / "state.json").is_file():
            raise UsageError(f"{resume} holds no state.json from an earlier tune run")
        from triton_ops.tune.run import TuneOptions, default_out_dir, space_problem

        options = TuneOptions(
            model=model, envelope=env, repository=repository, url=url, http_url=http_url,
            metrics_url=metrics_url, slo_us=slo_us, budget_s=budget_s,
            out_dir=resume or out or default_out_dir(model), resume=resume is not None,
            allow_reload=allow_reload, workers=workers, max_workers=max_workers,
            max_batch_sizes=_int_list(max_batch_sizes, "--max-batch-sizes"),
            delays_us=_int_list(delays, "--delays", durations=True),
            instance_counts=_int_list(instances, "--instances"), preferred=preferred,
            max_measured=max_measured, overload=overload, started=_process_start())
        problem = space_problem(env, options.max_batch_sizes, options.delays_us,
                                options.instance_counts)
        if problem:
            raise UsageError(problem)
    except UsageError as exc:
        for line in exc.lines:
            err.print(line)
        raise typer.Exit(2) from None
    best = _run(options, err).best
    if output_format == "json":
        typer.echo(json.dumps(best, indent=2))
    else:
        _print_best(best, err)
    if apply:
        _apply(best, Path(env_path), repository, err)
    if not best.get("slo_met"):
        raise typer.Exit(1)


class UsageError(Exception):
    """Bad input: the lines to print (exit 2)."""

    def __init__(self, message: str, *, lines: list[str] | None = None) -> None:
        super().__init__(message)
        self.lines = lines or [f"[red]error:[/] {escape(message)}"]


def _process_start() -> float:
    """When this process started, on the time.monotonic() clock: the budget covers the whole
    command, interpreter start included."""
    import time

    import psutil

    age = max(0.0, time.time() - psutil.Process().create_time())
    return time.monotonic() - age


def _durations(budget: str, slo_p99: str | None) -> tuple[float, float | None]:
    from triton_ops.envelope.units import parse_duration_us

    if budget.strip().replace(".", "", 1).isdigit():
        raise UsageError(f"--budget {budget}: add a unit: {budget}s (or e.g. 3m)")
    try:
        budget_s = parse_duration_us(budget) / 1e6
        slo_us = float(parse_duration_us(slo_p99)) if slo_p99 else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if budget_s < 30:
        raise UsageError("--budget must be at least 30s (server start, profile, baseline)")
    return budget_s, slo_us


def _envelope(model: str, envelope: Path | None, envelopes_dir: Path) -> tuple[Path, Any]:
    from triton_ops.envelope.loader import EnvelopeError, find_envelope, require_envelope

    try:
        env_path = envelope or find_envelope(model, envelopes_dir)
        env = require_envelope(env_path)
    except FileNotFoundError as exc:
        raise UsageError(f"{exc}; pass --envelope PATH") from None
    except EnvelopeError as exc:
        raise UsageError("envelope", lines=[
            f"{f.file}:{f.line}:{f.column}: [red]{f.rule}[/] {escape(f.message)}"
            for f in exc.findings]) from None
    if env.name != model:
        raise UsageError(f"{env_path} describes model {env.name!r}, not {model!r}")
    return Path(env_path), env


def _check_server_url(option: str, url: str | None) -> None:
    from triton_ops.server.endpoints import normalise_host_port

    if url is None:
        return
    try:
        normalise_host_port(url, 8001)  # the same check as every other --url
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


def _run(options: Any, err: Any) -> Any:
    """The run, with the failures it cannot work around as messages (never a traceback)."""
    from triton_ops.tune.run import TuneError

    try:
        return _run_with_progress(options, err)
    except TuneError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        folder = options.out_dir
        if folder is not None and (folder / "state.json").is_file():
            err.print("[yellow]interrupted[/]: the model's original config was restored; "
                      f"continue with --resume {folder}")
        else:
            err.print("[yellow]interrupted[/] before anything was measured; the model's "
                      "original config was restored")
        raise typer.Exit(130) from None
    except Exception as exc:  # noqa: BLE001 - server/loadgen failures: message, not traceback
        from triton_ops.loadgen.engine import LoadGenError
        from triton_ops.server.local import ServerError

        if isinstance(exc, (LoadGenError, ServerError, ConnectionError, OSError)) or \
                type(exc).__name__ == "InferenceServerException":
            unreachable = "UNAVAILABLE" in str(exc) or "failed to connect" in str(exc)
            lead = (f"cannot reach the Triton server at {options.url}: "
                    if unreachable and options.url else "")
            err.print(f"[red]error:[/] {lead}{escape(str(exc))}")
            raise typer.Exit(1) from None
        raise


def _apply(best: dict[str, Any], env_path: Path, repository: Path, err: Any) -> None:
    from triton_ops.tune.report import chosen_policy

    do_apply, why = apply_decision(best)
    policy = chosen_policy(best)
    if not do_apply and policy is None:
        err.print(f"[yellow]--apply changed nothing:[/] {escape(why)}")
        return
    from triton_ops.tune.apply import ApplyError, apply_to_envelope
    from triton_ops.tune.batcher import Candidate

    candidate = Candidate.from_dict(best["chosen"]) if do_apply else None
    if policy is not None and policy["config"] is not None:
        # The policy was measured on another batching config: it holds only with that one.
        candidate = Candidate.from_dict(policy["config"])
    try:
        for line in apply_to_envelope(env_path, candidate, repository,
                                      policy=policy["policy"] if policy else None):
            err.print(line)
    except ApplyError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None


def apply_decision(best: dict[str, Any]) -> tuple[bool, str]:
    """Whether `--apply` writes best.json's chosen batching config, and if not, why (plain
    data). The queue policy is written whenever the overload stage chose one that helps,
    with the batching config it was measured on."""
    if best.get("kept_baseline"):
        return False, f"the current config is kept ({best.get('reason', '')})"
    if not best.get("chosen") or not best.get("slo_met"):
        return False, "no config met the SLO"
    return True, ""


def _print_best(best: dict[str, Any], console: Any) -> None:
    """The summary a person reads first, then what else happened, then where the files are."""
    from triton_ops.tune.report import short_label, summary_lines

    colours = {"good": "green", "warn": "yellow", "bad": "red"}
    for line in summary_lines(best):
        text = escape(line.text)
        if line.tone:
            text = f"[{colours[line.tone]}]{text}[/]"
        console.print(f"[bold]{line.label}[/]: {text}")
    winner = best.get("winner")
    if winner and winner["config"] != best.get("chosen"):
        got = winner.get("remeasured_goodput")
        console.print(f"search winner {short_label(winner['config'])}: "
                      f"{winner['search_goodput']:.0f} req/s in the search, "
                      + (f"{got:.0f} req/s re-measured" if got else
                         "held no rate re-measured" if got == 0 else "not re-measured"))
    for note in best.get("notes") or []:
        console.print(f"[yellow]note:[/] {escape(note)}")
    console.print(f"files in {best['out_dir']} (report.html, best.json, measurements.csv)")


class ProgressPrinter:
    """Prints a tune run's events above a progress bar of the budget."""

    def __init__(self, progress: Any, task: Any, budget_s: float) -> None:
        import time

        self.progress = progress
        self.task = task
        self.budget_s = budget_s
        self.started = time.monotonic()

    def __call__(self, event: Any) -> None:
        import time

        from triton_ops.tune import events as ev

        say = self.progress.console.print
        self.progress.update(self.task,
                             completed=min(time.monotonic() - self.started, self.budget_s))
        match event:
            case ev.PhaseStarted(name=name):
                self.progress.update(self.task, description=name)
            case ev.ProbeStarted(candidate=cand, rate=rate, final=final):
                what = "re-measuring" if final else "measuring"
                self.progress.update(self.task,
                                     description=f"{what} {cand.label()} at {rate:.0f} req/s")
            case ev.CandidateMeasured(result=r, baseline=baseline):
                tag = "baseline " if baseline else ""
                say(f"  {tag}{r.candidate.label()}: goodput {r.goodput:.0f} req/s "
                    f"(predicted {r.predicted_goodput:.0f}, {len(r.probes)} probes, "
                    f"{r.seconds:.0f} s)" + (" [generator-limited]" if r.generator_limited
                                             else ""))
            case ev.CandidateInfeasible(result=r):
                say(f"  [yellow]infeasible[/] {r.candidate.label()}: {r.reason}")
            case ev.CandidateSkipped(candidate=cand, reason=reason):
                say(f"  [yellow]skipped[/] {cand.label()}: {reason}")
            case ev.WorkersAdded(workers=workers):
                say(f"  load generator could not keep up: now {workers} worker processes")
            case ev.ProbeDisturbed(candidate=cand, rate=rate, steal=steal):
                say(f"  {cand.label()} at {rate:.0f} req/s failed while other guests of the "
                    f"host took {100 * steal:.0f}% of this machine's CPU: measuring again")
            case ev.StealPersists(probes=probes):
                say(f"  the last {probes} probes all lost CPU to other guests of the host: "
                    "failures stand from now on, until a probe is measured undisturbed")
            case ev.RunnerUpRemeasured(candidate=cand, previous=previous):
                say(f"  {previous.label()} did not hold its search goodput: re-measuring the "
                    f"runner-up {cand.label()}")
            case ev.DelaysUnresolved(low=low, high=high, resolution=resolution):
                say(f"  the model cannot tell queue delays {low.max_queue_delay_us}us to "
                    f"{high.max_queue_delay_us}us of max_batch={low.max_batch_size} "
                    f"instances={low.instance_count} apart (its predictions vary by "
                    f"{resolution:.0%}): measuring both ends")
            case ev.ContenderRemeasured(candidate=cand, winner=winner, rate=rate):
                say(f"  {cand.label()} may hold as much as {winner.label()}: probing it at "
                    f"{rate:.0f} req/s, where {winner.label()} was re-measured")
            case ev.SearchStopped(reason=reason):
                say(f"  search stopped: {reason}")
            case _:
                self.overload(event)

    def overload(self, event: Any) -> None:
        """The overload stage's events."""
        from triton_ops.tune import events as ev

        say = self.progress.console.print
        match event:
            case ev.OverloadStarted():
                self.progress.update(self.task, description="overload")
                say(overload_started_text(event))
            case ev.OverloadSkipped(reason=reason):
                say(f"  overload stage skipped: {escape(reason)}")
            case ev.PolicyLoading(policy=policy):
                self.progress.update(self.task, description=f"overload: {policy.label()}")
            case ev.LevelMeasured(policy=policy, figures=f):
                p99 = (f"p99 of answers {f.p99_answered.value / 1000:.0f} ms" if f.answered
                       else "none answered")
                say(f"  {policy.label()} at {f.level:g}x ({f.offered_rps:.0f} req/s offered): "
                    f"{f.within_slo_rps:.0f} req/s within the SLO, {f.rejected_share:.1%} "
                    f"rejected, {p99}")
            case ev.NominalConfirmed(result=r, kept=kept) if r.confirmation is not None:
                f = r.confirmation
                rejected, requests = r.rejected_at(f.level) or (0, 0)
                verdict = "kept" if kept else f"turned down: {escape(r.reason)}"
                say(f"  {r.policy.label()} at {f.level:g}x once more ({f.requests:,} requests):"
                    f" {rejected} of {requests:,} rejected in both windows; {verdict}")
            case ev.PolicyDone(result=r) if r.status != "measured":
                say(f"  {r.policy.label()}: {r.status}: {escape(r.reason)}")
            case _:
                pass


def overload_started_text(event: Any) -> str:
    """What the overload stage will measure, in the time it was given."""
    text = (f"overload stage: {event.seconds:.0f} s ({event.share:.0%} of the budget) for "
            f"{len(event.policies)} queue policies at 0.8x, 2x and 3x the goodput, "
            f"{event.window_s:g} s per load")
    if event.nominal_window_s:
        text += f" ({event.nominal_window_s:.1f} s at 0.8x)"
    if event.left_out:
        text += (f"; {len(event.left_out)} more if time allows "
                 f"({', '.join(p.label() for p in event.left_out)})")
    return text


def _run_with_progress(options: Any, console: Any) -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from triton_ops.tune.run import tune

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.completed:.0f}/{task.total:.0f} s budget"),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        task = progress.add_task("starting", total=options.budget_s)
        return tune(options, ProgressPrinter(progress, task, options.budget_s))


def register(app: typer.Typer) -> None:
    """Add this capability's commands to the main app."""
    app.command("tune")(tune_command)
