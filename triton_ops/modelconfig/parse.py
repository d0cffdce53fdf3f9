"""Parsing config.pbtxt into a ModelConfig, with the line and column of every field.

The Python protobuf runtime has no public equivalent of C++'s `TextFormat::ParseInfoTree`,
so locations are recorded by a thin subclass of `text_format`'s own parser: it notes where
each field (and each element of a repeated field, and each map entry by its key) starts,
while protobuf itself does all the parsing. The parse therefore accepts and rejects exactly
what `text_format.Parse` does (duplicate singular fields, unknown fields and bad enum names
are errors, as they are for Triton's C++ `TextFormat::ParseFromString`).

Paths are tuples of field names, repeated-field indexes and map keys, e.g.
`("input", 0, "dims", 1)` or `("dynamic_batching", "priority_queue_policy", 2)`.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

from google.protobuf import text_format

from triton_ops.findings import Finding, Severity, SourceLocations
from triton_ops.modelconfig.proto import ModelConfig

Location = tuple[int, int]  # 1-based line, column
FieldPath = tuple[str | int, ...]

PARSE_RULE = "config-parse"


@dataclass
class ConfigSourceMap(SourceLocations):
    """Where each field path of a config.pbtxt text lives."""


class _PendingKey:
    """Stands in for a map key in paths until the entry's `key` has been read."""

    __slots__ = ("key",)

    def __init__(self) -> None:
        self.key: Any = None


class _LocatingParser(text_format._Parser):  # noqa: SLF001 - no public locating parser
    """text_format's parser, recording the position of every field it merges."""

    def __init__(self) -> None:
        super().__init__()
        self.locations: dict[tuple[Any, ...], Location] = {}
        self._path: tuple[Any, ...] = ()
        self._field_start: Location = (1, 1)
        self._pending: list[_PendingKey] = []

    @staticmethod
    def _here(tokenizer: text_format.Tokenizer) -> Location:
        return (tokenizer._line + 1, tokenizer._column + 1)  # noqa: SLF001

    def _MergeField(self, tokenizer: text_format.Tokenizer, message: Any) -> None:  # noqa: N802
        self._field_start = self._here(tokenizer)
        super()._MergeField(tokenizer, message)

    def _note_field(self, name: str) -> tuple[Any, ...]:
        path = (*self._path, name)
        self.locations.setdefault(path, self._field_start)
        return path

    def _MergeMessageField(self, tokenizer: text_format.Tokenizer, message: Any,  # noqa: N802
                           field: Any) -> None:
        path = self._note_field(field.name)
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        element: Any
        if is_map:
            element = _PendingKey()
            self._pending.append(element)
        elif field.is_repeated:
            element = len(getattr(message, field.name))
        else:
            element = None
        saved = self._path
        inner = (*path, element) if element is not None else path
        if element is not None:
            self.locations.setdefault(inner, self._here(tokenizer))
        self._path = inner
        try:
            super()._MergeMessageField(tokenizer, message, field)
        finally:
            self._path = saved
        if is_map:
            self._pending.pop()
            self._resolve(element)

    def _MergeScalarField(self, tokenizer: text_format.Tokenizer, message: Any,  # noqa: N802
                          field: Any) -> None:
        path = self._note_field(field.name)
        if field.is_repeated:
            self.locations.setdefault(
                (*path, len(getattr(message, field.name))), self._here(tokenizer))
        super()._MergeScalarField(tokenizer, message, field)
        if (field.name == "key" and self._pending and self._path
                and self._path[-1] is self._pending[-1]):
            self._pending[-1].key = message.key

    def _resolve(self, pending: _PendingKey) -> None:
        """Replace a pending map key in recorded paths by the key that was read."""
        key = pending.key
        for path in [p for p in self.locations if any(e is pending for e in p)]:
            location = self.locations.pop(path)
            fixed = tuple(key if e is pending else e for e in path)
            self.locations.setdefault(fixed, location)


_ERROR_PREFIX = re.compile(r"^\d+(?::\d+)? : ")
_LINE_ECHO = re.compile(r"^'.*?': ")


_UNKNOWN_FIELD = re.compile(r'Message type "([\w.]+)" has no field named "(\w+)"')
_UNKNOWN_ENUM = re.compile(r'Enum type "([\w.]+)" has no value named (\w+)')


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _clean_parse_message(exc: text_format.ParseError) -> str:
    message = _LINE_ECHO.sub("", _ERROR_PREFIX.sub("", str(exc)))
    pool = ModelConfig.DESCRIPTOR.file.pool
    if match := _UNKNOWN_FIELD.search(message):
        try:
            names = list(pool.FindMessageTypeByName(match[1]).fields_by_name)
        except KeyError:
            names = []
        message = (f"'{match[2]}' is not a field of {match[1].removeprefix('inference.')}"
                   f"{_suggest(match[2], names)}")
    elif match := _UNKNOWN_ENUM.search(message):
        try:
            values = list(pool.FindEnumTypeByName(match[1]).values_by_name)
        except KeyError:
            values = []
        message = (f"'{match[2]}' is not a value of {match[1].removeprefix('inference.')}"
                   f"{_suggest(match[2], values)}")
    return message.replace('Message type "inference.', 'Message type "')


def parse_config_text(text: str, file: str
                      ) -> tuple[ModelConfig | None, ConfigSourceMap, list[Finding]]:
    """Parse config.pbtxt text. Syntax errors come back as findings, never exceptions."""
    source = ConfigSourceMap(file)
    if text.startswith("\ufeff"):
        return None, source, [Finding(file, 1, 1, PARSE_RULE, Severity.ERROR,
                                      "config.pbtxt starts with a byte-order mark, which "
                                      "Triton's parser rejects; save it as UTF-8 without BOM")]
    parser = _LocatingParser()
    config = ModelConfig()
    try:
        parser.ParseLines(text.split("\n"), config)
    except text_format.ParseError as exc:
        line = exc.GetLine() or 1
        column = exc.GetColumn() or 1
        message = _clean_parse_message(exc)
        return None, source, [Finding(file, line, column, PARSE_RULE, Severity.ERROR,
                                      f"config.pbtxt does not parse: {message}")]
    except (ValueError, RuntimeError) as exc:  # e.g. out-of-range values deep in protobuf
        line, column = parser._field_start
        return None, source, [Finding(file, line, column, PARSE_RULE, Severity.ERROR,
                                      f"config.pbtxt does not parse: {exc}")]
    source.locations = {tuple(p): loc for p, loc in parser.locations.items()}
    return config, source, []
