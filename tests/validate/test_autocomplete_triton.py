"""Differential test: what triton-ops infers from a model folder against a real Triton.

Python-backend models whose config leaves the backend, the inputs or their dims to Triton's
auto-complete are loaded into the embedded server; triton-ops must report errors for exactly
the models Triton refuses (a folder Triton picks no backend from, a gap nothing fills).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from triton_ops.findings import Severity
from triton_ops.repository.layout import check_repository

MODEL_PY = '''import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([]) for _ in requests]
'''
AUTOCOMPLETE_PY = '''import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(config):
        config.add_input({"name": "IN", "data_type": "TYPE_FP32", "dims": [4]})
        config.add_output({"name": "OUT", "data_type": "TYPE_FP32", "dims": [4]})
        return config

    def execute(self, requests):
        return [pb_utils.InferenceResponse([]) for _ in requests]
'''
IO = ('input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
      'output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]\n')
NO_DIMS = ('input [ { name: "IN" data_type: TYPE_FP32 } ]\n'
           'output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]\n')

# name -> (config.pbtxt or None for none, files, whether Triton loads it)
CASES: dict[str, tuple[str | None, dict[str, str], bool]] = {
    "backend_from_model_py": ("max_batch_size: 0\n" + IO, {"1/model.py": MODEL_PY}, True),
    "hidden_folder_first": ("max_batch_size: 0\n" + IO,
                            {"1/model.py": MODEL_PY, ".aaa/notes.txt": "x"}, False),
    "model_file_in_second_folder": ("max_batch_size: 0\n" + IO,
                                    {"1/notes.txt": "x", "2/model.py": MODEL_PY}, False),
    "empty_config": ("", {"1/model.py": MODEL_PY}, True),
    "empty_config_autocomplete": ("", {"1/model.py": AUTOCOMPLETE_PY}, True),
    "no_config_autocomplete": (None, {"1/model.py": AUTOCOMPLETE_PY}, True),
    "no_dims_autocomplete": ('backend: "python"\n' + NO_DIMS, {"1/model.py": AUTOCOMPLETE_PY},
                             True),
    "no_dims_no_autocomplete": ('backend: "python"\n' + NO_DIMS, {"1/model.py": MODEL_PY},
                                False),
    "profile_on_python": ("max_batch_size: 0\n" + IO
                          + 'instance_group [ { kind: KIND_CPU profile: "0" } ]\n',
                          {"1/model.py": MODEL_PY}, False),
}


def build(repo: Path) -> dict[str, bool]:
    for name, (config, files, _) in CASES.items():
        folder = repo / name
        folder.mkdir(parents=True)
        if config is not None:
            (folder / "config.pbtxt").write_text(config)
        for rel, text in files.items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_text(text)
    return {name: loads for name, (_, _, loads) in CASES.items()}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_inferred_completion_matches_what_triton_loads(tmp_path: Path) -> None:
    from tritonclient.http import InferenceServerClient
    from tritonclient.utils import InferenceServerException

    from triton_ops.server.local import LocalTriton

    repo = tmp_path / "repo"
    expected = build(repo)
    flagged = {Path(f.file).relative_to(repo).parts[0] for f in check_repository(repo).findings
               if f.severity is Severity.ERROR}
    ours = {name: name not in flagged for name in expected}
    assert ours == expected  # triton-ops' verdicts match the table

    triton: dict[str, bool] = {}
    with LocalTriton(repo, startup_timeout_s=120, log_path=tmp_path / "tritonserver.log"
                     ) as server:
        client = InferenceServerClient(server.http_url, network_timeout=90.0)
        for name in sorted(expected):
            try:
                client.load_model(name)
            except InferenceServerException:
                triton[name] = False
            else:
                triton[name] = True
                client.unload_model(name)
    assert triton == expected
