import pytest

from triton_ops.rollout.analysis import AnalysisPolicy
from triton_ops.rollout.state import Command, RolloutSpec, new_state
from triton_ops.rollout.store import RolloutLocked, StateStore, StoreError


def spec() -> RolloutSpec:
    return RolloutSpec(model="m", stable=[1], canary=2, policy=AnalysisPolicy())


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    store = StateStore(tmp_path / "s")
    for i in range(5):
        store.save(new_state(spec(), float(i)))
    assert sorted(p.name for p in store.directory.iterdir()) == ["state.json"]
    assert store.load().started_at == 4.0


def test_corrupt_state_is_a_clear_error(tmp_path):
    store = StateStore(tmp_path)
    store.state_path.write_text('{"spec": {"model": "m"}}')
    with pytest.raises(StoreError, match="not a valid rollout state.*rollback"):
        store.load()


def test_audit_lines_survive_a_torn_last_line(tmp_path):
    store = StateStore(tmp_path)
    store.append_audit({"event": "a"})
    with store.audit_path.open("a") as handle:
        handle.write('{"event": "torn')
    assert store.read_audit() == [{"event": "a"}]


def test_commands_are_taken_once(tmp_path):
    store = StateStore(tmp_path)
    assert store.take_command() is None
    store.send_command(Command(action="abort", by="x"))
    assert store.pending_command()
    assert store.take_command().action == "abort"
    assert store.take_command() is None


def test_lock_names_its_owner_and_is_exclusive(tmp_path):
    store = StateStore(tmp_path)
    other = StateStore(tmp_path)
    with store.lock():
        assert other.is_locked()
        with pytest.raises(RolloutLocked, match="pid"):
            with other.lock():
                pass
    assert not other.is_locked()


def test_known_good_history(tmp_path):
    store = StateStore(tmp_path)
    store.record_known_good([1])
    store.record_known_good([1])
    store.record_known_good([3, 2])
    assert store.known_good() == [[1], [2, 3]]


def test_target_options_round_trip_and_are_empty_when_unreadable(tmp_path):
    store = StateStore(tmp_path)
    assert store.target_options() == {}
    store.save_target_options({"url": "127.0.0.1:8001", "rate": 50.0, "requests": None})
    assert store.target_options() == {"url": "127.0.0.1:8001", "rate": 50.0, "requests": None}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["target.json"]
    store.target_path.write_text("[1, 2]")
    assert store.target_options() == {}
