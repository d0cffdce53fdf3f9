"""For every rule: a config that breaks it and a close variant that does not.

Shared by the unit tests (test_rules.py) and the differential test against a real Triton
(test_rules_triton.py). `TRITON_VERDICT` cases run on the bundled Python backend: for ERROR
rules Triton must refuse the failing config and load the passing one.
"""

from __future__ import annotations

from dataclasses import dataclass

IO = """input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""


def py(body: str, mbs: int = 8, io: str = IO, name: str = "m") -> str:
    """A Python-backend config around `body`."""
    return f'name: "{name}"\nbackend: "python"\nmax_batch_size: {mbs}\n{io}{body}\n'


def plat(platform: str, body: str, mbs: int = 8, io: str = IO) -> str:
    return f'name: "m"\nplatform: "{platform}"\nmax_batch_size: {mbs}\n{io}{body}\n'


ENS_IO = """input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""
STEP_A = ('{ model_name: "a" model_version: -1 input_map { key: "x" value: "IN" } '
          'output_map { key: "y" value: "MID" } }')
STEP_B = ('{ model_name: "b" model_version: -1 input_map { key: "x" value: "MID" } '
          'output_map { key: "y" value: "OUT" } }')


def ens(steps: str = f"{STEP_A}, {STEP_B}", extra: str = "", io: str = ENS_IO,
        header: str = 'platform: "ensemble"') -> str:
    return (f'name: "ens"\n{header}\nmax_batch_size: 4\n{io}'
            f"ensemble_scheduling {{ step [ {steps} ] }}\n{extra}")


def io_in(spec: str, out: str = '{ name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] }') -> str:
    return f"input [ {spec} ]\noutput [ {out} ]\n"


@dataclass(frozen=True)
class Case:
    rule: str
    bad: str
    good: str
    line: int | None = None  # line of the expected finding in `bad`, when checked
    triton: bool = False  # run both through a real Triton (Python backend)
    tag: str = ""  # tells apart two cases of one rule (it names their models)


SEQ_START = 'control_input [ { name: "S" control [ { kind: CONTROL_SEQUENCE_START %s } ] } ]'

STATE_ENTRY = ('{ input_name: "S_IN" output_name: "S_OUT" data_type: TYPE_FP32 dims: [ 4 ] '
               '%s }')
STATE = "state [ " + STATE_ENTRY + " ]"
INIT = 'initial_state { name: "%s" data_type: TYPE_FP32 dims: [ 4 ] zero_data: true }'

