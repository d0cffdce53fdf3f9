"""Where a rollout runs: the options that choose and reach a target, the factory that builds
the target from them (`open_target`), and the rollout start shared by `triton-ops rollout`
and `triton-ops k8s`.

    single  one Triton with explicit model control: the embedded one, or --url
    k8s     a release of the triton Helm chart (`triton_ops.k8s`)

The options a rollout was started with are recorded in its store (`save_target_options`), so
`resume`, `abort`, `promote` and `rollback` reach the same target from any shell. Heavy
modules (tritonclient, kubernetes, pydantic models) load inside the functions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from triton_ops.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    AnalysisOptions,
    RolloutPrinter,
    fail,
    given_options,
    parse_duration_s,
    parse_int_list,
    rollout_spec,
)

TARGETS = ("single", "k8s")
# How the follow-up commands (status, resume, abort, promote) are spelled for each target.
COMMANDS = {"single": "triton-ops rollout", "k8s": "triton-ops k8s"}
# The Kubernetes target's defaults where they differ from the single Triton's: its analysis
# reads Prometheus, so a window must span many scrapes.
K8S_INTERVAL = "5m"
K8S_MIN_REQUESTS = 100

TargetOption = Annotated[str, typer.Option(
    "--target", help="Where the rollout runs: single (one Triton) or k8s (a release of the "
    "triton chart, as the `triton-ops k8s` commands; there --interval defaults to "
    f"{K8S_INTERVAL} and --min-requests to {K8S_MIN_REQUESTS}).")]
PrometheusOverride = Annotated[str | None, typer.Option(
    "--prometheus", help="Override the recorded Prometheus URL.")]

NS_HELP = "Namespace (default: the kubeconfig context's)."


@dataclass(frozen=True)
class ClusterOptions:
    """How to reach the Kubernetes cluster."""

    namespace: Annotated[str | None, typer.Option("--namespace", "-n", help=NS_HELP)] = None
    kubeconfig: Annotated[Path | None, typer.Option(
        "--kubeconfig", help="Kubeconfig file.")] = None
    context: Annotated[str | None, typer.Option("--context", help="Kubeconfig context.")] = None

    def connect(self) -> Any:
        """A `triton_ops.k8s.cluster.Cluster` in the namespace; exit 2 when unreachable."""
        from triton_ops.k8s.cluster import Cluster, K8sError, connect, default_namespace

        try:
            api = connect(self.kubeconfig, self.context)
        except K8sError as exc:
            raise fail(str(exc)) from None
        return Cluster(api, self.namespace or default_namespace(self.kubeconfig, self.context))


@dataclass(frozen=True)
class K8sRelease:
    """The release of the triton chart a rollout drives, and where its metrics are."""

    release: Annotated[str | None, typer.Option(
        "--release", help="Helm release of the triton chart.")] = None
    prometheus: Annotated[str | None, typer.Option("--prometheus", help="Prometheus URL.")] = None
    match: Annotated[list[str], typer.Option(
        "--match", help='Extra label matcher for every query, e.g. namespace="ml" '
        "(repeatable).")] = field(default_factory=list)
    cluster: ClusterOptions = field(default_factory=ClusterOptions)
    gateway: Annotated[bool, typer.Option(
        "--gateway/--replica-ratio", help="Shift traffic by HTTPRoute weights, or by "
        "canary/stable replica ratio.")] = True


@dataclass(frozen=True)
class K8sPacing:
    """How long the Kubernetes target waits, and how many canary pods it runs."""

    scrape_lag: Annotated[str, typer.Option(
        "--scrape-lag", help="Wait after each window so Prometheus has scraped it "
        "(2 scrape intervals).")] = "30s"
    ready_timeout: Annotated[str, typer.Option("--ready-timeout")] = "15m"
    canary_replicas: Annotated[int, typer.Option("--canary-replicas", min=1)] = 1
    max_canary_replicas: Annotated[int, typer.Option("--max-canary-replicas", min=1)] = 10


def choose_target(ctx: typer.Context, target: str, *, single_only: Iterable[str] = (),
                  k8s_only: Iterable[str] = ()) -> None:
    """Refuse an unknown --target, and options that belong to the other target."""
    if target not in TARGETS:
        raise fail(f"unknown rollout target {target!r}: use `single` (one Triton, the "
                   "default) or `k8s`")
    foreign = given_options(ctx, k8s_only if target == "single" else single_only)
    if foreign:
        raise fail(f"{', '.join(foreign)}: not an option of --target {target}")


# -- the options a target is built from (and recorded in its store) --------------------------

def single_options(*, url: str | None, repo: Path, rate: float, concurrency: int,
                   requests: Path | None, timeout: str, envelope: Path | None,
                   envelopes: Path) -> dict[str, Any]:
    """The options of a single-Triton target, as recorded for `resume`."""
    return {"url": url, "repo": str(repo), "rate": rate, "concurrency": concurrency,
            "requests": str(requests.resolve()) if requests else None,
            "envelope": str(envelope.resolve()) if envelope else None,
            "envelopes": str(envelopes.resolve()),
            "timeout_s": parse_duration_s(timeout, "--timeout")}


def k8s_options(release: K8sRelease, pacing: K8sPacing, *, repo: Path | None,
                envelope: Path | None, envelopes: Path) -> dict[str, Any]:
    """The options of a Kubernetes target, as recorded in the rollout's ConfigMap."""
    if not release.release:
        raise fail("--release is required with --target k8s (the Helm release of the "
                   "triton chart)")
    if not release.prometheus:
        raise fail("--prometheus URL is required with --target k8s (the analysis reads "
                   "Triton's metrics there)")
    return {"release": release.release, "prometheus": release.prometheus,
            "match": list(release.match), "gateway": release.gateway,
            "repo": str(repo) if repo else None,
            "canary_replicas": pacing.canary_replicas,
            "max_canary_replicas": pacing.max_canary_replicas,
            "ready_timeout_s": parse_duration_s(pacing.ready_timeout, "--ready-timeout",
                                                allow_zero=True),
            "scrape_lag_s": parse_duration_s(pacing.scrape_lag, "--scrape-lag",
                                             allow_zero=True),
            "envelope": str(envelope) if envelope else None, "envelopes": str(envelopes)}


