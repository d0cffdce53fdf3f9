"""Unicode digits ('²', '١') where a version number or a count is expected.

str.isdigit() is true for them; int() refuses '²' (a traceback) and reads '١' as 1 (a folder
Triton does not see as a version). Every such place takes ASCII digits only.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from k8s.support import pod_script
from typer.testing import CliRunner

from triton_ops.cli.main import app
from triton_ops.digits import is_ascii_decimal
from triton_ops.envelope.loader import load_envelope
from triton_ops.modelconfig.importer import import_model_dir
from triton_ops.modelconfig.rules import check_config_text
from triton_ops.repository.layout import check_model_dir
from triton_ops.repository.seal import publish, sealed_versions, verify_sealed_versions
from triton_ops.validate import validate_paths

UNICODE_DIGITS = ["²", "١", "１２", "߁"]  # superscript two, Arabic-Indic one, full-width 12, NKo


def test_ascii_decimal() -> None:
    assert all(is_ascii_decimal(text) for text in ("0", "1", "12", "007"))
    for text in ["", "-1", "1.0", " 1", "1\n", "+1", "1_0", *UNICODE_DIGITS]:
        assert not is_ascii_decimal(text), text


def python_model(root: Path, versions: list[str]) -> Path:
    model = root / "m"
    for version in versions:
        (model / version).mkdir(parents=True)
        (model / version / "model.py").write_text("# model\n")
    (model / "config.pbtxt").write_text('name: "m"\nbackend: "python"\n')
    return model


@pytest.mark.parametrize("name", UNICODE_DIGITS)
def test_unicode_version_folder_is_not_a_version(tmp_path: Path, name: str) -> None:
    model = python_model(tmp_path, ["1", name])
    result = check_model_dir(model)
    assert [(f.rule, Path(f.file).name) for f in result.findings] == \
        [("repo-version-folder-name", name)]
    imported = import_model_dir(model)
    assert imported.data["versions"] == [1]


@pytest.mark.parametrize("name", UNICODE_DIGITS)
def test_unicode_seal_file_name_is_not_a_seal(tmp_path: Path, name: str) -> None:
    model = python_model(tmp_path, ["1"])
    publish(model, 1)
    seals = model / ".triton-ops" / "seals"
    (seals / f"{name}.json").write_text((seals / "1.json").read_text())
    assert sealed_versions(model) == [1]
    assert verify_sealed_versions(model) == []


def test_unicode_jobs_variable_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    model = python_model(tmp_path, ["1"])
    for value in UNICODE_DIGITS:
        monkeypatch.setenv("TRITON_OPS_JOBS", value)
        assert validate_paths([model]).errors == []


def test_unicode_digits_in_an_int_tag_are_a_finding(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("name: m\nbackend: python\nbatching:\n  max_batch_size: !!int ²\n")
    loaded = load_envelope(path)
    assert [(f.rule, f.line) for f in loaded.findings] == [("yaml-syntax", 4)]
    assert "'²'" in loaded.findings[0].message
    # The same through PyYAML's own construction (merge keys take that path).
    path.write_text("name: m\nbackend: python\nbatching: &b {max_batch_size: 1}\n"
                    "instances:\n  - <<: *b\n    count: !!int ²\n")
    loaded = load_envelope(path)
    assert [(f.rule, f.line) for f in loaded.findings] == [("yaml-syntax", 6)]
    path.write_text("name: m\nbackend: python\nbatching: {max_batch_size: !!int 12}\n")
    envelope = load_envelope(path).envelope
    assert envelope is not None and envelope.batching.max_batch_size == 12


def test_unicode_instance_profile_is_refused() -> None:
    text = ('name: "m"\nplatform: "tensorrt_plan"\nmax_batch_size: 1\n'
            'instance_group [{ kind: KIND_GPU, profile: ["²"] }]\n')
    _, _, findings = check_config_text(text, "config.pbtxt")
    assert "config-instance-profile" in {f.rule for f in findings}


def test_probe_refuses_a_unicode_version() -> None:
    result = CliRunner().invoke(app, ["probe", "m", "--version", "²"])
    assert result.exit_code == 2 and "--version must be a version number" in result.output


def test_pod_readiness_skips_unicode_versions_in_the_index(tmp_path: Path) -> None:
    """The chart's script reads Triton's repository index; a version it cannot read as a
    number is not one of the wanted ones, and never a traceback."""
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from threading import Thread

    index = [{"name": "m", "version": "²", "state": "READY"},
             {"name": "m", "version": "1", "state": "READY"}]

    class Index(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server interface
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.dumps(index).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Index)
    Thread(target=server.serve_forever, daemon=True).start()
    pod = pod_script()
    pod.HTTP_URL = f"http://127.0.0.1:{server.server_port}"
    try:
        assert pod.extra_versions({"m": [1]}) == []
    finally:
        server.shutdown()
