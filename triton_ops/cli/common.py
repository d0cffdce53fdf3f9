"""What the commands share: exit codes and failure messages, option parsers, envelope loading.

Only typer is imported at module level (the CLI starts fast); the envelope package loads
inside the functions that use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import typer

EXIT_OK = 0
EXIT_FAILED = 1  # findings, an unhealthy server, a rollout rolled back or failed
EXIT_USAGE = 2  # bad input, or refused before anything was changed
OUTPUT_FORMATS = ("rich", "json")


def fail(message: str, code: int = EXIT_USAGE, *, prefix: str = "error: ") -> typer.Exit:
    """Print `message` on stderr; return the exit to raise (`raise fail(...) from None`)."""
    typer.echo(f"{prefix}{message}", err=True)
    return typer.Exit(code)


# -- option values --------------------------------------------------------------------------

def parse_duration_s(text: str, option: str, *, allow_zero: bool = False) -> float:
    """Seconds from a duration like 30s, 2m, 500ms, or a bare number of seconds."""
    from triton_ops.envelope.units import parse_duration_us

    try:
        value = parse_duration_us(text if not text.replace(".", "", 1).isdigit()
                                  else f"{text}s")
    except (ValueError, TypeError) as exc:
        raise fail(f"{option} {text!r}: {exc}; use e.g. 30s, 2m, 500ms") from None
    if value < 0 or (value == 0 and not allow_zero):
        raise fail(f"{option} must be positive")
    return value / 1e6


def parse_int_list(text: str, option: str) -> list[int]:
    """Comma-separated integers (versions, step weights)."""
    try:
        values = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise fail(f"{option} {text!r}: give comma-separated integers, e.g. 10,25,50,100") \
            from None
    if not values:
        raise fail(f"{option} is empty")
    return values


def check_output_format(output_format: str) -> None:
    if output_format not in OUTPUT_FORMATS:
        raise fail(f"unknown format {output_format!r}; use rich or json")


# -- envelopes -------------------------------------------------------------------------------

def findings_lines(findings: Iterable[Any]) -> str:
    """One indented `file:line:column: message` line per finding."""
    return "\n".join(f"  {f.file}:{f.line}:{f.column}: {f.message}" for f in findings)


def envelope_file(model: str, envelope: Path | None, envelopes: Path) -> Path | None:
    """--envelope FILE when given (it must exist), else envelopes/MODEL.yaml if there is one."""
    from triton_ops.envelope.loader import find_envelope

    if envelope is not None:
        if not envelope.is_file():
            raise fail(f"envelope {envelope} does not exist")
        return envelope
    try:
        return find_envelope(model, envelopes)
    except FileNotFoundError:
        return None


def read_envelope(path: Path, model: str) -> Any:
    """The valid envelope in `path`; exit 2 with its findings otherwise."""
    from triton_ops.envelope.loader import EnvelopeError, require_envelope

    try:
        return require_envelope(path)
    except EnvelopeError as exc:
        raise fail(f"the envelope of {model} is invalid:\n{findings_lines(exc.findings)}") \
            from None


def load_envelope(model: str, envelope: Path | None, envelopes: Path,
                  fallback: Callable[[], Any] | None = None) -> Any:
    """The envelope from --envelope, envelopes/MODEL.yaml, or else `fallback()` (e.g. the
    one a version was sealed with); exit 2 when there is none or it is invalid."""
    path = envelope_file(model, envelope, envelopes)
    if path is not None:
        return read_envelope(path, model)
    found = fallback() if fallback is not None else None
    if found is not None:
        return found
    raise fail(f"no envelope for {model}: pass --envelope FILE or put it in "
               f"{envelopes}/{model}.yaml (the rollout reads tensors, SLO and tolerance "
               "from it)")
