"""Request validation: every bad field is named, and nothing runs until all are good.

Each ``parse_*`` function turns a request into plain validated values or
raises :class:`InvalidArgument` listing one violation per bad field (field
names as in the proto; a map entry or list item as ``labels['color']``, ``guards[1]``).
"""

from __future__ import annotations

import base64
import math
import unicodedata
from dataclasses import dataclass
from typing import Protocol

from google.protobuf import duration_pb2, struct_pb2

from runguard.contract import JSONValue, canonical_json, fingerprint, key_fingerprint
from runguard.server.config import DEFAULT_GUARD, ServerConfig
from runguard.server.core import (
    CAPACITY_MAX,
    Labels,
    RunOutcome,
    RunProgress,
)
from runguard.server.errors import FieldViolation, InvalidArgument
from runguard.server.limits import (
    CANCEL_REASON_MAX_CHARS,
    DEDUP_WINDOW_MAX,
    EPOCH_MAX_CHARS,
    GUARD_PATTERN,
    IDEMPOTENCY_KEY_MAX_CHARS,
    LABEL_KEY_PATTERN,
    LABEL_VALUE_MAX_CHARS,
    LABELS_MAX,
    LEASE_TOKEN_MAX_CHARS,
    LIST_PAGE_DEFAULT,
    LIST_PAGE_MAX,
    MAX_QUEUE_MAX,
    OPERATION_ID_PATTERN,
    PAYLOAD_MAX_BYTES,
    PAYLOAD_MAX_DEPTH,
    PROGRESS_MESSAGE_MAX_CHARS,
    RESULT_MAX_BYTES,
    ROUTE_MAX_CHARS,
    WATCH_GUARDS_MAX,
)
from runguard.v1 import runguard_pb2 as pb

__all__ = [
    "BeginArgs",
    "CancelArgs",
    "ConfigureArgs",
    "EndArgs",
    "KeepAliveArgs",
    "ListArgs",
    "RunArgs",
    "WatchArgs",
    "parse_begin",
    "parse_cancel",
    "parse_configure",
    "parse_current",
    "parse_end",
    "parse_get_run",
    "parse_keep_alive",
    "parse_list",
    "parse_watch",
]

_OUTCOMES: dict[int, RunOutcome] = {
    pb.RUN_OUTCOME_SUCCEEDED: RunOutcome.SUCCEEDED,
    pb.RUN_OUTCOME_FAILED: RunOutcome.FAILED,
    pb.RUN_OUTCOME_CANCELLED: RunOutcome.CANCELLED,
}


def _secs(value: float) -> str:
    """Seconds written out in full (no exponent), so a value just past a limit reads apart
    from it: 2592001, not 2.592e+06."""
    return f"{value:.9f}".rstrip("0").rstrip(".")


class _NamesRun(Protocol):
    """A request naming one run: its guard and operation id."""

    @property
    def guard(self) -> str: ...
    @property
    def operation_id(self) -> str: ...


