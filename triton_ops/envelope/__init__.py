"""Resource envelopes: the declarative description of a model (envelopes/<model>.yaml)."""

from triton_ops.envelope.loader import (
    EnvelopeError,
    LoadedEnvelope,
    SourceMap,
    find_envelope,
    load_envelope,
    require_envelope,
)
from triton_ops.envelope.model import Envelope, TensorSpec

__all__ = [
    "Envelope", "EnvelopeError", "LoadedEnvelope", "SourceMap", "TensorSpec",
    "find_envelope", "load_envelope", "require_envelope",
]
