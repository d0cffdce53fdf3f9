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

from triton_ops.digits import is_ascii_decimal, is_version_folder_name
from triton_ops.envelope.units import format_duration_us

# Backends whose CPU instance groups default to 2 instances (SetDefaultInstanceCount).
_TWO_CPU_INSTANCES = frozenset({"tensorflow", "onnxruntime"})
_PLATFORM_BACKEND = {
    "tensorflow_graphdef": "tensorflow", "tensorflow_savedmodel": "tensorflow",
    "tensorrt_plan": "tensorrt", "onnxruntime_onnx": "onnxruntime",
    "pytorch_libtorch": "pytorch",
}


class ImportRefused(Exception):
    """The model cannot be described by an envelope (e.g. an instance group with a rate limiter)."""


@dataclass
class ImportResult:
    data: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def shown(text: str) -> str:
    """A name from a config as notes and messages show it: quoted, with line breaks, control
    characters and other non-printable ones escaped (a note is a YAML comment and a line on
    the terminal; a raw line break in it would start a new line of YAML)."""
    return repr(text)


def _enum_name(message: Any, field_name: str, where: str) -> str:
    enum = message.DESCRIPTOR.fields_by_name[field_name].enum_type
    number = getattr(message, field_name)
    value = enum.values_by_number.get(number)
    if value is None:
        allowed = ", ".join(v.name for v in enum.values)
        raise ImportRefused(f"{where} has {field_name} {number}, which is no value Triton "
                            f"defines ({allowed}); fix the config, then import")
    return value.name


def _tensor(message: Any, is_input: bool) -> dict[str, Any]:
    where = f"{'input' if is_input else 'output'} {shown(message.name)}"
    spec: dict[str, Any] = {
        "name": message.name,
        "data_type": _enum_name(message, "data_type", where).removeprefix("TYPE_"),
        "dims": list(message.dims),
    }
    if message.HasField("reshape"):
        spec["reshape"] = list(message.reshape.shape)
    if is_input:
        if message.format:
            spec["format"] = _enum_name(message, "format", where)
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
    policy: dict[str, Any] = {
        "timeout_action": _enum_name(message, "timeout_action", "a queue policy")}
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


def _data_type(message: Any, where: str) -> str:
    return _enum_name(message, "data_type", where).removeprefix("TYPE_")


def _controls(message: Any) -> list[dict[str, Any]]:
    """One entry per control, flat: consecutive entries with the same name are the controls
    of one control_input (render groups them back)."""
    controls = []
    for i, control_input in enumerate(message.control_input):
        for j, control in enumerate(control_input.control):
            where = f"sequence control {shown(control_input.name)} (control_input {i}, #{j})"
            entry: dict[str, Any] = {
                "name": control_input.name,
                "kind": _enum_name(control, "kind", where).removeprefix("CONTROL_SEQUENCE_")}
            for values in ("int32_false_true", "fp32_false_true", "bool_false_true"):
                if getattr(control, values):
                    entry[values] = list(getattr(control, values))
            if control.data_type:
                entry["data_type"] = _data_type(control, where)
            controls.append(entry)
    return controls


def _states(message: Any) -> list[dict[str, Any]]:
    states = []
    for i, state in enumerate(message.state):
        where = f"sequence state {i} ({shown(state.input_name)})"
        entry: dict[str, Any] = {"input_name": state.input_name,
                                 "output_name": state.output_name}
        if state.data_type:
            entry["data_type"] = _data_type(state, where)
        entry["dims"] = list(state.dims)
        initial_states = []
        for init in state.initial_state:
            initial: dict[str, Any] = {"name": init.name}
            if init.data_type:
                initial["data_type"] = _data_type(init, f"{where} initial_state")
            initial["dims"] = list(init.dims)
            source = init.WhichOneof("state_data")
            if source is not None:
                initial[source] = getattr(init, source)
            initial_states.append(initial)
        if initial_states:
            entry["initial_state"] = initial_states
        for flag in ("use_same_buffer_for_input_output", "use_growable_memory"):
            if getattr(state, flag):
                entry[flag] = True
        states.append(entry)
    return states


