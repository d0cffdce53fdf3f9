"""Differential test: the rules' verdicts against a real Triton's, on the Python backend.

Every rule case marked `triton=True` is written into one model repository twice (breaking
and passing variant). triton-ops must report errors for exactly the models Triton refuses to
load. Layout cases (config name vs folder, missing version folders) ride along.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from triton_ops.findings import Severity
from triton_ops.repository.layout import check_repository

from .test_rules_cases import CASES

DATA = Path(__file__).parent / "data"
MODEL_PY = '''\
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([]) for _ in requests]
'''


def _add_model(repo: Path, name: str, config: str, versions: tuple[str, ...] = ("1",)) -> None:
    folder = repo / name
    folder.mkdir()
    for v in versions:
        (folder / v).mkdir()
        (folder / v / "model.py").write_text(MODEL_PY)
    (folder / "config.pbtxt").write_text(config)


def _crashes(log: Path) -> int:
    """How many times the server logging to `log` reported a fatal signal (not a stop)."""
    try:
        text = log.read_text("utf-8", "replace")
    except OSError:
        return 0
    return sum(1 for sig in re.findall(r"Signal \((\d+)\) received", text)
               if sig not in ("2", "15"))


def _build_repository(repo: Path) -> dict[str, bool]:
    """Write the models; returns model name -> whether Triton is expected to load it."""
    expected: dict[str, bool] = {}
    for case in CASES:
        if not case.triton:
            continue
        for variant, text in (("bad", case.bad), ("good", case.good)):
            tag = f"-{case.tag}" if case.tag else ""
            name = f"{case.rule.removeprefix('config-')}{tag}-{variant}"
            _add_model(repo, name, text.replace('name: "m"', f'name: "{name}"', 1))
            expected[name] = variant == "good"
    # Layout: config name differs from folder; a specific version without its folder.
    _add_model(repo, "renamed", 'name: "other"\nbackend: "python"\nmax_batch_size: 0\n'
               'input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
               'output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]\n')
    expected["renamed"] = False
    _add_model(repo, "versionless", 'name: "versionless"\nbackend: "python"\n'
               'max_batch_size: 0\nversion_policy { specific { versions: [ 3 ] } }\n'
               'input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
               'output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]\n')
    expected["versionless"] = False
    shutil.copytree(DATA.parent / "data", repo / ".fixtures")  # hidden: ignored by both
    # Valid stateful models: oldest with implicit state, direct with every control kind and
    # a one-buffer state, an iterative sequence.
    for name, file in (("streaming_asr", "sequence.pbtxt"),
                       ("sequence_direct", "sequence_direct.pbtxt"),
                       ("sequence_iterative", "sequence_iterative.pbtxt")):
        _add_model(repo, name, (DATA / file).read_text())
        expected[name] = True
    return expected


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_rule_errors_match_what_triton_refuses(tmp_path: Path) -> None:
    from tritonclient.http import InferenceServerClient
    from tritonclient.utils import InferenceServerException

    from triton_ops.server.local import LocalTriton

    repo = tmp_path / "repo"
    repo.mkdir()
    expected = _build_repository(repo)

    result = check_repository(repo)
    flagged = {Path(f.file).relative_to(repo).parts[0] for f in result.findings
               if f.severity is Severity.ERROR}
    ours = {name: name not in flagged for name in expected}
    assert ours == expected  # triton-ops' own verdicts match the case table

    triton: dict[str, bool] = {}
    reasons: dict[str, str] = {}
    pending = sorted(expected)
    # Triton 2.51 on the Python backend now and then crashes (signal 11) or never answers
    # while loading or unloading a model, more often after many loads on one server. The
    # rest then goes on a fresh server, a model whose load went unanswered first: loaded
    # first on three servers and unanswered each time (crashed each time), it counts as
    # refused, since Triton never loaded it, which is what this test compares.
    unanswered: dict[str, list[bool]] = {}  # model -> crashed?, per unanswered load
    servers = 0
    while pending:
        log = tmp_path / f"tritonserver-{servers}.log"
        servers += 1
        with LocalTriton(repo, startup_timeout_s=120, log_path=log) as server:
            client = InferenceServerClient(server.http_url, network_timeout=90.0)
            while pending:
                name = pending[0]
                crashes = _crashes(log)
                try:
                    client.load_model(name)
                except InferenceServerException as exc:
                    triton[name] = False
                    reasons[name] = str(exc)[:200]
                except OSError as exc:  # timed out, or the connection refused or reset
                    tries = unanswered.setdefault(name, [])
                    tries.append(_crashes(log) > crashes)
                    if len(tries) == 3 and all(tries):
                        triton[name] = False
                        reasons[name] = f"tritonserver crashed loading it 3 times (see {log})"
                        pending.pop(0)
                    elif len(tries) == 3:
                        raise AssertionError(f"Triton never answered loading {name} on three "
                                             f"servers ({exc}); see {log}") from None
                    break
                else:
                    triton[name] = True
                    pending.pop(0)
                    try:
                        client.unload_model(name)
                    except OSError:
                        break  # the model loaded: its verdict stands, the rest goes on afresh
                    continue
                pending.pop(0)
    disagreements = {n: (ours[n], triton[n], reasons.get(n)) for n in expected
                     if ours[n] != triton[n]}
    assert disagreements == {}
