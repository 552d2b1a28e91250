"""How a call to etcd fails, said for people: the failures the client library raises,
the sentence each becomes, and the one wrapper that turns them into ``StoreUnavailable``.

Shared by the etcd store's parts (its CAS path, its presence tracking); it holds no state.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from typing import Any, TypeVar, cast

import grpc
from etcd3aio import EtcdError

from runguard.server.errors import StoreUnavailable

__all__ = ["FAILURES", "call", "closing", "describe_failure"]

T = TypeVar("T")

FAILURES = (EtcdError, grpc.RpcError, TimeoutError, OSError)
"""What the client library raises when etcd cannot be reached or answer in time."""


def describe_failure(error: BaseException, timeout: float) -> str:
    """A sentence for people about a failed etcd call (never the library's repr)."""
    if isinstance(error, TimeoutError):
        return f"etcd did not answer in {timeout:g} s"
    cause = error.__cause__ if isinstance(error, EtcdError) else error
    if isinstance(cause, grpc.aio.AioRpcError):
        code, details = cause.code(), cause.details() or ""
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            return f"etcd did not answer in {timeout:g} s"
        if code is grpc.StatusCode.UNAVAILABLE:
            return f"etcd cannot be reached ({details or 'no endpoint answered'})"
        if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
            return f"etcd refused the request as too large: {details}"
        return f"etcd refused the request ({code.name}): {details}"
    if isinstance(error, EtcdError | OSError):
        return f"etcd cannot be reached: {error}"
    return f"etcd failed: {type(error).__name__}"


async def call(pending: Awaitable[T], limit: float) -> T:
    """Await one (retry-safe) client call, sent with ``limit`` seconds to answer; its
    failures leave as StoreUnavailable."""
    try:
        return await pending
    except FAILURES as error:
        raise StoreUnavailable(describe_failure(error, limit)) from error


def closing(watch: AsyncIterator[Any]) -> contextlib.aclosing[AsyncGenerator[Any, None]]:
    """Close an etcd watch (an async generator, typed as an iterator) when the block ends."""
    return contextlib.aclosing(cast("AsyncGenerator[Any, None]", watch))
