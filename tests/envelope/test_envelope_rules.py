"""Each envelope rule with an envelope that breaks it and one that passes it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from triton_ops.envelope.model import Envelope
from triton_ops.envelope.rules import instances_per_gpu
from triton_ops.findings import Finding, Severity
from triton_ops.validate.envelope_config import RULES, check_envelope_file

NEXT_TO = Path("<next to the envelopes folder>")


def run(path: Path, repo: Path | None = NEXT_TO) -> list[Finding]:
    if repo == NEXT_TO:
        repo = path.parent.parent / "model_repository"
    return check_envelope_file(path, repo).findings


def rules_of(findings: list[Finding]) -> set[str]:
    return {f.rule for f in findings}


def test_base_envelope_is_clean(write_envelope: Callable[..., Path]) -> None:
    assert run(write_envelope()) == []


def test_every_rule_is_documented() -> None:
    for registered in RULES.values():
        assert registered.id.startswith("envelope-")
        assert len(registered.doc) > 30, registered.id


# (rule, breaking change, passing change, expected line key in the message)
CASES: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    ("envelope-memory-fit",
     # 2 instances x (1GiB + 32 x 256MiB + 256MiB) = 18.5GiB > 16GiB x 0.9
     {"resources": {"gpu_memory": {"activation_per_item": "256MiB"}}},
     {"resources": {"gpu_memory": {"activation_per_item": "128MiB"}}},
     "smallest allowed GPU"),
    ("envelope-memory-fit",
     # one group pins 3 instances to GPU 0 on top of the 2 that go on every GPU: 5 x 3.3GiB
     {"instances": [{"kind": "GPU", "count": 2}, {"kind": "GPU", "count": 3, "gpus": [0]}],
      "resources": {"gpu_memory": {"activation_per_item": "64MiB"}}},
     {"instances": [{"kind": "GPU", "count": 2, "gpus": [0]},
                    {"kind": "GPU", "count": 2, "gpus": [1]}],
      "resources": {"gpu_memory": {"activation_per_item": "64MiB"}}},
     "5 instance(s)"),
    ("envelope-memory-fit",
     {"hardware": {"gpu_models": ["T4", "A100-80GB"]}, "instances": [{"count": 9}]},
     {"hardware": {"gpu_models": ["A100-80GB"]}, "instances": [{"count": 9}]},
     "16GiB"),
    ("envelope-queue-delay-exceeds-slo",
     {"batching": {"dynamic": {"max_queue_delay": "50ms"}}},
     {"batching": {"dynamic": {"max_queue_delay": "10ms"}}},
     "not below the p99"),
    ("envelope-queue-delay-large",
     {"batching": {"dynamic": {"max_queue_delay": "10001us"}}},
     {"batching": {"dynamic": {"max_queue_delay": "10ms"}}},
     "of the p99 SLO"),
    ("envelope-preferred-batch-size",
     {"batching": {"dynamic": {"preferred_batch_sizes": [16, 64]}}},
     {"batching": {"dynamic": {"preferred_batch_sizes": [16, 32]}}},
     "exceeds max_batch_size 32"),
    ("envelope-preferred-batch-size",
     {"batching": {"dynamic": {"preferred_batch_sizes": [0]}}},
     {"batching": {"dynamic": {"preferred_batch_sizes": [1]}}},
     "at least 1"),
    ("envelope-image-unpinned",
     {"runtime": {"image": "nvcr.io/nvidia/tritonserver:24.08-py3"}},
     {"runtime": {"image": "nvcr.io/nvidia/tritonserver:24.08-py3",
                  "allow_unpinned_image": True}},
     "not pinned by digest"),
    ("envelope-image-unpinned",
     {"runtime": {"image": "nvcr.io/nvidia/tritonserver@sha256:abc"}},
     {"runtime": {"image": "nvcr.io/nvidia/tritonserver@sha256:" + "0123456789abcdef" * 4}},
     "malformed digest"),
    ("envelope-input-max-dims",
     {"inputs": [{"name": "TEXT", "data_type": "INT64", "dims": [3, -1]}]},
     {"inputs": [{"name": "TEXT", "data_type": "INT64", "dims": [3, -1], "max_dims": [3, 64]}]},
     "no max_dims"),
    ("envelope-render",
     {"passthrough": {"maxBatchSize": 8}},
     {"passthrough": {"responseCache": {"enable": True}}},
     "the envelope models"),
    ("envelope-render",
     {"passthrough": {"modelWarmup": [{"nmae": "w"}]}},
     {"passthrough": {"modelWarmup": [{"name": "w", "batchSize": 1}]}},
     "not a valid ModelConfig part"),
    ("envelope-render",
     {"outputs": [{"name": "PROBS", "data_type": "FP32", "dims": [3], "optional": True}]},
     {"inputs": [{"name": "TEXT", "data_type": "INT64", "dims": [-1], "max_dims": [128],
                  "optional": True}]},
     "inputs only"),
]


@pytest.mark.parametrize(("rule", "bad", "good", "text"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_rule_fails_and_passes(write_envelope: Callable[..., Path], rule: str,
                               bad: dict[str, Any], good: dict[str, Any], text: str) -> None:
    findings = run(write_envelope(bad, model_dir=False), repo=None)
    hits = [f for f in findings if f.rule == rule]
    assert hits, findings
    assert text in hits[0].message
    assert hits[0].severity is RULES[rule].severity
    assert hits[0].line > 0  # located in the YAML
    assert rule not in rules_of(run(write_envelope(good, model_dir=False), repo=None))


def test_queue_delay_thresholds_are_20_percent_and_the_slo(
        write_envelope: Callable[..., Path]) -> None:
    def severities(delay: str) -> set[tuple[str, Severity]]:
        path = write_envelope({"batching": {"dynamic": {"max_queue_delay": delay}}},
                              model_dir=False)
        return {(f.rule, f.severity) for f in run(path, repo=None)}

    assert severities("10ms") == set()  # exactly 20% of 50ms is fine
    assert severities("49ms") == {("envelope-queue-delay-large", Severity.WARNING)}
    assert severities("50ms") == {("envelope-queue-delay-exceeds-slo", Severity.ERROR)}


def test_finding_points_at_the_offending_line(write_envelope: Callable[..., Path]) -> None:
    path = write_envelope({"batching": {"dynamic": {"preferred_batch_sizes": [8, 99]}}},
                          model_dir=False)
    finding = next(f for f in run(path, repo=None) if f.rule == "envelope-preferred-batch-size")
    line = path.read_text().splitlines()[finding.line - 1]
    assert "99" in line


def test_instances_per_gpu_counts_gpu_lists() -> None:
    def env(instances: list[dict[str, Any]]) -> Envelope:
        return Envelope.model_validate({"name": "m", "backend": "python",
                                        "instances": instances})

    assert instances_per_gpu(env([])) == 1
    assert instances_per_gpu(env([{"kind": "CPU", "count": 4}])) is None
    assert instances_per_gpu(env([{"count": 2, "gpus": [0, 1]}])) == 2
    assert instances_per_gpu(env([{"count": 2, "gpus": [0]}, {"count": 3, "gpus": [1]}])) == 3
    assert instances_per_gpu(env([{"count": 1}, {"count": 2, "gpus": [1]},
                                  {"kind": "CPU", "count": 9}])) == 3


def test_name_must_match_file(write_envelope: Callable[..., Path]) -> None:
    path = write_envelope(model_dir=False)
    other = path.with_name("other.yaml")
    path.rename(other)
    assert "envelope-name-file" in rules_of(run(other, repo=None))


# --- rules comparing the envelope with its model folder --------------------------------------

def test_model_folder_missing(write_envelope: Callable[..., Path], tmp_path: Path) -> None:
    (tmp_path / "model_repository").mkdir()
    path = write_envelope(model_dir=False)
    assert rules_of(run(path)) == {"envelope-model-folder-missing"}


def test_config_drift_names_generate(write_envelope: Callable[..., Path],
                                     tmp_path: Path) -> None:
    path = write_envelope()
    config = tmp_path / "model_repository" / "clf" / "config.pbtxt"
    config.write_text(config.read_text().replace("max_batch_size: 32", "max_batch_size: 16"))
    findings = run(path)
    drift = [f for f in findings if f.rule == "envelope-config-drift"]
    assert len(drift) == 1 and "triton-ops generate" in drift[0].message
    assert "max_batch_size" in drift[0].message
    assert path.read_text().splitlines()[drift[0].line - 1].strip().startswith("max_batch_size")


def test_config_missing_or_unparsable(write_envelope: Callable[..., Path],
                                      tmp_path: Path) -> None:
    path = write_envelope()
    config = tmp_path / "model_repository" / "clf" / "config.pbtxt"
    config.write_text("max_batch_size: [oops\n")
    assert "cannot be parsed" in next(f.message for f in run(path)
                                      if f.rule == "envelope-config-drift")
    config.unlink()
    assert "is missing" in next(f.message for f in run(path)
                                if f.rule == "envelope-config-drift")


def test_hand_formatted_config_is_a_warning(write_envelope: Callable[..., Path],
                                            tmp_path: Path) -> None:
    path = write_envelope()
    config = tmp_path / "model_repository" / "clf" / "config.pbtxt"
    config.write_text("# edited by hand\n" + config.read_text())
    findings = run(path)
    assert [(f.rule, f.severity) for f in findings] == [
        ("envelope-config-format", Severity.WARNING)]


def test_version_folder_missing(write_envelope: Callable[..., Path], tmp_path: Path) -> None:
    path = write_envelope({"versions": [1, 2]})
    import shutil
    shutil.rmtree(tmp_path / "model_repository" / "clf" / "2")
    findings = [f for f in run(path) if f.rule == "envelope-version-folder-missing"]
    assert len(findings) == 1 and "clf/2/" in findings[0].message
    path = write_envelope({"versions": [1, 2]})
    assert run(path) == []


def test_model_file_missing(write_envelope: Callable[..., Path], tmp_path: Path) -> None:
    path = write_envelope()
    model_py = tmp_path / "model_repository" / "clf" / "1" / "model.py"
    model_py.unlink()
    findings = [f for f in run(path) if f.rule == "envelope-model-file-missing"]
    assert len(findings) == 1 and "model.py" in findings[0].message
    model_py.write_text("# model\n")
    assert run(path) == []


def test_model_file_follows_default_model_filename(write_envelope: Callable[..., Path]) -> None:
    path = write_envelope({"default_model_filename": "clf.py"})
    assert "envelope-model-file-missing" in rules_of(run(path))
