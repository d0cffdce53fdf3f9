"""CLI commands of the rollout capability: publish, rollout (start/status/resume/abort/promote),
rollback.

    triton-ops publish MODEL N
    triton-ops rollout MODEL --canary N [--steps 10,25,50,100] [--interval 60s] [--confirm]
    triton-ops rollout status|resume|abort|promote MODEL
    triton-ops rollback MODEL [--to N]

`--target k8s` runs a rollout on a release of the triton chart (the `triton-ops k8s`
commands); `--target single` (the default) on one Triton. Exit codes of `rollout` and
`rollback`: 0 promoted (or restored), 1 rolled back or failed, 2 refused before starting
(unsealed or tampered version, another rollout running, bad arguments). Heavy modules
(tritonclient, numpy, rich) load inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from triton_ops.cli import k8s, targets
from triton_ops.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    AnalysisOptions,
    RolloutPrinter,
    check_output_format,
    envelope_file,
    fail,
    load_envelope,
    option_default,
    option_groups,
    option_names,
    server_url,
    show_status,
    who,
)
from triton_ops.cli.targets import ClusterOptions, K8sPacing, K8sRelease, TargetOption

# The single Triton's model repository (publish, rollout, rollback).
RepositoryOption = Annotated[Path, typer.Option("--repo", help="Model repository.")]
REPOSITORY = Path("model_repository")
# The options of `rollout start` that only one target takes.
SINGLE_START_OPTIONS = ("rate", "concurrency", "requests_file", "url", "timeout")
K8S_START_OPTIONS = option_names(K8sRelease, K8sPacing)
# ... and of status, resume, abort, promote.
SINGLE_FOLLOW_UP_OPTIONS = ("repo", "url", "wait")
K8S_FOLLOW_UP_OPTIONS = (*option_names(ClusterOptions), "prometheus")


class _RolloutGroup(TyperGroup):
    """`rollout ARGS` is `rollout start ARGS` unless ARGS start with a command (status...)."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["start", *args]
        return super().parse_args(ctx, args)


rollout_app = typer.Typer(
    cls=_RolloutGroup,
    no_args_is_help=True,
    help="Canary rollout of a sealed model version with automatic analysis and rollback.\n\n"
    "Start one with `triton-ops rollout MODEL --canary N`; then `status`, `resume`, `abort`, "
    "`promote` work from any shell.",
)


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
    repo: RepositoryOption = REPOSITORY,
    envelope: Path = typer.Option(None, "--envelope",  # noqa: B008
                                  help="Envelope to record (default envelopes/MODEL.yaml)."),
    envelopes: Path = typer.Option(Path("envelopes"), "--envelopes",  # noqa: B008
                                   help="Folder of envelopes."),
) -> None:
    """Seal version N of MODEL: a sha256 manifest of every file under MODEL/N/ plus the config
    and envelope, in MODEL/.triton-ops/seals/N.json. Publishing N again with other content is
    refused."""
    from triton_ops.fileio import WriteError
    from triton_ops.repository.seal import SealError
    from triton_ops.repository.seal import publish as seal_version

    model_dir = targets.require_model_dir(repo, model)
    try:
        result = seal_version(model_dir, version, envelope_file(model, envelope, envelopes))
    except SealError as exc:
        raise fail(str(exc)) from None
    except WriteError as exc:  # it names the seal
        raise fail(str(exc), EXIT_FAILED) from None
    if result.created:
        typer.echo(f"sealed {model} version {version}: {result.files} files -> "
                   f"{result.manifest_path}")
    else:
        typer.echo(f"{model} version {version} is already sealed with this content "
                   f"({result.manifest_path})")


# -- rollout ------------------------------------------------------------------------------

