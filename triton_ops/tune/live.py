"""The live side of `tune`: a running Triton as the search's target.

`LiveTarget` puts the pieces together for the search: `ModelControl` loads candidates and
restores the original config, `Prober` measures the loaded config at an arrival rate and
returns typed window rows, `Profiler` measures the service profile. Every window row goes to
`record` (measurements.csv) with the number of the probe it belongs to.
"""

from __future__ import annotations

from collections.abc import Callable

from triton_ops.tune.batcher import Candidate, ServiceProfile
from triton_ops.tune.control import ModelControl
from triton_ops.tune.prober import Prober, WindowRow
from triton_ops.tune.profiler import ProfilePlan, Profiler
from triton_ops.tune.results import ProbeResult

RowSink = Callable[[int, WindowRow], None]


def ignore_row(probe: int, row: WindowRow) -> None:
    """The default row sink."""


class LiveTarget:
    """The search's target (a `ProfilingTarget`) on a running Triton."""

    def __init__(self, control: ModelControl, prober: Prober, profiler: Profiler,
                 plan: ProfilePlan, record: RowSink = ignore_row) -> None:
        self.control = control
        self.prober = prober
        self.profiler = profiler
        self.plan = plan
        self.record = record
        # The config the model was found with: its windows are the baseline's.
        self.baseline_key = control.original_candidate.key
        self.probes = 0

    def load(self, candidate: Candidate) -> str | None:
        return self.control.load(candidate)

    def probe(self, candidate: Candidate, rate: float, *, final: bool = False) -> ProbeResult:
        self.probes += 1
        phase = "baseline" if candidate.key == self.baseline_key else "search"
        outcome = self.prober.probe(candidate, rate, final=final, phase=phase)
        for row in outcome.rows:
            self.record(self.probes, row)
        return outcome.result

    def profile(self) -> ServiceProfile:
        return self.profiler.profile(self.plan)
