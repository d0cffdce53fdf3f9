"""Candidates the search cannot tell from the winner are compared with it at the rate it held,
by their p99 there (scripted server, fake clock)."""

from __future__ import annotations

from triton_ops.tune.batcher import Candidate, ServiceProfile
from triton_ops.tune.budget import FinalTiming
from triton_ops.tune.results import CandidateResult, ProbeResult, SearchOutcome
from triton_ops.tune.search import run_search
from triton_ops.tune.stats import QuantileEstimate, Verdict

SLO_US = 120_000.0
PROFILE = ServiceProfile({1: 20_000.0, 32: 100_000.0})
BASE, WIN, RIVAL, FAR = (Candidate(4, 0, 1), Candidate(32, 0, 1), Candidate(16, 0, 1),
                         Candidate(8, 0, 1))
PREDICTED = {BASE: 110.0, WIN: 215.0, RIVAL: 214.0, FAR: 213.0}


class HeadroomServer:
    """p99 grows with the rate towards the SLO at the candidate's capacity (a separate
    capacity for re-measurements); the CI is 2% either side; loads and probes take fixed times."""

    def __init__(self, search: dict[Candidate, float], final: dict[Candidate, float]) -> None:
        self.search, self.final = search, final
        self.clock = 0.0
        self.loaded: Candidate | None = None
        self.finals: list[tuple[Candidate, float, float]] = []

    def now(self) -> float:
        return self.clock

    def load(self, candidate: Candidate) -> str | None:
        self.clock += 2.0
        self.loaded = candidate
        return None

    def probe(self, candidate: Candidate, rate: float, *, final: bool = False) -> ProbeResult:
        assert self.loaded == candidate
        self.clock += 8.0 if final else 3.0
        capacity = (self.final if final else self.search)[candidate]
        p99 = SLO_US * rate / capacity
        est = QuantileEstimate(0.99, p99, 0.98 * p99, 1.02 * p99, 1200, 0.95)
        if final:
            self.finals.append((candidate, rate, p99))
        return ProbeResult(rate, Verdict.PASS if p99 <= SLO_US else Verdict.FAIL, est, rate)


def search(server: HeadroomServer, space: list[Candidate], budget_s: float = 400.0
           ) -> SearchOutcome:
    base = CandidateResult(BASE, 110.0, 110.0,
                           QuantileEstimate(0.99, 90_000.0, 88_000.0, 92_000.0, 900, 0.95),
                           seconds=14.0)
    return run_search(space, PROFILE, SLO_US, server, budget_s=budget_s, clock=server.now,
                      reserve_s=2.0, done=[base], baseline=base, probe_s=3.0,
                      timing=FinalTiming(load_s=2.0, final_probe_s=8.0),
                      predict=lambda c: PREDICTED[c])


def test_a_rival_with_more_headroom_at_the_winners_rate_is_chosen() -> None:
    # The search measures WIN and RIVAL alike; re-measured at the rate WIN holds, RIVAL's p99
    # is clearly lower: it holds more.
    server = HeadroomServer({BASE: 110.0, WIN: 230.0, RIVAL: 229.0},
                            {BASE: 110.0, WIN: 232.0, RIVAL: 280.0})
    outcome = search(server, [BASE, WIN, RIVAL])
    win = next(r for r in outcome.results if r.candidate == WIN)
    rival = next(r for r in outcome.results if r.candidate == RIVAL)
    assert abs(win.goodput - rival.goodput) <= 0.08 * max(win.goodput, rival.goodput)
    first = [(c, rate) for c, rate, _ in server.finals]
    held = next(rate for c, rate in first if c == first[0][0])
    assert (RIVAL if first[0][0] == WIN else WIN, held) in first  # compared at the same rate
    assert outcome.chosen is not None and outcome.chosen.candidate == RIVAL
    assert outcome.final_rate == held
    assert any("more headroom, so it is chosen" in n for n in outcome.notes)
    assert [c for c, _, _ in server.finals][-1] == BASE  # the baseline's re-measurement last


def test_a_rival_within_the_noise_leaves_the_winner() -> None:
    server = HeadroomServer({BASE: 110.0, WIN: 230.0, RIVAL: 229.0},
                            {BASE: 110.0, WIN: 240.0, RIVAL: 242.0})
    outcome = search(server, [BASE, WIN, RIVAL])
    assert outcome.best is not None
    winner = outcome.best.candidate
    assert len([c for c, _, _ in server.finals if c in (WIN, RIVAL)]) == 2
    assert any("not lower beyond their confidence intervals" in n and
               f"so {winner.label()} stays" in n for n in outcome.notes)


