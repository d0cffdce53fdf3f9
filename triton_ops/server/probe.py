"""The golden probe: one real inference with an envelope's probe inputs, checked against its answer.

`probe_inputs` / `probe_expected` turn the envelope's probe into typed, shape-checked arrays
(`triton_ops.tensors.tensor_array`); `run_probe` sends the request to a server over gRPC and
compares every expected output with `triton_ops.tensors.compare_outputs`, the comparison
rollout's shadow traffic uses too: integer, bool and string outputs exactly, floats with
`numpy.isclose(got, expected, rtol, atol)`, NaN only matching NaN. A success status with a
wrong answer is exactly what this guards against, so every expected output is compared value
by value.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from triton_ops.envelope.model import Envelope
from triton_ops.tensors import (
    TensorValueError,
    compare_outputs,
    infer_inputs,
    input_types,
    output_types,
    tensor_array,
)

if TYPE_CHECKING:
    import numpy as np


class ProbeSetupError(ValueError):
    """The envelope cannot be probed as written (no probe, unknown tensors, wrong shapes)."""


@dataclass
class ProbeResult:
    """Outcome of one probe. `ok` only when the request succeeded AND every output matched."""

    ok: bool
    differences: list[str] = field(default_factory=list)
    latency_s: float = 0.0
    error: str | None = None
    model: str = ""
    version: str = ""

    def summary(self) -> str:
        target = f"{self.model}" + (f" version {self.version}" if self.version else "")
        if self.error:
            return f"{target}: UNHEALTHY: {self.error}"
        if self.differences:
            return f"{target}: UNHEALTHY, the answer differs from the golden one:\n" + "\n".join(
                f"  {d}" for d in self.differences
            )
        return f"{target}: healthy (golden answer matched in {self.latency_s * 1000:.1f} ms)"


def probe_inputs(envelope: Envelope) -> dict[str, np.ndarray]:
    """The probe's input arrays, typed and shaped as the envelope declares them.

    Checks the whole probe (its expected outputs too), so an envelope that passes can be
    probed; raises ProbeSetupError saying what to fix."""
    if envelope.probe is None:
        raise ProbeSetupError(
            f"envelope {envelope.name!r} has no probe section: add probe.inputs and "
            "probe.expected (a golden request and its answer)"
        )
    if not envelope.probe.expected:
        raise ProbeSetupError(f"envelope {envelope.name!r}: probe.expected lists no outputs")
    batched = envelope.max_batch_size > 0
    declared = {spec.name: spec for spec in envelope.inputs}
    arrays: dict[str, np.ndarray] = {}
    for name, value in envelope.probe.inputs.items():
        spec = declared.get(name)
        if spec is None:
            raise ProbeSetupError(
                f"probe input {name!r} is not one of the model's inputs "
                f"({', '.join(declared) or 'none declared'})"
            )
        try:
            arrays[name] = tensor_array(spec, value, batched=batched)
        except TensorValueError as exc:
            raise ProbeSetupError(f"probe input {name!r} {exc}") from None
    missing = [s.name for s in envelope.inputs if s.name not in arrays and not s.optional]
    if missing:
        raise ProbeSetupError(f"probe.inputs lacks required input(s): {', '.join(missing)}")
    expected = probe_expected(envelope)
    batch_sizes = {a.shape[0] for a in arrays.values() if a.ndim} if batched else set()
    if len(batch_sizes) == 1:
        for name, want in expected.items():
            if want.shape[0] not in batch_sizes:
                raise ProbeSetupError(
                    f"probe.expected {name!r} has {want.shape[0]} rows but the probe inputs "
                    f"have a batch of {batch_sizes.pop()}"
                )
    return arrays


def probe_expected(envelope: Envelope) -> dict[str, np.ndarray]:
    """The probe's expected outputs as arrays of the declared types and shapes."""
    if envelope.probe is None:
        raise ProbeSetupError(f"envelope {envelope.name!r} has no probe section")
    batched = envelope.max_batch_size > 0
    outputs = {spec.name: spec for spec in envelope.outputs}
    unknown = [name for name in envelope.probe.expected if name not in outputs]
    if unknown:
        raise ProbeSetupError(
            f"probe.expected names output(s) the model does not declare: {', '.join(unknown)} "
            f"(outputs: {', '.join(sorted(outputs)) or 'none'})"
        )
    expected: dict[str, np.ndarray] = {}
    for name, value in envelope.probe.expected.items():
        try:
            expected[name] = tensor_array(outputs[name], value, batched=batched, output=True)
        except TensorValueError as exc:
            raise ProbeSetupError(f"probe.expected {name!r} {exc}") from None
    return expected


def run_probe(
    envelope: Envelope,
    grpc_url: str,
    *,
    model_name: str | None = None,
    model_version: str = "",
    timeout_s: float = 10.0,
) -> ProbeResult:
    """Send the envelope's golden request to `grpc_url` and compare the answer.

    Raises ProbeSetupError when the envelope itself cannot be probed; server-side problems
    (unreachable, model not ready, inference error, wrong answer) come back in the result.
    """
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from triton_ops.server.endpoints import grpc_channel_args

    name = model_name or envelope.name
    version = str(model_version or "")
    arrays = probe_inputs(envelope)
    assert envelope.probe is not None
    result = ProbeResult(ok=False, model=name, version=version)
    try:
        client = grpcclient.InferenceServerClient(
            grpc_url, channel_args=grpc_channel_args(grpc_url)
        )
    except Exception as exc:  # noqa: BLE001 - a bad URL is reported, not raised
        result.error = f"cannot connect to {grpc_url}: {exc}"
        return result
    try:
        try:
            ready = client.is_model_ready(name, version, client_timeout=timeout_s)
        except InferenceServerException as exc:
            result.error = f"server at {grpc_url} did not answer: {_message(exc)}"
            return result
        if not ready:
            which = f"{name!r}" + (f" version {version}" if version else "")
            result.error = (
                f"model {which} is not ready on {grpc_url} (not loaded, still loading, or "
                "its load failed: see the server log)"
            )
            return result
        inputs = infer_inputs(arrays, input_types(envelope))
        requested = [grpcclient.InferRequestedOutput(o) for o in envelope.probe.expected]
        start = time.perf_counter()
        try:
            response = client.infer(
                name, inputs, model_version=version, outputs=requested, client_timeout=timeout_s
            )
        except InferenceServerException as exc:
            result.latency_s = time.perf_counter() - start
            result.error = f"inference failed: {_message(exc)}"
            return result
        result.latency_s = time.perf_counter() - start
        outputs = {o: response.as_numpy(o) for o in envelope.probe.expected}
        result.differences = compare_outputs(probe_expected(envelope), outputs,
                                             envelope.probe.tolerance, output_types(envelope))
        result.ok = not result.differences
        return result
    finally:
        client.close()


def _message(exc: Exception) -> str:
    message = getattr(exc, "message", None)
    text = message() if callable(message) else str(exc)
    return " ".join(str(text).split()) or type(exc).__name__
