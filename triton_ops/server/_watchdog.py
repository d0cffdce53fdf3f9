"""Stopping a tritonserver process group cleanly, and the watchdog that does it if the starter dies.

Run as a script (`python -I -S _watchdog.py FD PID START GRACE`) it is the watchdog: a tiny
process in its own session holding the read end of a pipe whose write end only the starting
process holds. EOF without the "q" byte means the starter died, however it died (SIGKILL
included): the watchdog then stops the server's process group. Stdlib only: it runs with -I -S.

Stopping a group: SIGTERM (Triton unloads its models, its Python-backend stubs exit and the
shared-memory regions in /dev/shm are removed), SIGKILL whatever is left after the grace time,
then unlink the stubs' shared-memory regions that a killed server could not remove.
"""

from __future__ import annotations

import os
import signal
import sys
import time

SHM_PREFIX = "triton_python_backend_shm_region_"


def proc_start_time(pid: int) -> str | None:
    """The start time of `pid` from /proc, None if it is gone or a zombie (dead already)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def group_members(pgid: int) -> list[int]:
    """Live processes whose process group is `pgid`."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def shm_regions(pids: list[int]) -> set[str]:
    """The Python-backend shared-memory regions named on the stubs' command lines."""
    regions = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        for arg in args:
            text = arg.decode("utf-8", "replace")
            if text.startswith(SHM_PREFIX) and "/" not in text:
                regions.add(text)
    return regions


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except OSError:
        pass


def unlink_regions(regions: set[str]) -> None:
    for name in regions:
        try:
            os.unlink(os.path.join("/dev/shm", name))
        except OSError:
            pass


def stop_group(pgid: int, start: str | None, grace_s: float) -> None:
    """SIGTERM the group led by `pgid` (if its leader is still the process started at
    `start`), SIGKILL what is left after `grace_s`, and remove leaked shared memory."""
    regions = shm_regions(group_members(pgid))
    if start is not None and proc_start_time(pgid) == start:
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and proc_start_time(pgid) == start:
            time.sleep(0.05)
    # The group id cannot be reused while any member remains, so this only hits the server
    # after its grace time or stubs whose server already died.
    _signal_group(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and group_members(pgid):
        time.sleep(0.05)
    unlink_regions(regions)


def main(argv: list[str]) -> None:
    fd, pid, start, grace = int(argv[1]), int(argv[2]), argv[3], float(argv[4])
    try:
        data = os.read(fd, 1)
    except OSError:
        data = b""
    if data == b"":
        stop_group(pid, start, grace)


if __name__ == "__main__":
    main(sys.argv)
