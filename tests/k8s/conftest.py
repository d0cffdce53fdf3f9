"""Fixtures of the Kubernetes tests: a two-version model repository for real Triton servers."""

from __future__ import annotations

from pathlib import Path

import pytest

AFFINE_CONFIG = """name: "affine"
backend: "python"
max_batch_size: 8
input [{ name: "X", data_type: TYPE_FP32, dims: [4] }]
output [{ name: "Y", data_type: TYPE_FP32, dims: [4] }]
instance_group [{ kind: KIND_CPU, count: 1 }]
version_policy: { all: {} }
"""

# Version v answers Y = 2 X + (v - 1) * OFFSET_STEP: version 2 disagrees with version 1, so
# output-agreement checks have something real to catch. FAIL_ABOVE makes a version fail
# requests whose first value is above a bound (a real failing canary).
AFFINE_MODEL = """import numpy as np
import triton_python_backend_utils as pb_utils

OFFSET = {offset}
FAIL_ABOVE = {fail_above}


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "X").as_numpy()
            if FAIL_ABOVE is not None and float(x.flat[0]) > FAIL_ABOVE:
                # Raised, not returned as an error response: Triton 2.51 counts an error
                # response of the Python backend in nv_inference_request_success.
                raise pb_utils.TritonModelException("input out of range for this version")
            y = (x * 2.0 + OFFSET).astype(np.float32)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", y)]))
        return out
"""


def write_affine_repository(root: Path, versions: dict[int, tuple[float, float | None]]) -> Path:
    """A repository with model `affine`; versions maps version -> (offset, fail_above)."""
    model = root / "affine"
    model.mkdir(parents=True, exist_ok=True)
    (model / "config.pbtxt").write_text(AFFINE_CONFIG)
    for version, (offset, fail_above) in versions.items():
        (model / str(version)).mkdir(exist_ok=True)
        (model / str(version) / "model.py").write_text(
            AFFINE_MODEL.format(offset=offset, fail_above=fail_above))
    return root


@pytest.fixture(scope="session")
def affine_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """affine v1 (Y = 2X), v2 (Y = 2X + 0.5), v3 (Y = 2X, fails when X[0] > 0)."""
    root = tmp_path_factory.mktemp("affine-repo")
    return write_affine_repository(root, {1: (0.0, None), 2: (0.5, None), 3: (0.0, 0.0)})
