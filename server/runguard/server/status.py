"""The one place that maps RunGuard's errors to gRPC status codes.

``INVALID_ARGUMENT`` carries a ``google.rpc.BadRequest`` detail with one field
violation per bad field (grpcurl prints it, since the server imports its type).
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from runguard.server.errors import (
    InvalidArgument,
    LeaseLost,
    LeaseMismatch,
    NotPermitted,
    OperationConflict,
    RunGuardError,
    RunNotFound,
    ShuttingDown,
    StoreUnavailable,
    TooManyGuards,
    TooManyWatchers,
    Unauthenticated,
)

__all__ = ["CODES", "status_of"]

CODES: dict[type[RunGuardError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    LeaseLost: grpc.StatusCode.NOT_FOUND,
    LeaseMismatch: grpc.StatusCode.PERMISSION_DENIED,
    NotPermitted: grpc.StatusCode.PERMISSION_DENIED,
    OperationConflict: grpc.StatusCode.ALREADY_EXISTS,
    RunNotFound: grpc.StatusCode.NOT_FOUND,
    TooManyWatchers: grpc.StatusCode.RESOURCE_EXHAUSTED,
    TooManyGuards: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    ShuttingDown: grpc.StatusCode.UNAVAILABLE,
    StoreUnavailable: grpc.StatusCode.UNAVAILABLE,
}
"""Every error a call may end with; anything else is INTERNAL (and logged)."""

DETAILS_KEY = "grpc-status-details-bin"


def status_of(error: RunGuardError) -> tuple[grpc.StatusCode, str, tuple[tuple[str, bytes], ...]]:
    """The code, message and trailing metadata a call ending in ``error`` returns."""
    code = next(
        (c for kind, c in CODES.items() if isinstance(error, kind)), grpc.StatusCode.INTERNAL
    )
    message = str(error)
    if not isinstance(error, InvalidArgument):
        return code, message, ()
    bad_request = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in error.violations
        ]
    )
    detail = any_pb2.Any()
    detail.Pack(bad_request)
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=message, details=[detail])
    return code, message, ((DETAILS_KEY, status.SerializeToString()),)
