"""Findings: what every check in triton-ops reports, and how a check run is summarised.

A finding always points at a place a person can open (file, line, column) and names the
rule that produced it, so that CI annotations and editors can jump straight to it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True, order=True)
class Finding:
    """One problem found in one file. Lines and columns are 1-based; 0 means unknown."""

    file: str
    line: int
    column: int
    rule: str
    severity: Severity
    message: str

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["severity"] = self.severity.value
        return data


@dataclass
class SourceLocations:
    """Where each key path of a parsed document (YAML or config.pbtxt) starts, for findings."""

    file: str
    locations: dict[tuple[str | int, ...], tuple[int, int]] = field(default_factory=dict)

    def locate(self, path: tuple[str | int, ...]) -> tuple[int, int]:
        """(line, column), 1-based, of `path`, or of its closest recorded parent."""
        path = tuple(path)
        while path:
            if path in self.locations:
                return self.locations[path]
            path = path[:-1]
        return self.locations.get((), (1, 1))

    def finding(self, path: tuple[str | int, ...], rule: str, message: str,
                severity: Severity = Severity.ERROR) -> Finding:
        line, column = self.locate(path)
        return Finding(self.file, line, column, rule, severity, message)


@dataclass
class CheckResult:
    """The outcome of checking a set of files."""

    findings: list[Finding] = field(default_factory=list)
    files_checked: int = 0

    def extend(self, other: CheckResult) -> None:
        self.findings.extend(other.findings)
        self.files_checked += other.files_checked

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.WARNING]

    def sorted(self) -> list[Finding]:
        return sorted(set(self.findings))
