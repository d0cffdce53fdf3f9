"""The resource envelope: what a model's owner promises and needs, as a pydantic model.

One envelope (envelopes/<model>.yaml) describes one Triton model. config.pbtxt is rendered
from it (triton_ops.modelconfig), `validate` checks it, `tune` reads its SLO and tensor specs,
`rollout` its probe and tolerances, and the Helm chart its runtime and hardware sections.
Durations are normalised to microseconds and sizes to bytes.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from triton_ops.envelope.units import ByteSize, DurationUs

# Matched with fullmatch: `$` would also accept a trailing newline.
MODEL_NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")

# Ranges of the ModelConfig proto's integer types. Every envelope integer that is rendered
# into config.pbtxt is bounded by the type of the field it lands in (int32 max_batch_size,
# count and gpus; uint32 max_queue_size; int64 dims, reshape and versions; uint64 delays,
# timeouts and priority levels), so an out-of-range value is a schema finding instead of a
# crash in `generate`.
INT32_MAX = 2**31 - 1
UINT32_MAX = 2**32 - 1
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1
Int32 = Annotated[int, Field(ge=-(2**31), le=INT32_MAX)]
Int64 = Annotated[int, Field(ge=-(2**63), le=INT64_MAX)]
NonNegativeInt32 = Annotated[int, Field(ge=0, le=INT32_MAX)]
UInt32 = Annotated[int, Field(ge=0, le=UINT32_MAX)]
UInt64 = Annotated[int, Field(ge=0, le=UINT64_MAX)]

DATA_TYPES = (
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "STRING", "BF16",
)

# Memory of the GPU models that `hardware.gpu_models` may name, for the memory-fit rule.
GPU_MEMORY_BYTES: dict[str, int] = {
    "T4": 16 * 1024**3,
    "A10": 24 * 1024**3,
    "A10G": 24 * 1024**3,
    "L4": 24 * 1024**3,
    "L40S": 48 * 1024**3,
    "A100-40GB": 40 * 1024**3,
    "A100-80GB": 80 * 1024**3,
    "A100": 40 * 1024**3,  # the smaller variant, to stay on the safe side
    "H100": 80 * 1024**3,
    "H100-NVL": 94 * 1024**3,
    "H200": 141 * 1024**3,
    "B200": 180 * 1024**3,
}


def normalise_data_type(value: object) -> object:
    """A Triton data type as envelopes write it: "FP32" (a "TYPE_" prefix is dropped)."""
    if isinstance(value, str):
        short = value.upper().removeprefix("TYPE_")
        if short not in DATA_TYPES:
            raise ValueError(f"unknown data type {value!r}; use one of {', '.join(DATA_TYPES)}")
        return short
    return value


# A data type field: "FP32" or "TYPE_FP32" in, "FP32" stored.
DataType = Annotated[str, BeforeValidator(normalise_data_type)]


class Strict(BaseModel):
    """Base for every envelope section: unknown keys are errors, not silently dropped."""

    # NaN and infinity are refused everywhere: `cpu: .inf` is no CPU request, and the JSON
    # the chart and the probe send cannot carry them.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)


class TensorSpec(Strict):
    name: str = Field(min_length=1)
    data_type: DataType = Field(description="Triton data type, e.g. FP32 or TYPE_FP32")
    dims: list[Int64] = Field(description="Shape without the batch dimension; -1 = variable")
    max_dims: list[Int64] | None = Field(
        default=None,
        description="Admission limit: the largest size of each dim (same length as dims); "
        "required for every variable (-1) dim of an input",
    )
    reshape: list[Int64] | None = None
    optional: bool = False
    allow_ragged_batch: bool = False
    is_shape_tensor: bool = False
    format: str | None = Field(
        default=None, description="Input tensor format (config.pbtxt 'format', e.g. FORMAT_NCHW)"
    )
    label_filename: str | None = Field(
        default=None, description="Output classification labels file (outputs only)"
    )
    is_non_linear_format_io: bool = False
    value_range: tuple[float, float] | None = Field(
        default=None,
        description="Values the load generator sends for this input, low and high inclusive "
        "(e.g. [1, 1] for an attention mask of real tokens); default: integers 0..99, "
        "standard-normal floats",
    )

    @field_validator("dims")
    @classmethod
    def _check_dims(cls, dims: list[int]) -> list[int]:
        for d in dims:
            if d == 0 or d < -1:
                raise ValueError(f"dimension {d} is invalid: use a positive size or -1 (variable)")
        return dims

    @field_validator("value_range")
    @classmethod
    def _check_value_range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and value[0] > value[1]:
            raise ValueError(f"value_range low {value[0]:g} is above high {value[1]:g}")
        return value

    @model_validator(mode="after")
    def _check_max_dims(self) -> TensorSpec:
        if self.max_dims is not None:
            if len(self.max_dims) != len(self.dims):
                raise ValueError(
                    f"max_dims has {len(self.max_dims)} entries but dims has {len(self.dims)}"
                )
            for d, m in zip(self.dims, self.max_dims, strict=True):
                if m < 1 or (d != -1 and m != d):
                    raise ValueError(
                        f"max_dims entry {m} does not fit dim {d}: it must equal a fixed dim "
                        "and be >= 1 for a variable one"
                    )
        return self

    def max_shape(self) -> list[int]:
        """The largest shape this tensor may have (without the batch dim)."""
        if self.max_dims is not None:
            return list(self.max_dims)
        return list(self.dims)


class TimeoutAction(str, Enum):
    REJECT = "REJECT"
    DELAY = "DELAY"


class QueuePolicy(Strict):
    timeout_action: TimeoutAction = TimeoutAction.REJECT
    default_timeout: DurationUs = 0
    allow_timeout_override: bool = False
    max_queue_size: UInt32 = 0

    @field_validator("timeout_action", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class DynamicBatching(Strict):
    preferred_batch_sizes: list[Int32] = Field(default_factory=list)
    max_queue_delay: DurationUs = 0
    preserve_ordering: bool = False
    priority_levels: UInt64 = 0
    default_priority_level: UInt64 = 0
    default_queue_policy: QueuePolicy | None = None
    priority_queue_policy: dict[UInt64, QueuePolicy] = Field(default_factory=dict)


class ControlKind(str, Enum):
    START = "START"
    END = "END"
    READY = "READY"
    CORRID = "CORRID"


class SequenceControl(Strict):
    """One control tensor of a sequence batcher: Triton sets it on every request it sends.

    START, END and READY give the tensor's false and true values in exactly one of
    int32_false_true, fp32_false_true, bool_false_true; CORRID gives its data_type. Controls
    of one tensor are consecutive entries with the same name (config.pbtxt: one
    control_input with several controls)."""

    name: str = Field(description="The control tensor's name, as the model reads it")
    kind: ControlKind
    int32_false_true: list[Int32] = Field(default_factory=list)
    fp32_false_true: list[float] = Field(default_factory=list)
    bool_false_true: list[bool] = Field(default_factory=list)
    data_type: DataType | None = Field(default=None, description="CORRID: its data type")

    @field_validator("kind", mode="before")
    @classmethod
    def _normalise_kind(cls, value: object) -> object:
        return value.upper().removeprefix("CONTROL_SEQUENCE_") if isinstance(value, str) \
            else value


class InitialState(Strict):
    """The value a state starts a sequence with: zeros, or a file in the model's
    initial_state/ folder."""

    name: str = ""
    data_type: DataType | None = None
    dims: list[Int64] = Field(default_factory=list)
    zero_data: bool | None = None
    data_file: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> InitialState:
        if self.zero_data is not None and self.data_file is not None:
            raise ValueError("give zero_data or data_file, not both")
        return self


class SequenceState(Strict):
    """Implicit state: Triton keeps it between the requests of a sequence and feeds the
    output_name tensor of one request back as the input_name tensor of the next."""

    input_name: str = ""
    output_name: str = ""
    data_type: DataType | None = None
    dims: list[Int64] = Field(default_factory=list)
    initial_state: list[InitialState] = Field(default_factory=list)
    use_same_buffer_for_input_output: bool = False
    use_growable_memory: bool = False


class SequenceDirect(Strict):
    """Each sequence keeps one batch slot (the model sees the same slot per sequence)."""

    max_queue_delay: DurationUs = 0
    minimum_slot_utilization: float = 0.0


class SequenceOldest(Strict):
    """Batches are formed from the oldest requests of up to max_candidate_sequences."""

    max_candidate_sequences: Int32 = 0
    preferred_batch_sizes: list[Int32] = Field(default_factory=list)
    max_queue_delay: DurationUs = 0
    preserve_ordering: bool = False


class SequenceBatching(Strict):
    """The sequence batcher of a stateful model (config.pbtxt sequence_batching)."""

    max_sequence_idle: DurationUs = Field(
        default=0, description="A sequence idle this long is ended (0: Triton's 1 s)")
    direct: SequenceDirect | None = None
    oldest: SequenceOldest | None = None
    controls: list[SequenceControl] = Field(default_factory=list)
    states: list[SequenceState] = Field(default_factory=list)
    iterative: bool = Field(default=False, description="iterative_sequence")

    @model_validator(mode="after")
    def _one_strategy(self) -> SequenceBatching:
        if self.direct is not None and self.oldest is not None:
            raise ValueError("give one strategy, direct or oldest, not both")
        return self


class Batching(Strict):
    max_batch_size: NonNegativeInt32 = Field(default=0, description="0 disables batching")
    dynamic: DynamicBatching | None = None
    sequence: SequenceBatching | None = Field(
        default=None, description="Sequence batching for stateful models (instead of dynamic)")

    @model_validator(mode="after")
    def _one_scheduler(self) -> Batching:
        if self.dynamic is not None and self.sequence is not None:
            raise ValueError("a model has one scheduler: give dynamic or sequence, not both")
        return self


class InstanceKind(str, Enum):
    GPU = "GPU"
    CPU = "CPU"
    AUTO = "AUTO"
    MODEL = "MODEL"


class InstanceGroup(Strict):
    kind: InstanceKind = InstanceKind.GPU
    count: int = Field(default=1, ge=1, le=INT32_MAX)
    gpus: list[NonNegativeInt32] = Field(default_factory=list)
    name: str | None = None
    passive: bool = False
    host_policy: str | None = None
    profile: list[str] = Field(default_factory=list, description="TensorRT optimization profiles")

    @field_validator("kind", mode="before")
    @classmethod
    def _normalise_kind(cls, value: object) -> object:
        return value.upper().removeprefix("KIND_") if isinstance(value, str) else value


class GpuMemory(Strict):
    weights: ByteSize = 0
    activation_per_item: ByteSize = 0
    workspace: ByteSize = 0
    headroom: float = Field(default=0.1, ge=0, lt=1, description="Fraction of GPU memory kept free")

    def per_instance(self, max_batch_size: int) -> int:
        return self.weights + max(max_batch_size, 1) * self.activation_per_item + self.workspace


class Resources(Strict):
    gpu_memory: GpuMemory | None = None
    host_memory: ByteSize | None = None
    cpu: float | None = Field(default=None, gt=0, description="CPU cores")


class Slo(Strict):
    p99_latency: DurationUs = Field(description="p99 end-to-end latency bound")
    target_throughput: float | None = Field(default=None, gt=0, description="inferences/s")
    max_error_rate: float = Field(default=0.001, ge=0, le=1)


class Runtime(Strict):
    image: str | None = None
    allow_unpinned_image: bool = False
    triton_version: str | None = None


class Hardware(Strict):
    gpu_models: list[str] = Field(default_factory=list)
    min_gpu_memory: ByteSize | None = None
    min_compute_capability: str | None = None

    @field_validator("gpu_models")
    @classmethod
    def _known_models(cls, models: list[str]) -> list[str]:
        for model in models:
            if model.upper() not in GPU_MEMORY_BYTES:
                raise ValueError(
                    f"unknown GPU model {model!r}; known: {', '.join(GPU_MEMORY_BYTES)} "
                    "(or give min_gpu_memory instead)"
                )
        return [m.upper() for m in models]

    def smallest_gpu_memory(self) -> int | None:
        """Memory of the smallest GPU this model may land on, if the envelope says."""
        sizes = [GPU_MEMORY_BYTES[m] for m in self.gpu_models]
        if self.min_gpu_memory is not None:
            sizes.append(self.min_gpu_memory)
        return min(sizes) if sizes else None


class Tolerance(Strict):
    atol: float = Field(default=1e-5, ge=0)
    rtol: float = Field(default=1e-4, ge=0)


class Probe(Strict):
    """A golden request: inputs WITH the batch dim when the model batches, and its answer."""

    inputs: dict[str, Any]
    expected: dict[str, Any]
    tolerance: Tolerance = Field(default_factory=Tolerance)


class Envelope(Strict):
    name: str
    backend: str | None = None
    platform: str | None = None
    runtime_library: str | None = Field(default=None, description="config.pbtxt 'runtime' field")
    default_model_filename: str | None = None
    inputs: list[TensorSpec] = Field(default_factory=list)
    outputs: list[TensorSpec] = Field(default_factory=list)
    batching: Batching = Field(default_factory=Batching)
    instances: list[InstanceGroup] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    slo: Slo | None = None
    runtime: Runtime = Field(default_factory=Runtime)
    hardware: Hardware = Field(default_factory=Hardware)
    versions: list[Int64] = Field(default_factory=lambda: [1])
    parameters: dict[str, str] = Field(
        default_factory=dict, description="config.pbtxt parameters (string key/value)"
    )
    probe: Probe | None = None
    passthrough: dict[str, Any] = Field(
        default_factory=dict,
        description="ModelConfig fields the envelope does not model, in protobuf JSON form; "
        "merged into the rendered config.pbtxt",
    )

    @field_validator("name")
    @classmethod
    def _model_name(cls, name: str) -> str:
        if name in (".", "..") or not MODEL_NAME_PATTERN.fullmatch(name):
            raise ValueError(
                f"{name!r} is not a valid model name: use letters, digits, '_', '-', '.', "
                "no '/' and no '..', at most 128 characters"
            )
        return name

    @field_validator("versions")
    @classmethod
    def _versions(cls, versions: list[int]) -> list[int]:
        if not versions:
            raise ValueError("list at least one version to serve")
        if any(v < 1 for v in versions):
            raise ValueError("version numbers start at 1")
        if len(set(versions)) != len(versions):
            raise ValueError("a version is listed twice")
        return sorted(versions)

    @model_validator(mode="after")
    def _backend_or_platform(self) -> Envelope:
        if not self.backend and not self.platform:
            raise ValueError("give 'backend' (e.g. python, onnxruntime) or 'platform'")
        return self

    @property
    def max_batch_size(self) -> int:
        return self.batching.max_batch_size

    def tensor(self, name: str) -> TensorSpec:
        for spec in (*self.inputs, *self.outputs):
            if spec.name == name:
                return spec
        raise KeyError(name)


SCHEMA_VERSION: Literal["triton-ops/v1"] = "triton-ops/v1"
