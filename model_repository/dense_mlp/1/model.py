"""dense_mlp: a small MLP with int8 weight-only quantisation, in numpy (Triton Python backend).

FEATURES [32] FP32 -> dense(32->H) ReLU -> int8 dense(H->H) ReLU -> dense(H->8) -> LOGITS, PROBS.

The weights are generated at initialize from a seed (config parameters `seed`, `hidden`), so
the repository holds no weight files. The middle layer is stored as int8 with one float32
scale per output column and is dequantised on every execution, as weight-only quantised
models do: that is a fixed cost per execution, independent of the batch size, which the
dynamic batcher amortises. All requests of one execution are concatenated and run as one
batch.
"""

import json

import numpy as np
from threadpoolctl import threadpool_limits
import triton_python_backend_utils as pb_utils

N_FEATURES = 32
N_CLASSES = 8


def make_weights(seed: int, hidden: int) -> dict:
    """The model's weights; tests rebuild them with the same recipe to check outputs."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((N_FEATURES, hidden), dtype=np.float32) / np.sqrt(N_FEATURES))
    b1 = rng.standard_normal(hidden, dtype=np.float32) * np.float32(0.1)
    w2_q = rng.integers(-127, 128, size=(hidden, hidden), dtype=np.int8)
    # uniform int8 in [-127, 127] has std ~73: scale so the layer keeps unit variance
    w2_scale = np.full(hidden, 1.0 / (73.3 * np.sqrt(hidden)), dtype=np.float32)
    w2_scale *= rng.uniform(0.5, 1.5, size=hidden).astype(np.float32)
    b2 = rng.standard_normal(hidden, dtype=np.float32) * np.float32(0.1)
    w3 = rng.standard_normal((hidden, N_CLASSES), dtype=np.float32) / np.sqrt(hidden)
    b3 = rng.standard_normal(N_CLASSES, dtype=np.float32) * np.float32(0.1)
    return {
        "w1": w1.astype(np.float32), "b1": b1.astype(np.float32),
        "w2_q": w2_q, "w2_scale": w2_scale,
        "b2": b2.astype(np.float32),
        "w3": w3.astype(np.float32), "b3": b3.astype(np.float32),
    }


def forward(weights: dict, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w2 = weights["w2_q"].astype(np.float32)  # dequantise: the per-execution fixed cost
    w2 *= weights["w2_scale"]
    h = np.maximum(x @ weights["w1"] + weights["b1"], 0.0)
    h = np.maximum(h @ w2 + weights["b2"], 0.0)
    logits = (h @ weights["w3"] + weights["b3"]).astype(np.float32)
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    probs = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    return logits, probs


def _parameter(config: dict, key: str, default: str) -> str:
    return config.get("parameters", {}).get(key, {}).get("string_value", default)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        # Each instance is its own process. With the BLAS default (one thread per core) N
        # instances oversubscribe the cores, and OpenBLAS threads spin while they wait: the
        # model then slows itself and everything beside it down, erratically.
        self.blas_limits = threadpool_limits(
            limits=int(_parameter(config, "blas_threads", "1")), user_api="blas")
        seed = int(_parameter(config, "seed", "0"))
        hidden = int(_parameter(config, "hidden", "1024"))
        self.weights = make_weights(seed, hidden)

    def execute(self, requests):
        inputs = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "FEATURES").as_numpy()
            inputs.append(np.asarray(x, dtype=np.float32).reshape(-1, N_FEATURES))
        sizes = [len(x) for x in inputs]
        logits, probs = forward(self.weights, np.concatenate(inputs, axis=0))
        responses = []
        start = 0
        for size in sizes:
            end = start + size
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("LOGITS", logits[start:end]),
                pb_utils.Tensor("PROBS", probs[start:end]),
            ]))
            start = end
        return responses
