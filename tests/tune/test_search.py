"""The search against a simulated system whose true costs differ from the profiled ones."""

from __future__ import annotations

import itertools

from triton_ops.tune.batcher import (
    Candidate,
    ServiceProfile,
    poisson_arrivals_us,
    simulate,
)
from triton_ops.tune.bisection import BisectionSettings, bisect_rate, first_rate
from triton_ops.tune.ranking import (
    Prediction,
    candidate_space,
    delay_groups,
    prune_by_memory,
)
from triton_ops.tune.results import ProbeResult
from triton_ops.tune.search import SearchSettings, run_search
from triton_ops.tune.stats import Verdict, quantile_ci, slo_verdict

SLO_US = 4000.0
# What the profile says vs what the "server" really does (20% slower, instances scale worse).
PROFILED = ServiceProfile({1: 500.0, 4: 600.0, 16: 1000.0, 64: 2600.0}, overhead_us=150.0,
                          parallel_efficiency=0.8)
TRUE = ServiceProfile({1: 600.0, 4: 720.0, 16: 1200.0, 64: 3100.0}, overhead_us=200.0,
                      parallel_efficiency=0.5)


class SimulatedServer:
    """A SearchTarget whose measurements are simulations of TRUE with fresh seeds."""

    def __init__(self, broken: set[Candidate] = frozenset()) -> None:  # type: ignore[assignment]
        self.loaded: Candidate | None = None
        self.loads = 0
        self.probes = 0
        self.clock = 0.0
        self.broken = broken
        self.seed = itertools.count(100)

    def now(self) -> float:
        return self.clock

    def load(self, candidate: Candidate) -> str | None:
        self.clock += 2.0
        self.loads += 1
        if candidate in self.broken:
            return "failed to load: out of memory"
        self.loaded = candidate
        return None

    def probe(self, candidate: Candidate, rate: float, *, final: bool = False) -> ProbeResult:
        assert self.loaded == candidate
        self.probes += 1
        self.clock += 3.0
        if rate >= TRUE.capacity(candidate):
            lat = [1e9] * 100
        else:
            lat = simulate(candidate, TRUE,
                           poisson_arrivals_us(rate, 2500, next(self.seed))).latencies_us
        est = quantile_ci(lat, 0.99)
        return ProbeResult(rate, slo_verdict(est, SLO_US, stable=True), est, rate)


SPACE = candidate_space([1, 4, 16, 64], [0, 500, 2000], [1, 2])


def grid_best() -> float:
    best = 0.0
    for c in SPACE:
        server = SimulatedServer()
        server.load(c)
        guess = TRUE.capacity(c) * 0.5
        goodput, *_ = bisect_rate(lambda r, c=c, s=server: s.probe(c, r), guess,
                                  BisectionSettings(rel_tol=0.05))
        best = max(best, goodput)
    return best


def test_space_drops_delays_that_cannot_matter() -> None:
    space = candidate_space([1, 8], [0, 100], [1])
    assert space == [Candidate(1, 0, 1), Candidate(8, 0, 1), Candidate(8, 100, 1)]
    with_pref = candidate_space([8], [0], [1], preferred=True)
    assert Candidate(8, 0, 1, (2, 4, 8)) not in with_pref  # same as no preferred sizes
    assert candidate_space([12], [0], [1], preferred=True)[-1].preferred_batch_sizes == (2, 4, 8)


def test_prune_by_memory() -> None:
    fits, skipped = prune_by_memory(
        SPACE, per_instance_bytes=lambda mbs: 1000 + 100 * mbs, available_bytes=4000)
    assert all((1000 + 100 * c.max_batch_size) * c.instance_count <= 4000 for c in fits)
    assert {s.candidate for s in skipped} == {c for c in SPACE if c not in fits}
    assert all(s.status == "skipped" and "GPU memory" in s.reason for s in skipped)
    assert prune_by_memory(SPACE, per_instance_bytes=None, available_bytes=None) == (SPACE, [])


def test_groups_keep_shortest_delay_among_exact_twins() -> None:
    groups = delay_groups([Prediction.within(c, c.max_batch_size * c.instance_count, 0.02)
                           for c in SPACE])
    assert groups[0].best.candidate == Candidate(64, 0, 2)
    assert all(g.best.candidate.max_queue_delay_us == 0 for g in groups)


def test_bisection_brackets_from_a_bad_guess() -> None:
    capacity = 1234.0

    def probe(rate: float) -> ProbeResult:
        est = quantile_ci([1.0] * 200, 0.99)
        verdict = Verdict.PASS if rate <= capacity else Verdict.FAIL
        return ProbeResult(rate, verdict, est)

    for guess in (50.0, 1200.0, 9000.0):
        goodput, p99, limited, probes = bisect_rate(
            probe, guess, BisectionSettings(rel_tol=0.03, max_probes=20))
        assert capacity * 0.96 <= goodput <= capacity
        assert p99 is not None and not limited


