"""What the commands share: exit codes and failure messages, option parsers, envelope loading,
option groups declared once for several commands, and the rollout printers.

Only typer is imported at module level (the CLI starts fast); pydantic models, rich and the
rollout package load inside the functions that use them.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import os
import socket
import typing
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any, TypeVar

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


def server_url(value: str | None) -> str | None:
    """Callback of the --url options: the server's gRPC address as HOST:PORT; a usage error
    (exit 2) saying what is wrong before anything is started or reached."""
    from triton_ops.server.endpoints import DEFAULT_GRPC_PORT, normalise_host_port

    if value is None:
        return None
    try:
        return normalise_host_port(value, DEFAULT_GRPC_PORT)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def port_number(value: int | None) -> int | None:
    """Callback of the port options: a TCP port (1-65535); a usage error (exit 2) else."""
    from triton_ops.server.ports import check_port

    if value is None:
        return None
    try:
        return check_port(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def check_output_format(output_format: str) -> None:
    if output_format not in OUTPUT_FORMATS:
        raise fail(f"unknown format {output_format!r}; use rich or json")


# -- files the commands write ----------------------------------------------------------------

def write_output(path: Path, text: str) -> None:
    """Write a file the user asked for (atomically); exit 1 naming it when that fails."""
    from triton_ops.fileio import WriteError, atomic_write_text

    try:
        atomic_write_text(path, text)
    except WriteError as exc:
        raise fail(str(exc), EXIT_FAILED) from None


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


# -- options declared once, for several commands ---------------------------------------------

Command = TypeVar("Command", bound=Callable[..., Any])


def option_groups(*, required: Collection[str] = ()) -> Callable[[Command], Command]:
    """Let a typer command take some of its options as dataclasses.

    Each parameter of the command annotated with a dataclass is replaced, in the signature
    typer reads, by that dataclass's fields (typer options in `Annotated`, or nested
    dataclasses), at the parameter's place; the command is called with the dataclass built
    from them. So options shared by several commands are declared once, in the dataclass.
    `required` names fields this command requires (they get no default).
    """

    def decorate(command: Command) -> Command:
        hints = typing.get_type_hints(command, include_extras=True)
        parameters: list[inspect.Parameter] = []
        groups: dict[str, type] = {}
        for parameter in inspect.signature(command).parameters.values():
            hint = hints.get(parameter.name, parameter.annotation)
            if dataclasses.is_dataclass(hint):
                groups[parameter.name] = typing.cast(type, hint)
                parameters += _group_parameters(typing.cast(type, hint), required)
            else:
                parameters.append(parameter.replace(
                    annotation=hint, kind=inspect.Parameter.KEYWORD_ONLY))

        @functools.wraps(command)
        def call(**values: Any) -> Any:
            for name, group in groups.items():
                values[name] = _build_group(group, values)
            return command(**values)

        call.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        call.__annotations__ = {p.name: p.annotation for p in parameters}
        return typing.cast(Command, call)

    return decorate


def _group_parameters(group: type, required: Collection[str]) -> list[inspect.Parameter]:
    hints = typing.get_type_hints(group, include_extras=True)
    out: list[inspect.Parameter] = []
    for field in dataclasses.fields(group):
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):
            out += _group_parameters(typing.cast(type, hint), required)
            continue
        if field.name in required:
            default: Any = inspect.Parameter.empty
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = field.default
        out.append(inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY,
                                     default=default, annotation=hint))
    return out


def _build_group(group: type, values: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(group)
    return group(**{
        field.name: (_build_group(hints[field.name], values)
                     if dataclasses.is_dataclass(hints[field.name])
                     else values.pop(field.name))
        for field in dataclasses.fields(group)})


def option_names(*groups: type) -> list[str]:
    """The parameter names option groups add to a command (nested groups included)."""
    names: list[str] = []
    for group in groups:
        hints = typing.get_type_hints(group)
        for field in dataclasses.fields(group):
            if dataclasses.is_dataclass(hints[field.name]):
                names += option_names(hints[field.name])
            else:
                names.append(field.name)
    return names


def given_options(ctx: typer.Context, names: Iterable[str]) -> list[str]:
    """The options among `names` (parameter names) set on the command line, as flags."""
    wanted = set(names)
    return [param.opts[0] for param in ctx.command.params
            if param.name in wanted and _source(ctx, param.name) == "COMMANDLINE"]


def option_default(ctx: typer.Context, name: str, value: Any, default: Any) -> Any:
    """`value`, unless the option `name` was left at its declared default: then `default`."""
    return default if _source(ctx, name) in ("DEFAULT", None) else value


def _source(ctx: typer.Context, name: str) -> str | None:
    """Where the value of parameter `name` came from: COMMANDLINE, ENVIRONMENT, DEFAULT..."""
    source = ctx.get_parameter_source(name)
    return source.name if source is not None else None


# -- rollouts ----------------------------------------------------------------------------------

def who() -> str:
    """Who acts, for the audit log: user@host."""
    user = os.environ.get("USER") or os.environ.get("LOGNAME") or "someone"
    return f"{user}@{socket.gethostname()}"


@dataclasses.dataclass(frozen=True)
class AnalysisOptions:
    """How a rollout steps and judges, as given on the command line (parsed)."""

    steps: list[int]
    interval_s: float
    min_requests: int
    failure_limit: int
    max_inconclusive: int
    confirm: bool
    shadow_samples: int
    max_p99_ratio: float
    p99_slack_us: float

    @classmethod
    def parse(cls, *, steps: str, interval: str, p99_slack: str, **values: Any
              ) -> AnalysisOptions:
        return cls(steps=parse_int_list(steps, "--steps"),
                   interval_s=parse_duration_s(interval, "--interval"),
                   p99_slack_us=parse_duration_s(p99_slack, "--p99-slack",
                                                 allow_zero=True) * 1e6,
                   **values)


def rollout_spec(model: str, canary: int, stable: list[int], analysis: AnalysisOptions,
                 envelope: Any) -> Any:
    """The RolloutSpec of a new rollout (thresholds from the envelope's SLO, then the
    options); exit 2 naming the field when it is not valid."""
    from pydantic import ValidationError

    from triton_ops.rollout.analysis import policy_from_envelope
    from triton_ops.rollout.state import RolloutSpec, first_validation_error

    try:
        return RolloutSpec(
            model=model, stable=stable or [0], canary=canary, steps=analysis.steps,
            interval_s=analysis.interval_s, failure_limit=analysis.failure_limit,
            max_inconclusive=analysis.max_inconclusive, confirm=analysis.confirm,
            shadow_samples=analysis.shadow_samples,
            policy=policy_from_envelope(envelope, min_requests=analysis.min_requests,
                                        max_p99_ratio=analysis.max_p99_ratio,
                                        p99_slack_us=analysis.p99_slack_us,
                                        min_agreement_samples=min(5, analysis.shadow_samples)))
    except ValidationError as exc:
        raise fail(first_validation_error(exc)) from None


class RolloutPrinter:
    """The engine's listener: rich lines for people, or nothing until the final JSON
    document."""

    def __init__(self, output_format: str):
        self.json = output_format == "json"
        self.records: list[dict[str, Any]] = []
        self._console: Any = None

    @property
    def console(self) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self.json, highlight=False, soft_wrap=True)
        return self._console

    def __call__(self, state: Any, record: Any) -> None:
        data = record.model_dump(mode="json")
        self.records.append(data)
        if self.json:
            return
        colour = {"Succeeded": "green", "RolledBack": "yellow", "Failed": "red",
                  "RollingBack": "yellow", "Paused": "cyan"}.get(state.phase.value, "blue")
        verdict = f" [{data['verdict']}]" if data.get("verdict") else ""
        bar = "#" * (state.weight // 10) + "." * (10 - state.weight // 10)
        from rich.markup import escape

        self.console.print(
            f"[{colour}]{state.phase.value:<12}[/] step {state.step + 1}/"
            f"{len(state.spec.steps)} {escape(f'[{bar}]')} {state.weight:>3}%{escape(verdict)} "
            f"{escape(record.reason)}")

    def final(self, state: Any, code: int) -> None:
        if self.json:
            typer.echo(json.dumps({
                "model": state.spec.model, "canary": state.spec.canary,
                "stable": state.spec.stable, "phase": state.phase.value,
                "serving": state.serving, "reason": state.reason, "exit_code": code,
                "decisions": self.records,
            }, indent=2))
            return
        colour = "green" if code == 0 else "red"
        from rich.markup import escape

        self.console.print(f"[bold {colour}]{state.phase.value}[/]: {escape(state.reason)}")


def show_status(model: str, store: Any, *, last: int, output_format: str,
                commands: str, go_on: str | None = None) -> None:
    """Print the rollout of `model` recorded in `store`: phase, step, weight, last verdict,
    who drives it, the last audit records. `commands` is how the follow-up commands are
    spelled for this target (e.g. `triton-ops rollout`), `go_on` what to do when nothing
    drives it (default: resume). Exit 1 when none is recorded."""
    from triton_ops.rollout.store import StoreError

    try:
        state = store.load()
        if state is None:
            raise fail(f"no rollout of {model} recorded in {store.directory}", EXIT_FAILED)
        driven = store.is_locked()
        owner = store.owner() if driven else None
        audit = store.read_audit()[-last:] if last else []
    except StoreError as exc:
        raise fail(str(exc)) from None
    if output_format == "json":
        typer.echo(json.dumps({"state": state.model_dump(mode="json"), "driven": driven,
                               "owner": owner, "serving": state.serving, "audit": audit},
                              indent=2))
        return
    from rich.console import Console
    from rich.markup import escape

    console = Console(highlight=False, soft_wrap=True)
    spec = state.spec
    console.print(f"[bold]{model}[/]: version {spec.canary} over stable {spec.stable} "
                  f"({escape(str(store.directory))})")
    go_on = go_on or f"run `{commands} resume {model}`"
    drive = ("" if state.phase.terminal else f" (driven by {owner})" if driven else
             f" (NOT DRIVEN: {go_on})")
    console.print(f"  phase     {state.phase.value}{escape(drive)}")
    console.print(f"  step      {state.step + 1}/{len(spec.steps)} at weight {state.weight}%"
                  f" (steps {spec.steps}, {spec.interval_s:g}s windows)")
    console.print(f"  windows   {state.windows} analyzed, {state.failures} failed "
                  f"(limit {spec.failure_limit})")
    if state.last_verdict is not None:
        console.print(f"  verdict   {state.last_verdict.result.value}: "
                      f"{escape(state.last_verdict.reason)}")
    console.print(f"  reason    {escape(state.reason)}")
    for record in audit:
        weight = f"{record['weight']:>3}%" if "weight" in record else "    "
        console.print(f"    {record.get('phase') or record.get('event', ''):<12} {weight} "
                      f"{escape(str(record.get('reason', '')))}")
