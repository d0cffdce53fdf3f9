"""Numbers written with ASCII digits, where a version, a count or a port is expected.

`str.isdigit()` is also true for '²', '١' and other Unicode digits: `int()` refuses the
first (a traceback) and reads the second as 1, a folder Triton does not take for a version.
"""

from __future__ import annotations

import re

_ASCII_DECIMAL = re.compile(r"[0-9]+")


def is_ascii_decimal(text: str) -> bool:
    """True when `text` is one or more ASCII digits and nothing else."""
    return _ASCII_DECIMAL.fullmatch(text) is not None
