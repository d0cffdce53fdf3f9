"""Where a Triton server answers: a remote one given by URL, or the embedded one started here."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

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


def normalise_host_port(url: str, default_port: int) -> str:
    """'grpc://host:port', 'http://host', 'host:port' or 'host' -> 'host:port'."""
    text = url.strip()
    if not text:
        raise ValueError("empty server URL")
    parts = urlsplit(text if "://" in text else f"//{text}")
    if not parts.hostname:
        raise ValueError(f"cannot read a host from server URL {url!r}; use HOST:PORT")
    try:
        port = parts.port or default_port
    except ValueError as exc:
        raise ValueError(f"bad port in server URL {url!r}: {exc}") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}"


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
