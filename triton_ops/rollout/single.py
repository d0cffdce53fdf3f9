"""The single-Triton rollout target: one server with explicit model control.

The canary is loaded next to stable as another version of the same model: `load_model` with
a config override (the repository's config.pbtxt with `version_policy: specific {versions:
[stable..., N]}`), so the served versions are always an explicit list, never "latest".
Triton does not split traffic between versions, so this target drives the analysis traffic
itself: requests built from the envelope (or replayed from a file) go to the versions BY
NUMBER, `weight` percent to the canary, spread evenly, at a fixed rate; a sample of them is
sent to both versions and the outputs compared (shadow comparison).

Triton keeps versions whose config did not change (only `version_policy` differs) loaded
across such a reload, so loading or unloading the canary does not touch stable. Clients of
the model should address the stable version by number during a rollout: Triton sends
unversioned requests to the highest ready version, which is the canary once it is loaded.
"""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from triton_ops.digits import is_ascii_decimal
from triton_ops.envelope.model import Envelope, Tolerance
from triton_ops.repository import seal
from triton_ops.rollout.analysis import AgreementSample, VersionWindow, WindowMetrics
from triton_ops.rollout.store import StateStore
from triton_ops.rollout.target import TargetError
from triton_ops.rollout.traffic import RequestsError, disagreement, probe_expected, probe_inputs
from triton_ops.tensors import infer_inputs, input_types, output_types

STATE_FOLDER = Path(seal.SEAL_FOLDER) / "rollout"


def store_for(repository: Path | str, model: str) -> StateStore:
    """The state store of `model` in a repository: <model>/.triton-ops/rollout/."""
    return StateStore(Path(repository) / model / STATE_FOLDER)


def _short(exc: BaseException) -> str:
    text = exc.message() if hasattr(exc, "message") and callable(exc.message) else str(exc)
    return (text or type(exc).__name__).strip().splitlines()[0][:300]


