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

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from triton_ops.envelope.units import ByteSize, DurationUs

MODEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")

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


class Strict(BaseModel):
    """Base for every envelope section: unknown keys are errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TensorSpec(Strict):
    name: str = Field(min_length=1)
    data_type: str = Field(description="Triton data type, e.g. FP32 or TYPE_FP32")
    dims: list[int] = Field(description="Shape without the batch dimension; -1 = variable")
    max_dims: list[int] | None = Field(
        default=None,
        description="Admission limit: the largest size of each dim (same length as dims); "
        "required for every variable (-1) dim of an input",
    )
    reshape: list[int] | None = None
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

    @field_validator("data_type", mode="before")
    @classmethod
    def _normalise_type(cls, value: object) -> object:
        if isinstance(value, str):
            short = value.upper().removeprefix("TYPE_")
            if short not in DATA_TYPES:
                raise ValueError(f"unknown data type {value!r}; use one of {', '.join(DATA_TYPES)}")
            return short
        return value

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


# Field widths of ModelQueuePolicy and ModelDynamicBatching in model_config.proto: a value
# beyond them cannot be rendered into config.pbtxt.
UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1
PriorityLevel = Annotated[int, Field(ge=0, le=UINT64_MAX)]


class QueuePolicy(Strict):
    timeout_action: TimeoutAction = TimeoutAction.REJECT
    default_timeout: DurationUs = Field(default=0, le=UINT64_MAX)
    allow_timeout_override: bool = False
    max_queue_size: int = Field(default=0, ge=0, le=UINT32_MAX)

    @field_validator("timeout_action", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class DynamicBatching(Strict):
    preferred_batch_sizes: list[int] = Field(default_factory=list)
    max_queue_delay: DurationUs = 0
    preserve_ordering: bool = False
    priority_levels: PriorityLevel = 0
    default_priority_level: PriorityLevel = 0
    default_queue_policy: QueuePolicy | None = None
    priority_queue_policy: dict[PriorityLevel, QueuePolicy] = Field(default_factory=dict)


class Batching(Strict):
    max_batch_size: int = Field(default=0, ge=0, description="0 disables batching")
    dynamic: DynamicBatching | None = None
    sequence: Any = Field(
        default=None,
        description="Sequence batching is not supported by envelopes; a value here is an error",
    )

    @field_validator("sequence")
    @classmethod
    def _reject_sequence(cls, value: object) -> object:
        if value is not None:
            raise ValueError(
                "sequence batching is not supported in envelopes yet; remove 'sequence' or "
                "keep the model's hand-written config.pbtxt and run `triton-ops validate` on it"
            )
        return value


class InstanceKind(str, Enum):
    GPU = "GPU"
    CPU = "CPU"
    AUTO = "AUTO"
    MODEL = "MODEL"


class InstanceGroup(Strict):
    kind: InstanceKind = InstanceKind.GPU
    count: int = Field(default=1, ge=1)
    gpus: list[int] = Field(default_factory=list)
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
    versions: list[int] = Field(default_factory=lambda: [1])
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
        if name in (".", "..") or not MODEL_NAME_PATTERN.match(name):
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
