"""The queue policies the overload stage measures, derived from the chosen config's goodput.

A policy here is a dynamic-batcher `default_queue_policy` that sheds load: timeout_action
REJECT with a `default_timeout_microseconds` (counted from when the request is enqueued; an
expired request is answered with an error when the batcher next looks at it), a
`max_queue_size` (a request that finds the queue full is refused at enqueue), or both. No
policy at all is the reference every other one is compared with.

The space, from the goodput G (req/s), the p99 SLO and, when the profile measured it, the
execution time E of a full batch:
- timeouts around the room a full batch leaves, R = SLO - E: under overload every batch is
  full, and a request that waited its whole timeout still executes in one, so a timeout much
  above R answers late, while one much below R rejects at the nominal load too. How far from
  R the best one lies (the scheduler's hand-over, batches that are not quite full) is
  measured: a few timeouts from below R to above it. Without E, a few fractions of the SLO.
  Each is above max_queue_delay (a shorter timeout rejects a lone request that waits for its
  batch to fill, at any load);
- max_queue_size from G x SLO: the queue that drains within the SLO at the rate the config
  holds, never below max_batch_size (a smaller queue caps every batch at its size);
- combinations of the two.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from triton_ops.envelope.units import format_duration_us

TIMEOUT_FRACTIONS = (0.2, 0.35, 0.5)
# Multiples of the room a full batch leaves (SLO - its execution time), shortest first.
ROOM_FRACTIONS = (0.9, 1.0, 1.1, 1.2)
QUEUE_FRACTIONS = (1.0,)
COMBINED_TIMEOUT_FRACTIONS = (0.35, 0.5)


@dataclass(frozen=True, order=True)
class OverloadPolicy:
    """A load-shedding queue policy (timeout_action REJECT); both zero = no policy."""

    timeout_us: int = 0
    max_queue_size: int = 0

    def __post_init__(self) -> None:
        if self.timeout_us < 0 or self.max_queue_size < 0:
            raise ValueError("timeout_us and max_queue_size must be >= 0")

    @property
    def is_reference(self) -> bool:
        """No queue policy: requests wait as long as it takes (what tune leaves by default)."""
        return self.timeout_us == 0 and self.max_queue_size == 0

    @property
    def settings(self) -> int:
        """How many knobs the policy turns (0, 1 or 2): the simpler of two equals wins."""
        return int(self.timeout_us > 0) + int(self.max_queue_size > 0)

    def sheds_at_least_as_much_as(self, other: OverloadPolicy) -> bool:
        """Whether this policy rejects at least what `other` rejects, at any one load on one
        config: its timeout is no longer and its queue no larger (0: none, unbounded)."""
        def bound(value: int) -> float:
            return value if value > 0 else math.inf

        return (bound(self.timeout_us) <= bound(other.timeout_us)
                and bound(self.max_queue_size) <= bound(other.max_queue_size))

    @property
    def key(self) -> str:
        if self.is_reference:
            return "none"
        parts = []
        if self.timeout_us:
            parts.append(f"timeout{format_duration_us(self.timeout_us)}")
        if self.max_queue_size:
            parts.append(f"queue{self.max_queue_size}")
        return "+".join(parts)

    def label(self) -> str:
        if self.is_reference:
            return "no policy"
        parts = []
        if self.timeout_us:
            parts.append(f"timeout {format_duration_us(self.timeout_us)} REJECT")
        if self.max_queue_size:
            parts.append(f"max_queue_size {self.max_queue_size}")
        return " + ".join(parts)

    def config_json(self) -> dict[str, Any] | None:
        """The default_queue_policy in protobuf JSON form (None: no policy)."""
        if self.is_reference:
            return None
        policy: dict[str, Any] = {"timeout_action": "REJECT"}
        if self.timeout_us:
            policy["default_timeout_microseconds"] = str(self.timeout_us)
        if self.max_queue_size:
            policy["max_queue_size"] = self.max_queue_size
        return policy

    def envelope_dict(self) -> dict[str, Any] | None:
        """The envelope's batching.dynamic.default_queue_policy (None: no policy)."""
        if self.is_reference:
            return None
        policy: dict[str, Any] = {"timeout_action": "REJECT"}
        if self.timeout_us:
            policy["default_timeout"] = format_duration_us(self.timeout_us)
        if self.max_queue_size:
            policy["max_queue_size"] = self.max_queue_size
        return policy

    def to_dict(self) -> dict[str, Any]:
        return {"timeout_us": self.timeout_us, "max_queue_size": self.max_queue_size,
                "label": self.label()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OverloadPolicy:
        return cls(int(data.get("timeout_us", 0)), int(data.get("max_queue_size", 0)))


def _timeout(fraction: float, slo_us: float) -> int:
    """A fraction of the SLO, rounded to whole milliseconds (to microseconds below 1 ms)."""
    us = fraction * slo_us
    return int(round(us / 1000) * 1000) if us >= 1000 else max(1, int(round(us)))


def drain_queue_size(goodput_rps: float, slo_us: float, fraction: float = 1.0) -> int:
    """Requests the config serves within `fraction` of the SLO at its goodput: a queue of
    that length drains before a request at its end misses the SLO."""
    return max(1, math.ceil(fraction * goodput_rps * slo_us / 1e6))


def room_us(slo_us: float, full_batch_us: float | None) -> float | None:
    """The time a full batch leaves within the SLO (None: unknown, or none left)."""
    if full_batch_us is None or full_batch_us <= 0 or full_batch_us >= slo_us:
        return None
    return slo_us - full_batch_us


def policy_space(goodput_rps: float, slo_us: float, *, max_batch_size: int,
                 max_queue_delay_us: int = 0, full_batch_us: float | None = None,
                 timeout_fractions: Sequence[float] = TIMEOUT_FRACTIONS,
                 queue_fractions: Sequence[float] = QUEUE_FRACTIONS,
                 combined_timeout_fractions: Sequence[float] = COMBINED_TIMEOUT_FRACTIONS,
                 ) -> list[OverloadPolicy]:
    """The policies to measure, the reference (no policy) first. See the module docstring."""
    if goodput_rps <= 0 or slo_us <= 0:
        raise ValueError("the overload stage needs a measured goodput and an SLO above 0")
    def usable(fractions: Iterable[float]) -> list[int]:
        """Timeouts at these fractions of the SLO, above the queue delay and under the SLO."""
        return [t for t in (_timeout(f, slo_us) for f in fractions)
                if max_queue_delay_us < t < slo_us]

    room = room_us(slo_us, full_batch_us)
    if room is not None:
        timeouts = usable(f * room / slo_us for f in ROOM_FRACTIONS)
        combined = timeouts[-2:]
    else:
        timeouts, combined = usable(timeout_fractions), usable(combined_timeout_fractions)
    floor = max(max_batch_size, 1)
    sizes = [max(drain_queue_size(goodput_rps, slo_us, f), floor) for f in queue_fractions]
    space = [OverloadPolicy()]
    space += [OverloadPolicy(timeout_us=t) for t in timeouts]
    space += [OverloadPolicy(max_queue_size=q) for q in sizes]
    if sizes:
        space += [OverloadPolicy(timeout_us=t, max_queue_size=max(sizes)) for t in combined]
    unique: list[OverloadPolicy] = []
    for p in space:
        if p not in unique:
            unique.append(p)
    return unique
