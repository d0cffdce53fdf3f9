"""Adopting an existing model: config.pbtxt -> envelope YAML.

The envelope written is checked before it is returned: rendering it must give back a
ModelConfig equal to the one read (`generate` after `import` changes nothing), except for the
normalisations listed in the notes (an implicit version policy made explicit, an instance
count of 0 made 1, an empty name filled in). Fields the envelope does not model go to
`passthrough` in protobuf JSON form.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from triton_ops.digits import is_ascii_decimal
from triton_ops.envelope.units import format_duration_us


class ImportRefused(Exception):
    """The model cannot be described by an envelope (e.g. it uses sequence batching)."""


@dataclass
class ImportResult:
    data: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def _enum_name(message: Any, field_name: str) -> str:
    enum = message.DESCRIPTOR.fields_by_name[field_name].enum_type
    return enum.values_by_number[getattr(message, field_name)].name


def _tensor(message: Any, is_input: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": message.name,
        "data_type": _enum_name(message, "data_type").removeprefix("TYPE_"),
        "dims": list(message.dims),
    }
    if message.HasField("reshape"):
        spec["reshape"] = list(message.reshape.shape)
    if is_input:
        if message.format:
            spec["format"] = _enum_name(message, "format")
        if message.optional:
            spec["optional"] = True
        if message.allow_ragged_batch:
            spec["allow_ragged_batch"] = True
    elif message.label_filename:
        spec["label_filename"] = message.label_filename
    if message.is_shape_tensor:
        spec["is_shape_tensor"] = True
    if message.is_non_linear_format_io:
        spec["is_non_linear_format_io"] = True
    return spec


def _queue_policy(message: Any) -> dict[str, Any]:
    policy: dict[str, Any] = {"timeout_action": _enum_name(message, "timeout_action")}
    if message.default_timeout_microseconds:
        policy["default_timeout"] = format_duration_us(message.default_timeout_microseconds)
    if message.allow_timeout_override:
        policy["allow_timeout_override"] = True
    if message.max_queue_size:
        policy["max_queue_size"] = message.max_queue_size
    return policy


def _dynamic(message: Any) -> dict[str, Any]:
    dynamic: dict[str, Any] = {}
    if message.preferred_batch_size:
        dynamic["preferred_batch_sizes"] = list(message.preferred_batch_size)
    if message.max_queue_delay_microseconds:
        dynamic["max_queue_delay"] = format_duration_us(message.max_queue_delay_microseconds)
    if message.preserve_ordering:
        dynamic["preserve_ordering"] = True
    if message.priority_levels:
        dynamic["priority_levels"] = message.priority_levels
    if message.default_priority_level:
        dynamic["default_priority_level"] = message.default_priority_level
    if message.HasField("default_queue_policy"):
        dynamic["default_queue_policy"] = _queue_policy(message.default_queue_policy)
    if message.priority_queue_policy:
        dynamic["priority_queue_policy"] = {
            int(level): _queue_policy(message.priority_queue_policy[level])
            for level in sorted(message.priority_queue_policy)
        }
    return dynamic


def _instance_group(message: Any, index: int, notes: list[str]) -> dict[str, Any]:
    for unsupported in ("rate_limiter", "secondary_devices"):
        present = (message.HasField(unsupported) if unsupported == "rate_limiter"
                   else len(message.secondary_devices) > 0)
        if present:
            raise ImportRefused(
                f"instance_group {index} uses {unsupported}, which envelopes do not model; "
                "keep the hand-written config.pbtxt and check it with `triton-ops validate`"
            )
    group: dict[str, Any] = {}
    if message.name:
        group["name"] = message.name
    group["kind"] = _enum_name(message, "kind").removeprefix("KIND_")
    count = message.count
    if count == 0:
        notes.append(f"instance_group {index}: count 0 (Triton's default) written as count 1")
        count = 1
    group["count"] = count
    if message.gpus:
        group["gpus"] = list(message.gpus)
    if message.profile:
        group["profile"] = list(message.profile)
    if message.passive:
        group["passive"] = True
    if message.host_policy:
        group["host_policy"] = message.host_policy
    return group


def _version_folders(model_dir: Path | None) -> list[int]:
    if model_dir is None or not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir()
                  if p.is_dir() and is_ascii_decimal(p.name) and int(p.name) > 0)


def _versions(config: Any, model_dir: Path | None, notes: list[str]) -> list[int]:
    policy = config.version_policy
    which = policy.WhichOneof("policy_choice") if config.HasField("version_policy") else None
    if which == "specific":
        return sorted(set(policy.specific.versions)) or [1]
    folders = _version_folders(model_dir)
    if which == "all":
        versions = folders or [1]
        notes.append(f"version_policy 'all' written as the versions found: {versions}")
        return versions
    latest = max(policy.latest.num_versions, 1) if which == "latest" else 1
    versions = folders[-latest:] or [1]
    what = f"'latest {{ num_versions: {latest} }}'" if which else "not set (Triton: latest 1)"
    notes.append(f"version_policy {what} written as the explicit versions {versions}")
    return versions


def config_to_envelope(config: Any, model_dir: Path | None = None) -> ImportResult:
    """Envelope data (plain dict, human units) describing `config`. Raises ImportRefused."""
    from google.protobuf import json_format

    from triton_ops.modelconfig.proto import ModelConfig
    from triton_ops.modelconfig.render import MODELLED_FIELDS

    if config.HasField("sequence_batching"):
        raise ImportRefused(
            "this model uses sequence batching, which envelopes do not support; it cannot be "
            "adopted. Keep its hand-written config.pbtxt: `triton-ops validate` still checks it"
        )
    notes: list[str] = []
    name = config.name
    folder_name = model_dir.name if model_dir is not None else ""
    if not name:
        if not folder_name:
            raise ImportRefused("the config has no name; import it from its model folder")
        name = folder_name
        notes.append(f"name was empty: set to the folder name {name!r}")
    elif folder_name and name != folder_name:
        notes.append(f"name {name!r} differs from the folder name {folder_name!r}: Triton "
                     "refuses to load such a model; rename one of them")
    if not config.backend and not config.platform:
        raise ImportRefused("the config names neither backend nor platform (Triton infers them "
                            "from the model file); add `backend: \"...\"` to it, then import")
    data: dict[str, Any] = {"name": name}
    if config.backend:
        data["backend"] = config.backend
    if config.platform:
        data["platform"] = config.platform
    if config.runtime:
        data["runtime_library"] = config.runtime
    if config.default_model_filename:
        data["default_model_filename"] = config.default_model_filename
    data["versions"] = _versions(config, model_dir, notes)
    if config.input:
        data["inputs"] = [_tensor(t, True) for t in config.input]
        variable = [t.name for t in config.input if any(d == -1 for d in t.dims)]
        if variable:
            notes.append(f"inputs {', '.join(variable)} have variable (-1) dims: add max_dims "
                         "(the largest size a request may use) to the envelope")
    if config.output:
        data["outputs"] = [_tensor(t, False) for t in config.output]
    batching: dict[str, Any] = {"max_batch_size": config.max_batch_size}
    if config.HasField("dynamic_batching"):
        batching["dynamic"] = _dynamic(config.dynamic_batching)
    data["batching"] = batching
    if config.instance_group:
        data["instances"] = [_instance_group(g, i, notes)
                             for i, g in enumerate(config.instance_group)]
    if config.parameters:
        data["parameters"] = {k: config.parameters[k].string_value
                              for k in sorted(config.parameters)}
    rest = ModelConfig()
    rest.CopyFrom(config)
    for name_ in MODELLED_FIELDS:
        rest.ClearField(name_)
    passthrough = _readable_ints(json_format.MessageToDict(rest), ModelConfig.DESCRIPTOR)
    if passthrough:
        data["passthrough"] = passthrough
    return ImportResult(data, notes)


_INT64_TYPES = frozenset({3, 4, 6, 16, 18})  # INT64, UINT64, FIXED64, SFIXED64, SINT64


def _readable_ints(value: Any, descriptor: Any) -> Any:
    """Protobuf JSON writes 64-bit integers as strings ("dims": ["3"]); write them as numbers.

    Walks the dict alongside the message descriptor, so only real int64 fields change
    (ParseDict accepts both spellings, so the round trip is unaffected).
    """
    if not isinstance(value, dict):
        return value
    fields = {f.json_name: f for f in descriptor.fields} | {f.name: f for f in descriptor.fields}
    out: dict[str, Any] = {}
    for key, item in value.items():
        field = fields.get(key)
        out[key] = item if field is None else _readable_field(item, field)
    return out


def _readable_field(item: Any, field: Any) -> Any:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        return {k: _readable_field(v, value_field) for k, v in item.items()} \
            if isinstance(item, dict) else item
    if isinstance(item, list):
        return [_readable_one(x, field) for x in item]
    return _readable_one(item, field)


def _readable_one(item: Any, field: Any) -> Any:
    if field.message_type is not None:
        return _readable_ints(item, field.message_type)
    if field.type in _INT64_TYPES and isinstance(item, str) and is_ascii_decimal(item.lstrip("-")):
        return int(item)
    return item


def verify_round_trip(result: ImportResult, config: Any) -> list[str]:
    """Top-level fields where rendering the imported envelope differs from `config`."""
    from triton_ops.envelope.model import Envelope
    from triton_ops.modelconfig.render import render_model_config

    rendered = render_model_config(Envelope.model_validate(result.data))
    names = {f.name for f, _ in rendered.ListFields()} | {f.name for f, _ in config.ListFields()}
    return sorted(n for n in names
                  if _field_value(rendered, n) != _field_value(config, n))


def _field_value(message: Any, name: str) -> Any:
    value = getattr(message, name)
    descriptor = message.DESCRIPTOR.fields_by_name[name]
    if descriptor.message_type is not None and not _is_repeated(descriptor):
        return value if message.HasField(name) else None
    if _is_repeated(descriptor):
        return list(value) if descriptor.message_type is None or not hasattr(value, "keys") \
            else dict(value)
    return value


def _is_repeated(descriptor: Any) -> bool:
    is_repeated = getattr(descriptor, "is_repeated", None)
    if is_repeated is not None:
        return bool(is_repeated)
    return descriptor.label == descriptor.LABEL_REPEATED


def read_model_config(config_path: Path) -> tuple[Any | None, list[str]]:
    """Parse a config.pbtxt; (None, problems) when it cannot be read or parsed."""
    from triton_ops.envelope.loader import read_text

    text, findings = read_text(config_path, "config")
    if text is None:
        return None, [f"{f.file}: {f.message}" for f in findings]
    try:
        from triton_ops.modelconfig.parse import parse_config_text
    except ImportError:  # the parser with locations is optional for importing
        parse_config_text = None
    if parse_config_text is not None:
        config, _source, problems = parse_config_text(text, str(config_path))
        if config is None:
            return None, [f"{f.file}:{f.line}:{f.column}: {f.message}" for f in problems]
        return config, []
    from google.protobuf import text_format

    from triton_ops.modelconfig.proto import ModelConfig

    config = ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        return None, [f"{config_path}:{exc}"]
    return config, []


def import_model_dir(model_dir: Path) -> ImportResult:
    """Envelope data for the model in `model_dir` (a folder holding config.pbtxt).

    Raises ImportRefused with a message for a person when it cannot be adopted.
    """
    config_path = model_dir / "config.pbtxt"
    if model_dir.is_file() and model_dir.name.endswith(".pbtxt"):
        config_path, model_dir = model_dir, model_dir.parent
    if not config_path.exists():
        raise ImportRefused(f"{config_path} does not exist: give a model folder holding "
                            "config.pbtxt")
    config, problems = read_model_config(config_path)
    if config is None:
        raise ImportRefused("cannot parse the config: " + "; ".join(problems))
    result = config_to_envelope(config, model_dir.resolve())
    differing = verify_round_trip(result, config)
    # Only the normalisations the notes describe may differ.
    explained = set()
    if config.version_policy.WhichOneof("policy_choice") != "specific":
        explained.add("version_policy")
    if any(group.count == 0 for group in config.instance_group):
        explained.add("instance_group")
    if not config.name:
        explained.add("name")
    unexplained = [f for f in differing if f not in explained]
    if unexplained:
        raise ImportRefused("the envelope would not reproduce fields "
                            f"{', '.join(unexplained)} of this config; it cannot be adopted "
                            "as is")
    return result


def envelope_yaml(result: ImportResult, source: str) -> str:
    """The envelope as YAML text, with a header saying where it came from and the notes."""
    import yaml

    lines = [f"# Envelope imported by `triton-ops import` from {source}.",
             "# Add slo, resources and hardware so `triton-ops validate` can check them."]
    lines += [f"# NOTE: {note}" for note in result.notes]
    body = yaml.safe_dump(result.data, sort_keys=False, default_flow_style=None,
                          allow_unicode=True, width=100)
    return "\n".join(lines) + "\n" + body
