"""Model control for `tune`: candidate configs applied to a running Triton, and the original put
back. Candidates are applied with the model-control API (`load_model(name, config=json)`), so
the server is never restarted.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Mapping
from typing import Any

from triton_ops.tune.batcher import Candidate
from triton_ops.tune.server_stats import Counters, counters_from_json


def candidate_config(base: Mapping[str, Any], candidate: Candidate) -> dict[str, Any]:
    """The model's config (protobuf JSON form) with the candidate's settings put in."""
    cfg = copy.deepcopy(dict(base))
    cfg["max_batch_size"] = candidate.max_batch_size
    if candidate.max_batch_size > 0:
        dyn = dict(cfg.get("dynamic_batching") or {})
        dyn["max_queue_delay_microseconds"] = str(candidate.max_queue_delay_us)
        if candidate.preferred_batch_sizes:
            dyn["preferred_batch_size"] = list(candidate.preferred_batch_sizes)
        else:
            dyn.pop("preferred_batch_size", None)
        cfg["dynamic_batching"] = dyn
    else:
        cfg.pop("dynamic_batching", None)
    groups = [dict(g) for g in cfg.get("instance_group") or [{}]]
    # The candidate's count goes to the first group; others (if any) are dropped so that the
    # instance count means what it says.
    first = groups[0]
    first["count"] = candidate.instance_count
    cfg["instance_group"] = [first]
    return cfg


def candidate_from_config(cfg: Mapping[str, Any]) -> Candidate:
    """The settings of a loaded config, as a Candidate (the baseline)."""
    dyn = cfg.get("dynamic_batching") or {}
    groups = cfg.get("instance_group") or [{}]
    count = sum(int(g.get("count", 1) or 1) for g in groups)
    mbs = int(cfg.get("max_batch_size", 0) or 0)
    pref = tuple(int(p) for p in dyn.get("preferred_batch_size", []) or [] if int(p) <= mbs)
    if pref == (mbs,):
        pref = ()  # Triton fills in [max_batch_size] itself: the same as no preferred sizes
    return Candidate(mbs, int(dyn.get("max_queue_delay_microseconds", 0) or 0) if mbs else 0,
                     max(count, 1), pref if mbs else ())


class ModelControl:
    """One model on a running Triton: its original config, the candidate it runs with now,
    loads, the restore, and its statistics counters."""

    def __init__(self, grpc_url: str, model: str, *, load_timeout_s: float = 120.0) -> None:
        import tritonclient.grpc as grpcclient

        from triton_ops.server.endpoints import grpc_channel_args

        self.client = grpcclient.InferenceServerClient(
            grpc_url, channel_args=grpc_channel_args(grpc_url))
        self.model = model
        self.load_timeout_s = load_timeout_s
        self.was_loaded = self.client.is_model_ready(model)
        if not self.was_loaded:
            self.client.load_model(model)
        self.original: dict[str, Any] = self.client.get_model_config(model, as_json=True)["config"]
        self.loaded: Candidate | None = candidate_from_config(self.original)
        # The config the model runs with now, as the server reports it (None when unknown,
        # e.g. after a failed load), and the config last sent that produced it.
        self.loaded_config: dict[str, Any] | None = dict(self.original)
        self._sent: str | None = None

    @property
    def original_candidate(self) -> Candidate:
        return candidate_from_config(self.original)

    def runs_original(self) -> bool:
        """Whether the model runs with exactly its original config now."""
        return self.loaded_config == self.original

    def load(self, candidate: Candidate) -> str | None:
        """Apply the candidate; None when it loaded, else the reason it cannot."""
        error = self.load_config(candidate_config(self.original, candidate))
        if error is None:
            self.loaded = candidate
        return error

    def load_config(self, config: Mapping[str, Any]) -> str | None:
        """Load the model with `config` (protobuf JSON form); None when it loaded, else the
        reason it cannot (the original config is then put back, quietly)."""
        from tritonclient.utils import InferenceServerException

        sent = json.dumps(config, sort_keys=True)
        # The model already runs with exactly this config: a reload would only cost time
        # (seconds for a large model on a GPU).
        if sent == self._sent and self.client.is_model_ready(self.model):
            return None
        self.loaded, self.loaded_config, self._sent = None, None, None
        try:
            self.client.load_model(self.model, config=sent)
        except InferenceServerException as exc:
            self._reload_original_quietly()
            return str(exc.message() or exc)
        deadline = time.monotonic() + self.load_timeout_s
        while not self.client.is_model_ready(self.model):
            if time.monotonic() > deadline:
                return f"not ready {self.load_timeout_s:.0f} s after loading"
            time.sleep(0.1)
        self._sent = sent
        self.loaded = candidate_from_config(config)
        # Triton fills in defaults (e.g. preferred_batch_size [max_batch_size]): keep its form
        # to compare with the original.
        self.loaded_config = self.client.get_model_config(self.model, as_json=True)["config"]
        return None

    def completed(self) -> int:
        """Requests the model finished so far, succeeded or failed (a rejection is a
        failure)."""
        stats = self.client.get_inference_statistics(self.model, as_json=True)
        total = 0
        for entry in stats.get("model_stats", []):
            inference = entry.get("inference_stats", {})
            total += sum(int(inference.get(k, {}).get("count", 0)) for k in ("success", "fail"))
        return total

    def _reload_original_quietly(self) -> None:
        try:
            self.client.load_model(self.model, config=json.dumps(self.original))
        except Exception:  # noqa: BLE001 - best effort; restore() reports for real
            pass

    def restore(self) -> None:
        """Put the model back as it was: its original config, or unloaded."""
        if self.was_loaded and self.runs_original() and self.client.is_model_ready(self.model):
            return  # the model runs with its original config already (the baseline was last)
        self.client.load_model(self.model, config=json.dumps(self.original))
        self.loaded = candidate_from_config(self.original)
        self.loaded_config, self._sent = dict(self.original), None
        if not self.was_loaded:
            self.client.unload_model(self.model)

    def counters(self) -> Counters:
        """The model's cumulative statistics counters."""
        return counters_from_json(
            self.client.get_inference_statistics(self.model, as_json=True), self.model)

    def drain(self, timeout_s: float = 10.0, *, quiet_s: float = 0.0) -> bool:
        """Wait until the server stops finishing requests (succeeded or failed) for `quiet_s`
        beyond one 0.1 s poll: what an overloaded probe left queued is done. False when it
        was still busy after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        last, since = self.completed(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.completed()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return True
        return False

    def close(self) -> None:
        self.client.close()
