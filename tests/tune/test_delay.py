"""The queue delay: decided by the batcher model where it can tell delays apart, by measuring
both ends where it cannot (plain data and scripted servers, no rule of thumb)."""

from __future__ import annotations

import pytest

from triton_ops.tune.batcher import (
    Candidate,
    ServiceProfile,
    predict_goodput,
    predict_goodput_range,
    simulate,
)
from triton_ops.tune.budget import FinalTiming
from triton_ops.tune.events import DelaysUnresolved, TuneEvent
from triton_ops.tune.profiler import execution_gap_us
from triton_ops.tune.ranking import (
    Prediction,
    candidate_space,
    delay_groups,
    group_key,
    measurement_order,
)
from triton_ops.tune.results import CandidateResult, ProbeResult
from triton_ops.tune.search import run_search
from triton_ops.tune.server_stats import ServerWindow
from triton_ops.tune.stats import QuantileEstimate, Verdict


def within(c: Candidate, goodput: float) -> Prediction:
    return Prediction.within(c, goodput, 0.02)


# ---- groups and their resolution

def test_delays_are_separated_only_beyond_the_resolution() -> None:
    group = delay_groups([within(Candidate(16, 0, 1), 200.0),
                          within(Candidate(16, 2000, 1), 198.0),
                          within(Candidate(16, 10_000, 1), 150.0)])[0]
    assert group.best.candidate == Candidate(16, 0, 1)
    # 0 and 2 ms are within each other's resolution; 10 ms is clearly below both.
    assert [p.candidate.max_queue_delay_us for p in group.tied()] == [0, 2000]
    assert not group.resolved
    low, high = group.ends()
    assert (low.candidate.max_queue_delay_us, high.candidate.max_queue_delay_us) == (0, 2000)
    apart = delay_groups([within(Candidate(16, 0, 1), 200.0),
                          within(Candidate(16, 10_000, 1), 170.0)])[0]
    assert apart.resolved and apart.best.candidate == Candidate(16, 0, 1)


def test_groups_are_ranked_by_their_best_prediction() -> None:
    groups = delay_groups([within(Candidate(8, 0, 1), 100.0), within(Candidate(16, 0, 1), 90.0),
                           within(Candidate(16, 5000, 1), 120.0), within(Candidate(8, 0, 2), 60.0)])
    assert [g.key for g in groups] == [(16, 1, ()), (8, 1, ()), (8, 2, ())]


def order_of(groups: list, goodput: dict[str, float] | None = None,
             best: Candidate | None = None) -> list[Candidate]:
    return [s.prediction.candidate for s in measurement_order(
        groups, goodput or {}, group_key(best) if best else None)]


def test_leading_group_the_model_cannot_separate_measures_both_ends_first() -> None:
    preds = [within(Candidate(32, d, 1), 250.0 - d / 10_000) for d in (0, 2000, 10_000)]
    preds += [within(Candidate(16, d, 1), 200.0) for d in (0, 10_000)]
    order = order_of(delay_groups(preds))
    assert order[:2] == [Candidate(32, 0, 1), Candidate(32, 10_000, 1)]
    assert order[2] == Candidate(16, 0, 1)  # then one delay of the next group
    assert set(order) == {p.candidate for p in preds}


def test_leading_group_the_model_separates_measures_its_best_delay_only() -> None:
    preds = [within(Candidate(32, 0, 1), 250.0), within(Candidate(32, 10_000, 1), 200.0),
             within(Candidate(16, 0, 1), 220.0)]
    order = order_of(delay_groups(preds))
    assert order[:2] == [Candidate(32, 0, 1), Candidate(16, 0, 1)]


def test_the_best_measured_group_gets_its_other_end_before_other_groups() -> None:
    preds = [within(Candidate(32, d, 1), 250.0) for d in (0, 10_000)]
    preds += [within(Candidate(16, d, 2), 240.0) for d in (0, 10_000)]
    preds += [within(Candidate(8, 0, 1), 230.0)]
    measured = {Candidate(32, 0, 1).key: 180.0, Candidate(32, 10_000, 1).key: 170.0,
                Candidate(16, 0, 2).key: 210.0}
    order = order_of(delay_groups(preds), measured, best=Candidate(16, 0, 2))
    # the leading group's ends (measured), then the best measured group's other end
    assert order[:4] == [Candidate(32, 0, 1), Candidate(32, 10_000, 1),
                         Candidate(16, 0, 2), Candidate(16, 10_000, 2)]


