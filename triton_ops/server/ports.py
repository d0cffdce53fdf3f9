"""The one check of every TCP port triton-ops is given: `serve`'s port options, LocalTriton's
fixed ports, the port of a server URL."""

from __future__ import annotations

PORT_MIN, PORT_MAX = 1, 65535


def check_port(port: int, what: str = "port") -> int:
    """`port` when a server can listen on it (1-65535); ValueError naming `what` otherwise."""
    if isinstance(port, bool) or not isinstance(port, int) or not PORT_MIN <= port <= PORT_MAX:
        raise ValueError(f"{what} {port!r} is not a TCP port: use {PORT_MIN}-{PORT_MAX}")
    return port
