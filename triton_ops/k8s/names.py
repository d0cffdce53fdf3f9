"""Names of the Kubernetes objects the chart creates and the rollout uses.

These mirror helm/triton/templates/_helpers.tpl so that the rollout finds what the chart made.
"""

from __future__ import annotations

import re

CHART_NAME = "triton"
TRACKS = ("stable", "canary")
VERSIONS_ANNOTATION = "triton-ops.io/versions"
TRACK_LABEL = "triton-ops.io/track"
_NOT_DNS = re.compile(r"[^a-z0-9-]")


def fullname(release: str, fullname_override: str = "") -> str:
    """The chart's `triton.fullname` for a release."""
    if fullname_override:
        return fullname_override[:48].rstrip("-")
    name = release if CHART_NAME in release else f"{release}-{CHART_NAME}"
    return name[:48].rstrip("-")


def deployment(release_fullname: str, track: str) -> str:
    return f"{release_fullname}-{track}"


def rollout_object(model: str) -> str:
    """Name of a model's rollout state ConfigMap and its Lease (`triton.rolloutObject`)."""
    dns = model.lower().replace("_", "-").replace(".", "-")
    return f"triton-ops-rollout-{dns}"[:63].rstrip("-")


def is_dns_label(name: str) -> bool:
    return bool(name) and len(name) <= 63 and not _NOT_DNS.search(name) and \
        name[0].isalnum() and name[-1].isalnum()
