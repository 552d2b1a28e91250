"""Core values to protobuf messages, in one place. Lease tokens never pass here
except into ``Granted``, the one message that carries them."""

from __future__ import annotations

from enum import Enum
from typing import TypeVar, cast

from google.protobuf import duration_pb2, json_format, struct_pb2, timestamp_pb2

from runguard.server.core import (
    CancelResult,
    Change,
    ChangeKind,
    EndResult,
    Granted,
    GuardView,
    Rejection,
    RejectionReason,
    ReleaseReason,
    Run,
    RunOutcome,
)
from runguard.server.hub import Progress, Snapshot, WatchEvent
from runguard.v1 import runguard_pb2 as pb

__all__ = [
    "SNAPSHOT_PART_BYTES",
    "begin_response",
    "cancel_response",
    "duration",
    "end_response",
    "run_message",
    "state_message",
    "timestamp",
    "watch_messages",
    "watch_response",
    "watch_wire",
]

SNAPSHOT_PART_BYTES = 512 * 1024
"""About how large one part of a Snapshot may grow before the next part starts."""

_E = TypeVar("_E", bound=Enum)
_P = TypeVar("_P", bound=int)


def _same_names(core: type[_E], contract: type[_P], prefix: str) -> dict[_E, _P]:
    """Each member of a core enum to the ``contract`` enum's value of the same name after
    ``prefix`` (a member the contract lacks fails at import, not on the wire)."""
    return {member: cast(_P, getattr(contract, prefix + member.name)) for member in core}


_REJECTION = _same_names(RejectionReason, pb.RejectionReason, "REJECTION_REASON_")
_KIND = _same_names(ChangeKind, pb.ChangeKind, "CHANGE_KIND_")
_RELEASE = _same_names(ReleaseReason, pb.ReleaseReason, "RELEASE_REASON_")
_END = _same_names(EndResult, pb.EndResult, "END_RESULT_")
_OUTCOME = _same_names(RunOutcome, pb.RunOutcome, "RUN_OUTCOME_")
_CANCEL = _same_names(CancelResult, pb.CancelResult, "CANCEL_RESULT_")


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    """Seconds since the epoch as a Timestamp (microsecond precision)."""
    message = timestamp_pb2.Timestamp()
    message.FromMicroseconds(round(seconds * 1e6))
    return message


def duration(seconds: float) -> duration_pb2.Duration:
    """Seconds as a Duration (millisecond precision)."""
    message = duration_pb2.Duration()
    message.FromMilliseconds(round(seconds * 1e3))
    return message


def run_message(run: Run) -> pb.Run:
    """A run as anybody may see it: live, or ended with its outcome and result."""
    message = pb.Run(
        guard=run.guard,
        operation_id=run.operation_id,
        fingerprint=run.fingerprint,
        fencing_token=run.fencing_token,
        started_at=timestamp(run.started_at),
        expires_at=timestamp(run.expires_at),
        labels=dict(run.labels),
        principal=run.principal,
        state=pb.RUN_STATE_RUNNING if run.ending is None else pb.RUN_STATE_ENDED,
    )
    if run.progress is not None:
        progress = message.progress
        if run.progress.fraction is not None:
            progress.fraction = run.progress.fraction
        progress.message = run.progress.message
        progress.reported_at.CopyFrom(timestamp(run.progress.at))
    if run.cancel is not None:
        message.cancel_requested = True
        message.cancel_reason = run.cancel.reason
        message.cancelled_by = run.cancel.by
    ending = run.ending
    if ending is not None:
        message.end_reason = _RELEASE[ending.reason]
        message.ended_at.CopyFrom(timestamp(ending.at))
        if ending.outcome is not None:
            message.outcome = _OUTCOME[ending.outcome]
        if ending.result:
            message.result.CopyFrom(json_format.Parse(ending.result, struct_pb2.Value()))
    return message


def state_message(view: GuardView) -> pb.GuardState:
    """A guard's state."""
    return pb.GuardState(
        guard=view.guard,
        capacity=view.capacity,
        holders=[run_message(run) for run in view.holders],
        queue_length=view.queue_length,
        dedup_window=duration(view.dedup_window),
        max_queue=view.max_queue,
        configured=view.configured,
    )


