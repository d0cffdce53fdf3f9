"""The validate gate: path kinds, output formats, exit codes, bad inputs, read-only runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest
from hostile import alias_bomb_envelope, alias_bomb_in_probe
from typer.testing import CliRunner

from triton_ops.cli.main import app
from triton_ops.findings import CheckResult, Finding, Severity
from triton_ops.validate import PathKind, UsageProblem, classify_path, validate_paths
from triton_ops.validate.report import render_github, render_junit

REPO_ROOT = Path(__file__).resolve().parents[2]


def invoke(*args: str, cwd: Path | None = None) -> tuple[int, str]:
    old = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        result = CliRunner().invoke(app, ["validate", *args])
    finally:
        os.chdir(old)
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        result.exception
    return result.exit_code, result.output


@pytest.fixture
def project(write_envelope: Callable[..., Path], tmp_path: Path) -> Path:
    """A clean project: envelopes/clf.yaml and model_repository/clf generated from it."""
    write_envelope()
    return tmp_path


def test_clean_project_passes_with_defaults(project: Path) -> None:
    code, output = invoke(cwd=project)
    assert code == 0, output
    assert "0 errors, 0 warnings" in output


def test_path_kinds(project: Path) -> None:
    assert classify_path(project / "envelopes") is PathKind.ENVELOPE_DIR
    assert classify_path(project / "envelopes" / "clf.yaml") is PathKind.ENVELOPE
    assert classify_path(project / "model_repository") is PathKind.REPOSITORY
    assert classify_path(project / "model_repository" / "clf") is PathKind.MODEL_DIR
    config = project / "model_repository" / "clf" / "config.pbtxt"
    assert classify_path(config) is PathKind.CONFIG
    with pytest.raises(UsageProblem):
        classify_path(project / "missing")


def test_envelope_drift_found_from_envelope_folder(project: Path) -> None:
    config = project / "model_repository" / "clf" / "config.pbtxt"
    config.write_text(config.read_text().replace("max_batch_size: 32", "max_batch_size: 8"))
    result = validate_paths([project / "envelopes"])
    assert "envelope-config-drift" in {f.rule for f in result.errors}


def test_single_config_checks_only_the_text(tmp_path: Path) -> None:
    config = tmp_path / "config.pbtxt"
    config.write_text('name: "m"\nbackend: "python"\nmax_batch_size: -1\n')
    result = validate_paths([config])
    assert result.files_checked == 1
    assert result.errors and all(f.file == str(config) for f in result.findings)
    assert not any(f.rule.startswith("repo-") for f in result.findings)


def test_repository_and_model_folder(project: Path) -> None:
    repo = project / "model_repository"
    (repo / "clf" / "1" / "model.py").unlink()
    for target in (repo, repo / "clf"):
        result = validate_paths([target])
        assert result.errors, target


def test_usage_errors_exit_2(project: Path, tmp_path: Path) -> None:
    assert invoke(str(tmp_path / "missing.yaml"))[0] == 2
    assert invoke("--format", "xml", str(project / "envelopes"))[0] == 2
    empty = tmp_path / "nothing_here"
    empty.mkdir()
    code, output = invoke(cwd=empty)
    assert code == 2 and "nothing to validate" in output


def test_warnings_fail_only_with_strict(project: Path) -> None:
    config = project / "model_repository" / "clf" / "config.pbtxt"
    config.write_text("# hand edit\n" + config.read_text())
    assert invoke(cwd=project)[0] == 0
    code, output = invoke("--strict", cwd=project)
    assert code == 1 and "envelope-config-format" in output


def test_errors_exit_1(project: Path) -> None:
    envelope = project / "envelopes" / "clf.yaml"
    envelope.write_text(envelope.read_text().replace("max_batch_size: 32",
                                                     "max_batch_size: 4"))
    code, output = invoke(cwd=project)
    assert code == 1
    assert "envelope-preferred-batch-size" in output and "error" in output


# --- formats ----------------------------------------------------------------------------------

@pytest.fixture
def broken(project: Path) -> Path:
    envelope = project / "envelopes" / "clf.yaml"
    envelope.write_text(envelope.read_text().replace("max_batch_size: 32",
                                                     "max_batch_size: 8"))
    return project


def test_json_format(broken: Path) -> None:
    code, output = invoke("--format", "json", cwd=broken)
    assert code == 1
    data = json.loads(output)
    assert data["files_checked"] >= 2
    rules = {f["rule"] for f in data["findings"]}
    assert {"envelope-preferred-batch-size", "envelope-config-drift"} <= rules
    first = data["findings"][0]
    assert set(first) == {"file", "line", "column", "rule", "severity", "message"}


def test_github_format(broken: Path) -> None:
    code, output = invoke("--format", "github", cwd=broken)
    assert code == 1
    lines = [line for line in output.splitlines() if line.startswith("::")]
    assert any(line.startswith("::error file=envelopes/clf.yaml,line=") and
               ",title=envelope-preferred-batch-size::" in line for line in lines), lines


def test_github_escaping() -> None:
    result = CheckResult([Finding("a,b:c.yaml", 3, 2, "r", Severity.WARNING, "50% bad\nnext")])
    line = render_github(result).splitlines()[0]
    assert line == "::warning file=a%2Cb%3Ac.yaml,line=3,col=2,title=r::50%25 bad%0Anext"


def test_junit_format(broken: Path) -> None:
    code, output = invoke("--format", "junit", cwd=broken)
    assert code == 1
    root = ET.fromstring(output.encode())
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert "envelopes/clf.yaml" in cases
    assert cases["envelopes/clf.yaml"].find("failure") is not None
    assert "model_repository/clf/config.pbtxt" in cases  # a clean file is a passing case


def test_junit_strict_makes_warnings_failures() -> None:
    result = CheckResult([Finding("f.yaml", 1, 1, "w", Severity.WARNING, "meh")], 1)
    lenient = ET.fromstring(render_junit(result).encode())
    assert lenient.find(".//failure") is None and lenient.find(".//system-out") is not None
    strict = ET.fromstring(render_junit(result, strict=True).encode())
    assert strict.find(".//failure") is not None


def test_human_format_groups_by_file(broken: Path) -> None:
    code, output = invoke(cwd=broken)
    assert code == 1
    assert "envelopes/clf.yaml" in output
    assert "checked:" in output.splitlines()[-1]


# --- bad inputs never crash, and nothing is modified --------------------------------------------

BAD_FILES: dict[str, bytes] = {
    "malformed.yaml": b"name: x\nbackend: [python\n",
    "dupe.yaml": b"name: dupe\nbackend: python\nbackend: onnxruntime\n",
    "types.yaml": b"name: types\nbackend: python\nbatching: {max_batch_size: many}\n",
    "unknown.yaml": b"name: unknown\nbackend: python\nbatching: {dynamic: {preferd: [2]}}\n",
    "empty.yaml": b"",
    "binary.yaml": b"\x00\x01\x02\x03",
    "latin1.yaml": b"name: caf\xe9\nbackend: python\n",
    "huge.yaml": b"# x\n" * 300_000,
    "dotdot.yaml": b"name: ../../etc\nbackend: python\n",
    "slash.yaml": b"name: a/b\nbackend: python\n",
    "bomb.yaml": alias_bomb_envelope("bomb").encode(),
    "probe_bomb.yaml": alias_bomb_in_probe("probe_bomb").encode(),
}


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if path.is_symlink():
                continue
            out[str(path)] = (path.read_bytes(), path.stat().st_mtime_ns)
    return out


def test_bad_inputs_are_findings_not_tracebacks(project: Path) -> None:
    envelopes = project / "envelopes"
    for name, content in BAD_FILES.items():
        (envelopes / name).write_bytes(content)
    os.symlink(envelopes / "loop2.yaml", envelopes / "loop1.yaml")
    os.symlink(envelopes / "loop1.yaml", envelopes / "loop2.yaml")
    before = snapshot(project)
    code, output = invoke("--format", "json", cwd=project)
    assert code == 1
    assert "Traceback" not in output
    data = json.loads(output)
    by_file: dict[str, set[str]] = {}
    for f in data["findings"]:
        by_file.setdefault(Path(f["file"]).name, set()).add(f["rule"])
    expected = {
        "malformed.yaml": "yaml-syntax", "dupe.yaml": "yaml-duplicate-key",
        "types.yaml": "envelope-schema", "unknown.yaml": "envelope-unknown-key",
        "empty.yaml": "envelope-empty", "binary.yaml": "envelope-binary",
        "latin1.yaml": "envelope-encoding", "huge.yaml": "envelope-too-large",
        "dotdot.yaml": "envelope-schema", "slash.yaml": "envelope-schema",
        "bomb.yaml": "yaml-alias-expansion", "probe_bomb.yaml": "yaml-alias-expansion",
        "loop1.yaml": "envelope-unreadable", "loop2.yaml": "envelope-unreadable",
    }
    for name, rule in expected.items():
        assert rule in by_file.get(name, set()), (name, by_file.get(name))
    for fmt in ("human", "github", "junit"):
        code, output = invoke("--format", fmt, cwd=project)
        assert code == 1 and "Traceback" not in output
    assert snapshot(project) == before


def test_generate_check_and_import_leave_inputs_alone(project: Path) -> None:
    before = snapshot(project)
    result = CliRunner().invoke(app, ["generate", "--check", "--envelopes",
                                      str(project / "envelopes"), "--repo",
                                      str(project / "model_repository")])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["import", str(project / "model_repository" / "clf"),
                                      "-o", "-"])
    assert result.exit_code == 0, result.output
    assert snapshot(project) == before


# --- start-up: no heavy modules ------------------------------------------------------------------

HEAVY = ("pandas", "numpy", "kubernetes", "grpc", "tritonclient.grpc", "tritonclient.http",
         "matplotlib")

PROBE = """
import json, sys
from triton_ops.cli.main import app
try:
    app(sys.argv[1:], prog_name="triton-ops")
