"""The client's status table: every code maps to one error class that carries the code,
and every code the server sends has a class of its own."""

from __future__ import annotations

import grpc
import pytest

from runguard.client import (
    CallFailed,
    Cancelled,
    LeaseLost,
    RunGuardError,
    RunNotFound,
    RunRejected,
    Unavailable,
)
from runguard.client.errors import ERRORS, error_from_status
from runguard.server.status import CODES

SERVER_CODES = sorted(set(CODES.values()), key=lambda code: code.name)


@pytest.mark.parametrize("code", SERVER_CODES, ids=lambda code: code.name)
def test_every_code_the_server_sends_has_a_class_of_its_own(code: grpc.StatusCode) -> None:
    """A status the server's error table can end a call with maps to a specific client
    class, never to the catch-all CallFailed."""
    assert ERRORS.get(code, CallFailed) is not CallFailed


def test_the_client_table_knows_no_code_the_server_never_sends() -> None:
    """Each code of the client's table is one the server's error table may send, so the two
    tables list the same codes."""
    assert set(ERRORS) == set(SERVER_CODES)


@pytest.mark.parametrize("code", list(grpc.StatusCode), ids=lambda code: code.name)
def test_every_status_becomes_its_class_with_its_code(code: grpc.StatusCode) -> None:
    """Any failed call's status becomes the table's class for it (CallFailed for the rest),
    carrying the code and the server's message."""
    error = error_from_status(code, "the details")
    assert type(error) is ERRORS.get(code, CallFailed)
    assert error.code is code
    assert error.message.startswith("the details")


@pytest.mark.parametrize("kind", list(dict.fromkeys(ERRORS.values())), ids=lambda k: k.__name__)
def test_each_class_stands_for_its_code_when_made_by_hand(kind: type[RunGuardError]) -> None:
    """An error the client makes itself (say, a watch saw the slot go) has the same code as
    the one a failed call ends with."""
    code = kind("m").code
    assert code is not None
    assert ERRORS[code] is kind


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(RunRejected("in_flight", "busy"), id="rejected"),
        pytest.param(Cancelled("asked to stop"), id="cancelled"),
    ],
)
def test_errors_no_failed_call_stands_behind_have_no_code(error: RunGuardError) -> None:
    """A refusal (Begin answered) and a cancel request (seen by the client) carry code None."""
    assert error.code is None


def test_run_not_found_is_a_lease_lost_with_its_code() -> None:
    """RunNotFound keeps LeaseLost's NOT_FOUND, so either handler sees the same code."""
    assert RunNotFound("gone").code is LeaseLost("gone").code is grpc.StatusCode.NOT_FOUND


def test_an_unavailable_made_by_the_client_says_unavailable() -> None:
    """An Unavailable raised without a status (the Watch stream ended) still says UNAVAILABLE."""
    assert Unavailable("the Watch stream ended").code is grpc.StatusCode.UNAVAILABLE
