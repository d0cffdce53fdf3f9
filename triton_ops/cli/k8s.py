"""CLI commands of the k8s capability: `helm-values` (and `helm-check`)."""

from __future__ import annotations

from pathlib import Path

import typer

from triton_ops.cli.common import (
    AnalysisOptions,
    RolloutPrinter,
    fail,
    load_envelope,
    parse_duration_s,
    parse_int_list,
    rollout_spec,
    show_status,
    who,
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
) -> None:
    """Derive the triton Helm chart's values from the envelopes."""
    from triton_ops.fileio import atomic_write_text
    from triton_ops.k8s.values_io import dump_values, values_from_dir

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
        atomic_write_text(output, text)
        typer.echo(f"wrote {output}", err=True)


# -- rollouts on Kubernetes ------------------------------------------------------------------

k8s_app = typer.Typer(
    no_args_is_help=True,
    help="Canary rollouts on Kubernetes (releases of the triton Helm chart): traffic by "
    "HTTPRoute weights or replica ratio, analysis from Prometheus, state in a ConfigMap.",
)

def _cluster(namespace: str | None, kubeconfig: Path | None, context: str | None) -> object:
    from triton_ops.k8s.cluster import Cluster, K8sError, connect, default_namespace

    try:
        api = connect(kubeconfig, context)
    except K8sError as exc:
        raise fail(str(exc)) from None
    return Cluster(api, namespace or default_namespace(kubeconfig, context))


def _target(cluster: object, model: str, options: dict, envelope: object) -> object:
    from triton_ops.k8s.names import fullname
    from triton_ops.k8s.prometheus import Prometheus, PrometheusError
    from triton_ops.k8s.target import KubernetesTarget

    if not options.get("prometheus"):
        raise fail("--prometheus URL is required (the analysis reads Triton's metrics there)")
    try:
        prometheus = Prometheus(options["prometheus"], matchers=options.get("match") or ())
    except PrometheusError as exc:
        raise fail(str(exc)) from None
    return KubernetesTarget(
        cluster=cluster, model=model,  # type: ignore[arg-type]
        release=fullname(options["release"], options.get("fullname_override") or ""),
        prometheus=prometheus, envelope=envelope,  # type: ignore[arg-type]
        gateway=bool(options.get("gateway", True)),
        repository=Path(options["repo"]) if options.get("repo") else None,
        canary_replicas=int(options.get("canary_replicas", 1)),
        max_canary_replicas=int(options.get("max_canary_replicas", 10)),
        ready_timeout_s=float(options.get("ready_timeout_s", 900)),
        scrape_lag_s=float(options.get("scrape_lag_s", 30)),
    )


NS_HELP = "Namespace (default: the kubeconfig context's)."


