"""The calls of a client whose history ``tests/history.py`` checks, recorded as it needs them.

Shared by the fault tests under load and the bench's long history: a Begin that fails,
an End whose fate decides when the slot was given back, a DUPLICATE's earlier run.
"""

from __future__ import annotations

import time
from typing import Any

import grpc

from runguard.v1 import runguard_pb2 as pb
from tests.history import Duplicate

__all__ = ["begin", "duplicate", "end"]

TIMEOUT = 15.0
"""Seconds one call may take (a store failing over answers within it)."""


async def begin(stub: Any, request: pb.BeginRequest, problems: list[str]) -> Any | None:
    """Begin's reply, or None when the call failed (noted in ``problems`` unless the
    failure was UNAVAILABLE, which a fault may cause)."""
    try:
        return await stub.Begin(request, timeout=TIMEOUT)
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.UNAVAILABLE:
            problems.append(f"Begin {error.code().name}: {error.details()}")
        return None


async def end(stub: Any, granted: Any, problems: list[str]) -> float:
    """End a grant; returns when it was given back: when End was sent, no later than its
    lease's end if the run had already ended, the lease's end if End failed (it held at
    most until then)."""
    expires: float = granted.run.expires_at.ToNanoseconds() / 1e9
    released = time.time()
    request = pb.EndRequest(
        guard=granted.run.guard,
        operation_id=granted.run.operation_id,
        lease_token=granted.lease_token,
    )
    try:
        ended = await stub.End(request, timeout=TIMEOUT)
        if ended.result == pb.END_RESULT_ALREADY_ENDED:
            released = min(released, expires)
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.UNAVAILABLE:
            problems.append(f"End {error.code().name}: {error.details()}")
        released = expires
    return released


def duplicate(reply: Any, guard: str, sent: float, answered: float) -> Duplicate:
    """A DUPLICATE rejection of a Begin sent at ``sent`` and answered at ``answered``."""
    started = reply.rejected.duplicate_of.started_at.ToNanoseconds() / 1e9
    return Duplicate(guard, sent, answered, started)
