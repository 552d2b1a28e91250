"""What the sync and async clients share, with no I/O: the keywords of a Begin,
request building, response reading, the retry decision and backoff, and the
Watch resume cursor (the state of a held slot is ``_holding``'s)."""

from __future__ import annotations

import json
import math
import random
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any, TypedDict, Unpack

import grpc
from google.protobuf import duration_pb2, json_format, struct_pb2

from runguard.client import models
from runguard.client.errors import RunRejected
from runguard.contract import canonical_json
from runguard.v1 import runguard_pb2 as pb

__all__ = [
    "CHANNEL_OPTIONS",
    "DEFAULT_RETRY",
    "BeginOptions",
    "RetryPolicy",
    "WaitingBegin",
    "WatchCursor",
    "begin_request",
    "cancel_result",
    "channel_options",
    "configure_request",
    "end_request",
    "end_result",
    "grant_or_raise",
    "guard_state",
    "json_payload",
    "keep_alive_request",
    "renew_every",
    "retryable",
    "run_from",
]


CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    # grpc backs off reconnecting for up to 120 s by default, and every channel of a
    # process to one address shares that backoff: after a server's restart, calls would
    # fail long after it is back. Try again within a second instead.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)
"""Channel options every client channel starts with (the caller's ``options`` win)."""


