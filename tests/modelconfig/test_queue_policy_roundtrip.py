"""The dynamic batcher's queue-policy fields: envelope -> config.pbtxt -> envelope, equal.

default_queue_policy, priority_levels, default_priority_level and priority_queue_policy are
rendered with the ModelConfig proto, imported back by `triton-ops import`, and must come back
as they were; values the proto cannot hold are refused with the envelope's file and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from google.protobuf import text_format
from typer.testing import CliRunner

from triton_ops.cli.main import app
from triton_ops.envelope.loader import load_envelope
from triton_ops.envelope.model import Envelope
from triton_ops.modelconfig.importer import config_to_envelope
from triton_ops.modelconfig.proto import ModelConfig
from triton_ops.modelconfig.render import render_config_text, render_model_config

DYNAMICS: dict[str, dict[str, Any]] = {
    "empty policy": {"default_queue_policy": {}},
    "reject timeout": {"default_queue_policy": {"timeout_action": "REJECT",
                                                "default_timeout": "88ms"}},
    "odd microseconds": {"max_queue_delay": "500us",
                         "default_queue_policy": {"default_timeout": 1_234_567,
                                                  "max_queue_size": 7}},
    "widest values": {"default_queue_policy": {"default_timeout": 2**64 - 1,
                                               "max_queue_size": 2**32 - 1}},
    "delay with override": {"default_queue_policy": {"timeout_action": "delay",
                                                     "default_timeout": "2s",
                                                     "allow_timeout_override": True}},
    "priority levels": {
        "priority_levels": 3, "default_priority_level": 2,
        "default_queue_policy": {"max_queue_size": 64},
        "priority_queue_policy": {1: {}, 3: {"timeout_action": "DELAY",
                                             "default_timeout": "5ms",
                                             "allow_timeout_override": True}}},
    "levels without policies": {"priority_levels": 2, "default_priority_level": 1},
}


def envelope(dynamic: dict[str, Any]) -> Envelope:
    return Envelope.model_validate({
        "name": "m", "backend": "python",
        "inputs": [{"name": "X", "data_type": "FP32", "dims": [4]}],
        "outputs": [{"name": "Y", "data_type": "FP32", "dims": [4]}],
        "batching": {"max_batch_size": 8, "dynamic": dynamic}})


@pytest.mark.parametrize("name", sorted(DYNAMICS))
def test_queue_policy_round_trips(name: str) -> None:
    env = envelope(DYNAMICS[name])
    config = render_model_config(env)
    # through the text Triton reads, and back into an envelope
    parsed = text_format.Parse(render_config_text(env, "envelopes/m.yaml"), ModelConfig())
    assert parsed == config
    back = Envelope.model_validate(config_to_envelope(parsed).data)
    assert back.batching == env.batching
    assert render_model_config(back) == config


def test_priority_levels_keep_their_policies_apart() -> None:
    config = render_model_config(envelope(DYNAMICS["priority levels"]))
    dyn = config.dynamic_batching
    assert (dyn.priority_levels, dyn.default_priority_level) == (3, 2)
    assert dyn.default_queue_policy.max_queue_size == 64
    assert sorted(dyn.priority_queue_policy) == [1, 3]
    level3 = dyn.priority_queue_policy[3]
    assert level3.default_timeout_microseconds == 5000 and level3.allow_timeout_override
    assert level3.timeout_action == level3.DELAY
    assert dyn.priority_queue_policy[1] == type(level3)()  # an explicit, all-default policy


@pytest.mark.parametrize(("yaml_policy", "field"), [
    ("    default_queue_policy:\n      max_queue_size: 4294967296\n", "max_queue_size"),
    ("    default_queue_policy:\n      default_timeout: 18446744073709551616\n",
     "default_timeout"),
    ("    priority_levels: 2\n    default_priority_level: 1\n"
     "    priority_queue_policy:\n      -1: {max_queue_size: 4}\n", "priority_queue_policy"),
    ("    priority_levels: 18446744073709551616\n", "priority_levels"),
])
def test_values_the_proto_cannot_hold_are_refused_with_a_line(tmp_path: Path, yaml_policy: str,
                                                             field: str) -> None:
    path = tmp_path / "envelopes" / "m.yaml"
    path.parent.mkdir()
    path.write_text("name: m\nbackend: python\nbatching:\n  max_batch_size: 8\n  dynamic:\n"
                    + yaml_policy)
    loaded = load_envelope(path)
    assert loaded.envelope is None
    assert any(field in f.message and f.line >= 6 for f in loaded.findings), loaded.findings
    result = CliRunner().invoke(app, ["generate", "--envelopes", str(path), "--repo",
                                      str(tmp_path / "repo")])
    assert result.exit_code != 0
    assert "Traceback" not in result.output and field in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