@rollout_app.command("start", help="Start a canary rollout (same as `rollout MODEL --canary N`).")
@option_groups()
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
                            "(explicit model control). Default: start an embedded one.",
                            callback=server_url),
    repo: RepositoryOption = REPOSITORY,
    envelope: Path = typer.Option(None, "--envelope", help="Envelope file."),  # noqa: B008
    envelopes: Path = typer.Option(Path("envelopes"), "--envelopes",  # noqa: B008
                                   help="Folder of envelopes."),
    timeout: str = typer.Option("10s", "--timeout", help="Per-request timeout."),
    output_format: str = typer.Option("rich", "--format", help="rich or json."),
    target: TargetOption = "single",
    *,
    release: K8sRelease,
    pacing: K8sPacing,
    ctx: typer.Context,
) -> None:
    """Roll out sealed version N of MODEL next to stable, step by step, with analysis."""
    targets.choose_target(ctx, target, single_only=SINGLE_START_OPTIONS,
                          k8s_only=K8S_START_OPTIONS)
    check_output_format(output_format)
    if target == "k8s":
        interval = option_default(ctx, "interval", interval, targets.K8S_INTERVAL)
        min_requests = option_default(ctx, "min_requests", min_requests,
                                      targets.K8S_MIN_REQUESTS)
    analysis = AnalysisOptions.parse(
        steps=steps, interval=interval, p99_slack=p99_slack, min_requests=min_requests,
        failure_limit=failure_limit, max_inconclusive=max_inconclusive, confirm=confirm,
        shadow_samples=shadow_samples, max_p99_ratio=max_p99_ratio)
    if target == "k8s":
        # --repo is the served repository on one Triton; for k8s a local copy, if any.
        k8s.start_on_kubernetes(model, canary, stable, analysis, release, pacing,
                                repo=option_default(ctx, "repo", repo, None),
                                envelope=envelope, envelopes=envelopes,
                                output_format=output_format)
    model_dir = targets.require_model_dir(repo, model)
    envelope_obj = _load_envelope(model, model_dir, envelope, envelopes, canary)
    options = targets.single_options(url=url, repo=repo, rate=rate, concurrency=concurrency,
                                     requests=requests_file, timeout=timeout,
                                     envelope=envelope, envelopes=envelopes)
    targets.start_rollout("single", model, canary, stable, analysis, envelope_obj, options,
                          output_format)


@rollout_app.command("status")
@option_groups()
def status(
    model: str = typer.Argument(..., help="Model name."),
    repo: RepositoryOption = REPOSITORY,
    output_format: str = typer.Option("rich", "--format", help="rich or json."),
    last: int = typer.Option(5, "--last", min=0, help="Audit records to show."),
    target: TargetOption = "single",
    *,
    cluster: ClusterOptions,
    ctx: typer.Context,
) -> None:
    """Show the rollout of MODEL: phase, step, weight, last verdict, who drives it."""
    from triton_ops.rollout.store import StoreError

    targets.choose_target(ctx, target, single_only=SINGLE_FOLLOW_UP_OPTIONS,
                          k8s_only=K8S_FOLLOW_UP_OPTIONS)
    if target == "k8s":
        show_status(model, targets.open_store("k8s", model, cluster=cluster.connect()),
                    last=last, output_format=output_format, commands=targets.COMMANDS[target])
        return
    store = targets.open_store("single", model, repo=repo)
    try:
        go_on = targets.how_to_go_on("single", model, store.target_options())
    except StoreError as exc:
        raise fail(str(exc)) from None
    show_status(model, store, last=last, output_format=output_format,
                commands=targets.COMMANDS[target], go_on=go_on)


def _on_kubernetes(ctx: typer.Context, target: str, model: str, action: str,
                   cluster: ClusterOptions, prometheus: str | None, output_format: str) -> bool:
    """Run `action` (resume, abort, promote) as the `k8s` commands do when --target is k8s
    (it exits, or returns True); False for the single Triton."""
    targets.choose_target(ctx, target, single_only=SINGLE_FOLLOW_UP_OPTIONS,
                          k8s_only=K8S_FOLLOW_UP_OPTIONS)
    if target != "k8s":
        return False
    k8s.drive(model, action, cluster, prometheus, output_format)
    return True


def _server_to_go_on(model: str, state: Any, options: dict[str, Any], url: str | None,
                     action: str) -> str | None:
    """The server on which to `action` (resume, promote, abort) the open rollout of `model`:
    --url, else the one it was started with. An embedded server stops with the process that
    started it (its watchdog stops it even when that process is killed), so a rollout that
    ran on one is refused without --url: a new embedded server would lack its canary, and
    the missing version would be judged a failure of the canary. Only abort goes on there
    (None: a new embedded server), since rolling back serves stable wherever it runs."""
    if url or options.get("url"):
        return url or options.get("url")
    if action == "abort":
        return None
    how = ("it ran on an embedded Triton server, which stopped with the process that drove "
           "it" if options else "how it reached its Triton server is not recorded")
    raise fail(f"refused: the rollout of {model} to version {state.spec.canary} "
               f"({state.phase.value} at {state.weight}%) cannot {action} without --url: "
               f"{how}. Pass --url HOST:PORT of a running Triton (explicit model control) "
               f"that serves versions {state.needs_ready} of {model}, or roll back with "
               f"`triton-ops rollout abort {model}`")


def _recorded_target(model: str, repo: Path, state: Any, options: dict[str, Any],
                     server: str | None) -> Any:
    """The single-Triton target of the open rollout: its recorded options, on `server`."""
    envelope = Path(options["envelope"]) if options.get("envelope") else None
    envelopes = Path(options.get("envelopes") or "envelopes")
    envelope_obj = _load_envelope(model, repo / model, envelope, envelopes, state.spec.canary)
    return targets.open_target("single", model, envelope_obj,
                               {**options, "repo": str(repo), "url": server})


