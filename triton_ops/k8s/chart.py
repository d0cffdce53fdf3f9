"""The triton Helm chart offline: render with the bundled Helm SDK, lint, and validate every
manifest against the Kubernetes JSON schemas of a pinned release."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# The Kubernetes release whose schemas the rendered manifests are checked against.
KUBERNETES_VERSION = "1.30.0"
# Custom resources: the pinned Kubernetes schemas cannot know them.
CUSTOM_KINDS = {("gateway.networking.k8s.io/v1", "HTTPRoute"),
                ("monitoring.coreos.com/v1", "ServiceMonitor")}


class ChartError(Exception):
    """The chart could not be found, rendered or linted; the message says what to do."""


def default_chart_dir() -> Path:
    """helm/triton of this checkout (the chart ships next to the package in the repository)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "helm" / "triton" / "Chart.yaml"
        if candidate.is_file():
            return candidate.parent
    raise ChartError("the triton chart (helm/triton) was not found next to triton_ops; "
                     "pass the chart directory explicitly")


@dataclass
class Manifest:
    template: str
    doc: dict[str, Any]

    @property
    def ident(self) -> str:
        meta = self.doc.get("metadata") or {}
        return f"{self.doc.get('kind')}/{meta.get('name')} ({self.template})"


def render(values: dict[str, Any] | None = None, *, chart_dir: Path | None = None,
           release: str = "triton-ops", namespace: str = "default") -> list[Manifest]:
    """Rendered Kubernetes objects of the chart (NOTES.txt and empty documents left out)."""
    import helm_python as helm

    chart_dir = chart_dir or default_chart_dir()
    try:
        with helm.Chart.load(str(chart_dir)) as chart:
            rendered = chart.render(values or {}, name=release, namespace=namespace,
                                    is_install=True)
    except helm.HelmError as exc:
        raise ChartError(f"helm could not render {chart_dir}: {exc}") from None
    out = []
    for template, text in sorted(rendered.items()):
        if not template.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                out.append(Manifest(template, doc))
    return out


def lint(values: dict[str, Any] | None = None, *, chart_dir: Path | None = None) -> list[str]:
    """`helm lint --strict` problems (warnings and errors), as messages."""
    import helm_python as helm

    chart_dir = chart_dir or default_chart_dir()
    report = helm.lint(str(chart_dir), values or {}, strict=True,
                       kube_version=f"v{KUBERNETES_VERSION}")
    problems = [f"{m['path']}: {m['error']}" for m in report.get("messages", [])
                if m.get("severity", 0) >= 2]
    return problems + [str(e) for e in report.get("errors", [])]


def validate(manifests: list[Manifest], version: str = KUBERNETES_VERSION) -> list[str]:
    """Schema errors of each built-in object (strict schemas: unknown fields are errors)."""
    import kubernetes_validate

    problems = []
    for m in manifests:
        if (m.doc.get("apiVersion"), m.doc.get("kind")) in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(m.doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            problems.append(f"{m.ident}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{m.ident}: {exc.message}")
    return problems
