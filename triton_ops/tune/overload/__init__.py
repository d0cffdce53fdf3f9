"""The overload stage: which queue policy keeps the most requests within the SLO past the knee.

`tune` finds the highest rate a config holds under the p99 SLO; above it the queue grows
and, without a queue policy, every request ends up late. This stage takes the chosen config
and its goodput G, measures candidate dynamic-batcher queue policies (`policy_space`) at
0.8x, 2x and 3x G (`measure_overload`, on a running Triton), and chooses the one that answers
the most requests within the SLO under overload while shedding at most 0.1% at the nominal
load (`choose_policy`), or says that no policy helps.

Modules: policy (the space), figures (what one policy did at one load), choice (the rule and
the result for best.json), config (which batching config the stage protects), measure (the
live adapter), stage (its share of a tune run). Only `measure` talks to a server.
"""

from triton_ops.tune.overload.choice import (
    Choice,
    ChoiceRule,
    OverloadResult,
    choose_policy,
)
from triton_ops.tune.overload.figures import LevelFigures, PolicyResult, level_figures
from triton_ops.tune.overload.policy import OverloadPolicy, policy_space, room_us

__all__ = [
    "Choice",
    "ChoiceRule",
    "LevelFigures",
    "OverloadPolicy",
    "OverloadResult",
    "PolicyResult",
    "choose_policy",
    "level_figures",
    "policy_space",
    "room_us",
]