class _Checker:
    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def bad(self, field: str, description: str) -> None:
        self.violations.append(FieldViolation(field, description))

    def done(self) -> None:
        if self.violations:
            raise InvalidArgument(self.violations)

    def guard(self, field: str, value: str) -> str:
        if value == "":
            return DEFAULT_GUARD
        if not GUARD_PATTERN.fullmatch(value):
            self.bad(field, "must be 1 to 128 characters of letters, digits and ._:/-")
        return value

    def run(self, request: _NamesRun) -> tuple[str, str]:
        """The guard and the (required) operation id of a request about one run."""
        guard = self.guard("guard", request.guard)
        return guard, self.operation_id("operation_id", request.operation_id, required=True)

    def operation_id(self, field: str, value: str, *, required: bool) -> str:
        if value == "" and not required:
            return value
        if not OPERATION_ID_PATTERN.fullmatch(value):
            self.bad(field, "must be 1 to 128 characters of letters, digits and ._:/@-")
        return value

    def text(self, field: str, value: str, limit: int) -> str:
        if len(value) > limit:
            self.bad(field, f"must be at most {limit} characters, got {len(value)}")
        elif any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
            self.bad(field, "must not contain control characters")
        return value

    def lease_token(self, value: str, *, required: bool) -> str:
        if required and not value:
            self.bad("lease_token", "is required (the token Begin returned)")
        elif len(value) > LEASE_TOKEN_MAX_CHARS:
            self.bad("lease_token", f"must be at most {LEASE_TOKEN_MAX_CHARS} characters")
        return value

    def duration(
        self, field: str, value: duration_pb2.Duration, *, low: float, high: float, open_low: bool
    ) -> float | None:
        if value.seconds and value.nanos and (value.seconds < 0) != (value.nanos < 0):
            self.bad(field, "seconds and nanos must have the same sign")
            return None
        if not -999_999_999 <= value.nanos <= 999_999_999:
            self.bad(field, "nanos must be within ±999,999,999")
            return None
        seconds = value.seconds + value.nanos / 1e9
        too_low = seconds <= low if open_low else seconds < low
        if too_low or seconds > high:
            left = "(" if open_low else "["
            self.bad(
                field, f"must be in {left}{_secs(low)}s, {_secs(high)}s], got {_secs(seconds)}s"
            )
            return None
        return seconds

    def labels(self, labels: dict[str, str]) -> Labels:
        if len(labels) > LABELS_MAX:
            self.bad("labels", f"must have at most {LABELS_MAX} entries, got {len(labels)}")
            return ()
        for key, value in labels.items():
            if not LABEL_KEY_PATTERN.fullmatch(key):
                self.bad(
                    f"labels[{key[:64]!r}]",
                    "key must be 1 to 63 characters of letters, digits and ._/-",
                )
            self.text(f"labels[{key[:64]!r}]", value, LABEL_VALUE_MAX_CHARS)
        return tuple(sorted(labels.items()))

    def payload(
        self, value: struct_pb2.Value, field: str = "payload", limit: int = PAYLOAD_MAX_BYTES
    ) -> JSONValue:
        size = value.ByteSize()
        if size > limit:
            self.bad(field, f"must be at most {limit} bytes, got {size}")
            return None
        try:
            return _json(value, 0)
        except ValueError as error:
            self.bad(field, str(error))
            return None

    def outcome(self, value: int) -> RunOutcome | None:
        if value == pb.RUN_OUTCOME_UNSPECIFIED:
            return None
        found = _OUTCOMES.get(value)
        if found is None:
            self.bad("outcome", f"must be SUCCEEDED, FAILED or CANCELLED (or unset), got {value}")
        return found

    def progress(self, value: pb.RunProgress) -> RunProgress:
        fraction = value.fraction if value.HasField("fraction") else None
        if fraction is not None and not 0 <= fraction <= 1:  # NaN fails both comparisons
            self.bad("progress.fraction", f"must be a number in [0, 1], got {fraction!r}")
        message = self.text("progress.message", value.message, PROGRESS_MESSAGE_MAX_CHARS)
        if fraction is None and not message:
            self.bad("progress", "set fraction, message or both")
        return RunProgress(fraction=fraction, message=message)


def _json(value: struct_pb2.Value, depth: int) -> JSONValue:
    """``value`` as plain JSON; ``depth`` is how many lists and objects enclose it."""
    kind = value.WhichOneof("kind")
    if kind in ("list_value", "struct_value") and depth >= PAYLOAD_MAX_DEPTH:
        raise ValueError(f"must be at most {PAYLOAD_MAX_DEPTH} levels deep")
    if kind == "null_value":
        return None
    if kind == "bool_value":
        return value.bool_value
    if kind == "number_value":
        if not math.isfinite(value.number_value):
            raise ValueError("numbers must be finite (JSON has no NaN or Infinity)")
        return value.number_value
    if kind == "string_value":
        return value.string_value
    if kind == "list_value":
        return [_json(item, depth + 1) for item in value.list_value.values]
    if kind == "struct_value":
        return {k: _json(v, depth + 1) for k, v in value.struct_value.fields.items()}
    raise ValueError("a value has no kind set (null, bool, number, string, list or object)")