CASES: list[Case] = [
    # general
    Case("config-name-missing", 'backend: "python"\nmax_batch_size: 0\n' + IO, py(""), 1),
    Case("config-backend-missing", 'name: "m"\nmax_batch_size: 0\n' + IO, py("")),
    Case("config-platform-unknown", plat("tensorrt", ""), plat("tensorrt_plan", ""), 2),
    Case("config-platform-backend-mismatch",
         py("").replace('backend: "python"', 'backend: "onnxruntime"\nplatform: "tensorrt_plan"'),
         py("").replace('backend: "python"', 'backend: "onnxruntime"\nplatform: '
                        '"onnxruntime_onnx"'), 3),
    Case("config-tensorflow-platform-missing", py("").replace('"python"', '"tensorflow"'),
         py("").replace('backend: "python"', 'backend: "tensorflow"\nplatform: '
                        '"tensorflow_savedmodel"'), 2),
    Case("config-ensemble-backend", ens().replace('platform: "ensemble"',
                                                  'platform: "ensemble"\nbackend: "python"'),
         ens(), 3),
    Case("config-max-batch-size-negative", py("", mbs=-1), py("", mbs=0), 3),
    Case("config-enum-unknown", py("", io=io_in('{ name: "IN" data_type: 99 dims: [ 4 ] }')),
         py(""), 4),
    Case("config-version-policy-specific-empty", py("version_policy { specific { } }"),
         py("version_policy { specific { versions: [ 1 ] } }"), 6, triton=True),
    Case("config-version-policy-latest-zero", py("version_policy { latest { num_versions: 0 } }"),
         py("version_policy { latest { num_versions: 1 } }"), 6, triton=True),
    Case("config-version-policy-duplicate",
         py("version_policy { specific { versions: [ 1, 1 ] } }"),
         py("version_policy { specific { versions: [ 1 ] } }"), 6),
    Case("config-version-policy-negative",
         py("version_policy { specific { versions: [ -1 ] } }"),
         py("version_policy { specific { versions: [ 1 ] } }"), 6),
    Case("config-response-cache-sequence",
         py("sequence_batching { }\nresponse_cache { enable: true }"),
         py("sequence_batching { }\nresponse_cache { enable: false }"), 7, triton=True),
    Case("config-response-cache-decoupled",
         py("model_transaction_policy { decoupled: true }\nresponse_cache { enable: true }"),
         py("model_transaction_policy { decoupled: true }"), 7, triton=True),
    Case("config-model-metrics",
         py('model_metrics { metric_control [ { metric_identifier { family: "" } '
            'histogram_options { buckets: [ 1 ] } } ] }'),
         py('model_metrics { metric_control [ { metric_identifier { family: '
            '"nv_inference_first_response_histogram_ms" } histogram_options { buckets: '
            '[ 1, 10 ] } } ] }'), 6),
    # inputs / outputs
    Case("config-autocomplete", 'backend: "tensorrt"\n' + io_in('{ name: "IN" }'),
         'backend: "tensorrt"\n' + io_in('{ name: "IN" data_type: TYPE_FP32 dims: [ 4 ] }'), 2),
    Case("config-io-name-missing", py("", io=io_in("{ data_type: TYPE_FP32 dims: [ 4 ] }")),
         py(""), 4, triton=True),
    Case("config-io-name-duplicate",
         py("", io=IO.replace("} ]\noutput", '}, { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] '
                                            '} ]\noutput', 1)),
         py(""), 4),
    Case("config-io-data-type-missing", py("", io=io_in('{ name: "IN" dims: [ 4 ] }')), py(""),
         4, triton=True),
    Case("config-io-dims-missing", py("", io=io_in('{ name: "IN" data_type: TYPE_FP32 }')),
         py(""), 4, triton=True),
    Case("config-io-dim-invalid",
         py("", io=io_in('{ name: "IN" data_type: TYPE_FP32 dims: [ 4, 0 ] }')),
         py("", io=io_in('{ name: "IN" data_type: TYPE_FP32 dims: [ 4, -1 ] }')), 4,
         triton=True),
    Case("config-io-reshape-empty-nonbatching",
         py("", mbs=0, io=io_in('{ name: "IN" data_type: TYPE_FP32 dims: [ 1 ] '
                                'reshape { shape: [ ] } }')),
         py("", mbs=8, io=io_in('{ name: "IN" data_type: TYPE_FP32 dims: [ 1 ] '
                                'reshape { shape: [ ] } }')), 4, triton=True),
    Case("config-io-reshape-dim-invalid",
         py("", io=io_in('{ name: "IN" data_type: TYPE_FP32 dims: [ 4 ] '
                         'reshape { shape: [ 0 ] } }')),
         py("", io=io_in('{ name: "IN" data_type: TYPE_FP32 dims: [ 4 ] '
                         'reshape { shape: [ 2, 2 ] } }')), 4, triton=True),
    Case("config-io-reshape-mismatch",
         py("", io=io_in('{ name: "IN" data_type: TYPE_FP32 dims: [ 2, -1, 6 ] '
                         'reshape { shape: [ 3, -1, 6 ] } }')),
         py("", io=io_in('{ name: "IN" data_type: TYPE_FP32 dims: [ 2, 4, -1, 6 ] '
                         'reshape { shape: [ 8, -1, 1, 6 ] } }')), 4, triton=True),
    Case("config-io-format-dims",
         py("", io=io_in('{ name: "IN" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ 4 ] }')),
         py("", io=io_in('{ name: "IN" data_type: TYPE_FP32 format: FORMAT_NCHW '
                         'dims: [ 3, 8, 8 ] }')), 4, triton=True),
    Case("config-io-shape-tensor-platform",
         plat("onnxruntime_onnx", "", io=io_in('{ name: "IN" data_type: TYPE_INT32 dims: [ 2 ] '
                                               'is_shape_tensor: true }')),
         plat("tensorrt_plan", "", io=io_in('{ name: "IN" data_type: TYPE_INT32 dims: [ 2 ] '
                                            'is_shape_tensor: true }')), 4),
    Case("config-io-non-linear-format",
         plat("tensorrt_plan", "", io=io_in('{ name: "IN" data_type: TYPE_FP32 dims: [ 4 ] '
                                            'is_non_linear_format_io: true }')),
         plat("tensorrt_plan", "", io=io_in('{ name: "IN" data_type: TYPE_FP32 dims: [ 3, 4, 4 ] '
                                            'is_non_linear_format_io: true }')), 4),
    Case("config-io-ragged-no-batching",
         py("", io=io_in('{ name: "IN" data_type: TYPE_FP32 dims: [ -1 ] '
                         'allow_ragged_batch: true }')),
         py("dynamic_batching { }", io=io_in('{ name: "IN" data_type: TYPE_FP32 dims: [ -1 ] '
                                             'allow_ragged_batch: true }')), 4),
    Case("config-io-variable-dims-not-ragged",
         py("dynamic_batching { }", io=io_in('{ name: "IN" data_type: TYPE_INT64 dims: [ -1 ] }')),
         py("dynamic_batching { }", io=io_in('{ name: "IN" data_type: TYPE_INT64 dims: [ -1 ] '
                                             'allow_ragged_batch: true }')), 4),
    Case("config-batch-kind-unknown",
         py('dynamic_batching { }\nbatch_input [ { kind: 17 target_name: "N" '
            'data_type: TYPE_INT32 source_input: "IN" } ]'),
         py('dynamic_batching { }\nbatch_input [ { kind: BATCH_ELEMENT_COUNT target_name: "N" '
            'data_type: TYPE_INT32 source_input: "IN" } ]'), 7, triton=True),
    Case("config-batch-input-source-count",
         py('dynamic_batching { }\nbatch_input [ { kind: BATCH_ELEMENT_COUNT target_name: "N" '
            'data_type: TYPE_INT32 } ]'),
         py('dynamic_batching { }\nbatch_input [ { kind: BATCH_ELEMENT_COUNT target_name: "N" '
            'data_type: TYPE_INT32 source_input: "IN" } ]'), 7, triton=True),
    Case("config-batch-input-data-type",
         py('batch_input [ { kind: BATCH_ELEMENT_COUNT target_name: "N" data_type: TYPE_INT64 '
            'source_input: "IN" } ]'),
         py('batch_input [ { kind: BATCH_ELEMENT_COUNT target_name: "N" data_type: TYPE_FP32 '
            'source_input: "IN" } ]'), 6, triton=True),
    Case("config-batch-input-source-unknown",
         py('batch_input [ { kind: BATCH_ELEMENT_COUNT target_name: "N" data_type: TYPE_INT32 '
            'source_input: "NOPE" } ]'),
         py('batch_input [ { kind: BATCH_ELEMENT_COUNT target_name: "N" data_type: TYPE_INT32 '
            'source_input: "IN" } ]'), 6, triton=True),
    Case("config-batch-input-target-missing",
         py('batch_input [ { kind: BATCH_ELEMENT_COUNT data_type: TYPE_INT32 '
            'source_input: "IN" } ]'),
         py('batch_input [ { kind: BATCH_ELEMENT_COUNT target_name: "N" data_type: TYPE_INT32 '
            'source_input: "IN" } ]'), 6),
    Case("config-batch-output-target",
         py('batch_output [ { kind: BATCH_SCATTER_WITH_INPUT_SHAPE target_name: [ "NOPE" ] '
            'source_input: "IN" } ]'),
         py('batch_output [ { kind: BATCH_SCATTER_WITH_INPUT_SHAPE target_name: [ "OUT" ] '
            'source_input: "IN" } ]'), 6, triton=True),
    # instance groups
    Case("config-instance-kind-unknown", py("instance_group [ { kind: 42 } ]"),
         py("instance_group [ { kind: KIND_CPU } ]"), 6, triton=True),
    Case("config-instance-gpus-kind", py("instance_group [ { kind: KIND_CPU gpus: [ 0 ] } ]"),
         py("instance_group [ { kind: KIND_CPU } ]"), 6, triton=True),
    Case("config-instance-gpu-negative", py("instance_group [ { kind: KIND_GPU gpus: [ -1 ] } ]"),
         py("instance_group [ { kind: KIND_GPU gpus: [ 0 ] } ]"), 6),
    Case("config-instance-count-negative", py("instance_group [ { count: -2 kind: KIND_CPU } ]"),
         py("instance_group [ { count: 2 kind: KIND_CPU } ]"), 6),
    Case("config-instance-profile", py('instance_group [ { kind: KIND_CPU profile: [ "0" ] } ]'),
         py("instance_group [ { kind: KIND_CPU } ]"), 6, triton=True),
    Case("config-instance-name-duplicate",
         py('instance_group [ { name: "g" kind: KIND_CPU }, { name: "g" kind: KIND_CPU } ]'),
         py('instance_group [ { name: "g" kind: KIND_CPU }, { name: "h" kind: KIND_CPU } ]'), 6),
    Case("config-rate-limiter-resource",
         py('instance_group [ { kind: KIND_CPU rate_limiter { resources [ { name: "" count: 1 } '
            '] } } ]'),
         py('instance_group [ { kind: KIND_CPU rate_limiter { resources [ { name: "R" count: 1 } '
            '] } } ]'), 6),
    # dynamic batching
    Case("config-dynamic-preferred-size",
         py("dynamic_batching { preferred_batch_size: [ 4, 16 ] }"),
         py("dynamic_batching { preferred_batch_size: [ 4, 8 ] }"), 6, triton=True),
    Case("config-dynamic-default-priority", py("dynamic_batching { priority_levels: 2 }"),
         py("dynamic_batching { priority_levels: 2 default_priority_level: 2 }"), 6, triton=True),
    Case("config-dynamic-priority-policy-level",
         py("dynamic_batching { priority_levels: 2 default_priority_level: 1 "
            "priority_queue_policy { key: 3 value { max_queue_size: 4 } } }"),
         py("dynamic_batching { priority_levels: 2 default_priority_level: 1 "
            "priority_queue_policy { key: 2 value { max_queue_size: 4 } } }"), 6, triton=True),
    Case("config-dynamic-priority-without-levels",
         py("dynamic_batching { default_priority_level: 1 }"),
         py("dynamic_batching { priority_levels: 1 default_priority_level: 1 }"), 6),
    Case("config-dynamic-preserve-ordering",
         py("dynamic_batching { preserve_ordering: true priority_levels: 2 "
            "default_priority_level: 1 }"),
         py("dynamic_batching { preserve_ordering: true }"), 6, triton=True),
    Case("config-dynamic-preserve-ordering",
         py("dynamic_batching { preserve_ordering: true priority_levels: 1 "
            "default_priority_level: 1 priority_queue_policy { key: 1 value { "
            "timeout_action: DELAY default_timeout_microseconds: 1000 } } }"),
         py("dynamic_batching { preserve_ordering: true priority_levels: 1 "
            "default_priority_level: 1 priority_queue_policy { key: 1 value { "
            "timeout_action: REJECT default_timeout_microseconds: 1000 } } }"), 6, triton=True,
         tag="delay"),
    Case("config-dynamic-no-batching", py("dynamic_batching { }", mbs=0),
         py("dynamic_batching { }", mbs=4)),
    Case("config-queue-delay-large",
         py("dynamic_batching { max_queue_delay_microseconds: 2000000 }"),
         py("dynamic_batching { max_queue_delay_microseconds: 2000 }"), 6),
    Case("config-queue-policy-timeout",
         py("dynamic_batching { default_queue_policy { timeout_action: DELAY } }"),
         py("dynamic_batching { default_queue_policy { timeout_action: DELAY "
            "default_timeout_microseconds: 1000 } }"), 6),
    Case("config-queue-policy-timeout",
         py("dynamic_batching { default_queue_policy { allow_timeout_override: true } }"),
         py("dynamic_batching { default_queue_policy { allow_timeout_override: true "
            "default_timeout_microseconds: 100000 } }"), 6, tag="override"),
    Case("config-queue-policy-timeout-below-delay",
         py("dynamic_batching { max_queue_delay_microseconds: 20000 "
            "default_queue_policy { default_timeout_microseconds: 10000 } }"),
         py("dynamic_batching { max_queue_delay_microseconds: 20000 "
            "default_queue_policy { default_timeout_microseconds: 50000 } }"), 6),
    Case("config-queue-policy-size-below-batch",
         py("dynamic_batching { default_queue_policy { max_queue_size: 4 } }"),
         py("dynamic_batching { default_queue_policy { max_queue_size: 8 } }"), 6),
    # sequence batching
    Case("config-sequence-control-name",
         py('sequence_batching { control_input [ { control [ { kind: CONTROL_SEQUENCE_START '
            'int32_false_true: [ 0, 1 ] } ] } ] }'),
         py("sequence_batching { " + SEQ_START % "int32_false_true: [ 0, 1 ]" + " }"), 6,
         triton=True),
    Case("config-sequence-control-kind-duplicate",
         py('sequence_batching { control_input [ { name: "A" control [ { kind: '
            'CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] }, { name: "B" control [ { '
            'kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] } ] }'),
         py('sequence_batching { control_input [ { name: "A" control [ { kind: '
            'CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] }, { name: "B" control [ { '
            'kind: CONTROL_SEQUENCE_END int32_false_true: [ 0, 1 ] } ] } ] }'), 6, triton=True),
    Case("config-sequence-control-values",
         py("sequence_batching { " + SEQ_START % "int32_false_true: [ 0, 1, 1 ]" + " }"),
         py("sequence_batching { " + SEQ_START % "bool_false_true: [ false, true ]" + " }"), 6,
         triton=True),
    Case("config-sequence-control-corrid",
         py('sequence_batching { control_input [ { name: "C" control [ { kind: '
            'CONTROL_SEQUENCE_CORRID data_type: TYPE_FP32 } ] } ] }'),
         py('sequence_batching { control_input [ { name: "C" control [ { kind: '
            'CONTROL_SEQUENCE_CORRID data_type: TYPE_STRING } ] } ] }'), 6, triton=True),
    Case("config-sequence-preferred-size",
         py("sequence_batching { oldest { preferred_batch_size: [ 0 ] } }"),
         py("sequence_batching { oldest { preferred_batch_size: [ 2 ] } }"), 6, triton=True),
    Case("config-sequence-slot-utilization",
         py("sequence_batching { direct { minimum_slot_utilization: 1.5 } }"),
         py("sequence_batching { direct { minimum_slot_utilization: 0.5 } }"), 6, triton=True),
    Case("config-sequence-state",
         py('sequence_batching { state [ { input_name: "IN" output_name: "S_OUT" '
            'data_type: TYPE_FP32 dims: [ 4 ] } ] }'),
         py('sequence_batching { state [ { input_name: "S_IN" output_name: "S_OUT" '
            'data_type: TYPE_FP32 dims: [ 4 ] } ] }'), 6),
    Case("config-sequence-initial-state",
         py('sequence_batching { state [ { input_name: "S_IN" output_name: "S_OUT" data_type: '
            'TYPE_FP32 dims: [ 4 ] initial_state { name: "i" data_type: TYPE_FP32 dims: [ 4 ] '
            '} } ] }'),
         py('sequence_batching { state [ { input_name: "S_IN" output_name: "S_OUT" data_type: '
            'TYPE_FP32 dims: [ 4 ] initial_state { name: "i" data_type: TYPE_FP32 dims: [ 4 ] '
            'zero_data: true } } ] }'), 6, triton=True),
    Case("config-sequence-initial-state-count",
         py("sequence_batching { " + STATE % (INIT % "zeros" + " " + INIT % "again") + " }"),
         py("sequence_batching { " + STATE % (INIT % "zeros") + " }"), 6, triton=True),
    Case("config-sequence-initial-state-name",
         py("sequence_batching { " + STATE % (INIT % "").replace('name: "" ', "") + " }"),
         py("sequence_batching { " + STATE % (INIT % "zeros") + " }"), 6, triton=True),
    Case("config-sequence-initial-state-match",
         py("sequence_batching { " + STATE % (INIT % "zeros").replace(
             "data_type: TYPE_FP32", "data_type: TYPE_INT32") + " }"),
         py("sequence_batching { " + STATE % (INIT % "zeros") + " }"), 6, triton=True),
    Case("config-sequence-initial-state-duplicate",
         py("sequence_batching { state [ " + (STATE_ENTRY % (INIT % "a")) + ", "
            + (STATE_ENTRY % (INIT % "b")).replace('output_name: "S_OUT"',
                                                   'output_name: "S_OUT2"') + " ] }"),
         py("sequence_batching { state [ " + (STATE_ENTRY % (INIT % "a")) + ", "
            + (STATE_ENTRY % (INIT % "b")).replace('output_name: "S_OUT"',
                                                   'output_name: "S_OUT2"').replace(
                'input_name: "S_IN"', 'input_name: "S_IN2"') + " ] }"), 6, triton=True),
    # warmup
    Case("config-warmup-input-data",
         py('model_warmup [ { name: "w" batch_size: 1 inputs { key: "IN" value { '
            'data_type: TYPE_FP32 dims: [ 4 ] } } } ]'),
         py('model_warmup [ { name: "w" batch_size: 1 inputs { key: "IN" value { '
            'data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } } } ]'), 6, triton=True),
    Case("config-warmup-batch-size",
         py('model_warmup [ { name: "w" batch_size: 16 inputs { key: "IN" value { '
            'data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } } } ]'),
         py('model_warmup [ { name: "w" batch_size: 8 inputs { key: "IN" value { '
            'data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } } } ]'), 6, triton=True),
    Case("config-warmup-inputs-match",
         py('model_warmup [ { name: "w" batch_size: 1 inputs { key: "IN" value { '
            'data_type: TYPE_INT32 dims: [ 4 ] zero_data: true } } } ]'),
         py('model_warmup [ { name: "w" batch_size: 1 inputs { key: "IN" value { '
            'data_type: TYPE_FP32 dims: [ 4 ] random_data: true } } } ]'), 6, triton=True),
    Case("config-warmup-unknown-input",
         py('model_warmup [ { name: "w" batch_size: 1 inputs { key: "IN" value { '
            'data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } } inputs { key: "X" value { '
            'data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } } } ]'),
         py('model_warmup [ { name: "w" batch_size: 1 inputs { key: "IN" value { '
            'data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } } } ]'), 6),
    # ensembles
    Case("config-ensemble-platform", ens(header='backend: "python"'), ens(), 6),
    Case("config-ensemble-forbidden-field",
         ens(extra="instance_group [ { kind: KIND_CPU } ]\n"), ens(), 7),
    Case("config-ensemble-step", ens(steps='{ model_name: "a" input_map { key: "x" value: "IN" '
                                           '} }'),
         ens(), 6),
    Case("config-ensemble-tensor-written-twice",
         ens(steps=f'{STEP_A}, {STEP_B}, {{ model_name: "c" input_map {{ key: "x" value: "IN" }} '
                   'output_map { key: "y" value: "MID" } }'),
         ens(), 6),
    Case("config-ensemble-dataflow",
         ens(steps='{ model_name: "a" input_map { key: "x" value: "IN" } input_map { key: "z" '
                   'value: "LOOP" } output_map { key: "y" value: "MID" } }, { model_name: "b" '
                   'input_map { key: "x" value: "MID" } output_map { key: "y" value: "LOOP" } '
                   'output_map { key: "w" value: "OUT" } }'),
         ens(), 5),
]
