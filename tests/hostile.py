"""Hostile inputs shared by the tests of every command that reads them.

A module, not a fixture, so that the corpora of several test folders can use the same
inputs (tests/ is on sys.path through its conftest.py).
"""

from __future__ import annotations

ENVELOPE_HEAD = "name: {name}\nbackend: python\n"
PINNED_IMAGE = "nvcr.io/nvidia/tritonserver@sha256:" + "a" * 64


def _laughs(levels: int, fanout: int) -> list[str]:
    """`&laugh_0 [...]`, then each anchor a list of `fanout` aliases of the previous one."""
    values = ["&laugh_0 [" + ", ".join(['"ha ha ha ha ha"'] * fanout) + "]"]
    for level in range(1, levels):
        aliases = ", ".join([f"*laugh_{level - 1}"] * fanout)
        values.append(f"&laugh_{level} [{aliases}]")
    return values


def alias_bomb_envelope(name: str = "bomb", levels: int = 9, fanout: int = 9) -> str:
    """An envelope whose unknown top-level keys hold a "billion laughs": a page of text
    describing fanout**levels strings (9 levels of 9: about 1 KB for 387 million)."""
    lines = [f"laugh_{i}: {value}" for i, value in enumerate(_laughs(levels, fanout))]
    return ENVELOPE_HEAD.format(name=name) + "\n".join(lines) + "\n"


def alias_bomb_in_probe(name: str = "bomb", levels: int = 9, fanout: int = 9) -> str:
    """An otherwise valid envelope whose golden-probe input is a billion laughs: probe values
    are free-form lists, so the schema takes them, and helm-values flattens them."""
    items = "".join(f"      - {value}\n" for value in _laughs(levels, fanout))
    return (ENVELOPE_HEAD.format(name=name)
            + f'runtime: {{image: "{PINNED_IMAGE}"}}\n'
            + "inputs: [{name: X, data_type: STRING, dims: [-1], max_dims: [8]}]\n"
            + "outputs: [{name: Y, data_type: STRING, dims: [1]}]\n"
            + "probe:\n  inputs:\n    X:\n" + items + "  expected: {Y: [[ok]]}\n")
