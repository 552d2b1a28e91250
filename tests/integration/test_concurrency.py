"""Races on purpose: many clients, one guard, exactly ``capacity`` winners."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from runguard.v1 import runguard_pb2 as pb
from tests.integration.support import begin_request, queue_reaches
from tests.stubs import async_stub

CLIENTS = 200
CHANNELS = 8


async def _race(address: str, guard: str) -> list[pb.BeginResponse]:
    # Separate subchannel pools: each channel is its own TCP connection.
    channels = [
        grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(CHANNELS)
    ]
    try:
        stubs = [async_stub(channel) for channel in channels]
        calls = [
            stubs[i % CHANNELS].Begin(begin_request(f"op-{i}", {"client": i}, guard=guard))
            for i in range(CLIENTS)
        ]
        return list(await asyncio.gather(*calls))
    finally:
        for channel in channels:
            await channel.close(None)


@pytest.mark.parametrize(
    "capacity", [pytest.param(1, id="single-flight"), pytest.param(3, id="three")]
)
async def test_concurrent_begins_grant_exactly_capacity(start_server: Any, capacity: int) -> None:
    """200 simultaneous Begins from 8 connections on one guard give exactly `capacity` grants."""
    running = await start_server(capacities={"race": capacity})
    replies = await _race(running.address, "race")
    granted = [r for r in replies if r.WhichOneof("outcome") == "granted"]
    rejected = [r for r in replies if r.WhichOneof("outcome") == "rejected"]
    assert len(granted) == capacity
    assert len(rejected) == CLIENTS - capacity
    assert {r.rejected.reason for r in rejected} == {pb.REJECTION_REASON_IN_FLIGHT}
    tokens = sorted(r.granted.run.fencing_token for r in granted)
    assert len(set(tokens)) == capacity
    current = await running.stub.Current(pb.CurrentRequest(guard="race"))
    assert sorted(run.fencing_token for run in current.state.holders) == tokens


async def test_waiters_are_granted_in_arrival_order(running: Any) -> None:
    """Begins that wait are granted one by one, first come first served, as holders End."""
    first = await running.stub.Begin(begin_request("holder"))
    waiting = []
    for i in range(5):
        waiting.append(asyncio.ensure_future(running.stub.Begin(begin_request(f"w{i}", wait=10))))
        # Each waiter reaches the queue before the next one is sent.
        await queue_reaches(running.stub, i + 1)
    order = []
    token, name = first.granted.lease_token, "holder"
    for _ in range(5):
        await running.stub.End(
            pb.EndRequest(guard="generate", operation_id=name, lease_token=token)
        )
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1
        reply = done.pop().result()
        waiting = [w for w in waiting if not w.done()]
        name, token = reply.granted.run.operation_id, reply.granted.lease_token
        order.append(name)
    assert order == ["w0", "w1", "w2", "w3", "w4"]


async def test_wait_times_out(running: Any) -> None:
    """A waiter whose wait elapses is rejected WAIT_TIMEOUT and leaves the queue."""
    await running.stub.Begin(begin_request("holder"))
    reply = await running.stub.Begin(begin_request("late", wait=0.2))
    assert reply.rejected.reason == pb.REJECTION_REASON_WAIT_TIMEOUT
    current = await running.stub.Current(pb.CurrentRequest(guard="generate"))
    assert current.state.queue_length == 0


async def test_queue_full(start_server: Any) -> None:
    """Past max_queue waiters, a waiting Begin is rejected QUEUE_FULL at once."""
    running = await start_server(max_queue=1)
    await running.stub.Begin(begin_request("holder"))
    queued = asyncio.ensure_future(running.stub.Begin(begin_request("w0", wait=5)))
    await queue_reaches(running.stub, 1)
    reply = await running.stub.Begin(begin_request("w1", wait=5))
    assert reply.rejected.reason == pb.REJECTION_REASON_QUEUE_FULL
    queued.cancel()


async def test_identical_queued_submission_is_duplicate(running: Any) -> None:
    """A submission identical to one already queued is DUPLICATE."""
    await running.stub.Begin(begin_request("holder"))
    queued = asyncio.ensure_future(running.stub.Begin(begin_request("w0", {"same": 1}, wait=5)))
    await queue_reaches(running.stub, 1)
    reply = await running.stub.Begin(begin_request("w1", {"same": 1}, wait=5))
    assert reply.rejected.reason == pb.REJECTION_REASON_DUPLICATE
    queued.cancel()


async def test_cancelled_waiter_leaves_the_queue(running: Any) -> None:
    """A caller that hangs up while queued is removed, so it never takes a slot."""
    holder = await running.stub.Begin(begin_request("holder"))
    call = running.stub.Begin(begin_request("gone", wait=30))
    waiting = asyncio.ensure_future(call)
    await queue_reaches(running.stub, 1)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await queue_reaches(running.stub, 0)
    await running.stub.End(
        pb.EndRequest(
            guard="generate", operation_id="holder", lease_token=holder.granted.lease_token
        )
    )
    state = (await running.stub.Current(pb.CurrentRequest(guard="generate"))).state
    assert list(state.holders) == []


async def test_retried_begin_gets_its_own_grant_back(running: Any) -> None:
    """Repeating a granted Begin (same operation_id and submission) returns the same grant."""
    first = await running.stub.Begin(begin_request("op-1", {"p": 1}))
    again = await running.stub.Begin(begin_request("op-1", {"p": 1}))
    assert again.granted.lease_token == first.granted.lease_token
    assert again.granted.run.fencing_token == first.granted.run.fencing_token


async def test_reused_operation_id_with_another_submission_is_already_exists(running: Any) -> None:
    """An operation_id that names a live run of another submission is ALREADY_EXISTS."""
    await running.stub.Begin(begin_request("op-1", {"p": 1}))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await running.stub.Begin(begin_request("op-1", {"p": 2}))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
