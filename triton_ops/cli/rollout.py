"""CLI commands of the rollout capability: publish, rollout (start/status/resume/abort/promote),
rollback.

    triton-ops publish MODEL N
    triton-ops rollout MODEL --canary N [--steps 10,25,50,100] [--interval 60s] [--confirm]
    triton-ops rollout status|resume|abort|promote MODEL
    triton-ops rollback MODEL [--to N]

Exit codes of `rollout` and `rollback`: 0 promoted (or restored), 1 rolled back or failed,
2 refused before starting (unsealed or tampered version, another rollout running, bad
arguments). Heavy modules (tritonclient, numpy, rich) load inside the commands.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from triton_ops.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    AnalysisOptions,
    RolloutPrinter,
    check_output_format,
    envelope_file,
    fail,
    load_envelope,
    parse_duration_s,
    parse_int_list,
    rollout_spec,
    show_status,
    who,
)

TARGET_FILE = "target.json"  # how to reach the target again on `resume` / `promote`


class _RolloutGroup(TyperGroup):
    """`rollout MODEL --canary N` starts a rollout; `rollout status MODEL` etc. are commands."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        from triton_ops.cli.k8s import dispatch_rollout, rollout_target_args

        if rollout_target_args(args) is not None:
            dispatch_rollout(args)  # the Kubernetes target's commands; exits
        args = _strip_single_target(args)
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["start", *args]
        return super().parse_args(ctx, args)


def _strip_single_target(args: list[str]) -> list[str]:
    """Accept `--target single` (the default target); refuse unknown targets clearly."""
    out: list[str] = []
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        value = None
        if arg == "--target":
            value = args[i + 1] if i + 1 < len(args) else ""
            skip = True
        elif arg.startswith("--target="):
            value = arg.split("=", 1)[1]
        if value is None:
            out.append(arg)
        elif value != "single":
            raise fail(f"unknown rollout target {value!r}: use `single` (one Triton, the "
                        "default) or `k8s`")
    return out


rollout_app = typer.Typer(
    cls=_RolloutGroup,
    no_args_is_help=True,
    help="Canary rollout of a sealed model version with automatic analysis and rollback.\n\n"
    "Start one with `triton-ops rollout MODEL --canary N`; then `status`, `resume`, `abort`, "
    "`promote` work from any shell.",
)


def _model_dir(repo: Path, model: str) -> Path:
    model_dir = repo / model
    if not model_dir.is_dir():
        raise fail(f"{model_dir} does not exist: is {model!r} a model of repository {repo}? "
                    "(set --repo)")
    return model_dir


def _sealed_envelope(model_dir: Path, canary: int | None) -> Any:
    """The envelope version `canary` was sealed with, if it was sealed with a valid one."""
    from triton_ops.envelope.loader import parse_yaml
    from triton_ops.envelope.model import Envelope
    from triton_ops.repository.seal import SealError, load_manifest

    if canary is None:
        return None
    try:
        manifest = load_manifest(model_dir, canary)
    except SealError as exc:
        raise fail(str(exc)) from None
    if manifest and manifest.get("envelope"):
        data, _, findings = parse_yaml(manifest["envelope"], "sealed envelope")
        if not findings and isinstance(data, dict):
            try:
                return Envelope.model_validate(data)
            except ValueError:
                pass
    return None


def _load_envelope(model: str, model_dir: Path, envelope: Path | None, envelopes: Path,
                   canary: int | None) -> Any:
    """The envelope from --envelope, envelopes/<model>.yaml, or the canary's seal."""
    return load_envelope(model, envelope, envelopes,
                         fallback=lambda: _sealed_envelope(model_dir, canary))


# -- publish ------------------------------------------------------------------------------

