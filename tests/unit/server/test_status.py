"""Errors to gRPC status codes: one table, and BadRequest details for bad requests."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2

from runguard.contract import DETAILS_KEY
from runguard.server.errors import (
    FieldViolation,
    InvalidArgument,
    LeaseLost,
    LeaseMismatch,
    NotPermitted,
    OperationConflict,
    RunGuardError,
    RunNotFound,
    ShuttingDown,
    StoreError,
    StoreUnavailable,
    TooManyGuards,
    TooManyWatchers,
    Unauthenticated,
    VersionConflict,
)
from runguard.server.status import CODES, status_of

EXPECTED: list[tuple[RunGuardError, grpc.StatusCode]] = [
    (InvalidArgument([FieldViolation("guard", "bad")]), grpc.StatusCode.INVALID_ARGUMENT),
    (LeaseLost("g", "op", "expired 1.0s ago"), grpc.StatusCode.NOT_FOUND),
    (LeaseMismatch("g", "op"), grpc.StatusCode.PERMISSION_DENIED),
    (RunNotFound("g", "op", "no such run"), grpc.StatusCode.NOT_FOUND),
    (OperationConflict("g", "op"), grpc.StatusCode.ALREADY_EXISTS),
    (Unauthenticated("unknown bearer token"), grpc.StatusCode.UNAUTHENTICATED),
    (NotPermitted("Begin needs the role run or admin"), grpc.StatusCode.PERMISSION_DENIED),
    (TooManyWatchers("alice", 3), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (TooManyGuards("g", 100_000), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ShuttingDown("server shutting down"), grpc.StatusCode.UNAVAILABLE),
    (StoreUnavailable("store down"), grpc.StatusCode.UNAVAILABLE),
]
"""One error of each class the table maps, and the code the contract gives it."""


class Unlisted(RunGuardError):
    """An error nobody added to the table."""


def test_every_mapped_error_class_has_an_expected_code() -> None:
    """The expectations below cover exactly the classes status.CODES maps."""
    assert {type(error) for error, _ in EXPECTED} == set(CODES)


@pytest.mark.parametrize(
    ("error", "code"), [pytest.param(e, c, id=type(e).__name__) for e, c in EXPECTED]
)
def test_error_maps_to_its_status_code_and_message(
    error: RunGuardError, code: grpc.StatusCode
) -> None:
    """Each error the server raises on purpose ends the call with its documented code and text."""
    got_code, message, _ = status_of(error)
    assert got_code == code
    assert message == str(error)


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(LeaseLost("g", "op", "ended"), id="LeaseLost"),
        pytest.param(StoreUnavailable("down"), id="StoreUnavailable"),
        pytest.param(Unlisted("surprise"), id="unlisted"),
    ],
)
def test_only_invalid_argument_carries_trailing_details(error: RunGuardError) -> None:
    """Errors other than InvalidArgument end with no trailing metadata."""
    assert status_of(error)[2] == ()


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(Unlisted("surprise"), id="unlisted-subclass"),
        pytest.param(RunGuardError("root"), id="root"),
        pytest.param(StoreError("generic"), id="StoreError"),
        pytest.param(VersionConflict("lost the race"), id="VersionConflict"),
    ],
)
def test_error_not_in_the_table_maps_to_internal(error: RunGuardError) -> None:
    """An error the table does not name (not even through a base class) is INTERNAL."""
    assert status_of(error)[0] == grpc.StatusCode.INTERNAL


def test_invalid_argument_details_list_each_violation_in_order() -> None:
    """INVALID_ARGUMENT's grpc-status-details-bin is a google.rpc.Status with a BadRequest."""
    violations = [
        FieldViolation("guard", "must be 1 to 128 characters"),
        FieldViolation("labels['bad key']", "key must be 1 to 63 characters"),
        FieldViolation("ttl", "must be in (0s, 60s], got 0s"),
    ]
    code, message, metadata = status_of(InvalidArgument(violations))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert [key for key, _ in metadata] == [DETAILS_KEY]
    assert DETAILS_KEY == "grpc-status-details-bin"
    status = status_pb2.Status.FromString(metadata[0][1])
    assert status.code == code_pb2.INVALID_ARGUMENT
    assert status.message == message
    assert len(status.details) == 1
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        (v.field, v.description) for v in violations
    ]
