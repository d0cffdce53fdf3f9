#!/usr/bin/env python3
"""In-pod helper of the triton-ops Helm chart: starts Triton serving the pinned versions and
proves readiness with a real inference of each model's golden probe.

Standard library only: it runs with the python3 of the Triton image (which the Python
backend needs anyway). The chart mounts it from a ConfigMap; triton-ops tests run the very
same file against a real tritonserver.

  triton_pod.py serve -- tritonserver --model-control-mode=explicit ...
      start Triton, then load every model of $TRITON_OPS_VERSIONS (JSON {"model": [1, 2]})
      with a version_policy of exactly those versions; forward SIGTERM/SIGINT; exit with
      Triton's status.
  triton_pod.py ready
      infer each model version once with the golden probe of $TRITON_OPS_PROBES (a JSON
      file) and compare outputs within tolerance; exit 0 only if every answer is right.

Every request carries the header $TRITON_OPS_API_HEADER: $TRITON_OPS_API_KEY when both are
set: the chart starts Triton with its model-repository and other non-inference APIs
restricted to that header, and only this pod knows the key.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

HTTP_URL = os.environ.get("TRITON_OPS_HTTP_URL", "http://127.0.0.1:8000")
PROBES_FILE = os.environ.get("TRITON_OPS_PROBES", "/etc/triton-ops/probes.json")
TIMEOUT_S = float(os.environ.get("TRITON_OPS_REQUEST_TIMEOUT_S", "30"))
# Written by `serve` once exactly the wanted versions are loaded; `ready` needs it, so a pod
# is never ready while its first load still serves other versions (and unversioned requests
# would go to the highest one).
LOADED_MARKER = os.environ.get("TRITON_OPS_LOADED_MARKER", "/tmp/triton-ops-loaded")
API_HEADER = os.environ.get("TRITON_OPS_API_HEADER", "")
API_KEY = os.environ.get("TRITON_OPS_API_KEY", "")


class PodError(Exception):
    """A failure with a message meant for `kubectl logs` / `kubectl describe pod`."""


def _request(method: str, path: str, body: Any = None, timeout: float = TIMEOUT_S) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if API_HEADER and API_KEY:
        headers[API_HEADER] = API_KEY
    req = urllib.request.Request(HTTP_URL + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        try:
            detail = json.loads(detail).get("error", detail)
        except ValueError:
            pass
        raise PodError(f"{method} {path}: HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise PodError(f"{method} {path}: {getattr(exc, 'reason', exc)}") from None
    return json.loads(raw) if raw else None


def wanted_versions() -> dict[str, list[int]]:
    raw = os.environ.get("TRITON_OPS_VERSIONS", "").strip()
    if not raw:
        raise PodError("TRITON_OPS_VERSIONS is not set: expected JSON such as {\"model\": [1]}")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise PodError(f"TRITON_OPS_VERSIONS is not JSON ({exc}): {raw!r}") from None
    if not isinstance(data, dict) or not all(
        isinstance(v, list) and v and all(isinstance(i, int) and i > 0 for i in v)
        for v in data.values()
    ):
        raise PodError(f"TRITON_OPS_VERSIONS must map model names to version lists: {raw!r}")
    return {str(k): sorted(v) for k, v in data.items()}


def wait_live(deadline_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise PodError(f"tritonserver exited with status {proc.returncode} before it was live")
        try:
            _request("GET", "/v2/health/live", timeout=2)
            return
        except PodError:
            time.sleep(0.2)
    raise PodError(f"tritonserver was not live after {deadline_s:.0f} s")


def load_versions(model: str, versions: list[int]) -> None:
    """Load `model` serving exactly `versions` (explicit model control)."""
    _request("POST", f"/v2/repository/models/{model}/load", {})
    config = _request("GET", f"/v2/models/{model}/config")
    policy = {"specific": {"versions": versions}}
    if config.get("version_policy") != policy:
        config["version_policy"] = policy
        _request("POST", f"/v2/repository/models/{model}/load",
                 {"parameters": {"config": json.dumps(config)}})
    for version in versions:
        try:
            _request("GET", f"/v2/models/{model}/versions/{version}/ready")
        except PodError as exc:
            raise PodError(f"model {model} version {version} is not ready after loading "
                           f"(is it in the model repository?): {exc}") from None


def serve(argv: list[str]) -> int:
    if not argv:
        raise PodError("usage: triton_pod.py serve -- tritonserver ARGS...")
    versions = wanted_versions()
    if os.path.exists(LOADED_MARKER):
        os.unlink(LOADED_MARKER)
    proc = subprocess.Popen(argv)  # noqa: S603 - the chart's own command line

    def forward(signum: int, _frame: object) -> None:
        if proc.poll() is None:
            proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        wait_live(float(os.environ.get("TRITON_OPS_LIVE_TIMEOUT_S", "600")), proc)
        for model, model_versions in versions.items():
            print(f"triton-ops: loading {model} versions {model_versions}", flush=True)
            load_versions(model, model_versions)
        with open(LOADED_MARKER + ".tmp", "w", encoding="utf-8") as fh:
            json.dump(versions, fh)
        os.replace(LOADED_MARKER + ".tmp", LOADED_MARKER)
        print("triton-ops: all models loaded", flush=True)
    except PodError as exc:
        print(f"triton-ops: {exc}", file=sys.stderr, flush=True)
        forward(signal.SIGTERM, None)
        proc.wait()
        return 1
    return proc.wait()


# The comparison of triton_ops.tensors.describe_difference, in the standard library, on the
# KServe v2 JSON the server answers (flat data, the datatype the server reports): integer,
# bool and string outputs exactly, floats within atol + rtol * |expected| as numpy.isclose
# does, NaN matching only NaN; expected floats are first rounded to the output's type, as
# triton-ops types them. tests/k8s/test_pod_comparison.py holds the two to the same verdicts
# and messages.
_FLOAT_TYPES = {"FP16": "e", "FP32": "f", "BF16": "f", "FP64": ""}  # struct format to round


def _kind(datatype: Any, want: list[Any]) -> str:
    """"text", "float" or "exact"; without a datatype, from the expected values."""
    if datatype in ("BYTES", "STRING") or (datatype is None and
                                           any(isinstance(w, str) for w in want)):
        return "text"
    if datatype in _FLOAT_TYPES or (datatype is None and
                                    any(isinstance(w, float) for w in want)):
        return "float"
    return "exact"


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _as_float(value: Any, datatype: Any) -> float:
    number = float(value)
    fmt = _FLOAT_TYPES.get(datatype, "")
    if not fmt or math.isnan(number) or math.isinf(number):
        return number
    try:
        return struct.unpack(fmt, struct.pack(fmt, number))[0]
    except OverflowError:  # too large for the type: it becomes inf, as a cast does
        return math.copysign(math.inf, number)


def _as_exact(value: Any, datatype: Any) -> Any:
    if datatype == "BOOL":
        return bool(value)
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _close(have: float, want: float, atol: float, rtol: float) -> bool:
    if math.isnan(have) or math.isnan(want):
        return math.isnan(have) and math.isnan(want)
    if math.isinf(have) or math.isinf(want):
        return have == want
    return abs(have - want) <= atol + rtol * abs(want)


def _index(flat: int, shape: list[int]) -> list[int]:
    index = []
    for size in reversed(shape):
        flat, i = divmod(flat, size)
        index.append(i)
    return index[::-1]


def _text_difference(name: str, shape: list[int], want: list[Any], have: list[Any]
                     ) -> str | None:
    bad = [i for i, (w, h) in enumerate(zip(want, have, strict=True))
           if _as_text(h) != _as_text(w)]
    if not bad:
        return None
    i = bad[0]
    return (f"output {name}: {len(bad)} of {len(want)} values differ; first at index "
            f"{_index(i, shape)}: {name}[{i}] = {_as_text(have[i])!r}, expected "
            f"{_as_text(want[i])!r}")


def compare(name: str, expected: dict[str, Any], got: dict[str, Any] | None,
            atol: float, rtol: float) -> str | None:
    """Why output `name` is wrong, or None when it matches within tolerance."""
    if got is None:
        return f"output {name}: missing from the server's answer"
    shape = list(expected["shape"])
    if list(got.get("shape", [])) != shape:
        return f"output {name}: shape {got.get('shape')}, expected {shape}"
    want, have = expected["data"], got.get("data", [])
    if len(want) != len(have):
        return f"output {name}: {len(have)} values for shape {shape}, expected {len(want)}"
    datatype = got.get("datatype")
    kind = _kind(datatype, want)
    if kind == "text":
        return _text_difference(name, shape, want, have)
    bad, worst, worst_error = 0, -1, -1.0
    for i, (w, h) in enumerate(zip(want, have, strict=True)):
        if not isinstance(h, (int, float)):
            return f"output {name}[{i}] = {h!r} is not a number, expected {w!r}"
        if kind == "exact":
            ok = _as_exact(h, datatype) == _as_exact(w, datatype)
            error = abs(float(h) - float(w))
        else:
            h, w = _as_float(h, datatype), _as_float(w, datatype)
            ok = _close(h, w, atol, rtol)
            error = abs(h - w)
        if not ok:
            bad += 1
            error = math.inf if math.isnan(error) else error  # NaN is the worst error
            if error > worst_error:
                worst, worst_error = i, error
    if not bad:
        return None
    if kind == "exact":
        rule, got_text = "exact match", str(_as_exact(have[worst], datatype))
        want_text = str(_as_exact(want[worst], datatype))
    else:
        rule = f"atol={atol:g}, rtol={rtol:g}"
        got_text = f"{_as_float(have[worst], datatype):.6g}"
        want_text = f"{_as_float(want[worst], datatype):.6g}"
    return (f"output {name}: {bad} of {len(want)} values outside tolerance ({rule}); max abs "
            f"error {worst_error:.4g} at index {_index(worst, shape)}: {name}[{worst}] = "
            f"{got_text}, expected {want_text}")


def probe_model(model: str, version: int, probe: dict[str, Any] | None) -> str | None:
    """Why `model` version `version` is not serving right, or None when it is."""
    try:
        if probe is None:
            _request("GET", f"/v2/models/{model}/versions/{version}/ready", timeout=5)
            return None
        answer = _request("POST", f"/v2/models/{model}/versions/{version}/infer",
                          probe["request"], timeout=TIMEOUT_S)
    except PodError as exc:
        return f"{model} v{version}: {exc}"
    outputs = {o.get("name"): o for o in answer.get("outputs", [])}
    for name, expected in probe["expected"].items():
        problem = compare(name, expected, outputs.get(name), probe.get("atol", 1e-5),
                          probe.get("rtol", 1e-4))
        if problem:
            return f"{model} v{version}: {problem}"
    return None


def extra_versions(versions: dict[str, list[int]]) -> list[str]:
    """Loaded versions of the served models that are not wanted."""
    index = _request("POST", "/v2/repository/index", {"ready": True}, timeout=5) or []
    return [f"{m['name']} v{m['version']} is loaded but not wanted {versions[m['name']]}"
            for m in index if m.get("name") in versions and m.get("state") == "READY"
            and re.fullmatch("[0-9]+", str(m.get("version", "")))
            and int(m["version"]) not in versions[m["name"]]]


def ready() -> int:
    versions = wanted_versions()
    try:
        with open(LOADED_MARKER, encoding="utf-8") as fh:
            loaded = json.load(fh)
    except (OSError, ValueError):
        loaded = None
    if loaded != versions:
        print("not ready: the models are still being loaded", flush=True)
        return 1
    probes: dict[str, Any] = {}
    if os.path.exists(PROBES_FILE):
        with open(PROBES_FILE, encoding="utf-8") as fh:
            probes = json.load(fh)
    problems = [p for model, vs in versions.items() for v in vs
                if (p := probe_model(model, v, probes.get(model)))]
    try:
        problems += extra_versions(versions)
    except PodError as exc:
        problems.append(str(exc))
    for problem in problems:
        print(f"not ready: {problem}", flush=True)
    return 1 if problems else 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("serve", "ready"):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        if argv[0] == "serve":
            rest = argv[1:]
            return serve(rest[1:] if rest[:1] == ["--"] else rest)
        return ready()
    except PodError as exc:
        print(f"triton-ops: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