@dataclass(frozen=True, slots=True)
class BeginArgs:
    """A valid Begin; ``operation_id`` is "" when the server must make one."""

    guard: str
    operation_id: str
    fingerprint: str
    ttl: float | None
    wait: float
    labels: Labels
    resume_only: bool = False


def parse_begin(request: pb.BeginRequest, config: ServerConfig) -> BeginArgs:
    """Validate a Begin. Raises InvalidArgument naming each bad field."""
    check = _Checker()
    guard = check.guard("guard", request.guard)
    operation_id = check.operation_id("operation_id", request.operation_id, required=False)
    route = check.text("route", request.route, ROUTE_MAX_CHARS)
    submission = request.WhichOneof("submission")
    if submission == "idempotency_key":
        key = check.text("idempotency_key", request.idempotency_key, IDEMPOTENCY_KEY_MAX_CHARS)
        if not key:
            check.bad("idempotency_key", "must not be empty when set")
        digest = key_fingerprint(route, key)
    else:
        payload = check.payload(request.payload) if submission == "payload" else None
        digest = fingerprint(route, payload)
    ttl = (
        check.duration("ttl", request.ttl, low=0, high=config.max_ttl, open_low=True)
        if request.HasField("ttl")
        else None
    )
    wait = (
        check.duration("wait", request.wait, low=0, high=config.max_wait, open_low=False)
        if request.HasField("wait")
        else 0.0
    )
    labels = check.labels(dict(request.labels))
    if request.resume_only and not request.operation_id:
        check.bad("operation_id", "is required with resume_only (the run to pick up)")
    check.done()
    return BeginArgs(guard, operation_id, digest, ttl, wait or 0.0, labels, request.resume_only)


@dataclass(frozen=True, slots=True)
class EndArgs:
    """A valid End; ``result`` is canonical JSON text ("" when none was given)."""

    guard: str
    operation_id: str
    lease_token: str
    force: bool
    outcome: RunOutcome | None = None
    result: str = ""


def parse_end(request: pb.EndRequest) -> EndArgs:
    """Validate an End. Raises InvalidArgument naming each bad field."""
    check = _Checker()
    guard, operation_id = check.run(request)
    token = check.lease_token(request.lease_token, required=not request.force)
    outcome = check.outcome(request.outcome)
    result = ""
    if request.HasField("result"):
        violations = len(check.violations)
        value = check.payload(request.result, "result", RESULT_MAX_BYTES)
        if len(check.violations) == violations:
            result = canonical_json(value)
    check.done()
    return EndArgs(guard, operation_id, token, request.force, outcome, result)


@dataclass(frozen=True, slots=True)
class KeepAliveArgs:
    """A valid KeepAlive."""

    guard: str
    operation_id: str
    lease_token: str
    ttl: float | None
    progress: RunProgress | None = None


def parse_keep_alive(request: pb.KeepAliveRequest, config: ServerConfig) -> KeepAliveArgs:
    """Validate a KeepAlive. Raises InvalidArgument naming each bad field."""
    check = _Checker()
    guard, operation_id = check.run(request)
    token = check.lease_token(request.lease_token, required=True)
    ttl = (
        check.duration("ttl", request.ttl, low=0, high=config.max_ttl, open_low=True)
        if request.HasField("ttl")
        else None
    )
    progress = check.progress(request.progress) if request.HasField("progress") else None
    check.done()
    return KeepAliveArgs(guard, operation_id, token, ttl, progress)


@dataclass(frozen=True, slots=True)
class CancelArgs:
    """A valid Cancel."""

    guard: str
    operation_id: str
    reason: str


def parse_cancel(request: pb.CancelRequest) -> CancelArgs:
    """Validate a Cancel. Raises InvalidArgument naming each bad field."""
    check = _Checker()
    guard, operation_id = check.run(request)
    reason = check.text("reason", request.reason, CANCEL_REASON_MAX_CHARS)
    check.done()
    return CancelArgs(guard, operation_id, reason)


@dataclass(frozen=True, slots=True)
class RunArgs:
    """A valid GetRun."""

    guard: str
    operation_id: str


def parse_get_run(request: pb.GetRunRequest) -> RunArgs:
    """Validate a GetRun. Raises InvalidArgument naming each bad field."""
    check = _Checker()
    guard, operation_id = check.run(request)
    check.done()
    return RunArgs(guard, operation_id)


