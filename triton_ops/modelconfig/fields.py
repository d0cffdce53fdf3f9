"""Reading a ModelConfig field by name, as a value two configs can be compared on.

protobuf messages report an unset message field as an empty message and give repeated fields
as containers that compare only with their own kind; `field_value` turns each into a plain
value (None for an unset message, a list or dict for repeated fields), so that
`differing_fields` can name the top-level fields in which two configs differ.
"""

from __future__ import annotations

from typing import Any


def _is_repeated(descriptor: Any) -> bool:
    is_repeated = getattr(descriptor, "is_repeated", None)
    if is_repeated is not None:
        return bool(is_repeated)
    return descriptor.label == descriptor.LABEL_REPEATED


def field_value(message: Any, name: str) -> Any:
    """The value of field `name` of `message`: None for an unset message field, a list for
    a repeated field, a dict for a map field, else the scalar or message itself."""
    value = getattr(message, name)
    descriptor = message.DESCRIPTOR.fields_by_name[name]
    if descriptor.message_type is not None and not _is_repeated(descriptor):
        return value if message.HasField(name) else None
    if _is_repeated(descriptor):
        return list(value) if descriptor.message_type is None or not hasattr(value, "keys") \
            else dict(value)
    return value


def differing_fields(a: Any, b: Any) -> list[str]:
    """The top-level fields, sorted by name, whose values differ between messages `a` and `b`
    (a field set in only one of them counts)."""
    names = {f.name for f, _ in a.ListFields()} | {f.name for f, _ in b.ListFields()}
    return sorted(n for n in names if field_value(a, n) != field_value(b, n))