def publish(
    model: str = typer.Argument(..., help="Model name (a folder of the repository)."),
    version: int = typer.Argument(..., help="Version number to seal."),
    repo: Path = typer.Option(Path("model_repository"), "--repo",  # noqa: B008
                              help="Model repository."),
    envelope: Path = typer.Option(None, "--envelope",  # noqa: B008
                                  help="Envelope to record (default envelopes/MODEL.yaml)."),
    envelopes: Path = typer.Option(Path("envelopes"), "--envelopes",  # noqa: B008
                                   help="Folder of envelopes."),
) -> None:
    """Seal version N of MODEL: a sha256 manifest of every file under MODEL/N/ plus the config
    and envelope, in MODEL/.triton-ops/seals/N.json. Publishing N again with other content is
    refused."""
    from triton_ops.repository.seal import SealError
    from triton_ops.repository.seal import publish as seal_version

    model_dir = _model_dir(repo, model)
    try:
        result = seal_version(model_dir, version, envelope_file(model, envelope, envelopes))
    except SealError as exc:
        raise fail(str(exc)) from None
    if result.created:
        typer.echo(f"sealed {model} version {version}: {result.files} files -> "
                   f"{result.manifest_path}")
    else:
        typer.echo(f"{model} version {version} is already sealed with this content "
                   f"({result.manifest_path})")


# -- the target ---------------------------------------------------------------------------

@contextmanager
def _target(model: str, repo: Path, url: str | None, envelope_obj: Any,
            requests_file: Path | None, rate: float, concurrency: int,
            timeout_s: float) -> Iterator[Any]:
    from triton_ops.rollout.single import SingleTritonTarget
    from triton_ops.rollout.traffic import RequestsError, envelope_requests, load_requests_file
    from triton_ops.server.endpoints import open_server
    from triton_ops.server.local import ServerError

    try:
        if requests_file is not None:
            requests = load_requests_file(requests_file, envelope_obj)
        else:
            requests = envelope_requests(envelope_obj, count=64)
    except RequestsError as exc:
        raise fail(str(exc)) from None
    try:
        with open_server(url, repo, [model]) as endpoints:
            target = SingleTritonTarget(
                grpc_url=endpoints.grpc_url, repository=repo, model=model,
                envelope=envelope_obj, requests=requests, rate=rate,
                concurrency=concurrency, timeout_s=timeout_s)
            try:
                yield target
            finally:
                target.close()
    except (ServerError, ValueError) as exc:
        raise fail(f"cannot use the Triton server: {exc}") from None


@contextmanager
def _interrupted(model: str, store: Any) -> Iterator[None]:
    """Ctrl-C or an unexpected error leaves the persisted state as it is: say how to go on."""
    try:
        yield
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        raise fail(_left_in(model, store, "interrupted"), 130) from None
    except Exception as exc:  # noqa: BLE001 - report, never a traceback
        raise fail(_left_in(model, store, f"unexpected error: {type(exc).__name__}: {exc}"),
                   EXIT_FAILED) from None


def _left_in(model: str, store: Any, what: str) -> str:
    try:
        state = store.load()
    except Exception:  # noqa: BLE001
        state = None
    if state is None or state.phase.terminal:
        return what
    return (f"{what}; the rollout is left in phase {state.phase.value} at weight "
            f"{state.weight}% (serving {state.serving}): run `triton-ops rollout resume "
            f"{model}` to go on or `triton-ops rollout abort {model}` to roll back")


def _save_target_options(store: Any, options: dict[str, Any]) -> None:
    from triton_ops.fileio import atomic_write_text

    atomic_write_text(store.directory / TARGET_FILE, json.dumps(options, indent=2) + "\n")


