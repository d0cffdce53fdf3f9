"""Seals against the real embedded Triton: the bytecode cache the Python backend writes at the
first load keeps a sealed version verified; a planted cache runs instead of the sealed
model.py, and validate and the rollout's verification catch it."""

from __future__ import annotations

import json
import py_compile
import sys
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from triton_ops.cli.main import app
from triton_ops.repository.seal import publish, verify_sealed_versions, verify_version
from triton_ops.server.local import LocalTriton

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CONFIG = """name: "m"
backend: "python"
max_batch_size: 0
input [{ name: "X", data_type: TYPE_FP32, dims: [1] }]
output [{ name: "Y", data_type: TYPE_FP32, dims: [1] }]
instance_group [{ kind: KIND_CPU, count: 1 }]
"""

MODEL = """import numpy as np
import triton_python_backend_utils as pb_utils

OFFSET = {offset}


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            out.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor("Y", (x + OFFSET).astype(np.float32))]))
        return out
"""


def write_repo(root: Path) -> Path:
    model = root / "m"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(CONFIG)
    (model / "1" / "model.py").write_text(MODEL.format(offset=1.0))
    return root


def post(server: LocalTriton, path: str, body: dict) -> dict:
    request = urllib.request.Request(f"http://{server.http_url}{path}",
                                     data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        raw = response.read()
    return json.loads(raw) if raw else {}


def infer(server: LocalTriton) -> float:
    answer = post(server, "/v2/models/m/infer",
                  {"inputs": [{"name": "X", "shape": [1], "datatype": "FP32", "data": [1.0]}]})
    return float(answer["outputs"][0]["data"][0])


def validate(repo: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["validate", str(repo), "--format", "json"])
    return result.exit_code, result.output


def test_served_version_still_verifies_and_a_planted_cache_is_caught(
        tmp_path: Path, start_triton) -> None:
    repo = write_repo(tmp_path / "repo")
    model = repo / "m"
    publish(model, 1)
    server = start_triton(repo, models=["m"])
    assert infer(server) == 2.0
    cache = model / "1" / "__pycache__" / f"model.{sys.implementation.cache_tag}.pyc"
    assert cache.is_file()  # written by the Python backend's import of model.py
    assert verify_version(model, 1) == []
    assert verify_sealed_versions(model) == []
    assert validate(repo)[0] == 0

    # A cache that skips the source check, compiled from other code, at the same path.
    forged = tmp_path / "model.py"
    forged.write_text(MODEL.format(offset=100.0))
    py_compile.compile(str(forged), cfile=str(cache), doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    post(server, "/v2/repository/models/m/load", {})  # a fresh stub imports it again
    assert infer(server) == 101.0  # the planted bytecode runs, not the sealed model.py
    problems = verify_version(model, 1)
    assert len(problems) == 1 and "1/__pycache__/model." in problems[0]
    assert "not the compiled model.py" in problems[0]
    code, output = validate(repo)
    assert code == 1
    assert [f["rule"] for f in json.loads(output)["findings"]] == ["sealed-version-bytecode"]

