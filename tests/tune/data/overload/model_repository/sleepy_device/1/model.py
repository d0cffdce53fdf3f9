"""sleepy_device: a test model whose execution is a sleep on one simulated device.

An execution of n requests sleeps fixed_us + per_item_us * n (from the config's
parameters) while holding an exclusive lock on a file that every instance shares: the
instances queue for one device, as models on one accelerator do, and the host's CPU stays
mostly idle. Y is X, so that answers can be checked.
"""

import fcntl
import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        import json

        params = json.loads(args["model_config"]).get("parameters", {})

        def param(key, default):
            return float(params.get(key, {}).get("string_value", default))

        self.fixed_s = param("fixed_us", 20000) / 1e6
        self.per_item_s = param("per_item_us", 3000) / 1e6
        lock = os.path.join(args["model_repository"], ".device.lock")
        self.device = open(lock, "a+")

    def execute(self, requests):
        arrays = [pb_utils.get_input_tensor_by_name(r, "X").as_numpy() for r in requests]
        items = sum(a.shape[0] for a in arrays)
        fcntl.flock(self.device, fcntl.LOCK_EX)
        try:
            time.sleep(self.fixed_s + self.per_item_s * items)
        finally:
            fcntl.flock(self.device, fcntl.LOCK_UN)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", a.astype(np.float32))])
                for a in arrays]

    def finalize(self):
        self.device.close()
