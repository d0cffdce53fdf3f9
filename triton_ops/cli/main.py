"""The `triton-ops` command line.

Each capability registers its own commands from a module in this package. Those modules keep
their heavy imports (pandas, grpc, kubernetes) inside the command functions so that
`triton-ops --help` and `triton-ops validate` start fast.
"""

from __future__ import annotations

import typer

from triton_ops.cli import k8s, rollout, server, tune, validate

app = typer.Typer(
    name="triton-ops",
    help="Control plane and tuning toolkit for NVIDIA Triton Inference Server.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: typer's rich help formatting imports rich.markdown and markdown_it
    # (~0.2 s), which alone would break the start-up budget of `triton-ops --help`.
    rich_markup_mode=None,
)



@app.command()
def version() -> None:
    """Print the triton-ops version."""
    from triton_ops import __version__

    typer.echo(__version__)


for module in (validate, server, tune, rollout, k8s):
    module.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
