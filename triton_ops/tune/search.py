"""The search: which candidate configs to measure, and the arrival-rate bisection on each.

Pure logic over two callables supplied by the caller (`SearchTarget`): load a candidate and
probe it at an arrival rate. The live runner plugs in Triton; the tests plug in the batcher
simulation. Instead of a grid, every candidate's goodput is predicted from the profiled
service times (triton_ops.tune.batcher); candidates are measured best-predicted first, each
with a rate bisection that starts at its (calibrated) prediction, and the search stops when
the remaining ones cannot beat the best measured one or the time budget runs out. The winner
is re-measured before it is reported.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from triton_ops.tune.batcher import Candidate, ServiceProfile, predict_goodput
from triton_ops.tune.stats import QuantileEstimate, Verdict


@dataclass
class ProbeResult:
    """One measurement of one candidate at one arrival rate."""

    rate: float  # requested arrival rate (req/s)
    verdict: Verdict
    p99: QuantileEstimate  # latency in microseconds
    throughput: float = 0.0  # completed requests/s
    error_rate: float = 0.0
    seconds: float = 0.0
    # share of the server machine's CPU the hypervisor gave to other guests (None: unknown)
    steal: float | None = None
    # a failure decided by one window while the others together pass (a re-measurement
    # measures such a rate once more before stepping down)
    one_bad_window: bool = False


@dataclass
class CandidateResult:
    candidate: Candidate
    predicted_goodput: float
    goodput: float = 0.0  # highest rate that passed; 0 when none did
    p99_at_goodput: QuantileEstimate | None = None
    status: str = "measured"  # measured | infeasible | skipped
    reason: str = ""
    generator_limited: bool = False  # the goodput is a lower bound: the client saturated
    probes: list[ProbeResult] = field(default_factory=list)
    seconds: float = 0.0


class SearchTarget(Protocol):
    def load(self, candidate: Candidate) -> str | None:
        """Apply the candidate; None when it loaded, else the reason it cannot."""

    def probe(self, candidate: Candidate, rate: float, *, final: bool = False) -> ProbeResult:
        """Measure the loaded candidate at a Poisson arrival rate (req/s)."""


def candidate_space(max_batch_sizes: Iterable[int], delays_us: Iterable[int],
                    instance_counts: Iterable[int], *,
                    preferred: bool = False) -> list[Candidate]:
    """The cross product, without duplicates that cannot differ (delay with max_batch 0/1).

    With `preferred`, each batching candidate also comes with preferred_batch_sizes set to
    the powers of two up to its max (lets the batcher ship a full power-of-two batch at once).
    """
    out: set[Candidate] = set()
    for mbs in max_batch_sizes:
        for delay in delays_us:
            for inst in instance_counts:
                # A batcher that cannot batch more than one request gains nothing by waiting.
                d = 0 if mbs <= 1 else int(delay)
                out.add(Candidate(int(mbs), d, int(inst)))
                if preferred and mbs > 2:
                    pows = tuple(2**k for k in range(1, int(math.log2(mbs)) + 1) if 2**k <= mbs)
                    if pows and pows[-1] != mbs:
                        out.add(Candidate(int(mbs), d, int(inst), pows))
    return sorted(out)


def prune_by_memory(space: Sequence[Candidate], *, per_instance_bytes: Callable[[int], int] | None,
                    available_bytes: int | None) -> tuple[list[Candidate], list[CandidateResult]]:
    """Split `space` into candidates whose memory envelope fits and those that do not."""
    if per_instance_bytes is None or available_bytes is None:
        return list(space), []
    fits: list[Candidate] = []
    skipped: list[CandidateResult] = []
    for c in space:
        need = per_instance_bytes(c.max_batch_size) * c.instance_count
        if need <= available_bytes:
            fits.append(c)
        else:
            skipped.append(CandidateResult(
                c, 0.0, status="skipped",
                reason=f"needs {need} bytes of GPU memory, {available_bytes} available"))
    return fits, skipped


def rank_candidates(space: Sequence[Candidate], predict: Callable[[Candidate], float], *,
                    max_twin_delay_us: float = 0.0, twin_tolerance: float = 0.02,
                    ) -> list[tuple[Candidate, float]]:
    """Candidates by predicted goodput, best first.

    Among candidates the model cannot tell apart (same batch size, instances and preferred
    sizes, predictions within `twin_tolerance`, the resolution of `predict_goodput`), one
    is kept: the longest queue delay up to `max_twin_delay_us`, else the shortest. The model
    charges every execution only its measured compute time; a longer delay forms larger
    batches, i.e. fewer executions and less of the work around each (scheduling, the
    backend's hand-over, the machine's CPU), which the model cannot see, at a latency cost
    of at most the delay. With `max_twin_delay_us` 0 the shortest delay is kept.
    """

    def preference(c: Candidate) -> tuple[int, int]:  # lower is preferred among twins
        d = c.max_queue_delay_us
        return (0, -d) if d <= max_twin_delay_us else (1, d)

    predicted = [(c, predict(c)) for c in space]
    predicted.sort(key=lambda cp: (-cp[1], preference(cp[0]), cp[0].instance_count,
                                   cp[0].max_batch_size, len(cp[0].preferred_batch_sizes)))
    kept: list[tuple[Candidate, float]] = []
    for c, g in predicted:
        for i, (k, kg) in enumerate(kept):
            if (k.max_batch_size == c.max_batch_size and k.instance_count == c.instance_count
                    and k.preferred_batch_sizes == c.preferred_batch_sizes
                    and abs(kg - g) <= twin_tolerance * max(kg, g, 1e-9)):
                if preference(c) < preference(k):
                    kept[i] = (c, kg)  # the preferred twin takes the place of the group
                break
        else:
            kept.append((c, g))
    return kept


def bisect_rate(probe: Callable[[float], ProbeResult], guess: float, *, rel_tol: float = 0.05,
                max_probes: int = 10, floor: float = 1.0,
                should_stop: Callable[[], bool] = lambda: False,
                slo_us: float | None = None, ceiling: float | None = None,
                min_probes: int = 0,
                ) -> tuple[float, QuantileEstimate | None, bool, list[ProbeResult]]:
    """Highest passing arrival rate, by bracketing around `guess` then bisecting.

    `ceiling`: the most requests/s the system was seen to complete (closed loop); while the
    rate is far below it and far under the SLO, the bracket grows by up to 8x, not 2x.
    `min_probes`: probes made even when `should_stop` says stop.

    Returns (goodput, p99 at goodput, generator_limited, probes). A generator-limited probe
    is an upper bound on what can be measured: it closes the bracket from above and the
    result is flagged.
    """
    probes: list[ProbeResult] = []
    lo, hi = 0.0, math.inf
    lo_p99: QuantileEstimate | None = None
    limited = False
    rate = max(guess, floor)

    def run(r: float) -> ProbeResult:
        result = probe(r)
        probes.append(result)
        return result

    while len(probes) < max_probes and (len(probes) < min_probes or not should_stop()):
        result = run(rate)
        if result.verdict is Verdict.PASS:
            lo, lo_p99 = rate, result.p99
        else:
            hi = rate
            if result.verdict is Verdict.GENERATOR_LIMITED:
                limited = True
        if math.isinf(hi):
            # Far under the SLO: the knee is further away; close to it: small steps.
            far = slo_us is not None and result.p99.value < slo_us / 3
            if far and ceiling and rate * 4 < ceiling:
                rate = min(rate * 8, ceiling / 2)
            else:
                rate = rate * (2.0 if far else 1.3)
        elif lo == 0.0:
            if rate <= floor:
                break
            # Over capacity, an open-loop server completes about its capacity: aim below it.
            step = rate / 1.6
            if result.verdict is Verdict.FAIL and 0 < result.throughput < rate:
                step = min(step, 0.85 * result.throughput)
            rate = max(step, floor)
        else:
            if hi / lo - 1 <= rel_tol:
                break
            rate = math.sqrt(lo * hi)
    return lo, lo_p99, limited and lo > 0, probes


def first_rate(predicted: float, calibration: float, *, ceiling: float | None,
               best_goodput: float = 0.0) -> float:
    """The arrival rate a candidate's bisection starts at: its prediction scaled by the
    measured/predicted ratio seen so far, but no higher than half the closed-loop `ceiling`
    or the best goodput measured so far, whichever is higher.

    Open-loop Poisson arrivals under a p99 bound hold well below what the whole system
    completes in closed loop (queues form, and on a shared machine the load generator's
    own CPU grows with the rate): on dense_mlp (2 CPU cores) the best config of each of
    eighteen benchmark grids held 0.53-0.77 of it (once 0.90), while the model, which
    charges an execution only its compute time, predicted 1.09-1.16 of it for the
    largest batches. A probe there fails for sure and costs as much as a useful one; from
    half the ceiling the bisection climbs (by 1.3x, 2x far under the SLO) or halves in one
    or two probes. Starting at the best goodput so far asks first what matters: does this
    candidate beat it?
    """
    guess = predicted * calibration if predicted > 0 else 1.0
    if ceiling:
        guess = min(guess, max(ceiling / 2, best_goodput))
    return max(guess, 1.0)


@dataclass
class SearchOutcome:
    results: list[CandidateResult]
    # the search's winner (highest goodput in the bisections), or the runner-up that held
    # better than it when re-measured
    best: CandidateResult | None
    final: ProbeResult | None  # the re-measurement of the best at its goodput
    final_rate: float
    calibration: float  # median measured/predicted goodput
    stopped_by_budget: bool
    baseline: CandidateResult | None = None
    baseline_final: ProbeResult | None = None  # the baseline re-measured the same way
    baseline_final_rate: float = 0.0
    keep_baseline: bool = False  # recommend the current config, not `best`
    reason: str = ""  # why the current config is kept
    notes: list[str] = field(default_factory=list)  # e.g. a re-measurement that did not fit

    @property
    def chosen(self) -> CandidateResult | None:
        """The recommendation: the baseline when it is kept, else the winner."""
        return self.baseline if self.keep_baseline else self.best


@dataclass
class FinalTiming:
    """How long the end of a run takes, estimated from what was measured so far."""

    load_s: float = 0.0  # one model load (candidate or restore)
    final_probe_s: float = 0.0  # one re-measurement probe
    reserve_s: float = 0.0  # report writing and slack
    # Loading the baseline puts back exactly the original config, so when the baseline is
    # re-measured last the restore needs no load.
    baseline_restores: bool = False

    def remeasure_s(self, *, baseline: bool) -> float:
        """Re-measure the winner (one step down included) and, when `baseline`, the baseline
        once, then restore the original config."""
        winner = self.load_s + 2 * self.final_probe_s
        base = (self.load_s + self.final_probe_s) if baseline else 0.0
        restore = 0.0 if baseline and self.baseline_restores else self.load_s
        return winner + base + restore + self.reserve_s


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


def run_search(
    space: Sequence[Candidate],
    profile: ServiceProfile,
    slo_us: float,
    target: SearchTarget,
    *,
    budget_s: float,
    clock: Callable[[], float] = time.monotonic,
    max_measured: int = 12,
    give_up_margin: float = 0.15,
    rel_tol: float = 0.08,
    reserve_s: float = 0.0,
    done: Sequence[CandidateResult] = (),
    on_event: Callable[[str, dict[str, object]], None] = lambda kind, data: None,
    predict: Callable[[Candidate], float] | None = None,
    probe_s: float = 0.0,
    baseline: CandidateResult | None = None,
    timing: FinalTiming | None = None,
    final_steps: int = 3,
) -> SearchOutcome:
    """Measure the promising candidates, re-measure the winner (and the baseline), all
    within `budget_s`, which covers everything up to and including the restore.

    `done` holds results of an interrupted run (--resume): they are not measured again.
    `reserve_s` is kept back at the very end (report); `probe_s` is how long one probe may
    take, so that no probe starts that would end past the search's deadline. `timing` gives
    first estimates of a model load and of a re-measurement probe; the longest load and probe
    seen while searching replace them when longer. The search stops early enough for the
    re-measurements and the restore (one load) to fit; a re-measurement that would not fit
    is not started, and `notes` says so.

    With a `baseline` (the model's current config), the winner is re-measured, then the
    baseline the same way, back to back; when the winner's re-measured goodput is not above
    the baseline's, `keep_baseline` is set and `reason` says why.
    """
    start = clock()
    end = start + budget_s
    timing = timing or FinalTiming()
    load_times: list[float] = [timing.load_s]
    probe_times: list[float] = [probe_s]
    final_times: list[float] = [timing.final_probe_s]
    notes: list[str] = []

    def estimate() -> FinalTiming:
        return FinalTiming(max(load_times), max(final_times + probe_times), reserve_s,
                           baseline_restores=timing.baseline_restores)

    def timed_load(cand: Candidate) -> str | None:
        t = clock()
        error = target.load(cand)
        load_times.append(clock() - t)
        return error

    def timed_probe(cand: Candidate, rate: float, final: bool = False) -> ProbeResult:
        t = clock()
        result = target.probe(cand, rate, final=final)
        (final_times if final else probe_times).append(clock() - t)
        return result

    def left() -> float:
        """Time the search may still use, after the re-measurements and the restore.

        The baseline's re-measurement is kept back only while another candidate is the best
        so far: while the baseline leads, the end re-measures it alone, and under a short
        budget measuring one more candidate is worth more than time kept for a comparison
        that may never happen (should that candidate win, the baseline is still re-measured
        when the time is there, else the winner is compared with its search goodput)."""
        best = best_so_far()
        both = baseline is not None and best is not None and not is_base(best)
        return end - estimate().remeasure_s(baseline=both) - clock()

    def rivals() -> list[CandidateResult]:
        """The measured candidates other than the baseline (all of them without one)."""
        return [r for r in results if r.status == "measured" and not is_base(r)]

    def is_base(r: CandidateResult) -> bool:
        return baseline is not None and r.candidate.key == baseline.candidate.key

    predictor = predict or (lambda c: predict_goodput(c, profile, slo_us))
    # A queue delay of up to a tenth of the SLO is preferred among candidates the model
    # cannot tell apart: it costs little latency and forms larger batches.
    ranked = rank_candidates(space, predictor, max_twin_delay_us=0.1 * slo_us)
    on_event("ranked", {"count": len(ranked)})
    results: list[CandidateResult] = list(done)
    done_keys = {r.candidate.key for r in done}
    ratios = [r.goodput / r.predicted_goodput for r in done
              if r.status == "measured" and r.predicted_goodput > 0 and r.goodput > 0]
    per_candidate: list[float] = [r.seconds for r in done if r.status == "measured"]
    stopped_by_budget = False
    short_by_s = 0.0  # how much more time the first candidate not started would have needed
    measured = sum(1 for r in done if r.status == "measured")

    def best_so_far() -> CandidateResult | None:
        """The highest goodput measured; a candidate that ties the baseline wins the tie,
        so that both are re-measured back to back (bisections start at the best goodput so
        far, so a tie means the candidate held it and nothing more was tried)."""
        ok = [r for r in results if r.status == "measured" and r.goodput > 0]
        return max(ok, key=lambda r: (r.goodput, not is_base(r))) if ok else None

    for index, (cand, predicted) in enumerate(ranked):
        if cand.key in done_keys:
            continue
        calibration = statistics.median(ratios) if ratios else 1.0
        best = best_so_far()
        # Trust the model's ranking more than its scale: a candidate is hopeless when its
        # prediction is clearly below the prediction of the best one measured so far.
        if best is not None and best.predicted_goodput > 0 and \
                predicted < best.predicted_goodput * (1 - give_up_margin):
            on_event("stop", {"reason": "remaining candidates are predicted to be worse"})
            break
        if measured >= max_measured:
            on_event("stop", {"reason": f"measured {max_measured} candidates"})
            break
        expected = statistics.median(per_candidate) if per_candidate else 0.0
        probe_est = max(probe_times)
        # Start a candidate only when about one candidate's worth of time is left after the
        # time kept for the re-measurements and the restore.
        if left() < max(expected, probe_est * 2) or left() <= 0:
            stopped_by_budget = True
            short_by_s = max(expected, probe_est * 2) - left()
            on_event("stop", {"reason": "time budget"})
            break
        on_event("candidate", {"candidate": cand, "predicted": predicted, "index": index,
                               "total": len(ranked)})
        t0 = clock()
        error = timed_load(cand)
        if error is not None:
            results.append(CandidateResult(cand, predicted, status="infeasible", reason=error,
                                            seconds=clock() - t0))
            on_event("infeasible", {"candidate": cand, "reason": error})
            continue
        guess = first_rate(predicted, calibration, ceiling=profile.ceiling_rps,
                           best_goodput=best.goodput if best is not None else 0.0)
        goodput, p99, limited, probes = bisect_rate(
            lambda r, c=cand: timed_probe(c, r), guess, rel_tol=rel_tol,
            should_stop=lambda: left() <= max(probe_times), slo_us=slo_us,
            ceiling=profile.ceiling_rps,
        )
        result = CandidateResult(cand, predicted, goodput, p99, generator_limited=limited,
                                 probes=probes, seconds=clock() - t0)
        results.append(result)
        measured += 1
        per_candidate.append(result.seconds)
        if predicted > 0 and goodput > 0:
            ratios.append(goodput / predicted)
        on_event("measured", {"result": result})

    def remeasure(r: CandidateResult, what: str, *, restores: bool = False, last: bool = False,
                  floor: float | None = None) -> tuple[ProbeResult | None, float | None]:
        """(last final probe, highest passing rate; None when it could not be re-measured).
        `restores`: loading `r` puts back the original config, so no restore load follows.
        `last`: nothing is re-measured after it, so it may step down twice as often while
        the budget allows (its figures are the answer's). `floor`: the winner may also step
        down twice as often while the next rate stays above it (the baseline's search
        goodput: a rate below it could not replace the current config), keeping the time
        for the baseline's re-measurement."""

        def before_restore() -> float:
            """Time left before the restore (one load, unless `restores`) and the report."""
            est = estimate()
            return end - est.reserve_s - (0.0 if restores else est.load_s) - clock()

        if before_restore() < estimate().load_s + estimate().final_probe_s:
            notes.append(f"{what} {r.candidate.label()} not re-measured: the budget left "
                         f"({max(0.0, before_restore()):.0f} s before the restore) is less than "
                         f"a load and a re-measurement ({estimate().load_s:.0f} + "
                         f"{estimate().final_probe_s:.0f} s)")
            return None, None
        error = timed_load(r.candidate)
        if error is not None:
            notes.append(f"{what} {r.candidate.label()} not re-measured: {error}")
            return None, None
        rate = r.goodput
        final: ProbeResult | None = None
        # Time the winner leaves for the baseline's re-measurement after it.
        keep_s = estimate().load_s + estimate().final_probe_s if floor is not None else 0.0
        repeated = False
        # The bisection's edge is within noise of the SLO: if the longer re-measurement does
        # not hold there, step down until it does (`final_steps` tries at most, within the
        # budget; a config that holds nothing near its search goodput leaves the time to a
        # runner-up or the baseline).
        step = 0
        while step < (2 * final_steps if last or floor is not None else final_steps):
            if floor is not None and step >= final_steps and (
                    rate <= floor or before_restore() < estimate().final_probe_s + keep_s):
                break
            if before_restore() < estimate().final_probe_s:
                notes.append(f"{what} {r.candidate.label()}: re-measurement stopped at "
                             f"{rate:.0f} req/s, the budget is spent")
                break
            on_event("final", {"candidate": r.candidate, "rate": rate})
            final = timed_probe(r.candidate, rate, final=True)
            if final.verdict is Verdict.PASS:
                return final, rate
            # One bad second out of several decided it: on a shared machine that is often a
            # stall of the whole machine, so the same rate is measured once more (while one
            # more step down and the baseline's re-measurement still fit after it).
            if final.one_bad_window and not repeated and before_restore() >= \
                    2 * estimate().final_probe_s + keep_s:
                repeated = True
                notes.append(f"{what} {r.candidate.label()} at {rate:.0f} req/s failed in one "
                             "window only: measured once more")
                continue
            rate *= 0.85
            step += 1
        if final is None:
            return None, None
        return final, 0.0

    best = best_so_far()
    final: ProbeResult | None = None
    final_rate = 0.0
    base_final: ProbeResult | None = None
    base_rate: float | None = None
    keep, reason = False, ""
    restores = timing.baseline_restores
    if best is not None and best.goodput > 0:
        is_baseline = is_base(best)
        bar = baseline.goodput if baseline is not None else 0.0
        final, winner_rate = remeasure(best, "the winner", restores=is_baseline and restores,
                                       last=is_baseline,
                                       floor=bar if baseline is not None and not is_baseline
                                       else None)
        # A short search probe can pass by luck where a longer one does not: when the winner
        # does not hold above the current config, the runners-up that measured above it get
        # the same re-measurement while the budget still covers the baseline's after them.
        runners = sorted((r for r in rivals() if r is not best), key=lambda r: -r.goodput)
        for runner in runners[:2]:
            if winner_rate is None or winner_rate > bar or runner.goodput <= max(bar, winner_rate):
                break
            if end - clock() < estimate().remeasure_s(baseline=baseline is not None):
                break
            notes.append(f"{best.candidate.label()} re-measured at {winner_rate:.0f} req/s "
                         f"(search: {best.goodput:.0f}); re-measuring the runner-up "
                         f"{runner.candidate.label()}")
            on_event("runner_up", {"candidate": runner.candidate, "previous": best.candidate})
            runner_final, runner_rate = remeasure(runner, "the runner-up")
            if runner_rate is not None and runner_rate > winner_rate:
                best, final, winner_rate = runner, runner_final, runner_rate
        final_rate = winner_rate or 0.0
        is_baseline = is_base(best)
        if is_baseline:
            base_final, base_rate = final, winner_rate
        elif baseline is not None and baseline.goodput > 0:
            # The same re-measurement of the current config, right after the winner's, so
            # that both numbers come from the same conditions; also when the winner held
            # nothing, since the current config is then the answer and is reported
            # re-measured.
            base_final, base_rate = remeasure(baseline, "the baseline", restores=restores,
                                              last=True)
        if baseline is not None:
            keep, reason = keep_baseline_decision(best, winner_rate, baseline, base_rate)
            if keep and is_baseline and stopped_by_budget and not rivals():
                # Nothing was compared: say so, and how much more time one candidate needs.
                reason = ("the time budget ran out before any other candidate was measured; "
                          f"about {math.ceil(short_by_s / 10) * 10:.0f} s more would allow one")
        if keep:
            on_event("keep_baseline", {"reason": reason})
    for note in notes:
        on_event("note", {"text": note})
    calibration = statistics.median(ratios) if ratios else 1.0
    return SearchOutcome(results, best, final, final_rate, calibration, stopped_by_budget,
                         baseline=baseline, baseline_final=base_final,
                         baseline_final_rate=base_rate or 0.0, keep_baseline=keep,
                         reason=reason, notes=notes)
