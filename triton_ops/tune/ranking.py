"""Which candidates to measure, in which order (pure logic over predictions and results).

Candidates come in groups of one max_batch_size / instance count / preferred sizes, whose
members differ only in their queue delay. The model ranks the groups; within a group it
decides the delay when it can separate the best delay's prediction from the others' beyond
its resolution. Where it cannot, the delay is decided by measurement: both ends of the delays
it cannot separate (0 and the largest, when it cannot separate any) are measured for the
leading group, and for the group of the best measured candidate, before anything is chosen.
The same holds across max_batch_size: when the model cannot separate the leading group's best
prediction from those of other max_batch_sizes (same instance count and preferred sizes), the
smallest and the largest of them are measured first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from triton_ops.tune.batcher import Candidate
from triton_ops.tune.results import CandidateResult

GroupKey = tuple[int, int, tuple[int, ...]]


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


@dataclass(frozen=True)
class Prediction:
    """The model's goodput for a candidate, and the range it cannot tell apart from it."""

    candidate: Candidate
    goodput: float
    low: float
    high: float

    @classmethod
    def within(cls, candidate: Candidate, goodput: float, tolerance: float) -> Prediction:
        return cls(candidate, goodput, goodput * (1 - tolerance), goodput * (1 + tolerance))

    def separated_from(self, other: Prediction) -> bool:
        return self.low > other.high or other.low > self.high

    @property
    def relative_width(self) -> float:
        return (self.high - self.low) / self.high if self.high > 0 else 0.0


def group_key(candidate: Candidate) -> GroupKey:
    return (candidate.max_batch_size, candidate.instance_count, candidate.preferred_batch_sizes)


@dataclass(frozen=True)
class DelayGroup:
    """The queue delays of one max_batch_size / instance count / preferred sizes."""

    key: GroupKey
    members: tuple[Prediction, ...]  # by delay, shortest first

    @property
    def best(self) -> Prediction:
        """The highest prediction (the shorter delay of exact ties)."""
        return max(self.members, key=lambda p: (p.goodput, -p.candidate.max_queue_delay_us))

    def tied(self) -> list[Prediction]:
        """The delays the model cannot separate from its best one (the best included)."""
        best = self.best
        return [p for p in self.members if p is best or not p.separated_from(best)]

    @property
    def resolved(self) -> bool:
        return len(self.tied()) == 1

    def ends(self) -> tuple[Prediction, Prediction]:
        """The shortest and the longest delay among those the model cannot separate."""
        tied = self.tied()
        return tied[0], tied[-1]

    def with_members(self, members: Sequence[Prediction]) -> DelayGroup:
        return DelayGroup(self.key, tuple(sorted(members,
                                                 key=lambda p: p.candidate.max_queue_delay_us)))


def delay_groups(predictions: Sequence[Prediction]) -> list[DelayGroup]:
    """The groups, best prediction first (ties: fewer instances, smaller batches first)."""
    members: dict[GroupKey, list[Prediction]] = {}
    for p in predictions:
        members.setdefault(group_key(p.candidate), []).append(p)
    groups = [DelayGroup(k, ()).with_members(v) for k, v in members.items()]
    groups.sort(key=lambda g: (-g.best.goodput, g.key[1], g.key[0], len(g.key[2])))
    return groups


def measured_end_preference(groups: Sequence[DelayGroup],
                            goodput: Mapping[str, float]) -> str | None:
    """"low" or "high": the end of unresolved delays that measured higher where both ends of a
    group were measured (the group with the highest goodput decides); None when no group had
    both ends measured or they measured the same."""
    best: tuple[float, str] | None = None
    for g in groups:
        if g.resolved:
            continue
        low, high = (goodput.get(p.candidate.key) for p in g.ends())
        if low is None or high is None or low == high:
            continue
        top = max(low, high)
        if best is None or top > best[0]:
            best = (top, "high" if high > low else "low")
    return best[1] if best else None


def first_end(group: DelayGroup, preference: str | None) -> Prediction:
    """The member of an unresolved group to measure first: the end that measured higher
    elsewhere, else the end the model predicts higher (the shorter delay on a tie)."""
    low, high = group.ends()
    if preference == "low":
        return low
    if preference == "high":
        return high
    return high if high.goodput > low.goodput else low


