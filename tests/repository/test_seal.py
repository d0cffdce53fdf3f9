import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from triton_ops.findings import Severity
from triton_ops.repository.seal import (
    SealError,
    load_manifest,
    publish,
    sealed_versions,
    verify_sealed_versions,
    verify_version,
)


@pytest.fixture()
def model_dir(tmp_path):
    model = tmp_path / "repo" / "m"
    (model / "1" / "weights").mkdir(parents=True)
    (model / "config.pbtxt").write_text('name: "m"\nbackend: "python"\n')
    (model / "1" / "model.py").write_text("print('v1')\n")
    (model / "1" / "weights" / "w.bin").write_bytes(b"\x00\x01" * 100)
    return model


def test_publish_records_every_file_config_and_envelope(model_dir, tmp_path):
    env = tmp_path / "m.yaml"
    env.write_text("name: m\nbackend: python\n")
    result = publish(model_dir, 1, envelope_path=env)
    assert result.created and result.files == 2
    manifest = load_manifest(model_dir, 1)
    assert set(manifest["files"]) == {"model.py", "weights/w.bin"}
    assert manifest["config"].startswith('name: "m"')
    assert manifest["envelope"] == "name: m\nbackend: python\n"
    assert result.manifest_path == model_dir / ".triton-ops" / "seals" / "1.json"
    assert sealed_versions(model_dir) == [1]
    assert verify_version(model_dir, 1) == []
    assert verify_sealed_versions(model_dir) == []


def test_republish_same_content_is_a_no_op(model_dir):
    publish(model_dir, 1)
    before = (model_dir / ".triton-ops" / "seals" / "1.json").read_text()
    assert not publish(model_dir, 1).created
    assert (model_dir / ".triton-ops" / "seals" / "1.json").read_text() == before


def test_republish_other_content_is_refused(model_dir):
    publish(model_dir, 1)
    (model_dir / "1" / "model.py").write_text("print('changed')\n")
    with pytest.raises(SealError, match="immutable.*new version.*2"):
        publish(model_dir, 1)




@pytest.mark.parametrize("change, word", [
    (lambda d: (d / "1" / "model.py").write_text("evil\n"), "modified"),
    (lambda d: (d / "1" / "extra.py").write_text("x\n"), "added"),
    (lambda d: (d / "1" / "weights" / "w.bin").unlink(), "removed"),
])
def test_any_change_is_an_error(model_dir, change, word):
    publish(model_dir, 1)
    change(model_dir)
    problems = verify_version(model_dir, 1)
    assert len(problems) == 1 and word in problems[0]
    findings = verify_sealed_versions(model_dir)
    assert [f.rule for f in findings] == ["sealed-version-modified"]
    assert findings[0].severity is Severity.ERROR
    assert word in findings[0].message


def test_unsealed_version_cannot_be_loaded(model_dir):
    assert "not sealed" in verify_version(model_dir, 1)[0]
    assert "triton-ops publish m 1" in verify_version(model_dir, 1)[0]


def test_config_change_is_a_warning(model_dir):
    publish(model_dir, 1)
    (model_dir / "config.pbtxt").write_text('name: "m"\nbackend: "python"\nmax_batch_size: 8\n')
    findings = verify_sealed_versions(model_dir)
    assert [(f.rule, f.severity) for f in findings] == [("sealed-config-changed",
                                                         Severity.WARNING)]


def test_corrupt_seal_is_reported_not_raised(model_dir):
    publish(model_dir, 1)
    seal = model_dir / ".triton-ops" / "seals" / "1.json"
    seal.chmod(0o644)
    seal.write_text("{not json")
    assert "unreadable seal" in verify_version(model_dir, 1)[0]
    assert [f.rule for f in verify_sealed_versions(model_dir)] == ["sealed-version-unreadable"]
    seal.write_text(json.dumps({"schema": "other"}))
    assert "not a triton-ops/seal-v1 seal" in verify_version(model_dir, 1)[0]


