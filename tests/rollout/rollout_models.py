"""A tiny numpy Python-backend model with faulty variants, written into temporary repos.

Y = 2 * X (+ 1 when the version is "wrong"). Each version folder gets its own model.py, so a
repository can hold a good stable version and a faulty canary side by side.
"""

from __future__ import annotations

from pathlib import Path

from triton_ops.envelope.model import Envelope

MODEL = "scaler"

CONFIG = """name: "scaler"
backend: "python"
max_batch_size: 8
version_policy { specific { versions: [1] } }
input { name: "X" data_type: TYPE_FP32 dims: [4] }
output { name: "Y" data_type: TYPE_FP32 dims: [4] }
instance_group { kind: KIND_CPU count: 1 }
"""

MODEL_PY = '''
import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils

BEHAVIOUR = {behaviour!r}


class TritonPythonModel:
    def initialize(self, args):
        if BEHAVIOUR == "load-fails":
            raise RuntimeError("weights are corrupt")
        self.calls = 0

    def execute(self, requests):
        responses = []
        for request in requests:
            self.calls += 1
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            if BEHAVIOUR == "dies" and self.calls > 15:
                os._exit(1)
            if BEHAVIOUR == "errors" and self.calls % 3 == 0:
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError("canary failure")))
                continue
            if BEHAVIOUR == "slow":
                time.sleep(0.06)
            y = x * 2.0
            if BEHAVIOUR == "wrong" and float(x.min()) < 0:
                # wrong only off the golden probe's path: only the shadow comparison sees it
                y = y + 0.5
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor("Y", y.astype(np.float32))]))
        return responses
'''

ENVELOPE = {
    "name": MODEL,
    "backend": "python",
    "inputs": [{"name": "X", "data_type": "FP32", "dims": [4]}],
    "outputs": [{"name": "Y", "data_type": "FP32", "dims": [4]}],
    "batching": {"max_batch_size": 8},
    "instances": [{"kind": "CPU", "count": 1}],
    "slo": {"p99_latency": "200ms", "max_error_rate": 0.01},
    "probe": {"inputs": {"X": [[1.0, 2.0, 3.0, 4.0]]},
              "expected": {"Y": [[2.0, 4.0, 6.0, 8.0]]},
              "tolerance": {"atol": 1e-5, "rtol": 1e-4}},
}

ENVELOPE_YAML = """name: scaler
backend: python
inputs:
  - {name: X, data_type: FP32, dims: [4]}
outputs:
  - {name: Y, data_type: FP32, dims: [4]}
batching:
  max_batch_size: 8
instances:
  - {kind: CPU, count: 1}
slo:
  p99_latency: 200ms
  max_error_rate: 0.01
probe:
  inputs:
    X: [[1.0, 2.0, 3.0, 4.0]]
  expected:
    Y: [[2.0, 4.0, 6.0, 8.0]]
  tolerance: {atol: 1.0e-5, rtol: 1.0e-4}
"""


def envelope() -> Envelope:
    return Envelope.model_validate(ENVELOPE)


def write_version(repo: Path, version: int, behaviour: str = "good") -> Path:
    folder = repo / MODEL / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(MODEL_PY.format(behaviour=behaviour))
    return folder


def make_repo(root: Path, versions: dict[int, str]) -> Path:
    """A repository with model `scaler`, one folder per version with the given behaviour;
    also writes envelopes/scaler.yaml beside it."""
    repo = root / "model_repository"
    (repo / MODEL).mkdir(parents=True)
    (repo / MODEL / "config.pbtxt").write_text(CONFIG)
    for version, behaviour in versions.items():
        write_version(repo, version, behaviour)
    envelopes = root / "envelopes"
    envelopes.mkdir(exist_ok=True)
    (envelopes / f"{MODEL}.yaml").write_text(ENVELOPE_YAML)
    return repo
