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

from collections.abc import Iterable, Iterator
from pathlib import Path

from triton_ops.findings import CheckResult, Finding, Severity
from triton_ops.modelconfig.autocomplete import ModelFiles, complete
from triton_ops.modelconfig.parse import ConfigSourceMap, parse_config_text
from triton_ops.modelconfig.proto import ModelConfig

# Importing the rule modules registers their rules in RULES.
from triton_ops.modelconfig.rules import (  # noqa: F401
    batching,
    completion,
    ensemble,
    general,
    instances,
    io,
    warmup,
)
from triton_ops.modelconfig.rules.registry import (
    RULES,
    ConfigContext,
    Issue,
    Rule,
    enum_name,
    rule,
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
