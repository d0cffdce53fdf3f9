"""The pieces every command shares: parsers, envelope loading, the rollout status printer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from pydantic import ValidationError

from triton_ops.cli.common import (
    load_envelope,
    parse_duration_s,
    parse_int_list,
    show_status,
)
from triton_ops.rollout.analysis import AnalysisPolicy
from triton_ops.rollout.state import Phase, RolloutSpec, new_state
from triton_ops.rollout.store import StateStore

REPO_ROOT = Path(__file__).resolve().parents[2]


def exit_code(excinfo: pytest.ExceptionInfo[typer.Exit]) -> int:
    return excinfo.value.exit_code


def test_durations_are_seconds_and_a_bare_number_means_seconds() -> None:
    assert parse_duration_s("2m", "--interval") == 120.0
    assert parse_duration_s("500ms", "--interval") == 0.5
    assert parse_duration_s("1.5", "--interval") == 1.5
    assert parse_duration_s("0s", "--scrape-lag", allow_zero=True) == 0.0


def test_bad_durations_exit_2_naming_the_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as excinfo:
        parse_duration_s("soon", "--interval")
    assert exit_code(excinfo) == 2
    assert "--interval 'soon'" in capsys.readouterr().err
    with pytest.raises(typer.Exit):
        parse_duration_s("0s", "--timeout")
    assert "--timeout must be positive" in capsys.readouterr().err


def test_integer_lists(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_int_list("10, 25,50,100", "--steps") == [10, 25, 50, 100]
    for text, message in (("10,x", "comma-separated integers"), (",", "--steps is empty")):
        with pytest.raises(typer.Exit) as excinfo:
            parse_int_list(text, "--steps")
        assert exit_code(excinfo) == 2
        assert message in capsys.readouterr().err


def test_envelope_from_the_folder_the_file_or_the_fallback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    envelopes = REPO_ROOT / "envelopes"
    assert load_envelope("dense_mlp", None, envelopes).name == "dense_mlp"
    assert load_envelope("other", envelopes / "dense_mlp.yaml", tmp_path).name == "dense_mlp"
    sealed = load_envelope("dense_mlp", None, envelopes)
    assert load_envelope("nope", None, tmp_path, fallback=lambda: sealed) is sealed
    with pytest.raises(typer.Exit) as excinfo:
        load_envelope("nope", None, tmp_path, fallback=lambda: None)
    assert exit_code(excinfo) == 2
    assert f"put it in {tmp_path}/nope.yaml" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("name: bad\nbatching: {max_batch_size: lots}\n")
    with pytest.raises(typer.Exit):
        load_envelope("bad", None, tmp_path)
    err = capsys.readouterr().err
    assert "the envelope of bad is invalid" in err and f"{tmp_path}/bad.yaml:2:" in err


def progressing_store(path: Path) -> StateStore:
    store = StateStore(path)
    spec = RolloutSpec(model="m", stable=[1], canary=2, steps=[50, 100], interval_s=30,
                       policy=AnalysisPolicy())
    state = new_state(spec, 0.0).model_copy(update={
        "phase": Phase.PROGRESSING, "weight": 50, "windows": 3, "failures": 1,
        "reason": "step 1 passed"})
    store.save(state)
    store.append_audit({"event": "canary-loaded", "phase": "Progressing", "weight": 50,
                        "reason": "version 2 loaded next to [1]"})
    store.append_audit({"event": "rollback", "reason": "manual rollback [2] -> [1]"})
    return store


def test_status_names_the_store_the_steps_and_how_to_resume_on_this_target(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = progressing_store(tmp_path / "state")
    show_status("m", store, last=5, output_format="rich", commands="triton-ops k8s")
    out = capsys.readouterr().out
    assert f"m: version 2 over stable [1] ({store.directory})" in out
    assert "NOT DRIVEN: run `triton-ops k8s resume m`" in out
    assert "at weight 50% (steps [50, 100], 30s windows)" in out
    assert "3 analyzed, 1 failed (limit 2)" in out
    assert "Progressing   50% version 2 loaded next to [1]" in out
    # A record the engine did not write (a manual rollback) shows its event, no weight.
    assert "rollback          manual rollback [2] -> [1]" in out


def test_status_as_json_and_when_none_is_recorded(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = progressing_store(tmp_path / "state")
    show_status("m", store, last=1, output_format="json", commands="triton-ops rollout")
    data = json.loads(capsys.readouterr().out)
    assert data["state"]["phase"] == "Progressing" and data["driven"] is False
    assert data["owner"] is None and data["serving"] == [1, 2]
    assert [r["event"] for r in data["audit"]] == ["rollback"]
    with pytest.raises(typer.Exit) as excinfo:
        show_status("m", StateStore(tmp_path / "empty"), last=5, output_format="rich",
                    commands="triton-ops rollout")
    assert exit_code(excinfo) == 1
    assert "no rollout of m recorded in" in capsys.readouterr().err


def test_a_rollout_spec_error_of_the_whole_spec_has_no_empty_field_name() -> None:
    """A rule across fields (canary already among stable) belongs to no field: the message is
    the rule's own text, not ': Value error, ...'."""
    from triton_ops.rollout.state import first_validation_error

    with pytest.raises(ValidationError) as err:
        RolloutSpec(model="m", stable=[1], canary=1, steps=[10, 100], interval_s=1.0)
    assert first_validation_error(err.value) == "version 1 already serves as stable"
