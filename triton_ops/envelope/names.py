"""Model names claimed by more than one envelope.

Each envelope renders <repository>/<name>/config.pbtxt, so two envelopes naming one model
for one repository overwrite each other's config (and `generate --check` never passes).
The check needs every envelope's name; `validate` and `generate` collect them and ask here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from triton_ops.findings import Finding, Severity

DUPLICATE_RULE = "envelope-duplicate-name"


@dataclass(frozen=True)
class NameClaim:
    """An envelope file naming a model for a repository (None: no repository known)."""

    name: str
    file: str
    repo: str | None = None


def duplicate_name_findings(claims: Iterable[NameClaim]) -> list[Finding]:
    """An ERROR on each envelope whose model name another envelope (another file) also
    claims for the same repository, at its `name:` line, naming the other files."""
    from triton_ops.envelope.loader import load_envelope

    by_model: dict[tuple[str | None, str], dict[str, str]] = {}
    shown_repo: dict[tuple[str | None, str], str | None] = {}
    for claim in claims:
        key = (os.path.realpath(claim.repo) if claim.repo is not None else None, claim.name)
        shown_repo.setdefault(key, claim.repo)
        # One file given twice (a folder and a file in it) is one claim.
        by_model.setdefault(key, {}).setdefault(os.path.realpath(claim.file), claim.file)
    findings = []
    for key, files in by_model.items():
        if len(files) < 2:
            continue
        shown = list(files.values())
        target = f"{shown_repo[key] or '<repository>'}/{key[1]}/config.pbtxt"
        for file in shown:
            others = ", ".join(f for f in shown if f != file)
            # Located by loading the file again: only the few files in a clash pay for it.
            line, column = load_envelope(Path(file)).source.locate(("name",))
            findings.append(Finding(
                file, line, column, DUPLICATE_RULE, Severity.ERROR,
                f"model name {key[1]!r} is also the name in {others}: each would render "
                f"{target} over the other's; rename one model or delete one envelope"))
    return findings
