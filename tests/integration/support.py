"""Helpers for talking to a real server over a real socket."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import grpc
from google.protobuf import duration_pb2, json_format, struct_pb2
from google.rpc import error_details_pb2, status_pb2

from runguard.contract import DETAILS_KEY
from runguard.v1 import runguard_pb2 as pb


def value(data: Any) -> struct_pb2.Value:
    """A JSON value as google.protobuf.Value."""
    message = struct_pb2.Value()
    json_format.ParseDict(data, message)
    return message


def bad_request(error: grpc.aio.AioRpcError) -> error_details_pb2.BadRequest:
    """The google.rpc.BadRequest an INVALID_ARGUMENT carries in its status details."""
    # grpc-stubs give AioRpcError the sync error's trailers; at run time they are aio Metadata.
    trailers = cast(grpc.aio.Metadata, error.trailing_metadata())
    status = status_pb2.Status.FromString(cast(bytes, trailers[DETAILS_KEY]))
    found = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(found)
    return found


def seconds(amount: float) -> duration_pb2.Duration:
    """A Duration of ``amount`` seconds."""
    message = duration_pb2.Duration()
    message.FromNanoseconds(round(amount * 1e9))
    return message


def begin_request(
    operation_id: str,
    payload: Any = None,
    *,
    guard: str = "generate",
    route: str = "/generate",
    ttl: float | None = None,
    wait: float | None = None,
) -> pb.BeginRequest:
    """A Begin like the seed's begin_run(operation_id, route, payload)."""
    request = pb.BeginRequest(guard=guard, operation_id=operation_id, route=route)
    request.payload.CopyFrom(value(payload if payload is not None else {"op": operation_id}))
    if ttl is not None:
        request.ttl.CopyFrom(seconds(ttl))
    if wait is not None:
        request.wait.CopyFrom(seconds(wait))
    return request


class Stream:
    """A Watch stream read in the background, so a test can wait for what it expects."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.messages: list[pb.WatchResponse] = []
        self.error: grpc.aio.AioRpcError | None = None
        self._arrived = asyncio.Condition()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for message in self.call:
                async with self._arrived:
                    self.messages.append(message)
                    self._arrived.notify_all()
        except grpc.aio.AioRpcError as error:
            self.error = error
        async with self._arrived:
            self._arrived.notify_all()

    async def until(self, count: int, within: float = 10) -> list[pb.WatchResponse]:
        """Wait until ``count`` messages (other than Progress) arrived; returns them."""

        def ready() -> bool:
            return len(self.events()) >= count or self._task.done()

        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(ready), within)
        return self.events()

    def events(self) -> list[pb.WatchResponse]:
        """Every message but Progress heartbeats."""
        return [m for m in self.messages if m.WhichOneof("event") != "progress"]

    async def ended(self, within: float = 10) -> None:
        """Wait for the server to end the stream."""
        await asyncio.wait_for(asyncio.shield(self._task), within)

    def cancel(self) -> None:
        """Cancel the call from the client side."""
        self.call.cancel()


async def queue_reaches(stub: Any, length: int, guard: str = "generate") -> None:
    """Poll Current until the guard's queue is ``length`` long (at most 10 s)."""
    for _ in range(1000):
        state = (await stub.Current(pb.CurrentRequest(guard=guard))).state
        if state.queue_length == length:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"queue of {guard!r} never reached {length}")


def end_request(granted: pb.Granted) -> pb.EndRequest:
    """The End a holder sends for its grant."""
    run = granted.run
    return pb.EndRequest(
        guard=run.guard, operation_id=run.operation_id, lease_token=granted.lease_token
    )


def keep_alive_request(granted: pb.Granted) -> pb.KeepAliveRequest:
    """The KeepAlive a holder sends for its grant."""
    run = granted.run
    return pb.KeepAliveRequest(
        guard=run.guard, operation_id=run.operation_id, lease_token=granted.lease_token
    )
