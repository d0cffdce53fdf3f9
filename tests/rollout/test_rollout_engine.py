"""Every path of the state machine and its driver, with an in-memory target and no server."""

import pytest
from rollout_memtarget import MemoryTarget, good_window

from triton_ops.rollout.analysis import AgreementSample, AnalysisPolicy, VersionWindow
from triton_ops.rollout.engine import Engine, RolloutRefused, exit_code
from triton_ops.rollout.state import (
    Command,
    Phase,
    RolloutSpec,
    RolloutState,
    WindowAnalyzed,
    new_state,
    transition,
)
from triton_ops.rollout.store import StateStore


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def spec(**kw) -> RolloutSpec:
    values = {"model": "m", "stable": [1], "canary": 2, "steps": [10, 50, 100],
              "interval_s": 1.0, "policy": AnalysisPolicy(min_requests=5)}
    values.update(kw)
    return RolloutSpec(**values)


@pytest.fixture()
def target(tmp_path) -> MemoryTarget:
    return MemoryTarget(model="m", store=StateStore(tmp_path / "store"))


def engine(target: MemoryTarget, clock: FakeClock | None = None) -> Engine:
    clock = clock or FakeClock()
    return Engine(target, clock=clock, sleep=clock.sleep, poll_s=0.1)


def test_healthy_rollout_walks_every_step_and_promotes(target):
    state = engine(target).start(spec())
    assert state.phase is Phase.SUCCEEDED and exit_code(state) == 0
    assert target.weights == [10, 50, 100]
    assert target.serving == [2]
    # never a moment with no version: [1] -> [1,2] -> [2]
    assert target.history == [[1, 2], [2]]
    audit = target.store.read_audit()
    assert [r["event"] for r in audit][:2] == ["started", "canary-loaded"]
    windows = [r for r in audit if r["event"] == "window-analyzed"]
    assert [r["verdict"] for r in windows] == ["PASS", "PASS", "PASS"]
    assert all({"time", "step", "weight", "metrics", "verdict", "reason"} <= r.keys()
               for r in windows)
    assert target.store.load().phase is Phase.SUCCEEDED
    assert target.store.known_good() == [[1], [2]]


def test_wrong_outputs_roll_back_at_once(target):
    target.agreement = lambda i: [AgreementSample(agree=False, detail="y differs")] * 10
    state = engine(target).start(spec(failure_limit=5))
    assert state.phase is Phase.ROLLED_BACK and exit_code(state) == 1
    assert target.windows == 1
    assert target.serving == [1]
    assert "output-agreement" in state.reason


def test_errors_roll_back_after_failure_limit(target):
    def erroring(weight, i):
        w = good_window(weight)
        w.canary = VersionWindow(requests=20, errors=5, p99_latency_us=1000.0)
        return w

    target.window = erroring
    state = engine(target).start(spec(failure_limit=3))
    assert state.phase is Phase.ROLLED_BACK
    assert target.windows == 3 and state.failures == 3
    assert target.weights == [10, 10, 10]  # a failed window holds the step


def test_one_failed_window_then_recovery_still_promotes(target):
    def flaky(weight, i):
        w = good_window(weight)
        if i == 1:
            w.canary = VersionWindow(requests=20, errors=5, p99_latency_us=1000.0)
        return w

    target.window = flaky
    state = engine(target).start(spec(failure_limit=2))
    assert state.phase is Phase.SUCCEEDED and state.failures == 1


def test_no_data_holds_then_rolls_back_never_promotes(target):
    from triton_ops.rollout.analysis import WindowMetrics

    target.window = lambda weight, i: WindowMetrics()
    state = engine(target).start(spec(max_inconclusive=4))
    assert state.phase is Phase.ROLLED_BACK
    assert target.weights == [10, 10, 10, 10]
    assert "inconclusive" in state.reason
    assert "promote" not in target.calls


