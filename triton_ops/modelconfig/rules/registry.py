"""The registry of config rules: what a rule is, and `rule` to register a check function.

The rule modules of this package (batching, ensemble, general, instances, io, warmup)
register their checks here on import; the package imports them all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from triton_ops.findings import Finding, Severity
from triton_ops.modelconfig.parse import ConfigSourceMap, FieldPath
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
