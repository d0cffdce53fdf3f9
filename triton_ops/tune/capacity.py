"""Capacity plan: how many replicas of one tuned server a target throughput needs.

tune measures G, the goodput of one server (the highest rate it holds with its p99 under the
SLO), and the overload stage what one server still answers within the SLO when offered 2x G
with the chosen queue policy. The headroom rule turns the envelope's `slo.target_throughput`
T into replicas:

    N        = ceil(T / (G x utilisation_cap))     replicas that carry T at <= the cap
    replicas = N + spare                           N+1: one replica may be lost (a node, a
                                                   rollout) and T is still carried
    HPA      = min replicas .. ceil(surge x T / (G x utilisation_cap)) + spare

with utilisation_cap 0.8, spare 1 and surge 2 by default. One release of the chart serves
several models from one pod, so their loads add up: a release needs
ceil(sum of T_m / (G_m x cap)) + spare replicas (each model's share of a pod is T_m / G_m).

`read_tune_result` reads what the plan needs from a tune output folder's best.json.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

UTILISATION_CAP = 0.8
SPARE_REPLICAS = 1
SURGE = 2.0


class CapacityError(ValueError):
    """A tune result the plan cannot use; the message names the file and what to do."""


@dataclass(frozen=True)
class HeadroomRule:
    utilisation_cap: float = UTILISATION_CAP
    spare: int = SPARE_REPLICAS
    surge: float = SURGE

    def __post_init__(self) -> None:
        if not 0 < self.utilisation_cap <= 1:
            raise ValueError("the utilisation cap is a share in (0, 1]")
        if self.spare < 0 or self.surge < 1:
            raise ValueError("spare replicas are >= 0 and the surge factor >= 1")

    def describe(self) -> str:
        spare = f" + {self.spare} (N+{self.spare})" if self.spare else ""
        return (f"replicas = ceil(target / (goodput x {self.utilisation_cap:g})){spare}; "
                f"HPA from there up to ceil({self.surge:g} x target / (goodput x "
                f"{self.utilisation_cap:g})){spare}")

    def needed(self, load: float) -> int:
        """Replicas for `load` pods' worth of work (sum of target / goodput) at the cap."""
        return max(1, math.ceil(round(load / self.utilisation_cap, 9)))

    def to_dict(self) -> dict[str, Any]:
        return {"utilisation_cap": self.utilisation_cap, "spare": self.spare,
                "surge": self.surge, "rule": self.describe()}


@dataclass(frozen=True)
class TunedModel:
    """What a tune run measured that the plan uses."""

    model: str
    goodput_rps: float
    source: str  # the tune output folder
    holds_at_2x_rps: float | None = None  # within the SLO, offered 2x G, chosen policy
    policy: str | None = None  # the chosen queue policy's label


@dataclass(frozen=True)
class CapacityPlan:
    """Replicas for one model, or for a release of several (`models`)."""

    models: tuple[str, ...]
    target_rps: float
    load: float  # pods' worth of work at the target: sum of target / goodput
    rule: HeadroomRule
    needed: int  # N
    replicas: int  # N + spare
    hpa_max: int
    goodput_rps: float | None = None  # one model's
    holds_at_2x_rps: float | None = None
    policy: str | None = None

    @property
    def hpa_min(self) -> int:
        return self.replicas

    @property
    def utilisation(self) -> float:
        """The share of their goodput the replicas run at the target."""
        return self.load / self.replicas

    @property
    def utilisation_one_lost(self) -> float | None:
        return self.load / (self.replicas - 1) if self.replicas > 1 else None

    def lines(self) -> list[str]:
        """The plan in words, for a terminal."""
        who = ", ".join(self.models)
        out = [f"capacity plan for {who}: {self.replicas} replicas "
               f"(N = {self.needed} carry {self.target_rps:g} req/s at "
               f"<= {self.rule.utilisation_cap:.0%} of their goodput, + {self.rule.spare} "
               f"spare); HPA {self.hpa_min}..{self.hpa_max}"]
        if self.goodput_rps is not None:
            out.append(f"  one replica holds {self.goodput_rps:.0f} req/s within the SLO "
                       "(tune's goodput)")
        if self.holds_at_2x_rps is not None:
            out.append(f"  offered 2x that, one replica answers {self.holds_at_2x_rps:.0f} "
                       f"req/s within the SLO with {self.policy or 'its queue policy'}")
        lost = self.utilisation_one_lost
        out.append(f"  at the target the replicas run at {self.utilisation:.0%} of their "
                   "goodput" + (f", {lost:.0%} with one lost" if lost is not None else ""))
        out.append(f"  rule: {self.rule.describe()}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"models": list(self.models), "target_rps": self.target_rps,
                "goodput_rps": self.goodput_rps, "load": self.load, "needed": self.needed,
                "replicas": self.replicas, "hpa_min": self.hpa_min, "hpa_max": self.hpa_max,
                "utilisation": self.utilisation, "utilisation_one_lost":
                self.utilisation_one_lost, "holds_at_2x_rps": self.holds_at_2x_rps,
                "policy": self.policy, "headroom": self.rule.to_dict()}


