"""triton-ops: control plane and tuning toolkit for NVIDIA Triton Inference Server."""

__version__ = "0.1.0"
