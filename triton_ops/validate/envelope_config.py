"""The gate's checks of an envelope against its ModelConfig, and the gate's envelope check.

The envelope rules (`triton_ops.envelope.rules`) read the envelope alone and its model folder.
The rules here compare it with modelconfig's view of it: the ModelConfig it renders to
(`envelope-render`) and the committed <repo>/<name>/config.pbtxt (`envelope-config-drift`,
`envelope-config-format`). `check_envelope_file` runs both sets: `RULES` is every rule the
gate runs on an envelope.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from triton_ops.envelope.loader import KeyPath, load_envelope, read_text
from triton_ops.envelope.rules import RULES as ENVELOPE_RULES
from triton_ops.envelope.rules import EnvelopeContext, Issue, Rule, check_envelope, rule
from triton_ops.findings import CheckResult, Severity

CONFIG_RULES: dict[str, Rule] = {}

# Where, in an envelope, each ModelConfig field comes from (to point drift findings at it).
CONFIG_FIELD_TO_ENVELOPE: dict[str, KeyPath] = {
    "name": ("name",), "backend": ("backend",), "platform": ("platform",),
    "runtime": ("runtime_library",), "default_model_filename": ("default_model_filename",),
    "version_policy": ("versions",), "max_batch_size": ("batching", "max_batch_size"),
    "input": ("inputs",), "output": ("outputs",), "dynamic_batching": ("batching", "dynamic"),
    "instance_group": ("instances",), "parameters": ("parameters",),
}


def rendered(ctx: EnvelopeContext) -> tuple[Any, Any]:
    """(ModelConfig, None) or (None, RenderError), rendered once per envelope."""
    if "rendered" not in ctx.cache:
        from triton_ops.modelconfig.render import RenderError, render_model_config

        try:
            ctx.cache["rendered"] = (render_model_config(ctx.envelope), None)
        except RenderError as exc:
            ctx.cache["rendered"] = (None, exc)
    result: tuple[Any, Any] = ctx.cache["rendered"]
    return result


@dataclass
class CommittedConfig:
    """How the committed config.pbtxt compares with what the envelope renders."""

    path: Path
    status: str  # "missing", "unparsable", "same-text", "same-fields", "differs"
    differing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def compare_committed(ctx: EnvelopeContext) -> CommittedConfig | None:
    """Compare <repo>/<name>/config.pbtxt with the rendered config (None: nothing to compare),
    once per envelope.

    The text is compared first: a generated file is byte-identical, and parsing text format
    in Python costs milliseconds, which adds up over a thousand models.
    """
    if "committed" not in ctx.cache:
        ctx.cache["committed"] = _compare_committed(ctx)
    result: CommittedConfig | None = ctx.cache["committed"]
    return result


def _compare_committed(ctx: EnvelopeContext) -> CommittedConfig | None:
    model_dir = ctx.model_dir
    config, error = rendered(ctx)
    if model_dir is None or error is not None or not model_dir.is_dir():
        return None
    config_path = model_dir / "config.pbtxt"
    if not (config_path.exists() or config_path.is_symlink()):
        return CommittedConfig(config_path, "missing")
    from triton_ops.modelconfig.fields import differing_fields
    from triton_ops.modelconfig.importer import read_model_config
    from triton_ops.modelconfig.render import config_to_text, source_label

    text, _ = read_text(config_path, "config")
    if text is not None and text == config_to_text(config, source_label(ctx.path)):
        return CommittedConfig(config_path, "same-text")
    committed, problems = read_model_config(config_path)
    if committed is None:
        return CommittedConfig(config_path, "unparsable", problems=problems)
    if committed == config:
        return CommittedConfig(config_path, "same-fields")
    return CommittedConfig(config_path, "differs", differing_fields(config, committed))


@rule("envelope-render", Severity.ERROR,
      "The envelope renders into a ModelConfig: passthrough holds only fields the envelope "
      "does not model, in valid protobuf JSON; per-direction tensor fields are used on the "
      "right side (label_filename on outputs, optional/format on inputs).",
      registry=CONFIG_RULES)
def renders(ctx: EnvelopeContext) -> Iterator[Issue]:
    _config, error = rendered(ctx)
    if error is not None:
        yield error.path, str(error)


def _sequence_rule_ids() -> list[str]:
    from triton_ops.modelconfig.rules import RULES as CONFIG_RULES

    return [rule_id for rule_id, registered in CONFIG_RULES.items()
            if registered.severity is Severity.ERROR
            and (rule_id.startswith("config-sequence-") or rule_id.endswith("-sequence"))]


_SEQUENCE_FIELDS = {"preferred_batch_size": "preferred_batch_sizes",
                    "max_queue_delay_microseconds": "max_queue_delay"}


def sequence_key_path(config: Any, path: tuple[str | int, ...]) -> KeyPath:
    """Where in the envelope a sequence_batching field path of its rendered config is."""
    base: KeyPath = ("batching", "sequence")
    if path[:1] != ("sequence_batching",):
        return ("passthrough",) if path[:1] == ("response_cache",) else base
    rest = path[1:]
    if rest[:1] == ("control_input",) and len(rest) > 1:
        inputs = config.sequence_batching.control_input
        i = int(rest[1])
        j = int(rest[3]) if rest[2:3] == ("control",) and len(rest) > 3 else 0
        return (*base, "controls", sum(len(c.control) for c in inputs[:i]) + j)
    if rest[:1] == ("state",):
        return (*base, "states", *rest[1:])
    return (*base, *(_SEQUENCE_FIELDS.get(str(p), p) for p in rest))


@rule("envelope-sequence-batching", Severity.ERROR,
      "The sequence batcher passes Triton's load-time rules for it, checked on the config "
      "the envelope renders (the config-sequence-* errors in docs/rules.md: control tensors "
      "and their false/true values, CORRID data types, oldest-strategy preferred sizes, "
      "direct-strategy slot utilisation, initial state); the message names the rule.",
      registry=CONFIG_RULES)
def sequence_batching(ctx: EnvelopeContext) -> Iterator[Issue]:
    if ctx.envelope.batching.sequence is None:
        return
    config, error = rendered(ctx)
    if error is not None:
        return  # envelope-render reports it
    from triton_ops.modelconfig.rules import rule_issues

    for registered, (path, message) in rule_issues(config, _sequence_rule_ids()):
        yield sequence_key_path(config, path), f"{message} [{registered.id}]"


@rule("envelope-config-drift", Severity.ERROR,
      "<repo>/<name>/config.pbtxt is what `triton-ops generate` renders from the envelope "
      "(compared as ModelConfig messages).", needs_repo=True, registry=CONFIG_RULES)
def config_drift(ctx: EnvelopeContext) -> Iterator[Issue]:
    committed = compare_committed(ctx)
    if committed is None or committed.status in ("same-text", "same-fields"):
        return
    config_path = committed.path
    if committed.status == "missing":
        yield ("name",), f"{config_path} is missing; run `triton-ops generate` to write it"
    elif committed.status == "unparsable":
        yield ("name",), (f"{config_path} cannot be parsed ({'; '.join(committed.problems)}); "
                          "run `triton-ops generate` to rewrite it from the envelope")
    else:
        differing = committed.differing
        first = differing[0] if differing else ""
        path = CONFIG_FIELD_TO_ENVELOPE.get(first, ("passthrough",))
        yield path, (f"{config_path} differs from the envelope in {', '.join(differing)}; run "
                     "`triton-ops generate` to rewrite it (or `triton-ops import` to adopt "
                     "the hand edits into the envelope)")


@rule("envelope-config-format", Severity.WARNING,
      "config.pbtxt is byte-for-byte what `triton-ops generate` writes (same fields but other "
      "formatting or comments means it was edited by hand).", needs_repo=True,
      registry=CONFIG_RULES)
def config_format(ctx: EnvelopeContext) -> Iterator[Issue]:
    committed = compare_committed(ctx)
    if committed is not None and committed.status == "same-fields":
        yield ("name",), (f"{committed.path} has the right fields but not the generated text "
                          "(hand formatting or comments); run `triton-ops generate`")


# Every rule the gate runs on an envelope.
RULES: dict[str, Rule] = {**ENVELOPE_RULES, **CONFIG_RULES}
if len(RULES) != len(ENVELOPE_RULES) + len(CONFIG_RULES):
    raise ValueError(f"rule ids defined twice: {sorted(ENVELOPE_RULES.keys() & CONFIG_RULES)}")


def check_envelope_file(path: Path | str, repo: Path | None = None) -> CheckResult:
    """Load one envelope file and run every rule of the gate on it."""
    loaded = load_envelope(path)
    return CheckResult(findings=check_envelope(loaded, repo, RULES), files_checked=1)


__all__ = ["CONFIG_RULES", "RULES", "CommittedConfig", "check_envelope_file",
           "compare_committed", "rendered"]
