"""The load generator tells Triton's queue-policy rejections from failures, on a real server.

The model (tests/tune/data/overload) sleeps 20 ms + 3 ms per item per execution on one
simulated device, so a burst of a few hundred requests per second overloads it; the queue
policies are applied with the model-control API, as tune does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from triton_ops.envelope.loader import require_envelope
from triton_ops.loadgen.engine import LoadGenerator, Window
from triton_ops.loadgen.outcome import Outcome
from triton_ops.loadgen.worker import TAIL_MAX_S

DATA = Path(__file__).parents[1] / "tune" / "data" / "overload"
MODEL = "sleepy_device"


def load_with_policy(url: str, policy: dict | None) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    config = client.get_model_config(MODEL, as_json=True)["config"]
    config["dynamic_batching"].pop("default_queue_policy", None)
    if policy is not None:
        config["dynamic_batching"]["default_queue_policy"] = policy
    client.load_model(MODEL, config=json.dumps(config))
    client.close()


def success_count(url: str) -> int:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    stats = client.get_inference_statistics(MODEL, as_json=True)["model_stats"][0]
    client.close()
    return int(stats["inference_stats"]["success"].get("count", 0))


def check_counts(w: Window) -> None:
    """Every request has exactly one outcome, and the old view (ok/errors) agrees."""
    outcomes = w.outcomes()
    assert len(outcomes) == w.requests
    assert sum(w.count(o) for o in Outcome) == w.requests
    assert w.errors == w.requests - w.count(Outcome.OK)
    assert len(w.rejection_latency_us()) == w.rejected
    assert np.all(w.rejection_latency_us() > 0)
    assert len(w.latency_us()) == w.count(Outcome.OK)


@pytest.mark.slow
def test_rejections_and_client_timeouts_are_told_apart(tmp_path: Path, start_triton) -> None:  # type: ignore[no-untyped-def]
    repo = shutil.copytree(DATA / "model_repository", tmp_path / "repo")
    env = require_envelope(DATA / "envelopes" / f"{MODEL}.yaml")
    server = start_triton(repo, models=[MODEL])
    with LoadGenerator(server.grpc_url, MODEL, env.inputs, outputs=["Y"], timeout_s=5) as lg:
        # The arrivals go on while the window's last requests are in flight (a 20 ms+
        # execution at 300 req/s: a few more requests), and those belong to no window.
        before = success_count(server.grpc_url)
        w = lg.measure(mode="open", rate=300, warmup_s=0.0, window_s=1.0,
                       max_windows=1).windows[0]
        tail = success_count(server.grpc_url) - before - w.requests
        assert w.count(Outcome.OK) == w.requests
        assert 0 < tail <= 300 * TAIL_MAX_S + 50
        # A queue of 4: arrivals while a batch runs find it full.
        load_with_policy(server.grpc_url, {"max_queue_size": 4})
        w = lg.measure(mode="open", rate=400, warmup_s=0.2, window_s=1.0,
                       max_windows=1).windows[0]
        check_counts(w)
        assert w.count(Outcome.REJECTED_QUEUE_FULL) > 0 and w.count(Outcome.OK) > 0
        assert w.count(Outcome.ERROR) == 0 and w.count(Outcome.REJECTED_TIMEOUT) == 0
        # A 10 ms queue timeout, REJECT: requests queued behind a 20 ms+ execution expire.
        load_with_policy(server.grpc_url, {"timeout_action": "REJECT",
                                           "default_timeout_microseconds": "10000"})
        w = lg.measure(mode="open", rate=400, warmup_s=0.2, window_s=1.0,
                       max_windows=1).windows[0]
        check_counts(w)
        assert w.count(Outcome.REJECTED_TIMEOUT) > 0 and w.count(Outcome.OK) > 0
        assert w.count(Outcome.ERROR) == 0 and w.count(Outcome.REJECTED_QUEUE_FULL) == 0
    load_with_policy(server.grpc_url, None)
    # No policy and a client deadline of 50 ms: the backlog outlives it.
    with LoadGenerator(server.grpc_url, MODEL, env.inputs, outputs=["Y"], timeout_s=0.05) as lg:
        w = lg.measure(mode="open", rate=400, warmup_s=0.2, window_s=1.0,
                       max_windows=1).windows[0]
        check_counts(w)
        assert w.count(Outcome.CLIENT_TIMEOUT) > 0 and w.rejected == 0
        assert w.count(Outcome.ERROR) == 0
    # A model that does not exist: failures, not rejections.
    with LoadGenerator(server.grpc_url, "no_such_model", env.inputs, timeout_s=2) as lg:
        w = lg.measure(mode="open", rate=50, warmup_s=0.1, window_s=0.5,
                       max_windows=1).windows[0]
        check_counts(w)
        assert w.requests > 0 and w.count(Outcome.ERROR) == w.requests


def test_windows_without_outcomes_count_failures_as_errors() -> None:
    w = Window(0, 0.0, 1.0, np.array([0.1, 0.2]), np.array([0.1, 0.2]), np.array([0.3, 0.4]),
               np.array([True, False]))
    assert w.outcomes().tolist() == [Outcome.OK, Outcome.ERROR]
    assert w.rejected == 0 and len(w.rejection_latency_us()) == 0
