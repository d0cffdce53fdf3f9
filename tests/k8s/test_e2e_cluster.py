"""End to end on a real cluster. Skipped, with the reason, unless KUBECONFIG points at one.

    KUBECONFIG=...                         server-side dry run of every rendered manifest
    + TRITON_OPS_E2E_VALUES=site.yaml      values that make the chart run there (model
                                           repository volume or URI, GPU or gpus: 0, ...);
                                           the repository must hold versions 1 and 2 of
                                           TRITON_OPS_E2E_MODEL (default dense_mlp)
    + TRITON_OPS_E2E_PROMETHEUS=URL        a Prometheus that scrapes the release's pods
      (optionally TRITON_OPS_E2E_NAMESPACE, default triton-ops-e2e, created and deleted)
    => installs the chart with helm, rolls version 2 out with `triton-ops k8s rollout`
       (replica ratio unless TRITON_OPS_E2E_GATEWAY=1), checks it was promoted, uninstalls.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
import yaml

from triton_ops.k8s import chart

pytestmark = [pytest.mark.k8s, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
CUSTOM = {"HTTPRoute", "ServiceMonitor"}


def _kubeconfig() -> str:
    path = os.environ.get("KUBECONFIG")
    if not path:
        pytest.skip("no real cluster: set KUBECONFIG to run the end-to-end Kubernetes tests")
    return path


def test_rendered_manifests_pass_server_side_dry_run() -> None:
    kubeconfig = _kubeconfig()
    from kubernetes import utils

    from triton_ops.k8s.cluster import connect, default_namespace

    api = connect(kubeconfig)
    namespace = default_namespace(kubeconfig)
    failures = []
    for manifest in chart.render({"autoscaling": {"enabled": True}}, namespace=namespace,
                                 release=f"dry-{uuid.uuid4().hex[:6]}"):
        if manifest.doc["kind"] in CUSTOM:
            continue
        try:
            utils.create_from_dict(api, manifest.doc, namespace=namespace, dry_run="All")
        except Exception as exc:  # noqa: BLE001 - collected for one report
            failures.append(f"{manifest.ident}: {exc}")
    assert not failures, "\n".join(failures)


def test_install_and_canary_rollout_on_the_cluster(tmp_path: Path) -> None:
    kubeconfig = _kubeconfig()
    values_file = os.environ.get("TRITON_OPS_E2E_VALUES")
    prometheus = os.environ.get("TRITON_OPS_E2E_PROMETHEUS")
    if not values_file or not prometheus:
        pytest.skip("set TRITON_OPS_E2E_VALUES (site values) and TRITON_OPS_E2E_PROMETHEUS "
                    "(URL) to install the chart and run a canary rollout on the cluster")
    import helm_python as helm
    from typer.testing import CliRunner

    from triton_ops.cli.main import app
    from triton_ops.k8s.values_io import values_from_dir

    model = os.environ.get("TRITON_OPS_E2E_MODEL", "dense_mlp")
    namespace = os.environ.get("TRITON_OPS_E2E_NAMESPACE", "triton-ops-e2e")
    gateway = os.environ.get("TRITON_OPS_E2E_GATEWAY") == "1"
    envelopes = tmp_path / "envelopes"
    envelopes.mkdir()
    (envelopes / f"{model}.yaml").write_text((REPO / "envelopes" / f"{model}.yaml").read_text())
    derived = values_from_dir(envelopes)
    assert derived.ok, derived.findings
    values = derived.values
    site = yaml.safe_load(Path(values_file).read_text()) or {}
    merged = {**values, **site, "gateway": {**site.get("gateway", {}), "enabled": gateway}}
    release = f"e2e-{uuid.uuid4().hex[:6]}"
    with helm.Config(namespace=namespace, kubeconfig_path=kubeconfig) as cfg:
        cfg.install(str(chart.default_chart_dir()), release, merged, namespace=namespace,
                    create_namespace=True, wait="watcher", timeout=900)
        try:
            result = CliRunner().invoke(app, [
                "k8s", "rollout", model, "--canary", "2", "--stable", "1",
                "--release", release, "-n", namespace, "--kubeconfig", kubeconfig,
                "--prometheus", prometheus, "--match", f'namespace="{namespace}"',
                "--envelope", str(envelopes / f"{model}.yaml"),
                "--gateway" if gateway else "--replica-ratio",
                "--steps", "50,100", "--interval", "60s", "--min-requests", "20",
                "--format", "json"])
            assert result.exit_code == 0, result.output
            final = json.loads(result.stdout[result.stdout.index("{"):])
            assert final["phase"] == "Succeeded"
        finally:
            cfg.uninstall(release)
