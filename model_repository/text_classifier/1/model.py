"""text_classifier: bag-of-embeddings text classifier in numpy (Triton Python backend).

TOKENS [-1] INT64 (token ids, 0 = padding) -> embedding -> mean over the REAL tokens (padding
masked out) -> tanh dense -> LOGITS [4] FP32 and LABEL [1] INT64 (argmax).

Sequences of different lengths are padded with 0 up to a common length in a request; the
mask makes the answer independent of how much padding there is, so a sequence gives the same
result alone or padded inside a batch. Weights come from a seed (config parameters `seed`,
`vocab_size`, `embedding_dim`). A request with an id outside [0, vocab_size) or longer than
`max_tokens` gets an error response; the other requests of the same execution still succeed.
"""

import json

import numpy as np
from threadpoolctl import threadpool_limits
import triton_python_backend_utils as pb_utils

N_CLASSES = 4
PAD_ID = 0


def make_weights(seed: int, vocab_size: int, dim: int) -> dict:
    rng = np.random.default_rng(seed)
    embedding = rng.standard_normal((vocab_size, dim), dtype=np.float32)
    embedding[PAD_ID] = 0.0
    w1 = rng.standard_normal((dim, dim), dtype=np.float32) / np.sqrt(dim)
    b1 = rng.standard_normal(dim, dtype=np.float32) * np.float32(0.1)
    w2 = rng.standard_normal((dim, N_CLASSES), dtype=np.float32) / np.sqrt(dim)
    b2 = rng.standard_normal(N_CLASSES, dtype=np.float32) * np.float32(0.1)
    return {"embedding": embedding, "w1": w1.astype(np.float32), "b1": b1,
            "w2": w2.astype(np.float32), "b2": b2}


def forward(weights: dict, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mask = (tokens != PAD_ID).astype(np.float32)  # [batch, length]
    counts = np.maximum(mask.sum(axis=1, keepdims=True), 1.0)  # all-padding rows -> zeros
    summed = np.einsum("bl,bld->bd", mask, weights["embedding"][tokens])
    pooled = summed / counts
    hidden = np.tanh(pooled @ weights["w1"] + weights["b1"])
    logits = (hidden @ weights["w2"] + weights["b2"]).astype(np.float32)
    labels = logits.argmax(axis=1).astype(np.int64).reshape(-1, 1)
    return logits, labels


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
        self.vocab_size = int(_parameter(config, "vocab_size", "1000"))
        self.max_tokens = int(_parameter(config, "max_tokens", "128"))
        self.weights = make_weights(
            int(_parameter(config, "seed", "0")),
            self.vocab_size,
            int(_parameter(config, "embedding_dim", "64")),
        )

    def _check(self, tokens: np.ndarray) -> str | None:
        if tokens.ndim != 2:
            return f"TOKENS must be [batch, length], got shape {list(tokens.shape)}"
        if tokens.shape[1] > self.max_tokens:
            return f"TOKENS has {tokens.shape[1]} tokens; at most {self.max_tokens} are accepted"
        if tokens.size and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
            return (f"TOKENS holds ids outside [0, {self.vocab_size}): "
                    f"min {int(tokens.min())}, max {int(tokens.max())}")
        return None

    def execute(self, requests):
        responses = []
        for request in requests:
            tokens = pb_utils.get_input_tensor_by_name(request, "TOKENS").as_numpy()
            tokens = np.asarray(tokens, dtype=np.int64)
            problem = self._check(tokens)
            if problem:
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(problem)))
                continue
            logits, labels = forward(self.weights, tokens)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("LOGITS", logits),
                pb_utils.Tensor("LABEL", labels),
            ]))
        return responses
