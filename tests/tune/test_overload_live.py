"""The overload stage on a real embedded Triton: two policies at one overload level.

Behaviour only (no timing thresholds): rejections happen under the timeout policy and are
classified as such, none under no policy; every request has one outcome; the within-SLO
counts agree with the answers; the model's config is put back afterwards.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from triton_ops.envelope.loader import require_envelope
from triton_ops.tune.batcher import Candidate
from triton_ops.tune.overload import OverloadPolicy
from triton_ops.tune.overload.measure import (
    LevelMeasured,
    OverloadSettings,
    PolicyDone,
    PolicyLoading,
    measure_overload,
)

DATA = Path(__file__).parent / "data" / "overload"
MODEL = "sleepy_device"
SLO_US = 250_000.0
GOODPUT = 200.0  # about what 16 / 0 / 1 holds on this model (16 / (20 ms + 16 x 3 ms))


@pytest.mark.slow
def test_two_policies_at_twice_the_goodput(tmp_path: Path, start_triton) -> None:  # type: ignore[no-untyped-def]
    import tritonclient.grpc as grpcclient

    repo = shutil.copytree(DATA / "model_repository", tmp_path / "repo")
    env = require_envelope(DATA / "envelopes" / f"{MODEL}.yaml")
    server = start_triton(repo, models=[MODEL])
    client = grpcclient.InferenceServerClient(server.grpc_url)
    original = client.get_model_config(MODEL, as_json=True)["config"]
    timeout = OverloadPolicy(timeout_us=100_000)
    events: list[object] = []
    result = measure_overload(
        server.grpc_url, MODEL, env, Candidate(16, 0, 1), GOODPUT, SLO_US,
        policies=[OverloadPolicy(), timeout],
        settings=OverloadSettings(levels=(2.0,), warmup_s=0.5, window_s=2.0),
        on_event=events.append)

    assert [type(e) for e in events] == [PolicyLoading, LevelMeasured, PolicyDone] * 2
    assert [r.policy for r in result.results] == [OverloadPolicy(), timeout]
    assert all(r.status == "measured" for r in result.results)
    reference, shed = (r.at(2.0) for r in result.results)
    assert reference is not None and shed is not None
    for f in (reference, shed):
        assert f.requests > 0 and f.errors == 0
        assert f.answered + f.rejected + f.client_timeouts == f.requests
        assert 0 <= f.within_slo <= f.answered
        assert f.within_slo_rps == pytest.approx(f.within_slo / f.seconds)
        assert f.p99_answered.n == f.answered and f.p99_rejected.n == f.rejected
    assert reference.rejected == 0  # no policy never rejects
    assert shed.rejected_timeout > 0 and shed.rejected_queue_full == 0
    assert shed.rejections_within(SLO_US) is not None
    # one level only: no rule to choose by, and the result says so
    assert result.choice is None and result.notes
    # the model runs with its own config again
    assert client.get_model_config(MODEL, as_json=True)["config"] == original
    client.close()
