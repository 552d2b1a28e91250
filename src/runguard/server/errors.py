"""Every error RunGuard's server raises, in one tree.

The servicer maps these to gRPC status codes through one table
(``runguard.server.status``); stores wrap their library's errors into
``StoreUnavailable`` with ``raise ... from``, so nothing else leaks out.

::

    RunGuardError
    ├── InvalidArgument        INVALID_ARGUMENT, with one FieldViolation per bad field
    ├── LeaseLost              NOT_FOUND: the run no longer holds its slot
    ├── LeaseMismatch          PERMISSION_DENIED: wrong lease token for a live run
    ├── RunNotFound            NOT_FOUND: GetRun or Cancel of a run the guard does not know
    ├── OperationConflict      ALREADY_EXISTS: operation_id names another submission
    ├── Unauthenticated        UNAUTHENTICATED: no credentials, or ones the server does not know
    ├── NotPermitted           PERMISSION_DENIED: the principal lacks the role the call needs
    ├── TooManyWatchers        RESOURCE_EXHAUSTED: the principal has too many Watch streams open
    ├── TooManyGuards          RESOURCE_EXHAUSTED: the store holds max_guards guards
    ├── ShuttingDown           UNAVAILABLE: the server is draining
    └── StoreError
        ├── StoreUnavailable   UNAVAILABLE: the store cannot be reached
        └── VersionConflict    never leaves the server: a compare-and-swap lost, retried
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "FieldViolation",
    "InvalidArgument",
    "LeaseLost",
    "LeaseMismatch",
    "NotPermitted",
    "OperationConflict",
    "RunGuardError",
    "RunNotFound",
    "ShuttingDown",
    "StoreError",
    "StoreUnavailable",
    "TooManyGuards",
    "TooManyWatchers",
    "Unauthenticated",
    "VersionConflict",
]


class RunGuardError(Exception):
    """The root of every error RunGuard raises on purpose."""


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request: its name (as in the proto) and what is wrong."""

    field: str
    description: str


class InvalidArgument(RunGuardError):
    """A request broke a documented limit; nothing was changed."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        self.violations = tuple(violations)
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in self.violations))


class LeaseLost(RunGuardError):
    """The run does not hold its slot any more (ended, expired, force-ended, unknown)."""

    def __init__(self, guard: str, operation_id: str, reason: str) -> None:
        self.guard = guard
        self.operation_id = operation_id
        self.reason = reason
        super().__init__(f"run {operation_id!r} of guard {guard!r} holds no slot: {reason}")


class RunNotFound(RunGuardError):
    """No run of that operation_id is live or kept (ended runs last as long as their dedup
    entry)."""

    def __init__(self, guard: str, operation_id: str, reason: str) -> None:
        self.guard = guard
        self.operation_id = operation_id
        self.reason = reason
        super().__init__(f"run {operation_id!r} of guard {guard!r} is not known: {reason}")


class LeaseMismatch(RunGuardError):
    """The lease token does not match the live run it names."""

    def __init__(self, guard: str, operation_id: str) -> None:
        self.guard = guard
        self.operation_id = operation_id
        super().__init__(f"wrong lease_token for run {operation_id!r} of guard {guard!r}")


class OperationConflict(RunGuardError):
    """The operation_id already names a live or queued run with another submission
    (or, with authentication on, of another principal)."""

    def __init__(
        self, guard: str, operation_id: str, *, detail: str = "with a different submission"
    ) -> None:
        self.guard = guard
        self.operation_id = operation_id
        super().__init__(
            f"operation_id {operation_id!r} already names a run of guard {guard!r} "
            f"{detail}; use a new operation_id"
        )


class Unauthenticated(RunGuardError):
    """The call carries no credentials the server accepts; nothing was looked at."""


class NotPermitted(RunGuardError):
    """The caller is known, but none of its roles allows what it asked for."""


class TooManyWatchers(RunGuardError):
    """A principal asked for one more Watch stream than it may hold open at once."""

    def __init__(self, principal: str, limit: int) -> None:
        self.principal = principal
        self.limit = limit
        super().__init__(
            f"principal {principal!r} already has {limit} Watch streams open, its limit; "
            "close one first"
        )


class TooManyGuards(RunGuardError):
    """Storing one more guard would pass the server's ``max_guards``."""

    def __init__(self, guard: str, limit: int) -> None:
        self.guard = guard
        self.limit = limit
        super().__init__(
            f"guard {guard!r} cannot be created: the store holds {limit} guards, the limit "
            "(--max-guards); idle guards are reclaimed once their dedup window passes"
        )


class ShuttingDown(RunGuardError):
    """The server is draining; reconnect to another replica or retry later."""


class StoreError(RunGuardError):
    """Something went wrong in a store."""


class StoreUnavailable(StoreError):
    """The store cannot be reached; nothing was applied."""


class VersionConflict(StoreError):
    """A compare-and-swap found a newer version of the guard; the command is retried."""
