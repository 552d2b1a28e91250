import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RejectionReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REJECTION_REASON_UNSPECIFIED: _ClassVar[RejectionReason]
    REJECTION_REASON_IN_FLIGHT: _ClassVar[RejectionReason]
    REJECTION_REASON_DUPLICATE: _ClassVar[RejectionReason]
    REJECTION_REASON_WAIT_TIMEOUT: _ClassVar[RejectionReason]
    REJECTION_REASON_QUEUE_FULL: _ClassVar[RejectionReason]
    REJECTION_REASON_NOT_HELD: _ClassVar[RejectionReason]

class RunState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATE_UNSPECIFIED: _ClassVar[RunState]
    RUN_STATE_RUNNING: _ClassVar[RunState]
    RUN_STATE_ENDED: _ClassVar[RunState]

class RunOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_OUTCOME_UNSPECIFIED: _ClassVar[RunOutcome]
    RUN_OUTCOME_SUCCEEDED: _ClassVar[RunOutcome]
    RUN_OUTCOME_FAILED: _ClassVar[RunOutcome]
    RUN_OUTCOME_CANCELLED: _ClassVar[RunOutcome]

class CancelResult(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CANCEL_RESULT_UNSPECIFIED: _ClassVar[CancelResult]
    CANCEL_RESULT_REQUESTED: _ClassVar[CancelResult]
    CANCEL_RESULT_ALREADY_REQUESTED: _ClassVar[CancelResult]
    CANCEL_RESULT_ALREADY_ENDED: _ClassVar[CancelResult]

class ChangeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANGE_KIND_UNSPECIFIED: _ClassVar[ChangeKind]
    CHANGE_KIND_ACQUIRED: _ClassVar[ChangeKind]
    CHANGE_KIND_RELEASED: _ClassVar[ChangeKind]
    CHANGE_KIND_CONFIGURED: _ClassVar[ChangeKind]
    CHANGE_KIND_PROGRESSED: _ClassVar[ChangeKind]
    CHANGE_KIND_CANCEL_REQUESTED: _ClassVar[ChangeKind]

class ReleaseReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RELEASE_REASON_UNSPECIFIED: _ClassVar[ReleaseReason]
    RELEASE_REASON_ENDED: _ClassVar[ReleaseReason]
    RELEASE_REASON_EXPIRED: _ClassVar[ReleaseReason]
    RELEASE_REASON_FORCED: _ClassVar[ReleaseReason]

class EndResult(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    END_RESULT_UNSPECIFIED: _ClassVar[EndResult]
    END_RESULT_ENDED: _ClassVar[EndResult]
    END_RESULT_ALREADY_ENDED: _ClassVar[EndResult]
    END_RESULT_UNKNOWN: _ClassVar[EndResult]
REJECTION_REASON_UNSPECIFIED: RejectionReason
REJECTION_REASON_IN_FLIGHT: RejectionReason
REJECTION_REASON_DUPLICATE: RejectionReason
REJECTION_REASON_WAIT_TIMEOUT: RejectionReason
REJECTION_REASON_QUEUE_FULL: RejectionReason
REJECTION_REASON_NOT_HELD: RejectionReason
RUN_STATE_UNSPECIFIED: RunState
RUN_STATE_RUNNING: RunState
RUN_STATE_ENDED: RunState
RUN_OUTCOME_UNSPECIFIED: RunOutcome
RUN_OUTCOME_SUCCEEDED: RunOutcome
RUN_OUTCOME_FAILED: RunOutcome
RUN_OUTCOME_CANCELLED: RunOutcome
CANCEL_RESULT_UNSPECIFIED: CancelResult
CANCEL_RESULT_REQUESTED: CancelResult
CANCEL_RESULT_ALREADY_REQUESTED: CancelResult
CANCEL_RESULT_ALREADY_ENDED: CancelResult
CHANGE_KIND_UNSPECIFIED: ChangeKind
CHANGE_KIND_ACQUIRED: ChangeKind
CHANGE_KIND_RELEASED: ChangeKind
CHANGE_KIND_CONFIGURED: ChangeKind
CHANGE_KIND_PROGRESSED: ChangeKind
CHANGE_KIND_CANCEL_REQUESTED: ChangeKind
RELEASE_REASON_UNSPECIFIED: ReleaseReason
RELEASE_REASON_ENDED: ReleaseReason
RELEASE_REASON_EXPIRED: ReleaseReason
RELEASE_REASON_FORCED: ReleaseReason
END_RESULT_UNSPECIFIED: EndResult
END_RESULT_ENDED: EndResult
END_RESULT_ALREADY_ENDED: EndResult
END_RESULT_UNKNOWN: EndResult

class Run(_message.Message):
    __slots__ = ("guard", "operation_id", "fingerprint", "fencing_token", "started_at", "expires_at", "labels", "principal", "state", "end_reason", "outcome", "result", "ended_at", "progress", "cancel_requested", "cancel_reason", "cancelled_by")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    GUARD_FIELD_NUMBER: _ClassVar[int]
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REASON_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_BY_FIELD_NUMBER: _ClassVar[int]
    guard: str
    operation_id: str
    fingerprint: str
    fencing_token: int
    started_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    labels: _containers.ScalarMap[str, str]
    principal: str
    state: RunState
    end_reason: ReleaseReason
    outcome: RunOutcome
    result: _struct_pb2.Value
    ended_at: _timestamp_pb2.Timestamp
    progress: RunProgress
    cancel_requested: bool
    cancel_reason: str
    cancelled_by: str
    def __init__(self, guard: _Optional[str] = ..., operation_id: _Optional[str] = ..., fingerprint: _Optional[str] = ..., fencing_token: _Optional[int] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., principal: _Optional[str] = ..., state: _Optional[_Union[RunState, str]] = ..., end_reason: _Optional[_Union[ReleaseReason, str]] = ..., outcome: _Optional[_Union[RunOutcome, str]] = ..., result: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., progress: _Optional[_Union[RunProgress, _Mapping]] = ..., cancel_requested: _Optional[bool] = ..., cancel_reason: _Optional[str] = ..., cancelled_by: _Optional[str] = ...) -> None: ...

class RunProgress(_message.Message):
    __slots__ = ("fraction", "message", "reported_at")
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REPORTED_AT_FIELD_NUMBER: _ClassVar[int]
    fraction: float
    message: str
    reported_at: _timestamp_pb2.Timestamp
    def __init__(self, fraction: _Optional[float] = ..., message: _Optional[str] = ..., reported_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GuardState(_message.Message):
    __slots__ = ("guard", "capacity", "holders", "queue_length", "dedup_window", "max_queue", "configured")
    GUARD_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    HOLDERS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    DEDUP_WINDOW_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_FIELD_NUMBER: _ClassVar[int]
    CONFIGURED_FIELD_NUMBER: _ClassVar[int]
    guard: str
    capacity: int
    holders: _containers.RepeatedCompositeFieldContainer[Run]
    queue_length: int
    dedup_window: _duration_pb2.Duration
    max_queue: int
    configured: bool
    def __init__(self, guard: _Optional[str] = ..., capacity: _Optional[int] = ..., holders: _Optional[_Iterable[_Union[Run, _Mapping]]] = ..., queue_length: _Optional[int] = ..., dedup_window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_queue: _Optional[int] = ..., configured: _Optional[bool] = ...) -> None: ...

class BeginRequest(_message.Message):
    __slots__ = ("guard", "operation_id", "route", "payload", "idempotency_key", "ttl", "wait", "labels", "resume_only")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    GUARD_FIELD_NUMBER: _ClassVar[int]
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    RESUME_ONLY_FIELD_NUMBER: _ClassVar[int]
    guard: str
    operation_id: str
    route: str
    payload: _struct_pb2.Value
    idempotency_key: str
    ttl: _duration_pb2.Duration
    wait: _duration_pb2.Duration
    labels: _containers.ScalarMap[str, str]
    resume_only: bool
    def __init__(self, guard: _Optional[str] = ..., operation_id: _Optional[str] = ..., route: _Optional[str] = ..., payload: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., idempotency_key: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., wait: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., resume_only: _Optional[bool] = ...) -> None: ...

class Granted(_message.Message):
    __slots__ = ("run", "lease_token", "replayed")
    RUN_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    run: Run
    lease_token: str
    replayed: bool
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ..., lease_token: _Optional[str] = ..., replayed: _Optional[bool] = ...) -> None: ...

class Rejection(_message.Message):
    __slots__ = ("reason", "message", "holders", "duplicate_of", "retry_after")
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    HOLDERS_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_OF_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    reason: RejectionReason
    message: str
    holders: _containers.RepeatedCompositeFieldContainer[Run]
    duplicate_of: Run
    retry_after: _duration_pb2.Duration
    def __init__(self, reason: _Optional[_Union[RejectionReason, str]] = ..., message: _Optional[str] = ..., holders: _Optional[_Iterable[_Union[Run, _Mapping]]] = ..., duplicate_of: _Optional[_Union[Run, _Mapping]] = ..., retry_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class BeginResponse(_message.Message):
    __slots__ = ("granted", "rejected")
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    granted: Granted
    rejected: Rejection
    def __init__(self, granted: _Optional[_Union[Granted, _Mapping]] = ..., rejected: _Optional[_Union[Rejection, _Mapping]] = ...) -> None: ...

class EndRequest(_message.Message):
    __slots__ = ("guard", "operation_id", "lease_token", "force", "outcome", "result")
    GUARD_FIELD_NUMBER: _ClassVar[int]
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    guard: str
    operation_id: str
    lease_token: str
    force: bool
    outcome: RunOutcome
    result: _struct_pb2.Value
    def __init__(self, guard: _Optional[str] = ..., operation_id: _Optional[str] = ..., lease_token: _Optional[str] = ..., force: _Optional[bool] = ..., outcome: _Optional[_Union[RunOutcome, str]] = ..., result: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class EndResponse(_message.Message):
    __slots__ = ("result", "run")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    result: EndResult
    run: Run
    def __init__(self, result: _Optional[_Union[EndResult, str]] = ..., run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class KeepAliveRequest(_message.Message):
    __slots__ = ("guard", "operation_id", "lease_token", "ttl", "progress")
    GUARD_FIELD_NUMBER: _ClassVar[int]
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    guard: str
    operation_id: str
    lease_token: str
    ttl: _duration_pb2.Duration
    progress: RunProgress
    def __init__(self, guard: _Optional[str] = ..., operation_id: _Optional[str] = ..., lease_token: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., progress: _Optional[_Union[RunProgress, _Mapping]] = ...) -> None: ...

class KeepAliveResponse(_message.Message):
    __slots__ = ("run", "cancel_requested")
    RUN_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    run: Run
    cancel_requested: bool
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ..., cancel_requested: _Optional[bool] = ...) -> None: ...

class CurrentRequest(_message.Message):
    __slots__ = ("guard",)
    GUARD_FIELD_NUMBER: _ClassVar[int]
    guard: str
    def __init__(self, guard: _Optional[str] = ...) -> None: ...

class CurrentResponse(_message.Message):
    __slots__ = ("state", "revision", "epoch")
    STATE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    state: GuardState
    revision: int
    epoch: str
    def __init__(self, state: _Optional[_Union[GuardState, _Mapping]] = ..., revision: _Optional[int] = ..., epoch: _Optional[str] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("guards", "after_revision", "epoch")
    GUARDS_FIELD_NUMBER: _ClassVar[int]
    AFTER_REVISION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    guards: _containers.RepeatedScalarFieldContainer[str]
    after_revision: int
    epoch: str
    def __init__(self, guards: _Optional[_Iterable[str]] = ..., after_revision: _Optional[int] = ..., epoch: _Optional[str] = ...) -> None: ...

class Snapshot(_message.Message):
    __slots__ = ("revision", "guards", "resynced", "more")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    GUARDS_FIELD_NUMBER: _ClassVar[int]
    RESYNCED_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    revision: int
    guards: _containers.RepeatedCompositeFieldContainer[GuardState]
    resynced: bool
    more: bool
    def __init__(self, revision: _Optional[int] = ..., guards: _Optional[_Iterable[_Union[GuardState, _Mapping]]] = ..., resynced: _Optional[bool] = ..., more: _Optional[bool] = ...) -> None: ...

class Change(_message.Message):
    __slots__ = ("revision", "kind", "release_reason", "run", "state")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    RELEASE_REASON_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    revision: int
    kind: ChangeKind
    release_reason: ReleaseReason
    run: Run
    state: GuardState
    def __init__(self, revision: _Optional[int] = ..., kind: _Optional[_Union[ChangeKind, str]] = ..., release_reason: _Optional[_Union[ReleaseReason, str]] = ..., run: _Optional[_Union[Run, _Mapping]] = ..., state: _Optional[_Union[GuardState, _Mapping]] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("epoch", "snapshot", "change", "progress")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    epoch: str
    snapshot: Snapshot
    change: Change
    progress: Progress
    def __init__(self, epoch: _Optional[str] = ..., snapshot: _Optional[_Union[Snapshot, _Mapping]] = ..., change: _Optional[_Union[Change, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ...) -> None: ...

class ConfigureGuardRequest(_message.Message):
    __slots__ = ("guard", "capacity", "dedup_window", "max_queue", "reset")
    GUARD_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    DEDUP_WINDOW_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_FIELD_NUMBER: _ClassVar[int]
    RESET_FIELD_NUMBER: _ClassVar[int]
    guard: str
    capacity: int
    dedup_window: _duration_pb2.Duration
    max_queue: int
    reset: bool
    def __init__(self, guard: _Optional[str] = ..., capacity: _Optional[int] = ..., dedup_window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_queue: _Optional[int] = ..., reset: _Optional[bool] = ...) -> None: ...

class ConfigureGuardResponse(_message.Message):
    __slots__ = ("state", "revision", "epoch")
    STATE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    state: GuardState
    revision: int
    epoch: str
    def __init__(self, state: _Optional[_Union[GuardState, _Mapping]] = ..., revision: _Optional[int] = ..., epoch: _Optional[str] = ...) -> None: ...

class ListGuardsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListGuardsResponse(_message.Message):
    __slots__ = ("guards", "next_page_token", "revision", "epoch")
    GUARDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    guards: _containers.RepeatedCompositeFieldContainer[GuardState]
    next_page_token: str
    revision: int
    epoch: str
    def __init__(self, guards: _Optional[_Iterable[_Union[GuardState, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., revision: _Optional[int] = ..., epoch: _Optional[str] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("guard", "operation_id", "reason")
    GUARD_FIELD_NUMBER: _ClassVar[int]
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    guard: str
    operation_id: str
    reason: str
    def __init__(self, guard: _Optional[str] = ..., operation_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelResponse(_message.Message):
    __slots__ = ("result", "run")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    result: CancelResult
    run: Run
    def __init__(self, result: _Optional[_Union[CancelResult, str]] = ..., run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("guard", "operation_id")
    GUARD_FIELD_NUMBER: _ClassVar[int]
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    guard: str
    operation_id: str
    def __init__(self, guard: _Optional[str] = ..., operation_id: _Optional[str] = ...) -> None: ...

class GetRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...