def _require_ready(target: Any, state: Any, model: str) -> None:
    """Refuse (exit 2, nothing changed) when the server lacks a version the rollout's phase
    needs ready: it is not the server the rollout ran on, or that server restarted."""
    from triton_ops.rollout.target import TargetError

    try:
        ready = target.serving_versions()
    except TargetError as exc:
        raise fail(f"refused: {exc}") from None
    missing = [v for v in state.needs_ready if v not in ready]
    if missing:
        raise fail(f"refused: versions {missing} of {model} are not ready on "
                   f"{target.describe()} (ready: {ready}); the rollout ({state.phase.value} "
                   f"at {state.weight}%) needs {state.needs_ready} there. It ran on another "
                   "server, or this one restarted: pass the --url of a Triton that serves "
                   f"versions {state.needs_ready}, or roll back with `triton-ops rollout "
                   f"abort {model}`")


def _open_rollout(store: Any, model: str) -> tuple[Any, dict[str, Any], bool]:
    """The persisted state (None when no rollout ran), the recorded target options, and
    whether a live process drives it; exit 2 naming the file that cannot be read."""
    from triton_ops.rollout.store import StoreError

    try:
        state = store.load()
        if state is None or state.phase.terminal:
            return state, {}, False
        return state, store.target_options(), store.is_locked()
    except StoreError as exc:
        raise fail(str(exc)) from None


@rollout_app.command("resume")
@option_groups()
def resume(
    model: str = typer.Argument(..., help="Model name."),
    repo: RepositoryOption = REPOSITORY,
    url: str = typer.Option(None, "--url", help="gRPC HOST:PORT (default: the one the "
                            "rollout was started with; required after the embedded one).",
                            callback=server_url),
    output_format: str = typer.Option("rich", "--format", help="rich or json."),
    target: TargetOption = "single",
    *,
    cluster: ClusterOptions,
    prometheus: targets.PrometheusOverride = None,
    ctx: typer.Context,
) -> None:
    """Take over a rollout whose driving process died, from its persisted state."""
    from triton_ops.rollout.engine import Engine, RolloutRefused, exit_code

    if _on_kubernetes(ctx, target, model, "resume", cluster, prometheus, output_format):
        return
    store = targets.open_store("single", model, repo=repo)
    printer = RolloutPrinter(output_format)
    state, options, driven = _open_rollout(store, model)
    if state is None:
        raise fail(f"refused: no rollout of {model} to resume")
    if driven:
        raise fail(f"refused: another triton-ops process drives this rollout "
                   f"({store.owner()}); follow it with `triton-ops rollout status {model}`")
    if not state.phase.terminal:
        server = _server_to_go_on(model, state, options, url, "resume")
        with _recorded_target(model, repo, state, options, server) as rollout_target, \
                targets.interrupted(model, rollout_target.store, "single"):
            _require_ready(rollout_target, state, model)
            try:
                state = Engine(rollout_target, listener=printer).resume()
            except RolloutRefused as exc:
                raise fail(f"refused: {exc}") from None
    code = exit_code(state)
    printer.final(state, code)
    raise typer.Exit(code)


def _command(model: str, repo: Path, url: str | None, action: str, output_format: str,
             wait_s: float) -> None:
    from triton_ops.rollout.engine import Engine, RolloutRefused, exit_code

    store = targets.open_store("single", model, repo=repo)
    printer = RolloutPrinter(output_format)
    state, options, driven = _open_rollout(store, model)
    if state is None:
        raise fail(f"no rollout of {model}")
    if state.phase.terminal:
        # Nothing left to do: abort is satisfied, promote reports whether it promoted.
        code = exit_code(state) if action == "promote" else EXIT_OK
        printer.final(state, code)
        raise typer.Exit(code)
    if driven:
        _send_to_driver(store, state, action, printer, wait_s)
    server = _server_to_go_on(model, state, options, url, action)
    with _recorded_target(model, repo, state, options, server) as target, \
            targets.interrupted(model, target.store, "single"):
        if action == "promote":
            _require_ready(target, state, model)
        try:
            state, _ = Engine(target, listener=printer).command(action, by=who())
        except RolloutRefused as exc:
            raise fail(str(exc)) from None
    code = exit_code(state)
    printer.final(state, code)
    raise typer.Exit(code if action == "promote" else EXIT_OK)


