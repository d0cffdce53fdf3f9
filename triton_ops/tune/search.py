"""The search: which candidate configs to measure, and the end of the run that confirms one.

Pure logic over a `SearchTarget` (load a candidate, probe it at an arrival rate) and a
`Budget`: the live run plugs in Triton, the tests plug in simulations and scripted servers.
`Search` runs in named steps:

1. `profile()` — the service profile the model predicts from (live targets only);
2. `baseline(candidate)` — the config the model runs with, measured like every candidate;
3. `candidates()` — measure in the order `ranking.measurement_order` gives, until every
   remaining candidate is predicted clearly worse than the best measured one (by how much is
   kept in `stop_margin`) or the time kept back for the end is reached;
4. `remeasure()` — the winner (runners-up when it does not hold) and the baseline, back to
   back, with longer probes;
5. `choose()` — the outcome: the winner, or the current config when the winner does not
   beat it on re-measurement.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from triton_ops.tune.batcher import (
    Candidate,
    ServiceProfile,
    predict_goodput,
    predict_goodput_range,
)
from triton_ops.tune.bisection import BisectionSettings, bisect_rate, first_rate
from triton_ops.tune.budget import Budget, FinalTiming
from triton_ops.tune.events import (
    BaselineKept,
    CandidateInfeasible,
    CandidateMeasured,
    CandidateStarted,
    ContenderRemeasured,
    DelaysUnresolved,
    EventSink,
    Note,
    PhaseStarted,
    ProbeStarted,
    RunnerUpRemeasured,
    SearchStopped,
    ignore,
)
from triton_ops.tune.ranking import (
    DelayGroup,
    GroupKey,
    Prediction,
    Step,
    batch_size_peers,
    delay_groups,
    group_key,
    measurement_order,
)
from triton_ops.tune.results import (
    CandidateResult,
    ProbeResult,
    Remeasurement,
    SearchOutcome,
    StopMargin,
)
from triton_ops.tune.stats import Verdict


class SearchTarget(Protocol):
    def load(self, candidate: Candidate) -> str | None:
        """Apply the candidate; None when it loaded, else the reason it cannot."""

    def probe(self, candidate: Candidate, rate: float, *, final: bool = False) -> ProbeResult:
        """Measure the loaded candidate at a Poisson arrival rate (req/s)."""


class ProfilingTarget(SearchTarget, Protocol):
    def profile(self) -> ServiceProfile:
        """Measure what one execution costs per batch size (and what a request costs)."""


@dataclass(frozen=True)
class SearchSettings:
    bisection: BisectionSettings = field(default_factory=BisectionSettings)
    max_measured: int = 12
    # A remaining candidate is clearly worse when even its prediction scaled by the highest
    # measured/predicted ratio seen, plus this margin, is below the best measured goodput.
    hopeless_margin: float = 0.15
    # Relative resolution of a prediction given by a caller's `predict` (the built-in model
    # measures its own: the spread of its predictions over seeds).
    prediction_tolerance: float = 0.02
    final_steps: int = 3  # step-downs of a re-measurement that does not hold
    step_down: float = 0.85
    # Candidates the search cannot tell from the winner (search goodput within the
    # bisection's bracket of it, or above the rate it held on re-measurement) compared with it
    # where it failed and where it held, at most this many.
    contenders: int = 2


def keep_baseline_decision(winner: CandidateResult, winner_rate: float | None,
                           baseline: CandidateResult | None, baseline_rate: float | None
                           ) -> tuple[bool, str]:
    """Whether to recommend the current config instead of the search's winner.

    `winner_rate`: the winner's re-measured goodput (0 when no re-measured rate passed; None
    when it could not be re-measured at all, e.g. for lack of budget: an unconfirmed winner
    is not worth a config change either).
    `baseline_rate`: the baseline's re-measured goodput, or None when it was not re-measured
    (then its search goodput is the comparison). A winner that is the baseline, or whose
    re-measured goodput is not above the baseline's, is not worth a config change.
    """
    if baseline is None or (baseline.goodput <= 0 and not baseline_rate):
        return False, ""
    if winner.candidate.key == baseline.candidate.key:
        return True, "no candidate measured better than the current config"
    if winner_rate is None:
        return True, (f"{winner.candidate.label()} could not be re-measured, so its search "
                      "goodput is unconfirmed")
    if baseline_rate is not None:
        ref, how = baseline_rate, "re-measured"
    else:
        ref, how = baseline.goodput, "measured in the search"
    if winner_rate <= ref:
        return True, (f"{winner.candidate.label()} re-measured at {winner_rate:.0f} req/s, "
                      f"not above the current config's {ref:.0f} req/s ({how})")
    return False, ""


class Search:
    """One tune run's search state; see the module docstring for the steps."""

    def __init__(self, space: Sequence[Candidate], slo_us: float, target: SearchTarget,
                 budget: Budget, *, profile: ServiceProfile | None = None,
                 settings: SearchSettings | None = None,
                 predict: Callable[[Candidate], float] | None = None,
                 done: Sequence[CandidateResult] = (), baseline: CandidateResult | None = None,
                 on_event: EventSink = ignore) -> None:
        self.space = list(space)
        self.slo_us = slo_us
        self.target = target
        self.budget = budget
        self.service = profile
        self.settings = settings or SearchSettings()
        self.custom_predict = predict
        self.on_event = on_event
        self.results: list[CandidateResult] = list(done)
        self.base = baseline
        if baseline is not None and not any(self.is_base(r) for r in self.results):
            self.results.append(baseline)
        for r in self.measured():  # measured before (--resume): how long a candidate takes
            budget.saw_candidate(r.seconds)
        self.notes: list[str] = []
        self.remeasurements: list[Remeasurement] = []
        self.stopped_by_budget = False
        self.short_by_s = 0.0  # how much more time the first candidate not started needed
        self.stop = ""
        self.stop_margin: StopMargin | None = None
        self.winner: CandidateResult | None = None
        self.winner_rem: Remeasurement | None = None
        self.base_rem: Remeasurement | None = None
        self._predictions: list[Prediction] | None = None
        self._refined: dict[GroupKey, DelayGroup] = {}
        self._announced: set[GroupKey] = set()

    # ---- what is known ---------------------------------------------------------------------
    def is_base(self, r: CandidateResult) -> bool:
        return self.base is not None and r.candidate.key == self.base.candidate.key

    def measured(self) -> list[CandidateResult]:
        return [r for r in self.results if r.status == "measured"]

    def rivals(self) -> list[CandidateResult]:
        """The measured candidates other than the baseline (all of them without one)."""
        return [r for r in self.measured() if not self.is_base(r)]

    def best_so_far(self) -> CandidateResult | None:
        """The highest goodput measured; a candidate that ties the baseline wins the tie, so
        that both are re-measured back to back (bisections start at the best goodput so far,
        so a tie means the candidate held it and nothing more was tried)."""
        ok = [r for r in self.measured() if r.goodput > 0]
        return max(ok, key=lambda r: (r.goodput, not self.is_base(r))) if ok else None

    def ratios(self) -> list[float]:
        """Measured / predicted goodput of every candidate measured with both."""
        return [r.goodput / r.predicted_goodput for r in self.measured()
                if r.predicted_goodput > 0 and r.goodput > 0]

    def calibration(self) -> float:
        ratios = self.ratios()
        return statistics.median(ratios) if ratios else 1.0

    def predict(self, candidate: Candidate) -> float:
        if self.custom_predict is not None:
            return self.custom_predict(candidate)
        if self.service is None:
            raise RuntimeError("the search needs a service profile or a predict function")
        return predict_goodput(candidate, self.service, self.slo_us)

    # ---- 1. profile and 2. baseline --------------------------------------------------------
    def profile(self) -> ServiceProfile:
        """Measure the service profile on a target that can (`ProfilingTarget`)."""
        self.on_event(PhaseStarted("profile"))
        profiling: ProfilingTarget = self.target  # type: ignore[assignment]
        self.service = profiling.profile()
        return self.service

    def baseline(self, candidate: Candidate) -> CandidateResult:
        """Measure the current config through the same path as every candidate."""
        self.on_event(PhaseStarted("baseline"))
        result = self._measure(candidate, self.predict(candidate), "the current config",
                               baseline=True)
        self.base = result
        return result

    # ---- 3. candidates ---------------------------------------------------------------------
    def candidates(self) -> None:
        """Measure candidates until none is worth it or the time kept for the end is reached."""
        self.on_event(PhaseStarted("search"))
        while True:
            step = self._next_step()
            if step is None:
                break
            if len(self.measured()) >= self.settings.max_measured:
                self._stopped(f"measured {self.settings.max_measured} candidates")
                break
            if not self._room_for_a_candidate():
                break
            if step.both_ends:
                self._announce_unresolved(step.prediction.candidate)
            self._measure(step.prediction.candidate, step.prediction.goodput, step.why)

    def _room_for_a_candidate(self) -> bool:
        """About one candidate's worth of time left after the time kept for the end."""
        need = max(self.budget.candidate_estimate(), 2 * self.budget.probe_estimate())
        left = self._search_left()
        if left < need or left <= 0:
            self.stopped_by_budget = True
            self.short_by_s = need - left
            self._stopped("time budget")
            return False
        return True

    def _search_left(self) -> float:
        """The baseline's re-measurement is kept back only while another candidate is the best
        so far: while the baseline leads, the end re-measures it alone, and under a short
        budget one more candidate is worth more than time kept for a comparison that may never
        happen (should that candidate win, the baseline is still re-measured when the time is
        there, else the winner is compared with its search goodput)."""
        best = self.best_so_far()
        both = self.base is not None and best is not None and not self.is_base(best)
        # While the best has a rival the search cannot tell from it, one comparison at the end
        # is kept back too.
        contender = best is not None and not self.is_base(best) and bool(
            self.close_rivals(best)) and self.settings.contenders > 0
        return self.budget.search_left(keep_baseline_remeasure=both,
                                       contenders=int(contender))

    def _stopped(self, reason: str) -> None:
        self.stop = reason
        self.on_event(SearchStopped(reason))

    def _next_step(self) -> Step | None:
        """The next candidate to measure and why; None (with the reason) when every remaining
        candidate is predicted clearly worse than the best measured one, or none is left."""
        tried = {r.candidate.key for r in self.results}
        goodput = {r.candidate.key: r.goodput for r in self.measured()}
        best = self.best_so_far()
        order = measurement_order(self._groups(best), goodput,
                                  group_key(best.candidate) if best else None)
        remaining = [s for s in order if s.prediction.candidate.key not in tried]
        if not remaining:
            self._stopped("every candidate was measured")
            return None
        for step in remaining:
            if not self._hopeless(step.prediction, best):
                return step
        top = max((s.prediction for s in remaining), key=lambda p: p.goodput)
        assert best is not None  # nothing is hopeless without a best measured candidate
        self.stop_margin = StopMargin(top.candidate, self._optimistic(top), best.candidate,
                                      best.goodput)
        self._stopped(
            f"every remaining candidate is predicted at least {self.stop_margin.fraction:.0%} "
            f"below the best measured ({top.candidate.label()}: at most "
            f"{self.stop_margin.optimistic_goodput:.0f} req/s, against "
            f"{best.goodput:.0f} measured for {best.candidate.label()})")
        return None

    def _optimistic(self, prediction: Prediction) -> float:
        """The most a candidate is expected to hold: its prediction scaled by the highest
        measured/predicted ratio seen, plus the margin."""
        ratios = self.ratios()
        if not ratios:
            return math.inf
        return prediction.goodput * max(ratios) * (1 + self.settings.hopeless_margin)

    def _hopeless(self, prediction: Prediction, best: CandidateResult | None) -> bool:
        return best is not None and self._optimistic(prediction) < best.goodput

    # ---- predictions and their resolution --------------------------------------------------
    def _all_predictions(self) -> list[Prediction]:
        if self._predictions is None:
            tol = self.settings.prediction_tolerance
            self._predictions = [Prediction.within(c, self.predict(c), tol) for c in self.space]
        return self._predictions

    def _groups(self, best: CandidateResult | None) -> list[DelayGroup]:
        """The delay groups by prediction; the leading group, the best measured one's and the
        max_batch_sizes the model may not separate from the leader's with the model's own
        resolution (the spread of its predictions over seeds)."""
        groups = delay_groups(self._all_predictions())
        wanted = {groups[0].key} if groups else set()
        if best is not None:
            wanted.add(group_key(best.candidate))
        groups = [self._refine(g) if g.key in wanted else g for g in groups]
        peers = {g.key for g in batch_size_peers(groups)}
        return [self._refine(g) if g.key in peers else g for g in groups]

    def _refine(self, group: DelayGroup) -> DelayGroup:
        if self.custom_predict is not None or self.service is None or len(group.members) < 2:
            return group
        if group.key not in self._refined:
            members = []
            for p in group.members:
                low, high = predict_goodput_range(p.candidate, self.service, self.slo_us)
                members.append(Prediction(p.candidate, p.goodput, min(low, p.goodput),
                                          max(high, p.goodput)))
            self._refined[group.key] = group.with_members(members)
        return self._refined[group.key]

    def _announce_unresolved(self, candidate: Candidate) -> None:
        key = group_key(candidate)
        group = self._refined.get(key) or next(
            (g for g in delay_groups(self._all_predictions()) if g.key == key), None)
        if group is None or group.resolved or key in self._announced:
            return
        self._announced.add(key)
        low, high = group.ends()
        width = max(p.relative_width for p in group.members)
        self.on_event(DelaysUnresolved(low.candidate, high.candidate, width))

    # ---- measuring one candidate -----------------------------------------------------------
    def _load(self, candidate: Candidate) -> str | None:
        t = self.budget.now()
        error = self.target.load(candidate)
        self.budget.saw_load(self.budget.now() - t)
        return error

    def _probe(self, candidate: Candidate, rate: float, final: bool = False) -> ProbeResult:
        self.on_event(ProbeStarted(candidate, rate, final))
        t = self.budget.now()
        result = self.target.probe(candidate, rate, final=final)
        self.budget.saw_probe(self.budget.now() - t, final=final)
        return result

    def _measure(self, candidate: Candidate, predicted: float, why: str, *,
                 baseline: bool = False) -> CandidateResult:
        """Load a candidate and bisect its goodput; record and report the result."""
        self.on_event(CandidateStarted(candidate, predicted, why))
        t0 = self.budget.now()
        error = self._load(candidate)
        if error is not None:
            result = CandidateResult(candidate, predicted, status="infeasible", reason=error,
                                     seconds=self.budget.now() - t0, why=why)
            self.results.append(result)
            self.on_event(CandidateInfeasible(result))
            return result
        bis = self.settings.bisection
        best = self.best_so_far()
        guess = first_rate(predicted, self.calibration(), ceiling=self._ceiling(),
                           best_goodput=best.goodput if best is not None else 0.0)
        if baseline:
            found = bisect_rate(lambda r: self._probe(candidate, r), guess, bis,
                                should_stop=lambda: self.budget.used_fraction() > 0.5,
                                slo_us=self.slo_us, ceiling=self._ceiling(),
                                min_probes=bis.baseline_min_probes,
                                max_probes=bis.baseline_max_probes)
        else:
            found = bisect_rate(lambda r: self._probe(candidate, r), guess, bis,
                                should_stop=lambda: self._search_left()
                                <= self.budget.probe_estimate(),
                                slo_us=self.slo_us, ceiling=self._ceiling())
        result = CandidateResult(candidate, predicted, found.goodput, found.p99,
                                 generator_limited=found.generator_limited,
                                 probes=found.probes, seconds=self.budget.now() - t0, why=why)
        self.results.append(result)
        self.budget.saw_candidate(result.seconds)
        self.on_event(CandidateMeasured(result, baseline=baseline))
        return result

    def _ceiling(self) -> float | None:
        return self.service.ceiling_rps if self.service is not None else None

    # ---- 4. re-measure ---------------------------------------------------------------------
    def remeasure(self) -> None:
        """Re-measure the winner, runners-up that measured above the current config when the
        winner does not hold, and the current config, with longer probes."""
        best = self.best_so_far()
        if best is None or best.goodput <= 0:
            return
        self.on_event(PhaseStarted("remeasure"))
        is_baseline = self.is_base(best)
        bar = self.base.goodput if self.base is not None else 0.0
        restores = self.budget.baseline_restores
        rem = self._remeasure(best, "the winner", restores=is_baseline and restores,
                              last=is_baseline,
                              floor=bar if self.base is not None and not is_baseline else None)
        best, rem = self._runners_up(best, rem, bar)
        best, rem = self._contenders(best, rem)
        self.winner, self.winner_rem = best, rem
        if self.is_base(best):
            self.base_rem = rem
        elif self.base is not None and self.base.goodput > 0:
            # The same re-measurement of the current config, right after the winner's, so that
            # both numbers come from the same conditions; also when the winner held nothing,
            # since the current config is then the answer and is reported re-measured.
            self.base_rem = self._remeasure(self.base, "the baseline", restores=restores,
                                            last=True)

    def _runners_up(self, best: CandidateResult, rem: Remeasurement, bar: float
                    ) -> tuple[CandidateResult, Remeasurement]:
        """A short search probe can pass by luck where a longer one does not: when the winner
        does not hold above the current config, the runners-up that measured above it get the
        same re-measurement while the budget still covers the baseline's after them."""
        runners = sorted((r for r in self.rivals() if r is not best), key=lambda r: -r.goodput)
        for runner in runners[:2]:
            rate = rem.rate
            if rate is None or rate > bar or runner.goodput <= max(bar, rate):
                break
            if self.budget.left() < self.budget.end().remeasure_s(
                    baseline=self.base is not None):
                break
            held = f"re-measured at {rate:.0f} req/s" if rate else "held no rate re-measured"
            self.notes.append(f"{best.candidate.label()} {held} (search: {best.goodput:.0f} "
                              f"req/s); re-measuring the runner-up {runner.candidate.label()}")
            self.on_event(RunnerUpRemeasured(runner.candidate, best.candidate))
            runner_rem = self._remeasure(runner, "the runner-up")
            if runner_rem.rate is not None and runner_rem.rate > rate:
                best, rem = runner, runner_rem
        return best, rem

    def close_rivals(self, best: CandidateResult) -> list[CandidateResult]:
        """Candidates (other than the baseline) whose search goodput is within the bisection's
        bracket of `best`'s: the search cannot tell them apart from it."""
        tol = self.settings.bisection.rel_tol
        return sorted((r for r in self.rivals() if r is not best and r.goodput > 0
                       and r.candidate.key != best.candidate.key
                       and r.goodput >= best.goodput * (1 - tol)), key=lambda r: -r.goodput)

    def contenders(self, best: CandidateResult, rem: Remeasurement) -> list[CandidateResult]:
        """The close rivals of `best`, and any other candidate whose search goodput is above
        the rate `best` held on re-measurement: either may hold more than `best` did."""
        close = self.close_rivals(best)
        taken = {best.candidate.key, *(r.candidate.key for r in close)}
        above = [r for r in self.rivals()
                 if r.candidate.key not in taken and r.goodput > (rem.rate or 0.0)]
        return sorted([*close, *above], key=lambda r: -r.goodput)

    def _contenders(self, best: CandidateResult, rem: Remeasurement
                    ) -> tuple[CandidateResult, Remeasurement]:
        """A bisection stops at a bracket of `rel_tol`, and one search probe is short, so
        candidates near the winner measure alike in the search. Each contender meets the winner
        in a duel (`_duel`) at the rates of the winner's re-measurement; the one that holds more
        there is the winner. Only while the budget still covers the baseline's re-measurement
        after it."""
        if not rem.held or rem.last is None or self.is_base(best):
            return best, rem
        for rival in self.contenders(best, rem)[:self.settings.contenders]:
            if self.budget.before_restore(restores=False) < self._duel_need():
                self.notes.append(f"{rival.candidate.label()} measured alike with "
                                  f"{best.candidate.label()} in the search; no time was left "
                                  "to compare them")
                break
            best, rem = self._duel(best, rem, rival)
        return best, rem

    def _duel_need(self, *, load: bool = True) -> float:
        """Time for one more probe of a contender (after its load, when `load`), and the
        baseline's re-measurement after it."""
        end = self.budget.end()
        need = (end.load_s if load else 0.0) + end.final_probe_s
        if self.base is not None:
            need += end.load_s + end.final_probe_s
        return need

    def _duel(self, best: CandidateResult, rem: Remeasurement, rival: CandidateResult
              ) -> tuple[CandidateResult, Remeasurement]:
        """Probe `rival` with the re-measurement's probe where the winner failed, just above
        the rate it held (the lowest such rate), then, if it fails there too, at the rate the
        winner held. A probe at a given rate replays the same arrivals for every config, so the
        two are compared on the same load. The rival wins when it holds where the winner
        failed, or holds the winner's rate at a p99 lower beyond both confidence intervals."""
        held = rem.rate or 0.0
        failed = [p.rate for p in rem.probes if p.verdict is not Verdict.PASS and p.rate > held]
        rates = [min(failed), held] if failed else [held]
        duel = Remeasurement(rival.candidate)
        self.remeasurements.append(duel)
        error = self._load(rival.candidate)
        if error is not None:
            self.notes.append(f"the contender {rival.candidate.label()} not compared: {error}")
            return best, rem
        for i, rate in enumerate(rates):
            if i and self.budget.before_restore(restores=False) < self._duel_need(load=False):
                break
            self.on_event(ContenderRemeasured(rival.candidate, best.candidate, rate))
            probe = self._probe(rival.candidate, rate, final=True)
            duel.probes.append(probe)
            if probe.verdict is Verdict.PASS:
                duel.rate = rate
                break
        if duel.rate is None:
            duel.rate = 0.0
        return self._duel_verdict(best, rem, rival, duel)

    def _duel_verdict(self, best: CandidateResult, rem: Remeasurement, rival: CandidateResult,
                      duel: Remeasurement) -> tuple[CandidateResult, Remeasurement]:
        ours, theirs = rem.last, duel.last
        win, them = best.candidate.label(), rival.candidate.label()
        held = rem.rate or 0.0
        assert ours is not None
        if duel.held and theirs is not None and (duel.rate or 0.0) > held:
            self.notes.append(
                f"{them} held {duel.rate:.0f} req/s (p99 {theirs.p99.value / 1000:.1f} ms) where "
                f"{win} did not, on the same arrivals: it holds more, so it is chosen")
            return rival, duel
        if duel.held and theirs is not None and theirs.p99.high < ours.p99.low:
            self.notes.append(
                f"{them} held {held:.0f} req/s at p99 {theirs.p99.value / 1000:.1f} ms (95% CI "
                f"to {theirs.p99.high / 1000:.1f}) where {win} had {ours.p99.value / 1000:.1f} "
                f"ms (from {ours.p99.low / 1000:.1f}): more headroom, so it is chosen")
            return rival, duel
        if duel.held and theirs is not None:
            how = (f"at {held:.0f} req/s it had p99 {theirs.p99.value / 1000:.1f} ms against "
                   f"{ours.p99.value / 1000:.1f} ms, not lower beyond their confidence intervals")
        else:
            tried = ", ".join(f"{p.rate:.0f}" for p in duel.probes) or "no rate"
            how = f"it did not hold {tried} req/s"
        self.notes.append(f"{them} measured alike with {win} in the search or above the rate it "
                          f"held; {how}, so {win} stays")
        return best, rem

    def _remeasure(self, r: CandidateResult, what: str, *, restores: bool = False,
                   last: bool = False, floor: float | None = None, at: float | None = None,
                   steps: int | None = None) -> Remeasurement:
        """Re-measure `r` at its search goodput (or `at`), stepping down while it does not hold.

        The bisection's edge is within noise of the SLO: if the longer re-measurement does not
        hold there, step down until it does (`final_steps` tries at most, within the budget; a
        config that holds nothing near its search goodput leaves the time to a runner-up or the
        baseline). `restores`: loading `r` puts back the original config, so no restore load
        follows. `last`: nothing is re-measured after it, so it may step down twice as often
        while the budget allows (its figures are the answer's). `floor`: the winner may also
        step down twice as often while the next rate stays above it (the baseline's search
        goodput: a rate below it could not replace the current config), keeping the time for
        the baseline's re-measurement."""
        rem = Remeasurement(r.candidate)
        self.remeasurements.append(rem)
        end = self.budget.end()
        if self.budget.before_restore(restores=restores) < end.load_s + end.final_probe_s:
            left = max(0.0, self.budget.before_restore(restores=restores))
            self.notes.append(f"{what} {r.candidate.label()} not re-measured: the budget left "
                              f"({left:.0f} s before the restore) is less than a load and a "
                              f"re-measurement ({end.load_s:.0f} + {end.final_probe_s:.0f} s)")
            return rem
        error = self._load(r.candidate)
        if error is not None:
            self.notes.append(f"{what} {r.candidate.label()} not re-measured: {error}")
            return rem
        if steps is None:
            steps = 2 * self.settings.final_steps if last or floor is not None \
                else self.settings.final_steps
        self._step_down(rem, r.goodput if at is None else at, what, restores=restores,
                        steps=steps, floor=floor)
        if rem.probes and rem.rate is None:
            rem.rate = 0.0
        return rem

    def _step_down(self, rem: Remeasurement, rate: float, what: str, *, restores: bool,
                   steps: int, floor: float | None) -> None:
        """Probe at `rate`, then lower rates, until one holds (rem.rate) or the steps or the
        budget run out. A failure decided by one window only is measured once more at the same
        rate: on a shared machine that is often a stall of the whole machine (while one more
        step down and the baseline's re-measurement still fit after it)."""
        budget, label = self.budget, rem.candidate.label()
        # Time the winner leaves for the baseline's re-measurement after it.
        keep_s = (budget.end().load_s + budget.end().final_probe_s) if floor is not None else 0.0
        repeated, step = False, 0
        while step < steps:
            final_s = budget.end().final_probe_s
            if floor is not None and step >= self.settings.final_steps and (
                    rate <= floor or budget.before_restore(restores=restores) < final_s + keep_s):
                break
            if budget.before_restore(restores=restores) < final_s:
                self.notes.append(f"{what} {label}: re-measurement stopped at {rate:.0f} req/s, "
                                  "the budget is spent")
                break
            probe = self._probe(rem.candidate, rate, final=True)
            rem.probes.append(probe)
            if probe.verdict is Verdict.PASS:
                rem.rate = rate
                return
            if probe.one_bad_window and not repeated and \
                    budget.before_restore(restores=restores) >= 2 * final_s + keep_s:
                repeated = True
                self.notes.append(f"{what} {label} at {rate:.0f} req/s failed in one window "
                                  "only: measured once more")
                continue
            rate *= self.settings.step_down
            step += 1

    # ---- 5. choose -------------------------------------------------------------------------
    def choose(self) -> SearchOutcome:
        """The outcome: the winner, unless it does not beat the current config re-measured."""
        best, rem = self.winner, self.winner_rem
        keep, reason = False, ""
        if best is not None and rem is not None and self.base is not None:
            base_rate = self.base_rem.rate if self.base_rem is not None else None
            keep, reason = keep_baseline_decision(best, rem.rate, self.base, base_rate)
            if keep and self.is_base(best) and self.stopped_by_budget and not self.rivals():
                # Nothing was compared: say so, and how much more time one candidate needs.
                reason = ("the time budget ran out before any other candidate was measured; "
                          f"about {math.ceil(self.short_by_s / 10) * 10:.0f} s more would "
                          "allow one")
        if keep:
            self.on_event(BaselineKept(reason))
        for note in self.notes:
            self.on_event(Note(note))
        base_rem = self.base_rem
        return SearchOutcome(
            self.results, best if best is not None else self.best_so_far(),
            rem.last if rem is not None else None, (rem.rate or 0.0) if rem else 0.0,
            self.calibration(), self.stopped_by_budget, baseline=self.base,
            baseline_final=base_rem.last if base_rem is not None else None,
            baseline_final_rate=(base_rem.rate or 0.0) if base_rem is not None else 0.0,
            keep_baseline=keep, reason=reason, notes=list(self.notes),
            remeasurements=list(self.remeasurements), stop=self.stop,
            stop_margin=self.stop_margin)

    def run(self) -> SearchOutcome:
        """Steps 3-5 (the profile and the baseline are given or measured before)."""
        self.candidates()
        self.remeasure()
        return self.choose()


def run_search(space: Sequence[Candidate], profile: ServiceProfile, slo_us: float,
               target: SearchTarget, *, budget_s: float,
               clock: Callable[[], float] = time.monotonic,
               settings: SearchSettings | None = None, reserve_s: float = 0.0,
               done: Sequence[CandidateResult] = (), on_event: EventSink = ignore,
               predict: Callable[[Candidate], float] | None = None, probe_s: float = 0.0,
               baseline: CandidateResult | None = None,
               timing: FinalTiming | None = None) -> SearchOutcome:
    """Measure the promising candidates, re-measure the winner (and the baseline), all within
    `budget_s`, which covers everything up to and including the restore.

    `done` holds results of an interrupted run (--resume): they are not measured again.
    `reserve_s` is kept back at the very end (report); `probe_s` and `timing` are first
    estimates of a probe, a model load and a re-measurement probe (the longest seen replace
    them when longer).
    """
    budget = Budget.starting_now(budget_s, clock=clock, reserve_s=reserve_s,
                                 first=timing or FinalTiming(), probe_s=probe_s)
    return Search(space, slo_us, target, budget, profile=profile, settings=settings,
                  predict=predict, done=done, baseline=baseline, on_event=on_event).run()
