"""What the sync and async clients share, with no I/O: request building,
response reading, the retry decision and backoff, the Watch resume cursor,
and the state of a held slot."""

from __future__ import annotations

import json
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import grpc
from google.protobuf import duration_pb2, json_format, struct_pb2

from runguard.client.errors import Cancelled, LeaseLost, RunRejected
from runguard.client.models import (
    OUTCOMES,
    CancelReply,
    CancelResult,
    Change,
    EndResult,
    Grant,
    GuardState,
    Progress,
    Run,
    RunProgress,
    Snapshot,
    WatchEvent,
)
from runguard.contract import canonical_json
from runguard.v1 import runguard_pb2 as pb

__all__ = [
    "CHANNEL_OPTIONS",
    "DEFAULT_RETRY",
    "Holding",
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
    pb.END_RESULT_ENDED: EndResult.ENDED,
    pb.END_RESULT_ALREADY_ENDED: EndResult.ALREADY_ENDED,
    pb.END_RESULT_UNKNOWN: EndResult.UNKNOWN,
}
_CANCEL_RESULTS = {
    pb.CANCEL_RESULT_REQUESTED: CancelResult.REQUESTED,
    pb.CANCEL_RESULT_ALREADY_REQUESTED: CancelResult.ALREADY_REQUESTED,
    pb.CANCEL_RESULT_ALREADY_ENDED: CancelResult.ALREADY_ENDED,
}

PROGRESS_MESSAGE_MAX_CHARS = 256
"""The server's limit on a progress message."""

PROGRESS_SEND_INTERVAL = 0.25
"""Seconds between two progress reports a held slot sends (the latest always goes)."""


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


def begin_request(
    guard: str,
    *,
    route: str,
    payload: Any,
    idempotency_key: str | None,
    operation_id: str | None,
    ttl: float | None,
    wait: float | None,
    labels: Mapping[str, str] | None,
) -> pb.BeginRequest:
    """A Begin, with a client-made operation_id so that retrying it is safe."""
    request = pb.BeginRequest(
        guard=guard,
        operation_id=operation_id or uuid.uuid4().hex,
        route=route,
        labels=dict(labels or {}),
    )
    if idempotency_key is not None:
        if payload is not None:
            raise ValueError("give payload or idempotency_key, not both")
        request.idempotency_key = idempotency_key
    elif payload is not None:
        value = struct_pb2.Value()
        json_format.ParseDict(json_payload(payload), value)
        request.payload.CopyFrom(value)
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