def test_max_batch_sizes_the_model_cannot_separate_are_measured_at_both_ends() -> None:
    # 16, 32 and 64 are predicted within each other's resolution, 8 clearly below; another
    # instance count is not a peer of the leader.
    preds = [within(Candidate(b, d, 1), g - d / 10_000)
             for b, g in ((8, 170.0), (16, 220.0), (32, 222.0), (64, 221.0))
             for d in (0, 10_000)]
    preds += [within(Candidate(32, 0, 2), 221.5)]
    steps = measurement_order(delay_groups(preds), {}, None)
    order = [s.prediction.candidate for s in steps]
    # the end predicted higher (64) with both delay ends, then the other end (16) at one delay
    assert order[:3] == [Candidate(64, 0, 1), Candidate(64, 10_000, 1), Candidate(16, 0, 1)]
    assert "max_batch_size 16-64, which the model cannot separate" in steps[2].why
    assert order[3] == Candidate(32, 0, 1)  # then the one between them
    # Once the ends are measured (0 delay higher), the other groups start with 0 delay.
    measured = {Candidate(64, 0, 1).key: 200.0, Candidate(64, 10_000, 1).key: 150.0,
                Candidate(16, 0, 1).key: 190.0}
    later = order_of(delay_groups(preds), measured, best=Candidate(64, 0, 1))
    assert later[3:5] == [Candidate(32, 0, 1), Candidate(32, 0, 2)]  # 0 delay first


def test_separated_max_batch_sizes_leave_the_leader_first() -> None:
    preds = [within(Candidate(b, 0, 1), g) for b, g in ((16, 180.0), (32, 222.0), (64, 200.0))]
    assert order_of(delay_groups(preds))[:2] == [Candidate(32, 0, 1), Candidate(64, 0, 1)]


def test_other_groups_start_with_the_end_that_measured_higher() -> None:
    preds = [within(Candidate(32, d, 1), 250.0) for d in (0, 10_000)]
    preds += [within(Candidate(16, d, 1), 200.0) for d in (0, 10_000)]
    # Both ends of the leading group measured: 10 ms held more.
    measured = {Candidate(32, 0, 1).key: 180.0, Candidate(32, 10_000, 1).key: 200.0}
    order = order_of(delay_groups(preds), measured, best=Candidate(32, 10_000, 1))
    assert order[2] == Candidate(16, 10_000, 1)
    # Only the ends measured as a pair are flagged as such (the CLI announces those).
    steps = measurement_order(delay_groups(preds), measured, group_key(Candidate(32, 10_000, 1)))
    assert [s.both_ends for s in steps[:3]] == [True, True, False]
    assert "measured higher elsewhere (high delay)" in steps[2].why


# ---- the search on a server whose delays differ, under a model that cannot tell

SLO_US = 50_000.0
PROFILE = ServiceProfile({1: 500.0, 32: 4000.0}, overhead_us=100.0)


class DelayServer:
    """Loads and probes take fixed times on a fake clock; a probe passes at or below the
    candidate's capacity, which depends on its queue delay."""

    def __init__(self, capacity: dict[Candidate, float]) -> None:
        self.capacity = capacity
        self.clock = 0.0
        self.loaded: Candidate | None = None
        self.measured: list[Candidate] = []

    def now(self) -> float:
        return self.clock

    def load(self, candidate: Candidate) -> str | None:
        self.clock += 2.0
        self.loaded = candidate
        return None

    def probe(self, candidate: Candidate, rate: float, *, final: bool = False) -> ProbeResult:
        assert self.loaded == candidate
        self.clock += 7.0 if final else 4.0
        if not final and candidate not in self.measured:
            self.measured.append(candidate)
        ok = rate <= self.capacity[candidate]
        p99 = QuantileEstimate(0.99, 30_000.0 if ok else 90_000.0, 28_000.0, 33_000.0, 1400,
                               0.95)
        return ProbeResult(rate, Verdict.PASS if ok else Verdict.FAIL, p99, rate)


BASE = Candidate(4, 0, 1)
SPACE = [BASE, *candidate_space([32], [0, 2000, 10_000], [1])]


def delay_blind(c: Candidate) -> float:
    """A model that predicts the same goodput for every delay (what the old rule papered over)."""
    return 100.0 if c == BASE else 400.0


@pytest.mark.parametrize("best_delay", [0, 10_000])
def test_the_delay_is_chosen_by_measuring_both_ends(best_delay: int) -> None:
    capacity = {BASE: 100.0, **{c: (330.0 if c.max_queue_delay_us == best_delay else 300.0)
                                for c in SPACE if c != BASE}}
    server = DelayServer(capacity)
    events: list[TuneEvent] = []
    base = CandidateResult(BASE, 100.0, 100.0, QuantileEstimate(0.99, 30_000.0, 28_000.0,
                                                                33_000.0, 900, 0.95), seconds=14)
    outcome = run_search(SPACE, PROFILE, SLO_US, server, budget_s=300.0, clock=server.now,
                         reserve_s=2.0, done=[base], baseline=base, probe_s=4.0,
                         timing=FinalTiming(load_s=2.0, final_probe_s=7.0),
                         predict=delay_blind, on_event=events.append)
    # Both ends were measured before anything else, and the one that held more is chosen.
    assert server.measured[:2] in ([Candidate(32, 0, 1), Candidate(32, 10_000, 1)],
                                   [Candidate(32, 10_000, 1), Candidate(32, 0, 1)])
    assert outcome.chosen is not None
    assert outcome.chosen.candidate == Candidate(32, best_delay, 1)
    unresolved = [e for e in events if isinstance(e, DelaysUnresolved)]
    assert len(unresolved) == 1
    assert unresolved[0].low.max_queue_delay_us == 0
    assert unresolved[0].high.max_queue_delay_us == 10_000


