"""CLI commands of the server capability: `serve` (the embedded Triton) and `probe`."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from triton_ops.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    fail,
    port_number,
    read_envelope,
    server_url,
)

if TYPE_CHECKING:
    from triton_ops.server.local import LocalTriton


def _split_models(models: str | None) -> list[str]:
    return [m.strip() for m in (models or "").split(",") if m.strip()]


def _repository_models(repo: Path) -> list[str]:
    return sorted(p.name for p in repo.iterdir() if (p / "config.pbtxt").is_file())


def serve(
    repo: Annotated[Path, typer.Option(
        help="Model repository to serve.")] = Path("model_repository"),
    models: Annotated[str | None, typer.Option(
        help="Comma-separated models to load (default: every model in the repository; "
        "models that fail to load are reported and the rest are served).")] = None,
    grpc_port: Annotated[int | None, typer.Option(
        help="gRPC port (default: a free one).", callback=port_number)] = None,
    http_port: Annotated[int | None, typer.Option(
        help="HTTP port (default: a free one).", callback=port_number)] = None,
    metrics_port: Annotated[int | None, typer.Option(
        help="Metrics port (default: a free one).", callback=port_number)] = None,
    log_file: Annotated[Path | None, typer.Option(
        help="Server log file (default: a new file under the temp folder).")] = None,
    startup_timeout: Annotated[float, typer.Option(
        help="Seconds to wait for the server and its models.")] = 120.0,
) -> None:
    """Run the embedded Triton server in the foreground on 127.0.0.1 until Ctrl-C or SIGTERM."""
    from triton_ops.server.local import LocalTriton

    if not repo.is_dir():
        raise fail(f"model repository {repo} does not exist or is not a folder", EXIT_USAGE)
    requested = _split_models(models)
    available = _repository_models(repo)
    _refuse_unknown_models(repo, requested, available)
    to_load = requested or available
    server = LocalTriton(
        repo, models=to_load, log_path=log_file, startup_timeout_s=startup_timeout,
        grpc_port=grpc_port, http_port=http_port, metrics_port=metrics_port,
        # Keep serving the models that load; which ones failed is reported below.
        extra_args=[] if requested else ["--exit-on-error=false", "--strict-readiness=false"],
    )
    try:
        with _SigtermFlag() as sigterm:
            _start(server)
            _print_started(server, to_load)
            _serve_until_stopped(server, sigterm)
    finally:
        server.stop()
    typer.echo("tritonserver stopped")


def _refuse_unknown_models(repo: Path, requested: list[str], available: list[str]) -> None:
    unknown = [m for m in requested if m not in available]
    if unknown:
        raise fail(
            f"no model {', '.join(unknown)} in {repo}/ (models there: "
            f"{', '.join(available) or 'none'})", EXIT_USAGE)


class _SigtermFlag:
    """While entered, SIGTERM sets `received` (the serving loop then stops cleanly) instead
    of ending the process; the previous handler is restored on exit."""

    def __init__(self) -> None:
        self.received = False
        self._previous: Any = None

    def __enter__(self) -> _SigtermFlag:
        self._previous = signal.signal(signal.SIGTERM, self._on_signal)
        return self

    def __exit__(self, *exc_info: object) -> None:
        signal.signal(signal.SIGTERM, self._previous)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.received = True


def _start(server: LocalTriton) -> None:
    from triton_ops.server.local import ServerError

    try:
        server.start()
    except ServerError as exc:
        raise fail(str(exc), EXIT_FAILED) from None


def _print_started(server: LocalTriton, to_load: list[str]) -> None:
    """Where the server listens, the models it serves, and the ones that did not load."""
    from triton_ops.server.endpoints import model_states

    states = model_states(server.http_url)
    failed = [s for s in states if s.get("name") in to_load and s.get("state") != "READY"]
    typer.echo(f"tritonserver running (pid {server.pid}), repository {server.repository}")
    typer.echo(f"  grpc:    {server.grpc_url}")
    typer.echo(f"  http:    {server.http_url}")
    typer.echo(f"  metrics: {server.metrics_url}")
    typer.echo(f"  log:     {server.log_path}")
    ready = [s["name"] for s in states if s.get("state") == "READY"]
    typer.echo(f"  models:  {', '.join(ready) or 'none loaded'}")
    for state in failed:
        typer.echo(
            f"  NOT LOADED {state.get('name')}: {state.get('reason') or state.get('state')}",
            err=True)
    typer.echo("Press Ctrl-C to stop.")


def _serve_until_stopped(server: LocalTriton, sigterm: _SigtermFlag) -> None:
    """Watch the server until Ctrl-C or SIGTERM; exit 1 if it dies on its own."""
    import time

    from triton_ops.server.local import ServerError

    try:
        while not sigterm.received:
            server.check_alive()
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    except ServerError as exc:
        raise fail(str(exc), EXIT_FAILED) from None


def probe(
    model: Annotated[str, typer.Argument(help="Model to probe (its envelope holds the probe).")],
    url: Annotated[str | None, typer.Option(
        help="gRPC address HOST:PORT of a running Triton (default: start the embedded server "
        "with this model).", callback=server_url)] = None,
    envelopes: Annotated[Path, typer.Option(help="Envelope folder.")] = Path("envelopes"),
    repo: Annotated[Path, typer.Option(
        help="Model repository for the embedded server.")] = Path("model_repository"),
    version: Annotated[str, typer.Option(
        help="Model version to probe (default: the highest loaded).")] = "",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Send the envelope's golden request and compare the answer.

    Exit 0: healthy; 1: unhealthy (what differed is printed); 2: usage error.
    """
    from triton_ops.digits import is_ascii_decimal
    from triton_ops.envelope.loader import find_envelope
    from triton_ops.server.endpoints import open_server
    from triton_ops.server.local import ServerError
    from triton_ops.server.probe import ProbeResult, ProbeSetupError, probe_inputs, run_probe

    if version and not is_ascii_decimal(version):
        raise fail(f"--version must be a version number, got {version!r}", EXIT_USAGE)
    try:
        envelope_path = find_envelope(model, envelopes)
    except FileNotFoundError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    envelope = read_envelope(envelope_path, model)
    try:
        probe_inputs(envelope)  # envelope problems are usage errors, found before any server
    except ProbeSetupError as exc:
        raise fail(f"{envelope_path}: {exc}", EXIT_USAGE) from None
    if url is None and not (repo / model / "config.pbtxt").is_file():
        raise fail(
            f"no model {model!r} in {repo}/ ({repo / model / 'config.pbtxt'} is missing); "
            "pass --repo, or --url to probe a running server", EXIT_USAGE)

    try:
        with open_server(url, repo, [model]) as endpoints:
            result = run_probe(
                envelope, endpoints.grpc_url, model_name=model, model_version=version,
                timeout_s=timeout)
    except ValueError as exc:  # a malformed --url
        raise fail(str(exc), EXIT_USAGE) from None
    except ServerError as exc:
        result = ProbeResult(ok=False, model=model, version=version,
                             error=f"the embedded server could not serve it: {exc}")
    if as_json:
        typer.echo(json.dumps({
            "model": result.model, "version": result.version, "ok": result.ok,
            "differences": result.differences, "latency_s": result.latency_s,
            "error": result.error,
        }, indent=2))
    else:
        typer.echo(result.summary(), err=not result.ok)
    raise typer.Exit(EXIT_OK if result.ok else EXIT_FAILED)


def register(app: typer.Typer) -> None:
    """Add this capability's commands to the main app."""
    app.command()(serve)
    app.command()(probe)
