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


_VERSION_FOLDER = re.compile(r"[1-9][0-9]*")


def is_version_folder_name(name: str) -> bool:
    """True for a folder name Triton serves as a version: a positive decimal number in ASCII
    digits without leading zeros."""
    return _VERSION_FOLDER.fullmatch(name) is not None
