"""CLI commands of the k8s capability: `helm-values` (and `--check`), and rollouts on a
release of the triton Helm chart (`k8s rollout|status|resume|abort|promote|rollback`).

`triton-ops rollout ... --target k8s` runs the same code: `start_on_kubernetes` and `drive`
here, the target built by `triton_ops.cli.targets.open_target`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import typer

from triton_ops.cli.common import (
    EXIT_FAILED,
    AnalysisOptions,
    RolloutPrinter,
    check_output_format,
    fail,
    load_envelope,
    option_groups,
    parse_int_list,
    show_status,
    who,
    write_output,
)
from triton_ops.cli.targets import (
    COMMANDS,
    K8S_INTERVAL,
    K8S_MIN_REQUESTS,
    ClusterOptions,
    K8sPacing,
    K8sRelease,
    PrometheusOverride,
    interrupted,
    k8s_options,
    open_store,
    open_target,
    start_rollout,
)


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
    tune_results: list[Path] = typer.Option(  # noqa: B008
        [], "--tune-results", metavar="<dir>",
        help="A tune output folder (repeat for several models): set the stable replica "
        "count and the HPA bounds from its goodput and the envelope's "
        "slo.target_throughput (rule: docs/k8s.md)"),
) -> None:
    """Derive the triton Helm chart's values from the envelopes."""
    from triton_ops.k8s.values_io import dump_values, values_from_dir
    from triton_ops.tune.capacity import CapacityError, read_tune_result

    tuned = []
    for folder in tune_results:
        try:
            tuned.append(read_tune_result(folder))
        except CapacityError as exc:
            raise fail(str(exc)) from None
    derived = values_from_dir(envelopes, tuned)
    _print_findings(derived.findings)
    if not derived.ok:
        raise typer.Exit(1)
    for plan in derived.plans:
        for line in plan.lines():
            typer.echo(line, err=True)
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
        write_output(output, text)
        typer.echo(f"wrote {output}", err=True)


# -- rollouts on Kubernetes ------------------------------------------------------------------

k8s_app = typer.Typer(
    no_args_is_help=True,
    help="Canary rollouts on Kubernetes (releases of the triton Helm chart): traffic by "
    "HTTPRoute weights or replica ratio, analysis from Prometheus, state in a ConfigMap.",
)


@k8s_app.command("rollout")
@option_groups(required=("release", "prometheus"))
def k8s_rollout(
    *,
    model: str = typer.Argument(..., help="Model name."),
    canary: int = typer.Option(..., "--canary", help="The sealed version to roll out."),
    release: K8sRelease,
    stable: str = typer.Option(None, "--stable", help="Stable versions (default: serving)."),
    steps: str = typer.Option("10,25,50,100", "--steps", help="Canary weights in percent."),
    interval: str = typer.Option(K8S_INTERVAL, "--interval",
                                 help="Length of one analysis window."),
    min_requests: int = typer.Option(K8S_MIN_REQUESTS, "--min-requests", min=1),
    failure_limit: int = typer.Option(2, "--failure-limit", min=1),
    max_inconclusive: int = typer.Option(5, "--max-inconclusive", min=1),
    confirm: bool = typer.Option(False, "--confirm", help="Pause before promotion."),
    shadow_samples: int = typer.Option(20, "--shadow-samples", min=0),
    max_p99_ratio: float = typer.Option(1.5, "--max-p99-ratio", min=1.0),
    p99_slack: str = typer.Option("10ms", "--p99-slack"),
    pacing: K8sPacing,
    envelope: Path = typer.Option(None, "--envelope", help="Envelope file."),  # noqa: B008
    envelopes: Path = typer.Option(Path("envelopes"), "--envelopes"),  # noqa: B008
    repo: Path = typer.Option(None, "--repo", help="A local copy of the model "  # noqa: B008
                              "repository, to refuse unsealed or changed versions."),
    output_format: str = typer.Option("rich", "--format", help="rich or json."),
) -> None:
    """Roll out sealed version N of MODEL on a release of the triton chart."""
    check_output_format(output_format)
    analysis = AnalysisOptions.parse(
        steps=steps, interval=interval, p99_slack=p99_slack, min_requests=min_requests,
        failure_limit=failure_limit, max_inconclusive=max_inconclusive, confirm=confirm,
        shadow_samples=shadow_samples, max_p99_ratio=max_p99_ratio)
    start_on_kubernetes(model, canary, stable, analysis, release, pacing, repo=repo,
                        envelope=envelope, envelopes=envelopes, output_format=output_format)


def start_on_kubernetes(model: str, canary: int, stable: str | None,
                        analysis: AnalysisOptions, release: K8sRelease, pacing: K8sPacing,
                        *, repo: Path | None, envelope: Path | None, envelopes: Path,
                        output_format: str) -> NoReturn:
    """Roll out `canary` on the release (`k8s rollout`, `rollout --target k8s`); exits."""
    options = k8s_options(release, pacing, repo=repo, envelope=envelope, envelopes=envelopes)
    envelope_obj = load_envelope(model, envelope, envelopes)
    start_rollout("k8s", model, canary, stable, analysis, envelope_obj, options,
                  output_format, cluster=release.cluster.connect())


