"""--apply for the overload stage: the chosen queue policy written into the envelope text."""

from __future__ import annotations

import re

import pytest

from triton_ops.envelope.model import Envelope
from triton_ops.modelconfig.render import render_model_config
from triton_ops.tune.apply import ApplyError, write_queue_policy
from triton_ops.tune.overload import OverloadPolicy

ENVELOPE = """\
# my model, hand written
name: m
backend: python
inputs:
    - name: X   # the features
      data_type: FP32
      dims: [4]
batching:
  max_batch_size: 16  # measured
  dynamic:
    max_queue_delay: 0
    default_queue_policy:   # shed load past the knee
      timeout_action: DELAY   # was a guess
      default_timeout: 1s
      allow_timeout_override: true
      max_queue_size: 500
slo:
  p99_latency: 250ms
"""


def load(text: str) -> Envelope:
    from ruamel.yaml import YAML

    return Envelope.model_validate(YAML(typ="safe").load(text))


def rendered_policy(text: str) -> dict[str, object]:
    from google.protobuf import json_format

    config = render_model_config(load(text))
    return json_format.MessageToDict(config.dynamic_batching.default_queue_policy)


def test_policy_replaces_the_old_one_in_place_keeping_comments_and_order() -> None:
    policy = OverloadPolicy(timeout_us=88_000)
    text = write_queue_policy(ENVELOPE, policy)
    assert "# my model, hand written" in text and "# the features" in text
    assert "    - name: X" in text  # the file's own sequence indentation
    assert re.search(r"^    default_queue_policy: +# shed load past the knee$", text, re.M)
    assert re.search(r"^      timeout_action: REJECT +# was a guess$", text, re.M)
    assert "default_timeout: 88ms" in text and "max_queue_size" not in text
    assert "allow_timeout_override: true" in text  # the owner's, left alone
    keys = [line.split(":")[0] for line in text.splitlines() if line and line[0].isalpha()]
    assert keys == ["name", "backend", "inputs", "batching", "slo"]
    assert rendered_policy(text) == {"defaultTimeoutMicroseconds": "88000",
                                     "allowTimeoutOverride": True}
    assert write_queue_policy(text, policy) == text  # idempotent


def test_queue_size_and_combination_render_as_measured() -> None:
    both = OverloadPolicy(timeout_us=125_000, max_queue_size=50)
    text = write_queue_policy(ENVELOPE, both)
    env = load(text)
    queue = env.batching.dynamic.default_queue_policy
    assert (queue.default_timeout, queue.max_queue_size) == (125_000, 50)
    queue_only = write_queue_policy(text, OverloadPolicy(max_queue_size=64))
    assert "default_timeout" not in queue_only and "max_queue_size: 64" in queue_only
    assert rendered_policy(queue_only)["maxQueueSize"] == 64


def test_no_policy_removes_it_and_a_missing_batcher_is_created() -> None:
    text = write_queue_policy(ENVELOPE, OverloadPolicy())
    assert "default_queue_policy" not in text and "# shed load" not in text
    assert "max_queue_delay: 0" in text
    bare = "name: m\nbackend: python\nslo:\n  p99_latency: 50ms\n"
    assert write_queue_policy(bare, OverloadPolicy()) == bare
    added = write_queue_policy(bare, OverloadPolicy(timeout_us=10_000))
    assert load(added).batching.dynamic.default_queue_policy.default_timeout == 10_000
    assert added.startswith(bare)  # appended, nothing else touched


def test_not_an_envelope_mapping() -> None:
    with pytest.raises(ApplyError, match="not a YAML mapping"):
        write_queue_policy("- a\n- b\n", OverloadPolicy(timeout_us=1000))
    with pytest.raises(ApplyError, match="'batching' in the envelope is not a mapping"):
        write_queue_policy("name: m\nbatching: 3\n", OverloadPolicy(timeout_us=1000))