def test_canary_that_fails_to_load_rolls_back(target):
    target.fail_load = "version 2: model.py raised"
    state = engine(target).start(spec())
    assert state.phase is Phase.ROLLED_BACK
    assert "failed to load" in state.reason
    assert target.serving == [1]


def test_promotion_failure_rolls_back(target):
    target.fail_promote = "golden probe failed"
    state = engine(target).start(spec())
    assert state.phase is Phase.ROLLED_BACK
    actions = [c for c in target.calls if not c.startswith("attach")]
    assert actions == ["load", "promote", "rollback"]


def test_rollback_retries_then_fails_without_touching_stable(target):
    target.fail_load = "boom"
    target.fail_rollback = 5
    state = engine(target).start(spec())
    assert state.phase is Phase.FAILED
    assert target.calls.count("rollback") == 3
    assert "triton-ops rollback m" in state.reason


def test_refused_before_start(target):
    target.problems = {2: ["version 2 is not sealed: run `triton-ops publish m 2`"]}
    with pytest.raises(RolloutRefused, match="not sealed"):
        engine(target).start(spec())
    assert target.calls == [] and target.store.load() is None


def test_tampered_stable_refused(target):
    target.problems = {1: ["1/model.py: sha256 differs from the seal"]}
    with pytest.raises(RolloutRefused, match="modified"):
        engine(target).start(spec())


def test_stable_must_be_what_serves(target):
    target.serving = [3]
    with pytest.raises(RolloutRefused, match="not what serves"):
        engine(target).start(spec())


def test_confirm_pauses_until_promote_command(target):
    clock = FakeClock()
    eng = engine(target, clock)

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if len(clock.slept) == 3:  # another shell confirms while we wait
            target.store.send_command(Command(action="promote", by="sre"))

    eng.sleep = sleep
    state = eng.start(spec(confirm=True))
    assert state.phase is Phase.SUCCEEDED
    phases = [r["phase"] for r in target.store.read_audit()]
    assert "Paused" in phases
    assert "promotion confirmed by sre" in state.reason or state.phase is Phase.SUCCEEDED


def test_abort_command_rolls_back(target):
    def window(weight, i):
        if i == 2:
            target.store.send_command(Command(action="abort", by="sre"))
        return good_window(weight)

    target.window = window
    state = engine(target).start(spec())
    assert state.phase is Phase.ROLLED_BACK
    assert "aborted by sre" in state.reason


def test_resume_after_crash_continues_from_persisted_step(target):
    class Crash(Exception):
        pass

    def window(weight, i):
        if i == 2:
            raise Crash  # the CLI dies mid-window
        return good_window(weight)

    target.window = window
    with pytest.raises(Crash):
        engine(target).start(spec())
    persisted = target.store.load()
    assert persisted.phase is Phase.PROGRESSING and persisted.weight == 50
    assert not target.store.is_locked()  # the lock died with the "process"
    with pytest.raises(RolloutRefused, match="still Progressing"):
        engine(target).start(spec())
    target.window = lambda weight, i: good_window(weight)
    state = engine(target).resume()
    assert state.phase is Phase.SUCCEEDED
    assert target.weights == [10, 50, 50, 100]
    assert "resumed" in [r["event"] for r in target.store.read_audit()]


