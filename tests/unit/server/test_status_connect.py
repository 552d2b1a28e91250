"""The same table to Connect errors: one code per error, the same message and details."""

from __future__ import annotations

import grpc
import pytest
from connectrpc.code import Code
from google.rpc import error_details_pb2

from runguard.server.errors import FieldViolation, InvalidArgument, RunGuardError
from runguard.server.status import connect_error, connect_error_of, status_of
from tests.unit.server.test_status import EXPECTED


@pytest.mark.parametrize(
    ("error", "code"), [pytest.param(e, c, id=type(e).__name__) for e, c in EXPECTED]
)
def test_each_error_is_the_connect_code_of_its_grpc_code(
    error: RunGuardError, code: grpc.StatusCode
) -> None:
    """Every error of the table has the Connect code named as its gRPC code, and its message."""
    converted = connect_error_of(error)

    assert converted.code is Code[code.name]
    assert converted.message == status_of(error)[1]


ERROR_CODES = [c for c in grpc.StatusCode if c is not grpc.StatusCode.OK]


@pytest.mark.parametrize("code", ERROR_CODES, ids=lambda c: c.name)
def test_every_grpc_error_code_has_a_connect_code(code: grpc.StatusCode) -> None:
    """Each gRPC code converts to the Connect code of the same meaning (CANCELLED: canceled)."""
    expected = Code.CANCELED if code is grpc.StatusCode.CANCELLED else Code[code.name]

    assert connect_error(code, "m").code is expected


def test_field_violations_travel_as_one_bad_request_detail() -> None:
    """An INVALID_ARGUMENT's violations become one google.rpc.BadRequest detail, in order."""
    error = InvalidArgument([FieldViolation("guard", "bad"), FieldViolation("ttl", "too long")])

    (detail,) = connect_error_of(error).details

    assert detail.type_name == "google.rpc.BadRequest"
    bad = error_details_pb2.BadRequest.FromString(detail.message_bytes)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("guard", "bad"),
        ("ttl", "too long"),
    ]
