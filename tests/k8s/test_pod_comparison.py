"""The chart's in-pod comparison (stdlib only) agrees with triton_ops.tensors on every case.

Each case goes the real way on both sides: the envelope's probe becomes the chart's probe
values (`probe_values`) for the pod and typed expected arrays (`probe_expected`) for
triton-ops; the answer is an array as tritonclient returns it, and its KServe v2 JSON as
the server sends it to the pod.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest

from triton_ops.envelope.model import Envelope
from triton_ops.k8s.values import probe_values
from triton_ops.server.probe import probe_expected
from triton_ops.tensors import compare_outputs, numpy_dtype, output_types, wire_type

from .support import pod_script

POD = pod_script()
NAN, INF = math.nan, math.inf

# (case, data type, expected as written in the envelope, the answer (None: left out), atol, rtol)
CASES: list[tuple[str, str, Any, Any, float, float]] = [
    ("equal", "FP32", [1.0, 2.0], [1.0, 2.0], 1e-5, 1e-4),
    ("within atol", "FP32", [1.0, 2.0], [1.005, 2.0], 0.01, 0.0),
    ("outside atol", "FP32", [1.0, 2.0], [1.02, 2.0], 0.01, 0.0),
    ("within rtol", "FP64", [100.0], [100.9], 0.0, 0.01),
    ("outside rtol", "FP64", [100.0], [101.5], 0.0, 0.01),
    ("atol plus rtol", "FP64", [10.0, -10.0], [10.25, -10.25], 0.2, 0.01),
    ("integers written for floats", "FP32", [[2, 4], [6, 8]], [[2.0, 4.0], [6.0, 8.5]], 0.1, 0),
    ("worst value, not first", "FP32", [[0.0, 0.0], [0.0, 0.0]], [[0.1, 0.5], [0.3, 0.5]],
     0.01, 0.0),
    ("NaN expected and got", "FP32", [NAN, 1.0], [NAN, 1.0], 0.01, 0.0),
    ("NaN expected, number got", "FP32", [NAN, 1.0], [1.0, 1.0], 0.01, 0.0),
    ("number expected, NaN got", "FP32", [1.0, 1.0], [1.0, NAN], 0.01, 0.0),
    ("NaN is the worst error", "FP64", [1.0, 1.0, 1.0], [5.0, NAN, 9.0], 0.01, 0.0),
    ("inf expected and got", "FP32", [INF, -INF], [INF, -INF], 1e-5, 1e-4),
    ("inf of the other sign", "FP32", [INF], [-INF], 1e-5, 1e-4),
    ("inf got for a number", "FP64", [1.0], [INF], 1e-5, 1e-4),
    ("FP16 rounds the expected value", "FP16", [0.1, 1000.3], [0.1, 1000.3], 0.0, 0.0),
    ("FP32 rounds the expected value", "FP32", [0.1], [0.1], 0.0, 0.0),
    ("BF16 travels as FP32", "BF16", [0.1, 2.0], [0.1, 2.5], 0.1, 0.0),
    ("integers exact despite a loose tolerance", "INT64", [[7, 9]], [[7, 8]], 10.0, 0.5),
    ("integers equal", "INT32", [3.0, -4], [3, -4], 0.0, 0.0),
    ("large integers beyond float precision", "INT64", [2**62], [2**62 + 1], 10.0, 0.0),
    ("unsigned", "UINT8", [0, 255], [0, 254], 1e-5, 1e-4),
    ("bools", "BOOL", [True, False], [True, True], 1.0, 1.0),
    ("bools written as 0 and 1", "BOOL", [1, 0], [True, False], 0.0, 0.0),
    ("strings equal", "STRING", ["cat", "dog"], ["cat", "dog"], 0.0, 0.0),
    ("strings differ", "STRING", ["cat", "dog", "eel"], ["cat", "cow", "elk"], 0.0, 0.0),
    ("a number written for a string", "STRING", [5, 1.5], ["5", "1.5"], 0.0, 0.0),
    ("shape mismatch, same size", "FP32", [1.0, 2.0], [[1.0, 2.0]], 1e-5, 1e-4),
    ("shape mismatch, other size", "INT64", [1, 2], [1, 2, 3], 0.0, 0.0),
    ("missing output", "FP32", [1.0], None, 1e-5, 1e-4),
    ("empty output", "FP32", [], [], 1e-5, 1e-4),
]


def envelope(data_type: str, expected: Any, atol: float, rtol: float) -> Envelope:
    return Envelope.model_validate({
        "name": "m", "backend": "python",
        "inputs": [{"name": "X", "data_type": "FP32", "dims": [1]}],
        "outputs": [{"name": "OUT", "data_type": data_type,
                     "dims": [-1] * np.asarray(expected, dtype=object).ndim}],
        "probe": {"inputs": {"X": [1.0]}, "expected": {"OUT": expected},
                  "tolerance": {"atol": atol, "rtol": rtol}},
    })


def answer_array(data_type: str, values: Any) -> np.ndarray:
    """The output as tritonclient's as_numpy gives it: the type's dtype, text as bytes."""
    if data_type == "STRING":
        return np.array([v.encode() for v in values], dtype=object)
    return np.array(values, dtype=numpy_dtype(data_type))


def kserve_output(data_type: str, array: np.ndarray) -> dict[str, Any]:
    """The same output as Triton's HTTP/JSON answer carries it."""
    data = [v.decode() if isinstance(v, bytes) else v for v in array.flatten().tolist()]
    return {"name": "OUT", "datatype": wire_type(data_type), "shape": list(array.shape),
            "data": data}