def test_bisection_climbs_faster_when_far_below_the_seen_ceiling() -> None:
    # A prediction 20x too low: knowing the system completed 3,500 req/s closed-loop, the
    # bracket grows 8x at a time instead of 2x.
    capacity = 3000.0

    def probe(rate: float) -> ProbeResult:
        est = quantile_ci([1.0] * 200, 0.99)  # far under the SLO below capacity
        return ProbeResult(rate, Verdict.PASS if rate <= capacity else Verdict.FAIL, est)

    plain = bisect_rate(probe, 150.0, BisectionSettings(rel_tol=0.05, max_probes=20), slo_us=100.0)
    informed = bisect_rate(probe, 150.0, BisectionSettings(rel_tol=0.05, max_probes=20),
                           slo_us=100.0, ceiling=3500.0)
    assert capacity * 0.95 <= informed[0] <= capacity
    assert capacity * 0.95 <= plain[0] <= capacity
    assert len(informed[3]) < len(plain[3])


def test_bisection_flags_generator_limit() -> None:
    def probe(rate: float) -> ProbeResult:
        verdict = Verdict.PASS if rate <= 500 else Verdict.GENERATOR_LIMITED
        return ProbeResult(rate, verdict, quantile_ci([1.0] * 200, 0.99))

    goodput, _, limited, _ = bisect_rate(probe, 400.0,
                                         BisectionSettings(rel_tol=0.02, max_probes=20))
    assert limited and 480 <= goodput <= 500


def test_search_finds_near_grid_best_with_far_fewer_probes() -> None:
    server = SimulatedServer(broken={Candidate(64, 0, 2)})
    outcome = run_search(SPACE, PROFILED, SLO_US, server, budget_s=600, clock=server.now)
    best_grid = grid_best()
    assert outcome.best is not None
    assert outcome.best.goodput >= 0.9 * best_grid
    infeasible = [r for r in outcome.results if r.status == "infeasible"]
    assert [r.candidate for r in infeasible] == [Candidate(64, 0, 2)]
    measured = [r for r in outcome.results if r.status == "measured"]
    assert len(measured) < len(SPACE) / 2
    assert outcome.final is not None and outcome.final.verdict is Verdict.PASS
    assert 0 < outcome.final_rate <= outcome.best.goodput
    assert 0.5 < outcome.calibration < 1.1  # the true server is slower than profiled


def test_first_rate_starts_no_higher_than_half_the_ceiling_or_the_best_so_far() -> None:
    # Without a measured ceiling: the calibrated prediction.
    assert first_rate(3600.0, 0.5, ceiling=None) == 1800.0
    # A prediction above what open-loop arrivals hold starts at half the closed-loop ceiling,
    assert first_rate(3600.0, 1.0, ceiling=3000.0) == 1500.0
    # or at the best goodput measured so far when that is higher;
    assert first_rate(3600.0, 1.0, ceiling=3000.0, best_goodput=1800.0) == 1800.0
    # a prediction below both is kept.
    assert first_rate(1000.0, 0.9, ceiling=3000.0, best_goodput=800.0) == 900.0


def test_search_starts_each_bisection_below_the_ceiling() -> None:
    server = SimulatedServer()
    rates: list[tuple[Candidate, float]] = []
    probe = server.probe

    def recording_probe(candidate: Candidate, rate: float, *, final: bool = False) -> ProbeResult:
        rates.append((candidate, rate))
        return probe(candidate, rate, final=final)

    server.probe = recording_probe  # type: ignore[method-assign]
    ceiling = 25000.0  # above what the simulated server holds, as a real ceiling is
    # The model predicts more than the ceiling for every batching candidate, as it does for
    # the large batches of a CPU model.
    profile = ServiceProfile(dict(PROFILED.batch_us), ceiling_rps=ceiling, ceiling_batch=64)
    # One queue delay: this predictor cannot tell delays apart, which would add both ends.
    space = candidate_space([1, 4, 16, 64], [0], [1, 2])
    outcome = run_search(space, profile, SLO_US, server, budget_s=600, clock=server.now,
                         predict=lambda c: 1.2 * ceiling * c.max_batch_size / 64)
    measured = [r for r in outcome.results if r.status == "measured"]
    # max_batch 64 with one and with two instances; the rest are predicted far lower.
    assert len(measured) == 2
    best = 0.0
    for result in measured:
        first = next(rate for cand, rate in rates if cand == result.candidate)
        assert first <= max(ceiling / 2, best) + 1e-9
        assert first < 1.2 * ceiling * result.candidate.max_batch_size / 64
        best = max(best, result.goodput)


def test_search_respects_budget() -> None:
    server = SimulatedServer()
    outcome = run_search(SPACE, PROFILED, SLO_US, server, budget_s=20, clock=server.now)
    # One candidate (load + a few probes) fits, then the budget stops the search.
    assert outcome.stopped_by_budget or len(
        [r for r in outcome.results if r.status == "measured"]) <= 2
    assert server.clock < 20 + 40  # at most one bisection plus the final re-measurement


def test_resume_skips_done_candidates() -> None:
    server = SimulatedServer()
    first = run_search(SPACE, PROFILED, SLO_US, server, budget_s=600, clock=server.now,
                       settings=SearchSettings(max_measured=1))
    assert len([r for r in first.results if r.status == "measured"]) == 1
    server2 = SimulatedServer()
    second = run_search(SPACE, PROFILED, SLO_US, server2, budget_s=600, clock=server2.now,
                        done=first.results, settings=SearchSettings(max_measured=3))
    keys = [r.candidate.key for r in second.results]
    assert len(keys) == len(set(keys))
    assert first.results[0] in second.results
