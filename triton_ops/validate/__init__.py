"""The CI gate: run every check over envelopes, model repositories and config.pbtxt files."""

from triton_ops.validate.gate import (
    DEFAULT_PATHS,
    PathKind,
    UsageProblem,
    classify_path,
    validate_paths,
)

__all__ = ["DEFAULT_PATHS", "PathKind", "UsageProblem", "classify_path", "validate_paths"]