def test_a_candidate_clearly_below_the_winner_is_not_compared() -> None:
    server = HeadroomServer({BASE: 110.0, WIN: 230.0, FAR: 150.0},
                            {BASE: 110.0, WIN: 232.0, FAR: 400.0})
    outcome = search(server, [BASE, WIN, FAR])
    assert FAR not in [c for c, _, _ in server.finals]
    assert outcome.chosen is not None and outcome.chosen.candidate == WIN


def test_no_comparison_crowds_out_the_baselines_remeasurement() -> None:
    compared = 0
    for budget in range(60, 161, 4):
        server = HeadroomServer({BASE: 110.0, WIN: 230.0, RIVAL: 229.0},
                                {BASE: 110.0, WIN: 232.0, RIVAL: 280.0})
        outcome = search(server, [BASE, WIN, RIVAL], budget_s=float(budget))
        finals = [c for c, _, _ in server.finals]
        assert server.clock + 2.0 <= budget - 2.0, budget  # the restore still fits
        if RIVAL in finals and WIN in finals:
            compared += 1
            assert finals[-1] == BASE, budget
        if outcome.best is not None and outcome.best.candidate != BASE and BASE not in finals:
            assert not any("more headroom" in n for n in outcome.notes), budget
    assert compared > 0


def test_a_rival_that_holds_where_the_winner_failed_is_chosen() -> None:
    # Re-measured, WIN fails at its search goodput and holds one step down; RIVAL, probed at
    # the rate where WIN failed, holds it.
    server = HeadroomServer({BASE: 110.0, WIN: 230.0, RIVAL: 222.0},
                            {BASE: 110.0, WIN: 215.0, RIVAL: 240.0})
    outcome = search(server, [BASE, WIN, RIVAL])
    finals = [(c, rate) for c, rate, _ in server.finals]
    failed_at = finals[0][1]
    assert finals[0][0] == WIN and finals[1][0] == WIN and finals[1][1] < failed_at
    assert (RIVAL, failed_at) in finals  # compared where WIN failed, not where it held
    assert outcome.chosen is not None and outcome.chosen.candidate == RIVAL
    assert outcome.final_rate == failed_at
    assert any("where max_batch=32" in n and "so it is chosen" in n for n in outcome.notes)
    assert finals[-1][0] == BASE


def test_a_rival_below_the_bracket_but_above_the_winners_held_rate_is_compared() -> None:
    # RIVAL's search goodput is outside the bisection's bracket of WIN's, but above the rate
    # WIN held on re-measurement: it may hold more, so it meets WIN where WIN failed.
    server = HeadroomServer({BASE: 110.0, WIN: 230.0, RIVAL: 200.0},
                            {BASE: 110.0, WIN: 175.0, RIVAL: 210.0})
    outcome = search(server, [BASE, WIN, RIVAL])
    win_rates = [rate for c, rate, _ in server.finals if c == WIN]
    held = win_rates[-1]
    rival_rates = [rate for c, rate, _ in server.finals if c == RIVAL]
    assert RIVAL in [r.candidate for r in outcome.results] and held < 200.0
    assert rival_rates and rival_rates[0] == min(r for r in win_rates if r > held)
    assert outcome.chosen is not None and outcome.chosen.candidate == RIVAL
    assert outcome.final_rate > held


def test_a_rival_that_fails_where_the_winner_failed_is_compared_where_it_held() -> None:
    server = HeadroomServer({BASE: 110.0, WIN: 230.0, RIVAL: 225.0},
                            {BASE: 110.0, WIN: 215.0, RIVAL: 216.0})
    outcome = search(server, [BASE, WIN, RIVAL])
    win_rates = [rate for c, rate, _ in server.finals if c == WIN]
    rival_rates = [rate for c, rate, _ in server.finals if c == RIVAL]
    assert rival_rates == [win_rates[0], win_rates[-1]]
    assert outcome.chosen is not None and outcome.chosen.candidate == WIN
    assert any("not lower beyond their confidence intervals" in n for n in outcome.notes)
