"""What Triton completes at load from the model folder and file: a warning, not an error.

Checked alone, a config cannot be completed here, so a part Triton fills from the model file
(inputs, outputs, their dims and data types) or decides from it (the platform, on which the
TensorRT-only settings depend) is reported once as left to Triton, and the error rules for
those parts stay quiet. Checked in its model folder, the backend is the one Triton picks
there (triton_ops.modelconfig.autocomplete) and only what its model file completes is left.
"""

from __future__ import annotations

from collections.abc import Iterator

from triton_ops.modelconfig.proto import model_config_pb2
from triton_ops.modelconfig.rules.registry import ConfigContext, Issue, W, rule

NOTE = "completed by Triton from the model file at load; not checked here"


def _io_gaps(ctx: ConfigContext, completer: str) -> Iterator[Issue]:
    config = ctx.config
    for kind in ("input", "output"):
        tensors = getattr(config, kind)
        if not tensors:
            yield (), f"no {kind}s listed: {NOTE} (by {completer})"
        for i, io in enumerate(tensors):
            missing = [name for name, absent in (
                ("data_type", io.data_type == model_config_pb2.TYPE_INVALID),
                ("dims", not io.dims)) if absent]
            if missing:
                yield (kind, i), (f"{kind} {io.name!r} has no {' and no '.join(missing)}: "
                                  f"{NOTE} (by {completer})")


def _platform_settings(ctx: ConfigContext) -> Iterator[Issue]:
    config = ctx.config
    why = "only valid for TensorRT, and the backend is picked from the model file"
    for i, group in enumerate(config.instance_group):
        if group.profile:
            yield ("instance_group", i, "profile"), f"'profile' is {why}: {NOTE}"
    for kind in ("input", "output"):
        for i, io in enumerate(getattr(config, kind)):
            for flag in ("is_shape_tensor", "is_non_linear_format_io"):
                if getattr(io, flag):
                    yield (kind, i, flag), f"{kind} {io.name!r}: {flag} is {why}: {NOTE}"


@rule("config-autocomplete", W,
      "a part of the config Triton completes at load is left to it: inputs, outputs, their "
      "dims and data types (filled from the model file by the TensorRT, ONNX Runtime, "
      "TensorFlow and OpenVINO backends, and by auto_complete_config in a Python model), or "
      "TensorRT-only settings while the backend is still to be picked from the model file",
      "core:src/model_config_utils.cc AutoCompleteBackendFields; server "
      "docs/user_guide/model_configuration.md (Auto-Generated Model Configuration)",
      context=True)
def autocomplete(ctx: ConfigContext) -> Iterator[Issue]:
    completer = ctx.completion.io_completer()
    if completer is not None:
        yield from _io_gaps(ctx, completer)
    if ctx.completion.backend_pending:
        yield from _platform_settings(ctx)