class SingleTritonTarget:
    """A RolloutTarget for one Triton server (embedded or --url) with explicit model control."""

    def __init__(
        self,
        *,
        grpc_url: str,
        repository: Path | str,
        model: str,
        envelope: Envelope,
        requests: list[dict[str, Any]],
        rate: float = 100.0,
        concurrency: int = 4,
        timeout_s: float = 10.0,
        load_timeout_s: float = 300.0,
        warmup: int = 8,
        down_after: int = 5,
    ) -> None:
        if not requests:
            raise ValueError("the analysis needs at least one request")
        self.grpc_url = grpc_url
        self.repository = Path(repository)
        self.model = model
        self.model_dir = self.repository / model
        self.envelope = envelope
        self.requests = requests
        self.rate = rate
        self.concurrency = max(1, concurrency)
        self.timeout_s = timeout_s
        self.load_timeout_s = load_timeout_s
        self.warmup = warmup
        self.down_after = down_after  # canary failures in a row that mean "it is down"
        self.store = store_for(self.repository, model)
        self.weight = 0
        self.stable: list[int] = []
        self.canary = 0
        self.tolerance = envelope.probe.tolerance if envelope.probe else Tolerance()
        self._local = threading.local()
        self._clients: list[Any] = []
        self._clients_lock = threading.Lock()
        self._sent = 0  # requests sent so far, to rotate over the request pool

    # -- plumbing ------------------------------------------------------------------------
    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            import tritonclient.grpc as grpcclient

            client = grpcclient.InferenceServerClient(self.grpc_url)
            self._local.client = client
            with self._clients_lock:
                self._clients.append(client)
        return client

    def close(self) -> None:
        with self._clients_lock:
            for client in self._clients:
                with contextlib.suppress(Exception):
                    client.close()
            self._clients.clear()
        self._local = threading.local()

    def describe(self) -> str:
        return f"Triton {self.grpc_url} (repository {self.repository})"

    def _infer(self, version: int, request: dict[str, Any]) -> dict[str, Any]:
        """One version-addressed inference; raises InferenceServerException on failure."""
        inputs = infer_inputs(request, input_types(self.envelope))
        result = self._client().infer(self.model, inputs, model_version=str(version),
                                      client_timeout=self.timeout_s)
        names = [o.name for o in result.get_response().outputs]
        return {name: result.as_numpy(name) for name in names}

    def _ready(self, version: int) -> bool:
        try:
            return bool(self._client().is_model_ready(self.model, str(version)))
        except Exception:  # noqa: BLE001 - any failure to answer is "not ready"
            return False

    def _config_json(self, versions: list[int]) -> str:
        from google.protobuf import json_format, text_format

        from triton_ops.modelconfig.proto import ModelConfig

        path = self.model_dir / "config.pbtxt"
        try:
            config = text_format.Parse(path.read_text(encoding="utf-8"), ModelConfig())
        except (OSError, text_format.ParseError) as exc:
            raise TargetError(f"{path}: cannot read the model config: {exc}; run "
                              "`triton-ops validate`") from None
        config.name = self.model
        config.version_policy.Clear()
        config.version_policy.specific.versions.extend(sorted(versions))
        return json_format.MessageToJson(config, preserving_proto_field_name=True)

    def _serve(self, versions: list[int]) -> None:
        """Load the model with exactly `versions`; raise TargetError if they are not ready."""
        from tritonclient.utils import InferenceServerException

        try:
            self._client().load_model(self.model, config=self._config_json(versions),
                                      client_timeout=self.load_timeout_s)
        except InferenceServerException as exc:
            raise TargetError(f"loading {self.model} versions {versions} failed: "
                              f"{_short(exc)}") from None
        not_ready = [v for v in versions if not self._ready(v)]
        if not_ready:
            raise TargetError(f"versions {not_ready} of {self.model} are not ready after "
                              "loading")

    # -- RolloutTarget -------------------------------------------------------------------
    def serving_versions(self) -> list[int]:
        try:
            index = self._client().get_model_repository_index(as_json=True)
        except Exception as exc:  # noqa: BLE001 - connection errors of any kind
            raise TargetError(f"cannot reach Triton at {self.grpc_url}: {_short(exc)}") from None
        versions = {int(entry["version"]) for entry in index.get("models", [])
                    if entry.get("name") == self.model and entry.get("state") == "READY"
                    and is_ascii_decimal(str(entry.get("version", "")))}
        return sorted(v for v in versions if self._ready(v))

    def attach(self, stable: list[int], canary: int) -> None:
        self.stable, self.canary = sorted(stable), canary

    def verify_version(self, version: int) -> list[str]:
        return seal.verify_version(self.model_dir, version)

    def load_canary(self, stable: list[int], canary: int) -> None:
        missing = [v for v in stable if not self._ready(v)]
        if missing:
            raise TargetError(f"stable versions {missing} are not ready; not loading a canary")
        self._serve(sorted({*stable, canary}))
        # The golden probe first: a canary that answers it wrongly never gets traffic, and
        # the first requests (stub start, lazy initialisation) do not count in a window.
        problem = self.probe(canary)
        if problem:
            raise TargetError(problem)
        for request in self.requests[: self.warmup]:
            with contextlib.suppress(Exception):
                self._infer(canary, request)

    def set_weight(self, weight: int) -> None:
        self.weight = weight

    def collect_window(self, weight: int, duration_s: float) -> WindowMetrics:
        stable_version, canary = max(self.stable), self.canary
        latencies: dict[str, list[float]] = {"stable": [], "canary": []}
        errors = {"stable": 0, "canary": 0}
        streak = {"failures": 0, "last": ""}  # canary failures in a row
        stop = threading.Event()
        down: list[str] = []  # why the canary is considered down, once it is
        lock = threading.Lock()
        total = max(1, int(self.rate * duration_s))
        interval = 1.0 / self.rate if self.rate > 0 else 0.0

        def send(index: int, due: float) -> None:
            # Even split: request i goes to the canary when it crosses a weight boundary.
            to_canary = (index + 1) * weight // 100 > index * weight // 100
            side = "canary" if to_canary else "stable"
            version = canary if to_canary else stable_version
            request = self.requests[(self._sent + index) % len(self.requests)]
            delay = due - time.perf_counter()
            if delay > 0 and stop.wait(delay):
                return
            if stop.is_set():
                return
            if self.store.pending_command():
                stop.set()  # a person's abort/promote waits for no window
                return
            start = time.perf_counter()
            try:
                self._infer(version, request)
            except Exception as exc:  # noqa: BLE001 - every failure is an error of that version
                with lock:
                    errors[side] += 1
                    if to_canary:
                        streak["failures"] += 1
                        streak["last"] = _short(exc)
                        if streak["failures"] >= self.down_after and not down:
                            down.append(f"version {canary} failed {streak['failures']} "
                                        f"requests in a row (last: {streak['last']})")
                            stop.set()  # the canary is down: no need to finish the window
                return
            elapsed_us = (time.perf_counter() - start) * 1e6
            with lock:
                latencies[side].append(elapsed_us)
                if to_canary:
                    streak["failures"] = 0

        began = time.perf_counter()
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = [pool.submit(send, i, began + i * interval) for i in range(total)]
            for future in futures:
                future.result()
        self._sent += total
        metrics = WindowMetrics(
            stable=VersionWindow.from_latencies(latencies["stable"], errors["stable"]),
            canary=VersionWindow.from_latencies(latencies["canary"], errors["canary"]),
            duration_s=time.perf_counter() - began,
        )
        if down:
            metrics.canary_down = down[0]
        elif not self._ready(canary):
            metrics.canary_down = f"version {canary} of {self.model} is not ready"
        return metrics

    def shadow_compare(self, samples: int) -> list[AgreementSample]:
        stable_version, canary = max(self.stable), self.canary
        results = []
        for i in range(samples):
            request = self.requests[(self._sent + i) % len(self.requests)]
            began = time.perf_counter()
            try:
                want = self._infer(stable_version, request)
            except Exception as exc:  # noqa: BLE001
                results.append(AgreementSample(agree=None, detail=f"stable failed: "
                                               f"{_short(exc)}"))
                continue
            stable_us = (time.perf_counter() - began) * 1e6
            began = time.perf_counter()
            try:
                got = self._infer(canary, request)
            except Exception as exc:  # noqa: BLE001
                results.append(AgreementSample(agree=None, canary_error=True,
                                               detail=f"canary failed: {_short(exc)}"))
                continue
            canary_us = (time.perf_counter() - began) * 1e6
            difference = disagreement(want, got, self.tolerance, output_types(self.envelope))
            results.append(AgreementSample(agree=difference is None, detail=difference or "",
                                           stable_latency_us=stable_us,
                                           canary_latency_us=canary_us))
        self._sent += samples
        return results

    def probe(self, version: int) -> str | None:
        """Run the envelope's golden probe on `version`; None when it passed (or there is
        no probe), else what went wrong."""
        if self.envelope.probe is None:
            return None
        try:
            request, expected = probe_inputs(self.envelope), probe_expected(self.envelope)
        except RequestsError as exc:
            return f"golden probe cannot run: {exc}"
        try:
            got = self._infer(version, request)
        except Exception as exc:  # noqa: BLE001
            return f"golden probe request to version {version} failed: {_short(exc)}"
        difference = disagreement(expected, got, self.tolerance, output_types(self.envelope))
        if difference:
            return f"golden probe of version {version}: {difference}"
        return None

    def promote(self, stable: list[int], canary: int) -> None:
        if not self._ready(canary):
            raise TargetError(f"version {canary} is not ready; not promoting")
        problem = self.probe(canary)
        if problem:
            raise TargetError(problem)
        self._serve([canary])
        still = [v for v in stable if self._ready(v)]
        if still:
            raise TargetError(f"versions {still} still serve after promotion")

    def rollback(self, stable: list[int], canary: int) -> None:
        self._serve(sorted(stable))
        if self._ready(canary):
            raise TargetError(f"version {canary} still serves after the rollback")

    def restore(self, versions: list[int]) -> None:
        current = self.serving_versions()
        if sorted(versions) == current:
            return
        if not current:
            raise TargetError(f"no version of {self.model} serves; load one first")
        self._serve(sorted({*current, *versions}))
        for version in versions:
            problem = self.probe(version)
            if problem:
                self._serve(current)  # back to what served: never worse than before
                raise TargetError(problem)
        self._serve(sorted(versions))
