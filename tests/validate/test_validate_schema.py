"""`triton-ops schema`: the envelope JSON Schema accepts what the loader accepts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from triton_ops.cli.main import app

DOC = Path(__file__).resolve().parents[2] / "docs" / "validate.md"


def schema() -> dict:
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0
    return json.loads(result.output)


def test_schema_describes_the_envelope() -> None:
    data = schema()
    assert data["title"] == "Envelope"
    assert {"name", "batching", "slo", "passthrough"} <= set(data["properties"])
    assert data["additionalProperties"] is False


def test_schema_accepts_human_units_and_rejects_unknown_keys() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    data = schema()
    text = DOC.read_text()
    section = text[text.index("## The envelope format"):]
    example = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    jsonschema.validate(example, data)  # "1.3GiB", "2ms" are valid here
    example["batching"]["dynamic"]["preferd"] = [1]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(example, data)