@k8s_app.command("rollout")
def k8s_rollout(
    model: str = typer.Argument(..., help="Model name."),
    canary: int = typer.Option(..., "--canary", help="The sealed version to roll out."),
    release: str = typer.Option(..., "--release", help="Helm release of the triton chart."),
    prometheus: str = typer.Option(..., "--prometheus", help="Prometheus URL."),
    match: list[str] = typer.Option([], "--match", help='Extra label matcher for every '  # noqa: B006, B008
                                    'query, e.g. namespace="ml" (repeatable).'),
    namespace: str = typer.Option(None, "--namespace", "-n", help=NS_HELP),
    kubeconfig: Path = typer.Option(None, "--kubeconfig", help="Kubeconfig file."),  # noqa: B008
    context: str = typer.Option(None, "--context", help="Kubeconfig context."),
    gateway: bool = typer.Option(True, "--gateway/--replica-ratio", help="Shift traffic by "
                                 "HTTPRoute weights, or by canary/stable replica ratio."),
    stable: str = typer.Option(None, "--stable", help="Stable versions (default: serving)."),
    steps: str = typer.Option("10,25,50,100", "--steps", help="Canary weights in percent."),
    interval: str = typer.Option("5m", "--interval", help="Length of one analysis window."),
    min_requests: int = typer.Option(100, "--min-requests", min=1),
    failure_limit: int = typer.Option(2, "--failure-limit", min=1),
    max_inconclusive: int = typer.Option(5, "--max-inconclusive", min=1),
    confirm: bool = typer.Option(False, "--confirm", help="Pause before promotion."),
    shadow_samples: int = typer.Option(20, "--shadow-samples", min=0),
    max_p99_ratio: float = typer.Option(1.5, "--max-p99-ratio", min=1.0),
    p99_slack: str = typer.Option("10ms", "--p99-slack"),
    scrape_lag: str = typer.Option("30s", "--scrape-lag", help="Wait after each window so "
                                   "Prometheus has scraped it (2 scrape intervals)."),
    ready_timeout: str = typer.Option("15m", "--ready-timeout"),
    canary_replicas: int = typer.Option(1, "--canary-replicas", min=1),
    max_canary_replicas: int = typer.Option(10, "--max-canary-replicas", min=1),
    envelope: Path = typer.Option(None, "--envelope", help="Envelope file."),  # noqa: B008
    envelopes: Path = typer.Option(Path("envelopes"), "--envelopes"),  # noqa: B008
    repo: Path = typer.Option(None, "--repo", help="A local copy of the model "  # noqa: B008
                              "repository, to refuse unsealed or changed versions."),
    output_format: str = typer.Option("rich", "--format", help="rich or json."),
) -> None:
    """Roll out sealed version N of MODEL on a release of the triton chart."""
    from triton_ops.rollout.engine import Engine, RolloutRefused, exit_code
    from triton_ops.rollout.target import TargetError

    envelope_obj = load_envelope(model, envelope, envelopes)
    analysis = AnalysisOptions.parse(
        steps=steps, interval=interval, p99_slack=p99_slack, min_requests=min_requests,
        failure_limit=failure_limit, max_inconclusive=max_inconclusive, confirm=confirm,
        shadow_samples=shadow_samples, max_p99_ratio=max_p99_ratio)
    options = {"release": release, "prometheus": prometheus, "match": list(match),
               "gateway": gateway, "repo": str(repo) if repo else None,
               "canary_replicas": canary_replicas, "max_canary_replicas": max_canary_replicas,
               "ready_timeout_s": parse_duration_s(ready_timeout, "--ready-timeout",
                                                   allow_zero=True),
               "scrape_lag_s": parse_duration_s(scrape_lag, "--scrape-lag", allow_zero=True),
               "envelope": str(envelope) if envelope else None, "envelopes": str(envelopes)}
    cluster = _cluster(namespace, kubeconfig, context)
    target = _target(cluster, model, options, envelope_obj)
    try:
        stable_list = parse_int_list(stable, "--stable") if stable else target.serving_versions()
    except TargetError as exc:
        raise fail(str(exc)) from None
    spec = rollout_spec(model, canary, stable_list, analysis, envelope_obj)
    if not stable_list:
        raise fail(f"no version of {model} serves on {target.describe()}")
    printer = RolloutPrinter(output_format)
    if not printer.json:
        printer.console.print(f"rolling out {model} version {canary} on {target.describe()}: "
                              f"stable {stable_list}, steps {spec.steps}")
    try:
        target.store.save_target_options(options)
        state = Engine(target, listener=printer).start(spec)
    except RolloutRefused as exc:
        raise fail(f"refused: {exc}") from None
    code = exit_code(state)
    printer.final(state, code)
    raise typer.Exit(code)


def _stored_target(model: str, namespace: str | None, kubeconfig: Path | None,
                   context: str | None, prometheus: str | None) -> object:
    from triton_ops.k8s.store import ConfigMapStateStore
    from triton_ops.rollout.store import StoreError

    cluster = _cluster(namespace, kubeconfig, context)
    try:
        options = ConfigMapStateStore(cluster, model).target_options()  # type: ignore[arg-type]
    except StoreError as exc:
        raise fail(str(exc)) from None
    if not options:
        raise fail(f"no Kubernetes rollout of {model} recorded in namespace "
                    f"{cluster.namespace}")  # type: ignore[attr-defined]
    if prometheus:
        options["prometheus"] = prometheus
    envelope_path = Path(options["envelope"]) if options.get("envelope") else None
    envelope_obj = load_envelope(model, envelope_path,
                                 Path(options.get("envelopes") or "envelopes"))
    return _target(cluster, model, options, envelope_obj)


@k8s_app.command("status")
def k8s_status(
    model: str = typer.Argument(..., help="Model name."),
    namespace: str = typer.Option(None, "--namespace", "-n", help=NS_HELP),
    kubeconfig: Path = typer.Option(None, "--kubeconfig"),  # noqa: B008
    context: str = typer.Option(None, "--context"),
    last: int = typer.Option(5, "--last", min=0, help="Audit records to show."),
    output_format: str = typer.Option("rich", "--format", help="rich or json."),
) -> None:
    """Show the rollout of MODEL from the cluster: phase, weight, verdict, who drives it."""
    from triton_ops.k8s.store import ConfigMapStateStore

    cluster = _cluster(namespace, kubeconfig, context)
    store = ConfigMapStateStore(cluster, model)  # type: ignore[arg-type]
    show_status(model, store, last=last, output_format=output_format, commands="triton-ops k8s")


