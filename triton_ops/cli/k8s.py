"""CLI commands of the k8s capability: `helm-values` (and `helm-check`)."""

from __future__ import annotations

from pathlib import Path

import typer


def _print_findings(findings: list) -> None:
    for f in sorted(set(findings)):
        typer.echo(f"{f.file}:{f.line}:{f.column}: {f.severity.value}: {f.message} [{f.rule}]",
                   err=True)


def helm_values(
    envelopes: Path = typer.Option(Path("envelopes"), "--envelopes",  # noqa: B008
                                   help="Envelope directory"),
    output: Path | None = typer.Option(None, "--output", "-o",  # noqa: B008
                                       help="Write the values here (default: stdout)"),
    check: bool = typer.Option(False, "--check", help="Also render the chart with these values, "
                               "lint it and validate every manifest against the Kubernetes "
                               "schemas"),
    chart: Path | None = typer.Option(None, "--chart",  # noqa: B008
                                      help="Chart directory (default: "
                                      "helm/triton of this checkout)"),
) -> None:
    """Derive the triton Helm chart's values from the envelopes."""
    from triton_ops.k8s.values_io import dump_values, values_from_dir, write_atomic

    derived = values_from_dir(envelopes)
    _print_findings(derived.findings)
    if not derived.ok:
        raise typer.Exit(1)
    if check:
        from triton_ops.k8s import chart as chart_mod

        try:
            manifests = chart_mod.render(derived.values, chart_dir=chart)
            problems = chart_mod.lint(derived.values, chart_dir=chart) + \
                chart_mod.validate(manifests)
        except chart_mod.ChartError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        for problem in problems:
            typer.echo(f"chart: {problem}", err=True)
        if problems:
            raise typer.Exit(1)
        typer.echo(f"chart: {len(manifests)} manifests rendered, linted and valid against "
                   f"Kubernetes {chart_mod.KUBERNETES_VERSION}", err=True)
    text = dump_values(derived.values)
    if output is None:
        typer.echo(text, nl=False)
    else:
        write_atomic(output, text)
        typer.echo(f"wrote {output}", err=True)


def register(app: typer.Typer) -> None:
    """Add this capability's commands to the main app."""
    app.command("helm-values")(helm_values)