def test_missing_or_empty_version_is_refused(model_dir):
    with pytest.raises(SealError, match="does not exist"):
        publish(model_dir, 7)
    (model_dir / "3").mkdir()
    with pytest.raises(SealError, match="empty"):
        publish(model_dir, 3)


# --- only regular files are read: devices, FIFOs and links leaving the version are findings --
# (each test has a hang guard: reading /dev/zero or opening a FIFO never returns)

def _fifo(path):
    os.mkfifo(path)


def _socket(path):
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()


SPECIAL = [
    ("zero", lambda p: p.symlink_to("/dev/zero"), "character device"),
    ("fifo", _fifo, "FIFO"),
    ("link_to_fifo", lambda p: (_fifo(p.with_name("f")), p.symlink_to(p.with_name("f"))),
     "FIFO"),
    ("socket", _socket, "socket"),
    ("outside", lambda p: p.symlink_to("/etc/passwd"), "outside the version folder"),
    ("dotdot", lambda p: p.symlink_to("../config.pbtxt"), "outside the version folder"),
    ("folder_link", lambda p: p.symlink_to("."), "folder"),
    ("dangling", lambda p: p.symlink_to("missing"), "does not exist"),
    ("loop", lambda p: p.symlink_to("loop"), "loop"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name, make, why", SPECIAL, ids=[s[0] for s in SPECIAL])
def test_publish_refuses_what_is_not_a_regular_file(model_dir, name, make, why):
    make(model_dir / "1" / name)
    with pytest.raises(SealError) as err:
        publish(model_dir, 1)
    assert f"{name}: " in str(err.value) and why in str(err.value)
    assert not (model_dir / ".triton-ops" / "seals" / "1.json").exists()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name, make, why", SPECIAL, ids=[s[0] for s in SPECIAL])
def test_validate_and_rollout_report_what_is_not_a_regular_file(model_dir, name, make, why):
    publish(model_dir, 1)
    make(model_dir / "1" / name)
    problems = verify_version(model_dir, 1)
    assert any(f"1/{name}: " in p and why in p for p in problems), problems
    findings = verify_sealed_versions(model_dir)
    mine = [f for f in findings if f.file == str(model_dir / "1" / name)]
    assert [(f.rule, f.severity) for f in mine] == [("sealed-version-file-kind",
                                                     Severity.ERROR)]
    assert why in mine[0].message


def test_links_to_regular_files_inside_the_version_are_sealed(model_dir):
    (model_dir / "1" / "weights" / "link.bin").symlink_to("w.bin")
    (model_dir / "1" / "also.bin").symlink_to("weights/w.bin")
    publish(model_dir, 1)
    files = load_manifest(model_dir, 1)["files"]
    assert files["also.bin"] == files["weights/w.bin"] == files["weights/link.bin"]
    assert verify_version(model_dir, 1) == []


@pytest.mark.timeout(60)
def test_publish_command_refuses_a_fifo_with_exit_2(model_dir, tmp_path):
    os.mkfifo(model_dir / "1" / "pipe")
    done = subprocess.run([sys.executable, "-m", "triton_ops.cli.main", "publish", "m", "1",
                           "--repo", str(model_dir.parent), "--envelopes", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "pipe: a FIFO" in done.stderr and "Traceback" not in done.stderr


# --- what Python could run instead of the sealed files ----------------------------------------

def compile_cache(cache, source_text, mode="timestamp", like=None):
    """Compile `source_text` into `cache` with py_compile (what the import system writes).

    With `like` (a source file of the same size), the cache's header claims that file's
    mtime and size: a forged cache Python takes for the compiled `like`.
    """
    import py_compile
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "forged.py")
        with open(source, "w") as handle:
            handle.write(source_text)
        if like is not None:
            assert os.stat(source).st_size == like.stat().st_size
            os.utime(source, ns=(like.stat().st_atime_ns, like.stat().st_mtime_ns))
        invalidation = {"timestamp": py_compile.PycInvalidationMode.TIMESTAMP,
                        "unchecked": py_compile.PycInvalidationMode.UNCHECKED_HASH}[mode]
        py_compile.compile(source, cfile=str(cache), doraise=True,
                           invalidation_mode=invalidation)


def cache_of(model_dir, name="model"):
    folder = model_dir / "1" / "__pycache__"
    folder.mkdir(exist_ok=True)
    return folder / f"{name}.{sys.implementation.cache_tag}.pyc"


def test_the_cache_python_writes_at_load_still_verifies(model_dir):
    publish(model_dir, 1)
    import py_compile

    py_compile.compile(str(model_dir / "1" / "model.py"), cfile=str(cache_of(model_dir)))
    assert verify_version(model_dir, 1) == []
    assert verify_sealed_versions(model_dir) == []


def test_caches_present_at_publish_are_checked_not_sealed(model_dir):
    import py_compile

    py_compile.compile(str(model_dir / "1" / "model.py"), cfile=str(cache_of(model_dir)))
    publish(model_dir, 1)
    assert set(load_manifest(model_dir, 1)["files"]) == {"model.py", "weights/w.bin"}
    compile_cache(cache_of(model_dir), "print('evil')\n", "unchecked")
    with pytest.raises(SealError, match="__pycache__/model.*not the compiled model.py"):
        publish(model_dir, 1)


@pytest.mark.parametrize("plant, why", [
    (lambda d: compile_cache(cache_of(d), "print('evil')\n", "unchecked"),
     "not the compiled model.py"),
    (lambda d: compile_cache(cache_of(d), "print('ev')\n", like=d / "1" / "model.py"),
     "not the compiled model.py"),
    (lambda d: cache_of(d).write_bytes(b"x"), "not the compiled model.py"),
    (lambda d: compile_cache(cache_of(d, "helper"), "print('v1')\n"), "no helper.py"),
    (lambda d: (cache_of(d).parent / "model.cpython-27.pyc").write_bytes(b"\x03\xf3\r\n" * 8),
     "another Python"),
])
def test_planted_bytecode_is_reported(model_dir, plant, why):
    publish(model_dir, 1)
    plant(model_dir)
    problems = verify_version(model_dir, 1)
    assert len(problems) == 1 and "__pycache__/" in problems[0] and why in problems[0]
    findings = verify_sealed_versions(model_dir)
    assert [f.rule for f in findings] == ["sealed-version-bytecode"]
    assert "delete" in findings[0].message


def test_python_files_next_to_the_versions_are_refused(model_dir):
    """The Python backend puts the model folder on sys.path (after the version folder):
    a module there is imported by model.py although no seal covers it."""
    publish(model_dir, 1)
    (model_dir / "triton_python_backend_utils.py").write_text("raise SystemExit\n")
    (model_dir / "notes.txt").write_text("not importable\n")
    problems = verify_version(model_dir, 1)
    assert len(problems) == 1 and "triton_python_backend_utils.py" in problems[0]
    findings = verify_sealed_versions(model_dir)
    assert [(f.rule, f.file) for f in findings] == [
        ("sealed-model-importable", str(model_dir / "triton_python_backend_utils.py"))]
    (model_dir / "2").mkdir()
    (model_dir / "2" / "model.py").write_text("print('v2')\n")
    with pytest.raises(SealError, match="triton_python_backend_utils.py"):
        publish(model_dir, 2)


@pytest.mark.timeout(60)
def test_validate_command_reports_a_fifo_and_dev_zero_in_a_sealed_version(model_dir):
    publish(model_dir, 1)
    os.mkfifo(model_dir / "1" / "pipe")
    (model_dir / "1" / "zero").symlink_to("/dev/zero")
    done = subprocess.run([sys.executable, "-m", "triton_ops.cli.main", "validate",
                           str(model_dir.parent), "--format", "json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    findings = json.loads(done.stdout)["findings"]
    assert sorted((Path(f["file"]).name, f["rule"]) for f in findings) == [
        ("pipe", "sealed-version-file-kind"), ("zero", "sealed-version-file-kind")]