def _sequence(message: Any) -> dict[str, Any]:
    sequence: dict[str, Any] = {}
    if message.max_sequence_idle_microseconds:
        sequence["max_sequence_idle"] = format_duration_us(
            message.max_sequence_idle_microseconds)
    strategy = message.WhichOneof("strategy_choice")
    if strategy == "direct":
        direct: dict[str, Any] = {}
        if message.direct.max_queue_delay_microseconds:
            direct["max_queue_delay"] = format_duration_us(
                message.direct.max_queue_delay_microseconds)
        if message.direct.minimum_slot_utilization:
            direct["minimum_slot_utilization"] = message.direct.minimum_slot_utilization
        sequence["direct"] = direct
    elif strategy == "oldest":
        oldest: dict[str, Any] = {}
        if message.oldest.max_candidate_sequences:
            oldest["max_candidate_sequences"] = message.oldest.max_candidate_sequences
        if message.oldest.preferred_batch_size:
            oldest["preferred_batch_sizes"] = list(message.oldest.preferred_batch_size)
        if message.oldest.max_queue_delay_microseconds:
            oldest["max_queue_delay"] = format_duration_us(
                message.oldest.max_queue_delay_microseconds)
        if message.oldest.preserve_ordering:
            oldest["preserve_ordering"] = True
        sequence["oldest"] = oldest
    if message.control_input:
        sequence["controls"] = _controls(message)
    if message.state:
        sequence["states"] = _states(message)
    if message.iterative_sequence:
        sequence["iterative"] = True
    return sequence


def triton_default_count(kind: str, backend: str) -> int:
    """The instance count Triton uses for a group whose count is below 1: 1, or 2 for CPU
    groups of the tensorflow and onnxruntime backends (SetDefaultInstanceCount)."""
    return 2 if kind == "CPU" and backend in _TWO_CPU_INSTANCES else 1


def _instance_group(message: Any, index: int, backend: str, notes: list[str]
                    ) -> dict[str, Any]:
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
    group["kind"] = _enum_name(message, "kind", f"instance_group {index}").removeprefix("KIND_")
    count = message.count
    if count < 1:
        default = triton_default_count(group["kind"], backend)
        notes.append(f"instance_group {index}: count {count} means Triton's default, written "
                     f"as count {default}")
        count = default
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
                  if is_version_folder_name(p.name) and p.is_dir())


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


def _model_name(config: Any, model_dir: Path | None, notes: list[str]) -> str:
    name = config.name
    folder_name = model_dir.name if model_dir is not None else ""
    if not name:
        if not folder_name:
            raise ImportRefused("the config has no name; import it from its model folder")
        notes.append(f"name was empty: set to the folder name {shown(folder_name)}")
        return folder_name
    if folder_name and name != folder_name:
        notes.append(f"name {shown(name)} differs from the folder name {shown(folder_name)}: "
                     "Triton refuses to load such a model; rename one of them")
    return name


def _passthrough(config: Any) -> dict[str, Any]:
    """The fields the envelope does not model, in protobuf JSON form."""
    from google.protobuf import json_format

    from triton_ops.modelconfig.proto import ModelConfig
    from triton_ops.modelconfig.render import MODELLED_FIELDS

    rest = ModelConfig()
    rest.CopyFrom(config)
    for name in MODELLED_FIELDS:
        rest.ClearField(name)
    return _readable_ints(json_format.MessageToDict(rest), ModelConfig.DESCRIPTOR)


def config_to_envelope(config: Any, model_dir: Path | None = None) -> ImportResult:
    """Envelope data (plain dict, human units) describing `config`. Raises ImportRefused."""
    notes: list[str] = []
    data: dict[str, Any] = {"name": _model_name(config, model_dir, notes)}
    if not config.backend and not config.platform:
        key, value = _inferred_backend(config, model_dir, notes)
        data[key] = value
    for config_field, key in (("backend", "backend"), ("platform", "platform"),
                              ("runtime", "runtime_library"),
                              ("default_model_filename", "default_model_filename")):
        if getattr(config, config_field):
            data[key] = getattr(config, config_field)
    data["versions"] = _versions(config, model_dir, notes)
    if config.input:
        data["inputs"] = [_tensor(t, True) for t in config.input]
        variable = [t.name for t in config.input if any(d == -1 for d in t.dims)]
        if variable:
            notes.append(f"inputs {', '.join(map(shown, variable))} have variable (-1) dims: "
                         "add max_dims (the largest size a request may use) to the envelope")
    if config.output:
        data["outputs"] = [_tensor(t, False) for t in config.output]
    batching: dict[str, Any] = {"max_batch_size": config.max_batch_size}
    if config.HasField("dynamic_batching"):
        batching["dynamic"] = _dynamic(config.dynamic_batching)
    if config.HasField("sequence_batching"):
        batching["sequence"] = _sequence(config.sequence_batching)
    data["batching"] = batching
    if config.instance_group:
        backend = data.get("backend") or _PLATFORM_BACKEND.get(data.get("platform", ""), "")
        data["instances"] = [_instance_group(g, i, backend, notes)
                             for i, g in enumerate(config.instance_group)]
    if config.parameters:
        data["parameters"] = {k: config.parameters[k].string_value
                              for k in sorted(config.parameters)}
    passthrough = _passthrough(config)
    if passthrough:
        data["passthrough"] = passthrough
    validated_envelope(data)
    return ImportResult(data, notes)


