"""The golden probe is checked against the tensors; numbers in an envelope are finite.

`validate` reports a probe that `probe`, `rollout` or the chart's readiness check could not
send or compare (a name that is no tensor, a shape the dims refuse, a value of the wrong
type, NaN or infinity) at its line, and `helm-values` refuses such an envelope instead of
crashing on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from triton_ops.cli.main import app
from triton_ops.envelope.loader import load_envelope
from triton_ops.envelope.rules import check_envelope
from triton_ops.findings import Finding, Severity

BASE: dict[str, Any] = {
    "name": "m",
    "backend": "python",
    "inputs": [{"name": "X", "data_type": "FP32", "dims": [3]},
               {"name": "T", "data_type": "INT64", "dims": [-1], "max_dims": [8]},
               {"name": "MASK", "data_type": "BOOL", "dims": [1], "optional": True}],
    "outputs": [{"name": "Y", "data_type": "FP32", "dims": [2]},
                {"name": "L", "data_type": "STRING", "dims": [1]}],
    "batching": {"max_batch_size": 4},
    "probe": {
        "inputs": {"X": [[1, 2, 3]], "T": [[5, 6, 0, 0]]},
        "expected": {"Y": [[0.5, 1.5]], "L": [["positive"]]},
    },
}


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "envelopes" / "m.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def findings(tmp_path: Path, probe: dict[str, Any], **changes: Any) -> list[Finding]:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["probe"] = probe
    data.update(changes)
    loaded = load_envelope(write(tmp_path, data))
    assert loaded.envelope is not None, loaded.findings
    return [f for f in check_envelope(loaded) if f.rule == "envelope-probe"]


def test_base_probe_is_clean(tmp_path: Path) -> None:
    assert findings(tmp_path, BASE["probe"]) == []


X, T, Y, L = [[1, 2, 3]], [[5, 6]], [[0.5, 1.5]], [["ok"]]
# (probe, words of the message, the key the finding points at)
BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"inputs": {"X": X, "T": T, "Z": [[1]]}, "expected": {"Y": Y}},
     "'Z' is not an input of the model", "Z"),
    ({"inputs": {"X": X, "T": T}, "expected": {"Q": [[1]]}},
     "'Q' is not an output of the model", "Q"),
    ({"inputs": {"X": X}, "expected": {"Y": Y}}, "lacks required input 'T'", "inputs"),
    ({"inputs": {"X": X, "T": T}, "expected": {}}, "lists no outputs", "expected"),
    ({"inputs": {"X": [1, 2, 3], "T": T}, "expected": {"Y": Y}}, "has shape [3]", "X"),
    ({"inputs": {"X": [[1, 2]], "T": T}, "expected": {"Y": Y}}, "has shape [1, 2]", "X"),
    ({"inputs": {"X": X, "T": [list(range(9))]}, "expected": {"Y": Y}}, "max_dims", "T"),
    ({"inputs": {"X": X * 5, "T": T * 5}, "expected": {"Y": Y * 5}},
     "batch of 5, which exceeds max_batch_size 4", "X"),
    ({"inputs": {"X": [], "T": []}, "expected": {"Y": Y}}, "empty batch", "X"),
    ({"inputs": {"X": [[1, 2, 3], [4, 5]], "T": T * 2}, "expected": {"Y": Y * 2}},
     "rows of different lengths", "X"),
    ({"inputs": {"X": [[1, "a", 3]], "T": T}, "expected": {"Y": Y}},
     "'a' at index [0, 1] is not a FP32 value", "X"),
    ({"inputs": {"X": X, "T": [[1.5]]}, "expected": {"Y": Y}},
     "1.5 at index [0, 0] is not a INT64 value", "T"),
    ({"inputs": {"X": X, "T": [[2**63]]}, "expected": {"Y": Y}}, "is not a INT64 value", "T"),
    ({"inputs": {"X": X, "T": T, "MASK": [[2]]}, "expected": {"Y": Y}},
     "2 at index [0, 0] is not a BOOL value", "MASK"),
    ({"inputs": {"X": [[1, float("nan"), 3]], "T": T}, "expected": {"Y": Y}},
     "nan at index [0, 1] is not a finite number", "X"),
    ({"inputs": {"X": X, "T": T}, "expected": {"Y": [[float("inf"), 1]]}},
     "inf at index [0, 0] is not a finite number", "Y"),
    ({"inputs": {"X": X, "T": T}, "expected": {"Y": [[1, 2]] * 2}},
     "has 2 rows but the probe inputs have a batch of 1", "Y"),
    ({"inputs": {"X": X, "T": T}, "expected": {"L": [[["nested"]]]}}, "has shape", "L"),
    ({"inputs": {"X": X, "T": T}, "expected": {"Y": [[1, 2e39]]}},
     "2e+39 at index [0, 1] is too large for FP32", "Y"),
]


@pytest.mark.parametrize(("probe", "words", "key"), BAD, ids=[b[1] for b in BAD])
def test_bad_probe_is_reported_at_its_line(tmp_path: Path, probe: dict[str, Any], words: str,
                                           key: str) -> None:
    found = findings(tmp_path, probe)
    assert found, f"no envelope-probe finding for {probe}"
    assert any(words in f.message for f in found), [f.message for f in found]
    assert all(f.severity is Severity.ERROR for f in found)
    text = (tmp_path / "envelopes" / "m.yaml").read_text().splitlines()
    hit = next(f for f in found if words in f.message)
    assert key in text[hit.line - 1], (hit, text[hit.line - 1])


def test_unbatched_model_takes_probe_values_without_a_batch_dim(tmp_path: Path) -> None:
    probe = {"inputs": {"X": [1, 2, 3], "T": [5, 6]}, "expected": {"Y": [0.5, 1.5]}}
    assert findings(tmp_path, probe, batching={"max_batch_size": 0}) == []
    batched = {"inputs": {"X": X, "T": T}, "expected": {"Y": Y}}
    assert findings(tmp_path, batched, batching={"max_batch_size": 0})


@pytest.mark.parametrize(("section", "value"), [
    ({"resources": {"cpu": float("inf")}}, "cpu"),
    ({"resources": {"cpu": float("nan")}}, "cpu"),
    ({"slo": {"p99_latency": "10ms", "target_throughput": float("inf")}}, "target_throughput"),
    ({"probe": {"inputs": {"X": X, "T": T}, "expected": {"Y": Y},
                "tolerance": {"atol": float("inf")}}}, "atol"),
    ({"inputs": [{"name": "X", "data_type": "FP32", "dims": [3],
                  "value_range": [float("nan"), 1.0]}]}, "value_range"),
])
def test_non_finite_numbers_are_schema_findings(tmp_path: Path, section: dict[str, Any],
                                                value: str) -> None:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data.update(section)
    loaded = load_envelope(write(tmp_path, data))
    assert loaded.envelope is None
    assert [f.rule for f in loaded.findings] == ["envelope-schema"], loaded.findings
    assert value in loaded.findings[0].message


def test_helm_values_refuses_a_probe_input_that_is_no_tensor(tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["probe"]["inputs"]["NOT_A_TENSOR"] = [[1]]
    envelopes = write(tmp_path, data).parent
    result = CliRunner().invoke(app, ["helm-values", "--envelopes", str(envelopes)])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        result.exception
    assert "'NOT_A_TENSOR' is not an input of the model" in result.output


def test_helm_values_refuses_infinite_cpu(tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["resources"] = {"cpu": float("inf")}
    envelopes = write(tmp_path, data).parent
    result = CliRunner().invoke(app, ["helm-values", "--envelopes", str(envelopes), "--check"])
    assert result.exit_code == 1
    assert "resources.cpu" in result.output
