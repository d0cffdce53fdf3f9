"""The envelope example in docs/validate.md is valid, and the CI examples run the gate."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from triton_ops.validate.envelope_config import RULES, check_envelope_file

REPO_ROOT = Path(__file__).resolve().parents[2]
DOC = REPO_ROOT / "docs" / "validate.md"


def test_documented_envelope_is_valid_and_renders(tmp_path: Path) -> None:
    text = DOC.read_text()
    section = text[text.index("## The envelope format"):]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None
    path = tmp_path / "bert_ranker.yaml"
    path.write_text(block.group(1))
    result = check_envelope_file(path, repo=None)
    assert result.findings == []
    data = yaml.safe_load(block.group(1))
    # every top-level section of the envelope model is shown
    from triton_ops.envelope.model import Envelope

    shown = set(data) | {"platform", "runtime_library", "default_model_filename"}
    assert set(Envelope.model_fields) <= shown


def test_documented_stateful_envelope_is_valid_and_round_trips(tmp_path: Path) -> None:
    from triton_ops.envelope.loader import load_envelope
    from triton_ops.modelconfig.importer import config_to_envelope
    from triton_ops.modelconfig.render import render_model_config

    text = DOC.read_text()
    section = text[text.index("### Stateful models"):]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None
    path = tmp_path / "streaming_asr.yaml"
    path.write_text(block.group(1))
    assert check_envelope_file(path, repo=None).findings == []
    config = render_model_config(load_envelope(path).envelope)
    assert len(config.sequence_batching.control_input) == 4
    # and back: the envelope import writes renders to the same config
    again = config_to_envelope(config).data
    from triton_ops.envelope.model import Envelope

    assert render_model_config(Envelope.model_validate(again)) == config


def test_every_rule_is_in_the_rules_table() -> None:
    text = DOC.read_text()
    for rule_id in RULES:
        assert f"| `{rule_id}` |" in text, rule_id


def test_ci_examples_run_the_gate() -> None:
    workflow = yaml.safe_load((REPO_ROOT / "examples/github-actions/validate.yml").read_text())
    runs = [step.get("run", "") for step in workflow["jobs"]["validate"]["steps"]]
    assert any("triton-ops validate --format github" in r for r in runs)
    hooks = yaml.safe_load((REPO_ROOT / ".pre-commit-hooks.yaml").read_text())
    hook = next(h for h in hooks if h["id"] == "triton-ops-validate")
    assert hook["entry"] == "triton-ops validate" and hook["pass_filenames"] is False