def pod_form(message: str, shape: tuple[int, ...]) -> str:
    """A triton-ops difference as the pod words it: the same text after "output ", with the
    element also named by its flat index (what `kubectl describe pod` shows)."""
    where = re.search(r"at index \[([0-9, ]*)\]", message)
    flat = (int(np.ravel_multi_index([int(i) for i in where.group(1).split(", ")], shape))
            if where else 0)
    for pattern in (r"(.*) \(got (.*), expected (.*)\)", r"(.*): got (.*), expected (.*)"):
        value = re.fullmatch(pattern, message)
        if value:
            return f"output {value[1]}: OUT[{flat}] = {value[2]}, expected {value[3]}"
    return f"output {message}"


@pytest.mark.parametrize(("case", "data_type", "expected", "got", "atol", "rtol"), CASES,
                         ids=[c[0] for c in CASES])
def test_pod_comparison_agrees_with_tensors(case: str, data_type: str, expected: Any,
                                            got: Any, atol: float, rtol: float) -> None:
    env = envelope(data_type, expected, atol, rtol)
    assert env.probe is not None
    want = probe_expected(env)
    array = None if got is None else answer_array(data_type, got)
    found = compare_outputs(want, {} if array is None else {"OUT": array},
                            env.probe.tolerance, output_types(env))
    pod_expected = probe_values(env)["expected"]["OUT"]  # what the chart gives the pod
    pod_found = POD.compare("OUT", pod_expected,
                            None if array is None else kserve_output(data_type, array),
                            atol, rtol)
    assert (pod_found is None) == (not found), (found, pod_found)
    if found:
        assert pod_found == pod_form(found[0], want["OUT"].shape)


def test_the_corpus_covers_both_verdicts_and_every_kind_of_message() -> None:
    kinds = {"exact match": 0, "atol=": 0, "values differ": 0, ": shape ": 0, "missing": 0,
             "matches": 0}
    for _case, data_type, expected, got, atol, rtol in CASES:
        env = envelope(data_type, expected, atol, rtol)
        assert env.probe is not None
        answer = {} if got is None else {"OUT": answer_array(data_type, got)}
        found = compare_outputs(probe_expected(env), answer, env.probe.tolerance,
                                output_types(env))
        for kind in kinds:
            kinds[kind] += any(kind in f for f in found) if found else kind == "matches"
    assert all(count >= 1 for count in kinds.values()), kinds