@contextmanager
def _recorded_target(model: str, cluster: ClusterOptions, prometheus: str | None
                     ) -> Iterator[Any]:
    """The target of the rollout of `model` recorded in the cluster (options from its
    ConfigMap), with another Prometheus URL if given."""
    from triton_ops.rollout.store import StoreError

    connected = cluster.connect()
    try:
        options = open_store("k8s", model, cluster=connected).target_options()
    except StoreError as exc:
        raise fail(str(exc)) from None
    if not options:
        raise fail(f"no Kubernetes rollout of {model} recorded in namespace "
                   f"{connected.namespace}")
    if prometheus:
        options["prometheus"] = prometheus
    envelope_path = Path(options["envelope"]) if options.get("envelope") else None
    envelope_obj = load_envelope(model, envelope_path,
                                 Path(options.get("envelopes") or "envelopes"))
    with open_target("k8s", model, envelope_obj, options, connected) as target:
        yield target


@k8s_app.command("status")
@option_groups()
def k8s_status(
    *,
    model: str = typer.Argument(..., help="Model name."),
    cluster: ClusterOptions,
    last: int = typer.Option(5, "--last", min=0, help="Audit records to show."),
    output_format: str = typer.Option("rich", "--format", help="rich or json."),
) -> None:
    """Show the rollout of MODEL from the cluster: phase, weight, verdict, who drives it."""
    store = open_store("k8s", model, cluster=cluster.connect())
    show_status(model, store, last=last, output_format=output_format, commands=COMMANDS["k8s"])


def drive(model: str, action: str, cluster: ClusterOptions, prometheus: str | None,
          output_format: str) -> None:
    """Resume, abort or promote the rollout of `model` recorded in the cluster (`k8s
    resume|abort|promote`, `rollout resume|abort|promote --target k8s`)."""
    from triton_ops.rollout.engine import Engine, RolloutRefused, exit_code

    printer = RolloutPrinter(output_format)
    with _recorded_target(model, cluster, prometheus) as target, \
            interrupted(model, target.store, "k8s"):
        engine = Engine(target, listener=printer)
        try:
            if action == "resume":
                state = engine.resume()
            else:
                state, drove = engine.command(action, by=who())
                if not drove and not state.phase.terminal:
                    typer.echo(f"{action} sent to the process driving the rollout "
                               f"({target.store.owner()}); follow it with "
                               f"`triton-ops k8s status {model}`")
                    return
        except RolloutRefused as exc:
            raise fail(str(exc)) from None
    code = exit_code(state)
    printer.final(state, code)
    raise typer.Exit(code)


def _register_drive(action: str, summary: str) -> None:
    """`k8s resume`, `k8s abort`, `k8s promote`: the same options, each its own action."""

    @k8s_app.command(action, help=summary)
    @option_groups()
    def command(
        *,
        model: str = typer.Argument(..., help="Model name."),
        cluster: ClusterOptions,
        prometheus: PrometheusOverride = None,
        output_format: str = typer.Option("rich", "--format", help="rich or json."),
    ) -> None:
        drive(model, action, cluster, prometheus, output_format)


_register_drive("resume", "Take over a rollout whose driving process died (its lease expired).")
_register_drive("abort", "Roll back now: from any machine with access to the cluster.")
_register_drive("promote", "Promote now (also releases a --confirm pause).")


@k8s_app.command("rollback")
@option_groups()
def k8s_rollback(
    *,
    model: str = typer.Argument(..., help="Model name."),
    to: str = typer.Option(None, "--to", help="Versions to serve, e.g. 3 (default: the last "
                           "known-good versions before the current ones)."),
    cluster: ClusterOptions,
) -> None:
    """Make stable serve earlier versions again (a rolling update checked by the golden
    probe); refused while a rollout of MODEL is in progress."""
    from triton_ops.rollout.store import StoreError
    from triton_ops.rollout.target import TargetError

    with _recorded_target(model, cluster, None) as target:
        store = target.store
        try:
            state = store.load()
            if state is not None and not state.phase.terminal:
                raise fail(f"a rollout of {model} is {state.phase.value}: use `triton-ops k8s "
                           f"abort {model}` instead")
            with store.lock():
                current = target.stable_versions()
                if to:
                    versions = sorted(parse_int_list(to, "--to"))
                else:
                    earlier = [v for v in store.known_good() if v != sorted(current)]
                    if not earlier:
                        raise fail(f"no known-good versions of {model} other than {current}; "
                                   "give --to N")
                    versions = earlier[-1]
                for version in versions:
                    problems = target.verify_version(version)
                    if problems:
                        raise fail("; ".join(problems))
                target.restore(versions)
                store.record_known_good(versions)
        except (StoreError, TargetError) as exc:
            raise fail(str(exc), EXIT_FAILED) from None
    typer.echo(f"{model}: stable serves {versions} (was {current})")


def register(app: typer.Typer) -> None:
    """Add this capability's commands to the main app."""
    app.command("helm-values")(helm_values)
    app.add_typer(k8s_app, name="k8s")