@dataclass(frozen=True)
class Step:
    """One candidate to measure, and why."""

    prediction: Prediction
    why: str
    # one of both ends of delays the model cannot separate, both of which are measured
    both_ends: bool = False


def group_choice(group: DelayGroup, preference: str | None, role: str) -> list[Step]:
    """What to measure of one group: the model's best delay, or both ends of the delays it
    cannot separate (the first end by `first_end`)."""
    if group.resolved:
        return [Step(group.best, f"{role}; the model's best delay")]
    first = first_end(group, preference)
    low, high = group.ends()
    other = high if first is low else low
    return [Step(first, f"{role}; delays the model cannot separate: one end", True),
            Step(other, f"{role}; delays the model cannot separate: the other end", True)]


def batch_size_peers(groups: Sequence[DelayGroup]) -> list[DelayGroup]:
    """The groups of the leading group's instance count and preferred sizes whose best
    prediction the model cannot separate from the leader's (the leader included), by
    max_batch_size; [] when it has none."""
    if not groups:
        return []
    lead = groups[0]
    peers = [g for g in groups if g.key[1:] == lead.key[1:]
             and (g is lead or not g.best.separated_from(lead.best))]
    return sorted(peers, key=lambda g: g.key[0]) if len(peers) > 1 else []


def one_delay(group: DelayGroup, preference: str | None, why: str) -> Step:
    """One member of a group: the model's best delay, or the first end of those it cannot
    separate."""
    if group.resolved:
        return Step(group.best, f"{why}; the model's best delay")
    how = (f"the end that measured higher elsewhere ({preference} delay)" if preference
           else "one end")
    return Step(first_end(group, preference), f"{why}; delays the model cannot separate: {how}")


def leading_steps(groups: Sequence[DelayGroup], preference: str | None) -> list[Step]:
    """The leading group's choice, or, when the model cannot separate max_batch_sizes, the
    smallest and the largest of them (the higher prediction first, with its delays decided
    as the leader's would be; the other at one delay), then the ones between at one delay."""
    peers = batch_size_peers(groups)
    if not peers:
        return group_choice(groups[0], preference, "ranked first")
    ends = sorted((peers[0], peers[-1]), key=lambda g: (-g.best.goodput, g.key[0]))
    span = f"max_batch_size {peers[0].key[0]}-{peers[-1].key[0]}, which the model cannot separate"
    between = sorted(peers[1:-1], key=lambda g: -g.best.goodput)
    return (group_choice(ends[0], preference, f"{span}: one end")
            + [one_delay(ends[1], preference, f"{span}: the other end")]
            + [one_delay(g, preference, f"{span}: between the ends") for g in between])


def measurement_order(groups: Sequence[DelayGroup], goodput: Mapping[str, float],
                      best_key: GroupKey | None) -> list[Step]:
    """Every candidate in the order it should be measured, with why (duplicates removed).

    1. the leading group (best prediction): its best delay, or both ends of the delays the
       model cannot separate; when the model cannot separate max_batch_sizes from the
       leader's, the smallest and the largest of them instead (`leading_steps`);
    2. the same for the group of the best measured candidate (`best_key`);
    3. one delay of every other group, by prediction (an unresolved group's first end);
    4. the remaining delays, by prediction.
    """
    if not groups:
        return []
    preference = measured_end_preference(groups, goodput)
    order = leading_steps(groups, preference)
    by_key = {g.key: g for g in groups}
    if best_key is not None and best_key in by_key:
        order += group_choice(by_key[best_key], preference,
                              "the best measured candidate's batch size and instances")
    order += [one_delay(g, preference, "next by prediction") for g in groups[1:]]
    rest = sorted((p for g in groups for p in g.members), key=lambda p: -p.goodput)
    order.extend(Step(p, "next by prediction") for p in rest)
    seen: set[str] = set()
    unique = []
    for step in order:
        if step.prediction.candidate.key not in seen:
            seen.add(step.prediction.candidate.key)
            unique.append(step)
    return unique
