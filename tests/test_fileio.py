"""Atomic writes keep the target's permission bits and name the file when they fail."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from triton_ops.fileio import WriteError, atomic_write_text


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_existing_file_keeps_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "config.pbtxt"
    target.write_text("old\n")
    target.chmod(0o644)
    atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n"
    assert _mode(target) == 0o644
    target.chmod(0o640)
    atomic_write_text(target, "newer\n")
    assert _mode(target) == 0o640


def test_new_file_gets_the_umask_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a" / "best.json", "{}\n")
        os.umask(0o027)
        atomic_write_text(tmp_path / "b.json", "{}\n")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a" / "best.json") == 0o644
    assert _mode(tmp_path / "b.json") == 0o640
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_failure_names_the_file_not_the_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(WriteError) as err:
        atomic_write_text(blocker / "values.yaml", "x: 1\n")
    assert str(blocker / "values.yaml") in str(err.value)


def test_failure_says_which_folder_is_not_a_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    for target in (blocker / "values.yaml", blocker / "deeper" / "values.yaml"):
        with pytest.raises(WriteError) as err:
            atomic_write_text(target, "x: 1\n")
        assert str(err.value) == f"cannot write {target}: {blocker} is not a folder"
    assert blocker.read_text() == ""