def channel_options(options: Iterable[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """``CHANNEL_OPTIONS`` with the caller's options in place of any they name."""
    return list({**dict(CHANNEL_OPTIONS), **dict(options)}.items())


_REASONS = {
    pb.REJECTION_REASON_IN_FLIGHT: "in_flight",
    pb.REJECTION_REASON_DUPLICATE: "duplicate",
    pb.REJECTION_REASON_WAIT_TIMEOUT: "wait_timeout",
    pb.REJECTION_REASON_QUEUE_FULL: "queue_full",
    pb.REJECTION_REASON_NOT_HELD: "not_held",
}
_RELEASES = {
    pb.RELEASE_REASON_ENDED: "ended",
    pb.RELEASE_REASON_EXPIRED: "expired",
    pb.RELEASE_REASON_FORCED: "forced",
}
_KINDS = {
    pb.CHANGE_KIND_ACQUIRED: "acquired",
    pb.CHANGE_KIND_RELEASED: "released",
    pb.CHANGE_KIND_CONFIGURED: "configured",
    pb.CHANGE_KIND_PROGRESSED: "progressed",
    pb.CHANGE_KIND_CANCEL_REQUESTED: "cancel_requested",
}
_OUTCOME_NAMES = {
    pb.RUN_OUTCOME_SUCCEEDED: "succeeded",
    pb.RUN_OUTCOME_FAILED: "failed",
    pb.RUN_OUTCOME_CANCELLED: "cancelled",
}
_OUTCOME_VALUES = {name: value for value, name in _OUTCOME_NAMES.items()}
_END_RESULTS = {
    pb.END_RESULT_ENDED: models.EndResult.ENDED,
    pb.END_RESULT_ALREADY_ENDED: models.EndResult.ALREADY_ENDED,
    pb.END_RESULT_UNKNOWN: models.EndResult.UNKNOWN,
}
_CANCEL_RESULTS = {
    pb.CANCEL_RESULT_REQUESTED: models.CancelResult.REQUESTED,
    pb.CANCEL_RESULT_ALREADY_REQUESTED: models.CancelResult.ALREADY_REQUESTED,
    pb.CANCEL_RESULT_ALREADY_ENDED: models.CancelResult.ALREADY_ENDED,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How calls that are safe to repeat are retried when the server is UNAVAILABLE.

    Full jitter: attempt n waits a random time in [0, min(max_backoff,
    initial_backoff * multiplier**n)], so clients that failed together do not
    come back together. A Watch reconnects until ``watch_give_up`` seconds
    pass without a message.
    """

    attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    multiplier: float = 2.0
    watch_give_up: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        if self.initial_backoff <= 0 or self.max_backoff < self.initial_backoff:
            raise ValueError("backoffs must satisfy 0 < initial_backoff <= max_backoff")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be at least 1, got {self.multiplier}")

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier**attempt)
        return rand() * ceiling


DEFAULT_RETRY = RetryPolicy()
"""Five attempts, 0.1 s doubling to at most 2 s, full jitter."""


def retryable(code: grpc.StatusCode) -> bool:
    """Only UNAVAILABLE is retried: the call did not reach a server that could act on it,
    or the server said its store is down and applied nothing."""
    return code is grpc.StatusCode.UNAVAILABLE


def json_payload(payload: Any) -> Any:
    """``payload`` as plain JSON values. What JSON cannot hold is written by ``repr``, as
    the seed's fingerprint did: unknown types inside the payload, or the whole payload
    when it has NaN, infinities, non-string keys, cycles or numbers beyond a double."""
    try:
        plain = json.loads(json.dumps(payload, default=repr, allow_nan=False))
        canonical_json(plain)  # refuses what a protobuf Value cannot carry
    except (TypeError, ValueError, OverflowError, RecursionError):
        return repr(payload)
    return plain


def _duration(seconds: float) -> duration_pb2.Duration:
    if not math.isfinite(seconds):
        raise ValueError(f"a number of seconds must be finite, got {seconds!r}")
    message = duration_pb2.Duration()
    message.FromNanoseconds(round(seconds * 1e9))
    return message


class BeginOptions(TypedDict, total=False):
    """The keywords of ``begin`` and ``run`` (``Client`` and ``AsyncClient``) after the
    guard's name; each may be left out.

    Attributes:
        route: what is being run; part of the fingerprint ("" when left out).
        payload: any JSON-able value; equal values are the same submission.
        idempotency_key: names the submission instead of a payload.
        operation_id: your name for the run; made by the client when None, so a retry
            is safe.
        ttl: lease length in seconds (the server's max when None).
        wait: seconds to queue when the guard is full (refuse at once when None or 0).
        labels: shown to watchers.
    """

    route: str
    payload: Any
    idempotency_key: str | None
    operation_id: str | None
    ttl: float | None
    wait: float | None
    labels: Mapping[str, str] | None


def begin_request(guard: str, **options: Unpack[BeginOptions]) -> pb.BeginRequest:
    """A Begin, with a client-made operation_id so that retrying it is safe.

    Raises:
        TypeError: a keyword is none of ``BeginOptions`` (as a misspelt keyword
            argument would be).
        ValueError: both ``payload`` and ``idempotency_key`` are given, or a number of
            seconds is not finite.
    """
    unknown = sorted(options.keys() - BeginOptions.__optional_keys__)
    if unknown:
        raise TypeError(f"unexpected keyword arguments of a Begin: {', '.join(unknown)}")
    payload = options.get("payload")
    idempotency_key = options.get("idempotency_key")
    request = pb.BeginRequest(
        guard=guard,
        operation_id=options.get("operation_id") or uuid.uuid4().hex,
        route=options.get("route", ""),
        labels=dict(options.get("labels") or {}),
    )
    if idempotency_key is not None:
        if payload is not None:
            raise ValueError("give payload or idempotency_key, not both")
        request.idempotency_key = idempotency_key
    elif payload is not None:
        value = struct_pb2.Value()
        json_format.ParseDict(json_payload(payload), value)
        request.payload.CopyFrom(value)
    ttl, wait = options.get("ttl"), options.get("wait")
    if ttl is not None:
        request.ttl.CopyFrom(_duration(ttl))
    if wait is not None:
        request.wait.CopyFrom(_duration(wait))
    return request


class WaitingBegin:
    """How a Begin that may queue (``wait`` > 0) is retried: while its wait lasts.

    A server that restarts takes its queue's callers with it, so a waiting
    Begin that meets UNAVAILABLE sends itself again, with the same
    operation_id and what is left of its wait, until the wait is spent (and at
    least ``policy.attempts`` times). It loses its place in the queue: the new
    server has never seen it. When it gives up after an answer that may have
    been a grant it never read, :meth:`resume_request` is the Begin that picks
    up that grant (and nothing else), so the caller can End it instead of
    leaving the slot held.
    """

    def __init__(
        self,
        request: pb.BeginRequest,
        wait: float,
        timeout: float | None,
        policy: RetryPolicy,
        clock: Callable[[], float],
    ) -> None:
        self._request = request
        self._timeout = timeout
        self._policy = policy
        self._clock = clock
        self._deadline = clock() + wait
        self.attempt = 0

    def next(self) -> tuple[pb.BeginRequest, float | None]:
        """The Begin to send now, with the wait left, and its deadline."""
        left = max(0.0, self._deadline - self._clock())
        if self.attempt == 0:  # the caller's own request, as it asked
            wait = self._request.wait.ToTimedelta().total_seconds()
            return self._request, None if self._timeout is None else self._timeout + wait
        request = pb.BeginRequest()
        request.CopyFrom(self._request)
        request.wait.CopyFrom(_duration(left))
        return request, None if self._timeout is None else self._timeout + left

    def retry(self, code: grpc.StatusCode) -> float | None:
        """Seconds to sleep before sending again, or None to give up."""
        if not retryable(code):
            return None
        self.attempt += 1
        if self.attempt >= self._policy.attempts and self._clock() >= self._deadline:
            return None
        return min(self._policy.delay(self.attempt - 1), max(0.05, self._deadline - self._clock()))

    @staticmethod
    def may_have_won(code: grpc.StatusCode) -> bool:
        """Whether a Begin that failed so may have been granted without the caller hearing."""
        return code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

    def resume_request(self) -> pb.BeginRequest:
        """The Begin that returns this operation's grant if it holds one, and does nothing else."""
        request = pb.BeginRequest()
        request.CopyFrom(self._request)
        request.ClearField("wait")
        request.resume_only = True
        return request


def run_from(message: pb.Run) -> models.Run:
    """A Run from its message."""
    progress = None
    if message.HasField("progress"):
        p = message.progress
        progress = models.RunProgress(
            fraction=p.fraction if p.HasField("fraction") else None,
            message=p.message,
            reported_at=p.reported_at.ToDatetime(tzinfo=UTC) if p.HasField("reported_at") else None,
        )
    return models.Run(
        guard=message.guard,
        operation_id=message.operation_id,
        fingerprint=message.fingerprint,
        fencing_token=message.fencing_token,
        started_at=message.started_at.ToDatetime(tzinfo=UTC),
        expires_at=message.expires_at.ToDatetime(tzinfo=UTC),
        labels=dict(message.labels),
        principal=message.principal,
        state="ended" if message.state == pb.RUN_STATE_ENDED else "running",
        end_reason=_RELEASES.get(message.end_reason),
        outcome=_OUTCOME_NAMES.get(message.outcome),
        result=_whole(json_format.MessageToDict(message.result))
        if message.HasField("result")
        else None,
        ended_at=message.ended_at.ToDatetime(tzinfo=UTC) if message.HasField("ended_at") else None,
        progress=progress,
        cancel_requested=message.cancel_requested,
        cancel_reason=message.cancel_reason,
        cancelled_by=message.cancelled_by,
    )


def _whole(value: Any) -> Any:
    """A JSON value from a protobuf Value, with whole numbers as ints (a Value only has
    doubles, so ``{"n": 7}`` would come back as ``{"n": 7.0}``)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, list):
        return [_whole(item) for item in value]
    if isinstance(value, dict):
        return {key: _whole(item) for key, item in value.items()}
    return value


def end_request(
    guard: str,
    operation_id: str,
    lease_token: str,
    *,
    force: bool = False,
    outcome: str | None = None,
    result: Any = None,
) -> pb.EndRequest:
    """An End; ``outcome`` one of "succeeded", "failed", "cancelled", ``result`` any JSON value.

    Raises:
        ValueError: ``outcome`` is none of those.
    """
    request = pb.EndRequest(
        guard=guard, operation_id=operation_id, lease_token=lease_token, force=force
    )
    if outcome is not None:
        if outcome not in _OUTCOME_VALUES:
            raise ValueError(
                f"outcome must be one of {', '.join(models.OUTCOMES)}, got {outcome!r}"
            )
        request.outcome = _OUTCOME_VALUES[outcome]
    if result is not None:
        json_format.ParseDict(json_payload(result), request.result)
    return request


def keep_alive_request(
    guard: str,
    operation_id: str,
    lease_token: str,
    *,
    ttl: float | None,
    fraction: float | None,
    message: str | None,
) -> pb.KeepAliveRequest:
    """A KeepAlive (``ttl`` None: the run's own), with a progress report when ``fraction``
    or ``message`` is given."""
    request = pb.KeepAliveRequest(guard=guard, operation_id=operation_id, lease_token=lease_token)
    if ttl is not None:
        request.ttl.CopyFrom(_duration(ttl))
    if fraction is not None or message is not None:
        request.progress.SetInParent()
        if fraction is not None:
            request.progress.fraction = fraction
        request.progress.message = message or ""
    return request


def cancel_result(response: pb.CancelResponse) -> models.CancelReply:
    """What Cancel did, and the run as it is now."""
    return models.CancelReply(
        result=_CANCEL_RESULTS.get(response.result, models.CancelResult.REQUESTED),
        run=run_from(response.run),
    )


def guard_state(message: pb.GuardState, revision: int = 0, epoch: str = "") -> models.GuardState:
    """A GuardState from its message."""
    return models.GuardState(
        guard=message.guard,
        capacity=message.capacity,
        holders=tuple(run_from(run) for run in message.holders),
        queue_length=message.queue_length,
        dedup_window=message.dedup_window.ToTimedelta().total_seconds(),
        max_queue=message.max_queue,
        configured=message.configured,
        revision=revision,
        epoch=epoch,
    )


def grant_or_raise(response: pb.BeginResponse, *, retried: bool = False) -> models.Grant:
    """The grant in a Begin response; ``retried``: the client sent this Begin more than
    once, so a replayed grant is its own earlier one, not somebody else's.

    Raises:
        RunRejected: the response is a rejection.
    """
    if response.WhichOneof("outcome") == "granted":
        granted = response.granted
        return models.Grant(
            run=run_from(granted.run),
            lease_token=granted.lease_token,
            replayed=granted.replayed and not retried,
        )
    rejected = response.rejected
    reason = _REASONS.get(rejected.reason, "unknown")
    holders = tuple(run_from(run) for run in rejected.holders)
    raise RunRejected(
        reason,
        rejected.message,
        holders[0].operation_id if reason == "in_flight" and holders else None,
        holders=holders,
        retry_after=rejected.retry_after.ToTimedelta().total_seconds()
        if rejected.HasField("retry_after")
        else None,
        duplicate_of=run_from(rejected.duplicate_of) if rejected.HasField("duplicate_of") else None,
    )


def configure_request(
    guard: str,
    *,
    capacity: int | None,
    dedup_window: float | None,
    max_queue: int | None,
    reset: bool,
) -> pb.ConfigureGuardRequest:
    """A ConfigureGuard: the settings to change (None keeps one), or ``reset``."""
    request = pb.ConfigureGuardRequest(guard=guard, reset=reset)
    if capacity is not None:
        request.capacity = capacity
    if dedup_window is not None:
        request.dedup_window.CopyFrom(_duration(dedup_window))
    if max_queue is not None:
        request.max_queue = max_queue
    return request


def end_result(response: pb.EndResponse) -> models.EndResult:
    """End's result."""
    return _END_RESULTS.get(response.result, models.EndResult.ALREADY_ENDED)


def renew_every(grant: models.Grant) -> float:
    """How often to renew a lease: a third of its length, so two renewals may fail."""
    return max(0.05, (grant.run.expires_at - grant.run.started_at).total_seconds() / 3)


class WatchCursor:
    """Where a Watch stream is, so a reconnect loses no change and repeats none.

    Changes of one commit share a revision, so a revision is only *complete*
    once something later arrives; a reconnect resumes after the last complete
    revision and skips the changes of the pending one it already delivered.
    """

    def __init__(self, after_revision: int = 0, epoch: str = "") -> None:
        self.epoch = epoch
        self.complete = after_revision
        self._pending: int | None = None
        self._seen = 0
        self._skip = 0
        self._parts: list[models.GuardState] = []
        self._resynced = False

    def request(self, guards: Iterable[str]) -> pb.WatchRequest:
        """The Watch to send now (the first, or a resume)."""
        return pb.WatchRequest(guards=list(guards), after_revision=self.complete, epoch=self.epoch)

    def reconnecting(self) -> None:
        """The stream broke: the resume will replay the pending revision's changes."""
        self._skip = self._seen if self._pending is not None else 0
        self._parts, self._resynced = [], False

    def accept(self, message: pb.WatchResponse) -> models.WatchEvent | None:
        """The event a message means, or None for a replayed change already delivered."""
        kind = message.WhichOneof("event")
        if kind == "snapshot":
            part = message.snapshot
            # A snapshot of many guards comes in parts; it is one event once whole.
            self._parts.extend(guard_state(g, part.revision, message.epoch) for g in part.guards)
            self._resynced = self._resynced or part.resynced
            if part.more:
                return None
            self.epoch = message.epoch
            self.complete, self._pending, self._seen, self._skip = (part.revision, None, 0, 0)
            snapshot = models.Snapshot(
                epoch=message.epoch,
                revision=part.revision,
                guards=tuple(self._parts),
                resynced=self._resynced,
            )
            self._parts, self._resynced = [], False
            return snapshot
        if kind == "progress":
            revision = message.progress.revision
            if self._pending is not None and revision >= self._pending:
                self._pending, self._seen = None, 0
            self.complete = max(self.complete, revision)
            return models.Progress(epoch=message.epoch, revision=revision)
        change = message.change
        if self._skip and change.revision == self._pending:
            self._skip -= 1
            return None
        self._skip = 0
        if self._pending is not None and change.revision > self._pending:
            self.complete = self._pending
            self._pending, self._seen = change.revision, 1
        elif self._pending == change.revision:
            self._seen += 1
        else:
            self._pending, self._seen = change.revision, 1
        self.epoch = message.epoch
        return models.Change(
            epoch=message.epoch,
            revision=change.revision,
            kind=_KINDS.get(change.kind, "unknown"),
            run=run_from(change.run) if change.HasField("run") else None,
            state=guard_state(change.state, change.revision, message.epoch),
            reason=_RELEASES.get(change.release_reason),
        )
