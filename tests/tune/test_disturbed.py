"""CPU time stolen by the hypervisor: how it is measured and when a failed probe is repeated."""

from __future__ import annotations

from collections import namedtuple

import pytest

from triton_ops.tune.prober import (
    ProbeSettings,
    disturbed,
    steal_fraction,
    steal_note,
    steal_persists,
)
from triton_ops.tune.results import ProbeResult
from triton_ops.tune.stats import QuantileEstimate, Verdict

# The fields psutil.cpu_times() has on Linux.
CpuTimes = namedtuple("CpuTimes", "user nice system idle iowait irq softirq steal guest "
                                  "guest_nice")
NoSteal = namedtuple("NoSteal", "user nice system idle")


def times(user: float, idle: float, steal: float, guest: float = 0.0) -> CpuTimes:
    return CpuTimes(user, 0.0, 0.0, idle, 0.0, 0.0, 0.0, steal, guest, 0.0)


def test_steal_is_a_share_of_all_cpu_time() -> None:
    before = times(100.0, 100.0, 10.0)
    # 2 cores for 1 s: 1.2 s user, 0.6 s idle, 0.2 s stolen
    after = times(101.2, 100.6, 10.2, guest=0.5)  # guest time is inside user: not counted twice
    assert steal_fraction(before, after) == pytest.approx(0.1)


def test_steal_unknown_without_the_counter_or_elapsed_time() -> None:
    assert steal_fraction(NoSteal(1, 0, 0, 1), NoSteal(2, 0, 0, 2)) is None
    same = times(1.0, 1.0, 0.0)
    assert steal_fraction(same, same) is None


def probe(verdict: Verdict, steal: float | None) -> ProbeResult:
    est = QuantileEstimate(0.99, 80_000.0, 70_000.0, 90_000.0, 1000, 0.95)
    return ProbeResult(1000.0, verdict, est, 990.0, steal=steal)


def test_only_a_failure_under_heavy_steal_is_measured_again() -> None:
    settings = ProbeSettings(max_steal_fraction=0.05)
    assert disturbed(probe(Verdict.FAIL, 0.12), settings)
    # a generator late because the machine's CPU was taken away
    assert disturbed(probe(Verdict.GENERATOR_LIMITED, 0.3), settings)
    assert not disturbed(probe(Verdict.FAIL, 0.02), settings)  # the config's own failure
    assert not disturbed(probe(Verdict.GENERATOR_LIMITED, 0.01), settings)
    assert not disturbed(probe(Verdict.FAIL, None), settings)  # remote server: unknown
    assert not disturbed(probe(Verdict.PASS, 0.3), settings)  # steal only makes things worse


def test_retries_stop_while_the_steal_persists() -> None:
    settings = ProbeSettings(max_steal_fraction=0.05, persistent_steal_probes=3)
    # A passing hiccup: measure again.
    assert not steal_persists([0.01, 0.0, 0.20], settings)
    assert not steal_persists([0.20, 0.30], settings)  # too few probes to say
    # Three disturbed probes in a row: the machine's state, not a hiccup.
    assert steal_persists([0.0, 0.14, 0.29, 0.18], settings)
    # One undisturbed probe since: retries are worth it again.
    assert not steal_persists([0.14, 0.29, 0.18, 0.02], settings)
    assert not steal_persists([0.14, None, 0.18], settings)  # unknown is not disturbed
    assert not steal_persists([0.3, 0.3, 0.3], ProbeSettings(persistent_steal_probes=0))


def test_steal_note_only_when_the_median_window_was_disturbed() -> None:
    assert steal_note([], 0.05) is None
    # Episodes in a few windows: the retries deal with those.
    assert steal_note([0.01, 0.02, 0.30, 0.0, 0.01], 0.05) is None
    note = steal_note([0.14, 0.20, 0.29, 0.02, 0.24], 0.05)
    assert note is not None
    assert "20% of this machine's CPU at the median of 5" in note and "up to 29%" in note
    assert "measure again" in note
