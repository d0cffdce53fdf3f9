"""Reading envelope files: YAML with line/column for every key, and findings instead of tracebacks.

Bad files (malformed YAML, duplicate keys, binary, non-UTF-8, huge, empty, unreadable) and
schema errors all come back as findings that point at the offending line.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from triton_ops.digits import is_ascii_decimal
from triton_ops.envelope.model import Envelope
from triton_ops.findings import Finding, Severity, SourceLocations

MAX_FILE_BYTES = 1024 * 1024  # an envelope is a page of YAML; anything larger is a mistake
# How many nodes aliases may repeat in one document, all aliases together: plenty for
# `<<: *defaults` and shared lists, while a "billion laughs" stops within a few aliases.
MAX_ALIAS_NODES = 10_000

Location = tuple[int, int]  # 1-based line, column
KeyPath = tuple[str | int, ...]


# libyaml's parser is several times faster and its nodes carry the same marks; validating a
# thousand envelopes in CI is dominated by YAML parsing otherwise.
_BaseSafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


_RESOLVED_TAGS: dict[tuple[Any, Any, Any], str] = {}
_RESOLVED_TAGS_MAX = 50_000


class _LocatingLoader(_BaseSafeLoader):
    """SafeLoader that rejects duplicate keys; nodes keep where they start."""

    # The C parser calls back into Python for every node: resolving a plain scalar's tag
    # runs a list of regexes. Envelopes repeat the same keys and values, so the (pure, for a
    # SafeLoader without path resolvers) answer is memoised.
    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        key = (kind, value, implicit)
        tag = _RESOLVED_TAGS.get(key)
        if tag is None:
            tag = super().resolve(kind, value, implicit)
            if len(_RESOLVED_TAGS) < _RESOLVED_TAGS_MAX:
                _RESOLVED_TAGS[key] = tag
        return tag

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except ValueError:  # an explicit tag on a value it does not fit: `!!int ²`
            raise yaml.constructor.ConstructorError(
                None, None, f"{node.value!r} is not a value of type "
                f"{node.tag.rsplit(':', 1)[-1]}", node.start_mark) from None

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        """No path resolvers are registered: nothing to track."""

    def ascend_resolver(self) -> None:
        """No path resolvers are registered: nothing to track."""


def _construct_mapping(loader: _LocatingLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *defaults`: SafeConstructor.flatten_mapping merges it
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark
            ) from None
        if key in seen:
            first = seen[key].start_mark.line + 1
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first defined on line {first})",
                key_node.start_mark,
            )
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


_LocatingLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


def _index_locations(node: yaml.Node, path: KeyPath, out: dict[KeyPath, Location]) -> None:
    out[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            if key_node.tag.endswith(":int"):
                try:
                    key = int(key)
                except ValueError:
                    pass
            # Findings about a key point at the key itself, its children at their own lines.
            _index_locations(value_node, (*path, key), out)
            out[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_locations(item, (*path, i), out)


_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _NeedsGenericConstruction(Exception):
    """The document uses a YAML feature the fast builder leaves to PyYAML (merge keys, tags)."""


_INT_TAG = "tag:yaml.org,2002:int"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False,
          "FALSE": False}


def _build(loader: Any, node: yaml.Node, built: dict[int, Any]) -> Any:
    """Python data from a composed node.

    A direct walk instead of PyYAML's generator-based construction: validating a thousand
    envelopes is dominated by YAML. Locations are indexed from the same nodes only when a
    finding needs one (SourceMap.locate). Aliased nodes are built once and shared (as PyYAML
    does), so an alias bomb stays linear.
    """
    if isinstance(node, yaml.ScalarNode):
        tag = node.tag
        if tag == _STR_TAG:
            return node.value
        value = node.value
        if tag == _INT_TAG and is_ascii_decimal(value) and (value == "0" or value[0] != "0"):
            return int(value)  # plain decimal; 0o/0x/sexagesimal forms go to PyYAML
        if tag == _BOOL_TAG and value in _BOOLS:
            return _BOOLS[value]
        return loader.construct_object(node)
    key_id = id(node)
    if key_id in built:
        if built[key_id] is _IN_PROGRESS:
            raise yaml.constructor.ConstructorError(
                None, None, "a recursive alias (a node containing itself) is not allowed",
                node.start_mark)
        return built[key_id]
    built[key_id] = _IN_PROGRESS
    if isinstance(node, yaml.MappingNode):
        if node.tag != _MAP_TAG:
            raise _NeedsGenericConstruction
        result: dict[Any, Any] = {}
        seen: dict[Any, yaml.Node] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.tag == _STR_TAG:
                    key = key_node.value
                elif key_node.tag == _MERGE_TAG:
                    raise _NeedsGenericConstruction
                else:
                    key = loader.construct_object(key_node)
            else:
                key = _NOT_A_KEY
            try:
                hash(key)
            except TypeError:
                key = _NOT_A_KEY
            if key is _NOT_A_KEY:
                raise yaml.constructor.ConstructorError(
                    None, None, "a mapping key must be a plain value", key_node.start_mark)
            if key in seen:
                first = seen[key].start_mark.line + 1
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first defined on line {first})",
                    key_node.start_mark)
            seen[key] = key_node
            result[key] = _build(loader, value_node, built)
        built[key_id] = result
        return result
    if isinstance(node, yaml.SequenceNode):
        if node.tag != _SEQ_TAG:
            raise _NeedsGenericConstruction
        items = [_build(loader, item, built) for item in node.value]
        built[key_id] = items
        return items
    raise _NeedsGenericConstruction


_NOT_A_KEY = object()
_IN_PROGRESS = object()


class _AliasLimitError(yaml.MarkedYAMLError):
    """Aliases repeat more nodes than MAX_ALIAS_NODES; the mark is the alias that went over."""


_COLLECTION_STARTS = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
_COLLECTION_ENDS = (yaml.SequenceEndEvent, yaml.MappingEndEvent)


def _check_alias_expansion(text: str) -> None:
    """Raise _AliasLimitError at the alias after which aliases repeat over MAX_ALIAS_NODES nodes.

    Composing shares one node per anchor, so a billion laughs composes in microseconds; what
    comes after (the schema, locating a finding, helm-values) walks the expanded tree, which
    grows exponentially with nesting. The parser's events give each anchored node's size
    with the aliases inside it expanded; each alias adds its anchor's size.
    """
    if "*" not in text:
        return  # every alias starts with '*': nothing to count
    anchor_sizes: dict[str, int] = {}
    open_nodes: list[list[Any]] = []  # [anchor, size so far] of each collection being read
    repeated = 0
    for event in yaml.parse(text, Loader=_BaseSafeLoader):
        if isinstance(event, _COLLECTION_STARTS):
            open_nodes.append([event.anchor, 1])
            continue
        if isinstance(event, _COLLECTION_ENDS):
            anchor, size = open_nodes.pop()
        elif isinstance(event, yaml.ScalarEvent):
            anchor, size = event.anchor, 1
        elif isinstance(event, yaml.AliasEvent):
            # An unknown anchor is undefined or recursive: the composer reports it.
            anchor, size = None, anchor_sizes.get(event.anchor, 1)
            repeated += size
            if repeated > MAX_ALIAS_NODES:
                raise _AliasLimitError(
                    None, None, f"aliases repeat more than {MAX_ALIAS_NODES:,} nodes of this "
                    f"document (*{event.anchor} here repeats {size:,} more): nested aliases "
                    "grow exponentially (a YAML alias bomb); write the values out instead",
                    event.start_mark)
        else:
            continue
        if anchor:
            anchor_sizes[anchor] = size
        if open_nodes:
            open_nodes[-1][1] += size


@dataclass
class SourceMap(SourceLocations):
    """Where each key path of a YAML document is, to point findings at lines."""

    # The composed YAML node tree; `locations` is filled from it on the first `locate`
    # (most files have no findings, and indexing every node costs as much as parsing).
    root: Any = field(default=None, repr=False, compare=False)

    def locate(self, path: KeyPath) -> Location:
        """The location of `path`, or of its closest existing parent."""
        if self.root is not None:
            root, self.root = self.root, None
            try:
                _index_locations(root, (), self.locations)
            except RecursionError:  # absurdly deep documents: the outer paths are indexed
                pass
        return super().locate(path)


@dataclass
class LoadedEnvelope:
    path: Path
    envelope: Envelope | None
    source: SourceMap
    data: Any = None
    findings: list[Finding] = field(default_factory=list)


def read_text(path: Path, rule_prefix: str = "file") -> tuple[str | None, list[Finding]]:
    """Read a small UTF-8 text file, or say precisely why it cannot be read."""
    name = str(path)

    def fail(rule: str, message: str) -> tuple[None, list[Finding]]:
        return None, [Finding(name, 0, 0, f"{rule_prefix}-{rule}", Severity.ERROR, message)]

    try:
        if path.is_symlink():
            path.resolve(strict=True)  # raises on loops and dangling links
        size = path.stat().st_size
    except RuntimeError:
        return fail("unreadable", "symbolic link loop; point the link at a real file")
    except OSError as exc:
        return fail("unreadable", f"cannot read file: {exc.strerror or exc}")
    if not path.is_file():
        return fail("unreadable", "not a regular file")
    if size > MAX_FILE_BYTES:
        return fail("too-large", f"file is {size} bytes; the limit is {MAX_FILE_BYTES} bytes")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return fail("unreadable", f"cannot read file: {exc.strerror or exc}")
    if b"\x00" in raw:
        return fail("binary", "file looks binary (contains NUL bytes); expected UTF-8 text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return fail("encoding", f"not valid UTF-8 at byte {exc.start}; save the file as UTF-8")
    if not text.strip():
        return fail("empty", "file is empty")
    return text, []


def _yaml_error_finding(exc: yaml.MarkedYAMLError, file: str) -> Finding:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    message = " ".join(str(p) for p in (exc.context, exc.problem) if p)
    if isinstance(exc, _AliasLimitError):
        rule = "yaml-alias-expansion"
    elif "duplicate key" in message:
        rule = "yaml-duplicate-key"
    else:
        rule = "yaml-syntax"
    return Finding(file, line, col, rule, Severity.ERROR, message)


def parse_yaml(text: str, file: str) -> tuple[Any, SourceMap, list[Finding]]:
    """Parse one YAML document, with a source map; errors come back as findings."""
    source = SourceMap(file)
    try:
        _check_alias_expansion(text)
    except yaml.MarkedYAMLError as exc:
        return None, source, [_yaml_error_finding(exc, file)]
    loader = _LocatingLoader(text)
    try:
        # One parse: compose the node tree (for locations), then build Python data from it.
        node = loader.get_single_node()
        if node is None:
            return None, source, [Finding(file, 1, 1, "yaml-syntax", Severity.ERROR,
                                          "document is empty")]
        source.root = node
        try:
            data = _build(loader, node, {})
        except _NeedsGenericConstruction:
            data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        return None, source, [_yaml_error_finding(exc, file)]
    except yaml.YAMLError as exc:
        return None, source, [Finding(file, 1, 1, "yaml-syntax", Severity.ERROR, str(exc))]
    except RecursionError:
        return None, source, [Finding(file, 1, 1, "yaml-syntax", Severity.ERROR,
                                      "document is nested too deeply")]
    finally:
        loader.dispose()
    return data, source, []


def _known_fields(model: type[BaseModel], loc: KeyPath) -> list[str]:
    """Field names valid at `loc` (the parent of an unknown key), for 'did you mean'."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        fields = getattr(current, "model_fields", {})
        if part not in fields:
            # dict keys (e.g. priority_queue_policy levels) or list indices: look inside
            continue
        current = _submodel(fields[part].annotation)
    return list(getattr(current, "model_fields", {}) or [])


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _submodel(arg)
        if found is not None:
            return found
    return None


