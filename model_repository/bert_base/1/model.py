"""bert_base: a BERT-base-sized encoder in PyTorch, fp16 on the GPU (Triton Python backend).

INPUT_IDS [-1] INT64 and ATTENTION_MASK [-1] INT64 (1 = real token, 0 = padding), up to 128
tokens -> 12 layers, hidden 768, 12 heads, FFN 3072 (110M parameters) -> LOGITS [8] FP32
(a classifier on the pooled [CLS] state) and EMBEDDING [768] FP32 (the pooled state).

The weights are random but seeded: generated with numpy from config parameter `seed`, so the
repository holds no weight file and an fp32 numpy reference can recompute the golden answer.
Requests of one execution are padded to their longest sequence and run as one batch.

Needs torch and a CUDA GPU in the Python environment that runs the Triton stub; without them
initialize raises an error saying so (the model then fails to load with that message).
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

VOCAB = 30522
HIDDEN = 768
LAYERS = 12
HEADS = 12
FFN = 3072
MAX_POSITIONS = 512
TYPES = 2
N_LABELS = 8
LN_EPS = 1e-12


def make_weights(seed: int, layers: int = LAYERS) -> dict:
    """Seeded BERT weights (normal, std 0.02; LayerNorm gain 1, bias 0), float32 numpy."""
    rng = np.random.default_rng(seed)

    def normal(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02))

    w = {
        "word": normal(VOCAB, HIDDEN), "position": normal(MAX_POSITIONS, HIDDEN),
        "type": normal(TYPES, HIDDEN),
        "emb_ln_g": np.ones(HIDDEN, np.float32), "emb_ln_b": np.zeros(HIDDEN, np.float32),
    }
    for i in range(layers):
        p = f"l{i}."
        w[p + "qkv"] = normal(HIDDEN, 3 * HIDDEN)
        w[p + "qkv_b"] = normal(3 * HIDDEN)
        w[p + "out"] = normal(HIDDEN, HIDDEN)
        w[p + "out_b"] = normal(HIDDEN)
        w[p + "ln1_g"] = np.ones(HIDDEN, np.float32)
        w[p + "ln1_b"] = np.zeros(HIDDEN, np.float32)
        w[p + "ff1"] = normal(HIDDEN, FFN)
        w[p + "ff1_b"] = normal(FFN)
        w[p + "ff2"] = normal(FFN, HIDDEN)
        w[p + "ff2_b"] = normal(HIDDEN)
        w[p + "ln2_g"] = np.ones(HIDDEN, np.float32)
        w[p + "ln2_b"] = np.zeros(HIDDEN, np.float32)
    w["pool"] = normal(HIDDEN, HIDDEN)
    w["pool_b"] = normal(HIDDEN)
    w["cls"] = normal(HIDDEN, N_LABELS)
    w["cls_b"] = normal(N_LABELS)
    return w


def _parameter(config: dict, key: str, default: str) -> str:
    return config.get("parameters", {}).get(key, {}).get("string_value", default)


def build_encoder(torch, weights: dict, layers: int, device: str, dtype):
    """The forward pass as a closure over torch tensors (no nn.Module: plain, readable ops)."""
    F = torch.nn.functional
    t = {k: torch.from_numpy(v).to(device=device, dtype=dtype) for k, v in weights.items()}

    def layer_norm(x, g, b):
        return F.layer_norm(x, (HIDDEN,), t[g], t[b], LN_EPS)

    @torch.inference_mode()
    def forward(input_ids, attention_mask):
        batch, length = input_ids.shape
        positions = torch.arange(length, device=device)
        x = t["word"][input_ids] + t["position"][positions][None] + t["type"][0]
        x = layer_norm(x, "emb_ln_g", "emb_ln_b")
        # additive mask: padding keys get -inf-like scores (in the compute dtype)
        keep = attention_mask[:, None, None, :].to(torch.bool)
        head = HIDDEN // HEADS
        for i in range(layers):
            p = f"l{i}."
            qkv = x @ t[p + "qkv"] + t[p + "qkv_b"]
            q, k, v = (z.view(batch, length, HEADS, head).transpose(1, 2)
                       for z in qkv.split(HIDDEN, dim=-1))
            attn = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
            attn = attn.transpose(1, 2).reshape(batch, length, HIDDEN)
            x = layer_norm(x + attn @ t[p + "out"] + t[p + "out_b"], p + "ln1_g", p + "ln1_b")
            h = F.gelu(x @ t[p + "ff1"] + t[p + "ff1_b"])
            x = layer_norm(x + h @ t[p + "ff2"] + t[p + "ff2_b"], p + "ln2_g", p + "ln2_b")
        pooled = torch.tanh(x[:, 0] @ t["pool"] + t["pool_b"])
        logits = pooled @ t["cls"] + t["cls_b"]
        return logits.float(), pooled.float()

    return forward


class TritonPythonModel:
    def initialize(self, args):
        try:
            import torch
        except ImportError as exc:
            raise pb_utils.TritonModelException(
                "bert_base needs PyTorch in the Python environment of the Triton stub (the "
                f"python3 first on PATH when tritonserver starts): {exc}. Install torch there "
                "or run this model on a GPU machine that has it"
            ) from None
        if not torch.cuda.is_available():
            raise pb_utils.TritonModelException(
                "bert_base needs a CUDA GPU: torch.cuda.is_available() is False in the Triton "
                "stub's Python environment (torch " + torch.__version__ + ")"
            )
        self.torch = torch
        config = json.loads(args["model_config"])
        layers = int(_parameter(config, "layers", str(LAYERS)))
        self.max_tokens = int(_parameter(config, "max_tokens", "128"))
        device_id = int(args.get("model_instance_device_id", 0) or 0)
        self.device = f"cuda:{device_id}"
        weights = make_weights(int(_parameter(config, "seed", "0")), layers)
        self.forward = build_encoder(torch, weights, layers, self.device, torch.float16)
        # Warm up (CUDA context, kernels) so the first request is not the slow one.
        ids = torch.ones((1, 8), dtype=torch.int64, device=self.device)
        self.forward(ids, torch.ones_like(ids))
        torch.cuda.synchronize(self.device)

    def _check(self, ids: np.ndarray, mask: np.ndarray) -> str | None:
        if ids.ndim != 2 or ids.shape != mask.shape:
            return (f"INPUT_IDS {list(ids.shape)} and ATTENTION_MASK {list(mask.shape)} must be "
                    "[batch, length] of the same shape")
        if ids.shape[1] > self.max_tokens or ids.shape[1] < 1:
            return f"sequences must have 1 to {self.max_tokens} tokens, got {ids.shape[1]}"
        if ids.size and (ids.min() < 0 or ids.max() >= VOCAB):
            return f"INPUT_IDS must be in [0, {VOCAB})"
        if mask.size and not np.isin(mask, (0, 1)).all():
            return "ATTENTION_MASK must hold only 0 and 1"
        if (mask[:, 0] != 1).any():
            return "ATTENTION_MASK must be 1 for the first ([CLS]) token of every sequence"
        return None

    def execute(self, requests):
        torch = self.torch
        responses = [None] * len(requests)
        good = []
        for i, request in enumerate(requests):
            ids = pb_utils.get_input_tensor_by_name(request, "INPUT_IDS").as_numpy()
            mask = pb_utils.get_input_tensor_by_name(request, "ATTENTION_MASK").as_numpy()
            ids, mask = np.asarray(ids, np.int64), np.asarray(mask, np.int64)
            problem = self._check(ids, mask)
            if problem:
                responses[i] = pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(problem))
            else:
                good.append((i, ids, mask))
        if good:
            length = max(ids.shape[1] for _, ids, _ in good)
            rows = sum(len(ids) for _, ids, _ in good)
            all_ids = np.zeros((rows, length), np.int64)
            all_mask = np.zeros((rows, length), np.int64)
            start = 0
            for _, ids, mask in good:
                all_ids[start:start + len(ids), : ids.shape[1]] = ids
                all_mask[start:start + len(ids), : ids.shape[1]] = mask
                start += len(ids)
            logits, pooled = self.forward(
                torch.from_numpy(all_ids).to(self.device, non_blocking=True),
                torch.from_numpy(all_mask).to(self.device, non_blocking=True),
            )
            logits, pooled = logits.cpu().numpy(), pooled.cpu().numpy()
            start = 0
            for i, ids, _ in good:
                end = start + len(ids)
                responses[i] = pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("LOGITS", logits[start:end]),
                    pb_utils.Tensor("EMBEDDING", pooled[start:end]),
                ])
                start = end
        return responses
