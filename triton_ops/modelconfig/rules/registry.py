"""The registry of config rules: what a rule is, and `rule` to register a check function.

The rule modules of this package (batching, completion, ensemble, general, instances, io,
warmup) register their checks here on import; the package imports them all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from triton_ops.findings import Finding, Severity
from triton_ops.modelconfig.autocomplete import Completion
from triton_ops.modelconfig.parse import ConfigSourceMap, FieldPath
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
