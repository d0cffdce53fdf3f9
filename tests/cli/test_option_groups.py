"""Options declared once in a dataclass and shared by commands (`option_groups`), and the
choice of the rollout target on the command line."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from triton_ops.cli.common import given_options, option_groups, option_names
from triton_ops.cli.main import app

runner = CliRunner()


@dataclass(frozen=True)
class Where:
    host: Annotated[str | None, typer.Option("--host", help="Host.")] = None
    port: Annotated[int, typer.Option("--port", min=1)] = 80


@dataclass(frozen=True)
class Outer:
    name: Annotated[str | None, typer.Option("--name")] = None
    where: Where = field(default_factory=Where)
    tags: Annotated[list[str], typer.Option("--tag")] = field(default_factory=list)


def toy_app(required: tuple[str, ...] = ()) -> tuple[typer.Typer, list[object]]:
    seen: list[object] = []
    toy = typer.Typer()

    @toy.command("go")
    @option_groups(required=required)
    def go(ctx: typer.Context, *, first: int = typer.Option(1, "--first"), outer: Outer,
           last: str = typer.Option("z", "--last")) -> None:
        """Go somewhere."""
        seen.extend([first, outer, last, given_options(ctx, option_names(Outer))])

    @toy.command("other")
    def other() -> None:
        """Another command, so that `go` is a subcommand."""

    return toy, seen


def test_group_fields_become_options_in_place_and_come_back_as_the_dataclass() -> None:
    toy, seen = toy_app()
    result = runner.invoke(toy, ["go", "--port", "8080", "--tag", "a", "--tag", "b",
                                 "--last", "y"])
    assert result.exit_code == 0, result.output
    assert seen == [1, Outer(name=None, where=Where(host=None, port=8080), tags=["a", "b"]),
                    "y", ["--port", "--tag"]]
    help_text = runner.invoke(toy, ["go", "--help"]).output
    order = [help_text.index(flag) for flag in
             ("--first", "--name", "--host", "--port", "--tag", "--last")]
    assert order == sorted(order)  # the group's options stand where the group parameter was
    assert "Host." in help_text and "Go somewhere." in help_text


def test_a_command_can_require_fields_of_a_shared_group() -> None:
    toy, seen = toy_app(required=("host",))
    missing = runner.invoke(toy, ["go"])
    assert missing.exit_code == 2 and "Missing option '--host'" in missing.output
    assert runner.invoke(toy, ["go", "--host", "h"]).exit_code == 0
    assert seen[1] == Outer(where=Where(host="h"))
    assert "[required]" in runner.invoke(toy, ["go", "--help"]).output


@pytest.mark.parametrize("args, message", [
    (["rollout", "m", "--canary", "2", "--release", "prod", "-n", "ml"],
     "error: --release, --namespace: not an option of --target single"),
    (["rollout", "m", "--canary", "2", "--target", "k8s", "--rate", "5"],
     "error: --rate: not an option of --target k8s"),
    (["rollout", "status", "m", "--target", "k8s", "--repo", "r"],
     "error: --repo: not an option of --target k8s"),
    (["rollout", "promote", "m", "--wait", "3", "--target", "k8s"],
     "error: --wait: not an option of --target k8s"),
    (["rollout", "resume", "m", "--prometheus", "http://p:9090"],
     "error: --prometheus: not an option of --target single"),
    # The target may come before the model: `rollout ARGS` is `rollout start ARGS`.
    (["rollout", "--target", "k8s", "m", "--canary", "2"],
     "error: --release is required with --target k8s"),
])
def test_options_of_the_other_target_are_refused(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert result.output.startswith(message), result.output
