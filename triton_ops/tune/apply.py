"""`tune --apply`: the chosen settings written into the envelope, comments and key order kept.

The envelope is edited with ruamel.yaml's round-trip mode (only the batching and instance
keys change), validated before it replaces the file (atomically), then config.pbtxt is
regenerated from it exactly as `triton-ops generate` does.

The overload stage's queue policy becomes `batching.dynamic.default_queue_policy` (the dynamic
batcher's section is created when missing: the policy needs it). An existing policy is edited
in place, so its comments stay; `allow_timeout_override` is left as the owner set it (it only
lets a request shorten the timeout, and the stage's requests set none). No policy removes the
key.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from triton_ops.envelope.units import format_duration_us
from triton_ops.tune.batcher import Candidate
from triton_ops.tune.overload.policy import OverloadPolicy


class ApplyError(RuntimeError):
    pass


def load_round_trip(text: str) -> tuple[Any, Any]:
    """The envelope YAML loaded for editing: a ruamel.yaml round-trip instance that writes
    the file's own indentation style back, and the top-level mapping."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap
    from ruamel.yaml.util import load_yaml_guess_indent

    _, indent, block_seq_indent = load_yaml_guess_indent(text)
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    # Keep the file's own indentation style (e.g. "  - name:" under a key).
    yaml.indent(mapping=2, sequence=indent or 2, offset=block_seq_indent or 0)
    yaml.width = 4096
    data = yaml.load(text)
    if not isinstance(data, CommentedMap):
        raise ApplyError("the envelope is not a YAML mapping")
    return yaml, data


def dump_round_trip(yaml: Any, data: Any) -> str:
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def apply_to_envelope_text(text: str, candidate: Candidate) -> str:
    """The envelope YAML with the candidate's batching and instance settings."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    yaml, data = load_round_trip(text)
    batching = data.get("batching")
    if batching is None:
        batching = CommentedMap()
        data["batching"] = batching
    batching["max_batch_size"] = candidate.max_batch_size
    if candidate.max_batch_size > 0:
        dynamic = batching.get("dynamic")
        if dynamic is None:
            dynamic = CommentedMap()
            batching["dynamic"] = dynamic
        dynamic["max_queue_delay"] = format_duration_us(candidate.max_queue_delay_us) \
            if candidate.max_queue_delay_us else 0
        if candidate.preferred_batch_sizes:
            seq = CommentedSeq(list(candidate.preferred_batch_sizes))
            seq.fa.set_flow_style()
            dynamic["preferred_batch_sizes"] = seq
        elif "preferred_batch_sizes" in dynamic:
            del dynamic["preferred_batch_sizes"]
    instances = data.get("instances")
    if not instances:
        group = CommentedMap()
        group["kind"] = "CPU" if data.get("backend") == "python" else "GPU"
        group["count"] = candidate.instance_count
        data["instances"] = CommentedSeq([group])
    else:
        instances[0]["count"] = candidate.instance_count
        while len(instances) > 1:  # the tuned count is the model's whole instance count
            del instances[-1]
    return dump_round_trip(yaml, data)


def _mapping(parent: Any, key: str) -> Any:
    """parent[key], created as an empty mapping when missing (or null)."""
    from ruamel.yaml.comments import CommentedMap

    value = parent.get(key)
    if value is None:
        value = CommentedMap()
        parent[key] = value
    elif not isinstance(value, CommentedMap):
        raise ApplyError(f"'{key}' in the envelope is not a mapping")
    return value


def write_queue_policy(text: str, policy: OverloadPolicy) -> str:
    """The envelope YAML with `policy` as the dynamic batcher's default_queue_policy."""
    yaml, data = load_round_trip(text)
    settings = policy.envelope_dict()
    if settings is None:
        dynamic = (data.get("batching") or {}).get("dynamic") or {}
        if "default_queue_policy" in dynamic:
            del dynamic["default_queue_policy"]
        return dump_round_trip(yaml, data)
    queue = _mapping(_mapping(_mapping(data, "batching"), "dynamic"), "default_queue_policy")
    for key in ("timeout_action", "default_timeout", "max_queue_size"):
        if key in settings:
            queue[key] = settings[key]
        elif key in queue:
            del queue[key]
    return dump_round_trip(yaml, data)


def apply_to_envelope(envelope_path: Path, candidate: Candidate | None, repository: Path,
                      *, policy: OverloadPolicy | None = None) -> list[str]:
    """Write the candidate's batching settings (when given) and the overload stage's queue
    policy (when given) into the envelope file, and regenerate config.pbtxt.

    Returns human-readable lines saying what was written.
    """
    from triton_ops.envelope.loader import load_envelope
    from triton_ops.fileio import atomic_write_text
    from triton_ops.modelconfig.render import generate

    original = envelope_path.read_text(encoding="utf-8")
    updated = original
    written = []
    if candidate is not None:
        updated = apply_to_envelope_text(updated, candidate)
        written.append(candidate.label())
    if policy is not None:
        updated = write_queue_policy(updated, policy)
        written.append(f"queue policy {policy.label()}")
    tmp = envelope_path.with_name(f".{envelope_path.name}.check.yaml")
    try:
        tmp.write_text(updated, encoding="utf-8")
        loaded = load_envelope(tmp)
    finally:
        tmp.unlink(missing_ok=True)
    if loaded.envelope is None:
        problems = "; ".join(f"line {f.line}: {f.message}" for f in loaded.findings)
        raise ApplyError(f"the tuned envelope would not validate ({problems}); "
                         f"{envelope_path} was left unchanged")
    atomic_write_text(envelope_path, updated)
    lines = [f"wrote {' and '.join(written)} into {envelope_path}"]
    outcomes: list[Any] = generate([envelope_path], repository)
    for o in outcomes:
        lines.append(f"{o.status}: {o.config_path or o.envelope}")
        lines.extend(o.messages)
    return lines