def _plan(models: tuple[str, ...], target: float, load: float, rule: HeadroomRule,
          **extra: Any) -> CapacityPlan:
    needed = rule.needed(load)
    return CapacityPlan(models, target, load, rule, needed, needed + rule.spare,
                        rule.needed(rule.surge * load) + rule.spare, **extra)


def plan_capacity(target_rps: float, tuned: TunedModel,
                  rule: HeadroomRule | None = None) -> CapacityPlan:
    """The plan for one model serving `target_rps`."""
    rule = rule or HeadroomRule()
    if target_rps <= 0:
        raise ValueError("the target throughput must be above 0")
    if tuned.goodput_rps <= 0:
        raise ValueError(f"{tuned.model}: no measured goodput to plan from")
    return _plan((tuned.model,), target_rps, target_rps / tuned.goodput_rps, rule,
                 goodput_rps=tuned.goodput_rps, holds_at_2x_rps=tuned.holds_at_2x_rps,
                 policy=tuned.policy)


def plan_release(plans: Sequence[CapacityPlan], rule: HeadroomRule | None = None
                 ) -> CapacityPlan:
    """One pod serves every model of a release: their loads add up."""
    if not plans:
        raise ValueError("no model to plan for")
    if len(plans) == 1:
        return plans[0]
    rule = rule or plans[0].rule
    return _plan(tuple(m for p in plans for m in p.models), sum(p.target_rps for p in plans),
                 sum(p.load for p in plans), rule)


def tuned_from_best(best: Mapping[str, Any], source: str) -> TunedModel:
    """The plan's inputs from best.json's content; CapacityError when it holds none."""
    where = f"{source}/best.json"
    model = best.get("model")
    if not isinstance(model, str) or not model:
        raise CapacityError(f"{where}: no 'model': is this the output of `triton-ops tune`?")
    goodput = best.get("goodput")
    if not isinstance(goodput, int | float) or isinstance(goodput, bool) or goodput <= 0 \
            or best.get("slo_met") is False:
        raise CapacityError(f"{where}: tune confirmed no goodput for {model} (no rate held "
                            "its p99 under the SLO): nothing to plan from; tune it again")
    holds, policy = None, None
    overload = best.get("overload")
    if overload is not None:
        try:
            holds = overload.get("holds_at_2x_rps")
            holds = None if holds is None else float(holds)
            chosen = overload.get("chosen") or {}
            policy = (chosen.get("policy") or {}).get("label")
            if chosen.get("helps") and overload.get("config_goodput_rps"):
                # The policy holds on another config: replicas serve that one.
                goodput = float(overload["config_goodput_rps"])
        except (AttributeError, TypeError, ValueError):
            raise CapacityError(f"{where}: 'overload' is not what tune writes; run tune "
                                "again or remove it") from None
    return TunedModel(model, float(goodput), source, holds, policy)


def read_tune_result(folder: Path | str) -> TunedModel:
    """The plan's inputs from a tune output folder (its best.json)."""
    folder = Path(folder)
    path = folder / "best.json"
    if not path.is_file():
        raise CapacityError(f"{folder}: no best.json here; pass the folder a tune run wrote "
                            "(tune-results/<model>/<time>)")
    try:
        best = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CapacityError(f"{path}: cannot read it as JSON ({exc})") from None
    if not isinstance(best, dict):
        raise CapacityError(f"{path}: not a JSON object; is this the output of tune?")
    return tuned_from_best(best, str(folder))
