import numpy as np
import pytest
from rollout_models import envelope

from triton_ops.envelope.model import Envelope, Tolerance
from triton_ops.rollout.traffic import (
    RequestsError,
    disagreement,
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


def test_random_requests_keep_paired_lengths_and_value_ranges():
    # token ids and their attention mask: a request whose lengths differ is refused by the
    # model (on stable and canary alike), and ids outside the vocabulary fail the same way
    env = Envelope.model_validate({
        "name": "t", "backend": "python", "batching": {"max_batch_size": 8},
        "inputs": [{"name": "IDS", "data_type": "INT64", "dims": [-1], "max_dims": [64],
                    "value_range": [5, 9]},
                   {"name": "MASK", "data_type": "INT64", "dims": [-1], "max_dims": [64],
                    "value_range": [1, 1]},
                   {"name": "X", "data_type": "FP32", "dims": [4], "value_range": [-2, -1]}],
        "outputs": [{"name": "O", "data_type": "FP32", "dims": [1]}],
    })
    requests = envelope_requests(env, count=20)
    assert len({r["IDS"].shape for r in requests}) > 1
    for request in requests:
        assert request["IDS"].shape == request["MASK"].shape
        assert set(np.unique(request["IDS"])) <= {5, 6, 7, 8, 9}
        assert (request["MASK"] == 1).all()
        assert -2 <= request["X"].min() <= request["X"].max() <= -1


def test_string_bool_and_unbounded_inputs():
    env = Envelope.model_validate({
        "name": "t", "backend": "python",
        "inputs": [{"name": "S", "data_type": "STRING", "dims": [-1]},
                   {"name": "B", "data_type": "BOOL", "dims": [1]}],
        "outputs": [{"name": "O", "data_type": "FP32", "dims": [1]}],
        "probe": {"inputs": {"S": ["a", "b"], "B": [True]}, "expected": {"O": [1]}},
    })
    golden, *others = envelope_requests(env, count=10)
    assert golden["S"].tolist() == [b"a", b"b"] and golden["B"].dtype == np.bool_
    for request in others:
        assert request["S"].dtype == object and 1 <= request["S"].shape[0] <= 8
        assert all(isinstance(v, bytes) for v in request["S"])


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
    assert disagreement(want, {"Y": want["Y"] + 5e-4}, tol) is None
    assert "max abs error 0.01" in disagreement(want, {"Y": want["Y"] + 0.01}, tol)
    assert "shape" in disagreement(want, {"Y": np.zeros((2, 2))}, tol)
    assert "missing" in disagreement(want, {}, tol)
    strings = {"S": np.array([b"a", b"b"], dtype=object)}
    assert disagreement(strings, {"S": np.array([b"a", b"b"], dtype=object)}, tol) is None
    assert disagreement(strings, {"S": np.array([b"a", b"c"], dtype=object)}, tol)


def test_compare_outputs_integers_exact_and_types_from_the_envelope():
    loose = Tolerance(atol=5, rtol=0)
    ids = {"IDS": np.array([[1, 2]], dtype=np.int64)}
    # Integer arrays compare exactly whatever the tolerance; so do outputs the envelope
    # declares integer, even when the arrays arrive as floats.
    assert "exact match" in disagreement(ids, {"IDS": np.array([[1, 3]])}, loose)
    as_floats = {"IDS": np.array([[1.0, 2.0]])}
    assert disagreement(as_floats, {"IDS": np.array([[1.0, 3.0]])}, loose) is None
    assert "exact match" in disagreement(as_floats, {"IDS": np.array([[1.0, 3.0]])}, loose,
                                         {"IDS": "INT64"})
    # Every output that differs is named.
    found = disagreement({"A": np.array([1]), "B": np.array([2])},
                         {"A": np.array([0]), "B": np.array([0])}, loose)
    assert found.startswith("A: 1 of 1") and "; B: 1 of 1" in found


def test_probe_with_a_wrong_expected_value_is_a_requests_error():
    env = envelope()
    data = env.model_dump()
    data["probe"]["expected"] = {"Y": [[1.0, 2.0]]}
    with pytest.raises(RequestsError, match=r"probe.expected 'Y' has shape \[1, 2\], but the "
                       r"model returns \[N, 4\]"):
        probe_expected(Envelope.model_validate(data))
