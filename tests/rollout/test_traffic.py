import numpy as np
import pytest
from rollout_models import envelope

from triton_ops.envelope.model import Envelope, Tolerance
from triton_ops.rollout.traffic import (
    RequestsError,
    compare_outputs,
    envelope_requests,
    load_requests_file,
    probe_expected,
)


def test_envelope_requests_start_with_the_probe_and_match_the_specs():
    requests = envelope_requests(envelope(), count=5)
    assert len(requests) == 5
    assert requests[0]["X"].tolist() == [[1.0, 2.0, 3.0, 4.0]]
    assert all(r["X"].shape == (1, 4) and r["X"].dtype == np.float32 for r in requests)
    assert probe_expected(envelope())["Y"].shape == (1, 4)


def test_variable_dims_stay_within_max_dims():
    env = Envelope.model_validate({
        "name": "t", "backend": "python",
        "inputs": [{"name": "IDS", "data_type": "INT64", "dims": [-1], "max_dims": [16]}],
        "outputs": [{"name": "O", "data_type": "FP32", "dims": [1]}],
    })
    for request in envelope_requests(env, count=20):
        assert request["IDS"].ndim == 1 and 1 <= request["IDS"].shape[0] <= 16
        assert request["IDS"].dtype == np.int64


def test_requests_file_errors_name_file_and_line(tmp_path):
    path = tmp_path / "r.jsonl"
    cases = {
        '{"X": [[1, 2, 3, 4]]}\nnot json\n': "r.jsonl:2: not JSON",
        '{"Z": [[1, 2, 3, 4]]}\n': "unknown input(s) ['Z']",
        '[1, 2]\n': "a request is a JSON object",
        '{"X": [["a", "b", "c", "d"]]}\n': "not a FP32 array",
        '\n\n': "no requests",
    }
    for text, message in cases.items():
        path.write_text(text)
        with pytest.raises(RequestsError, match=message.replace("[", r"\[").replace(
                "]", r"\]").replace("(", r"\(").replace(")", r"\)")):
            load_requests_file(path, envelope())
    path.write_text('{"X": [[1, 2, 3, 4]]}\n\n{"X": [[5, 6, 7, 8]]}\n')
    loaded = load_requests_file(path, envelope())
    assert [r["X"].tolist() for r in loaded] == [[[1, 2, 3, 4]], [[5, 6, 7, 8]]]


def test_compare_outputs_uses_the_tolerance():
    tol = Tolerance(atol=1e-3, rtol=0)
    want = {"Y": np.array([[1.0, 2.0]], dtype=np.float32)}
    assert compare_outputs(want, {"Y": want["Y"] + 5e-4}, tol) is None
    assert "max |diff| 0.01" in compare_outputs(want, {"Y": want["Y"] + 0.01}, tol)
    assert "shape" in compare_outputs(want, {"Y": np.zeros((2, 2))}, tol)
    assert "missing" in compare_outputs(want, {}, tol)
    strings = {"S": np.array([b"a", b"b"], dtype=object)}
    assert compare_outputs(strings, {"S": np.array([b"a", b"b"], dtype=object)}, tol) is None
    assert compare_outputs(strings, {"S": np.array([b"a", b"c"], dtype=object)}, tol)
