"""--apply: the envelope keeps its comments and key order; only tuned keys change."""

from __future__ import annotations

import re
from pathlib import Path

from triton_ops.envelope.loader import require_envelope
from triton_ops.tune.apply import apply_to_envelope, apply_to_envelope_text
from triton_ops.tune.batcher import Candidate

ENVELOPE = """\
# my model, hand written
name: m
backend: python
inputs:
  - name: X   # the features
    data_type: FP32
    dims: [4]
outputs:
  - name: Y
    data_type: FP32
    dims: [4]
batching:
  max_batch_size: 8  # was guessed
  dynamic:
    max_queue_delay: 100us
instances:
  - kind: CPU
    count: 1
slo:
  p99_latency: 20ms
"""


def test_round_trip_keeps_comments_and_order() -> None:
    text = apply_to_envelope_text(ENVELOPE, Candidate(32, 2000, 2, (16, 32)))
    assert "# my model, hand written" in text
    assert "# the features" in text
    # the comment stays, at its column
    assert re.search(r"^  max_batch_size: 32 +# was guessed$", text, re.M)
    assert "max_queue_delay: 2ms" in text
    assert "preferred_batch_sizes: [16, 32]" in text
    assert "count: 2" in text
    keys = [line.split(":")[0] for line in text.splitlines() if line and line[0].isalpha()]
    assert keys == ["name", "backend", "inputs", "outputs", "batching", "instances", "slo"]
    back = apply_to_envelope_text(text, Candidate(4, 0, 1))
    assert "preferred_batch_sizes" not in back
    assert "max_queue_delay: 0" in back


def test_apply_writes_envelope_and_config(tmp_path: Path) -> None:
    envelope = tmp_path / "m.yaml"
    envelope.write_text(ENVELOPE)
    repo = tmp_path / "repo"
    (repo / "m" / "1").mkdir(parents=True)
    lines = apply_to_envelope(envelope, Candidate(16, 500, 2), repo)
    env = require_envelope(envelope)
    assert env.max_batch_size == 16
    assert env.batching.dynamic is not None and env.batching.dynamic.max_queue_delay == 500
    assert env.instances[0].count == 2
    config = (repo / "m" / "config.pbtxt").read_text()
    assert "max_batch_size: 16" in config
    assert "max_queue_delay_microseconds: 500" in config
    assert "count: 2" in config
    assert any("wrote" in line for line in lines)
