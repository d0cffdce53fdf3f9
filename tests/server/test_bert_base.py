"""bert_base: golden answer checked by an independent numpy BERT; load errors; GPU serving.

The GPU tests need torch with CUDA in this Python environment (the Triton stub runs with
it) and are skipped with that reason elsewhere. On CPU-only machines the tests here check
that the model's load failure says why.
"""

from __future__ import annotations

import importlib.util
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from triton_ops.envelope import require_envelope
from triton_ops.server.local import ServerError

VOCAB, HIDDEN, LAYERS, HEADS, FFN, MAX_POS, N_LABELS = 30522, 768, 12, 12, 3072, 512, 8


def _cuda_torch() -> str | None:
    """Why bert_base cannot run here, or None when torch sees a CUDA GPU."""
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed in this Python environment"
    import torch

    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA GPU"
    return None


NO_GPU_REASON = _cuda_torch()
needs_gpu = pytest.mark.skipif(NO_GPU_REASON is not None, reason=f"bert_base: {NO_GPU_REASON}")


def bert_weights(seed: int) -> dict:
    """The model's seeded weight recipe (normal, std 0.02, in the model's generation order)."""
    rng = np.random.default_rng(seed)

    def n(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)

    w: dict = {"word": n(VOCAB, HIDDEN), "position": n(MAX_POS, HIDDEN), "type": n(2, HIDDEN)}
    for i in range(LAYERS):
        w[i] = {"qkv": n(HIDDEN, 3 * HIDDEN), "qkv_b": n(3 * HIDDEN), "out": n(HIDDEN, HIDDEN),
                "out_b": n(HIDDEN), "ff1": n(HIDDEN, FFN), "ff1_b": n(FFN),
                "ff2": n(FFN, HIDDEN), "ff2_b": n(HIDDEN)}
    w["pool"], w["pool_b"] = n(HIDDEN, HIDDEN), n(HIDDEN)
    w["cls"], w["cls_b"] = n(HIDDEN, N_LABELS), n(N_LABELS)
    return w


_erf = np.frompyfunc(math.erf, 1, 1)


def _layer_norm(x: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-12)


def bert_reference(w: dict, ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 BERT, one sequence at a time over its real tokens only (no padding at all)."""
    d = HIDDEN // HEADS
    logits, pooled = [], []
    for row, keep in zip(ids, mask, strict=True):
        tokens = row[keep.astype(bool)]
        x = _layer_norm(w["word"][tokens].astype(np.float64) + w["position"][: len(tokens)]
                        + w["type"][0])
        for i in range(LAYERS):
            p = w[i]
            q, k, v = np.split(x @ p["qkv"] + p["qkv_b"], 3, axis=-1)
            heads = []
            for h in range(HEADS):
                cols = slice(h * d, (h + 1) * d)
                s = q[:, cols] @ k[:, cols].T / math.sqrt(d)
                s = np.exp(s - s.max(-1, keepdims=True))
                heads.append((s / s.sum(-1, keepdims=True)) @ v[:, cols])
            x = _layer_norm(x + np.concatenate(heads, -1) @ p["out"] + p["out_b"])
            hidden = x @ p["ff1"] + p["ff1_b"]
            hidden = 0.5 * hidden * (1 + _erf(hidden / math.sqrt(2)).astype(np.float64))
            x = _layer_norm(x + hidden @ p["ff2"] + p["ff2_b"])
        pool = np.tanh(x[0] @ w["pool"] + w["pool_b"])
        pooled.append(pool)
        logits.append(pool @ w["cls"] + w["cls_b"])
    return np.array(logits), np.array(pooled)


@pytest.mark.slow
def test_golden_answer_matches_independent_numpy_bert(envelopes_dir: Path) -> None:
    envelope = require_envelope(envelopes_dir / "bert_base.yaml")
    assert envelope.probe is not None and envelope.parameters["seed"] == "0"
    ids = np.array(envelope.probe.inputs["INPUT_IDS"])
    mask = np.array(envelope.probe.inputs["ATTENTION_MASK"])
    logits, _ = bert_reference(bert_weights(0), ids, mask)
    np.testing.assert_allclose(np.array(envelope.probe.expected["LOGITS"]), logits,
                               rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(NO_GPU_REASON is None, reason="this machine can run bert_base")
def test_load_without_gpu_says_why(triton_repo: Path, tmp_path: Path, start_triton) -> None:
    with pytest.raises(ServerError, match="bert_base.*KIND_GPU but no GPUs are available"):
        start_triton(triton_repo, models=["bert_base"])
    # On CPU instances the model's own check speaks: no torch, or no CUDA.
    repo = tmp_path / "repo"
    shutil.copytree(triton_repo / "bert_base", repo / "bert_base")
    config = repo / "bert_base" / "config.pbtxt"
    config.write_text(config.read_text().replace("KIND_GPU", "KIND_CPU"))
    with pytest.raises(ServerError, match=re.escape("bert_base needs ")) as info:
        start_triton(repo, models=["bert_base"])
    assert "PyTorch" in str(info.value) or "CUDA GPU" in str(info.value)


@pytest.mark.slow
@pytest.mark.gpu
@needs_gpu
def test_bert_base_on_gpu(triton_repo: Path, envelopes_dir: Path, start_triton) -> None:
    import tritonclient.grpc as grpcclient

    from triton_ops.server.probe import run_probe

    server = start_triton(triton_repo, models=["bert_base"], startup_timeout_s=300)
    envelope = require_envelope(envelopes_dir / "bert_base.yaml")
    result = run_probe(envelope, server.grpc_url, timeout_s=60)
    assert result.ok, result.summary()
    # padding: a sequence alone (unpadded) answers as it does padded inside a batch
    client = grpcclient.InferenceServerClient(server.grpc_url)
    ids = np.array([[101, 2023, 2003, 102]], np.int64)
    inputs = []
    for name, value in (("INPUT_IDS", ids), ("ATTENTION_MASK", np.ones_like(ids))):
        tensor = grpcclient.InferInput(name, list(value.shape), "INT64")
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    alone = client.infer("bert_base", inputs, client_timeout=60).as_numpy("LOGITS")
    np.testing.assert_allclose(alone[0], envelope.probe.expected["LOGITS"][1],
                               atol=2e-2, rtol=5e-2)
