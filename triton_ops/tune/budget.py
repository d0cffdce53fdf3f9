"""The time budget of a tune run: one deadline, the time kept back for the end of the run, and
estimates of what the end costs that grow with what was seen.

The budget covers everything up to and including the restore of the original config and
the report. The end of a run re-measures the winner (and the current config) with longer
probes, then restores the original config: that time is estimated from the longest model
load and probe seen so far and kept back from the search.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class FinalTiming:
    """How long the end of a run takes, estimated from what was measured so far."""

    load_s: float = 0.0  # one model load (candidate or restore)
    final_probe_s: float = 0.0  # one re-measurement probe
    reserve_s: float = 0.0  # report writing and slack
    # Loading the baseline puts back exactly the original config, so when the baseline is
    # re-measured last the restore needs no load.
    baseline_restores: bool = False

    def remeasure_s(self, *, baseline: bool, contenders: int = 0) -> float:
        """Re-measure the winner (one step down included), `contenders` candidates at the rate
        it held, and, when `baseline`, the baseline once, then restore the original config."""
        winner = self.load_s + 2 * self.final_probe_s
        others = contenders * (self.load_s + self.final_probe_s)
        base = (self.load_s + self.final_probe_s) if baseline else 0.0
        restore = 0.0 if baseline and self.baseline_restores else self.load_s
        return winner + others + base + restore + self.reserve_s


@dataclass
class Budget:
    """A deadline on `clock`, with running estimates of a load, a probe and a candidate."""

    deadline: float
    clock: Callable[[], float] = time.monotonic
    reserve_s: float = 0.0  # kept back at the very end (report)
    first: FinalTiming = field(default_factory=FinalTiming)  # estimates before anything ran
    probe_s: float = 0.0  # first estimate of one search probe
    started: float = 0.0
    _loads: list[float] = field(default_factory=list)
    _probes: list[float] = field(default_factory=list)
    _finals: list[float] = field(default_factory=list)
    _candidates: list[float] = field(default_factory=list)

    @classmethod
    def starting_now(cls, seconds: float, *, clock: Callable[[], float] = time.monotonic,
                     reserve_s: float = 0.0, first: FinalTiming | None = None,
                     probe_s: float = 0.0, started: float | None = None) -> Budget:
        """A budget of `seconds` from `started` on `clock` (default: now)."""
        start = clock() if started is None else started
        return cls(start + seconds, clock, reserve_s, first or FinalTiming(), probe_s, start)

    # ---- what was seen ----------------------------------------------------------------------
    def saw_load(self, seconds: float) -> None:
        self._loads.append(seconds)

    def saw_probe(self, seconds: float, *, final: bool = False) -> None:
        (self._finals if final else self._probes).append(seconds)

    def saw_candidate(self, seconds: float) -> None:
        self._candidates.append(seconds)

    @property
    def baseline_restores(self) -> bool:
        return self.first.baseline_restores

    @baseline_restores.setter
    def baseline_restores(self, value: bool) -> None:
        self.first.baseline_restores = value

    # ---- estimates -------------------------------------------------------------------------
    def load_estimate(self) -> float:
        return max([self.first.load_s, *self._loads])

    def probe_estimate(self) -> float:
        """One search probe: the longest seen, or the first estimate."""
        return max([self.probe_s, *self._probes])

    def candidate_estimate(self) -> float:
        """One candidate's load and bisection: the median of those measured (0: none yet)."""
        return statistics.median(self._candidates) if self._candidates else 0.0

    def end(self) -> FinalTiming:
        """What the end of the run costs, as far as can be told now."""
        final = max([self.first.final_probe_s, *self._finals, *self._probes])
        return FinalTiming(self.load_estimate(), final, self.reserve_s,
                           baseline_restores=self.first.baseline_restores)

    # ---- time left -------------------------------------------------------------------------
    def now(self) -> float:
        return self.clock()

    def left(self) -> float:
        return self.deadline - self.clock()

    def elapsed(self) -> float:
        return self.clock() - self.started

    def used_fraction(self) -> float:
        total = self.deadline - self.started
        return self.elapsed() / total if total > 0 else 1.0

    def search_left(self, *, keep_baseline_remeasure: bool, contenders: int = 0) -> float:
        """Time the search may still use, after the re-measurements and the restore."""
        return self.left() - self.end().remeasure_s(baseline=keep_baseline_remeasure,
                                                    contenders=contenders)

    def before_restore(self, *, restores: bool) -> float:
        """Time left before the restore (one load, unless loading this config restores the
        original) and the report."""
        end = self.end()
        return self.left() - end.reserve_s - (0.0 if restores else end.load_s)
