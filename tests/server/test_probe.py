"""The golden probe: its pure comparison, and `triton-ops probe` against the real server."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from triton_ops.cli.main import app
from triton_ops.envelope import Envelope
from triton_ops.envelope.model import TensorSpec, Tolerance
from triton_ops.server.local import LocalTriton
from triton_ops.server.probe import ProbeSetupError, probe_expected, probe_inputs, run_probe
from triton_ops.tensors import (
    TensorValueError,
    compare_outputs,
    describe_difference,
    output_types,
    tensor_array,
)

runner = CliRunner()


def golden_differences(env: Envelope, outputs: dict[str, object]) -> list[str]:
    """What `run_probe` reports for these outputs of the envelope's probe."""
    assert env.probe is not None
    return compare_outputs(probe_expected(env), outputs, env.probe.tolerance, output_types(env))


def envelope(**overrides: object) -> Envelope:
    data: dict[str, object] = {
        "name": "m",
        "backend": "python",
        "inputs": [{"name": "X", "data_type": "FP32", "dims": [3]},
                   {"name": "T", "data_type": "INT64", "dims": [-1], "max_dims": [8]}],
        "outputs": [{"name": "Y", "data_type": "FP32", "dims": [2]},
                    {"name": "L", "data_type": "INT64", "dims": [1]}],
        "batching": {"max_batch_size": 4},
        "probe": {
            "inputs": {"X": [[1, 2, 3]], "T": [[5, 6, 0, 0]]},
            "expected": {"Y": [[0.5, 1.5]], "L": [[3]]},
            "tolerance": {"atol": 0.01, "rtol": 0.0},
        },
    }
    data.update(overrides)
    return Envelope.model_validate(data)


def test_probe_inputs_are_typed_from_the_envelope() -> None:
    arrays = probe_inputs(envelope())
    assert arrays["X"].dtype == np.float32 and arrays["X"].shape == (1, 3)
    assert arrays["T"].dtype == np.int64 and arrays["T"].shape == (1, 4)


@pytest.mark.parametrize(("probe", "message"), [
    (None, "has no probe section"),
    ({"inputs": {"X": [[1, 2, 3]], "T": [[1]]}, "expected": {}}, "lists no outputs"),
    ({"inputs": {"Z": [[1]]}, "expected": {"Y": [[1, 1]]}}, "'Z' is not one of the model's inputs"),
    ({"inputs": {"X": [1, 2, 3], "T": [[1]]}, "expected": {"Y": [[1, 1]]}},
     r"shape \[3\], but the model takes \[N, 3\]"),
    ({"inputs": {"X": [[1, 2], [3]], "T": [[1]]}, "expected": {"Y": [[1, 1]]}},
     "every row must have the same length"),
    ({"inputs": {"X": [[1, 2, 3]]}, "expected": {"Y": [[1, 1]]}}, "lacks required input"),
    ({"inputs": {"X": [[1, 2, 3]], "T": [[1]]}, "expected": {"Q": [[1]]}},
     "does not declare: Q"),
    ({"inputs": {"X": [[1, 2, 3]], "T": [[1]]}, "expected": {"Y": [[1, 1], [2]]}},
     "'Y' is not a FP32 array: rows of different lengths"),
    ({"inputs": {"X": [[1, 2, 3]], "T": [[1.5]]}, "expected": {"Y": [[1, 1]]}},
     r"probe input 'T' is not a INT64 array: 1.5 at index \[0, 0\] is not a INT64 value"),
    ({"inputs": {"X": [[1, 2, 3]], "T": [[1]]}, "expected": {"Y": [[1, 1, 1]]}},
     r"'Y' has shape \[1, 3\], but the model returns \[N, 2\]"),
    ({"inputs": {"X": [[1, 2, 3]], "T": [[1]]}, "expected": {"Y": [[1, 1], [2, 2]]}},
     "has 2 rows but the probe inputs have a batch of 1"),
])
def test_probe_setup_errors(probe: object, message: str) -> None:
    with pytest.raises(ProbeSetupError, match=message):
        probe_inputs(envelope(probe=probe))


def test_unbatched_shapes() -> None:
    env = envelope(batching={"max_batch_size": 0},
                   probe={"inputs": {"X": [1, 2, 3], "T": [4]}, "expected": {"Y": [0, 0]}})
    assert probe_inputs(env)["X"].shape == (3,)


def test_compare_outputs_reports_which_output_and_where() -> None:
    env = envelope()
    good = {"Y": np.array([[0.505, 1.5]], np.float32), "L": np.array([[3]], np.int64)}
    assert golden_differences(env, good) == []
    bad = {"Y": np.array([[0.5, 1.9]], np.float32), "L": np.array([[3]], np.int64)}
    [difference] = golden_differences(env, bad)
    assert difference.startswith("Y: 1 of 2 values outside tolerance (atol=0.01, rtol=0)")
    assert "max abs error 0.4" in difference and "index [0, 1]" in difference
    assert "got 1.9, expected 1.5" in difference


