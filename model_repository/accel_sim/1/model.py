"""accel_sim: an accelerator-like model (Triton Python backend) whose cost is a known curve.

An execution holds one simulated device for fixed_us + per_item_us x (items in the batch),
like a GPU kernel with a launch cost and a cost per item; the CPU only waits meanwhile. All
instances share the one device: an execution takes an exclusive lock (fcntl.flock) on the
device file first, so executions of different instances never overlap, as on one GPU. The
cost curve and the device come from the config's parameters (`fixed_us`, `per_item_us`,
`device`: a lock file path; by default one derived from the model's folder, so that two
servers on the same repository share a device and two repository copies do not).

OUTPUT = 2 x INPUT + 1, row by row: an answer that depends on every input value and on
nothing else, so a golden probe checks that batching keeps rows apart.
"""

import fcntl
import hashlib
import json
import os
import tempfile
import time

import numpy as np
import triton_python_backend_utils as pb_utils


def _parameter(config: dict, key: str, default: str) -> str:
    return config.get("parameters", {}).get(key, {}).get("string_value", default)


def device_path(model_dir: str) -> str:
    """The default lock file of the simulated device of the model in `model_dir`."""
    key = hashlib.sha256(os.path.realpath(model_dir).encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"triton-ops-accel-sim-{key}.lock")


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.fixed_s = float(_parameter(config, "fixed_us", "0")) / 1e6
        self.per_item_s = float(_parameter(config, "per_item_us", "0")) / 1e6
        path = _parameter(config, "device", "") or device_path(args["model_repository"])
        # Each instance opens the file itself: flock excludes other open file descriptions,
        # so the instances (one stub process each) take turns on the device.
        self.device = open(path, "a+b")  # noqa: SIM115 - held for the model's lifetime

    def execute(self, requests):
        inputs = [pb_utils.get_input_tensor_by_name(r, "INPUT").as_numpy() for r in requests]
        items = sum(len(x) for x in inputs)
        fcntl.flock(self.device, fcntl.LOCK_EX)
        try:
            time.sleep(self.fixed_s + self.per_item_s * items)
        finally:
            fcntl.flock(self.device, fcntl.LOCK_UN)
        return [pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("OUTPUT", (2 * x + 1).astype(np.float32))]) for x in inputs]

    def finalize(self):
        self.device.close()
