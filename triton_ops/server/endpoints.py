"""Where a Triton server answers: a remote one given by URL, or the embedded one started here."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from triton_ops.server.ports import PORT_MAX, PORT_MIN, check_port

if TYPE_CHECKING:
    from triton_ops.server.local import LocalTriton

DEFAULT_HTTP_PORT = 8000
DEFAULT_GRPC_PORT = 8001
DEFAULT_METRICS_PORT = 8002


@dataclass
class TritonEndpoints:
    """The URLs of one Triton server.

    grpc_url / http_url are "host:port" (the form tritonclient takes); metrics_url is a full
    http URL of the Prometheus endpoint. `embedded` is True when triton-ops started it.
    """

    grpc_url: str
    http_url: str | None
    metrics_url: str | None
    embedded: bool
    # The embedded server itself (for check_alive / log_tail), None for a remote one.
    local: LocalTriton | None = field(default=None, repr=False, compare=False)


# Host names and IPv4 addresses as DNS and gRPC resolve them (IPv6 goes in brackets).
_HOST_NAME = re.compile(r"[A-Za-z0-9._-]+")
_USE = "use HOST:PORT, e.g. 127.0.0.1:8001"


def normalise_host_port(url: str, default_port: int) -> str:
    """'grpc://host:port', 'http://host', 'host:port', '[::1]:port' or 'host' -> 'host:port'.

    ValueError saying what is wrong for anything that names no server: a port outside
    1-65535 or not a number, no host, a host that is neither a name nor an IP address, an
    IPv6 address without brackets, a path, query or user name.
    """
    text = url.strip()
    if not text:
        raise ValueError(f"empty server URL; {_USE}")

    def bad(why: str) -> ValueError:
        return ValueError(f"server URL {url!r}: {why}; {_USE}")

    try:
        parts = urlsplit(text if "://" in text else f"//{text}")
    except ValueError as exc:  # an unclosed [
        raise bad(str(exc)) from None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise bad("a server URL has no path")
    netloc = parts.netloc
    if "@" in netloc:
        raise bad("no user name")
    if netloc.count(":") > 1 and not netloc.startswith("["):
        raise bad("put an IPv6 address in brackets, e.g. [::1]:8001")
    if netloc.endswith("]") or ":" not in netloc:
        host, colon, port_text = netloc, "", ""
    else:
        host, colon, port_text = netloc.rpartition(":")
    if not host:
        raise bad("no host")
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise bad(f"{host} is not an IPv6 address") from None
    elif not _HOST_NAME.fullmatch(host):
        raise bad(f"{host!r} is not a host name or IP address")
    if colon and not port_text:
        raise bad("no port after ':'")
    port = default_port
    if port_text:
        digits = port_text.isascii() and port_text.isdigit()  # int() takes " 1", "+1", "1_0"
        try:
            port = check_port(int(port_text) if digits else -1)
        except ValueError:
            raise bad(f"bad port {port_text!r} (a TCP port is {PORT_MIN}-{PORT_MAX})") \
                from None
    return f"{host.lower()}:{port}"


def remote_endpoints(
    url: str, *, http_url: str | None = None, metrics_url: str | None = None
) -> TritonEndpoints:
    """Endpoints of a running server. HTTP and metrics default to ports 8000/8002 on its host."""
    grpc = normalise_host_port(url, DEFAULT_GRPC_PORT)
    host = grpc.rsplit(":", 1)[0]
    if http_url:
        http = normalise_host_port(http_url, DEFAULT_HTTP_PORT)
    else:
        http = f"{host}:{DEFAULT_HTTP_PORT}"
    if metrics_url:
        metrics = metrics_url if "://" in metrics_url else f"http://{metrics_url}"
        if urlsplit(metrics).path in ("", "/"):
            metrics = metrics.rstrip("/") + "/metrics"
    else:
        metrics = f"http://{host}:{DEFAULT_METRICS_PORT}/metrics"
    return TritonEndpoints(grpc_url=grpc, http_url=http, metrics_url=metrics, embedded=False)


@contextmanager
def open_server(
    url: str | None,
    repository: Path | str,
    models: Sequence[str],
    *,
    http_url: str | None = None,
    metrics_url: str | None = None,
    startup_timeout_s: float = 120.0,
) -> Iterator[TritonEndpoints]:
    """Yield the endpoints of the server at `url`, or of an embedded server started here.

    With no `url`, a LocalTriton is started on `repository` with `models` loaded and is
    stopped when the block ends (raising ServerError with the server log if it cannot start).
    """
    if url:
        yield remote_endpoints(url, http_url=http_url, metrics_url=metrics_url)
        return
    from triton_ops.server.local import LocalTriton

    with LocalTriton(
        repository, models=models, startup_timeout_s=startup_timeout_s, keep_log=False
    ) as server:
        yield TritonEndpoints(
            grpc_url=server.grpc_url,
            http_url=server.http_url,
            metrics_url=server.metrics_url,
            embedded=True,
            local=server,
        )


def model_states(http_url: str, timeout_s: float = 10.0) -> list[dict[str, str]]:
    """The repository index of a server: name, version, state (READY, UNAVAILABLE...), reason."""
    import json
    import urllib.request

    request = urllib.request.Request(
        f"http://{http_url}/v2/repository/index", data=b"{}", method="POST",
        headers={"Content-Type": "application/json"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=timeout_s) as response:
        return list(json.loads(response.read() or b"[]"))


_INT32_MAX = 2**31 - 1  # tritonclient's MAX_GRPC_MESSAGE_SIZE


def is_loopback(url: str) -> bool:
    """Whether a server URL ("host:port", "grpc://host", "[::1]:8001") names this machine."""
    text = url.strip()
    if text.count(":") > 1 and not text.startswith("[") and "://" not in text:
        text = f"[{text}]"  # a bare IPv6 address
    host = urlsplit(text if "://" in text else f"//{text}").hostname or ""
    return host == "localhost" or host.startswith("127.") or host == "::1"


def grpc_channel_args(url: str) -> list[tuple[str, int]] | None:
    """channel_args for tritonclient.grpc clients of `url` (pass as channel_args=...).

    For a loopback server (the embedded one) gRPC must not go through an http_proxy set in
    the environment, which it otherwise honours even for 127.0.0.1. The message limits are
    repeated because tritonclient drops its defaults when channel_args is given.
    """
    if not is_loopback(url):
        return None
    return [
        ("grpc.max_send_message_length", _INT32_MAX),
        ("grpc.max_receive_message_length", _INT32_MAX),
        ("grpc.enable_http_proxy", 0),
    ]
