"""Model control against a real embedded Triton: a config the model already runs with is not
loaded again, and the restore does not reload a model already back on its original config.
A reload is seen as new Python-backend stub processes (one per instance)."""

from __future__ import annotations

import time
from pathlib import Path

import psutil

from triton_ops.server.local import LocalTriton
from triton_ops.tune.batcher import Candidate
from triton_ops.tune.control import ModelControl


def stub_pids(server: LocalTriton, count: int, timeout_s: float = 20.0) -> set[int]:
    """The server's stub processes once exactly `count` are left (an unloaded instance's
    stub takes a moment to exit)."""
    deadline = time.monotonic() + timeout_s
    while True:
        pids = set()
        for proc in psutil.Process(server.pid).children(recursive=True):
            try:
                if "stub" in proc.name():
                    pids.add(proc.pid)
            except psutil.NoSuchProcess:  # an old stub that exited meanwhile
                pass
        if len(pids) == count or time.monotonic() > deadline:
            assert len(pids) == count, pids
            return pids
        time.sleep(0.2)


def test_same_config_is_not_reloaded_and_restore_skips_the_original(  # type: ignore[no-untyped-def]
        start_triton, model_repository_copy: Path) -> None:
    server = start_triton(model_repository_copy, models=["dense_mlp"])
    target = ModelControl(server.grpc_url, "dense_mlp")
    try:
        original = target.original
        baseline = target.loaded
        assert baseline is not None
        first = stub_pids(server, 1)

        candidate = Candidate(32, 0, 2)
        assert target.load(candidate) is None
        two = stub_pids(server, 2)
        assert not two & first
        assert target.load(candidate) is None  # the same config again: no reload
        assert stub_pids(server, 2) == two
        assert target.client.get_model_config("dense_mlp", as_json=True)["config"][
            "max_batch_size"] == 32

        # The baseline candidate brings back exactly the original config (Triton fills in
        # the preferred batch size the same way), so the restore after it loads nothing.
        assert target.load(baseline) is None
        back = stub_pids(server, 1)
        assert target.loaded_config == original
        target.restore()
        assert stub_pids(server, 1) == back
        assert target.client.get_model_config("dense_mlp", as_json=True)["config"] == original

        # After another config the restore does reload the original.
        assert target.load(Candidate(32, 0, 1)) is None
        other = stub_pids(server, 1)
        target.restore()
        restored = stub_pids(server, 1)
        assert restored != other
        assert target.client.get_model_config("dense_mlp", as_json=True)["config"] == original
    finally:
        target.close()
