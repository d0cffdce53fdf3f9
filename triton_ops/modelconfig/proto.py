"""The ModelConfig protobuf shipped in tritonclient, loaded without the gRPC stack.

`import tritonclient.grpc.model_config_pb2` runs `tritonclient.grpc.__init__`, which imports
grpc and numpy (about 0.6 s). `validate` and `generate` need only the message classes, so the
generated module is loaded from its file and registered under its usual name: a later normal
import of tritonclient.grpc then reuses it instead of registering the descriptors twice.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

_MODULE_NAME = "tritonclient.grpc.model_config_pb2"


def _load() -> ModuleType:
    if _MODULE_NAME in sys.modules:
        return sys.modules[_MODULE_NAME]
    package = importlib.util.find_spec("tritonclient")
    if package is None or not package.submodule_search_locations:
        raise ImportError("tritonclient is not installed: pip install 'tritonclient[grpc,http]'")
    path = Path(next(iter(package.submodule_search_locations))) / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location(_MODULE_NAME, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_MODULE_NAME] = module
    spec.loader.exec_module(module)
    return module


model_config_pb2 = _load()
ModelConfig = model_config_pb2.ModelConfig
DataType = model_config_pb2.DataType