def _drive(model: str, action: str, namespace: str | None, kubeconfig: Path | None,
           context: str | None, prometheus: str | None, output_format: str) -> None:
    from triton_ops.rollout.engine import Engine, RolloutRefused, exit_code

    target = _stored_target(model, namespace, kubeconfig, context, prometheus)
    printer = RolloutPrinter(output_format)
    engine = Engine(target, listener=printer)  # type: ignore[arg-type]
    try:
        if action == "resume":
            state = engine.resume()
        else:
            state, drove = engine.command(action, by=who())
            if not drove and not state.phase.terminal:
                typer.echo(f"{action} sent to the process driving the rollout "
                           f"({target.store.owner()}); follow it with "  # type: ignore[attr-defined]
                           f"`triton-ops k8s status {model}`")
                return
    except RolloutRefused as exc:
        raise fail(str(exc)) from None
    code = exit_code(state)
    printer.final(state, code)
    raise typer.Exit(code)


for _action in ("resume", "abort", "promote"):
    def _command(
        model: str = typer.Argument(..., help="Model name."),
        namespace: str = typer.Option(None, "--namespace", "-n", help=NS_HELP),
        kubeconfig: Path = typer.Option(None, "--kubeconfig"),  # noqa: B008
        context: str = typer.Option(None, "--context"),
        prometheus: str = typer.Option(None, "--prometheus",
                                       help="Override the recorded Prometheus URL."),
        output_format: str = typer.Option("rich", "--format", help="rich or json."),
        _action: str = typer.Option(_action, hidden=True),
    ) -> None:
        _drive(model, _action, namespace, kubeconfig, context, prometheus, output_format)

    _command.__doc__ = {
        "resume": "Take over a rollout whose driving process died (its lease expired).",
        "abort": "Roll back now: from any machine with access to the cluster.",
        "promote": "Promote now (also releases a --confirm pause).",
    }[_action]
    k8s_app.command(_action)(_command)


@k8s_app.command("rollback")
def k8s_rollback(
    model: str = typer.Argument(..., help="Model name."),
    to: str = typer.Option(None, "--to", help="Versions to serve, e.g. 3 (default: the last "
                           "known-good versions before the current ones)."),
    namespace: str = typer.Option(None, "--namespace", "-n", help=NS_HELP),
    kubeconfig: Path = typer.Option(None, "--kubeconfig"),  # noqa: B008
    context: str = typer.Option(None, "--context"),
) -> None:
    """Make stable serve earlier versions again (a rolling update checked by the golden
    probe); refused while a rollout of MODEL is in progress."""
    from triton_ops.rollout.store import StoreError
    from triton_ops.rollout.target import TargetError

    target = _stored_target(model, namespace, kubeconfig, context, None)
    store = target.store  # type: ignore[attr-defined]
    try:
        state = store.load()
        if state is not None and not state.phase.terminal:
            raise fail(f"a rollout of {model} is {state.phase.value}: use `triton-ops k8s "
                        f"abort {model}` instead")
        with store.lock():
            current = target.stable_versions()  # type: ignore[attr-defined]
            if to:
                versions = sorted(parse_int_list(to, "--to"))
            else:
                earlier = [v for v in store.known_good() if v != sorted(current)]
                if not earlier:
                    raise fail(f"no known-good versions of {model} other than {current}; "
                                "give --to N")
                versions = earlier[-1]
            for version in versions:
                problems = target.verify_version(version)  # type: ignore[attr-defined]
                if problems:
                    raise fail("; ".join(problems))
            target.restore(versions)  # type: ignore[attr-defined]
            store.record_known_good(versions)
    except (StoreError, TargetError) as exc:
        raise fail(str(exc), 1) from None
    typer.echo(f"{model}: stable serves {versions} (was {current})")


ROLLOUT_SUBCOMMANDS = ("status", "resume", "abort", "promote")


def rollout_target_args(args: list[str]) -> list[str] | None:
    """For `triton-ops rollout ... --target k8s ...`: the equivalent `triton-ops k8s ...`
    arguments, or None when the rollout is not for the k8s target."""
    for i, arg in enumerate(args):
        if arg == "--target" and args[i + 1:i + 2] == ["k8s"]:
            rest = args[:i] + args[i + 2:]
            break
        if arg == "--target=k8s":
            rest = args[:i] + args[i + 1:]
            break
    else:
        return None
    if rest and rest[0] == "start":
        return ["rollout", *rest[1:]]
    if rest and rest[0] in ROLLOUT_SUBCOMMANDS:
        return rest
    return ["rollout", *rest]


def dispatch_rollout(args: list[str]) -> None:
    """Run `triton-ops rollout ... --target k8s` as the k8s commands (exits like a command)."""
    import typer.main

    mapped = rollout_target_args(args)
    if mapped is None:
        raise ValueError("not a --target k8s rollout")
    typer.main.get_command(k8s_app).main(mapped, prog_name="triton-ops k8s")


def register(app: typer.Typer) -> None:
    """Add this capability's commands to the main app."""
    app.command("helm-values")(helm_values)
    app.add_typer(k8s_app, name="k8s")