def test_a_delay_the_model_separates_is_measured_alone() -> None:
    # Under a tight SLO the model predicts a long delay clearly worse: only the short one.
    profile = ServiceProfile({1: 300.0, 16: 900.0})
    space = candidate_space([16], [100, 2000], [1])
    server = DelayServer({c: 5000.0 for c in space})
    run_search(space, profile, 2500.0, server, budget_s=300.0, clock=server.now,
               timing=FinalTiming(load_s=2.0, final_probe_s=7.0), probe_s=4.0)
    assert server.measured[0] == Candidate(16, 100, 1)
    assert predict_goodput(Candidate(16, 100, 1), profile, 2500.0) > \
        predict_goodput_range(Candidate(16, 2000, 1), profile, 2500.0)[1]


# ---- the batcher model: what a delay changes

def test_the_model_resolution_brackets_its_prediction() -> None:
    profile = ServiceProfile({1: 20_000.0, 16: 58_000.0}, parallel_efficiency=0.0)
    c = Candidate(16, 0, 1)
    low, high = predict_goodput_range(c, profile, 120_000.0)
    assert low <= predict_goodput(c, profile, 120_000.0) <= high
    assert high > low  # seeds differ: the model has a resolution, and it is measured


def test_a_delay_forms_larger_batches_below_saturation() -> None:
    # 100 us per execution whatever the batch; bursts of three requests 300 us apart: without
    # a delay each finds the instance idle and goes alone; with a 1 ms delay a burst goes
    # together.
    flat = ServiceProfile({1: 100.0, 8: 100.0})
    arrivals = [i * 1300.0 + j * 300.0 for i in range(4) for j in range(3)]
    assert simulate(Candidate(8, 0, 1), flat, arrivals, warmup_fraction=0).mean_batch() == 1
    assert simulate(Candidate(8, 1000, 1), flat, arrivals,
                    warmup_fraction=0).mean_batch() == 3


def test_the_execution_gap_is_paid_per_execution_and_hidden_by_a_second_instance() -> None:
    no_gap = ServiceProfile({1: 1000.0, 8: 1500.0})
    gap = ServiceProfile({1: 1000.0, 8: 1500.0}, execution_gap_us=500.0)
    one = Candidate(8, 0, 1)
    assert gap.capacity(one) == pytest.approx(8e6 / 2000.0)  # 8 items per 1.5 + 0.5 ms
    assert no_gap.capacity(one) == pytest.approx(8e6 / 1500.0)
    # A request is answered, and the instance free, after the gap.
    lat = simulate(one, gap, [0.0, 100.0], warmup_fraction=0).latencies_us
    assert lat == pytest.approx([1500.0, 1000.0 + 1500.0 + 500.0 - 100.0])
    # Two instances on one device (no parallel speed-up): the device, not the gap, bounds it.
    shared = ServiceProfile({1: 1000.0, 8: 1500.0}, execution_gap_us=500.0,
                            parallel_efficiency=0.0)
    assert shared.capacity(Candidate(8, 0, 2)) == pytest.approx(8e6 / 1500.0)
    again = ServiceProfile.from_dict(gap.to_dict())
    assert again.execution_gap_us == 500.0


def window(executions: int, avg_batch: float, compute_us: dict[int, tuple[int, float]]
           ) -> ServerWindow:
    return ServerWindow(inferences=int(executions * avg_batch), executions=executions,
                        failures=0, queue_us=0.0, compute_input_us=0.0, compute_infer_us=0.0,
                        compute_output_us=0.0, avg_batch=avg_batch,
                        batch_executions={b: n for b, (n, _) in compute_us.items()},
                        batch_compute_us={b: us for b, (_, us) in compute_us.items()})


def test_execution_gap_from_a_saturated_window_only() -> None:
    # 10 executions of 64 in 1.5 s, 140 ms each: 10 ms per execution outside the compute.
    saturated = window(10, 64.0, {64: (10, 140_000.0)})
    assert execution_gap_us(saturated, 1.5, 64) == pytest.approx(10_000.0)
    # Batches of 20 out of 64: the instance waited for work; that is not a gap.
    assert execution_gap_us(window(10, 20.0, {20: (10, 50_000.0)}), 1.5, 64) is None
    assert execution_gap_us(window(0, 0.0, {}), 1.5, 64) is None