def test_compare_outputs_integers_exact_nan_shape_missing() -> None:
    env = envelope()
    found = golden_differences(env, {"Y": np.array([[np.nan, 1.5]]), "L": np.array([[4]])})
    assert found[0].startswith("Y: 1 of 2") and "max abs error inf" in found[0]
    assert found[1].startswith("L: 1 of 1 values outside tolerance (exact match)")
    found = golden_differences(env, {"Y": np.zeros((2, 2)), "L": None})
    assert found == ["Y: shape [2, 2], expected [1, 2]", "L: missing from the server's answer"]



def test_describe_difference_integers_and_bools_exact_floats_with_tolerance() -> None:
    loose = Tolerance(atol=10, rtol=0.5)
    # A tolerance that would hide the difference does not apply to integer or bool types.
    found = describe_difference("IDS", np.array([[7, 8]]), np.array([[7, 9]]),
                                data_type="INT64", tolerance=loose)
    assert found == ("IDS: 1 of 2 values outside tolerance (exact match); max abs error 1 at "
                     "index [0, 1] (got 8, expected 9)")
    found = describe_difference("B", np.array([True, True]), np.array([True, False]),
                                data_type="BOOL", tolerance=loose)
    assert found is not None and found.startswith("B: 1 of 2 values outside tolerance "
                                                  "(exact match)")
    big = 2**62 + 1  # not representable in float64: compared as integers
    assert describe_difference("L", np.array([big]), np.array([big - 1]), data_type="INT64",
                               tolerance=loose) is not None
    assert describe_difference("Y", np.array([7.0]), np.array([9.0]), data_type="FP32",
                               tolerance=loose) is None
    # NaN matches only NaN.
    tol = Tolerance(atol=0.01, rtol=0)
    assert describe_difference("Y", np.array([np.nan, 1.0]), np.array([np.nan, 1.0]),
                               data_type="FP32", tolerance=tol) is None
    found = describe_difference("Y", np.array([1.0, 5.0]), np.array([np.nan, 1.0]),
                                data_type="FP32", tolerance=tol)
    assert found is not None and "2 of 2" in found and "max abs error inf at index [0]" in found


def test_describe_difference_strings_compare_bytes_and_text_alike() -> None:
    tol = Tolerance()
    want = np.array([b"cat", b"dog"], dtype=object)
    assert describe_difference("S", np.array(["cat", "dog"], dtype=object), want,
                               data_type="STRING", tolerance=tol) is None
    found = describe_difference("S", np.array([b"cat", b"cow"], dtype=object), want,
                                data_type="BYTES", tolerance=tol)
    assert found == "S: 1 of 2 values differ; first at index [1]: got 'cow', expected 'dog'"
    assert describe_difference("S", None, want, data_type="STRING", tolerance=tol) == (
        "S: missing from the server's answer")


def test_tensor_array_types_and_rejects_values_it_would_change() -> None:
    env = envelope(outputs=[{"name": "S", "data_type": "STRING", "dims": [-1]},
                            {"name": "U", "data_type": "UINT8", "dims": [2]}])
    strings = tensor_array(env.tensor("S"), [["a", "b"]], batched=True, output=True)
    assert strings.dtype == object and strings.tolist() == [[b"a", b"b"]]
    assert tensor_array(env.tensor("U"), [[1, 2.0]], batched=True).dtype == np.uint8
    with pytest.raises(TensorValueError, match=r"300 at index \[0, 1\] is not a UINT8 value"):
        tensor_array(env.tensor("U"), [[1, 300]], batched=True)
    with pytest.raises(TensorValueError, match=r"70000.0 at index \[0\] is too large for FP16"):
        tensor_array(TensorSpec(name="H", data_type="FP16", dims=[2]), [70000.0, 1.0],
                     batched=False)
    with pytest.raises(TensorValueError, match=r"has shape \[1, 3\], but the model returns "
                       r"\[N, 2\]"):
        tensor_array(env.tensor("U"), [[1, 2, 3]], batched=True, output=True)

@pytest.mark.slow
@pytest.mark.parametrize("model", ["dense_mlp", "text_classifier"])
def test_run_probe_healthy(local_triton: LocalTriton, envelopes_dir: Path, model: str) -> None:
    from triton_ops.envelope import require_envelope

    result = run_probe(require_envelope(envelopes_dir / f"{model}.yaml"), local_triton.grpc_url)
    assert result.ok, result.summary()
    assert result.differences == [] and result.error is None and result.latency_s > 0


