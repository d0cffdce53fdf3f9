import json

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


def test_caches_are_not_part_of_a_version(model_dir):
    publish(model_dir, 1)
    (model_dir / "1" / "__pycache__").mkdir()
    (model_dir / "1" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"x")
    assert verify_version(model_dir, 1) == []


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