except SystemExit:
    pass
heavy = {heavy!r}
print("LOADED=" + json.dumps(sorted(m for m in heavy if m in sys.modules)))
"""


@pytest.mark.parametrize("args", [["--help"], ["validate", "--format", "json"],
                                  ["validate", "envelopes"]])
def test_cli_does_not_import_heavy_modules(project: Path, args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *args],
                          cwd=project, capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("LOADED=")]
    assert lines, proc.stdout + proc.stderr
    assert json.loads(lines[-1].removeprefix("LOADED=")) == []
    if args[0] == "validate":
        assert '"files_checked"' in proc.stdout or "checked:" in proc.stdout


def test_parallel_workers_give_the_same_result(project: Path, monkeypatch: pytest.MonkeyPatch
                                               ) -> None:
    from triton_ops.validate import gate

    envelopes = project / "envelopes"
    for name, content in list(BAD_FILES.items())[:4]:
        (envelopes / name).write_bytes(content)
    sequential = validate_paths([envelopes, project / "model_repository"])
    monkeypatch.setattr(gate, "PARALLEL_MIN_WEIGHT", 0)
    monkeypatch.setattr(gate, "CHUNK", 1)
    monkeypatch.setenv(gate.JOBS_ENV, "2")
    import threading

    assert threading.active_count() == 1  # otherwise the gate would not fork
    parallel = validate_paths([envelopes, project / "model_repository"])
    assert parallel.findings == sequential.findings
    assert parallel.files == sequential.files
    assert parallel.files_checked == sequential.files_checked


def test_generated_config_without_envelope_is_an_orphan(project: Path) -> None:
    envelope = project / "envelopes" / "clf.yaml"
    moved = project / "clf.yaml.bak"
    envelope.rename(moved)
    (project / "envelopes" / "other.yaml").write_text("name: other\nbackend: python\n")
    result = validate_paths([project / "envelopes", project / "model_repository"])
    orphans = [f for f in result.findings if f.rule == "envelope-orphan-config"]
    assert len(orphans) == 1
    assert "envelopes/clf.yaml" in orphans[0].message and "triton-ops import" in orphans[0].message
    assert orphans[0].file.endswith("clf/config.pbtxt")
    # a hand-written config without the generated header is not an orphan
    config = project / "model_repository" / "clf" / "config.pbtxt"
    config.write_text(config.read_text().split("\n", 2)[2])
    result = validate_paths([project / "envelopes", project / "model_repository"])
    assert not [f for f in result.findings if f.rule == "envelope-orphan-config"]


def test_installed_command_exit_codes_and_streams(project: Path) -> None:
    exe = Path(sys.executable).parent / "triton-ops"
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "triton_ops.cli.main"]
    ok = subprocess.run([*command, "validate", "--format", "json"], cwd=project,
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and json.loads(ok.stdout)["errors"] == 0
    missing = subprocess.run([*command, "validate", "nowhere"], cwd=project,
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and missing.stdout == ""
    assert "nowhere does not exist" in missing.stderr and "Traceback" not in missing.stderr
    (project / "envelopes" / "bad.yaml").write_text("name: bad\nbackend: [\n")
    bad = subprocess.run([*command, "validate", "--format", "github"], cwd=project,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "::error file=envelopes/bad.yaml,line=" in bad.stdout


def test_two_envelopes_naming_one_model_are_an_error(project: Path) -> None:
    envelopes = project / "envelopes"
    (envelopes / "clf.yml").write_text((envelopes / "clf.yaml").read_text())
    (envelopes / "copy.yaml").write_text((envelopes / "clf.yaml").read_text())
    elsewhere = project / "other" / "envelopes"  # the same name in another repository is fine
    elsewhere.mkdir(parents=True)
    (project / "other" / "model_repository").mkdir()
    (elsewhere / "clf.yaml").write_text((envelopes / "clf.yaml").read_text())
    result = validate_paths([envelopes, envelopes / "clf.yaml", elsewhere], None)
    duplicates = [f for f in result.findings if f.rule == "envelope-duplicate-name"]
    assert sorted((Path(f.file).name, f.line) for f in duplicates) == [
        ("clf.yaml", 1), ("clf.yml", 1), ("copy.yaml", 1)]
    first = next(f for f in duplicates if f.file.endswith("clf.yaml"))
    assert "clf.yml" in first.message and "copy.yaml" in first.message
    assert first.severity is Severity.ERROR
    code, output = invoke("--format", "github", cwd=project)
    assert code == 1 and "title=envelope-duplicate-name::" in output