def _inferred_backend(config: Any, model_dir: Path | None, notes: list[str]
                      ) -> tuple[str, str]:
    """("backend" or "platform", value) Triton picks for a config naming neither, from the
    model folder the way its auto-complete does. Raises ImportRefused when it cannot."""
    from triton_ops.modelconfig.autocomplete import (
        PLATFORM_OF_TF_FILE,
        complete,
        scan_model_files,
    )

    if model_dir is None or not model_dir.is_dir():
        raise ImportRefused("the config names neither backend nor platform, which Triton "
                            "infers from the model folder; import it from its model folder")
    completion = complete(config, scan_model_files(model_dir))
    completed = completion.config
    if not completed.backend:
        raise ImportRefused(f"{completion.undetermined or 'Triton cannot pick a backend'}; add "
                            "`backend: \"...\"` to the config, then import")
    # TensorFlow needs its platform (the backend follows from it); the others their backend.
    if completed.platform in PLATFORM_OF_TF_FILE.values():
        key, value = "platform", completed.platform
    else:
        key, value = "backend", completed.backend
    files = completion.files
    source = (f"{files.first_folder}/{completed.default_model_filename}"
              if files is not None and completed.default_model_filename in files.entries
              else f"the model name {shown(model_dir.name)}")
    notes.append(f"the config names neither backend nor platform: Triton infers {key} "
                 f"{shown(value)} from {source}; written as {key}: {value}")
    return key, value


def validated_envelope(data: dict[str, Any]) -> Any:
    """The Envelope `data` describes; ImportRefused saying what the schema refuses."""
    from pydantic import ValidationError

    from triton_ops.envelope.model import Envelope

    try:
        return Envelope.model_validate(data)
    except ValidationError as exc:
        problems = [f"{'.'.join(map(str, e['loc'])) or 'envelope'}: "
                    f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors()]
        raise ImportRefused("the config cannot be written as an envelope: "
                            + "; ".join(problems)) from None


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
    from triton_ops.modelconfig.fields import differing_fields
    from triton_ops.modelconfig.render import render_model_config

    return differing_fields(render_model_config(validated_envelope(result.data)), config)


def read_model_config(config_path: Path) -> tuple[Any | None, list[str]]:
    """Parse a config.pbtxt; (None, problems) when it cannot be read or parsed."""
    from triton_ops.envelope.loader import read_text

    text, findings = read_text(config_path, "config")
    if text is None and [f.rule for f in findings] == ["config-empty"]:
        text = ""  # an empty config is one Triton completes from the model folder
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
    if any(group.count < 1 for group in config.instance_group):
        explained.add("instance_group")
    if not config.name:
        explained.add("name")
    if not config.backend and not config.platform:
        explained |= {"backend", "platform"}
    unexplained = [f for f in differing if f not in explained]
    if unexplained:
        raise ImportRefused("the envelope would not reproduce fields "
                            f"{', '.join(unexplained)} of this config; it cannot be adopted "
                            "as is")
    return result


def envelope_yaml(result: ImportResult, source: str) -> str:
    """The envelope as YAML text, with a header saying where it came from and the notes."""
    from triton_ops.modelconfig.render import comment_text

    lines = [f"# Envelope imported by `triton-ops import` from {comment_text(source)}.",
             "# Add slo, resources and hardware so `triton-ops validate` can check them."]
    lines += [f"# NOTE: {comment_text(note)}" for note in result.notes]
    body = _yaml_exactly(result.data)
    return "\n".join(lines) + "\n" + body


def _yaml_exactly(data: dict[str, Any]) -> str:
    """YAML that reads back as `data`, with no raw control or line-separator characters.

    Readable UTF-8 first; but PyYAML writes some characters YAML and editors treat as line
    breaks (\\x85, \\u2028) raw, and reading may fold them: then every non-ASCII
    character is escaped instead."""
    import yaml

    for allow_unicode in (True, False):
        body = yaml.safe_dump(data, sort_keys=False, default_flow_style=None,
                              allow_unicode=allow_unicode, width=100)
        printable = all(c == "\n" or c.isprintable() for c in body)
        if printable and yaml.safe_load(body) == data:
            return body
    raise ImportRefused("the envelope cannot be written as YAML that reads back the same")
