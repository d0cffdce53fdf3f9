"""What Triton completes in a model config at load, from the model folder and the model file.

Two steps, both before Triton validates the config:

1. the server fills `name` from the folder and `backend`, `platform` and
   `default_model_filename` from the file names in the model's FIRST sub-folder in sort
   order (core `src/model_config_utils.cc` AutoCompleteBackendFields; every sub-folder
   counts, hidden ones too: a `.something/` folder sorts before `1/`). Failing that, a model
   named `<name>.<backend>` gets backend `<backend>`;
2. the backend fills what it reads from the model file: inputs, outputs, their dims and data
   types, max_batch_size (docs/user_guide/model_configuration.md, "Auto-Generated Model
   Configuration"): TensorRT, ONNX Runtime, TensorFlow and OpenVINO from the model, the
   Python backend from `auto_complete_config` in model.py when it defines one. The PyTorch
   backend completes nothing ("not supported for pytorch backend"), an ensemble has no
   model file.

`complete` is pure: it takes the config and a `ModelFiles` (what step 1 looks at; None when
the config is checked alone) and returns the config Triton would validate, with what was
filled and who completes inputs and outputs. `scan_model_files` reads a model folder into a
`ModelFiles`.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from triton_ops.modelconfig.proto import ModelConfig

# Names from core src/constants.h.
SAVEDMODEL, GRAPHDEF = "model.savedmodel", "model.graphdef"
PLAN, ONNX, OPENVINO_XML, TORCHSCRIPT, PYTHON = (
    "model.plan", "model.onnx", "model.xml", "model.pt", "model.py")
PLATFORM_OF_TF_FILE = {SAVEDMODEL: "tensorflow_savedmodel", GRAPHDEF: "tensorflow_graphdef"}
ENSEMBLE = "ensemble"
_VERSION = re.compile(r"[1-9][0-9]*")
# Backends whose model file completes inputs, outputs, dims and data types at load.
COMPLETING_BACKENDS = frozenset({"tensorrt", "onnxruntime", "tensorflow", "openvino"})
# Backends that complete nothing from the model file.
NON_COMPLETING_BACKENDS = frozenset({"pytorch"})


@dataclass(frozen=True)
class ModelFiles:
    """The model folder as Triton's auto-complete sees it."""

    model_name: str
    first_folder: str | None = None  # the first sub-folder in sort order (None: there is none)
    entries: Mapping[str, bool] = field(default_factory=dict)  # its entries: name -> is a folder
    # Whether the first version's model.py defines auto_complete_config (None: no model.py,
    # or it cannot be read or parsed). With `model_py` set it is read from that file when
    # first needed (most configs leave nothing for model.py to complete).
    python_autocomplete: bool | None = None
    model_py: Path | None = None

    def defines_auto_complete_config(self) -> bool | None:
        if self.model_py is None:
            return self.python_autocomplete
        if "_parsed" not in self.__dict__:
            from triton_ops.envelope.loader import read_text

            text, _ = read_text(self.model_py, "model")
            parsed = defines_auto_complete_config(text) if text is not None else None
            object.__setattr__(self, "_parsed", parsed)  # a cache on a frozen instance
        return self.__dict__["_parsed"]


@dataclass(frozen=True)
class Completion:
    """The config Triton validates, and what auto-complete did or will do to it."""

    config: ModelConfig  # with name/backend/platform/default_model_filename as Triton fills them
    files: ModelFiles | None  # None: checked alone, the model folder is unknown
    inferred: tuple[tuple[str, str], ...] = ()  # (field, value) filled from the folder
    undetermined: str | None = None  # why Triton cannot pick a backend (folder known)

    @property
    def backend_pending(self) -> bool:
        """True when the backend is left to the model folder, which is not known here."""
        return self.files is None and not self.config.backend and not self.config.platform

    def io_completer(self) -> str | None:
        """Who fills missing inputs, outputs, dims and data types at load; None: nobody."""
        config = self.config
        if config.platform == ENSEMBLE:
            return None
        backend = config.backend
        if not backend:
            return "the model file, once Triton picks a backend for it" \
                if self.backend_pending else None
        if backend in NON_COMPLETING_BACKENDS:
            return None
        model_file = config.default_model_filename or "the model file"
        if backend == "python":
            if self.files is None:
                return "auto_complete_config in model.py, if it defines one"
            defines = self.files.defines_auto_complete_config()
            if defines:
                return f"auto_complete_config in {model_file}"
            if defines is None and model_file != PYTHON:
                return "auto_complete_config in the model file, if it defines one"
            return None
        if backend in COMPLETING_BACKENDS:
            return f"the {backend} backend, from {model_file}"
        return f"the {backend} backend, if it completes configs"


def _is_entry(files: ModelFiles | None, name: str, folder: bool) -> bool:
    return files is not None and files.entries.get(name) is folder


