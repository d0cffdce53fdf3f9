"""The chosen queue policy written into an envelope's text, comments and key order kept.

The policy becomes `batching.dynamic.default_queue_policy` (the dynamic batcher's section is
created when missing: the policy needs it). An existing policy is edited in place, so its
comments stay; `allow_timeout_override` is left as the owner set it (it only lets a request
shorten the timeout, and the stage's requests set none). No policy removes the key.
"""

from __future__ import annotations

from typing import Any

from triton_ops.tune.overload.policy import OverloadPolicy


def _mapping(parent: Any, key: str) -> Any:
    """parent[key], created as an empty mapping when missing (or null)."""
    from ruamel.yaml.comments import CommentedMap

    from triton_ops.tune.apply import ApplyError

    value = parent.get(key)
    if value is None:
        value = CommentedMap()
        parent[key] = value
    elif not isinstance(value, CommentedMap):
        raise ApplyError(f"'{key}' in the envelope is not a mapping")
    return value


def write_queue_policy(text: str, policy: OverloadPolicy) -> str:
    """The envelope YAML with `policy` as the dynamic batcher's default_queue_policy."""
    from triton_ops.tune.apply import dump_round_trip, load_round_trip

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
