"""The CPU example models, run through the real embedded Triton, checked against numpy.

The references below are written independently of the models' code (plain float64 numpy
from the same seeded weight recipe), so a bug in a model's batching, masking or maths shows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from triton_ops.envelope import require_envelope
from triton_ops.server.local import LocalTriton


def _infer(server: LocalTriton, model: str, name: str, data: np.ndarray, dtype: str,
           outputs: list[str]) -> dict[str, np.ndarray]:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput(name, list(data.shape), dtype)
    tensor.set_data_from_numpy(data)
    result = client.infer(model, [tensor], client_timeout=30)
    return {o: result.as_numpy(o) for o in outputs}


def dense_mlp_reference(
    x: np.ndarray, seed: int = 0, hidden: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((32, hidden), dtype=np.float32).astype(np.float64) / np.sqrt(32)
    b1 = rng.standard_normal(hidden, dtype=np.float32).astype(np.float64) * 0.1
    w2_q = rng.integers(-127, 128, size=(hidden, hidden), dtype=np.int8).astype(np.float64)
    scale = 1.0 / (73.3 * np.sqrt(hidden)) * rng.uniform(0.5, 1.5, size=hidden).astype(np.float32)
    b2 = rng.standard_normal(hidden, dtype=np.float32).astype(np.float64) * 0.1
    w3 = rng.standard_normal((hidden, 8), dtype=np.float32).astype(np.float64) / np.sqrt(hidden)
    b3 = rng.standard_normal(8, dtype=np.float32).astype(np.float64) * 0.1
    h = np.maximum(x.astype(np.float64) @ w1 + b1, 0)
    h = np.maximum(h @ (w2_q * scale.astype(np.float32).astype(np.float64)) + b2, 0)
    logits = h @ w3 + b3
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return logits, e / e.sum(axis=1, keepdims=True)


def text_classifier_reference(sequences: list[list[int]], seed: int = 0, vocab: int = 1000,
                              dim: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((vocab, dim), dtype=np.float32).astype(np.float64)
    w1 = rng.standard_normal((dim, dim), dtype=np.float32).astype(np.float64) / np.sqrt(dim)
    b1 = rng.standard_normal(dim, dtype=np.float32).astype(np.float64) * 0.1
    w2 = rng.standard_normal((dim, 4), dtype=np.float32).astype(np.float64) / np.sqrt(dim)
    b2 = rng.standard_normal(4, dtype=np.float32).astype(np.float64) * 0.1
    logits = []
    for seq in sequences:  # one sequence at a time, real tokens only: no padding involved
        pooled = emb[seq].mean(axis=0) if seq else np.zeros(dim)
        logits.append(np.tanh(pooled @ w1 + b1) @ w2 + b2)
    out = np.array(logits)
    return out, out.argmax(axis=1).reshape(-1, 1)


@pytest.mark.slow
def test_dense_mlp_matches_numpy(local_triton: LocalTriton) -> None:
    x = np.random.default_rng(123).uniform(-2, 2, size=(5, 32)).astype(np.float32)
    got = _infer(local_triton, "dense_mlp", "FEATURES", x, "FP32", ["LOGITS", "PROBS"])
    logits, probs = dense_mlp_reference(x)
    assert got["LOGITS"].shape == (5, 8) and got["LOGITS"].dtype == np.float32
    np.testing.assert_allclose(got["LOGITS"], logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got["PROBS"], probs, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["PROBS"].sum(axis=1), 1.0, rtol=1e-5)
    # distinct inputs give distinct rows: the model does not broadcast one answer
    assert not np.allclose(got["LOGITS"][0], got["LOGITS"][1])


@pytest.mark.slow
def test_dense_mlp_rows_independent_of_batch(local_triton: LocalTriton) -> None:
    x = np.random.default_rng(5).uniform(-1, 1, size=(16, 32)).astype(np.float32)
    batched = _infer(local_triton, "dense_mlp", "FEATURES", x, "FP32", ["LOGITS"])["LOGITS"]
    single = _infer(local_triton, "dense_mlp", "FEATURES", x[3:4], "FP32", ["LOGITS"])["LOGITS"]
    np.testing.assert_allclose(single[0], batched[3], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_text_classifier_masks_padding(local_triton: LocalTriton) -> None:
    sequences = [[17, 254, 3, 999, 42, 8, 610, 77, 5, 6], [5, 901, 33], [12], [400, 401]]
    length = 16  # more padding than any sequence needs: the answer must not change
    tokens = np.zeros((len(sequences), length), dtype=np.int64)
    for i, seq in enumerate(sequences):
        tokens[i, : len(seq)] = seq
    got = _infer(local_triton, "text_classifier", "TOKENS", tokens, "INT64", ["LOGITS", "LABEL"])
    logits, labels = text_classifier_reference(sequences)
    np.testing.assert_allclose(got["LOGITS"], logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got["LABEL"], labels)
    assert got["LABEL"].dtype == np.int64
    # the same short sequence alone, unpadded, gives the same answer as padded in the batch
    alone = _infer(local_triton, "text_classifier", "TOKENS", np.array([[5, 901, 33]]), "INT64",
                   ["LOGITS"])["LOGITS"]
    np.testing.assert_allclose(alone[0], got["LOGITS"][1], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_text_classifier_rejects_out_of_vocabulary(local_triton: LocalTriton) -> None:
    tokens = np.array([[3, 1000]], dtype=np.int64)
    with pytest.raises(Exception, match=r"outside \[0, 1000\)"):
        _infer(local_triton, "text_classifier", "TOKENS", tokens, "INT64", ["LOGITS"])


@pytest.mark.slow
def test_text_classifier_rejects_too_long(local_triton: LocalTriton) -> None:
    tokens = np.ones((1, 129), dtype=np.int64)
    with pytest.raises(Exception, match="at most 128"):
        _infer(local_triton, "text_classifier", "TOKENS", tokens, "INT64", ["LOGITS"])


@pytest.mark.parametrize("model", ["dense_mlp", "text_classifier"])
def test_envelope_golden_matches_reference(model: str, envelopes_dir: Path) -> None:
    """The golden answers in the envelopes are what the independent references compute."""
    envelope = require_envelope(envelopes_dir / f"{model}.yaml")
    assert envelope.probe is not None
    if model == "dense_mlp":
        x = np.array(envelope.probe.inputs["FEATURES"], dtype=np.float32)
        logits, probs = dense_mlp_reference(x)
        expected = {"LOGITS": logits, "PROBS": probs}
    else:
        tokens = envelope.probe.inputs["TOKENS"]
        logits, labels = text_classifier_reference([[t for t in row if t] for row in tokens])
        expected = {"LOGITS": logits, "LABEL": labels}
    for name, value in expected.items():
        np.testing.assert_allclose(np.array(envelope.probe.expected[name]), value,
                                   rtol=1e-4, atol=1e-5, err_msg=name)
