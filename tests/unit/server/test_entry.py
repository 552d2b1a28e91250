"""The entry point settles grpc's log level before grpc loads, leaving a chosen one alone."""

from __future__ import annotations

import pytest

from runguard.server.entry import quiet_grpc


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param({}, "NONE", id="silent-by-default"),
        pytest.param({"GRPC_VERBOSITY": "info"}, "info", id="chosen-level-kept"),
        pytest.param({"GRPC_TRACE": "http"}, "DEBUG", id="trace-needs-debug"),
        pytest.param({"GRPC_TRACE": "http", "GRPC_VERBOSITY": "error"}, "error", id="both-kept"),
    ],
)
def test_grpc_verbosity_is_none_unless_chosen(given: dict[str, str], expected: str) -> None:
    """GRPC_VERBOSITY becomes NONE when unset, DEBUG when only GRPC_TRACE is set, else stays."""
    env = dict(given)
    quiet_grpc(env)
    assert env["GRPC_VERBOSITY"] == expected
