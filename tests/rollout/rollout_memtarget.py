"""An in-memory rollout target: plain data, scripted windows, for engine unit tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from triton_ops.rollout.analysis import AgreementSample, VersionWindow, WindowMetrics
from triton_ops.rollout.store import StateStore
from triton_ops.rollout.target import TargetError


def good_window(weight: int, n: int = 200) -> WindowMetrics:
    canary = n * weight // 100
    return WindowMetrics(
        stable=VersionWindow(requests=n - canary, errors=0, p99_latency_us=2000.0),
        canary=VersionWindow(requests=canary, errors=0, p99_latency_us=2100.0),
        duration_s=1.0,
    )


@dataclass
class MemoryTarget:
    model: str
    store: StateStore
    serving: list[int] = field(default_factory=lambda: [1])
    problems: dict[int, list[str]] = field(default_factory=dict)
    window: Callable[[int, int], WindowMetrics] = lambda weight, i: good_window(weight)
    agreement: Callable[[int], list[AgreementSample]] = (
        lambda i: [AgreementSample(agree=True) for _ in range(10)])
    fail_load: str | None = None
    fail_promote: str | None = None
    fail_rollback: int = 0  # how many rollback attempts fail
    calls: list[str] = field(default_factory=list)
    weights: list[int] = field(default_factory=list)
    windows: int = 0
    history: list[list[int]] = field(default_factory=list)

    def describe(self) -> str:
        return "memory"

    def serving_versions(self) -> list[int]:
        return sorted(self.serving)

    def attach(self, stable: list[int], canary: int) -> None:
        self.calls.append(f"attach {stable} {canary}")

    def verify_version(self, version: int) -> list[str]:
        return list(self.problems.get(version, []))

    def _serve(self, versions: list[int]) -> None:
        assert versions, "a target must never serve no version"
        self.serving = sorted(versions)
        self.history.append(list(self.serving))

    def load_canary(self, stable: list[int], canary: int) -> None:
        self.calls.append("load")
        assert f"attach {stable} {canary}" in self.calls
        if self.fail_load:
            raise TargetError(self.fail_load)
        self._serve([*stable, canary])

    def set_weight(self, weight: int) -> None:
        self.weights.append(weight)

    def collect_window(self, weight: int, duration_s: float) -> WindowMetrics:
        self.windows += 1
        return self.window(weight, self.windows)

    def shadow_compare(self, samples: int) -> list[AgreementSample]:
        return self.agreement(self.windows)

    def promote(self, stable: list[int], canary: int) -> None:
        self.calls.append("promote")
        if self.fail_promote:
            raise TargetError(self.fail_promote)
        self._serve([canary])

    def rollback(self, stable: list[int], canary: int) -> None:
        self.calls.append("rollback")
        if self.fail_rollback:
            self.fail_rollback -= 1
            raise TargetError("rollback refused")
        self._serve(list(stable))

    def restore(self, versions: list[int]) -> None:
        self._serve(list(versions))
