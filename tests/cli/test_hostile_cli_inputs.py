"""Hostile inputs to the commands that keep a rollout's files, take ports and server URLs,
replay recorded requests or write files: each one is answered with a message naming the
file (and line) or the option, and exit 1 or 2, never a traceback; the user's files are
left as they were.

The corpus holds what a hand edit, another program or a broken disk leaves behind: rollout
documents (state.json, audit.jsonl, known_good.json, target.json) that are not JSON, not
UTF-8, of the wrong shape or nested beyond what a JSON parser can follow; seals whose
`files` entries are not objects; ports and HOST:PORT URLs out of range or unreadable;
request lines nested 100,000 deep; outputs whose folder is a file (a write that fails for
root too).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from triton_ops.cli.main import app
from triton_ops.rollout.analysis import AnalysisPolicy
from triton_ops.rollout.state import Phase, RolloutSpec, new_state
from triton_ops.rollout.store import StateStore

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL = "dense_mlp"
STORE = Path("model_repository") / MODEL / ".triton-ops" / "rollout"
SEALS = Path("model_repository") / MODEL / ".triton-ops" / "seals"
DEEP = b"[" * 100_000

# No case may start a server: were an input accepted by mistake, a command could wait for one.
pytestmark = pytest.mark.timeout(60)
runner = CliRunner()


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """envelopes/dense_mlp.yaml and model_repository/dense_mlp with versions 1 and 2."""
    (tmp_path / "envelopes").mkdir()
    shutil.copy(REPO_ROOT / "envelopes" / f"{MODEL}.yaml", tmp_path / "envelopes")
    model = tmp_path / "model_repository" / MODEL
    shutil.copytree(REPO_ROOT / "model_repository" / MODEL, model,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    if not (model / "2").exists():
        shutil.copytree(model / "1", model / "2")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    return tmp_path


def invoke(*args: str) -> tuple[int, str]:
    """Run a command; fail the test on a traceback or an exit code other than 1 or 2."""
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"{' '.join(args)}: {result.exception!r}\n{result.output}"
    assert "Traceback" not in result.output
    assert result.exit_code in (1, 2), f"{' '.join(args)}: exit {result.exit_code}\n" \
        f"{result.output}"
    return result.exit_code, result.output


def save_state(phase: Phase) -> None:
    spec = RolloutSpec(model=MODEL, stable=[1], canary=2, policy=AnalysisPolicy())
    StateStore(STORE).save(new_state(spec, 1000.0).model_copy(update={"phase": phase}))


# -- rollout documents -------------------------------------------------------------------

# case -> (file of the store, content, where the message points)
STORE_DOCUMENTS: dict[str, tuple[str, bytes, str]] = {
    "state_not_json": ("state.json", b"{not json", "state.json"),
    "state_not_utf8": ("state.json", b'\xff\xfe{"spec": {}}', "state.json"),
    "state_deeply_nested": ("state.json", DEEP, "state.json"),
    "state_wrong_shape": ("state.json", b'{"spec": {"model": "dense_mlp"}}', "state.json"),
    "audit_not_utf8": ("audit.jsonl", b'{"event": "a"}\n\xff\xfe\n', "audit.jsonl:2"),
    "audit_not_an_object": ("audit.jsonl", b'{"event": "a"}\n[1, 2]\n', "audit.jsonl:2"),
    "audit_string_line": ("audit.jsonl", b'"x"\n', "audit.jsonl:1"),
    "audit_deeply_nested": ("audit.jsonl", DEEP + b"\n", "audit.jsonl:1"),
    "known_good_object": ("known_good.json", b'{"a": 1}', "known_good.json"),
    "known_good_string_version": ("known_good.json", b'[[1, "x"]]', "known_good.json"),
    "known_good_unicode_digit": ("known_good.json", '[["²"]]'.encode(), "known_good.json"),
    "known_good_fraction": ("known_good.json", b"[[1.5]]", "known_good.json"),
    "known_good_deeply_nested": ("known_good.json", DEEP, "known_good.json"),
    "known_good_not_utf8": ("known_good.json", b"[[\xff]]", "known_good.json"),
    "target_not_an_object": ("target.json", b"[1, 2]", "target.json"),
    "target_deeply_nested": ("target.json", b"{" * 100_000, "target.json"),
}


def store_commands(name: str) -> list[list[str]]:
    """The commands that read `name` (file of the store) for a rollout in a terminal phase
    (state.json: in any phase)."""
    if name == "audit.jsonl":
        return [["rollout", "status", MODEL]]
    if name == "known_good.json":
        return [["rollback", MODEL], ["rollback", MODEL, "--url", "127.0.0.1:1"]]
    if name == "target.json":
        return [["rollout", "resume", MODEL], ["rollout", "abort", MODEL]]
    return [["rollout", "status", MODEL], ["rollback", MODEL], ["rollout", "resume", MODEL],
            ["rollout", "abort", MODEL], ["rollout", "promote", MODEL],
            ["rollout", MODEL, "--canary", "2"]]


@pytest.mark.parametrize("case", STORE_DOCUMENTS)
def test_rollout_documents_that_are_not_what_triton_ops_writes(project: Path, case: str
                                                               ) -> None:
    name, content, where = STORE_DOCUMENTS[case]
    # Audit and history are read whatever the phase; target.json only to go on.
    save_state(Phase.PROGRESSING if name == "target.json" else Phase.ROLLED_BACK)
    path = STORE / name
    path.write_bytes(content)
    before = {p.name: p.read_bytes() for p in STORE.iterdir()}
    for args in store_commands(name):
        code, output = invoke(*args)
        assert code == 2, f"{args}: {output}"
        assert f"{STORE}/{where}" in output.replace("\n", ""), f"{args}: {output}"
    assert {p.name: p.read_bytes() for p in STORE.iterdir()} == before


def test_a_torn_last_audit_record_is_tolerated(project: Path) -> None:
    save_state(Phase.ROLLED_BACK)
    (STORE / "audit.jsonl").write_bytes(b'{"event": "started", "reason": "go"}\n{"ev')
    result = runner.invoke(app, ["rollout", "status", MODEL])
    assert result.exit_code == 0, result.output
    assert "phase     RolledBack" in result.output and "go" in result.output


# -- a store that cannot be used ---------------------------------------------------------

def test_rollout_commands_name_the_store_they_cannot_use(project: Path) -> None:
    for version in ("1", "2"):
        assert runner.invoke(app, ["publish", MODEL, version]).exit_code == 0
    (project / STORE).write_text("")  # a file where the store's folder goes
    for args in (["rollout", MODEL, "--canary", "2", "--stable", "1", "--url", "127.0.0.1:1"],
                 ["rollout", "status", MODEL], ["rollout", "abort", MODEL],
                 ["rollout", "resume", MODEL],
                 ["rollback", MODEL, "--to", "1", "--url", "127.0.0.1:1"]):
        code, output = invoke(*args)
        assert code == 2, output
        assert re.search(rf"{STORE}/\w+\.json: cannot read: {STORE} is not a folder", output)
    assert (project / STORE).read_text() == ""


def test_abort_names_the_audit_log_it_cannot_write(project: Path) -> None:
    save_state(Phase.PROGRESSING)
    StateStore(STORE).save_target_options({"url": "127.0.0.1:1", "repo": "model_repository"})
    (project / STORE / "audit.jsonl").mkdir()  # a write that fails for root too
    code, output = invoke("rollout", "abort", MODEL)
    assert code == 1
    assert f"cannot write {STORE}/audit.jsonl: Is a directory" in output.replace("\n", "")


# -- seals --------------------------------------------------------------------------------

SEAL = {"schema": "triton-ops/seal-v1", "model": MODEL, "version": 2, "config": None,
        "envelope": None}
SEALS_CORPUS: dict[str, bytes] = {
    "files_entry_number": json.dumps({**SEAL, "files": {"model.py": 1}}).encode(),
    "files_entry_list": json.dumps({**SEAL, "files": {"model.py": ["x"]}}).encode(),
    "files_entry_null": json.dumps({**SEAL, "files": {"model.py": None}}).encode(),
    "files_entry_no_hash": json.dumps({**SEAL, "files": {"model.py": {"size": 1}}}).encode(),
    "files_entry_hash_number": json.dumps(
        {**SEAL, "files": {"model.py": {"sha256": 5, "size": 1}}}).encode(),
    "deeply_nested": b'{"files": ' + DEEP,
    "not_utf8": b'{"schema": "\xff"}',
}


@pytest.mark.parametrize("case", SEALS_CORPUS)
def test_seals_that_are_not_what_publish_writes(project: Path, case: str) -> None:
    SEALS.mkdir(parents=True)
    seal = SEALS / "2.json"
    seal.write_bytes(SEALS_CORPUS[case])
    code, output = invoke("publish", MODEL, "2")
    assert code == 2 and str(seal) in output.replace("\n", "")
    # A rollout refuses the canary before it is loaded (--stable given: no server is asked).
    code, output = invoke("rollout", MODEL, "--canary", "2", "--stable", "1", "--url",
                          "127.0.0.1:1")
    assert code == 2 and str(seal) in output.replace("\n", "")
    result = runner.invoke(app, ["validate", "model_repository"])
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    assert result.exit_code == 1 and str(seal) in result.output.replace("\n", "")
    assert seal.read_bytes() == SEALS_CORPUS[case]


# -- ports and server URLs ----------------------------------------------------------------

BAD_PORTS = ["99999", "-1", "0", "65536", "http"]


@pytest.mark.parametrize("option", ["--grpc-port", "--http-port", "--metrics-port"])
@pytest.mark.parametrize("port", BAD_PORTS)
def test_serve_refuses_a_port_out_of_range(project: Path, option: str, port: str) -> None:
    # --repo missing: were the port accepted, serve would stop there instead of serving.
    code, output = invoke("serve", "--repo", "missing", option, port)
    assert code == 2 and option in output
    if port.lstrip("-").isdigit():
        assert f"port {port} is not a TCP port: use 1-65535" in output
    else:
        assert "valid integer" in output


BAD_URLS = ["127.0.0.1:99999", ":abc", "[::1", "127.0.0.1:abc", "127.0.0.1:-1",
            "127.0.0.1:0", "http://", "a b:8001", "host:8001/v2/models", "[::1]:8001x",
            "[not-an-address]:8001", "user@host:8001"]
URL_COMMANDS = [
    ["probe", MODEL], ["rollout", MODEL, "--canary", "2"], ["rollout", "resume", MODEL],
    ["rollout", "abort", MODEL], ["rollout", "promote", MODEL], ["rollback", MODEL],
]


@pytest.mark.parametrize("url", BAD_URLS)
@pytest.mark.parametrize("command", URL_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_bad_server_urls_are_refused_before_anything_starts(project: Path, url: str,
                                                            command: list[str]) -> None:
    code, output = invoke(*command, "--url", url)
    assert code == 2
    assert "--url" in output and url in output and "HOST:PORT" in output
    assert not STORE.exists()


# -- recorded requests --------------------------------------------------------------------

@pytest.mark.parametrize("line", [
    b'{"INPUT__0": ' + DEEP + b"}",
    DEEP,
    b'{"a": ' * 100_000,
])
def test_requests_nested_too_deeply_name_the_file_and_line(project: Path, line: bytes
                                                           ) -> None:
    requests = project / "requests.jsonl"
    requests.write_bytes(b"\n" + line + b"\n")
    code, output = invoke("rollout", MODEL, "--canary", "2", "--requests", str(requests))
    assert code == 2 and f"{requests}:2" in output.replace("\n", "")


# -- writes that fail name the file -------------------------------------------------------

def test_generate_names_the_config_it_cannot_write(project: Path) -> None:
    shutil.rmtree(project / "model_repository" / MODEL)
    (project / "model_repository" / MODEL).write_text("")  # a file where the folder goes
    code, output = invoke("generate")
    assert code == 1
    assert f"cannot write model_repository/{MODEL}/config.pbtxt: model_repository/{MODEL} " \
        "is not a folder" in output


def test_import_names_the_envelope_it_cannot_write(project: Path) -> None:
    (project / "blocker").write_text("")
    code, output = invoke("import", f"model_repository/{MODEL}", "-o", "blocker/m.yaml")
    assert code == 1
    assert "cannot write blocker/m.yaml: blocker is not a folder" in output
    assert output.count("cannot write") == 1


def test_helm_values_names_the_file_it_cannot_write(project: Path) -> None:
    (project / "blocker").write_text("")
    code, output = invoke("helm-values", "-o", "blocker/values.yaml")
    assert code == 1
    assert "cannot write blocker/values.yaml: blocker is not a folder" in output


def test_publish_names_the_seal_it_cannot_write(project: Path) -> None:
    (project / SEALS.parent).mkdir(parents=True)
    (project / SEALS).write_text("")
    code, output = invoke("publish", MODEL, "1")
    assert code == 1
    assert f"cannot write {SEALS}/1.json: {SEALS} is not a folder" in output
