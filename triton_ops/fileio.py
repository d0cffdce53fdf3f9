"""Atomic file writes shared by every command that writes a file the user owns.

Readers see the old content or the new, never half of it: the text goes to a temporary file
in the same folder, is flushed to disk, and replaces the target with one rename. The target
keeps its permission bits (a 0644 config.pbtxt stays 0644); a new file gets the mode the
process umask gives a plain `open()`, not mkstemp's private 0600.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path


class WriteError(OSError):
    """A file could not be written; the message names the file and the reason."""

    def __str__(self) -> str:
        return str(self.strerror)


def os_error_reason(path: Path | str, exc: OSError) -> str:
    """Why reading or writing `path` failed, for people: the OS's reason, or, when a file
    stands where a folder of the path should be, which file that is."""
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        blocker = next((p for p in Path(path).parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            return f"{blocker} is not a folder"
    return exc.strerror or str(exc)


def write_error(path: Path | str, exc: OSError) -> WriteError:
    """The WriteError for `exc`, raised while writing `path`: it names `path`, not the
    temporary file or the folder the OS names."""
    return WriteError(exc.errno, f"cannot write {path}: {os_error_reason(path, exc)}")


def _umask_mode() -> int:
    # os.umask can only be read by setting it; set it back at once.
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _target_mode(path: Path) -> int:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return _umask_mode()


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not every filesystem allows it, hence the suppress.
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write_text(path: Path | str, text: str) -> None:
    """Replace `path` with `text` (UTF-8, "\\n" line ends) in one rename.

    Raises WriteError naming `path` when the folder cannot be created or written.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = _target_mode(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc) from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise write_error(path, exc) from exc
        raise
    _fsync_dir(path.parent)
