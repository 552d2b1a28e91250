"""A run's life over a real socket: outcomes kept for duplicates and GetRun, progress
coalesced for watchers, and a cooperative Cancel that never frees a live job's slot."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message

from runguard.v1 import runguard_pb2 as pb
from tests.integration.support import (
    Stream,
    begin_request,
    end_request,
    keep_alive_request,
    value,
)
from tests.integration.test_bad_requests import _violations

RESULT = {"batch": "/out/2026-12-01/17", "files": 12}


def _progress(granted: pb.Granted, fraction: float | None = None, message: str = "") -> Any:
    request = keep_alive_request(granted)
    if fraction is not None:
        request.progress.fraction = fraction
    request.progress.message = message
    return request


async def _code(call: Any) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


async def test_a_duplicate_points_at_the_ended_run_with_its_outcome_and_result(
    running: Any,
) -> None:
    """After End(SUCCEEDED, result) a double submit is DUPLICATE showing that outcome and result."""
    granted = (await running.stub.Begin(begin_request("op-1", {"prompt": "cats"}))).granted
    end = end_request(granted)
    end.outcome = pb.RUN_OUTCOME_SUCCEEDED
    end.result.CopyFrom(value(RESULT))
    ended = await running.stub.End(end)
    assert ended.result == pb.END_RESULT_ENDED
    assert ended.run.state == pb.RUN_STATE_ENDED
    assert ended.run.end_reason == pb.RELEASE_REASON_ENDED
    assert ended.run.HasField("ended_at")

    again = await running.stub.Begin(begin_request("op-2", {"prompt": "cats"}))

    rejection = again.rejected
    assert rejection.reason == pb.REJECTION_REASON_DUPLICATE
    earlier = rejection.duplicate_of
    assert earlier.operation_id == "op-1"
    assert earlier.state == pb.RUN_STATE_ENDED
    assert earlier.outcome == pb.RUN_OUTCOME_SUCCEEDED
    assert json_format.MessageToDict(earlier.result) == RESULT
    assert earlier.ended_at == ended.run.ended_at


async def test_a_duplicate_of_a_live_run_shows_it_running_with_its_progress(running: Any) -> None:
    """A double submit while the first run works shows RUNNING and the latest progress."""
    granted = (await running.stub.Begin(begin_request("op-1", {"prompt": "dogs"}))).granted
    await running.stub.KeepAlive(_progress(granted, 0.25, "step 1 of 4"))

    again = await running.stub.Begin(begin_request("op-2", {"prompt": "dogs"}, wait=5))

    earlier = again.rejected.duplicate_of
    assert again.rejected.reason == pb.REJECTION_REASON_DUPLICATE
    assert earlier.state == pb.RUN_STATE_RUNNING
    assert "(operation_id=op-1, still running)" in again.rejected.message
    assert earlier.progress.fraction == 0.25
    assert earlier.progress.message == "step 1 of 4"
    assert not earlier.HasField("ended_at")


async def test_get_run_shows_live_and_ended_runs_but_never_the_lease_token(running: Any) -> None:
    """GetRun returns the live run, then the ended one with its outcome; no lease token in it."""
    granted = (await running.stub.Begin(begin_request("op-1"))).granted
    live = await running.stub.GetRun(pb.GetRunRequest(guard="generate", operation_id="op-1"))
    assert live.run.state == pb.RUN_STATE_RUNNING
    assert live.run.fencing_token == granted.run.fencing_token
    end = end_request(granted)
    end.outcome = pb.RUN_OUTCOME_FAILED
    await running.stub.End(end)

    gone = await running.stub.GetRun(pb.GetRunRequest(guard="generate", operation_id="op-1"))

    assert gone.run.state == pb.RUN_STATE_ENDED
    assert gone.run.outcome == pb.RUN_OUTCOME_FAILED
    assert not gone.run.HasField("result")
    for reply in (live, gone):
        assert granted.lease_token.encode() not in reply.SerializeToString()


async def test_get_run_of_a_run_nobody_knows_is_not_found_saying_so(running: Any) -> None:
    """GetRun of an operation_id the guard never had is NOT_FOUND, and the message says why."""
    code, details = await _code(
        running.stub.GetRun(pb.GetRunRequest(guard="generate", operation_id="nobody"))
    )
    assert code == grpc.StatusCode.NOT_FOUND
    assert "not known" in details
    assert "never granted" in details


async def test_an_ended_run_is_kept_as_long_as_its_dedup_entry(start_server: Any) -> None:
    """Once the dedup window since its start is over, GetRun is NOT_FOUND, saying so."""
    server = await start_server(dedup_window=0.3)
    granted = (await server.stub.Begin(begin_request("op-1"))).granted
    await server.stub.End(end_request(granted))
    request = pb.GetRunRequest(guard="generate", operation_id="op-1")
    assert (await server.stub.GetRun(request)).run.state == pb.RUN_STATE_ENDED
    await asyncio.sleep(0.4)

    code, details = await _code(server.stub.GetRun(request))

    assert code == grpc.StatusCode.NOT_FOUND
    # The guard had nothing else to keep, so it was reclaimed with its tombstones.
    assert "ended longer ago than the guard remembers" in details


async def test_end_of_an_operation_id_never_held_is_unknown_not_already_ended(
    running: Any,
) -> None:
    """End of a run the guard never had answers UNKNOWN; a run that really ended, ALREADY_ENDED."""
    granted = (await running.stub.Begin(begin_request("op-1"))).granted
    await running.stub.End(end_request(granted))

    again = await running.stub.End(end_request(granted))
    never = await running.stub.End(
        pb.EndRequest(guard="generate", operation_id="never-held", lease_token="x")
    )

    assert again.result == pb.END_RESULT_ALREADY_ENDED
    assert again.run.operation_id == "op-1"
    assert never.result == pb.END_RESULT_UNKNOWN
    assert not never.HasField("run")


async def test_progress_shows_in_current_and_reaches_watchers_coalesced(running: Any) -> None:
    """Fifty quick reports: Current and ListGuards show the latest at once; watchers get at
    most about one PROGRESSED change per second of reporting, and the last one carries the
    last report."""
    granted = (await running.stub.Begin(begin_request("op-1"))).granted
    stream = Stream(running.stub.Watch(pb.WatchRequest(guards=["generate"])))
    await stream.until(1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for step in range(1, 51):
        await running.stub.KeepAlive(_progress(granted, step / 50, f"step {step}"))
    reporting = loop.time() - started
    current = await running.stub.Current(pb.CurrentRequest(guard="generate"))
    assert current.state.holders[0].progress.message == "step 50"
    listed = await running.stub.ListGuards(pb.ListGuardsRequest())
    [state] = [g for g in listed.guards if g.guard == "generate"]
    assert state.holders[0].progress.fraction == 1.0

    def progressed() -> list[pb.Change]:
        return [
            m.change
            for m in stream.events()
            if m.WhichOneof("event") == "change" and m.change.kind == pb.CHANGE_KIND_PROGRESSED
        ]

    for _ in range(300):
        if progressed() and progressed()[-1].run.progress.message == "step 50":
            break
        await asyncio.sleep(0.01)
    stream.cancel()
    changes = progressed()
    assert changes[-1].run.progress.fraction == 1.0
    assert changes[-1].run.progress.message == "step 50"
    assert len(changes) <= math.ceil(reporting) + 2
    assert all(c.state.holders[0].operation_id == "op-1" for c in changes)
    others = [
        m.change.kind
        for m in stream.events()
        if m.WhichOneof("event") == "change" and m.change.kind != pb.CHANGE_KIND_PROGRESSED
    ]
    assert others == []  # progress never acquires or releases


async def test_cancel_reaches_the_holder_and_watchers_but_keeps_the_slot(running: Any) -> None:
    """Cancel marks the run: watchers see CANCEL_REQUESTED, KeepAlive says so, the guard stays
    full until the holder Ends with CANCELLED, and only then is the slot free."""
    granted = (await running.stub.Begin(begin_request("op-1"))).granted
    stream = Stream(running.stub.Watch(pb.WatchRequest(guards=["generate"])))
    await stream.until(1)

    cancelled = await running.stub.Cancel(
        pb.CancelRequest(guard="generate", operation_id="op-1", reason="user pressed stop")
    )

    assert cancelled.result == pb.CANCEL_RESULT_REQUESTED
    assert cancelled.run.cancel_requested
    (_, change) = await stream.until(2)
    assert change.change.kind == pb.CHANGE_KIND_CANCEL_REQUESTED
    assert change.change.run.cancel_reason == "user pressed stop"
    assert [r.operation_id for r in change.change.state.holders] == ["op-1"]
    renewed = await running.stub.KeepAlive(keep_alive_request(granted))
    assert renewed.cancel_requested
    assert renewed.run.cancel_requested
    other = await running.stub.Begin(begin_request("op-2"))
    assert other.rejected.reason == pb.REJECTION_REASON_IN_FLIGHT
    again = await running.stub.Cancel(pb.CancelRequest(guard="generate", operation_id="op-1"))
    assert again.result == pb.CANCEL_RESULT_ALREADY_REQUESTED

    end = end_request(granted)
    end.outcome = pb.RUN_OUTCOME_CANCELLED
    await running.stub.End(end)

    (_, _, released) = await stream.until(3)
    stream.cancel()
    assert released.change.kind == pb.CHANGE_KIND_RELEASED
    assert released.change.run.outcome == pb.RUN_OUTCOME_CANCELLED
    assert released.change.run.cancel_requested
    assert (await running.stub.Begin(begin_request("op-2"))).WhichOneof("outcome") == "granted"
    late = await running.stub.Cancel(pb.CancelRequest(guard="generate", operation_id="op-1"))
    assert late.result == pb.CANCEL_RESULT_ALREADY_ENDED


async def test_cancel_of_an_unknown_run_is_not_found(running: Any) -> None:
    """Cancel of an operation_id the guard does not know is NOT_FOUND and writes nothing."""
    before = (await running.stub.Current(pb.CurrentRequest(guard="generate"))).revision
    code, _ = await _code(
        running.stub.Cancel(pb.CancelRequest(guard="generate", operation_id="nobody"))
    )
    assert code == grpc.StatusCode.NOT_FOUND
    assert (await running.stub.Current(pb.CurrentRequest(guard="generate"))).revision == before


def _huge_result() -> Any:
    return value({"blob": "x" * 5000})


def _nan_result() -> Any:
    result = value({"n": 1})
    result.struct_value.fields["n"].number_value = math.nan
    return result


@pytest.mark.parametrize(
    ("method", "build", "field"),
    [
        pytest.param("End", lambda r: r.result.CopyFrom(_huge_result()), "result", id="big-result"),
        pytest.param("End", lambda r: r.result.CopyFrom(_nan_result()), "result", id="nan-result"),
        pytest.param("End", lambda r: setattr(r, "outcome", 99), "outcome", id="bad-outcome"),
        pytest.param(
            "KeepAlive",
            lambda r: setattr(r.progress, "fraction", math.nan),
            "progress.fraction",
            id="nan-fraction",
        ),
        pytest.param(
            "KeepAlive",
            lambda r: setattr(r.progress, "fraction", 1.5),
            "progress.fraction",
            id="fraction-over-one",
        ),
        pytest.param(
            "KeepAlive",
            lambda r: setattr(r.progress, "fraction", -0.1),
            "progress.fraction",
            id="negative-fraction",
        ),
        pytest.param(
            "KeepAlive",
            lambda r: setattr(r.progress, "message", "m" * 257),
            "progress.message",
            id="long-message",
        ),
        pytest.param(
            "KeepAlive",
            lambda r: setattr(r.progress, "message", "a\x1b[2Jb"),
            "progress.message",
            id="control-characters",
        ),
        pytest.param(
            "KeepAlive",
            lambda r: r.progress.SetInParent(),
            "progress",
            id="empty-progress",
        ),
        pytest.param(
            "Cancel", lambda r: setattr(r, "reason", "r" * 300), "reason", id="long-reason"
        ),
        pytest.param(
            "GetRun", lambda r: setattr(r, "operation_id", ""), "operation_id", id="no-op"
        ),
    ],
)
async def test_hostile_values_of_new_fields_are_named_and_change_nothing(
    running: Any, method: str, build: Any, field: str
) -> None:
    """Each bad new field is INVALID_ARGUMENT naming it in BadRequest, and nothing changes."""
    granted = (await running.stub.Begin(begin_request("op-1"))).granted
    requests: dict[str, Callable[[], Message]] = {
        "End": lambda: end_request(granted),
        "KeepAlive": lambda: keep_alive_request(granted),
        "Cancel": lambda: pb.CancelRequest(guard="generate", operation_id="op-1"),
        "GetRun": lambda: pb.GetRunRequest(guard="generate", operation_id="op-1"),
    }
    request = requests[method]()
    build(request)
    before = await running.stub.Current(pb.CurrentRequest(guard="generate"))

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await getattr(running.stub, method)(request)

    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(error) == [field]
    after = await running.stub.Current(pb.CurrentRequest(guard="generate"))
    assert after.revision == before.revision
    assert not after.state.holders[0].cancel_requested
    assert not after.state.holders[0].HasField("progress")
