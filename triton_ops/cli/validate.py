"""CLI commands of the validate capability: validate, generate, import, schema.

Only typer is imported at module level: `triton-ops --help` and `validate` must start fast,
so pydantic models, protobuf and rich load inside the commands that use them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from triton_ops.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, fail, write_output


def validate(
    paths: list[Path] = typer.Argument(  # noqa: B008 - typer declares options as defaults
        None, help="Envelope files, envelope folders, model repositories, model folders or "
        "config.pbtxt files. Default: envelopes/ and model_repository/.", show_default=False),
    output_format: str = typer.Option("human", "--format", "-f",
                                      help="human, json, github or junit"),
    strict: bool = typer.Option(False, "--strict", help="Warnings fail the run too."),
    repo: Path = typer.Option(None, "--repo",  # noqa: B008
                              help="Model repository envelopes are compared with "
                              "(default: model_repository/ if it exists).", show_default=False),
) -> None:
    """Check envelopes and config.pbtxt files; exit 1 on errors (the CI gate)."""
    from triton_ops.validate.report import FORMATS

    if output_format not in FORMATS:
        raise fail(f"unknown format {output_format!r}; use one of {', '.join(FORMATS)}",
                   EXIT_USAGE, prefix="")
    from triton_ops.validate.gate import UsageProblem, validate_paths
    from triton_ops.validate.report import (
        exit_code,
        render_github,
        render_human,
        render_json,
        render_junit,
    )

    try:
        result = validate_paths(list(paths or []), repo)
    except UsageProblem as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    if output_format == "json":
        typer.echo(render_json(result))
    elif output_format == "github":
        typer.echo(render_github(result))
    elif output_format == "junit":
        typer.echo(render_junit(result, strict))
    else:
        render_human(result, sys.stdout)
    raise typer.Exit(exit_code(result, strict))


def generate(
    envelopes: Path = typer.Option(Path("envelopes"), "--envelopes",  # noqa: B008
                                   help="Envelope folder (or one envelope file)."),
    repo: Path = typer.Option(Path("model_repository"), "--repo",  # noqa: B008
                              help="Model repository to write <model>/config.pbtxt into."),
    check: bool = typer.Option(False, "--check", help="Write nothing; exit 1 with a diff "
                               "when a committed config.pbtxt differs from its envelope."),
) -> None:
    """Render config.pbtxt for every envelope (only files whose content changes are written)."""
    from triton_ops.fileio import WriteError
    from triton_ops.modelconfig.render import generate as run_generate
    from triton_ops.validate.gate import ENVELOPE_SUFFIXES

    if envelopes.is_dir():
        files = sorted(p for p in envelopes.iterdir()
                       if p.name.endswith(ENVELOPE_SUFFIXES) and not p.name.startswith("."))
    elif envelopes.is_file():
        files = [envelopes]
    else:
        raise fail(f"{envelopes} does not exist; give --envelopes DIR", EXIT_USAGE)
    if repo.exists() and not repo.is_dir():
        raise fail(f"{repo} is not a folder", EXIT_USAGE)
    try:
        outcomes = run_generate(files, repo, check=check)
    except WriteError as exc:  # it names the config.pbtxt
        raise fail(str(exc), EXIT_FAILED) from None
    except OSError as exc:
        raise fail(f"{exc.filename or repo}: {exc.strerror or exc}", EXIT_FAILED) from None
    failed = False
    for outcome in outcomes:
        if outcome.status == "invalid":
            failed = True
            typer.echo(f"{outcome.envelope}: not rendered:", err=True)
            for message in outcome.messages:
                typer.echo(f"  {message}", err=True)
        elif outcome.status == "drifted":
            failed = True
            typer.echo(f"{outcome.config_path}: differs from {outcome.envelope}; run "
                       "`triton-ops generate` to rewrite it")
            typer.echo(outcome.diff, nl=False)
        elif outcome.status in ("written", "created"):
            typer.echo(f"{outcome.config_path}: {outcome.status} from {outcome.envelope}")
    unchanged = sum(o.status == "unchanged" for o in outcomes)
    typer.echo(f"{len(outcomes)} envelope(s): {unchanged} config(s) already up to date")
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


def import_model(
    model_dir: Path = typer.Argument(..., help="Model folder holding config.pbtxt "  # noqa: B008
                                     "(or the config.pbtxt itself)."),
    output: str = typer.Option(None, "--output", "-o", help="Envelope file to write "
                               "(default: envelopes/<model>.yaml; '-' prints it).",
                               show_default=False),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing envelope."),
) -> None:
    """Write an envelope for an existing model so that `generate` reproduces its config."""
    from triton_ops.modelconfig.importer import ImportRefused, envelope_yaml, import_model_dir

    if not model_dir.exists():
        raise fail(f"{model_dir} does not exist", EXIT_USAGE)
    try:
        result = import_model_dir(model_dir)
    except ImportRefused as exc:
        raise fail(f"cannot import {model_dir}: {exc}", EXIT_FAILED, prefix="") from None
    source = model_dir / "config.pbtxt" if model_dir.is_dir() else model_dir
    text = envelope_yaml(result, source.as_posix())
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    if output == "-":
        typer.echo(text, nl=False)
        raise typer.Exit(EXIT_OK)
    target = Path(output) if output else Path("envelopes") / f"{result.data['name']}.yaml"
    if target.is_dir():
        raise fail(f"{target} is a folder; give the envelope file to write", EXIT_USAGE)
    if (target.exists() or target.is_symlink()) and not force:
        raise fail(f"{target} exists; pass --force to overwrite it", EXIT_FAILED)
    write_output(target, text)
    typer.echo(f"{target}: written from {source}")


def schema() -> None:
    """Print the envelope JSON Schema (for editors and yaml-language-server)."""
    import json

    from triton_ops.envelope.model import Envelope

    typer.echo(json.dumps(Envelope.model_json_schema(), indent=2))


def register(app: typer.Typer) -> None:
    """Add this capability's commands to the main app."""
    app.command("validate")(validate)
    app.command("generate")(generate)
    app.command("import")(import_model)
    app.command("schema")(schema)