def parse_current(request: pb.CurrentRequest) -> str:
    """Validate a Current; returns the guard. Raises InvalidArgument."""
    check = _Checker()
    guard = check.guard("guard", request.guard)
    check.done()
    return guard


@dataclass(frozen=True, slots=True)
class WatchArgs:
    """A valid Watch; ``guards`` None means every guard."""

    guards: tuple[str, ...] | None
    after_revision: int
    epoch: str


def parse_watch(request: pb.WatchRequest) -> WatchArgs:
    """Validate a Watch. Raises InvalidArgument naming each bad field."""
    check = _Checker()
    if len(request.guards) > WATCH_GUARDS_MAX:
        check.bad("guards", f"must name at most {WATCH_GUARDS_MAX} guards")
    guards = [check.guard(f"guards[{i}]", name) for i, name in enumerate(request.guards)]
    if request.after_revision < 0:
        check.bad("after_revision", "must not be negative")
    if len(request.epoch) > EPOCH_MAX_CHARS:
        check.bad("epoch", f"must be at most {EPOCH_MAX_CHARS} characters")
    check.done()
    unique = tuple(dict.fromkeys(guards)) or None
    return WatchArgs(unique, request.after_revision, request.epoch)


@dataclass(frozen=True, slots=True)
class ConfigureArgs:
    """A valid ConfigureGuard: the fields to change (None keeps), or ``reset``."""

    guard: str
    capacity: int | None
    dedup_window: float | None
    max_queue: int | None
    reset: bool


def parse_configure(request: pb.ConfigureGuardRequest) -> ConfigureArgs:
    """Validate a ConfigureGuard. Raises InvalidArgument naming each bad field."""
    check = _Checker()
    guard = check.guard("guard", request.guard)
    capacity = request.capacity if request.HasField("capacity") else None
    if capacity is not None and not 1 <= capacity <= CAPACITY_MAX:
        check.bad("capacity", f"must be 1 to {CAPACITY_MAX}, got {capacity}")
    window = (
        check.duration(
            "dedup_window", request.dedup_window, low=0, high=DEDUP_WINDOW_MAX, open_low=False
        )
        if request.HasField("dedup_window")
        else None
    )
    max_queue = request.max_queue if request.HasField("max_queue") else None
    if max_queue is not None and max_queue > MAX_QUEUE_MAX:
        check.bad("max_queue", f"must be 0 to {MAX_QUEUE_MAX}, got {max_queue}")
    changes = capacity is not None or request.HasField("dedup_window") or max_queue is not None
    if request.reset and changes:
        check.bad("reset", "cannot be combined with capacity, dedup_window or max_queue")
    elif not request.reset and not changes:
        check.bad("capacity", "set capacity, dedup_window or max_queue (or reset)")
    check.done()
    return ConfigureArgs(guard, capacity, window, max_queue, request.reset)


@dataclass(frozen=True, slots=True)
class ListArgs:
    """A valid ListGuards: list guards named after ``after``, ``limit`` of them."""

    after: str
    limit: int


def page_token(last_guard: str) -> str:
    """The opaque token that continues a ListGuards after ``last_guard``."""
    return base64.urlsafe_b64encode(f"after:{last_guard}".encode()).decode().rstrip("=")


def parse_list(request: pb.ListGuardsRequest) -> ListArgs:
    """Validate a ListGuards. Raises InvalidArgument naming each bad field."""
    check = _Checker()
    limit = request.page_size or LIST_PAGE_DEFAULT
    if not 1 <= limit <= LIST_PAGE_MAX:
        check.bad("page_size", f"must be 0 (for {LIST_PAGE_DEFAULT}) to {LIST_PAGE_MAX}")
    after = ""
    if request.page_token:
        token = request.page_token
        try:
            text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            text = ""
        name = text.removeprefix("after:")
        if not text.startswith("after:") or not GUARD_PATTERN.fullmatch(name):
            check.bad("page_token", "is not a next_page_token of ListGuards")
        after = name
    check.done()
    return ListArgs(after, limit)
