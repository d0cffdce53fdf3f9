"""Scheduler rules: dynamic batching, priority queues, queue policies, sequence batching."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from triton_ops.modelconfig.proto import ModelConfig, model_config_pb2
from triton_ops.modelconfig.rules.registry import E, Issue, W, enum_name, rule

SRC = "core:src/model_config_utils.cc"
SCHED = "core:src/scheduler_utils.cc"
DBS = "core:src/dynamic_batch_scheduler.cc"
DB = "dynamic_batching"
SB = "sequence_batching"
ONE_SECOND_US = 1_000_000
_Control = model_config_pb2.ModelSequenceBatching.Control
_BOOLEAN_KINDS = (_Control.CONTROL_SEQUENCE_START, _Control.CONTROL_SEQUENCE_END,
                  _Control.CONTROL_SEQUENCE_READY)
_TYPED_KINDS = (_Control.CONTROL_SEQUENCE_CORRID,)
_CORRID_TYPES = {model_config_pb2.TYPE_UINT64, model_config_pb2.TYPE_INT64,
                 model_config_pb2.TYPE_UINT32, model_config_pb2.TYPE_INT32,
                 model_config_pb2.TYPE_STRING}
_DELAY = model_config_pb2.ModelQueuePolicy.DELAY


def _preferred_sizes(sizes: Iterable[int], path: tuple[str, ...],
                     max_batch_size: int) -> Iterator[Issue]:
    """Preferred batch sizes (dynamic or oldest-sequence batcher): > 0 and <= max_batch_size."""
    for i, size in enumerate(sizes):
        if size <= 0:
            yield (*path, i), f"preferred batch size {size} must be positive"
        elif size > max_batch_size:
            yield (*path, i), (f"preferred batch size {size} is larger than max_batch_size "
                               f"{max_batch_size}; lower it or raise max_batch_size")


@rule("config-dynamic-preferred-size", E,
      "each dynamic_batching preferred_batch_size is > 0 and <= max_batch_size",
      f"{SRC} ValidateModelConfig")
def dynamic_preferred(config: ModelConfig) -> Iterator[Issue]:
    if not config.HasField(DB):
        return
    yield from _preferred_sizes(config.dynamic_batching.preferred_batch_size,
                                (DB, "preferred_batch_size"), config.max_batch_size)


@rule("config-dynamic-default-priority", E,
      "with priority_levels set, default_priority_level is in [1, priority_levels]",
      f"{SRC} ValidateModelConfig")
def default_priority(config: ModelConfig) -> Iterator[Issue]:
    db = config.dynamic_batching
    levels = db.priority_levels
    if config.HasField(DB) and levels != 0:
        level = db.default_priority_level
        if level == 0 or level > levels:
            yield (DB, "default_priority_level" if level else "priority_levels"), (
                f"default_priority_level is {level} but must be in [1, {levels}]: set "
                f"default_priority_level to the level of requests that give no priority")


@rule("config-dynamic-priority-policy-level", E,
      "priority_queue_policy keys are priority levels in [1, priority_levels]",
      f"{SRC} ValidateModelConfig")
def priority_policy_level(config: ModelConfig) -> Iterator[Issue]:
    db = config.dynamic_batching
    if not config.HasField(DB) or db.priority_levels == 0:
        return
    for key in sorted(db.priority_queue_policy):
        if key == 0 or key > db.priority_levels:
            yield (DB, "priority_queue_policy", key), (
                f"priority_queue_policy for level {key}, but levels are 1..{db.priority_levels}")


@rule("config-dynamic-priority-without-levels", W,
      "default_priority_level or priority_queue_policy set without priority_levels: Triton "
      "ignores them", f"{SRC} ValidateModelConfig (checked only when priority_levels != 0)")
def priority_without_levels(config: ModelConfig) -> Iterator[Issue]:
    db = config.dynamic_batching
    if not config.HasField(DB) or db.priority_levels != 0:
        return
    if db.default_priority_level:
        yield (DB, "default_priority_level"), ("default_priority_level has no effect without "
                                               "priority_levels; set priority_levels")
    for key in sorted(db.priority_queue_policy):
        yield (DB, "priority_queue_policy", key), ("priority_queue_policy has no effect without "
                                                   "priority_levels; set priority_levels")


@rule("config-dynamic-preserve-ordering", E,
      "preserve_ordering allows one priority level and no DELAY timeout action",
      f"{SRC} ValidateModelConfig")
def preserve_ordering(config: ModelConfig) -> Iterator[Issue]:
    db = config.dynamic_batching
    if not config.HasField(DB) or not db.preserve_ordering:
        return
    if db.priority_levels > 1:
        yield (DB, "priority_levels"), ("preserve_ordering allows only one priority level: "
                                        "remove priority_levels or preserve_ordering")
    policies = [((DB, "default_queue_policy"), db.default_queue_policy)]
    policies += [((DB, "priority_queue_policy", k), p) for k, p in db.priority_queue_policy.items()]
    for path, policy in policies:
        if policy.default_timeout_microseconds != 0 and policy.timeout_action == _DELAY:
            yield path, ("a queue policy cannot use timeout_action DELAY when preserve_ordering "
                         "is true; use REJECT")


@rule("config-dynamic-no-batching", W,
      "dynamic_batching on a model with max_batch_size 0 never forms batches",
      "judgement: Triton 2.51 loads it (observed)")
def dynamic_no_batching(config: ModelConfig) -> Iterator[Issue]:
    if config.HasField(DB) and config.max_batch_size == 0:
        yield (DB,), ("dynamic_batching has no batching effect with max_batch_size 0 (only its "
                      "queue settings apply); set max_batch_size > 0 if the model accepts a "
                      "batch dimension")


@rule("config-queue-delay-large", W,
      "a max_queue_delay_microseconds over 1 s holds requests for over a second (units are "
      "microseconds)", "judgement: Triton accepts any delay")
def queue_delay_large(config: ModelConfig) -> Iterator[Issue]:
    delays = []
    if config.HasField(DB):
        delays.append(((DB, "max_queue_delay_microseconds"),
                       config.dynamic_batching.max_queue_delay_microseconds))
    sb = config.sequence_batching
    if config.HasField(SB):
        strategy = sb.WhichOneof("strategy_choice")
        if strategy:
            delays.append(((SB, strategy, "max_queue_delay_microseconds"),
                           getattr(sb, strategy).max_queue_delay_microseconds))
    for path, delay in delays:
        if delay > ONE_SECOND_US:
            yield path, (f"max_queue_delay_microseconds is {delay} ({delay / 1e6:g} s); the unit "
                         "is microseconds: 5 ms is 5000")


def _queue_policies(config: ModelConfig) -> Iterator[tuple[tuple, object]]:
    """The dynamic batcher's queue policies that are set, with their paths: the default one
    and one per priority level."""
    if not config.HasField(DB):
        return
    db = config.dynamic_batching
    if db.HasField("default_queue_policy"):
        yield (DB, "default_queue_policy"), db.default_queue_policy
    for level in sorted(db.priority_queue_policy):
        yield (DB, "priority_queue_policy", level), db.priority_queue_policy[level]


@rule("config-queue-policy-timeout", W,
      "a queue policy's timeout settings (timeout_action DELAY, allow_timeout_override) have "
      "no effect without default_timeout_microseconds",
      f"{SCHED} PriorityQueue::PolicyQueue::Enqueue (a request's own timeout is used only "
      "when it is shorter than a non-zero default); observed on Triton 2.51")
def queue_policy_timeout(config: ModelConfig) -> Iterator[Issue]:
    for path, policy in _queue_policies(config):
        if policy.default_timeout_microseconds != 0:
            continue
        if policy.timeout_action == _DELAY:
            yield (*path, "timeout_action"), ("timeout_action DELAY does nothing without "
                                              "default_timeout_microseconds; set a timeout")
        if policy.allow_timeout_override:
            yield (*path, "allow_timeout_override"), (
                "allow_timeout_override does nothing without default_timeout_microseconds: "
                "Triton lets a request's timeout shorten a default timeout, never replace "
                "none; set default_timeout_microseconds to the longest wait you allow")


@rule("config-queue-policy-timeout-below-delay", W,
      "a REJECT queue timeout at or below max_queue_delay_microseconds rejects a request "
      "that waits for its batch to fill, even with the server idle",
      f"{DBS} GetDynamicBatch (waits until the closest request timeout); observed on "
      "Triton 2.51")
def queue_timeout_below_delay(config: ModelConfig) -> Iterator[Issue]:
    delay = config.dynamic_batching.max_queue_delay_microseconds
    if delay == 0:
        return
    for path, policy in _queue_policies(config):
        timeout = policy.default_timeout_microseconds
        if 0 < timeout <= delay and policy.timeout_action != _DELAY:
            yield (*path, "default_timeout_microseconds"), (
                f"default_timeout_microseconds {timeout} is not above "
                f"max_queue_delay_microseconds {delay}: at light load a request waiting for "
                "its batch to fill times out first and is rejected; make the timeout longer "
                "than the delay, or shorten the delay")


@rule("config-queue-policy-size-below-batch", W,
      "a max_queue_size below max_batch_size caps every batch at max_queue_size requests",
      f"{SCHED} PriorityQueue::PolicyQueue::Enqueue (a batch forms from queued requests); "
      "observed on Triton 2.51")
def queue_size_below_batch(config: ModelConfig) -> Iterator[Issue]:
    mbs = config.max_batch_size
    if mbs <= 1:
        return
    for path, policy in _queue_policies(config):
        size = policy.max_queue_size
        if 0 < size < mbs:
            yield (*path, "max_queue_size"), (
                f"max_queue_size {size} is below max_batch_size {mbs}: a batch forms from "
                f"queued requests, so none holds more than {size} and arrivals beyond it are "
                "rejected while one runs; raise max_queue_size to at least max_batch_size")


def _control_inputs(config: ModelConfig) -> Iterator[tuple[tuple, object, int, object]]:
    for i, ci in enumerate(config.sequence_batching.control_input):
        for j, c in enumerate(ci.control):
            yield (SB, "control_input", i, "control", j), ci, c.kind, c


@rule("config-sequence-control-name", E,
      "each sequence control_input has a name, used for one control_input only",
      f"{SRC} GetBooleanSequenceControlProperties")
def control_names(config: ModelConfig) -> Iterator[Issue]:
    seen: set[str] = set()
    for i, ci in enumerate(config.sequence_batching.control_input):
        if not ci.name:
            yield (SB, "control_input", i), "control_input has no name: add name: \"...\""
        elif ci.name in seen:
            yield (SB, "control_input", i, "name"), (f"control tensor '{ci.name}' is used for "
                                                      "more than one control_input")
        seen.add(ci.name)


@rule("config-sequence-control-kind-duplicate", E,
      "each control kind (START, END, READY, CORRID) is given by at most one tensor",
      f"{SRC} GetBooleanSequenceControlProperties")
def control_kind_duplicate(config: ModelConfig) -> Iterator[Issue]:
    seen: dict[int, str] = {}
    for path, ci, kind, _ in _control_inputs(config):
        name = enum_name(_Control.Kind, kind)
        if kind in seen:
            yield path, f"{name} is already given by tensor '{seen[kind]}'; keep one"
        else:
            seen[kind] = ci.name


@rule("config-sequence-control-values", E,
      "START/END/READY controls give exactly one of int32_false_true, fp32_false_true, "
      "bool_false_true, with exactly 2 values", f"{SRC} GetBooleanSequenceControlProperties")
def control_values(config: ModelConfig) -> Iterator[Issue]:
    for path, _, kind, c in _control_inputs(config):
        if kind not in _BOOLEAN_KINDS:
            continue
        name = enum_name(_Control.Kind, kind)
        given = [f for f in ("int32_false_true", "fp32_false_true", "bool_false_true")
                 if len(getattr(c, f))]
        if not given:
            yield path, (f"{name} needs its false/true values, e.g. int32_false_true: [ 0, 1 ]")
        elif len(given) > 1:
            yield path, f"{name} gives {' and '.join(given)}; keep only one"
        elif len(getattr(c, given[0])) != 2:
            yield (*path, given[0]), (f"{name} {given[0]} needs exactly 2 values "
                                      "[false, true]")


@rule("config-sequence-control-corrid", E,
      "a CORRID control gives a data_type (UINT64, INT64, UINT32, INT32 or STRING) and no "
      "false/true values", f"{SRC} GetTypedSequenceControlProperties / ValidateModelConfig")
def control_corrid(config: ModelConfig) -> Iterator[Issue]:
    for path, _, kind, c in _control_inputs(config):
        if kind not in _TYPED_KINDS:
            continue
        if len(c.int32_false_true) or len(c.fp32_false_true) or len(c.bool_false_true):
            yield path, "CONTROL_SEQUENCE_CORRID takes a data_type, not false/true values"
        if c.data_type not in _CORRID_TYPES:
            yield path, ("CONTROL_SEQUENCE_CORRID needs data_type TYPE_UINT64, TYPE_INT64, "
                         "TYPE_UINT32, TYPE_INT32 or TYPE_STRING")


@rule("config-sequence-preferred-size", E,
      "each oldest-strategy preferred_batch_size is > 0 and <= max_batch_size",
      f"{SRC} ValidateModelConfig")
def sequence_preferred(config: ModelConfig) -> Iterator[Issue]:
    if not config.sequence_batching.HasField("oldest"):
        return
    yield from _preferred_sizes(config.sequence_batching.oldest.preferred_batch_size,
                                (SB, "oldest", "preferred_batch_size"), config.max_batch_size)


@rule("config-sequence-slot-utilization", E,
      "direct-strategy minimum_slot_utilization is in [0.0, 1.0]", f"{SRC} ValidateModelConfig")
def slot_utilization(config: ModelConfig) -> Iterator[Issue]:
    if config.sequence_batching.HasField("direct"):
        value = config.sequence_batching.direct.minimum_slot_utilization
        if value < 0.0 or value > 1.0:
            yield (SB, "direct", "minimum_slot_utilization"), (
                f"minimum_slot_utilization {value:g} must be between 0.0 and 1.0")


@rule("config-sequence-state", W,
      "each implicit state names input_name and output_name, a data_type and dims, an "
      "input_name that is not also a model input, and names no other state uses (an "
      "output_name may be listed among the outputs: clients can then request the state)",
      "judgement: Triton 2.51 loads such states (observed); they fail at inference. Server "
      "docs/user_guide/implicit_state_management.md")
def sequence_state(config: ModelConfig) -> Iterator[Issue]:
    inputs = {io.name for io in config.input}
    seen_in: set[str] = set()
    seen_out: set[str] = set()
    for i, st in enumerate(config.sequence_batching.state):
        path = (SB, "state", i)
        if not st.input_name or not st.output_name:
            yield path, "state needs both input_name and output_name"
        if st.data_type == model_config_pb2.TYPE_INVALID:
            yield path, "state needs a data_type"
        if not st.dims:
            yield path, "state needs dims (its shape without the batch dimension)"
        for d, dim in enumerate(st.dims):
            if dim < 1 and dim != -1:
                yield (*path, "dims", d), f"state dimension {dim} must be >= 1 or -1"
        if st.input_name in inputs:
            yield (*path, "input_name"), (f"state input_name '{st.input_name}' is also a model "
                                          "input; Triton supplies state itself: rename it")
        if st.input_name and st.input_name in seen_in:
            yield (*path, "input_name"), f"state input_name '{st.input_name}' is used twice"
        if st.output_name and st.output_name in seen_out:
            yield (*path, "output_name"), f"state output_name '{st.output_name}' is used twice"
        seen_in.add(st.input_name)
        seen_out.add(st.output_name)


@rule("config-sequence-initial-state", E,
      "an initial_state gives its data (zero_data or data_file) and fixed dims",
      "observed: Triton 2.51 refuses ('initial_state setting expects ... state_data set')")
def initial_state(config: ModelConfig) -> Iterator[Issue]:
    for i, st in enumerate(config.sequence_batching.state):
        for j, init in enumerate(st.initial_state):
            path = (SB, "state", i, "initial_state", j)
            if init.WhichOneof("state_data") is None:
                yield path, ("initial_state needs zero_data: true or data_file: \"...\" "
                             "(a file in the model's initial_state folder)")
            if any(d == -1 for d in init.dims):
                yield (*path, "dims"), "initial_state dims must be fixed (no -1)"


SCHED = "core:src/sequence_batch_scheduler/sequence_batch_scheduler.cc"


@rule("config-sequence-initial-state-count", E,
      "a state has at most one initial_state", f"{SCHED} SequenceBatchScheduler::Create "
      "('must contain exactly one or zero element')")
def initial_state_count(config: ModelConfig) -> Iterator[Issue]:
    for i, st in enumerate(config.sequence_batching.state):
        if len(st.initial_state) > 1:
            yield (SB, "state", i, "initial_state", 1), (
                f"state '{st.input_name}' has {len(st.initial_state)} initial_state entries; "
                "keep one")


@rule("config-sequence-initial-state-name", E,
      "an initial_state has a name", f"{SCHED} GenerateInitialStateData "
      "('Field 'name' must be set when using initial_state')")
def initial_state_name(config: ModelConfig) -> Iterator[Issue]:
    for i, st in enumerate(config.sequence_batching.state):
        for j, init in enumerate(st.initial_state):
            if not init.name:
                yield (SB, "state", i, "initial_state", j), (
                    f"the initial_state of state '{st.input_name}' needs a name: add "
                    "name: \"...\"")


@rule("config-sequence-initial-state-match", E,
      "an initial_state has its state's data_type and as many dims, each equal to the "
      "state's unless that one is -1", f"{SCHED} GenerateInitialStateData "
      "('does not match the state data type' / 'doesn't match the size of state dimensions' "
      "/ 'doesn't match state dim description')")
def initial_state_match(config: ModelConfig) -> Iterator[Issue]:
    for i, st in enumerate(config.sequence_batching.state):
        for j, init in enumerate(st.initial_state):
            path = (SB, "state", i, "initial_state", j)
            if init.data_type != st.data_type:
                types = model_config_pb2.DataType
                yield (*path, "data_type"), (
                    f"initial_state data_type {enum_name(types, init.data_type)} differs from "
                    f"state '{st.input_name}' {enum_name(types, st.data_type)}; use the "
                    "state's")
            if len(init.dims) != len(st.dims):
                yield (*path, "dims"), (f"initial_state has {len(init.dims)} dims but state "
                                        f"'{st.input_name}' has {len(st.dims)}")
                continue
            for d, (have, want) in enumerate(zip(init.dims, st.dims, strict=True)):
                if want != -1 and have != -1 and have != want:
                    yield (*path, "dims", d), (f"initial_state dim {have} differs from state "
                                               f"'{st.input_name}' dim {want}")


@rule("config-sequence-initial-state-duplicate", E,
      "two states with an initial_state do not share an input_name", f"{SCHED} "
      "GenerateInitialStateData ('State input name ... specified more than once')")
def initial_state_duplicate(config: ModelConfig) -> Iterator[Issue]:
    seen: set[str] = set()
    for i, st in enumerate(config.sequence_batching.state):
        if not st.initial_state:
            continue
        if st.input_name in seen:
            yield (SB, "state", i, "input_name"), (
                f"state input_name '{st.input_name}' already has an initial_state; give each "
                "state its own input_name")
        seen.add(st.input_name)