def _send_to_driver(store: Any, state: Any, action: str, printer: RolloutPrinter,
                    wait_s: float) -> None:
    """Leave `action` to the live process driving the rollout, wait up to `wait_s` for it
    to pick it up, and exit 0."""
    import time

    from triton_ops.rollout.state import Command
    from triton_ops.rollout.store import StoreError

    try:
        store.send_command(Command(action=action, by=who()))  # type: ignore[arg-type]
        typer.echo(f"{action} sent to the process driving the rollout ({store.owner()}); "
                   "waiting for it to act", err=True)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and store.pending_command():
            time.sleep(0.2)
        state = store.load() or state
        if store.pending_command():
            typer.echo("the driving process has not picked it up yet; it will at the end "
                       "of the current window (`rollout status` shows progress)", err=True)
    except StoreError as exc:
        raise fail(str(exc)) from None
    printer.final(state, EXIT_OK)
    raise typer.Exit(EXIT_OK)


def _register_command(action: str, summary: str) -> None:
    """`rollout abort` and `rollout promote`: the same options, each its own action."""

    @rollout_app.command(action, help=summary)
    @option_groups()
    def command(
        model: str = typer.Argument(..., help="Model name."),
        repo: RepositoryOption = REPOSITORY,
        url: str = typer.Option(None, "--url", help="gRPC HOST:PORT (default: as started).",
                                callback=server_url),
        output_format: str = typer.Option("rich", "--format", help="rich or json."),
        wait: float = typer.Option(30.0, "--wait",
                                   help="Seconds to wait for a driving process."),
        target: TargetOption = "single",
        *,
        cluster: ClusterOptions,
        prometheus: targets.PrometheusOverride = None,
        ctx: typer.Context,
    ) -> None:
        if not _on_kubernetes(ctx, target, model, action, cluster, prometheus, output_format):
            _command(model, repo, url, action, output_format, wait)


_register_command("abort", "Abort the rollout of MODEL: roll back to stable (from any shell).")
_register_command("promote", "Confirm promotion of a paused rollout (--confirm), or skip the "
                  "remaining analysis.")


# -- rollback -----------------------------------------------------------------------------

def rollback(
    model: str = typer.Argument(..., help="Model name."),
    to: int = typer.Option(None, "--to", help="Version to serve (default: the last "
                           "known-good sealed version before the current one)."),
    repo: RepositoryOption = REPOSITORY,
    url: str = typer.Option(None, "--url", help="gRPC HOST:PORT of the running Triton.",
                            callback=server_url),
    envelope: Path = typer.Option(None, "--envelope", help="Envelope file."),  # noqa: B008
    envelopes: Path = typer.Option(Path("envelopes"), "--envelopes",  # noqa: B008
                                   help="Folder of envelopes."),
) -> None:
    """Return fast to the last known-good sealed version (no analysis; golden probe only)."""
    import time

    from triton_ops.repository.seal import verify_version
    from triton_ops.rollout.store import StoreError
    from triton_ops.rollout.target import TargetError

    store = targets.open_store("single", model, repo=repo)
    try:
        state = store.load()
        # Read before a server is started or reached: a history that could not be
        # extended afterwards is refused before anything changes.
        history = store.known_good()
    except StoreError as exc:
        raise fail(str(exc)) from None
    if state is not None and not state.phase.terminal:
        # A rollout is open: rolling back IS aborting it (stable is the known-good).
        if to is not None and to not in state.spec.stable:
            raise fail(f"a rollout of {model} is open (stable {state.spec.stable}); "
                       f"abort it first, then `rollback --to {to}`")
        _command(model, repo, url, "abort", "rich", 30.0)
        return
    envelope_obj = _load_envelope(model, repo / model, envelope, envelopes, to)
    options = {"url": url, "repo": str(repo), "rate": 10.0, "concurrency": 1, "timeout_s": 10.0}
    with targets.open_target("single", model, envelope_obj, options) as target:
        try:
            serving = target.serving_versions()
        except TargetError as exc:
            raise fail(str(exc)) from None
        if to is None:
            candidates = [versions for versions in reversed(history) if versions != serving]
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
        except StoreError as exc:  # the lock is held, or cannot be taken
            raise fail(str(exc)) from None
    try:
        store.append_audit({"event": "rollback", "model": model, "from": serving,
                            "to": versions, "by": who(), "time": time.time(),
                            "reason": f"manual rollback {serving} -> {versions}"})
        store.record_known_good(versions)
    except StoreError as exc:
        raise fail(f"{model}: serving {versions} (was {serving}), but recording it failed: "
                   f"{exc}", EXIT_FAILED) from None
    typer.echo(f"{model}: serving {versions} (was {serving})")


def register(app: typer.Typer) -> None:
    """Add this capability's commands to the main app."""
    app.command("publish")(publish)
    app.add_typer(rollout_app, name="rollout")
    app.command("rollback")(rollback)
