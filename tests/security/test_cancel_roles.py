"""Who may cancel a run, over a real connection with bearer tokens: its own principal or an
admin; anybody else is PERMISSION_DENIED and changes nothing."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

from runguard.v1 import runguard_pb2 as pb
from tests.integration.support import begin_request
from tests.security.conftest import Caller

CANCEL = pb.CancelRequest(guard="generate", operation_id="op-held", reason="stop")


@pytest.mark.parametrize(
    ("who", "code"),
    [
        pytest.param("runner", grpc.StatusCode.OK, id="its-own-principal"),
        pytest.param("admin", grpc.StatusCode.OK, id="admin"),
        pytest.param("both", grpc.StatusCode.PERMISSION_DENIED, id="another-run-principal"),
        pytest.param("watcher", grpc.StatusCode.PERMISSION_DENIED, id="watch-role"),
    ],
)
async def test_only_the_holder_or_an_admin_may_cancel(
    as_: Callable[[str], Caller], who: str, code: grpc.StatusCode
) -> None:
    """Cancel of worker-7's run: worker-7 and ops may; ci (run) and dashboard (watch) may not."""
    await as_("runner")("Begin", begin_request("op-held"))
    before = await as_("admin")("Current", pb.CurrentRequest(guard="generate"))

    details = ""
    try:
        reply = await as_(who)("Cancel", CANCEL)
        got = grpc.StatusCode.OK
    except grpc.aio.AioRpcError as error:
        got, details = error.code(), error.details() or ""

    assert got == code
    if who == "both":
        assert "belongs to principal 'worker-7'" in details
    after = await as_("admin")("Current", pb.CurrentRequest(guard="generate"))
    if code is grpc.StatusCode.OK:
        assert reply.run.cancel_requested
        assert reply.run.cancelled_by == {"runner": "worker-7", "admin": "ops"}[who]
    else:
        assert after.revision == before.revision
        assert not after.state.holders[0].cancel_requested


async def test_get_run_is_open_to_watchers(as_: Callable[[str], Caller]) -> None:
    """A dashboard with the watch role may look a run up with GetRun (but not cancel it)."""
    await as_("runner")("Begin", begin_request("op-held"))

    reply = await as_("watcher")(
        "GetRun", pb.GetRunRequest(guard="generate", operation_id="op-held")
    )

    assert reply.run.principal == "worker-7"