# -- the factory -----------------------------------------------------------------------------

@contextmanager
def open_target(kind: str, model: str, envelope: Any, options: dict[str, Any],
                cluster: Any = None) -> Iterator[Any]:
    """The rollout target `kind` for `model`, built from its options (as `single_options`
    or `k8s_options` make them, or as a store recorded them); `cluster` is the connected
    cluster of a k8s target (`ClusterOptions.connect`). Closed when the block ends; exit 2
    when it cannot be built."""
    if kind == "single":
        with _single_target(model, envelope, options) as target:
            yield target
    elif kind == "k8s":
        yield _k8s_target(model, envelope, options, cluster)
    else:
        raise ValueError(f"unknown rollout target {kind!r}")


@contextmanager
def _single_target(model: str, envelope: Any, options: dict[str, Any]) -> Iterator[Any]:
    from triton_ops.rollout.single import SingleTritonTarget
    from triton_ops.rollout.traffic import RequestsError, envelope_requests, load_requests_file
    from triton_ops.server.endpoints import open_server
    from triton_ops.server.local import ServerError

    repo = Path(options["repo"])
    try:
        if options.get("requests"):
            requests = load_requests_file(Path(options["requests"]), envelope)
        else:
            requests = envelope_requests(envelope, count=64)
    except RequestsError as exc:
        raise fail(str(exc)) from None
    try:
        with open_server(options.get("url"), repo, [model]) as endpoints:
            target = SingleTritonTarget(
                grpc_url=endpoints.grpc_url, repository=repo, model=model, envelope=envelope,
                requests=requests, rate=float(options.get("rate") or 100.0),
                concurrency=int(options.get("concurrency") or 4),
                timeout_s=float(options.get("timeout_s") or 10.0))
            try:
                yield target
            finally:
                target.close()
    except (ServerError, ValueError) as exc:
        raise fail(f"cannot use the Triton server: {exc}") from None


def _k8s_target(model: str, envelope: Any, options: dict[str, Any], cluster: Any) -> Any:
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
        cluster=cluster, model=model,
        release=fullname(options["release"], options.get("fullname_override") or ""),
        prometheus=prometheus, envelope=envelope,
        gateway=bool(options.get("gateway", True)),
        repository=Path(options["repo"]) if options.get("repo") else None,
        canary_replicas=int(options.get("canary_replicas", 1)),
        max_canary_replicas=int(options.get("max_canary_replicas", 10)),
        ready_timeout_s=float(options.get("ready_timeout_s", 900)),
        scrape_lag_s=float(options.get("scrape_lag_s", 30)),
    )


def require_model_dir(repo: Path, model: str) -> Path:
    model_dir = repo / model
    if not model_dir.is_dir():
        raise fail(f"{model_dir} does not exist: is {model!r} a model of repository {repo}? "
                   "(set --repo)")
    return model_dir