def _target_options(store: Any) -> dict[str, Any]:
    try:
        return json.loads((store.directory / TARGET_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


@rollout_app.command("start", help="Start a canary rollout (same as `rollout MODEL --canary N`).")
def start(
    model: str = typer.Argument(..., help="Model name."),
    canary: int = typer.Option(..., "--canary", help="The sealed version to roll out."),
    stable: str = typer.Option(None, "--stable",
                               help="Stable versions (default: what serves now)."),
    steps: str = typer.Option("10,25,50,100", "--steps", help="Canary weights in percent."),
    interval: str = typer.Option("60s", "--interval", help="Length of one analysis window."),
    min_requests: int = typer.Option(20, "--min-requests", min=1,
                                     help="Canary requests a window needs to be conclusive."),
    failure_limit: int = typer.Option(2, "--failure-limit", min=1,
                                      help="Failed windows before rolling back."),
    max_inconclusive: int = typer.Option(5, "--max-inconclusive", min=1,
                                         help="Inconclusive windows in a row before rolling "
                                         "back (never promotes on no data)."),
    confirm: bool = typer.Option(False, "--confirm",
                                 help="Pause before promotion until `rollout promote MODEL`."),
    shadow_samples: int = typer.Option(20, "--shadow-samples", min=0,
                                       help="Requests per window sent to both versions and "
                                       "compared with the envelope's tolerance."),
    max_p99_ratio: float = typer.Option(1.5, "--max-p99-ratio", min=1.0,
                                        help="Canary p99 bound relative to stable's ..."),
    p99_slack: str = typer.Option("10ms", "--p99-slack", help="... plus this slack."),
    rate: float = typer.Option(100.0, "--rate", min=0.1,
                               help="Analysis requests per second (single Triton)."),
    concurrency: int = typer.Option(4, "--concurrency", min=1, help="Requests in flight."),
    requests_file: Path = typer.Option(None, "--requests",  # noqa: B008
                                       help="JSON lines of recorded requests to replay."),
    url: str = typer.Option(None, "--url", help="gRPC HOST:PORT of a running Triton "
                            "(explicit model control). Default: start an embedded one."),
    repo: Path = typer.Option(Path("model_repository"), "--repo",  # noqa: B008
                              help="Model repository."),
    envelope: Path = typer.Option(None, "--envelope", help="Envelope file."),  # noqa: B008
    envelopes: Path = typer.Option(Path("envelopes"), "--envelopes",  # noqa: B008
                                   help="Folder of envelopes."),
    timeout: str = typer.Option("10s", "--timeout", help="Per-request timeout."),
    output_format: str = typer.Option("rich", "--format", help="rich or json."),
) -> None:
    """Roll out sealed version N of MODEL next to stable, step by step, with analysis."""
    check_output_format(output_format)
    from triton_ops.rollout.engine import Engine, RolloutRefused, exit_code

    model_dir = _model_dir(repo, model)
    envelope_obj = _load_envelope(model, model_dir, envelope, envelopes, canary)
    analysis = AnalysisOptions.parse(
        steps=steps, interval=interval, p99_slack=p99_slack, min_requests=min_requests,
        failure_limit=failure_limit, max_inconclusive=max_inconclusive, confirm=confirm,
        shadow_samples=shadow_samples, max_p99_ratio=max_p99_ratio)
    timeout_s = parse_duration_s(timeout, "--timeout")
    printer = RolloutPrinter(output_format)
    with _target(model, repo, url, envelope_obj, requests_file, rate, concurrency,
                 timeout_s) as target:
        try:
            stable_list = (parse_int_list(stable, "--stable") if stable
                           else target.serving_versions())
        except Exception as exc:  # noqa: BLE001 - TargetError and connection failures
            raise fail(str(exc)) from None
        spec = rollout_spec(model, canary, stable_list, analysis, envelope_obj)
        if not stable_list:
            raise fail(f"no version of {model} serves on {target.describe()}: load a stable "
                       "version first")
        _save_target_options(target.store, {
            "url": url, "repo": str(repo), "rate": rate, "concurrency": concurrency,
            "requests": str(requests_file.resolve()) if requests_file else None,
            "envelope": str(envelope.resolve()) if envelope else None,
            "envelopes": str(envelopes.resolve()),
            "timeout_s": timeout_s})
        engine = Engine(target, listener=printer)
        if not printer.json:
            printer.console.print(f"rolling out {model} version {canary} on "
                                  f"{target.describe()}: stable {stable_list}, steps "
                                  f"{spec.steps}, {spec.interval_s:g}s windows")
        if url and canary > max(stable_list):
            # Triton has no weighted routing: unversioned requests go to the highest version.
            typer.echo(f"note: while version {canary} is loaded, requests that name no "
                       f"version go to it; clients should address version "
                       f"{max(stable_list)} by number during the rollout", err=True)
        with _interrupted(model, target.store):
            try:
                state = engine.start(spec)
            except RolloutRefused as exc:
                if printer.json:
                    typer.echo(json.dumps({"model": model, "canary": canary,
                                           "phase": "Refused", "reason": str(exc),
                                           "exit_code": EXIT_USAGE}, indent=2))
                raise fail(f"refused: {exc}") from None
    code = exit_code(state)
    printer.final(state, code)
    raise typer.Exit(code)


def _store(model: str, repo: Path) -> Any:
    from triton_ops.rollout.single import store_for

    _model_dir(repo, model)
    return store_for(repo, model)


@rollout_app.command("status")
def status(
    model: str = typer.Argument(..., help="Model name."),
    repo: Path = typer.Option(Path("model_repository"), "--repo",  # noqa: B008
                              help="Model repository."),
    output_format: str = typer.Option("rich", "--format", help="rich or json."),
    last: int = typer.Option(5, "--last", min=0, help="Audit records to show."),
) -> None:
    """Show the rollout of MODEL: phase, step, weight, last verdict, who drives it."""
    show_status(model, _store(model, repo), last=last, output_format=output_format,
                commands="triton-ops rollout")


def _resume_target(model: str, repo: Path, url: str | None) -> Any:
    store = _store(model, repo)
    options = _target_options(store)
    state = store.load()
    envelope = Path(options["envelope"]) if options.get("envelope") else None
    envelopes = Path(options.get("envelopes") or "envelopes")
    envelope_obj = _load_envelope(model, repo / model, envelope, envelopes,
                                  state.spec.canary if state else None)
    requests = Path(options["requests"]) if options.get("requests") else None
    return _target(model, repo, url or options.get("url"), envelope_obj, requests,
                   float(options.get("rate") or 100.0), int(options.get("concurrency") or 4),
                   float(options.get("timeout_s") or 10.0))


@rollout_app.command("resume")
def resume(
    model: str = typer.Argument(..., help="Model name."),
    repo: Path = typer.Option(Path("model_repository"), "--repo",  # noqa: B008
                              help="Model repository."),
    url: str = typer.Option(None, "--url", help="gRPC HOST:PORT (default: the one the "
                            "rollout was started with)."),
    output_format: str = typer.Option("rich", "--format", help="rich or json."),
) -> None:
    """Take over a rollout whose driving process died, from its persisted state."""
    from triton_ops.rollout.engine import Engine, RolloutRefused, exit_code
    from triton_ops.rollout.store import StoreError

    printer = RolloutPrinter(output_format)
    try:
        with _resume_target(model, repo, url) as target, _interrupted(model, target.store):
            state = Engine(target, listener=printer).resume()
    except (RolloutRefused, StoreError) as exc:
        raise fail(f"refused: {exc}") from None
    code = exit_code(state)
    printer.final(state, code)
    raise typer.Exit(code)


def _command(model: str, repo: Path, url: str | None, action: str, output_format: str,
             wait_s: float) -> None:
    import time

    from triton_ops.rollout.engine import Engine, RolloutRefused, exit_code
    from triton_ops.rollout.store import StoreError

    store = _store(model, repo)
    printer = RolloutPrinter(output_format)
    try:
        state = store.load()
        if state is None:
            raise fail(f"no rollout of {model}")
        if state.phase.terminal:
            # Nothing left to do: abort is satisfied, promote reports whether it promoted.
            code = exit_code(state) if action == "promote" else EXIT_OK
            printer.final(state, code)
            raise typer.Exit(code)
        if store.is_locked():
            # The driving process acts on it between two windows.
            from triton_ops.rollout.state import Command

            store.send_command(Command(action=action, by=who()))  # type: ignore[arg-type]
            typer.echo(f"{action} sent to the process driving the rollout "
                       f"({store.owner()}); waiting for it to act", err=True)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and store.pending_command():
                time.sleep(0.2)
            state = store.load() or state
            if store.pending_command():
                typer.echo("the driving process has not picked it up yet; it will at the "
                           "end of the current window (`rollout status` shows progress)",
                           err=True)
            printer.final(state, EXIT_OK)
            raise typer.Exit(EXIT_OK)
        with _resume_target(model, repo, url) as target:
            state, _ = Engine(target, listener=printer).command(action, by=who())
    except (RolloutRefused, StoreError) as exc:
        raise fail(str(exc)) from None
    code = exit_code(state)
    printer.final(state, code)
    raise typer.Exit(code if action == "promote" else EXIT_OK)


@rollout_app.command("abort")
def abort(
    model: str = typer.Argument(..., help="Model name."),
    repo: Path = typer.Option(Path("model_repository"), "--repo",  # noqa: B008
                              help="Model repository."),
    url: str = typer.Option(None, "--url", help="gRPC HOST:PORT (default: as started)."),
    output_format: str = typer.Option("rich", "--format", help="rich or json."),
    wait: float = typer.Option(30.0, "--wait", help="Seconds to wait for a driving process."),
) -> None:
    """Abort the rollout of MODEL: roll back to stable (from any shell)."""
    _command(model, repo, url, "abort", output_format, wait)


@rollout_app.command("promote")
def promote(
    model: str = typer.Argument(..., help="Model name."),
    repo: Path = typer.Option(Path("model_repository"), "--repo",  # noqa: B008
                              help="Model repository."),
    url: str = typer.Option(None, "--url", help="gRPC HOST:PORT (default: as started)."),
    output_format: str = typer.Option("rich", "--format", help="rich or json."),
    wait: float = typer.Option(30.0, "--wait", help="Seconds to wait for a driving process."),
) -> None:
    """Confirm promotion of a paused rollout (--confirm), or skip the remaining analysis."""
    _command(model, repo, url, "promote", output_format, wait)


# -- rollback -----------------------------------------------------------------------------

def rollback(
    model: str = typer.Argument(..., help="Model name."),
    to: int = typer.Option(None, "--to", help="Version to serve (default: the last "
                           "known-good sealed version before the current one)."),
    repo: Path = typer.Option(Path("model_repository"), "--repo",  # noqa: B008
                              help="Model repository."),
    url: str = typer.Option(None, "--url", help="gRPC HOST:PORT of the running Triton."),
    envelope: Path = typer.Option(None, "--envelope", help="Envelope file."),  # noqa: B008
    envelopes: Path = typer.Option(Path("envelopes"), "--envelopes",  # noqa: B008
                                   help="Folder of envelopes."),
) -> None:
    """Return fast to the last known-good sealed version (no analysis; golden probe only)."""
    import time

    from triton_ops.repository.seal import verify_version
    from triton_ops.rollout.store import RolloutLocked
    from triton_ops.rollout.target import TargetError

    store = _store(model, repo)
    state = store.load()
    if state is not None and not state.phase.terminal:
        # A rollout is open: rolling back IS aborting it (stable is the known-good).
        if to is not None and to not in state.spec.stable:
            raise fail(f"a rollout of {model} is open (stable {state.spec.stable}); "
                        f"abort it first, then `rollback --to {to}`")
        _command(model, repo, url, "abort", "rich", 30.0)
        return
    envelope_obj = _load_envelope(model, repo / model, envelope, envelopes, to)
    with _target(model, repo, url, envelope_obj, None, 10.0, 1, 10.0) as target:
        try:
            serving = target.serving_versions()
        except TargetError as exc:
            raise fail(str(exc)) from None
        if to is None:
            candidates = [versions for versions in reversed(store.known_good())
                          if versions != serving]
            if not candidates:
                raise fail(f"no known-good version of {model} other than {serving} is "
                            "recorded; give --to N")
            versions = candidates[0]
        else:
            versions = [to]
        problems = [p for v in versions for p in verify_version(repo / model, v)]
        if problems:
            raise fail("refused: " + "; ".join(problems))
        try:
            with store.lock():
                target.restore(versions)
        except TargetError as exc:
            raise fail(f"rollback failed, {serving} still serve: {exc}", EXIT_FAILED) \
                from None
        except RolloutLocked as exc:
            raise fail(str(exc)) from None
    store.append_audit({"event": "rollback", "model": model, "from": serving,
                        "to": versions, "by": who(), "time": time.time(),
                        "reason": f"manual rollback {serving} -> {versions}"})
    store.record_known_good(versions)
    typer.echo(f"{model}: serving {versions} (was {serving})")


def register(app: typer.Typer) -> None:
    """Add this capability's commands to the main app."""
    app.command("publish")(publish)
    app.add_typer(rollout_app, name="rollout")
    app.command("rollback")(rollback)
