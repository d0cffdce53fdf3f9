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


@pytest.mark.slow
def test_the_chosen_policy_is_confirmed_at_the_nominal_load(tmp_path: Path, start_triton) -> None:  # type: ignore[no-untyped-def]
    """The choice's nominal level is measured once more; the result carries it, counted with
    the first window (kept or turned down, the rule decides on both)."""
    from triton_ops.tune.overload.measure import NominalConfirmed

    repo = shutil.copytree(DATA / "model_repository", tmp_path / "repo")
    env = require_envelope(DATA / "envelopes" / f"{MODEL}.yaml")
    server = start_triton(repo, models=[MODEL])
    timeout = OverloadPolicy(timeout_us=100_000)
    events: list[object] = []
    result = measure_overload(
        server.grpc_url, MODEL, env, Candidate(16, 0, 1), GOODPUT, SLO_US,
        policies=[OverloadPolicy(), timeout],
        settings=OverloadSettings(levels=(0.8, 2.0), warmup_s=0.3, window_s=1.0,
                                  confirm_requests=300),
        on_event=events.append)

    confirmations = [e for e in events if isinstance(e, NominalConfirmed)]
    assert confirmations, "a 100 ms timeout answers more in time at 2x than no policy"
    first = confirmations[0]
    assert first.result.policy == timeout
    again = first.result.confirmation
    assert again is not None and again.level == 0.8
    assert again.target_rps == pytest.approx(0.8 * GOODPUT)
    assert 200 <= again.requests <= 400  # 300 requests' worth of Poisson arrivals
    counted = result.results[1]
    assert counted.confirmation == again
    assert counted.rejected_at(0.8) == (counted.levels[0].rejected + again.rejected,
                                        counted.levels[0].requests + again.requests)
    assert (result.choice is not None and result.choice.policy == timeout) == first.kept
    assert not first.kept or counted.status == "measured"
