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

# Y = 2 X + OFFSET; FAIL_ABOVE makes a version fail requests whose X[0] is above a bound (a
# real failing canary); DRIFT_ABOVE adds 0.5 to answers whose X[0] is above a bound (wrong
# answers that the golden probe, with X[0] < 0, does not see).
AFFINE_MODEL = """import numpy as np
import triton_python_backend_utils as pb_utils

OFFSET = {offset}
FAIL_ABOVE = {fail_above}
DRIFT_ABOVE = {drift_above}


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "X").as_numpy()
            if FAIL_ABOVE is not None and float(x.flat[0]) > FAIL_ABOVE:
                # Raised, not returned as an error response: Triton 2.51 counts an error
                # response of the Python backend in nv_inference_request_success.
                raise pb_utils.TritonModelException("input out of range for this version")
            drift = 0.5 if DRIFT_ABOVE is not None and float(x.flat[0]) > DRIFT_ABOVE else 0.0
            y = (x * 2.0 + OFFSET + drift).astype(np.float32)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", y)]))
        return out
"""


def write_affine_repository(
        root: Path, versions: dict[int, tuple[float, float | None, float | None]]) -> Path:
    """Model `affine`; versions maps version -> (offset, fail_above, drift_above)."""
    model = root / "affine"
    model.mkdir(parents=True, exist_ok=True)
    (model / "config.pbtxt").write_text(AFFINE_CONFIG)
    for version, (offset, fail_above, drift_above) in versions.items():
        (model / str(version)).mkdir(exist_ok=True)
        (model / str(version) / "model.py").write_text(
            AFFINE_MODEL.format(offset=offset, fail_above=fail_above, drift_above=drift_above))
    return root


@pytest.fixture(scope="session")
def affine_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """affine v1 (Y = 2X), v2 (Y = 2X + 0.5: fails the golden probe), v3 (fails requests
    with X[0] > 0), v4 (Y = 2X: a good new version), v5 (+0.5 when X[0] > 0: passes the
    golden probe, answers wrong on live traffic)."""
    root = tmp_path_factory.mktemp("affine-repo")
    return write_affine_repository(root, {1: (0.0, None, None), 2: (0.5, None, None),
                                          3: (0.0, 0.0, None), 4: (0.0, None, None),
                                          5: (0.0, None, 0.0)})
