"""The seed module's behaviours, through a real server on a real socket."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from runguard.v1 import runguard_pb2 as pb
from tests.integration.support import Stream, begin_request


async def test_double_submit_is_duplicate_even_after_the_first_run_ended(start_server: Any) -> None:
    """The same route and payload within the dedup window is DUPLICATE, naming the earlier run."""
    running = await start_server(dedup_window=60)
    first = await running.stub.Begin(begin_request("op-1", {"prompt": "cats", "n": 1}))
    await running.stub.End(
        pb.EndRequest(guard="generate", operation_id="op-1", lease_token=first.granted.lease_token)
    )
    again = await running.stub.Begin(begin_request("op-2", {"n": 1.0, "prompt": "cats"}))
    assert again.WhichOneof("outcome") == "rejected"
    assert again.rejected.reason == pb.REJECTION_REASON_DUPLICATE
    assert again.rejected.duplicate_of.operation_id == "op-1"
    assert 0 < again.rejected.retry_after.ToTimedelta().total_seconds() <= 60


async def test_duplicate_window_closes(start_server: Any) -> None:
    """After the dedup window the same submission is granted again."""
    running = await start_server(dedup_window=0.2)
    first = await running.stub.Begin(begin_request("op-1", {"prompt": "cats"}))
    await running.stub.End(
        pb.EndRequest(guard="generate", operation_id="op-1", lease_token=first.granted.lease_token)
    )
    await asyncio.sleep(0.3)
    again = await running.stub.Begin(begin_request("op-2", {"prompt": "cats"}))
    assert again.WhichOneof("outcome") == "granted"


async def test_second_tab_is_in_flight_naming_the_holder(running: Any) -> None:
    """A different submission while a run holds the slot is IN_FLIGHT with the holder's id."""
    await running.stub.Begin(begin_request("op-1", {"prompt": "cats"}))
    second = await running.stub.Begin(begin_request("op-2", {"prompt": "dogs"}))
    assert second.rejected.reason == pb.REJECTION_REASON_IN_FLIGHT
    assert [run.operation_id for run in second.rejected.holders] == ["op-1"]
    assert "op-1" in second.rejected.message


async def test_in_flight_is_checked_before_duplicate(running: Any) -> None:
    """The seed's order: an identical submission during the run is IN_FLIGHT, not DUPLICATE."""
    await running.stub.Begin(begin_request("op-1", {"prompt": "cats"}))
    twin = await running.stub.Begin(begin_request("op-2", {"prompt": "cats"}))
    assert twin.rejected.reason == pb.REJECTION_REASON_IN_FLIGHT


async def test_end_is_idempotent(running: Any) -> None:
    """End frees the slot once (ENDED), then says ALREADY_ENDED, from a finally block or not."""
    grant = await running.stub.Begin(begin_request("op-1"))
    request = pb.EndRequest(
        guard="generate", operation_id="op-1", lease_token=grant.granted.lease_token
    )
    assert (await running.stub.End(request)).result == pb.END_RESULT_ENDED
    assert (await running.stub.End(request)).result == pb.END_RESULT_ALREADY_ENDED


async def test_end_of_another_run_changes_nothing(running: Any) -> None:
    """Ending an operation_id that holds no slot (never had one: UNKNOWN) leaves the holder."""
    grant = await running.stub.Begin(begin_request("op-1"))
    other = await running.stub.End(
        pb.EndRequest(guard="generate", operation_id="op-9", lease_token="whatever")
    )
    assert other.result == pb.END_RESULT_UNKNOWN
    current = await running.stub.Current(pb.CurrentRequest(guard="generate"))
    assert [run.operation_id for run in current.state.holders] == ["op-1"]
    assert current.state.holders[0].fencing_token == grant.granted.run.fencing_token


async def test_end_with_a_wrong_token_is_refused_and_changes_nothing(running: Any) -> None:
    """A wrong lease token for a live run is PERMISSION_DENIED and the run keeps its slot."""
    await running.stub.Begin(begin_request("op-1"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await running.stub.End(
            pb.EndRequest(guard="generate", operation_id="op-1", lease_token="stolen")
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    current = await running.stub.Current(pb.CurrentRequest(guard="generate"))
    assert [run.operation_id for run in current.state.holders] == ["op-1"]


async def test_stale_slot_is_freed_on_time_and_watchers_are_told(running: Any) -> None:
    """A lease left to expire frees the slot by itself and watchers get RELEASED/EXPIRED."""
    stream = Stream(running.stub.Watch(pb.WatchRequest(guards=["generate"])))
    await stream.until(1)
    await running.stub.Begin(begin_request("op-1", ttl=0.3))
    events = await stream.until(3, within=5)
    stream.cancel()
    snapshot, acquired, released = events[:3]
    assert snapshot.WhichOneof("event") == "snapshot"
    assert acquired.change.kind == pb.CHANGE_KIND_ACQUIRED
    assert released.change.kind == pb.CHANGE_KIND_RELEASED
    assert released.change.release_reason == pb.RELEASE_REASON_EXPIRED
    assert released.change.run.operation_id == "op-1"
    assert list(released.change.state.holders) == []
    assert released.change.revision > acquired.change.revision


async def test_default_lease_is_the_seeds_watchdog(running: Any) -> None:
    """Without a ttl the lease lasts RUN_MAX_SECS (1800 s), like the seed's stale-slot watchdog."""
    grant = await running.stub.Begin(begin_request("op-1"))
    run = grant.granted.run
    lease = run.expires_at.ToDatetime() - run.started_at.ToDatetime()
    assert lease.total_seconds() == pytest.approx(1800, abs=0.01)


async def test_empty_guard_means_default_and_server_makes_an_operation_id(running: Any) -> None:
    """An empty guard is 'default' and an empty operation_id gets a server-made one."""
    grant = await running.stub.Begin(pb.BeginRequest(route="/x"))
    assert grant.granted.run.guard == "default"
    assert len(grant.granted.run.operation_id) == 32
