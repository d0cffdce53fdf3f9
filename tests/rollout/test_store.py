import pytest

from triton_ops.rollout.analysis import AnalysisPolicy
from triton_ops.rollout.state import Command, RolloutSpec, new_state
from triton_ops.rollout.store import RolloutLocked, StateStore, StoreError, parse_state


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


def test_target_options_round_trip_and_are_empty_when_none_were_recorded(tmp_path):
    store = StateStore(tmp_path)
    assert store.target_options() == {}
    store.save_target_options({"url": "127.0.0.1:8001", "rate": 50.0, "requests": None})
    assert store.target_options() == {"url": "127.0.0.1:8001", "rate": 50.0, "requests": None}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["target.json"]


# -- documents that are not what triton-ops writes: a StoreError naming the file -------------

def test_state_that_is_not_utf8_is_a_clear_error(tmp_path):
    store = StateStore(tmp_path)
    store.state_path.write_bytes(b'\xff\xfe{"spec": {}}')
    with pytest.raises(StoreError, match=r"state\.json: not UTF-8"):
        store.load()


def test_state_that_is_a_folder_is_a_clear_error(tmp_path):
    store = StateStore(tmp_path)
    store.state_path.mkdir()
    with pytest.raises(StoreError, match=r"state\.json: cannot read"):
        store.load()


@pytest.mark.parametrize("content, line, what", [
    (b'{"event": "a"}\n\xff\xfe\n{"event": "b"}\n', 2, "not UTF-8"),
    (b'{"event": "a"}\n[1, 2]\n', 2, "not a JSON object"),
    (b'"x"\n{"event": "a"}\n', 1, "not a JSON object"),
    (b'{"event": "a"}\nhello\n', 2, "not a JSON object"),
    (b'{"event": "a"}\n' + b"[" * 100_000 + b"\n", 2, "not a JSON object"),
])
def test_audit_lines_that_are_not_records_name_the_line(tmp_path, content, line, what):
    store = StateStore(tmp_path)
    store.audit_path.write_bytes(content)
    with pytest.raises(StoreError, match=rf"audit\.jsonl:{line}: {what}"):
        store.read_audit()


def test_torn_records_are_skipped_and_do_not_swallow_the_next(tmp_path):
    store = StateStore(tmp_path)
    store.append_audit({"event": "a"})
    with store.audit_path.open("a") as handle:
        handle.write('{"event": "torn", "reason": "\\u00e9')  # the driver died mid-write
    store.append_audit({"event": "resumed"})
    assert store.read_audit() == [{"event": "a"}, {"event": "resumed"}]


@pytest.mark.parametrize("content", [
    '{"a": 1}', '[[1, "x"]]', '[["²"]]', '[[1.5]]', '[[true]]', '[[0]]', '[[]]', '[1]',
    "[[1e400]]", "not json", "[" * 100_000, '"[[1]]"',
])
def test_known_good_of_the_wrong_shape_is_a_clear_error(tmp_path, content):
    store = StateStore(tmp_path)
    store.known_good_path.write_text(content)
    with pytest.raises(StoreError, match=r"known_good\.json: .*\[\[1\], \[2, 3\]\]"):
        store.known_good()
    with pytest.raises(StoreError, match=r"known_good\.json"):
        store.record_known_good([4])
    assert store.known_good_path.read_text() == content  # never overwritten


@pytest.mark.parametrize("content", ["[1, 2]", "not json", "{" * 100_000, "null"])
def test_target_options_that_are_not_an_object_are_a_clear_error(tmp_path, content):
    store = StateStore(tmp_path)
    store.target_path.write_text(content)
    with pytest.raises(StoreError, match=r"target\.json: "):
        store.target_options()


@pytest.mark.parametrize(("text", "detail"), [
    ("{not json", "(Invalid JSON: key must be a string at line 1 column 2)"),
    ('{"spec": {}}', "(spec.model: Field required)"),
])
def test_a_state_that_is_not_valid_is_refused_naming_the_first_bad_field_and_the_remedy(
        text, detail):
    with pytest.raises(StoreError) as raised:
        parse_state(text, "cm/state.json", "delete the key")
    assert str(raised.value) == f"cm/state.json: not a valid rollout state {detail}; delete the key"
