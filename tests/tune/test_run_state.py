"""What --resume relies on: results round-trip through state.json, the CSV log grows safely."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from triton_ops.envelope.model import Envelope
from triton_ops.tune.batcher import Candidate
from triton_ops.tune.results import CandidateResult, result_from_dict, result_to_dict
from triton_ops.tune.run import MeasurementLog, RunState, default_space
from triton_ops.tune.stats import QuantileEstimate


def test_result_round_trip(tmp_path: Path) -> None:
    r = CandidateResult(Candidate(16, 500, 2), 1234.5, 1000.0,
                        QuantileEstimate(0.99, 40_000.0, 35_000.0, math.inf, 120, 0.95),
                        generator_limited=True, seconds=12.0)
    state = RunState(tmp_path / "state.json")
    state.data["candidates"] = [result_to_dict(r)]
    state.save()
    back = result_from_dict(RunState(tmp_path / "state.json").data["candidates"][0])
    assert back.candidate == r.candidate and back.goodput == 1000.0
    assert back.p99_at_goodput is not None and back.p99_at_goodput.high == math.inf
    assert back.generator_limited and back.status == "measured"


def test_measurement_log_appends_and_adds_columns(tmp_path: Path) -> None:
    log = MeasurementLog(tmp_path / "m.csv")
    log.append({"probe": 1, "rate": 10.0, "p99_us": 5.0})
    log.append({"probe": 2, "rate": 20.0, "p99_us": 6.0, "gpu_utilization": 0.5})
    again = MeasurementLog(tmp_path / "m.csv")  # a resumed run keeps appending
    again.append({"probe": 3, "rate": 30.0, "p99_us": 7.0, "gpu_utilization": 0.7})
    table = pd.read_csv(tmp_path / "m.csv")
    assert list(table["probe"]) == [1, 2, 3]
    assert list(table.columns) == ["probe", "rate", "p99_us", "gpu_utilization"]
    assert math.isnan(table["gpu_utilization"][0]) and table["gpu_utilization"][2] == 0.7


def test_default_space_follows_envelope() -> None:
    env = Envelope.model_validate({
        "name": "m", "backend": "python", "batching": {"max_batch_size": 16},
        "instances": [{"kind": "CPU", "count": 1}]})
    sizes, delays, counts = default_space(env, 4000)
    assert sizes == [1, 2, 4, 8, 16, 32]
    assert delays == [0, 100, 500, 1000]  # at most a quarter of the SLO
    assert counts == [1, 2]
    gpu = Envelope.model_validate({"name": "g", "backend": "python",
                                   "instances": [{"kind": "GPU"}]})
    assert default_space(gpu, 50_000) == ([0], [0, 100, 500, 1000, 2000, 5000, 10000], [1, 2, 3])