def did_you_mean(key: str, known: list[str]) -> list[str]:
    """The known name a mistyped key most likely meant (at most one).

    difflib alone misses truncated names ('preferd' for 'preferred_batch_sizes': ratio 0.5),
    so names that share a long prefix with the key, or contain it, are tried next.
    """
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return close
    lowered = key.lower()
    if len(lowered) < 3:
        return []

    def shared_prefix(name: str) -> int:
        n = 0
        for a, b in zip(lowered, name.lower(), strict=False):
            if a != b:
                break
            n += 1
        return n

    best = max(known, key=shared_prefix, default=None)
    if best is not None and shared_prefix(best) >= max(4, (len(lowered) * 2 + 2) // 3):
        return [best]
    contains = [name for name in known if lowered in name.lower()]
    return contains[:1]


def validation_findings(exc: ValidationError, source: SourceMap,
                        model: type[BaseModel] = Envelope) -> list[Finding]:
    findings = []
    for error in exc.errors():
        loc: KeyPath = tuple(error["loc"])
        if error["type"] == "extra_forbidden":
            key = str(loc[-1])
            known = _known_fields(model, loc[:-1])
            hint = did_you_mean(key, known)
            message = f"unknown key {key!r}" + (f"; did you mean {hint[0]!r}?" if hint else
                                                 f"; allowed here: {', '.join(known)}")
            findings.append(source.finding(loc, "envelope-unknown-key", message))
            continue
        where = ".".join(str(p) for p in loc) or "document"
        message = error["msg"].removeprefix("Value error, ")
        findings.append(source.finding(loc, "envelope-schema", f"{where}: {message}"))
    return findings


def load_envelope(path: Path | str) -> LoadedEnvelope:
    """Load and validate one envelope file; never raises for bad content."""
    path = Path(path)
    text, findings = read_text(path, "envelope")
    if text is None:
        return LoadedEnvelope(path, None, SourceMap(str(path)), findings=findings)
    data, source, findings = parse_yaml(text, str(path))
    if findings:
        return LoadedEnvelope(path, None, source, findings=findings)
    if not isinstance(data, dict):
        return LoadedEnvelope(path, None, source, data, [source.finding(
            (), "envelope-schema", "an envelope must be a YAML mapping (key: value pairs)")])
    try:
        envelope = Envelope.model_validate(data)
    except ValidationError as exc:
        return LoadedEnvelope(path, None, source, data, validation_findings(exc, source))
    return LoadedEnvelope(path, envelope, source, data)


class EnvelopeError(Exception):
    """Raised by `require_envelope` for commands that need a valid envelope to go on."""

    def __init__(self, findings: list[Finding]):
        self.findings = findings
        super().__init__("; ".join(f"{f.file}:{f.line}:{f.column}: {f.message}" for f in findings))


def require_envelope(path: Path | str) -> Envelope:
    """Load an envelope or raise EnvelopeError with its findings (for tune, rollout, probe)."""
    loaded = load_envelope(path)
    if loaded.envelope is None:
        raise EnvelopeError(loaded.findings)
    return loaded.envelope


def find_envelope(model: str, envelopes_dir: Path | str = "envelopes") -> Path:
    """The envelope file of `model` in `envelopes_dir` (<model>.yaml or .yml)."""
    base = Path(envelopes_dir)
    for suffix in (".yaml", ".yml"):
        candidate = base / f"{model}{suffix}"
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"no envelope for model {model!r} in {base}/ (expected {model}.yaml)")
