"""What a rollout target must do: the contract between the engine and a deployment.

The engine (`triton_ops.rollout.engine`) decides; a target acts. Two targets exist: the
single Triton (`triton_ops.rollout.single.SingleTritonTarget`: explicit model control, the
canary loaded next to stable as another version, traffic driven by triton-ops itself) and
Kubernetes (`triton_ops.k8s`: a canary Deployment, traffic split by the mesh/ingress,
metrics from Prometheus); the CLI builds either from its options with one factory,
`triton_ops.cli.targets.open_target`. A target raises `TargetError` with a message for
people when an action fails; the engine turns that into the matching event (load failed,
promotion failed, rollback failed) and never lets it escape as a traceback.

Invariants every target must keep:
- stable is never unloaded, restarted or modified before promotion has switched to the
  canary, and `rollback` never touches it;
- at no moment has the model no ready version: `promote` makes the canary serve alone only
  after it is ready and its golden probe passed;
- every action is idempotent: after a crash the engine repeats the action of the persisted
  phase (`load_canary`, `promote`, `rollback` may run twice).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from triton_ops.rollout.analysis import AgreementSample, WindowMetrics
from triton_ops.rollout.store import StateStore


class TargetError(Exception):
    """An action on the target failed; the message says what and, when known, what to do."""


@runtime_checkable
class RolloutTarget(Protocol):
    """A place where one model's versions serve and can be canaried."""

    model: str
    store: StateStore
    """Where this model's rollout state, lock, commands and audit log live."""

    def describe(self) -> str:
        """A short human description, e.g. 'Triton 127.0.0.1:8001 (repository ./models)'."""
        ...

    def serving_versions(self) -> list[int]:
        """The versions of the model that are ready right now (sorted)."""
        ...

    def attach(self, stable: list[int], canary: int) -> None:
        """Tell the target which versions the rollout is about; called before every drive
        (start and resume), before any other action below."""
        ...

    def verify_version(self, version: int) -> list[str]:
        """Problems that forbid loading `version`: not sealed, checksum mismatch, missing
        files. Empty when the version is sealed and intact. Called before every load."""
        ...

    def load_canary(self, stable: list[int], canary: int) -> None:
        """Make `canary` ready next to the `stable` versions, stable untouched."""
        ...

    def set_weight(self, weight: int) -> None:
        """Send `weight` percent of the (analysis or live) traffic to the canary."""
        ...

    def collect_window(self, weight: int, duration_s: float) -> WindowMetrics:
        """Observe one analysis window of `duration_s` at `weight` and return what stable and
        canary served in it (requests, errors, p99). Set `canary_down` when the canary is
        not ready at all. Agreement samples are filled by `shadow_compare`."""
        ...

    def shadow_compare(self, samples: int) -> list[AgreementSample]:
        """Send `samples` identical requests to stable and canary and compare outputs with the
        envelope's tolerance. A failed canary request gives agree=None (counted as an error by
        the target's window metrics), never agree=True."""
        ...

    def promote(self, stable: list[int], canary: int) -> None:
        """Check the canary is ready and passes its golden probe, then serve [canary] alone."""
        ...

    def rollback(self, stable: list[int], canary: int) -> None:
        """Serve `stable` alone: the canary is unloaded, stable is not touched."""
        ...

    def restore(self, versions: list[int]) -> None:
        """Serve exactly `versions` (for `triton-ops rollback --to`): load and probe them next
        to what serves now, then unload the rest. Versions are verified by the caller."""
        ...
