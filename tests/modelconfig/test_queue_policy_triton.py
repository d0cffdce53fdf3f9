"""What the queue-policy warnings warn of, shown on the bundled Triton.

Triton loads each of these configs; the warnings exist because of what its dynamic batcher
then does with them. The model (tests/tune/data/overload) executes in 20 ms + 3 ms per item
on one simulated device, so a burst of requests waits in the queue.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from triton_ops.loadgen.outcome import Outcome, classify_error
from triton_ops.modelconfig.rules import check_config_text

DATA = Path(__file__).parents[1] / "tune" / "data" / "overload"
MODEL = "sleepy_device"


class Server:
    def __init__(self, url: str) -> None:
        import tritonclient.grpc as grpcclient

        self.url = url
        self.client = grpcclient.InferenceServerClient(url)
        self.original = self.client.get_model_config(MODEL, as_json=True)["config"]

    def load(self, dynamic: dict[str, Any]) -> list[str]:
        """Load the model with these dynamic_batching settings; the queue-policy rules that
        triton-ops reports on the config Triton then runs."""
        from google.protobuf import json_format, text_format

        from triton_ops.modelconfig.proto import ModelConfig

        config = {**self.original, "dynamic_batching": dynamic}
        self.client.load_model(MODEL, config=json.dumps(config))
        loaded = self.client.get_model_config(MODEL, as_json=True)["config"]
        text = text_format.MessageToString(json_format.ParseDict(loaded, ModelConfig(),
                                                                 ignore_unknown_fields=True))
        return sorted({f.rule for f in check_config_text(text, "config.pbtxt")[2]
                       if f.rule.startswith("config-queue-policy")})

    def burst(self, n: int, *, timeout_us: int = 0) -> list[Outcome]:
        """n requests at once (each with its own queue timeout when timeout_us); outcomes."""
        return asyncio.run(_burst(self.url, n, timeout_us))

    def batch_sizes(self) -> set[int]:
        """The batch sizes executed so far. Triton records an execution's statistics after
        its responses are sent, so a client that has all its answers may read them a moment
        early: wait up to 5 s for them to appear."""
        import time

        deadline = time.monotonic() + 5.0
        while True:
            stats = self.client.get_inference_statistics(MODEL, as_json=True)["model_stats"][0]
            sizes = {int(b["batch_size"]) for b in stats.get("batch_stats", [])}
            if sizes or time.monotonic() > deadline:
                return sizes
            time.sleep(0.05)


async def _burst(url: str, n: int, timeout_us: int) -> list[Outcome]:
    import numpy as np
    from tritonclient.grpc import InferInput
    from tritonclient.grpc.aio import InferenceServerClient
    from tritonclient.utils import InferenceServerException

    client = InferenceServerClient(url)

    async def one() -> Outcome:
        x = InferInput("X", [1, 4], "FP32")
        x.set_data_from_numpy(np.ones((1, 4), np.float32))
        extra = {"timeout": timeout_us} if timeout_us else {}
        try:
            await client.infer(MODEL, [x], client_timeout=10.0, **extra)
        except InferenceServerException as exc:
            return classify_error(exc.status(), exc.message())
        return Outcome.OK

    try:
        return list(await asyncio.gather(*(one() for _ in range(n))))
    finally:
        await client.close()


@pytest.mark.slow
def test_queue_policy_warnings_describe_what_triton_does(tmp_path: Path, start_triton) -> None:  # type: ignore[no-untyped-def]
    repo = shutil.copytree(DATA / "model_repository", tmp_path / "repo")
    server = Server(start_triton(repo, models=[MODEL]).grpc_url)

    # config-queue-policy-timeout-below-delay: a lone request, an idle server, rejected.
    assert server.load({"max_queue_delay_microseconds": "100000", "default_queue_policy": {
        "default_timeout_microseconds": "10000"}}) == ["config-queue-policy-timeout-below-delay"]
    assert server.burst(1) == [Outcome.REJECTED_TIMEOUT]
    assert server.load({"max_queue_delay_microseconds": "100000", "default_queue_policy": {
        "default_timeout_microseconds": "200000"}}) == []
    assert server.burst(1) == [Outcome.OK]

    # config-queue-policy-timeout: a request's own 20 ms timeout is ignored without a
    # default timeout (everything waits its turn), and applies under a 10 s default.
    assert server.load({"default_queue_policy": {"allow_timeout_override": True}}) == [
        "config-queue-policy-timeout"]
    assert set(server.burst(40, timeout_us=20_000)) == {Outcome.OK}
    assert server.load({"default_queue_policy": {
        "allow_timeout_override": True, "default_timeout_microseconds": "10000000"}}) == []
    assert Outcome.REJECTED_TIMEOUT in server.burst(40, timeout_us=20_000)

    # config-queue-policy-size-below-batch: with max_queue_size 4 under max_batch_size 16,
    # a burst is cut to the queue and no batch holds more than 4 requests.
    assert server.load({"default_queue_policy": {"max_queue_size": 4}}) == [
        "config-queue-policy-size-below-batch"]
    outcomes = server.burst(40)
    assert Outcome.REJECTED_QUEUE_FULL in outcomes and Outcome.OK in outcomes
    assert max(server.batch_sizes()) <= 4
    server.client.close()
