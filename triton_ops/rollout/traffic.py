"""Analysis traffic for targets that drive it themselves: request inputs and output comparison.

Requests come from the envelope (the golden probe's inputs first, then random tensors of the
declared shapes and value ranges, `triton_ops.tensors.make_input_sets`) or from a JSON-lines
file (`--requests FILE`: one object per line, input name -> nested list, WITH the batch
dimension when the model batches). Outputs of two versions are compared by the golden probe's
rules (`triton_ops.tensors.compare_outputs`): integer, bool and string outputs exactly, floats
within the envelope's tolerance (numpy.isclose).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from triton_ops.envelope.model import Envelope, TensorSpec, Tolerance
from triton_ops.server.probe import ProbeSetupError
from triton_ops.server.probe import probe_expected as golden_expected
from triton_ops.server.probe import probe_inputs as golden_inputs
from triton_ops.tensors import TensorValueError, compare_outputs, make_input_sets, tensor_array

if TYPE_CHECKING:
    import numpy as np


class RequestsError(ValueError):
    """A requests file or envelope cannot give valid requests; says where and what to do."""


def _to_array(spec: TensorSpec, value: Any, batched: bool, where: str) -> np.ndarray:
    try:
        return tensor_array(spec, value, batched=batched)
    except TensorValueError as exc:
        raise RequestsError(f"{where}: input {spec.name!r} {exc}") from None


def envelope_requests(envelope: Envelope, count: int = 32, seed: int = 0) -> list[dict[str, Any]]:
    """The golden probe's request (if any) followed by random ones, `count` in all."""
    if not envelope.inputs:
        raise RequestsError(f"envelope of {envelope.name} declares no inputs: give --requests "
                            "FILE with recorded requests")
    requests: list[dict[str, Any]] = []
    if envelope.probe is not None:
        requests.append(probe_inputs(envelope))
    requests.extend(make_input_sets(envelope.inputs,
                                    batch=1 if envelope.max_batch_size > 0 else None,
                                    count=max(count - len(requests), 1), seed=seed))
    return requests


def probe_inputs(envelope: Envelope) -> dict[str, Any]:
    """The golden probe's request (see triton_ops.server.probe.probe_inputs)."""
    try:
        return golden_inputs(envelope)
    except ProbeSetupError as exc:
        raise RequestsError(f"envelope of {envelope.name}: {exc}") from None


def probe_expected(envelope: Envelope) -> dict[str, Any]:
    """The golden probe's expected outputs, typed as the envelope declares them."""
    try:
        return golden_expected(envelope)
    except ProbeSetupError as exc:
        raise RequestsError(f"envelope of {envelope.name}: {exc}") from None


def load_requests_file(path: Path, envelope: Envelope) -> list[dict[str, Any]]:
    """Recorded requests, one JSON object per line; errors name the file and line."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise RequestsError(f"{path}: cannot read: {exc}") from None
    batched = envelope.max_batch_size > 0
    known = {s.name: s for s in envelope.inputs}
    requests = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RequestsError(f"{where}: not JSON ({exc.msg}); each line is one request "
                                '{"INPUT": [[...]]}') from None
        except RecursionError:
            raise RequestsError(f"{where}: nested too deeply to read (a tensor has at most "
                                "32 dimensions); each line is one request "
                                '{"INPUT": [[...]]}') from None
        if not isinstance(data, dict) or not data:
            raise RequestsError(f"{where}: a request is a JSON object input name -> array")
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise RequestsError(f"{where}: unknown input(s) {unknown}; the envelope declares "
                                f"{sorted(known)}")
        missing = sorted(n for n, s in known.items() if not s.optional and n not in data)
        if missing:
            raise RequestsError(f"{where}: missing input(s) {missing}")
        requests.append({name: _to_array(known[name], value, batched, where)
                         for name, value in data.items()})
    if not requests:
        raise RequestsError(f"{path}: no requests in the file")
    return requests


def disagreement(expected: Mapping[str, Any], actual: Mapping[str, Any],
                 tolerance: Tolerance, data_types: Mapping[str, str] | None = None
                 ) -> str | None:
    """None when every expected output matches, else what differs, on one line ("; "-joined
    `triton_ops.tensors.compare_outputs`): the detail of a shadow sample or a failed probe."""
    return "; ".join(compare_outputs(expected, actual, tolerance, data_types)) or None
