"""The calls of a client that records a history for :mod:`tests.history`, over grpc.aio.

A Begin either answers or is recorded as an error (UNAVAILABLE, expected while a store or
server fails, is not one); an End turns a grant into the window the checker is given.
"""

from __future__ import annotations

import time

import grpc

from runguard.v1 import runguard_pb2 as pb
from tests.history import Duplicate, Grant
from tests.stubs import AsyncStub

CALL_TIMEOUT = 15.0
"""Seconds a call of the load may take before it counts as failed."""


async def begin_answer(
    stub: AsyncStub, request: pb.BeginRequest, errors: list[str]
) -> pb.BeginResponse | None:
    """The Begin's answer, or None if it failed (its code and details noted in ``errors``
    unless it was UNAVAILABLE)."""
    try:
        return await stub.Begin(request, timeout=CALL_TIMEOUT)
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.UNAVAILABLE:
            errors.append(f"Begin {error.code().name}: {error.details()}")
        return None


async def end_grant(
    stub: AsyncStub, granted: pb.Granted, answered: float, errors: list[str]
) -> Grant:
    """End a grant; the Grant it was, held from ``answered`` to when End was sent, or to its
    lease's expiry when End failed or found it already ended by expiry."""
    run = granted.run
    expires = run.expires_at.ToNanoseconds() / 1e9
    released = time.time()
    end = pb.EndRequest(
        guard=run.guard, operation_id=run.operation_id, lease_token=granted.lease_token
    )
    try:
        ended = await stub.End(end, timeout=CALL_TIMEOUT)
        if ended.result == pb.END_RESULT_ALREADY_ENDED:
            released = min(released, expires)
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.UNAVAILABLE:
            errors.append(f"End {error.code().name}: {error.details()}")
        released = expires  # unknown: it held at most until its lease ended
    return Grant(run.guard, run.operation_id, run.fencing_token, answered, released)


def duplicate(reply: pb.BeginResponse, guard: str, sent: float, answered: float) -> Duplicate:
    """The DUPLICATE a Begin of ``guard`` was answered with, for the checker."""
    started = reply.rejected.duplicate_of.started_at.ToNanoseconds() / 1e9
    return Duplicate(guard, sent, answered, started)
