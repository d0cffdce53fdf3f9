"""Envelopes from a directory to chart values, and writing them (atomic)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from triton_ops.envelope.loader import load_envelope
from triton_ops.findings import Finding, Severity
from triton_ops.k8s.values import (
    DerivedValues,
    SourcedEnvelope,
    capacity_values,
    derive_values,
    merge_values,
)
from triton_ops.tune.capacity import TunedModel

HEADER = ("# Derived by `triton-ops helm-values` from the envelopes; regenerate rather than edit.\n"
          "# Use with the chart: helm upgrade --install REL helm/triton -f site.yaml -f THIS\n")


def values_from_dir(envelopes_dir: Path | str, tuned: Sequence[TunedModel] = ()
                    ) -> DerivedValues:
    """The values for the envelopes in a directory; with `tuned` (tune results), also the
    replica count and HPA bounds of the capacity plan."""
    base = Path(envelopes_dir)
    if not base.is_dir():
        return DerivedValues({}, [Finding(str(base), 0, 0, "helm-envelopes-dir", Severity.ERROR,
                                          "not a directory; pass --envelopes DIR holding "
                                          "<model>.yaml envelopes")])
    files = sorted([*base.glob("*.yaml"), *base.glob("*.yml")])
    findings: list[Finding] = []
    sources = []
    for path in files:
        loaded = load_envelope(path)
        findings.extend(loaded.findings)
        if loaded.envelope is not None:
            sources.append(SourcedEnvelope(loaded.envelope, str(path), loaded.source.locate))
    if not files:
        findings.append(Finding(str(base), 0, 0, "helm-no-envelopes", Severity.ERROR,
                                "no *.yaml envelopes in this directory"))
        return DerivedValues({}, findings)
    derived = derive_values(sources) if sources else DerivedValues({})
    derived.findings[:0] = findings
    if tuned and sources:
        patch, capacity_findings, plans = capacity_values(sources, tuned)
        derived.values = merge_values(derived.values, patch)
        derived.findings.extend(capacity_findings)
        derived.plans = plans
    return derived


def dump_values(values: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(values, sort_keys=False, default_flow_style=False)
