"""`helm upgrade` never undoes a rollout: the chart's `lookup` (rendered cluster-aware by the
bundled Helm, against the API emulator over HTTP) keeps the versions the live Deployments
serve for models already deployed."""

from __future__ import annotations

import json
from pathlib import Path

import helm_python as helm
import kmock
import yaml

from triton_ops.k8s.chart import default_chart_dir
from triton_ops.k8s.cluster import Cluster, connect

from .cluster_sim import NS, chart_values, install_chart
from .emulator import ApiServer, api_server


def declare_deployments(emulator: ApiServer) -> None:
    # Discovery must say Deployments are namespaced for Helm's lookup to ask for one.
    emulator.resources["apps/v1/deployments"] = kmock.ResourceInfo(
        kind="Deployment", namespaced=True, singular="deployment",
        verbs=["get", "list", "create", "patch"])


def upgrade_render(kubeconfig: Path, values: dict) -> dict[str, dict[str, list[int]]]:
    with helm.Config(namespace=NS, kubeconfig_path=str(kubeconfig)) as cfg, \
            helm.Chart.load(str(default_chart_dir())) as chart:
        out = cfg.render(chart, values, name="demo", namespace=NS, is_upgrade=True)
    return {doc["metadata"]["name"]: json.loads(
                doc["spec"]["template"]["metadata"]["annotations"]["triton-ops.io/versions"])
            for doc in yaml.safe_load_all(out["triton/templates/deployment.yaml"]) if doc}


def test_upgrade_keeps_rolled_out_versions(tmp_path: Path) -> None:
    with api_server(declare_deployments) as server:
        install_chart(server, chart_values(None, True))
        kubeconfig = server.kubeconfig(tmp_path / "kubeconfig", NS)
        Cluster(connect(kubeconfig), NS).patch_deployment("demo-triton-stable", {"spec": {
            "template": {"metadata": {"annotations": {
                "triton-ops.io/versions": '{"affine":[4]}'}}}}})
        values = chart_values(None, True)
        values["models"].append({"name": "other", "versions": {"stable": [7], "canary": [7]},
                                 "probe": None})
        rendered = upgrade_render(kubeconfig, values)
        # affine keeps the promoted 4; a model new to the release takes its values.
        assert rendered["demo-triton-stable"] == {"affine": [4], "other": [7]}
        assert rendered["demo-triton-canary"] == {"affine": [1], "other": [7]}
        values["keepRolledOutVersions"] = False
        assert upgrade_render(kubeconfig, values)["demo-triton-stable"] == {
            "affine": [1], "other": [7]}
