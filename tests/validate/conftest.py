"""Fixtures for envelope tests: envelope files and model folders built in a temp dir."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

BASE_ENVELOPE: dict[str, Any] = {
    "name": "clf",
    "backend": "python",
    "versions": [1],
    "inputs": [{"name": "TEXT", "data_type": "INT64", "dims": [-1], "max_dims": [128]}],
    "outputs": [{"name": "PROBS", "data_type": "FP32", "dims": [3]}],
    "batching": {"max_batch_size": 32,
                 "dynamic": {"preferred_batch_sizes": [8, 16], "max_queue_delay": "1ms"}},
    "instances": [{"kind": "GPU", "count": 2}],
    "resources": {"gpu_memory": {"weights": "1GiB", "activation_per_item": "16MiB",
                                 "workspace": "256MiB", "headroom": 0.1}},
    "hardware": {"gpu_models": ["T4"]},
    "slo": {"p99_latency": "50ms"},
    "runtime": {"image": "nvcr.io/nvidia/tritonserver@sha256:" + "a" * 64},
}


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` deep-merged; a value of None removes the key."""
    out = dict(base)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture
def write_envelope(tmp_path: Path) -> Callable[..., Path]:
    """write_envelope(changes={}, name=None, model_dir=True) -> envelope path.

    With model_dir=True the model folder is created in tmp_path/model_repository with a
    version folder, model.py and the generated config.pbtxt.
    """

    def write(changes: dict[str, Any] | None = None, model_dir: bool = True) -> Path:
        from triton_ops.envelope.model import Envelope
        from triton_ops.modelconfig.render import render_config_text, source_label

        data = merge(BASE_ENVELOPE, changes or {})
        envelopes = tmp_path / "envelopes"
        envelopes.mkdir(exist_ok=True)
        path = envelopes / f"{data['name']}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        if model_dir:
            folder = tmp_path / "model_repository" / data["name"]
            for version in data.get("versions", [1]):
                (folder / str(version)).mkdir(parents=True, exist_ok=True)
                (folder / str(version) / "model.py").write_text("# model\n")
            (folder / "config.pbtxt").write_text(
                render_config_text(Envelope.model_validate(data), source_label(path)))
        return path

    return write