def begin_response(outcome: Granted | Rejection) -> pb.BeginResponse:
    """Begin's typed outcome."""
    if isinstance(outcome, Granted):
        return pb.BeginResponse(
            granted=pb.Granted(
                run=run_message(outcome.run),
                lease_token=outcome.lease_token,
                replayed=outcome.replayed,
            )
        )
    rejected = pb.Rejection(
        reason=_REJECTION[outcome.reason],
        message=outcome.message,
        holders=[run_message(run) for run in outcome.holders],
    )
    if outcome.duplicate_of is not None:
        rejected.duplicate_of.CopyFrom(run_message(outcome.duplicate_of))
    if outcome.retry_after is not None:
        rejected.retry_after.CopyFrom(duration(outcome.retry_after))
    return pb.BeginResponse(rejected=rejected)


def end_response(result: EndResult, run: Run | None = None) -> pb.EndResponse:
    """End's result, with the ended run when the guard still keeps it."""
    response = pb.EndResponse(result=_END[result])
    if run is not None:
        response.run.CopyFrom(run_message(run))
    return response


def cancel_response(result: CancelResult, run: Run) -> pb.CancelResponse:
    """Cancel's result and the run as it is now."""
    return pb.CancelResponse(result=_CANCEL[result], run=run_message(run))


class _Encoded:
    """One change's message and, once a gRPC stream asks, its wire bytes."""

    __slots__ = ("epoch", "event", "message", "wire")

    def __init__(self, event: Change, epoch: str, message: pb.WatchResponse) -> None:
        self.event = event
        self.epoch = epoch
        self.message = message
        self.wire: bytes | None = None


_CHANGES: dict[int, _Encoded] = {}
_CHANGES_KEPT = 256
"""Encodings of the latest changes, by the change's identity (see ``watch_response``)."""


def watch_messages(event: WatchEvent, epoch: str) -> list[pb.WatchResponse]:
    """The messages of one Watch event: a Snapshot of many guards comes in parts
    (``more`` set on all but the last), every other event in one message."""
    if not isinstance(event, Snapshot):
        return [watch_response(event, epoch)]
    parts: list[list[pb.GuardState]] = [[]]
    size = 0
    for view in event.guards:
        state = state_message(view)
        if parts[-1] and size + state.ByteSize() > SNAPSHOT_PART_BYTES:
            parts.append([])
            size = 0
        parts[-1].append(state)
        size += state.ByteSize()
    return [
        pb.WatchResponse(
            epoch=epoch,
            snapshot=pb.Snapshot(
                revision=event.revision,
                guards=states,
                resynced=event.resynced and index == 0,
                more=index < len(parts) - 1,
            ),
        )
        for index, states in enumerate(parts)
    ]


def watch_response(event: WatchEvent, epoch: str) -> pb.WatchResponse:
    """One message of a Watch stream.

    The hub hands the same ``Change`` object to every watcher of its guard, so
    a change's message is built once and shared (it is only serialised, never
    changed): fan-out to N watchers converts once, not N times, and
    :func:`watch_wire` serialises it once too.
    """
    if isinstance(event, Snapshot):
        return pb.WatchResponse(
            epoch=epoch,
            snapshot=pb.Snapshot(
                revision=event.revision,
                guards=[state_message(view) for view in event.guards],
                resynced=event.resynced,
            ),
        )
    if isinstance(event, Progress):
        return pb.WatchResponse(epoch=epoch, progress=pb.Progress(revision=event.revision))
    return _encoded(event, epoch).message


def watch_wire(change: Change, epoch: str) -> bytes:
    """A Change's WatchResponse, serialised: the same bytes object for every stream."""
    encoded = _encoded(change, epoch)
    wire = encoded.wire
    if wire is None:
        wire = encoded.wire = encoded.message.SerializeToString()
    return wire


def _encoded(change: Change, epoch: str) -> _Encoded:
    cached = _CHANGES.get(id(change))
    if cached is not None and cached.event is change and cached.epoch == epoch:
        return cached
    message = pb.Change(
        revision=change.revision, kind=_KIND[change.kind], state=state_message(change.state)
    )
    if change.run is not None:
        message.run.CopyFrom(run_message(change.run))
    if change.reason is not None:
        message.release_reason = _RELEASE[change.reason]
    encoded = _Encoded(change, epoch, pb.WatchResponse(epoch=epoch, change=message))
    if len(_CHANGES) >= _CHANGES_KEPT:
        del _CHANGES[next(iter(_CHANGES))]
    # The entry keeps the change alive, so its id is not reused while cached.
    _CHANGES[id(change)] = encoded
    return encoded
