"""Every error the RunGuard client raises, in one tree, and the one function
that turns a gRPC status into one of them.

::

    RunGuardError
    ├── RunRejected         Begin was refused: reason "in_flight", "duplicate",
    │                       "wait_timeout" or "queue_full" (a typed outcome, not a fault)
    ├── LeaseLost           the run no longer holds its slot (NOT_FOUND, or seen by a watch)
    │   └── RunNotFound     GetRun or Cancel: the guard knows no such run (NOT_FOUND)
    ├── Cancelled           ``holding.check()``: somebody asked the run to stop
    ├── InvalidArgument     INVALID_ARGUMENT, with the server's field violations
    ├── PermissionDenied    PERMISSION_DENIED: wrong lease token, or a role the caller lacks
    ├── Unauthenticated     UNAUTHENTICATED: no credentials, or ones the server does not know
    ├── AlreadyExists       ALREADY_EXISTS: operation_id reused for another submission
    ├── Unavailable         UNAVAILABLE after the retries: server or store down
    └── CallFailed          any other status (DEADLINE_EXCEEDED, INTERNAL, ...)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import grpc
from google.rpc import error_details_pb2, status_pb2

from runguard.client._hints import with_hint
from runguard.contract import DETAILS_KEY

if TYPE_CHECKING:
    from runguard.client.models import Run

__all__ = [
    "AlreadyExists",
    "CallFailed",
    "Cancelled",
    "InvalidArgument",
    "LeaseLost",
    "PermissionDenied",
    "RunGuardError",
    "RunNotFound",
    "RunRejected",
    "Unauthenticated",
    "Unavailable",
    "error_from_status",
]


class RunGuardError(Exception):
    """The root of every error the client raises."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RunRejected(RunGuardError):
    """Begin was refused. The signature starts like the seed's ``RunRejected``.

    Attributes:
        reason: ``"in_flight"``, ``"duplicate"``, ``"wait_timeout"`` or ``"queue_full"``.
        message: a sentence for people.
        operation_id: for ``in_flight``, the holder's operation_id (as the seed had it).
        holders: the runs holding the guard's slots.
        retry_after: seconds until trying again makes sense, when known.
        duplicate_of: for ``duplicate``, the run accepted earlier, when known.
    """

    def __init__(
        self,
        reason: str,
        message: str,
        operation_id: str | None = None,
        *,
        holders: Sequence[Run] = (),
        retry_after: float | None = None,
        duplicate_of: Run | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.operation_id = operation_id
        self.holders = tuple(holders)
        self.retry_after = retry_after
        self.duplicate_of = duplicate_of

    @property
    def earlier_state(self) -> str | None:
        """For ``duplicate``: "running" or "ended", the state of the run accepted earlier."""
        return None if self.duplicate_of is None else self.duplicate_of.state

    @property
    def earlier_outcome(self) -> str | None:
        """For ``duplicate``: how the earlier run ended ("succeeded", ...), when it has."""
        return None if self.duplicate_of is None else self.duplicate_of.outcome

    @property
    def earlier_result(self) -> object:
        """For ``duplicate``: the result the earlier run ended with (None if none yet)."""
        return None if self.duplicate_of is None else self.duplicate_of.result


class LeaseLost(RunGuardError):
    """The run holds no slot any more; a worker that gets this must stop."""

    def __init__(self, message: str, *, guard: str = "", operation_id: str = "") -> None:
        super().__init__(message)
        self.guard = guard
        self.operation_id = operation_id


class RunNotFound(LeaseLost):
    """GetRun or Cancel named a run the guard does not know (never granted, or ended longer
    ago than its dedup entry lasts)."""


class Cancelled(RunGuardError):
    """Somebody asked the run to stop (``Client.cancel``): wind down, and leave the ``run``
    block; it Ends the run with outcome "cancelled"."""

    def __init__(self, message: str, *, reason: str = "", by: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.by = by


class InvalidArgument(RunGuardError):
    """The server refused the request's fields; ``violations`` maps field -> description."""

    def __init__(self, message: str, violations: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.violations = tuple(violations)


class PermissionDenied(RunGuardError):
    """The lease token does not match the run, or the caller's roles do not allow the call."""


class Unauthenticated(RunGuardError):
    """The server needs credentials (a client certificate or a bearer token) it did not get."""


class AlreadyExists(RunGuardError):
    """The operation_id names a live run of another submission."""


class Unavailable(RunGuardError):
    """The server could not be reached (or its store), also after retrying."""


class CallFailed(RunGuardError):
    """Any other gRPC failure; ``code`` says which."""

    def __init__(self, message: str, code: grpc.StatusCode) -> None:
        super().__init__(message)
        self.code = code


def _violations(trailers: Sequence[tuple[str, str | bytes]] | None) -> list[tuple[str, str]]:
    for key, raw in trailers or ():
        if key != DETAILS_KEY or not isinstance(raw, bytes):
            continue
        status = status_pb2.Status.FromString(raw)
        found: list[tuple[str, str]] = []
        for detail in status.details:
            bad_request = error_details_pb2.BadRequest()
            if detail.Unpack(bad_request):
                found.extend((v.field, v.description) for v in bad_request.field_violations)
        return found
    return []


def error_from_status(
    code: grpc.StatusCode,
    details: str | None,
    trailers: Sequence[tuple[str, str | bytes]] | None = None,
    *,
    tls: bool = False,
) -> RunGuardError:
    """The client error for a failed call's status code, message and trailing metadata.

    ``tls`` says whether the channel used TLS: an UNAVAILABLE that looks like a TLS
    mismatch gets a hint naming the setting to change.
    """
    message = details or code.name
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(message, _violations(trailers))
    if code is grpc.StatusCode.NOT_FOUND:
        return LeaseLost(message)
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied(message)
    if code is grpc.StatusCode.UNAUTHENTICATED:
        return Unauthenticated(message)
    if code is grpc.StatusCode.ALREADY_EXISTS:
        return AlreadyExists(message)
    if code is grpc.StatusCode.UNAVAILABLE:
        return Unavailable(with_hint(message, tls=tls))
    return CallFailed(message, code)
