"""The rules Triton enforces when it loads a model config, checked before Triton sees it.

Each rule has an id (`config-<area>-<what>`), a severity, a one-line doc, the place in
Triton's sources or docs it comes from, and a check function. A check function takes the
ModelConfig Triton would validate (the config as written, with the fields Triton's
auto-complete fills from the model folder: triton_ops.modelconfig.autocomplete) and yields
`(field path, message)` pairs; the registry turns them into findings located at the field's
line in config.pbtxt. Rules registered with `context=True` take a `ConfigContext` instead:
the config as written too, and what auto-complete does or may still do at load.

Errors are what Triton refuses at load time; warnings are what Triton accepts but is almost
always a mistake (each warning's doc says why).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from triton_ops.findings import CheckResult, Finding, Severity
from triton_ops.modelconfig.autocomplete import Completion, ModelFiles, complete
from triton_ops.modelconfig.parse import ConfigSourceMap, FieldPath, parse_config_text
from triton_ops.modelconfig.proto import ModelConfig

Issue = tuple[FieldPath, str]
CheckFn = Callable[[Any], Iterable[Issue]]


@dataclass(frozen=True)
class ConfigContext:
    """What a context rule sees: the config as written and as Triton completes it."""

    written: ModelConfig
    completion: Completion

    @property
    def config(self) -> ModelConfig:
        return self.completion.config


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
    context: bool = False  # the check takes a ConfigContext, not the ModelConfig

    def issues(self, ctx: ConfigContext) -> Iterable[Issue]:
        return self.check(ctx if self.context else ctx.config)

    def run(self, ctx: ConfigContext, source: ConfigSourceMap) -> Iterator[Finding]:
        for path, message in self.issues(ctx):
            yield source.finding(path, self.id, message, self.severity)


RULES: dict[str, Rule] = {}


def rule(rule_id: str, severity: Severity, doc: str, source: str, *, context: bool = False
         ) -> Callable[[CheckFn], CheckFn]:
    """Register a check function as a named rule."""

    def register(fn: CheckFn) -> CheckFn:
        if rule_id in RULES:
            raise ValueError(f"duplicate rule id {rule_id}")
        RULES[rule_id] = Rule(rule_id, severity, doc, source, fn, context)
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
    completion,
    ensemble,
    general,
    instances,
    io,
    warmup,
)


def check_model_config(config: ModelConfig, source: ConfigSourceMap,
                       files: ModelFiles | None = None) -> list[Finding]:
    """Run every rule over one parsed config; findings are located via `source`.

    `files`: the model folder as Triton's auto-complete sees it; None checks the config alone,
    leaving what Triton would complete from the model folder and file unchecked."""
    ctx = ConfigContext(config, complete(config, files))
    findings: list[Finding] = []
    for registered in RULES.values():
        try:
            findings.extend(registered.run(ctx, source))
        except Exception as exc:  # a rule bug must not hide the other findings
            findings.append(source.finding(
                (), registered.id, f"internal error in rule {registered.id}: {exc!r}; "
                "please report this config to the triton-ops maintainers", Severity.ERROR))
    return sorted(findings)


def rule_issues(config: ModelConfig, rule_ids: Iterable[str]) -> Iterator[tuple[Rule, Issue]]:
    """(rule, issue) of the given rules on a config checked alone, for callers that locate
    the issues themselves (the envelope checks its rendered config this way)."""
    ctx = ConfigContext(config, complete(config, None))
    for rule_id in rule_ids:
        registered = RULES[rule_id]
        for issue in registered.issues(ctx):
            yield registered, issue


def check_config_text(text: str, file: str, files: ModelFiles | None = None
                      ) -> tuple[ModelConfig | None, ConfigSourceMap, list[Finding]]:
    """Parse and check config text: the config (None if it does not parse) and findings."""
    config, source, findings = parse_config_text(text, file)
    if config is not None:
        findings.extend(check_model_config(config, source, files))
    return config, source, findings


def read_config_text(path: Path) -> tuple[str | None, list[Finding]]:
    """The text of a config.pbtxt, or findings saying why it cannot be read. An empty file is
    an empty config (Triton completes it from the model folder), not an error."""
    from triton_ops.envelope.loader import read_text

    text, findings = read_text(path, rule_prefix="config-file")
    if text is None and [f.rule for f in findings] == ["config-file-empty"]:
        return "", []
    return text, findings


def check_config_file(path: Path) -> CheckResult:
    """Check one config.pbtxt on its own: text and rules only, no folder layout."""
    text, findings = read_config_text(path)
    if text is not None:
        findings.extend(check_config_text(text, str(path))[2])
    return CheckResult(findings=findings, files_checked=1)


__all__ = ["RULES", "ConfigContext", "Rule", "check_config_file", "check_config_text",
           "check_model_config", "enum_name", "read_config_text", "rule", "rule_issues"]