def test_a_store_that_cannot_be_written_refuses_before_anything_changes(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    target = MemoryTarget(model="m", store=StateStore(blocker / "store"))
    with pytest.raises(RolloutRefused, match=rf"cannot write {blocker}/store/\S+: {blocker} "
                       "is not a folder"):
        engine(target).start(spec())
    assert target.calls == [] and target.serving == [1]
    with pytest.raises(RolloutRefused, match="is not a folder"):
        engine(target).resume()


def test_a_write_that_fails_mid_rollout_is_a_store_error_not_a_refusal(target):
    from triton_ops.rollout.store import StoreError

    folder = target.store.directory

    def window(weight, i):
        folder.rename(folder.with_name("moved"))  # the disk goes away under the driver
        folder.write_text("")
        return good_window(weight)

    target.window = window
    with pytest.raises(StoreError, match=rf"cannot write {folder}/state.json: {folder} is "
                       "not a folder"):
        engine(target).start(spec())
    moved = StateStore(folder.with_name("moved")).load()
    assert moved.phase is Phase.PROGRESSING and target.serving == [1, 2]


def test_command_without_a_driver_acts_itself(target):
    store = target.store
    st = new_state(spec(), 1.0).model_copy(update={"phase": Phase.PAUSED, "step": 2,
                                                    "weight": 100})
    store.save(st)
    target.serving = [1, 2]
    state, drove = engine(target).command("promote", by="sre")
    assert drove and state.phase is Phase.SUCCEEDED and target.serving == [2]


def test_command_with_a_live_driver_is_queued(target):
    store = target.store
    store.save(new_state(spec(), 1.0))
    with store.lock():
        state, drove = engine(target).command("abort")
    assert not drove and store.pending_command()


def test_one_rollout_per_model(target):
    with target.store.lock(), pytest.raises(RolloutRefused, match="another triton-ops"):
        engine(target).start(spec())


def test_terminal_state_ignores_events():
    st = new_state(spec(), 0.0).model_copy(update={"phase": Phase.SUCCEEDED})
    new, record = transition(st, Command(action="abort"), 1.0)
    assert new.phase is Phase.SUCCEEDED and "ignored" in record.reason


def test_abort_during_promotion_is_ignored():
    st = new_state(spec(), 0.0).model_copy(update={"phase": Phase.PROMOTING})
    new, record = transition(st, Command(action="abort"), 1.0)
    assert new.phase is Phase.PROMOTING and "under way" in record.reason


def test_window_event_outside_progressing_is_ignored():
    from triton_ops.rollout.analysis import Result, Verdict, WindowMetrics

    st = new_state(spec(), 0.0)
    event = WindowAnalyzed(metrics=WindowMetrics(), verdict=Verdict(result=Result.PASS))
    new, record = transition(st, event, 1.0)
    assert new.phase is Phase.INITIALIZING and "ignored" in record.reason


@pytest.mark.parametrize("phase, needed", [
    (Phase.INITIALIZING, [1, 3]), (Phase.PROGRESSING, [1, 2, 3]), (Phase.PAUSED, [1, 2, 3]),
    (Phase.PROMOTING, [2]), (Phase.ROLLING_BACK, []), (Phase.ROLLED_BACK, []),
    (Phase.SUCCEEDED, []), (Phase.FAILED, []),
])
def test_versions_a_phase_needs_ready_to_go_on(phase, needed):
    state = new_state(spec(stable=[3, 1]), 0.0).model_copy(update={"phase": phase})
    assert state.needs_ready == needed


def test_state_round_trips_through_json(target):
    st = new_state(spec(), 5.0)
    target.store.save(st)
    assert target.store.load() == st
    assert RolloutState.model_validate_json(st.model_dump_json()) == st


def test_spec_validation():
    with pytest.raises(ValueError, match="increase"):
        spec(steps=[50, 10])
    with pytest.raises(ValueError, match="already serves"):
        spec(canary=1)


def test_state_files_keep_their_mode_across_rollouts(target):
    """state.json and known_good.json are replaced at every transition: a 0644 file stays
    0644 (not a temporary file's 0600), whatever the umask."""
    import os
    import stat

    old = os.umask(0o077)
    try:
        assert engine(target).start(spec()).phase is Phase.SUCCEEDED
        store = target.store
        for path in (store.state_path, store.known_good_path):
            path.chmod(0o644)
        state = engine(target).start(spec(stable=[2], canary=3))
        assert state.phase is Phase.SUCCEEDED and store.load().spec.canary == 3
    finally:
        os.umask(old)
    assert {stat.S_IMODE(p.stat().st_mode) for p in (store.state_path,
                                                     store.known_good_path)} == {0o644}
