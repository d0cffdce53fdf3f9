"""The load generator against the real embedded Triton (dense_mlp, read-only use)."""

from __future__ import annotations

import numpy as np
import pytest

from triton_ops.envelope.loader import require_envelope
from triton_ops.loadgen.engine import LoadGenerator, Window

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dense_mlp_specs(envelopes_dir):  # type: ignore[no-untyped-def]
    return require_envelope(envelopes_dir / "dense_mlp.yaml")


def test_open_and_closed_loop(local_triton, dense_mlp_specs) -> None:  # type: ignore[no-untyped-def]
    env = dense_mlp_specs
    boundaries: list[int] = []
    with LoadGenerator(local_triton.grpc_url, "dense_mlp", env.inputs,
                       outputs=[o.name for o in env.outputs], timeout_s=5) as lg:
        m = lg.measure(mode="open", rate=100, warmup_s=0.3, window_s=0.5, max_windows=3,
                       at_boundary=boundaries.append)
        assert boundaries == [-1, 0, 1, 2]
        assert [w.index for w in m.windows] == [0, 1, 2]
        total = sum(w.requests for w in m.windows)
        assert 80 <= total <= 230  # Poisson at 100/s over 1.5 s
        for w in m.windows:
            assert w.errors == 0
            assert np.all(w.sched >= w.start - 1e-6) and np.all(w.sched < w.end + 1e-6)
            lat = w.latency_us()
            assert len(lat) == w.requests and np.all(lat > 0)
            assert np.all(w.latency_us() >= w.service_latency_us() - 600)  # +-0.5 ms timer
        # decide() stops the measurement after the first window.
        seen: list[int] = []

        def stop_now(ws: list[Window]) -> bool:
            seen.append(len(ws))
            return True

        m = lg.measure(mode="open", rate=100, warmup_s=0.2, window_s=0.5, max_windows=5,
                       decide=stop_now)
        assert len(m.windows) == 1 and seen == [1]
        closed = lg.measure(mode="closed", concurrency=4, warmup_s=0.2, window_s=0.5,
                            max_windows=2)
        assert len(closed.windows) == 2
        assert all(w.requests > 0 and w.errors == 0 for w in closed.windows)
        # The same workers keep serving: a fourth measurement still works.
        again = lg.measure(mode="open", rate=50, warmup_s=0.1, window_s=0.4, max_windows=1)
        assert again.windows[0].errors == 0


def test_failed_requests_are_errors(local_triton, dense_mlp_specs) -> None:  # type: ignore[no-untyped-def]
    env = dense_mlp_specs
    with LoadGenerator(local_triton.grpc_url, "no_such_model", env.inputs, timeout_s=2) as lg:
        m = lg.measure(mode="open", rate=50, warmup_s=0.1, window_s=0.5, max_windows=1)
        w = m.windows[0]
        assert w.requests > 0 and w.errors == w.requests
        assert len(w.latency_us()) == 0


def test_bad_arguments() -> None:
    lg = LoadGenerator("127.0.0.1:1", "m", [])
    with pytest.raises(ValueError):
        lg.measure(mode="open", rate=0)
    with pytest.raises(ValueError):
        lg.measure(mode="bogus")
