"""Human units for sizes and durations ("16GiB", "500us"), normalised to bytes and microseconds."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3,
    "ti": 1024**4, "tib": 1024**4,
}
_DURATION_UNITS_US = {
    "us": 1, "µs": 1, "ms": 1000, "s": 1_000_000, "m": 60_000_000, "min": 60_000_000,
    "h": 3_600_000_000,
}
_NUMBER_UNIT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Zµ]*)\s*$")


def _scaled(number: str, factor: int) -> int:
    """number x factor, rounded to an integer, exactly: a float would lose digits past 2**53
    (and a config value would not survive a round trip through the envelope)."""
    return int((Decimal(number) * factor).to_integral_value(rounding=ROUND_HALF_EVEN))


def parse_size(value: object) -> int:
    """Bytes from an int or a string such as "16GiB", "512MB", "1024"."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 16GiB, not a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    if isinstance(value, str):
        match = _NUMBER_UNIT.match(value)
        if match:
            unit = match.group(2).lower()
            if unit in _SIZE_UNITS:
                return _scaled(match.group(1), _SIZE_UNITS[unit])
        raise ValueError(f"{value!r} is not a size: write e.g. 512MiB, 16GiB or a byte count")
    raise ValueError(f"expected a size such as 16GiB, got {type(value).__name__}")


def parse_duration_us(value: object) -> int:
    """Microseconds from an int (taken as microseconds) or a string such as "5ms", "1.5s"."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 5ms, not a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return value
    if isinstance(value, str):
        match = _NUMBER_UNIT.match(value)
        if match:
            unit = match.group(2).lower()
            if unit in _DURATION_UNITS_US:
                return _scaled(match.group(1), _DURATION_UNITS_US[unit])
        raise ValueError(
            f"{value!r} is not a duration: write e.g. 500us, 5ms, 1.5s (a bare number means µs)"
        )
    raise ValueError(f"expected a duration such as 5ms, got {type(value).__name__}")


def format_size(n: int) -> str:
    """Shortest exact binary-unit spelling of a byte count ("16GiB"), else the plain number."""
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n and n % factor == 0:
            return f"{n // factor}{unit}"
    return str(n)


def format_duration_us(us: int) -> str:
    """Shortest exact spelling of a duration in microseconds ("5ms", "500us")."""
    for unit, factor in (("s", 1_000_000), ("ms", 1000)):
        if us and us % factor == 0:
            return f"{us // factor}{unit}"
    return f"{us}us"


# The JSON Schema says what a person may write (a number or a string with a unit), not the
# normalised int, so editors using `triton-ops schema` accept "16GiB".
_SIZE_SCHEMA = WithJsonSchema({
    "anyOf": [
        {"type": "integer", "minimum": 0},
        {"type": "string", "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*([kKmMgGtT][iI]?)?[bB]?\s*$"},
    ],
    "description": "bytes, or a size with a unit: 512MiB, 16GiB, 2GB",
})
_DURATION_SCHEMA = WithJsonSchema({
    "anyOf": [
        {"type": "integer", "minimum": 0},
        {"type": "string", "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*(us|µs|ms|s|m|min|h)?\s*$"},
    ],
    "description": "microseconds, or a duration with a unit: 500us, 5ms, 1.5s",
})

ByteSize = Annotated[
    int, BeforeValidator(parse_size), PlainSerializer(format_size, when_used="json"),
    _SIZE_SCHEMA,
]
DurationUs = Annotated[
    int, BeforeValidator(parse_duration_us), PlainSerializer(format_duration_us, when_used="json"),
    _DURATION_SCHEMA,
]
