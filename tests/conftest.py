"""Shared fixtures: the example model repository and real embedded Triton servers.

- `envelopes_dir` (session): the project's envelopes/ folder (read-only).
- `triton_repo` (session): a temporary copy of model_repository/, safe to add models to.
- `model_repository_copy` (function): a private copy of model_repository/ for one test.
- `local_triton` (session): ONE LocalTriton on that copy with the CPU example models loaded.
  Read-only use: tests that load, unload or reconfigure models start their own server.
- `start_triton` (function): a factory `start_triton(repo_path, models=[...], **kwargs)` that
  starts a LocalTriton and stops it when the test ends.
- `write_envelope` (function): writes an envelope (BASE_ENVELOPE deep-merged with changes)
  and, by default, its model folder with the generated config.pbtxt, under tmp_path.

No fixture here skips: if the embedded server cannot start, the tests that need it fail
with the server log in the message. At the end of the session, any tritonserver or stub
still running under this pytest process is killed and reported as an error.
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from triton_ops.server.local import LocalTriton

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_REPOSITORY = REPO_ROOT / "model_repository"
ENVELOPES = REPO_ROOT / "envelopes"
# The example models that run on any machine (numpy only); bert_base needs torch and a GPU.
CPU_MODELS = ("dense_mlp", "text_classifier")

# A run started in the background of a non-interactive shell inherits SIGINT ignored, and
# so would every server and CLI the tests start: the Ctrl-C tests need it delivered. A
# handler (unlike "ignore") is not inherited across exec, so children get the default.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def copy_model_repository(destination: Path) -> Path:
    """Copy model_repository/ to `destination` (without caches) and return it."""
    shutil.copytree(
        MODEL_REPOSITORY, destination, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    return destination


@pytest.fixture(scope="session")
def envelopes_dir() -> Path:
    """The project's envelopes/ folder (read-only)."""
    return ENVELOPES


@pytest.fixture(scope="session")
def triton_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_model_repository(tmp_path_factory.mktemp("triton") / "model_repository")


@pytest.fixture
def model_repository_copy(tmp_path: Path) -> Path:
    """A private copy of model_repository/ for one test (tmp_path/repo)."""
    return copy_model_repository(tmp_path / "repo")


@pytest.fixture(scope="session")
def local_triton(
    triton_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalTriton]:
    log = tmp_path_factory.mktemp("triton-log") / "tritonserver.log"
    server = LocalTriton(triton_repo, models=CPU_MODELS, log_path=log, startup_timeout_s=120)
    server.start()
    try:
        yield server
    finally:
        server.stop()


StartTriton = Callable[..., LocalTriton]


@pytest.fixture
def start_triton(tmp_path: Path) -> Iterator[StartTriton]:
    started: list[LocalTriton] = []

    def factory(repo_path: Path | str, models: Sequence[str] = (), **kwargs: object) -> LocalTriton:
        kwargs.setdefault("log_path", tmp_path / f"tritonserver-{len(started)}.log")
        kwargs.setdefault("startup_timeout_s", 120.0)
        server = LocalTriton(repo_path, models=models, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server.start()

    yield factory
    for server in reversed(started):
        server.stop()


@pytest.fixture(scope="session", autouse=True)
def _no_leftover_servers() -> Iterator[None]:
    """Fail the run if a test left a tritonserver (or a stub) running, after killing it."""
    yield
    leftovers = [
        p for p in psutil.Process().children(recursive=True)
        if _is_triton_process(p)
    ]
    for proc in leftovers:
        proc.kill()
    if leftovers:
        names = ", ".join(f"{p.pid}" for p in leftovers)
        pytest.fail(f"tritonserver processes left running by the tests (killed now): {names}")


def _is_triton_process(proc: psutil.Process) -> bool:
    try:
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return proc.name() in ("tritonserver", "triton_python_b", "triton_python_backend_stub")
    except psutil.Error:
        return False


# -- envelope files built in a temp dir (envelope rules and the validate gate) ------------

BASE_ENVELOPE: dict[str, Any] = {
    "name": "clf",
    "backend": "python",
    "versions": [1],
    "inputs": [{"name": "TEXT", "data_type": "INT64", "dims": [-1], "max_dims": [128],
                "allow_ragged_batch": True}],
    "outputs": [{"name": "PROBS", "data_type": "FP32", "dims": [3]}],
    "batching": {"max_batch_size": 32,
                 "dynamic": {"preferred_batch_sizes": [8, 16], "max_queue_delay": "1ms"}},
    "instances": [{"kind": "GPU", "count": 2}],
    "resources": {"gpu_memory": {"weights": "1GiB", "activation_per_item": "16MiB",
                                 "workspace": "256MiB", "headroom": 0.1}},
    "hardware": {"gpu_models": ["T4"]},
    "slo": {"p99_latency": "50ms"},
    "runtime": {"image": "nvcr.io/nvidia/tritonserver@sha256:" + "a" * 64},
}


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` deep-merged; a value of None removes the key."""
    out = dict(base)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture
def write_envelope(tmp_path: Path) -> Callable[..., Path]:
    """write_envelope(changes={}, name=None, model_dir=True) -> envelope path.

    With model_dir=True the model folder is created in tmp_path/model_repository with a
    version folder, model.py and the generated config.pbtxt.
    """

    def write(changes: dict[str, Any] | None = None, model_dir: bool = True) -> Path:
        from triton_ops.envelope.model import Envelope
        from triton_ops.modelconfig.render import render_config_text, source_label

        data = merge(BASE_ENVELOPE, changes or {})
        envelopes = tmp_path / "envelopes"
        envelopes.mkdir(exist_ok=True)
        path = envelopes / f"{data['name']}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        if model_dir:
            folder = tmp_path / "model_repository" / data["name"]
            for version in data.get("versions", [1]):
                (folder / str(version)).mkdir(parents=True, exist_ok=True)
                (folder / str(version) / "model.py").write_text("# model\n")
            (folder / "config.pbtxt").write_text(
                render_config_text(Envelope.model_validate(data), source_label(path)))
        return path

    return write
