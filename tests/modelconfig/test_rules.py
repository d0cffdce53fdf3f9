"""Every rule: a config that breaks it is reported at the right line, a close variant is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from triton_ops.findings import Severity
from triton_ops.modelconfig.autocomplete import ModelFiles
from triton_ops.modelconfig.rules import RULES, check_config_file, check_config_text

from .test_rules_cases import CASES, Case, ens, io_in, py

DATA = Path(__file__).parent / "data"


def test_every_rule_has_a_case() -> None:
    assert {c.rule for c in CASES} == set(RULES)


def test_rules_are_documented() -> None:
    for rule in RULES.values():
        assert rule.id.startswith("config-")
        assert rule.doc and rule.source
        assert rule.severity in (Severity.ERROR, Severity.WARNING)


# The cases are checked in the model folder the differential test against Triton loads them
# from: version 1 holding a model.py without auto_complete_config.
FILES = ModelFiles("m", "1", {"model.py": False}, python_autocomplete=False)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.rule)
def test_rule_fires_on_bad_config(case: Case) -> None:
    config, _, findings = check_config_text(case.bad, "config.pbtxt", FILES)
    assert config is not None, findings
    hits = [f for f in findings if f.rule == case.rule]
    assert hits, f"{case.rule} not reported; got {[(f.rule, f.message) for f in findings]}"
    assert all(f.severity is RULES[case.rule].severity for f in hits)
    assert all(f.message for f in hits)
    if case.line is not None:
        assert hits[0].line == case.line, hits[0]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.rule)
def test_rule_quiet_on_good_config(case: Case) -> None:
    config, _, findings = check_config_text(case.good, "config.pbtxt", FILES)
    assert config is not None, findings
    assert [f for f in findings if f.rule == case.rule] == []
    assert [f for f in findings if f.severity is Severity.ERROR] == []


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.pbtxt")))
def test_realistic_configs_are_clean(name: str) -> None:
    result = check_config_file(DATA / name)
    assert result.findings == []
    assert result.files_checked == 1


def test_finding_points_at_offending_element() -> None:
    text = py("dynamic_batching {\n  preferred_batch_size: [ 4,\n    16 ]\n}")
    findings = check_config_text(text, "c.pbtxt")[2]
    hit = next(f for f in findings if f.rule == "config-dynamic-preferred-size")
    assert (hit.line, hit.column) == (8, 5)
    assert "16" in hit.message and "max_batch_size 8" in hit.message


def test_priority_policy_finding_points_at_map_entry() -> None:
    text = py("dynamic_batching {\n  priority_levels: 2\n  default_priority_level: 1\n"
              "  priority_queue_policy {\n    key: 5\n    value { max_queue_size: 1 }\n  }\n}")
    hit = next(f for f in check_config_text(text, "c.pbtxt")[2]
               if f.rule == "config-dynamic-priority-policy-level")
    assert hit.line == 9


def test_reshape_rules_follow_triton_chunks() -> None:
    # From Triton's ValidateIOShape comment: [2, 4, -1, 6] -> [8, -1, 1, 6] is valid.
    spec = ('input [ {{ name: "IN" data_type: TYPE_FP32 dims: {d} reshape {{ shape: {s} }} }} ]\n'
            'output [ {{ name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] }} ]\n')
    ok = py("", io=spec.format(d="[ 2, 4, -1, 6 ]", s="[ 8, -1, 1, 6 ]"))
    assert check_config_text(ok, "c")[2] == []
    bad_count = py("", io=spec.format(d="[ -1, 2 ]", s="[ -1, -1 ]"))
    assert "variable-size" in check_config_text(bad_count, "c")[2][0].message
    scalar_bad = py("", io=spec.format(d="[ 2 ]", s="[ ]"))
    assert check_config_text(scalar_bad, "c")[2][0].rule == "config-io-reshape-mismatch"


def test_ensemble_cycle_is_named() -> None:
    steps = ('{ model_name: "a" input_map { key: "x" value: "IN" } input_map { key: "z" '
             'value: "LOOP" } output_map { key: "y" value: "MID" } }, { model_name: "b" '
             'input_map { key: "x" value: "MID" } output_map { key: "y" value: "LOOP" } '
             'output_map { key: "w" value: "OUT" } }')
    messages = [f.message for f in check_config_text(ens(steps=steps), "c")[2]]
    assert any("cycle" in m and "LOOP" in m for m in messages), messages


def test_ensemble_unused_input_and_unwritten_output() -> None:
    io = ('input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "EXTRA" '
          'data_type: TYPE_FP32 dims: [ 4 ] } ]\noutput [ { name: "OUT" data_type: TYPE_FP32 '
          'dims: [ 4 ] }, { name: "MISSING" data_type: TYPE_FP32 dims: [ 4 ] } ]\n')
    findings = check_config_text(ens(io=io), "c")[2]
    text = " ".join(f.message for f in findings)
    assert "'EXTRA' is not used" in text and "'MISSING' is not written" in text


def test_rule_crash_becomes_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    def boom(_config):  # a broken rule must not hide the others
        raise ValueError("boom")
        yield

    monkeypatch.setitem(RULES, "config-name-missing",
                        replace(RULES["config-name-missing"], check=boom))
    findings = check_config_text(py("", mbs=-1), "c")[2]
    assert {f.rule for f in findings} == {"config-name-missing", "config-max-batch-size-negative"}


def test_docs_list_every_rule() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "rules.md").read_text()
    missing = [rule_id for rule_id in RULES if f"`{rule_id}`" not in doc]
    assert missing == []


UNKNOWN_ENUMS = [
    py("", io=io_in('{ name: "IN" data_type: 99 dims: [ 4 ] }')),
    py("", io=io_in('{ name: "IN" data_type: TYPE_FP32 format: 9 dims: [ 4 ] }')),
    py("instance_group [ { kind: 42 gpus: [ 0 ] } ]"),
    py('dynamic_batching { }\nbatch_input [ { kind: 17 target_name: "N" data_type: 99 '
       'source_input: "IN" } ]'),
    py('batch_output [ { kind: 5 target_name: [ "OUT" ] source_input: "IN" } ]'),
    py("dynamic_batching { default_queue_policy { timeout_action: 7 } }"),
    py('sequence_batching { control_input [ { name: "S" control [ { kind: 9 '
       'int32_false_true: [ 0, 1 ] } ] }, { name: "C" control [ { kind: '
       'CONTROL_SEQUENCE_CORRID data_type: 99 } ] } ] }'),
    py('model_warmup [ { name: "w" batch_size: 1 inputs { key: "IN" value { '
       'data_type: 99 dims: [ 4 ] zero_data: true } } } ]'),
    ens(io=io_in('{ name: "IN" data_type: 99 dims: [ 4 ] }')),
]


@pytest.mark.parametrize("text", UNKNOWN_ENUMS)
def test_enum_numbers_triton_does_not_define_break_no_rule(text: str) -> None:
    config, _, findings = check_config_text(text, "config.pbtxt")
    assert config is not None, findings
    assert not [f for f in findings if "internal error" in f.message], findings
    unknown = [f for f in findings
               if f.rule in ("config-enum-unknown", "config-instance-kind-unknown",
                             "config-batch-kind-unknown")]
    assert unknown, findings
    assert all("no value Triton defines" in f.message for f in unknown)
