"""The rules Triton enforces when it loads a model config, checked before Triton sees it.

Each rule has an id (`config-<area>-<what>`), a severity, a one-line doc, the place in
Triton's sources or docs it comes from, and a check function. A check function takes the
parsed ModelConfig and yields `(field path, message)` pairs; the registry turns them into
findings located at the field's line in config.pbtxt.

Errors are what Triton refuses at load time; warnings are what Triton accepts but is almost
always a mistake (each warning's doc says why).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from triton_ops.findings import CheckResult, Finding, Severity
from triton_ops.modelconfig.parse import ConfigSourceMap, FieldPath, parse_config_text
from triton_ops.modelconfig.proto import ModelConfig

Issue = tuple[FieldPath, str]
CheckFn = Callable[[ModelConfig], Iterable[Issue]]


@dataclass(frozen=True)
class Rule:
    id: str
    severity: Severity
    doc: str
    # Where the rule comes from: "core:<file> <function>" (read in Triton's sources),
    # "observed: ..." (seen refused/accepted by Triton 2.51), or "judgement: ..." (a warning
    # for what Triton accepts but is almost always a mistake).
    source: str
    check: CheckFn

    def run(self, config: ModelConfig, source: ConfigSourceMap) -> Iterator[Finding]:
        for path, message in self.check(config):
            yield source.finding(path, self.id, message, self.severity)


RULES: dict[str, Rule] = {}


def rule(rule_id: str, severity: Severity, doc: str, source: str) -> Callable[[CheckFn], CheckFn]:
    """Register a check function as a named rule."""

    def register(fn: CheckFn) -> CheckFn:
        if rule_id in RULES:
            raise ValueError(f"duplicate rule id {rule_id}")
        RULES[rule_id] = Rule(rule_id, severity, doc, source, fn)
        return fn

    return register


E = Severity.ERROR
W = Severity.WARNING


def enum_name(enum: Any, number: int) -> str:
    """The name of an enum value, or its number when the config holds one Triton does not
    define (text format accepts any number for these open enums)."""
    try:
        return str(enum.Name(number))
    except ValueError:
        return str(number)

# Registration happens on import; the modules below use `rule` from this package.
from triton_ops.modelconfig.rules import (  # noqa: E402,F401
    batching,
    ensemble,
    general,
    instances,
    io,
    warmup,
)


def check_model_config(config: ModelConfig, source: ConfigSourceMap) -> list[Finding]:
    """Run every rule over one parsed config; findings are located via `source`."""
    findings: list[Finding] = []
    for registered in RULES.values():
        try:
            findings.extend(registered.run(config, source))
        except Exception as exc:  # a rule bug must not hide the other findings
            findings.append(source.finding(
                (), registered.id, f"internal error in rule {registered.id}: {exc!r}; "
                "please report this config to the triton-ops maintainers", Severity.ERROR))
    return sorted(findings)


def check_config_text(text: str, file: str) -> tuple[ModelConfig | None, ConfigSourceMap,
                                                     list[Finding]]:
    """Parse and check config text: the config (None if it does not parse) and findings."""
    config, source, findings = parse_config_text(text, file)
    if config is not None:
        findings.extend(check_model_config(config, source))
    return config, source, findings


def check_config_file(path: Path) -> CheckResult:
    """Check one config.pbtxt on its own: text and rules only, no folder layout."""
    from triton_ops.envelope.loader import read_text

    text, findings = read_text(path, rule_prefix="config-file")
    if text is not None:
        findings.extend(check_config_text(text, str(path))[2])
    return CheckResult(findings=findings, files_checked=1)


__all__ = ["RULES", "Rule", "check_config_file", "check_config_text", "check_model_config",
           "enum_name", "rule"]