def run_from(message: pb.Run) -> Run:
    """A Run from its message."""
    progress = None
    if message.HasField("progress"):
        p = message.progress
        progress = RunProgress(
            fraction=p.fraction if p.HasField("fraction") else None,
            message=p.message,
            reported_at=p.reported_at.ToDatetime(tzinfo=UTC) if p.HasField("reported_at") else None,
        )
    return Run(
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
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
        request.outcome = _OUTCOME_VALUES[outcome]
    if result is not None:
        json_format.ParseDict(json_payload(result), request.result)
    return request


def keep_alive_request(
    guard: str,
    operation_id: str,
    lease_token: str,
    *,
    ttl: float | None = None,
    fraction: float | None = None,
    message: str | None = None,
) -> pb.KeepAliveRequest:
    """A KeepAlive, with a progress report when ``fraction`` or ``message`` is given."""
    request = pb.KeepAliveRequest(guard=guard, operation_id=operation_id, lease_token=lease_token)
    if ttl is not None:
        request.ttl.CopyFrom(_duration(ttl))
    if fraction is not None or message is not None:
        request.progress.SetInParent()
        if fraction is not None:
            request.progress.fraction = fraction
        request.progress.message = message or ""
    return request


def cancel_result(response: pb.CancelResponse) -> CancelReply:
    """What Cancel did, and the run as it is now."""
    return CancelReply(
        result=_CANCEL_RESULTS.get(response.result, CancelResult.REQUESTED),
        run=run_from(response.run),
    )


def guard_state(message: pb.GuardState, revision: int = 0, epoch: str = "") -> GuardState:
    """A GuardState from its message."""
    return GuardState(
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


def grant_or_raise(response: pb.BeginResponse, *, retried: bool = False) -> Grant:
    """The grant in a Begin response; ``retried``: the client sent this Begin more than
    once, so a replayed grant is its own earlier one, not somebody else's.

    Raises:
        RunRejected: the response is a rejection.
    """
    if response.WhichOneof("outcome") == "granted":
        granted = response.granted
        return Grant(
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


def end_result(response: pb.EndResponse) -> EndResult:
    """End's result."""
    return _END_RESULTS.get(response.result, EndResult.ALREADY_ENDED)


def renew_every(grant: Grant) -> float:
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
        self._parts: list[GuardState] = []
        self._resynced = False

    def request(self, guards: Iterable[str]) -> pb.WatchRequest:
        """The Watch to send now (the first, or a resume)."""
        return pb.WatchRequest(guards=list(guards), after_revision=self.complete, epoch=self.epoch)

    def reconnecting(self) -> None:
        """The stream broke: the resume will replay the pending revision's changes."""
        self._skip = self._seen if self._pending is not None else 0
        self._parts, self._resynced = [], False

    def accept(self, message: pb.WatchResponse) -> WatchEvent | None:
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
            snapshot = Snapshot(
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
            return Progress(epoch=message.epoch, revision=revision)
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
        return Change(
            epoch=message.epoch,
            revision=change.revision,
            kind=_KINDS.get(change.kind, "unknown"),
            run=run_from(change.run) if change.HasField("run") else None,
            state=guard_state(change.state, change.revision, message.epoch),
            reason=_RELEASES.get(change.release_reason),
        )


class Holding:
    """A slot held inside ``client.run(...)``.

    How the holder learns that it lost the slot (expired, force-ended): the
    ``lost`` flag turns true at once, the ``on_lost`` callback is called once
    with the LeaseLost error, and leaving the ``with`` block raises it.

    How it learns that somebody asked it to stop (``Client.cancel``): within a
    second (through the Watch the block keeps open, or the next renewal)
    ``cancel_requested`` turns true, ``on_cancel`` is called once with the
    Cancelled error, and ``check()`` raises it. The slot stays held until the
    block is left; then the run Ends with outcome "cancelled".

    ``report_progress(fraction, message)`` sends progress with a renewal sent at
    once (at most every ``PROGRESS_SEND_INTERVAL`` seconds; the latest report
    always goes). ``finish(result, outcome=...)`` sets what the End on leaving
    the block says; otherwise it says "succeeded" (or "cancelled" once cancel
    was requested, or "failed" when the block raised).
    """

    def __init__(
        self,
        grant: Grant,
        on_lost: Callable[[LeaseLost], object] | None = None,
        on_cancel: Callable[[Cancelled], object] | None = None,
    ) -> None:
        self.grant = grant
        self._on_lost = on_lost
        self._on_cancel = on_cancel
        self._lock = threading.Lock()
        self._lost: LeaseLost | None = None
        self._cancelled: Cancelled | None = None
        self._pending: tuple[float | None, str] | None = None
        self._sent_at = 0.0
        self.outcome: str | None = None
        """What the End on leaving the block says (None: decided when it is left)."""
        self.result: Any = None
        """The result the End on leaving the block carries."""
        self.wake: Callable[[], None] = lambda: None
        """Set by the client: wakes its renewer to send a progress report now."""

    @property
    def cancel_requested(self) -> bool:
        """True once somebody asked the run to stop."""
        return self._cancelled is not None

    def report_progress(self, fraction: float | None = None, message: str = "") -> None:
        """Report how far the run has got: ``fraction`` in [0, 1] and/or a short message."""
        if fraction is None and not message:
            raise ValueError("give a fraction, a message or both")
        if fraction is not None and not 0 <= fraction <= 1:
            raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
        if len(message) > PROGRESS_MESSAGE_MAX_CHARS:
            raise ValueError(f"message must be at most {PROGRESS_MESSAGE_MAX_CHARS} characters")
        with self._lock:
            self._pending = (fraction, message)
        self.wake()

    def take_progress(self) -> tuple[tuple[float | None, str] | None, float]:
        """The report to send now (or None), and how long to wait first if it is too soon."""
        with self._lock:
            if self._pending is None:
                return None, 0.0
            wait = self._sent_at + PROGRESS_SEND_INTERVAL - time.monotonic()
            if wait > 0:
                return None, wait
            pending, self._pending = self._pending, None
            self._sent_at = time.monotonic()
            return pending, 0.0

    def finish(self, result: Any = None, *, outcome: str = "succeeded") -> None:
        """Say how the run went: the End on leaving the block sends ``outcome`` and ``result``."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
        self.outcome, self.result = outcome, result

    def end_outcome(self, failed: bool) -> str:
        """The outcome the End on leaving the block sends."""
        if self.outcome is not None:
            return self.outcome
        if self.cancel_requested:
            return "cancelled"
        return "failed" if failed else "succeeded"

    def request_cancel(self, run: Run) -> None:
        """Record that the run was asked to stop (first time wins) and call ``on_cancel`` once."""
        with self._lock:
            if self._cancelled is not None:
                return
            why = f": {run.cancel_reason}" if run.cancel_reason else ""
            by = f" by {run.cancelled_by}" if run.cancelled_by else ""
            self._cancelled = Cancelled(
                f"run {run.operation_id!r} of guard {run.guard!r} was asked to stop{by}{why}",
                reason=run.cancel_reason,
                by=run.cancelled_by,
            )
        if self._on_cancel is not None:
            self._on_cancel(self._cancelled)

    def cancel_seen(self, event: WatchEvent) -> Run | None:
        """The run, if a watch event says this run was asked to stop."""
        mine = self.grant.run.fencing_token
        if isinstance(event, Change):
            run = event.run
            if event.kind == "cancel_requested" and run is not None and run.fencing_token == mine:
                return run
            return None
        if isinstance(event, Snapshot):
            for state in event.guards:
                for run in state.holders:
                    if run.fencing_token == mine and run.cancel_requested:
                        return run
        return None

    @property
    def run(self) -> Run:
        """The run holding the slot."""
        return self.grant.run

    @property
    def lost(self) -> bool:
        """True once the slot is known to be lost."""
        return self._lost is not None

    @property
    def lost_error(self) -> LeaseLost | None:
        """Why the slot was lost, once it was."""
        return self._lost

    def check(self) -> None:
        """Raise LeaseLost if the slot was lost, Cancelled if the run was asked to stop;
        call it between steps of long work."""
        if self._lost is not None:
            raise self._lost
        if self._cancelled is not None:
            raise self._cancelled

    def lose(self, reason: str) -> None:
        """Record the loss (first reason wins) and call ``on_lost`` once."""
        with self._lock:
            if self._lost is not None:
                return
            run = self.grant.run
            self._lost = LeaseLost(
                f"run {run.operation_id!r} of guard {run.guard!r} lost its slot: {reason}",
                guard=run.guard,
                operation_id=run.operation_id,
            )
        if self._on_lost is not None:
            self._on_lost(self._lost)

    def released(self, event: WatchEvent) -> str | None:
        """The reason, if a watch event says this run left its slot."""
        run = self.grant.run
        if isinstance(event, Change):
            same = (
                event.run is not None
                and event.run.operation_id == run.operation_id
                and event.run.fencing_token == run.fencing_token
            )
            return event.reason if same and event.kind == "released" else None
        if isinstance(event, Snapshot):
            for state in event.guards:
                if state.guard == run.guard and not any(
                    h.fencing_token == run.fencing_token for h in state.holders
                ):
                    return "not a holder any more"
        return None
