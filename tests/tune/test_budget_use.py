"""The search uses its budget: it stops early only when every remaining candidate is predicted
clearly worse than the best measured one, and says by how much (scripted servers, fake clock)."""

from __future__ import annotations

from triton_ops.tune.batcher import Candidate, ServiceProfile
from triton_ops.tune.budget import FinalTiming
from triton_ops.tune.report import best_summary
from triton_ops.tune.results import CandidateResult, ProbeResult, SearchOutcome
from triton_ops.tune.search import run_search
from triton_ops.tune.stats import QuantileEstimate, Verdict

SLO_US = 50_000.0
PROFILE = ServiceProfile({1: 500.0, 32: 4000.0})
LOAD_S, PROBE_S, FINAL_S = 2.0, 4.0, 7.0
P99 = QuantileEstimate(0.99, 30_000.0, 28_000.0, 33_000.0, 1400, 0.95)


class Server:
    def __init__(self, capacity: dict[Candidate, float]) -> None:
        self.capacity = capacity
        self.clock = 0.0
        self.loaded: Candidate | None = None
        self.measured: list[Candidate] = []

    def now(self) -> float:
        return self.clock

    def load(self, candidate: Candidate) -> str | None:
        self.clock += LOAD_S
        self.loaded = candidate
        return None

    def probe(self, candidate: Candidate, rate: float, *, final: bool = False) -> ProbeResult:
        assert self.loaded == candidate
        self.clock += FINAL_S if final else PROBE_S
        if not final and candidate not in self.measured:
            self.measured.append(candidate)
        ok = rate <= self.capacity[candidate]
        return ProbeResult(rate, Verdict.PASS if ok else Verdict.FAIL, P99, rate)


def search(server: Server, space: list[Candidate], predictions: dict[Candidate, float],
           base: CandidateResult, budget_s: float) -> SearchOutcome:
    return run_search(space, PROFILE, SLO_US, server, budget_s=budget_s, clock=server.now,
                      reserve_s=2.0, done=[base], baseline=base, probe_s=PROBE_S,
                      timing=FinalTiming(load_s=LOAD_S, final_probe_s=FINAL_S),
                      predict=lambda c: predictions[c])


BASE, B, C = Candidate(4, 0, 1), Candidate(32, 0, 1), Candidate(16, 0, 2)


def test_a_candidate_the_model_ranks_lower_is_measured_while_it_could_beat_the_best() -> None:
    # The current config held 0.7 of its prediction, B (ranked first) 0.5 of its own. C is
    # predicted 25% below B, but scaled the way the current config measured it could hold
    # 483 req/s against B's 400: it is measured, and it wins.
    predictions = {BASE: 500.0, B: 800.0, C: 600.0}
    server = Server({BASE: 350.0, B: 400.0, C: 450.0})
    base = CandidateResult(BASE, 500.0, 350.0, P99, seconds=14.0)
    outcome = search(server, [BASE, B, C], predictions, base, 300.0)
    assert server.measured == [B, C]
    assert outcome.chosen is not None and outcome.chosen.candidate == C


def test_the_search_stops_when_every_remaining_candidate_is_clearly_worse() -> None:
    d = Candidate(8, 0, 1)
    predictions = {BASE: 500.0, B: 800.0, C: 300.0, d: 250.0}
    server = Server({BASE: 350.0, B: 560.0, C: 200.0, d: 150.0})
    base = CandidateResult(BASE, 500.0, 350.0, P99, seconds=14.0)
    outcome = search(server, [BASE, B, C, d], predictions, base, 600.0)
    assert server.measured == [B]  # B holds 0.7 of its prediction: C could hold 241 at most
    assert not outcome.stopped_by_budget
    margin = outcome.stop_margin
    assert margin is not None and margin.best_remaining == C
    assert margin.best_measured == B and margin.best_goodput == outcome.results[-1].goodput
    assert margin.optimistic_goodput == 300.0 * 0.7 * 1.15
    assert margin.fraction > 0.5
    assert f"at least {margin.fraction:.0%} below the best measured" in outcome.stop
    best = best_summary("m", SLO_US, outcome, base, PROFILE, [], elapsed_s=100.0,
                        budget_s=600.0)
    assert best["search_stopped"]["reason"] == outcome.stop
    assert best["search_stopped"]["margin"]["fraction_below"] == margin.fraction
    assert best["search_stopped"]["margin"]["best_remaining"] == C.to_dict()


def test_the_search_measures_until_the_time_kept_for_the_end() -> None:
    # Eight candidates the model ranks alike, none clearly worse: the search goes on until
    # starting another would eat into the time kept for the re-measurements and the restore.
    space = [Candidate(mbs, 0, inst) for mbs in (2, 4, 8, 16) for inst in (1, 2)]
    predictions = {c: 400.0 for c in space}
    server = Server({c: 300.0 + c.max_batch_size for c in space})
    base = CandidateResult(Candidate(2, 0, 1), 400.0, 302.0, P99, seconds=14.0)
    budget = 150.0
    outcome = search(server, space, predictions, base, budget)
    assert outcome.stopped_by_budget and outcome.stop == "time budget"
    assert len(server.measured) >= 4
    # Nothing was left on the table: about one candidate's worth of time or less remained
    # when the search stopped, beyond what the end used, and the end fit in the budget.
    assert server.clock + LOAD_S <= budget - 2.0
    assert budget - server.clock < 2 * 14.0 + FinalTiming(LOAD_S, FINAL_S, 2.0).remeasure_s(
        baseline=True)


def test_the_budget_can_start_before_the_run() -> None:
    # The CLI starts the budget when its process started: the whole command fits in it.
    from triton_ops.tune.budget import Budget

    now = [10.0]
    budget = Budget.starting_now(120.0, clock=lambda: now[0], started=7.0)
    assert budget.deadline == 127.0 and budget.elapsed() == 3.0
    assert budget.left() == 117.0
    assert Budget.starting_now(120.0, clock=lambda: now[0]).deadline == 130.0
