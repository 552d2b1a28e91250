"""Every error the RunGuard client raises, in one tree, the one table that maps a gRPC
status code to its class, and the function that turns a failed call's status into one.

Like connect's ``ConnectError``, every error carries ``code``, the ``grpc.StatusCode`` it
stands for: the status of the failed call, or for an error found by the client itself
(a watch saw the slot go, the Watch stream ended) the status that means the same. Only
``RunRejected`` (Begin answered with a refusal) and ``Cancelled`` (somebody asked the run
to stop) stand for no failed call: their ``code`` is None.

::

    RunGuardError                                                   code
    ├── RunRejected         Begin was refused: reason "in_flight",  None
    │                       "duplicate", "wait_timeout" or "queue_full"
    │                       (a typed outcome, not a fault)
    ├── LeaseLost           the run no longer holds its slot        NOT_FOUND
    │   └── RunNotFound     GetRun or Cancel: no such run           NOT_FOUND
    ├── Cancelled           ``holding.check()``: asked to stop      None
    ├── InvalidArgument     with the server's field violations      INVALID_ARGUMENT
    ├── PermissionDenied    wrong lease token, or a role it lacks   PERMISSION_DENIED
    ├── Unauthenticated     no credentials, or unknown ones         UNAUTHENTICATED
    ├── AlreadyExists       operation_id reused for another run     ALREADY_EXISTS
    ├── ResourceExhausted   a server limit: watchers, guards, size  RESOURCE_EXHAUSTED
    ├── Unavailable         after the retries: server or store down UNAVAILABLE
    └── CallFailed          any other status                        its own
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Self

import grpc
from google.rpc import error_details_pb2, status_pb2

from runguard.client.hints import with_hint
from runguard.contract import DETAILS_KEY

if TYPE_CHECKING:
    from runguard.client.models import Run

__all__ = [
    "ERRORS",
    "AlreadyExists",
    "CallFailed",
    "Cancelled",
    "InvalidArgument",
    "LeaseLost",
    "PermissionDenied",
    "ResourceExhausted",
    "RunGuardError",
    "RunNotFound",
    "RunRejected",
    "Unauthenticated",
    "Unavailable",
    "error_from_status",
]


Trailers = Sequence[tuple[str, str | bytes]]
"""A failed call's trailing metadata."""


@dataclass(frozen=True, slots=True)
class _Status:
    """What a failed call ended with, and whether its channel used TLS."""

    code: grpc.StatusCode
    message: str
    trailers: Trailers | None
    tls: bool


class RunGuardError(Exception):
    """The root of every error the client raises.

    Attributes:
        message: a sentence for people (the server's status message, when it sent one).
        code: the ``grpc.StatusCode`` the error stands for; None when no failed call
            stands behind it (``RunRejected``, ``Cancelled``).
    """

    code: grpc.StatusCode | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @classmethod
    def _from_status(cls, status: _Status) -> Self:
        """The error of this class for a failed call (subclasses read more of it)."""
        return cls(status.message)


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

    code = grpc.StatusCode.NOT_FOUND

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

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, message: str, violations: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.violations = tuple(violations)

    @classmethod
    def _from_status(cls, status: _Status) -> Self:
        return cls(status.message, _violations(status.trailers))


class PermissionDenied(RunGuardError):
    """The lease token does not match the run, or the caller's roles do not allow the call."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(RunGuardError):
    """The server needs credentials (a client certificate or a bearer token) it did not get."""

    code = grpc.StatusCode.UNAUTHENTICATED


class AlreadyExists(RunGuardError):
    """The operation_id names a live run of another submission."""

    code = grpc.StatusCode.ALREADY_EXISTS


class ResourceExhausted(RunGuardError):
    """The server is at one of its limits: the caller's Watch streams, the guards the
    store may hold, or the size of a request; the message names which."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(RunGuardError):
    """The server could not be reached (or its store), also after retrying."""

    code = grpc.StatusCode.UNAVAILABLE

    @classmethod
    def _from_status(cls, status: _Status) -> Self:
        return cls(with_hint(status.message, tls=status.tls))


class CallFailed(RunGuardError):
    """Any other gRPC failure; ``code`` says which."""

    def __init__(self, message: str, code: grpc.StatusCode) -> None:
        super().__init__(message)
        self.code = code

    @classmethod
    def _from_status(cls, status: _Status) -> Self:
        return cls(status.message, status.code)


ERRORS: Mapping[grpc.StatusCode, type[RunGuardError]] = MappingProxyType(
    {
        grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
        grpc.StatusCode.NOT_FOUND: LeaseLost,
        grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
        grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
        grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
        grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
        grpc.StatusCode.UNAVAILABLE: Unavailable,
    }
)
"""The client error of each status code; any other code is a ``CallFailed``."""


def _violations(trailers: Trailers | None) -> list[tuple[str, str]]:
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
    trailers: Trailers | None = None,
    *,
    tls: bool = False,
) -> RunGuardError:
    """The client error for a failed call's status code, message and trailing metadata.

    ``tls`` says whether the channel used TLS: an UNAVAILABLE that looks like a TLS
    mismatch gets a hint naming the setting to change.
    """
    kind = ERRORS.get(code, CallFailed)
    return kind._from_status(_Status(code, details or code.name, trailers, tls))