def open_store(kind: str, model: str, *, repo: Path | None = None, cluster: Any = None
               ) -> Any:
    """Where the rollouts of `model` on target `kind` are recorded: the repository's
    <model>/.triton-ops/rollout/ (single), or a ConfigMap and Lease (k8s)."""
    if kind == "k8s":
        from triton_ops.k8s.store import ConfigMapStateStore

        return ConfigMapStateStore(cluster, model)
    from triton_ops.rollout.single import store_for

    assert repo is not None, "the single target's store is in its repository"
    require_model_dir(repo, model)
    return store_for(repo, model)


# -- starting a rollout ----------------------------------------------------------------------

def start_rollout(kind: str, model: str, canary: int, stable: str | None,
                  analysis: AnalysisOptions, envelope: Any, options: dict[str, Any],
                  output_format: str, cluster: Any = None) -> NoReturn:
    """Roll out `canary` on the target built from `options`; exits with the rollout's code
    (0 promoted, 1 rolled back or failed, 2 refused before anything changed)."""
    from triton_ops.rollout.engine import Engine, RolloutRefused, exit_code
    from triton_ops.rollout.store import StoreError

    stable_given = parse_int_list(stable, "--stable") if stable else None
    printer = RolloutPrinter(output_format)

    def refused(reason: str) -> typer.Exit:
        if printer.json:
            typer.echo(json.dumps({"model": model, "canary": canary, "phase": "Refused",
                                   "reason": reason, "exit_code": EXIT_USAGE}, indent=2))
        return fail(f"refused: {reason}")

    # The store's documents are read before a server is started or reached.
    repo = Path(options["repo"]) if options.get("repo") else None
    try:
        store = open_store(kind, model, repo=repo, cluster=cluster)
        store.load()
        store.known_good()
    except StoreError as exc:
        raise refused(str(exc)) from None
    with open_target(kind, model, envelope, options, cluster) as target:
        try:
            stable_list = stable_given or target.serving_versions()
        except Exception as exc:  # noqa: BLE001 - TargetError and connection failures
            raise fail(str(exc)) from None
        spec = rollout_spec(model, canary, stable_list, analysis, envelope)
        if not stable_list:
            raise fail(f"no version of {model} serves on {target.describe()}: load a stable "
                       "version first")
        if not printer.json:
            printer.console.print(f"rolling out {model} version {canary} on "
                                  f"{target.describe()}: stable {stable_list}, steps "
                                  f"{spec.steps}, {spec.interval_s:g}s windows")
        if kind == "single" and options.get("url") and canary > max(stable_list):
            # Triton has no weighted routing: unversioned requests go to the highest version.
            typer.echo(f"note: while version {canary} is loaded, requests that name no "
                       f"version go to it; clients should address version "
                       f"{max(stable_list)} by number during the rollout", err=True)
        with interrupted(model, target.store, kind):
            try:
                state = Engine(target, listener=printer).start(spec, target_options=options)
            except RolloutRefused as exc:
                raise refused(str(exc)) from None
    code = exit_code(state)
    printer.final(state, code)
    raise typer.Exit(code)


@contextmanager
def interrupted(model: str, store: Any, kind: str) -> Iterator[None]:
    """Ctrl-C or an unexpected error leaves the persisted state as it is: say how to go on
    with the rollout on target `kind`."""
    from triton_ops.rollout.store import StoreError

    try:
        yield
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        raise fail(_left_in(model, store, "interrupted", kind), 130) from None
    except StoreError as exc:  # e.g. the disk filled up: the message names the file
        raise fail(_left_in(model, store, str(exc), kind), EXIT_FAILED) from None
    except Exception as exc:  # noqa: BLE001 - report, never a traceback
        raise fail(_left_in(model, store, f"unexpected error: {type(exc).__name__}: {exc}",
                            kind), EXIT_FAILED) from None


def how_to_go_on(kind: str, model: str, options: dict[str, Any]) -> str:
    """What to run to go on with an undriven rollout of `model` on target `kind`, started
    with `options`. An embedded Triton stops with the process that started it, so a rollout
    that ran on one is resumed only on a server given with --url."""
    commands = COMMANDS[kind]
    if kind == "single" and not options.get("url"):
        return (f"it ran on an embedded Triton, which stopped with the process that drove it: "
                f"run `{commands} resume {model} --url HOST:PORT` with a Triton that serves "
                f"its versions, or `{commands} abort {model}` to roll back")
    return f"run `{commands} resume {model}` to go on or `{commands} abort {model}` to roll back"


def _left_in(model: str, store: Any, what: str, kind: str) -> str:
    try:
        state = store.load()
        options = store.target_options()
    except Exception:  # noqa: BLE001 - already failing: say what is known
        state, options = None, {}
    if state is None or state.phase.terminal:
        return what
    return (f"{what}; the rollout is left in phase {state.phase.value} at weight "
            f"{state.weight}%: {how_to_go_on(kind, model, options)}")
