from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProtocolVersion(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROTOCOL_VERSION_UNSPECIFIED: _ClassVar[ProtocolVersion]
    PROTOCOL_VERSION_CURRENT: _ClassVar[ProtocolVersion]

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_CODE_UNSPECIFIED: _ClassVar[ErrorCode]
    ERROR_CODE_INVALID_ARGUMENT: _ClassVar[ErrorCode]
    ERROR_CODE_NOT_FOUND: _ClassVar[ErrorCode]
    ERROR_CODE_PROTOCOL_MISMATCH: _ClassVar[ErrorCode]
    ERROR_CODE_HANDSHAKE_REQUIRED: _ClassVar[ErrorCode]
    ERROR_CODE_MALFORMED: _ClassVar[ErrorCode]
    ERROR_CODE_FRAME_TOO_LARGE: _ClassVar[ErrorCode]
    ERROR_CODE_UNIMPLEMENTED: _ClassVar[ErrorCode]
    ERROR_CODE_INTERNAL: _ClassVar[ErrorCode]
    ERROR_CODE_RESOURCE_EXHAUSTED: _ClassVar[ErrorCode]
    ERROR_CODE_PERMISSION_DENIED: _ClassVar[ErrorCode]
PROTOCOL_VERSION_UNSPECIFIED: ProtocolVersion
PROTOCOL_VERSION_CURRENT: ProtocolVersion
ERROR_CODE_UNSPECIFIED: ErrorCode
ERROR_CODE_INVALID_ARGUMENT: ErrorCode
ERROR_CODE_NOT_FOUND: ErrorCode
ERROR_CODE_PROTOCOL_MISMATCH: ErrorCode
ERROR_CODE_HANDSHAKE_REQUIRED: ErrorCode
ERROR_CODE_MALFORMED: ErrorCode
ERROR_CODE_FRAME_TOO_LARGE: ErrorCode
ERROR_CODE_UNIMPLEMENTED: ErrorCode
ERROR_CODE_INTERNAL: ErrorCode
ERROR_CODE_RESOURCE_EXHAUSTED: ErrorCode
ERROR_CODE_PERMISSION_DENIED: ErrorCode

class Request(_message.Message):
    __slots__ = ("id", "hello", "open_session", "get_lr", "get_state", "restore_state", "close_session", "replan", "report", "preview", "open_sampler", "get_batches", "get_quotas", "get_mod_plan", "get_status", "post_control", "poll_control")
    ID_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    OPEN_SESSION_FIELD_NUMBER: _ClassVar[int]
    GET_LR_FIELD_NUMBER: _ClassVar[int]
    GET_STATE_FIELD_NUMBER: _ClassVar[int]
    RESTORE_STATE_FIELD_NUMBER: _ClassVar[int]
    CLOSE_SESSION_FIELD_NUMBER: _ClassVar[int]
    REPLAN_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    OPEN_SAMPLER_FIELD_NUMBER: _ClassVar[int]
    GET_BATCHES_FIELD_NUMBER: _ClassVar[int]
    GET_QUOTAS_FIELD_NUMBER: _ClassVar[int]
    GET_MOD_PLAN_FIELD_NUMBER: _ClassVar[int]
    GET_STATUS_FIELD_NUMBER: _ClassVar[int]
    POST_CONTROL_FIELD_NUMBER: _ClassVar[int]
    POLL_CONTROL_FIELD_NUMBER: _ClassVar[int]
    id: int
    hello: Hello
    open_session: OpenSession
    get_lr: GetLR
    get_state: GetState
    restore_state: RestoreState
    close_session: CloseSession
    replan: Replan
    report: Report
    preview: Preview
    open_sampler: OpenSampler
    get_batches: GetBatches
    get_quotas: GetQuotas
    get_mod_plan: GetModPlan
    get_status: GetStatus
    post_control: PostControl
    poll_control: PollControl
    def __init__(self, id: _Optional[int] = ..., hello: _Optional[_Union[Hello, _Mapping]] = ..., open_session: _Optional[_Union[OpenSession, _Mapping]] = ..., get_lr: _Optional[_Union[GetLR, _Mapping]] = ..., get_state: _Optional[_Union[GetState, _Mapping]] = ..., restore_state: _Optional[_Union[RestoreState, _Mapping]] = ..., close_session: _Optional[_Union[CloseSession, _Mapping]] = ..., replan: _Optional[_Union[Replan, _Mapping]] = ..., report: _Optional[_Union[Report, _Mapping]] = ..., preview: _Optional[_Union[Preview, _Mapping]] = ..., open_sampler: _Optional[_Union[OpenSampler, _Mapping]] = ..., get_batches: _Optional[_Union[GetBatches, _Mapping]] = ..., get_quotas: _Optional[_Union[GetQuotas, _Mapping]] = ..., get_mod_plan: _Optional[_Union[GetModPlan, _Mapping]] = ..., get_status: _Optional[_Union[GetStatus, _Mapping]] = ..., post_control: _Optional[_Union[PostControl, _Mapping]] = ..., poll_control: _Optional[_Union[PollControl, _Mapping]] = ...) -> None: ...

class Response(_message.Message):
    __slots__ = ("id", "error", "hello", "session", "lr", "state", "closed", "ack", "preview", "sampler", "batches", "quotas", "mod_plan", "status", "controls")
    ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    SAMPLER_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    QUOTAS_FIELD_NUMBER: _ClassVar[int]
    MOD_PLAN_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CONTROLS_FIELD_NUMBER: _ClassVar[int]
    id: int
    error: Error
    hello: HelloReply
    session: SessionInfo
    lr: LRValues
    state: StateBlob
    closed: Closed
    ack: Ack
    preview: PreviewValues
    sampler: SamplerInfo
    batches: Batches
    quotas: Quotas
    mod_plan: ModPlan
    status: Status
    controls: Controls
    def __init__(self, id: _Optional[int] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., hello: _Optional[_Union[HelloReply, _Mapping]] = ..., session: _Optional[_Union[SessionInfo, _Mapping]] = ..., lr: _Optional[_Union[LRValues, _Mapping]] = ..., state: _Optional[_Union[StateBlob, _Mapping]] = ..., closed: _Optional[_Union[Closed, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., preview: _Optional[_Union[PreviewValues, _Mapping]] = ..., sampler: _Optional[_Union[SamplerInfo, _Mapping]] = ..., batches: _Optional[_Union[Batches, _Mapping]] = ..., quotas: _Optional[_Union[Quotas, _Mapping]] = ..., mod_plan: _Optional[_Union[ModPlan, _Mapping]] = ..., status: _Optional[_Union[Status, _Mapping]] = ..., controls: _Optional[_Union[Controls, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("protocol_version", "client")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    client: str
    def __init__(self, protocol_version: _Optional[int] = ..., client: _Optional[str] = ...) -> None: ...

class HelloReply(_message.Message):
    __slots__ = ("protocol_version", "server", "schedule_kinds", "instance")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_KINDS_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    server: str
    schedule_kinds: _containers.RepeatedScalarFieldContainer[str]
    instance: int
    def __init__(self, protocol_version: _Optional[int] = ..., server: _Optional[str] = ..., schedule_kinds: _Optional[_Iterable[str]] = ..., instance: _Optional[int] = ...) -> None: ...

class OpenSession(_message.Message):
    __slots__ = ("schedule", "name")
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    schedule: _struct_pb2.Struct
    name: str
    def __init__(self, schedule: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., name: _Optional[str] = ...) -> None: ...

class SessionInfo(_message.Message):
    __slots__ = ("session_id", "schedule", "step", "name", "plan_version")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PLAN_VERSION_FIELD_NUMBER: _ClassVar[int]
    session_id: int
    schedule: _struct_pb2.Struct
    step: int
    name: str
    plan_version: int
    def __init__(self, session_id: _Optional[int] = ..., schedule: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., step: _Optional[int] = ..., name: _Optional[str] = ..., plan_version: _Optional[int] = ...) -> None: ...

class Group(_message.Message):
    __slots__ = ("multiplier", "min_lr", "peak_lr", "wd_mult")
    MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    MIN_LR_FIELD_NUMBER: _ClassVar[int]
    PEAK_LR_FIELD_NUMBER: _ClassVar[int]
    WD_MULT_FIELD_NUMBER: _ClassVar[int]
    multiplier: float
    min_lr: float
    peak_lr: float
    wd_mult: float
    def __init__(self, multiplier: _Optional[float] = ..., min_lr: _Optional[float] = ..., peak_lr: _Optional[float] = ..., wd_mult: _Optional[float] = ...) -> None: ...

class GetLR(_message.Message):
    __slots__ = ("session_id", "step", "count", "groups")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    session_id: int
    step: int
    count: int
    groups: _containers.RepeatedCompositeFieldContainer[Group]
    def __init__(self, session_id: _Optional[int] = ..., step: _Optional[int] = ..., count: _Optional[int] = ..., groups: _Optional[_Iterable[_Union[Group, _Mapping]]] = ...) -> None: ...

class LRValues(_message.Message):
    __slots__ = ("step", "count", "groups", "values", "momentum", "weight_decay", "plan_version")
    STEP_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    PLAN_VERSION_FIELD_NUMBER: _ClassVar[int]
    step: int
    count: int
    groups: int
    values: _containers.RepeatedScalarFieldContainer[float]
    momentum: _containers.RepeatedScalarFieldContainer[float]
    weight_decay: _containers.RepeatedScalarFieldContainer[float]
    plan_version: int
    def __init__(self, step: _Optional[int] = ..., count: _Optional[int] = ..., groups: _Optional[int] = ..., values: _Optional[_Iterable[float]] = ..., momentum: _Optional[_Iterable[float]] = ..., weight_decay: _Optional[_Iterable[float]] = ..., plan_version: _Optional[int] = ...) -> None: ...

class Replan(_message.Message):
    __slots__ = ("session_id", "at_step", "extend", "anneal", "new_stage")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    AT_STEP_FIELD_NUMBER: _ClassVar[int]
    EXTEND_FIELD_NUMBER: _ClassVar[int]
    ANNEAL_FIELD_NUMBER: _ClassVar[int]
    NEW_STAGE_FIELD_NUMBER: _ClassVar[int]
    session_id: int
    at_step: int
    extend: Extend
    anneal: Anneal
    new_stage: NewStage
    def __init__(self, session_id: _Optional[int] = ..., at_step: _Optional[int] = ..., extend: _Optional[_Union[Extend, _Mapping]] = ..., anneal: _Optional[_Union[Anneal, _Mapping]] = ..., new_stage: _Optional[_Union[NewStage, _Mapping]] = ...) -> None: ...

class Extend(_message.Message):
    __slots__ = ("total_steps", "mode")
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    total_steps: int
    mode: str
    def __init__(self, total_steps: _Optional[int] = ..., mode: _Optional[str] = ...) -> None: ...

class Anneal(_message.Message):
    __slots__ = ("steps", "shape", "min_lr")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    MIN_LR_FIELD_NUMBER: _ClassVar[int]
    steps: int
    shape: str
    min_lr: float
    def __init__(self, steps: _Optional[int] = ..., shape: _Optional[str] = ..., min_lr: _Optional[float] = ...) -> None: ...

class NewStage(_message.Message):
    __slots__ = ("schedule",)
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    schedule: _struct_pb2.Struct
    def __init__(self, schedule: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Report(_message.Message):
    __slots__ = ("session_id", "step", "metric")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    session_id: int
    step: int
    metric: float
    def __init__(self, session_id: _Optional[int] = ..., step: _Optional[int] = ..., metric: _Optional[float] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("plan_version",)
    PLAN_VERSION_FIELD_NUMBER: _ClassVar[int]
    plan_version: int
    def __init__(self, plan_version: _Optional[int] = ...) -> None: ...

class Preview(_message.Message):
    __slots__ = ("schedule", "steps", "start", "count", "stride")
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    STRIDE_FIELD_NUMBER: _ClassVar[int]
    schedule: _struct_pb2.Struct
    steps: _containers.RepeatedScalarFieldContainer[int]
    start: int
    count: int
    stride: int
    def __init__(self, schedule: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., steps: _Optional[_Iterable[int]] = ..., start: _Optional[int] = ..., count: _Optional[int] = ..., stride: _Optional[int] = ...) -> None: ...

class Phase(_message.Message):
    __slots__ = ("name", "start")
    NAME_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    name: str
    start: int
    def __init__(self, name: _Optional[str] = ..., start: _Optional[int] = ...) -> None: ...

class PreviewValues(_message.Message):
    __slots__ = ("steps", "lr", "momentum", "weight_decay", "phases")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    PHASES_FIELD_NUMBER: _ClassVar[int]
    steps: _containers.RepeatedScalarFieldContainer[int]
    lr: _containers.RepeatedScalarFieldContainer[float]
    momentum: _containers.RepeatedScalarFieldContainer[float]
    weight_decay: _containers.RepeatedScalarFieldContainer[float]
    phases: _containers.RepeatedCompositeFieldContainer[Phase]
    def __init__(self, steps: _Optional[_Iterable[int]] = ..., lr: _Optional[_Iterable[float]] = ..., momentum: _Optional[_Iterable[float]] = ..., weight_decay: _Optional[_Iterable[float]] = ..., phases: _Optional[_Iterable[_Union[Phase, _Mapping]]] = ...) -> None: ...

class GetState(_message.Message):
    __slots__ = ("session_id", "step")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    session_id: int
    step: int
    def __init__(self, session_id: _Optional[int] = ..., step: _Optional[int] = ...) -> None: ...

class StateBlob(_message.Message):
    __slots__ = ("msgpack",)
    MSGPACK_FIELD_NUMBER: _ClassVar[int]
    msgpack: bytes
    def __init__(self, msgpack: _Optional[bytes] = ...) -> None: ...

class RestoreState(_message.Message):
    __slots__ = ("msgpack", "name")
    MSGPACK_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    msgpack: bytes
    name: str
    def __init__(self, msgpack: _Optional[bytes] = ..., name: _Optional[str] = ...) -> None: ...

class CloseSession(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: int
    def __init__(self, session_id: _Optional[int] = ...) -> None: ...

class Closed(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message", "field")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    code: ErrorCode
    message: str
    field: str
    def __init__(self, code: _Optional[_Union[ErrorCode, str]] = ..., message: _Optional[str] = ..., field: _Optional[str] = ...) -> None: ...

class OpenSampler(_message.Message):
    __slots__ = ("spec", "spec_json")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    spec: _struct_pb2.Struct
    spec_json: str
    def __init__(self, spec: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., spec_json: _Optional[str] = ...) -> None: ...

class SamplerInfo(_message.Message):
    __slots__ = ("sampler_id", "spec_hash", "total_steps", "global_batch_size", "source_names", "source_sizes", "stratified")
    SAMPLER_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_HASH_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_NAMES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_SIZES_FIELD_NUMBER: _ClassVar[int]
    STRATIFIED_FIELD_NUMBER: _ClassVar[int]
    sampler_id: int
    spec_hash: str
    total_steps: int
    global_batch_size: int
    source_names: _containers.RepeatedScalarFieldContainer[str]
    source_sizes: _containers.RepeatedScalarFieldContainer[int]
    stratified: bool
    def __init__(self, sampler_id: _Optional[int] = ..., spec_hash: _Optional[str] = ..., total_steps: _Optional[int] = ..., global_batch_size: _Optional[int] = ..., source_names: _Optional[_Iterable[str]] = ..., source_sizes: _Optional[_Iterable[int]] = ..., stratified: _Optional[bool] = ...) -> None: ...

class GetBatches(_message.Message):
    __slots__ = ("sampler_id", "step", "count", "rank", "world_size")
    SAMPLER_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    sampler_id: int
    step: int
    count: int
    rank: int
    world_size: int
    def __init__(self, sampler_id: _Optional[int] = ..., step: _Optional[int] = ..., count: _Optional[int] = ..., rank: _Optional[int] = ..., world_size: _Optional[int] = ...) -> None: ...

class Batches(_message.Message):
    __slots__ = ("step", "count", "per_batch", "ids")
    STEP_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    PER_BATCH_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    step: int
    count: int
    per_batch: int
    ids: bytes
    def __init__(self, step: _Optional[int] = ..., count: _Optional[int] = ..., per_batch: _Optional[int] = ..., ids: _Optional[bytes] = ...) -> None: ...

class GetQuotas(_message.Message):
    __slots__ = ("sampler_id", "step", "count")
    SAMPLER_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    sampler_id: int
    step: int
    count: int
    def __init__(self, sampler_id: _Optional[int] = ..., step: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class Quotas(_message.Message):
    __slots__ = ("step", "count", "sources", "counts")
    STEP_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    step: int
    count: int
    sources: int
    counts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, step: _Optional[int] = ..., count: _Optional[int] = ..., sources: _Optional[int] = ..., counts: _Optional[_Iterable[int]] = ...) -> None: ...

class GetModPlan(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: _struct_pb2.Struct
    def __init__(self, spec: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ModLayer(_message.Message):
    __slots__ = ("index", "route", "ratio", "k", "kv_capacity", "k_by_tokens")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    RATIO_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    KV_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    K_BY_TOKENS_FIELD_NUMBER: _ClassVar[int]
    index: int
    route: bool
    ratio: float
    k: int
    kv_capacity: int
    k_by_tokens: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, index: _Optional[int] = ..., route: _Optional[bool] = ..., ratio: _Optional[float] = ..., k: _Optional[int] = ..., kv_capacity: _Optional[int] = ..., k_by_tokens: _Optional[_Iterable[int]] = ...) -> None: ...

class ModSummary(_message.Message):
    __slots__ = ("mean_ratio", "kv_ratio", "flops_dense", "flops_mod", "flops_ratio")
    MEAN_RATIO_FIELD_NUMBER: _ClassVar[int]
    KV_RATIO_FIELD_NUMBER: _ClassVar[int]
    FLOPS_DENSE_FIELD_NUMBER: _ClassVar[int]
    FLOPS_MOD_FIELD_NUMBER: _ClassVar[int]
    FLOPS_RATIO_FIELD_NUMBER: _ClassVar[int]
    mean_ratio: float
    kv_ratio: float
    flops_dense: float
    flops_mod: float
    flops_ratio: float
    def __init__(self, mean_ratio: _Optional[float] = ..., kv_ratio: _Optional[float] = ..., flops_dense: _Optional[float] = ..., flops_mod: _Optional[float] = ..., flops_ratio: _Optional[float] = ...) -> None: ...

class ModBucket(_message.Message):
    __slots__ = ("tokens", "layers", "summary")
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    tokens: int
    layers: _containers.RepeatedCompositeFieldContainer[ModLayer]
    summary: ModSummary
    def __init__(self, tokens: _Optional[int] = ..., layers: _Optional[_Iterable[_Union[ModLayer, _Mapping]]] = ..., summary: _Optional[_Union[ModSummary, _Mapping]] = ...) -> None: ...

class ModPlan(_message.Message):
    __slots__ = ("buckets", "text_tokens")
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    TEXT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    buckets: _containers.RepeatedCompositeFieldContainer[ModBucket]
    text_tokens: int
    def __init__(self, buckets: _Optional[_Iterable[_Union[ModBucket, _Mapping]]] = ..., text_tokens: _Optional[int] = ...) -> None: ...

class GetStatus(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SessionStatus(_message.Message):
    __slots__ = ("session_id", "name", "kind", "step", "lr", "plan_version", "phases", "orphaned_seconds")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    PLAN_VERSION_FIELD_NUMBER: _ClassVar[int]
    PHASES_FIELD_NUMBER: _ClassVar[int]
    ORPHANED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    session_id: int
    name: str
    kind: str
    step: int
    lr: float
    plan_version: int
    phases: _containers.RepeatedCompositeFieldContainer[Phase]
    orphaned_seconds: float
    def __init__(self, session_id: _Optional[int] = ..., name: _Optional[str] = ..., kind: _Optional[str] = ..., step: _Optional[int] = ..., lr: _Optional[float] = ..., plan_version: _Optional[int] = ..., phases: _Optional[_Iterable[_Union[Phase, _Mapping]]] = ..., orphaned_seconds: _Optional[float] = ...) -> None: ...

class SamplerStatus(_message.Message):
    __slots__ = ("sampler_id", "spec_hash", "step", "total_steps", "source_names", "quotas")
    SAMPLER_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_HASH_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_NAMES_FIELD_NUMBER: _ClassVar[int]
    QUOTAS_FIELD_NUMBER: _ClassVar[int]
    sampler_id: int
    spec_hash: str
    step: int
    total_steps: int
    source_names: _containers.RepeatedScalarFieldContainer[str]
    quotas: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, sampler_id: _Optional[int] = ..., spec_hash: _Optional[str] = ..., step: _Optional[int] = ..., total_steps: _Optional[int] = ..., source_names: _Optional[_Iterable[str]] = ..., quotas: _Optional[_Iterable[int]] = ...) -> None: ...

class Status(_message.Message):
    __slots__ = ("server", "sessions", "samplers", "control_seq")
    SERVER_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    SAMPLERS_FIELD_NUMBER: _ClassVar[int]
    CONTROL_SEQ_FIELD_NUMBER: _ClassVar[int]
    server: str
    sessions: _containers.RepeatedCompositeFieldContainer[SessionStatus]
    samplers: _containers.RepeatedCompositeFieldContainer[SamplerStatus]
    control_seq: int
    def __init__(self, server: _Optional[str] = ..., sessions: _Optional[_Iterable[_Union[SessionStatus, _Mapping]]] = ..., samplers: _Optional[_Iterable[_Union[SamplerStatus, _Mapping]]] = ..., control_seq: _Optional[int] = ...) -> None: ...

class PostControl(_message.Message):
    __slots__ = ("replan", "target_name")
    REPLAN_FIELD_NUMBER: _ClassVar[int]
    TARGET_NAME_FIELD_NUMBER: _ClassVar[int]
    replan: Replan
    target_name: str
    def __init__(self, replan: _Optional[_Union[Replan, _Mapping]] = ..., target_name: _Optional[str] = ...) -> None: ...

class Control(_message.Message):
    __slots__ = ("seq", "replan", "target_name")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    REPLAN_FIELD_NUMBER: _ClassVar[int]
    TARGET_NAME_FIELD_NUMBER: _ClassVar[int]
    seq: int
    replan: Replan
    target_name: str
    def __init__(self, seq: _Optional[int] = ..., replan: _Optional[_Union[Replan, _Mapping]] = ..., target_name: _Optional[str] = ...) -> None: ...

class PollControl(_message.Message):
    __slots__ = ("after_seq", "session_id", "step", "control_epoch")
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    CONTROL_EPOCH_FIELD_NUMBER: _ClassVar[int]
    after_seq: int
    session_id: int
    step: int
    control_epoch: int
    def __init__(self, after_seq: _Optional[int] = ..., session_id: _Optional[int] = ..., step: _Optional[int] = ..., control_epoch: _Optional[int] = ...) -> None: ...

class Controls(_message.Message):
    __slots__ = ("controls", "control_epoch", "latest_seq")
    CONTROLS_FIELD_NUMBER: _ClassVar[int]
    CONTROL_EPOCH_FIELD_NUMBER: _ClassVar[int]
    LATEST_SEQ_FIELD_NUMBER: _ClassVar[int]
    controls: _containers.RepeatedCompositeFieldContainer[Control]
    control_epoch: int
    latest_seq: int
    def __init__(self, controls: _Optional[_Iterable[_Union[Control, _Mapping]]] = ..., control_epoch: _Optional[int] = ..., latest_seq: _Optional[int] = ...) -> None: ...