def _tensorflow_platform(config: ModelConfig, files: ModelFiles | None) -> None:
    if config.platform or config.backend not in ("", "tensorflow"):
        return
    if config.default_model_filename in PLATFORM_OF_TF_FILE:
        config.platform = PLATFORM_OF_TF_FILE[config.default_model_filename]
    elif not config.default_model_filename:
        # Both checked, the graphdef last: a folder holding both ends up graphdef.
        if _is_entry(files, SAVEDMODEL, folder=True):
            config.platform = "tensorflow_savedmodel"
        if _is_entry(files, GRAPHDEF, folder=False):
            config.platform = "tensorflow_graphdef"


def _fill_backend(config: ModelConfig, files: ModelFiles | None) -> None:
    """AutoCompleteBackendFields, backend by backend, in Triton's order."""
    has_files = files is not None and files.first_folder is not None
    bare = not config.platform and not config.default_model_filename and has_files
    if config.platform in PLATFORM_OF_TF_FILE.values():
        config.backend = config.backend or "tensorflow"
        config.default_model_filename = config.default_model_filename or (
            SAVEDMODEL if config.platform == "tensorflow_savedmodel" else GRAPHDEF)
        return
    # (backend, platform it implies, default file, file must be a regular file)
    for backend, platform, filename, must_be_file in (
            ("tensorrt", "tensorrt_plan", PLAN, True),
            ("onnxruntime", "onnxruntime_onnx", ONNX, False),
            ("openvino", "", OPENVINO_XML, False),
            ("pytorch", "pytorch_libtorch", TORCHSCRIPT, True),
            ("python", "", PYTHON, False)):
        if not config.backend:
            named = (platform and config.platform == platform) or \
                config.default_model_filename == filename
            present = bare and filename in (files.entries if files else {}) and not (
                must_be_file and _is_entry(files, filename, folder=True))
            if named or present:
                config.backend = backend
        if config.backend == backend:
            config.platform = config.platform or platform
            config.default_model_filename = config.default_model_filename or filename
            return


def complete(written: ModelConfig, files: ModelFiles | None = None) -> Completion:
    """The config Triton would validate: `written` with what the server fills at load."""
    config = ModelConfig()
    config.CopyFrom(written)
    if files is not None and not config.name:
        config.name = files.model_name
    _tensorflow_platform(config, files)
    _fill_backend(config, files)
    undetermined = None
    nothing_named = not (config.backend or config.platform or config.default_model_filename)
    if files is not None and nothing_named:
        # A custom backend: a model named "<name>.<backend>" gets that backend.
        if "." in files.model_name:
            backend = files.model_name.split(".", 1)[1]
            config.backend, config.default_model_filename = backend, f"model.{backend}"
        else:
            looked = (f"{files.first_folder}/ (the first folder in sort order)"
                      if files.first_folder else "no folder: the model has none")
            undetermined = (f"config names no platform or backend and Triton cannot pick a "
                            f"backend: it looks in {looked} for {SAVEDMODEL}, {GRAPHDEF}, "
                            f"{PLAN}, {ONNX}, {OPENVINO_XML}, {TORCHSCRIPT} or {PYTHON}")
    inferred = tuple((name, getattr(config, name)) for name in
                     ("backend", "platform", "default_model_filename")
                     if getattr(config, name) != getattr(written, name))
    return Completion(config, files, inferred, undetermined)


def defines_auto_complete_config(source: str) -> bool | None:
    """Whether Python source defines TritonPythonModel.auto_complete_config (None: it does
    not parse). Parsed, never run."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "TritonPythonModel":
            return any(isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
                       and item.name == "auto_complete_config" for item in node.body)
    return False


def scan_model_files(model_dir: Path) -> ModelFiles:
    """Read what auto-complete looks at in `model_dir` (never raises for unreadable parts)."""
    folders = sorted(name for name, is_dir in _entries(model_dir).items() if is_dir)
    if not folders:
        return ModelFiles(model_dir.name)
    content = _entries(model_dir / folders[0])
    versions = sorted((f for f in folders if _VERSION.fullmatch(f)), key=int)
    model_py = model_dir / versions[0] / PYTHON if versions else None
    if model_py is not None and not model_py.is_file():
        model_py = None
    return ModelFiles(model_dir.name, folders[0], content, model_py=model_py)


def _entries(folder: Path) -> dict[str, bool]:
    """name -> is a folder (following links), for the entries of `folder` that can be read."""
    found: dict[str, bool] = {}
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    found[entry.name] = entry.is_dir()
                except OSError:  # a symlink loop: neither file nor folder to Triton
                    continue
    except OSError:
        pass
    return found


__all__ = ["Completion", "ModelFiles", "complete", "defines_auto_complete_config",
           "scan_model_files"]
