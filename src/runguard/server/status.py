"""The one place that maps RunGuard's errors to gRPC status codes.

``INVALID_ARGUMENT`` carries a ``google.rpc.BadRequest`` detail with one field
violation per bad field (grpcurl prints it, since the server imports its type).
The HTTP front (Connect, gRPC-Web) turns the same status into a Connect error
with :func:`connect_error`: the same code, message and details.
"""

from __future__ import annotations

import grpc
from connectrpc.code import Code
from connectrpc.errors import ConnectError, ErrorDetail
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from protobuf import wkt

from runguard.contract import DETAILS_KEY
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

__all__ = ["CODES", "connect_error", "connect_error_of", "status_of"]

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


def connect_error(
    code: grpc.StatusCode, message: str, trailers: tuple[tuple[str, bytes], ...] = ()
) -> ConnectError:
    """The Connect error of a call that gRPC would end with ``code``, ``message`` and
    ``trailers`` (as :func:`status_of` gives them): the same code, message and details."""
    name = "CANCELED" if code is grpc.StatusCode.CANCELLED else code.name
    details = []
    for key, value in trailers:
        if key == DETAILS_KEY:
            for detail in status_pb2.Status.FromString(value).details:
                # connectrpc's own protobuf runtime takes the detail as an Any it can
                # carry unread (packing a google.protobuf message fails there).
                details.append(ErrorDetail(wkt.Any(type_url=detail.type_url, value=detail.value)))
    return ConnectError(Code[name], message, details=details)


def connect_error_of(error: RunGuardError) -> ConnectError:
    """The Connect error a call ending in ``error`` returns over HTTP."""
    return connect_error(*status_of(error))
