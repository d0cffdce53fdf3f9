"""The publish / rollout / rollback commands: exit codes, messages, JSON output."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from rollout_models import MODEL, make_repo
from typer.testing import CliRunner

from triton_ops.cli.main import app

runner = CliRunner()


@pytest.fixture()
def project(tmp_path, monkeypatch):
    make_repo(tmp_path, {1: "good", 2: "good"})
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(*args: str):
    return runner.invoke(app, list(args))


def test_publish_then_republish_changed_is_refused(project):
    first = run("publish", MODEL, "1")
    assert first.exit_code == 0 and "sealed scaler version 1" in first.output
    seal = json.loads((project / "model_repository" / MODEL / ".triton-ops" / "seals"
                       / "1.json").read_text())
    assert "name: scaler" in seal["envelope"]
    assert run("publish", MODEL, "1").exit_code == 0
    (project / "model_repository" / MODEL / "1" / "model.py").write_text("changed\n")
    again = run("publish", MODEL, "1")
    assert again.exit_code == 2
    assert "immutable" in again.output


@pytest.mark.parametrize("args, message", [
    (["publish", "nope", "1"], "does not exist"),
    (["publish", MODEL, "9"], "does not exist"),
    (["rollout", MODEL, "--canary", "2", "--steps", "50,x"], "comma-separated"),
    (["rollout", MODEL, "--canary", "2", "--interval", "soon"], "--interval"),
    (["rollout", MODEL, "--canary", "2", "--format", "xml"], "unknown format"),
    (["rollout", MODEL, "--canary", "2", "--envelopes", "missing"], "no envelope"),
    (["rollout", "status", MODEL], "no rollout of scaler"),
])
def test_bad_input_gives_a_message_not_a_traceback(project, args, message):
    result = run(*args)
    assert result.exit_code in (1, 2)
    assert message in result.output
    assert "Traceback" not in result.output


def test_bad_requests_file_names_the_line(project):
    requests = project / "requests.jsonl"
    requests.write_text('{"X": [[1, 2, 3, 4]]}\n{"X": [1, 2]}\n')
    result = run("rollout", MODEL, "--canary", "2", "--requests", str(requests))
    assert result.exit_code == 2
    assert f"{requests}:2" in result.output and "dimensions" in result.output


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_unsealed_canary_is_refused_with_exit_2_and_json(project, start_triton):
    run("publish", MODEL, "1")
    server = start_triton(project / "model_repository", models=[MODEL])
    result = subprocess.run(
        [sys.executable, "-m", "triton_ops.cli.main", "rollout", MODEL, "--canary", "2",
         "--url", server.grpc_url, "--format", "json"],
        capture_output=True, text=True, timeout=120, cwd=project)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "not sealed" in result.stderr and "triton-ops publish scaler 2" in result.stderr
    document = json.loads(result.stdout)
    assert document["phase"] == "Refused" and document["exit_code"] == 2
    assert "scaler:2" not in server.log_path.read_text()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_rollout_json_then_rollback_to_last_known_good(project, start_triton):
    from test_single_triton import PathClient

    run("publish", MODEL, "1")
    run("publish", MODEL, "2")
    server = start_triton(project / "model_repository", models=[MODEL])
    cli = [sys.executable, "-m", "triton_ops.cli.main"]
    with PathClient(server.grpc_url) as unversioned:
        rolled = subprocess.run(
            [*cli, "rollout", MODEL, "--canary", "2", "--url", server.grpc_url, "--steps",
             "100", "--interval", "1s", "--rate", "50", "--max-p99-ratio", "3",
             "--p99-slack", "30ms", "--failure-limit", "3", "--format", "json"],
            capture_output=True, text=True, timeout=120, cwd=project)
        assert rolled.returncode == 0, rolled.stdout + rolled.stderr
        document = json.loads(rolled.stdout)
        assert document["phase"] == "Succeeded" and document["serving"] == [2]
        window = next(d for d in document["decisions"] if d["event"] == "window-analyzed")
        assert window["verdict"] == "PASS" and window["metrics"]["canary"]["requests"] > 0
        back = subprocess.run([*cli, "rollback", MODEL, "--url", server.grpc_url],
                              capture_output=True, text=True, timeout=120, cwd=project)
        assert back.returncode == 0, back.stdout + back.stderr
        assert "serving [1] (was [2])" in back.stdout
        refused = subprocess.run([*cli, "rollback", MODEL, "--to", "3", "--url",
                                  server.grpc_url], capture_output=True, text=True,
                                 timeout=120, cwd=project)
        assert refused.returncode == 2 and "not sealed" in refused.stderr
    assert unversioned.failures == [] and unversioned.not_ready == 0
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        assert client.is_model_ready(MODEL, "1") and not client.is_model_ready(MODEL, "2")
    finally:
        client.close()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_embedded_server_rollout_replaying_recorded_requests(project):
    run("publish", MODEL, "1")
    run("publish", MODEL, "2")
    requests = project / "requests.jsonl"
    requests.write_text("".join(f'{{"X": [[{i}, -1.5, 2.25, {-i}]]}}\n' for i in range(8)))
    result = subprocess.run(
        [sys.executable, "-m", "triton_ops.cli.main", "rollout", MODEL, "--canary", "2",
         "--steps", "50,100", "--interval", "1s", "--rate", "50", "--requests",
         str(requests), "--max-p99-ratio", "3", "--p99-slack", "30ms", "--failure-limit",
         "3"],
        capture_output=True, text=True, timeout=150, cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "version 2 promoted: serving [2]" in result.stdout
    assert "Traceback" not in result.stderr


def test_target_option(project):
    bad = run("rollout", MODEL, "--canary", "2", "--target", "nomad")
    assert bad.exit_code == 2 and "unknown rollout target 'nomad'" in bad.output
    single = run("rollout", "status", MODEL, "--target=single")
    assert single.exit_code == 1 and "no rollout of scaler" in single.output
    k8s = run("rollout", "status", MODEL, "--target", "k8s", "--help")
    assert k8s.exit_code == 0 and "triton-ops k8s" in k8s.output


@pytest.mark.parametrize("recorded, why", [
    (None, "how it reached its Triton server is not recorded"),
    ({"url": None, "repo": "model_repository"},
     "it ran on an embedded Triton server, which stopped with the process that drove it"),
])
def test_resume_and_promote_without_url_refuse_when_no_server_is_recorded(project, recorded,
                                                                          why):
    from triton_ops.rollout.analysis import AnalysisPolicy
    from triton_ops.rollout.single import store_for
    from triton_ops.rollout.state import Phase, RolloutSpec, new_state

    store = store_for(project / "model_repository", MODEL)
    spec = RolloutSpec(model=MODEL, stable=[1], canary=2, policy=AnalysisPolicy())
    store.save(new_state(spec, 1.0).model_copy(update={"phase": Phase.PAUSED, "weight": 100}))
    if recorded is not None:
        store.save_target_options(recorded)
    before = {p.name: p.read_bytes() for p in store.directory.iterdir()}
    for action in ("resume", "promote"):
        result = run("rollout", action, MODEL)
        assert result.exit_code == 2, result.output
        message = " ".join(result.output.split())
        assert f"cannot {action} without --url: {why}" in message
        assert "serves versions [1, 2] of scaler" in message
        assert "`triton-ops rollout abort scaler`" in message
    status = run("rollout", "status", MODEL)
    assert "NOT DRIVEN" in status.output
    assert {p.name: p.read_bytes() for p in store.directory.iterdir()} == before
