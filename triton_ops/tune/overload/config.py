"""Which batching config the overload stage measures queue policies on.

Under overload every batch is full, and a request the queue let through still executes in a
full batch: it is answered within the SLO only if it waited at most the room a full batch
leaves, R = SLO - E(max_batch_size). A timeout near R sheds what could not be answered in
time; at the nominal load it must reject (almost) nothing, so the queue wait there must stay
under R. The config tune chose for goodput may leave no such room (a full batch of it
outlasts the SLO, or the nominal queue wait exceeds the room): then no queue policy can keep
it answering in time past the knee, and the stage measures a config that can, when one was
measured in the search at a goodput not far below.

The rule: the chosen config when the batcher model predicts that a timeout of R rejects at
most `max_shed` at the nominal load (0.8x its goodput); otherwise the measured candidate with
the highest search goodput, at most `max_cost` below the chosen one's search goodput, for
which the model predicts that at 0.8x its own search goodput; otherwise, of the chosen config
and those candidates, the one for which the model predicts the fewest rejections at the
nominal load for a timeout of its room (the stage then says why no policy helps, if none
does). The model's batcher stalls as Triton's does with a queue policy
(`batcher.QUEUE_POLICY_STALL_SHARE`). The stage measures at multiples of the goodput of the
config returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from triton_ops.tune.batcher import Candidate, ServiceProfile, full_batch_us, predict_wait_share
from triton_ops.tune.overload.choice import MAX_NOMINAL_REJECTED, NOMINAL_LEVEL
from triton_ops.tune.overload.policy import room_us

# The most nominal goodput the stage gives up for answers under overload.
MAX_GOODPUT_COST = 0.15
# Simulated requests per prediction of a room's rejected share: the limit is 0.1%, and with
# 10 000 one rejection more or less moves the prediction by a tenth of it.
ROOM_REQUESTS = 40_000


@dataclass(frozen=True)
class ProtectedConfig:
    """The config the stage measures, what it holds, and why it is not the chosen one."""

    candidate: Candidate
    goodput_rps: float  # measured: the chosen config's confirmed goodput, or a search goodput
    full_batch_us: float | None  # from the profile (None: no profile)
    reason: str | None = None  # set when it is not the chosen config


def room_share(candidate: Candidate, profile: ServiceProfile, slo_us: float,
               nominal_rps: float) -> float | None:
    """The share the model predicts a timeout of the room a full batch leaves would reject
    at `nominal_rps` (None: no room within the SLO, or none beyond the queue delay)."""
    room = room_us(slo_us, full_batch_us(candidate, profile))
    if room is None or room <= candidate.max_queue_delay_us:
        return None
    return predict_wait_share(candidate, profile, nominal_rps, room, n_requests=ROOM_REQUESTS)


def room_fits(candidate: Candidate, profile: ServiceProfile, slo_us: float, nominal_rps: float,
              max_shed: float = MAX_NOMINAL_REJECTED) -> bool:
    """A full batch leaves room within the SLO, longer than the queue delay, and the model
    predicts that a timeout of that room rejects at most `max_shed` at `nominal_rps`."""
    share = room_share(candidate, profile, slo_us, nominal_rps)
    return share is not None and share <= max_shed


def protected_config(chosen: Candidate, goodput_rps: float,
                     measured: Sequence[tuple[Candidate, float]],
                     profile: ServiceProfile | None, slo_us: float, *,
                     max_cost: float = MAX_GOODPUT_COST) -> ProtectedConfig:
    """Apply the rule of the module docstring; `measured`: (candidate, search goodput)."""
    if profile is None:
        return ProtectedConfig(chosen, goodput_rps, None)
    full_chosen = full_batch_us(chosen, profile)
    itself = ProtectedConfig(chosen, goodput_rps, full_chosen)
    if room_fits(chosen, profile, slo_us, NOMINAL_LEVEL * goodput_rps):
        return itself
    # Search goodputs are compared with search goodputs (the re-measurement's probes are
    # longer, and a config's re-measured goodput is usually lower).
    reference = max((g for c, g in measured if c == chosen), default=goodput_rps)
    floor = (1 - max_cost) * reference
    others = sorted(((c, g) for c, g in measured if c != chosen and g >= floor),
                    key=lambda cg: (-cg[1], cg[0].max_batch_size))
    def trade(candidate: Candidate, goodput: float, how: str) -> ProtectedConfig:
        full = full_batch_us(candidate, profile)
        return ProtectedConfig(candidate, goodput, full, reason=(
            f"a full batch of {chosen.max_batch_size} takes {full_chosen / 1000:.0f} ms, "
            f"leaving no room for a timeout within the SLO of {slo_us / 1000:g} ms at "
            f"{NOMINAL_LEVEL:g}x; {candidate.label()} (full batch {full / 1000:.0f} ms, "
            f"{goodput:.0f} req/s in the search against {reference:.0f}, "
            f"{max(0.0, 1 - goodput / reference):.0%} below) {how}"))

    for candidate, goodput in others:
        if room_fits(candidate, profile, slo_us, NOMINAL_LEVEL * goodput):
            return trade(candidate, goodput, "leaves it")
    closest = _closest(chosen, goodput_rps, others, profile, slo_us)
    if closest is None or closest[0] == chosen:
        return itself
    candidate, goodput, share = closest
    return trade(candidate, goodput, (
        f"comes closest: the model predicts {share:.2%} rejected at {NOMINAL_LEVEL:g}x for a "
        "timeout of its room, where no config measured keeps within "
        f"{MAX_NOMINAL_REJECTED:.1%}"))


def _closest(chosen: Candidate, goodput_rps: float, others: Sequence[tuple[Candidate, float]],
             profile: ServiceProfile, slo_us: float
             ) -> tuple[Candidate, float, float] | None:
    """Of the chosen config and `others`, the one whose room's timeout the model predicts
    to reject the least at the nominal load (ties: the chosen, then the higher goodput);
    None when none leaves room."""
    rows = []
    for rank, (candidate, goodput) in enumerate([(chosen, goodput_rps), *others]):
        share = room_share(candidate, profile, slo_us, NOMINAL_LEVEL * goodput)
        if share is not None:
            rows.append((share, rank, candidate, goodput))
    if not rows:
        return None
    share, _, candidate, goodput = min(rows, key=lambda r: (r[0], r[1]))
    return candidate, goodput, share