@pytest.mark.slow
def test_run_probe_unready_version_and_unreachable(local_triton: LocalTriton,
                                                   envelopes_dir: Path) -> None:
    from triton_ops.envelope import require_envelope

    env = require_envelope(envelopes_dir / "dense_mlp.yaml")
    result = run_probe(env, local_triton.grpc_url, model_version="7")
    assert not result.ok and "version 7 is not ready" in (result.error or "")
    result = run_probe(env, "127.0.0.1:1", timeout_s=3)
    assert not result.ok and "did not answer" in (result.error or "")


@pytest.mark.slow
def test_cli_probe_url_healthy(local_triton: LocalTriton, envelopes_dir: Path) -> None:
    result = runner.invoke(app, ["probe", "dense_mlp", "--url", local_triton.grpc_url,
                                 "--envelopes", str(envelopes_dir), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ok"] is True and data["model"] == "dense_mlp" and data["differences"] == []


@pytest.mark.slow
def test_cli_probe_embedded_healthy(triton_repo: Path, envelopes_dir: Path) -> None:
    result = runner.invoke(app, ["probe", "text_classifier", "--repo", str(triton_repo),
                                 "--envelopes", str(envelopes_dir)])
    assert result.exit_code == 0, result.output
    assert "text_classifier: healthy" in result.output


WRONG_PROBS = '''
        probs = probs[:, ::-1].copy()  # a bug: classes in the wrong order
'''


@pytest.mark.slow
def test_cli_probe_wrong_output_exits_1_naming_it(tmp_path: Path, triton_repo: Path,
                                                  envelopes_dir: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(triton_repo / "dense_mlp", repo / "dense_mlp")
    model = repo / "dense_mlp" / "1" / "model.py"
    source = model.read_text()
    anchor = "        logits, probs = forward(self.weights, np.concatenate(inputs, axis=0))\n"
    assert anchor in source
    model.write_text(source.replace(anchor, anchor + WRONG_PROBS))
    result = runner.invoke(app, ["probe", "dense_mlp", "--repo", str(repo),
                                 "--envelopes", str(envelopes_dir)])
    assert result.exit_code == 1, result.output
    assert "UNHEALTHY" in result.output and "PROBS:" in result.output
    assert "LOGITS:" not in result.output  # only what differs is named
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_cli_probe_model_that_fails_to_load(tmp_path: Path, triton_repo: Path,
                                            envelopes_dir: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(triton_repo / "dense_mlp", repo / "dense_mlp")
    model = repo / "dense_mlp" / "1" / "model.py"
    model.write_text(model.read_text().replace(
        "        self.weights = make_weights(seed, hidden)",
        "        raise ValueError('corrupt weights in shard 3')"))
    result = runner.invoke(app, ["probe", "dense_mlp", "--repo", str(repo),
                                 "--envelopes", str(envelopes_dir)])
    assert result.exit_code == 1, result.output
    assert "corrupt weights in shard 3" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("setup", "args", "message"), [
    ("none", ["probe", "nosuch"], "no envelope for model 'nosuch'"),
    ("bad_yaml", ["probe", "m"], "m.yaml:3:1: while parsing"),
    ("no_probe", ["probe", "m"], "has no probe section"),
    ("no_model", ["probe", "m"], "no model 'm' in"),
    ("none", ["probe", "dense_mlp", "--version", "latest"], "--version must be a version"),
    ("none", ["probe", "dense_mlp", "--url", "h:notaport"], "bad port"),
])
def test_cli_probe_usage_errors(tmp_path: Path, envelopes_dir: Path, setup: str,
                                args: list[str], message: str) -> None:
    folder = envelopes_dir
    if setup != "none":
        folder = tmp_path / "envelopes"
        folder.mkdir()
        text = {
            "bad_yaml": "name: m\nbackend: [python\n",
            "no_probe": "name: m\nbackend: python\n",
            "no_model": ("name: m\nbackend: python\ninputs: [{name: X, data_type: FP32, dims: [1]}]"
                         "\noutputs: [{name: Y, data_type: FP32, dims: [1]}]\n"
                         "probe: {inputs: {X: [1]}, expected: {Y: [1]}}\n"),
        }[setup]
        (folder / "m.yaml").write_text(text)
    result = runner.invoke(app, [*args, "--envelopes", str(folder), "--repo", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_probe_of_loopback_ignores_http_proxy(local_triton: LocalTriton, envelopes_dir: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """gRPC honours http_proxy even for 127.0.0.1; the embedded server must not go through it."""
    from triton_ops.envelope import require_envelope

    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "grpc_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    result = run_probe(require_envelope(envelopes_dir / "dense_mlp.yaml"), local_triton.grpc_url)
    assert result.ok, result.summary()
