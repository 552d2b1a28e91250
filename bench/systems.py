"""One acquire/release pair per system, as a client process drives it.

Every system is driven the same way: raw asyncio stubs (no client-library
conveniences on one side only), one channel or connection per client process
shared by its workers, a deadline on every call. ``acquire`` returns once the
caller holds the slot or lock; ``release`` gives it back.

- ``noop``: the ceiling, one no-op unary RPC on the RunGuard server's stack
  (``release`` does nothing).
- ``stream``: the streaming ceiling, one request/response message pair on the
  bench server's ``Exchange`` stream; each client process opens ONE stream and
  its workers pipeline their messages on it (``release`` does nothing).
- ``runguard``: ``Begin`` (granted, with ``wait`` when contended) and ``End``.
  Each Begin is a new submission (its own idempotency key), as real work is.
- ``etcd``: ``v3lockpb.Lock(name, lease)`` and ``Unlock(key)``; each worker
  holds one lease for the whole run, as an etcd session does. The address may
  name several members (``host:port,host:port``): client process *i* talks to
  member *i* mod their number, so a cluster's load is spread over its members
  as RunGuard's store spreads its calls.
- ``redis``: ``SET key token NX PX ttl``, retried every ``retry_delay`` while
  taken, and a compare-and-delete Lua script.
"""

from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import AsyncIterator
from typing import Any, Protocol

import grpc
from google.protobuf import duration_pb2

from bench.server import EXCHANGE_METHOD, NOOP_METHOD
from bench.v3lock import LockRequest, UnlockRequest, lock_stubs

__all__ = ["CALL_TIMEOUT", "LEASE_SECONDS", "System", "make_system"]

CALL_TIMEOUT = 60.0
"""Seconds any one call may take before the bench gives up on it."""

LEASE_SECONDS = 60
"""Lease length of every run and lock: longer than the bench, short enough to clean up."""

_RELEASE_LUA = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


class System(Protocol):
    """What a worker needs from a system under test."""

    async def open(self) -> None:
        """Connect (and whatever per-worker setup is not to be timed)."""

    async def acquire(self, worker: int, n: int) -> Any:
        """Hold the slot or lock; returns what ``release`` needs."""

    async def release(self, worker: int, handle: Any) -> None:
        """Give it back."""

    async def close(self) -> None:
        """Disconnect."""


class Noop:
    """The ceiling: one no-op unary RPC per cycle on the same server stack."""

    def __init__(self, address: str, workers: list[int], tag: str, contended: bool) -> None:
        self._address = address

    async def open(self) -> None:
        self._channel = grpc.aio.insecure_channel(self._address)
        self._call = self._channel.unary_unary(
            NOOP_METHOD, request_serializer=None, response_deserializer=None
        )

    async def acquire(self, worker: int, n: int) -> Any:
        await self._call(b"", timeout=CALL_TIMEOUT)

    async def release(self, worker: int, handle: Any) -> None:
        return None

    async def close(self) -> None:
        await self._channel.close(None)


class Stream:
    """The streaming ceiling: one request/response message pair on one shared stream.

    The stream sends the queued requests in order (grpc.aio drains the request
    iterator one write at a time) and one reader task resolves the waiting
    workers in that same order, as the server answers in order.
    """

    def __init__(self, address: str, workers: list[int], tag: str, contended: bool) -> None:
        self._address = address

    async def open(self) -> None:
        self._channel = grpc.aio.insecure_channel(self._address)
        self._outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._call = self._channel.stream_stream(
            EXCHANGE_METHOD, request_serializer=None, response_deserializer=None
        )(self._requests())
        self._reader = asyncio.create_task(self._read())

    async def _requests(self) -> AsyncIterator[bytes]:
        while (message := await self._outbox.get()) is not None:
            yield message

    async def _read(self) -> None:
        try:
            async for _ in self._call:
                waiter = self._waiting.popleft()
                if not waiter.done():  # a worker that gave up (timed out) cancelled it
                    waiter.set_result(None)
        except grpc.RpcError as error:
            for waiter in self._waiting:
                if not waiter.done():
                    waiter.set_exception(RuntimeError(f"the Exchange stream failed: {error}"))
            raise

    async def acquire(self, worker: int, n: int) -> Any:
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        self._outbox.put_nowait(b"")
        await asyncio.wait_for(waiter, CALL_TIMEOUT)

    async def release(self, worker: int, handle: Any) -> None:
        return None

    async def close(self) -> None:
        self._outbox.put_nowait(None)  # ends the request stream; the server then ends its own
        await asyncio.wait_for(self._reader, CALL_TIMEOUT)
        await self._channel.close(None)


class RunGuard:
    """Begin (granted) and End on the generated stub."""

    def __init__(self, address: str, workers: list[int], tag: str, contended: bool) -> None:
        from runguard.v1 import runguard_pb2

        self._pb = runguard_pb2
        self._address = address
        self._tag = tag
        self._contended = contended
        self._prefix = f"{tag}-{os.getpid()}"
        self._ttl = duration_pb2.Duration(seconds=LEASE_SECONDS)
        self._wait = duration_pb2.Duration(seconds=int(CALL_TIMEOUT / 2))

    async def open(self) -> None:
        self._channel = grpc.aio.insecure_channel(self._address)
        from tests.stubs import async_stub

        self._stub = async_stub(self._channel)

    def _guard(self, worker: int) -> str:
        return f"{self._tag}-contended" if self._contended else f"{self._tag}-{worker}"

    async def acquire(self, worker: int, n: int) -> Any:
        pb = self._pb
        request = pb.BeginRequest(
            guard=self._guard(worker),
            idempotency_key=f"{self._prefix}-{worker}-{n}",
            ttl=self._ttl,
        )
        if self._contended:
            request.wait.CopyFrom(self._wait)
        reply = await self._stub.Begin(request, timeout=CALL_TIMEOUT)
        if not reply.HasField("granted"):
            raise RuntimeError(f"Begin was refused: {reply.rejected.message}")
        return reply.granted

    async def release(self, worker: int, handle: Any) -> None:
        run = handle.run
        reply = await self._stub.End(
            self._pb.EndRequest(
                guard=run.guard, operation_id=run.operation_id, lease_token=handle.lease_token
            ),
            timeout=CALL_TIMEOUT,
        )
        if reply.result != self._pb.END_RESULT_ENDED:
            raise RuntimeError(f"End did not end the run: {reply}")

    async def close(self) -> None:
        await self._channel.close(None)


class Etcd:
    """etcd's lock API, one lease per worker."""

    def __init__(self, address: str, workers: list[int], tag: str, contended: bool) -> None:
        members = address.split(",")
        # Client process i holds workers i, i + processes, ... (load._split).
        self._address = members[workers[0] % len(members)]
        self._workers = workers
        self._tag = tag
        self._contended = contended

    async def open(self) -> None:
        from etcd3aio._protobuf import LeaseGrantRequest, LeaseStub

        self._channel = grpc.aio.insecure_channel(self._address)
        self._lock, self._unlock = lock_stubs(self._channel)
        self._lease_stub = LeaseStub(self._channel)
        self._leases: dict[int, int] = {}
        for worker in self._workers:
            reply = await self._lease_stub.LeaseGrant(
                LeaseGrantRequest(TTL=LEASE_SECONDS), timeout=CALL_TIMEOUT
            )
            self._leases[worker] = reply.ID

    async def acquire(self, worker: int, n: int) -> Any:
        name = f"bench/{self._tag}/" + ("contended" if self._contended else str(worker))
        reply = await self._lock(
            LockRequest(name=name.encode(), lease=self._leases[worker]), timeout=CALL_TIMEOUT
        )
        return reply.key

    async def release(self, worker: int, handle: Any) -> None:
        await self._unlock(UnlockRequest(key=handle), timeout=CALL_TIMEOUT)

    async def close(self) -> None:
        from etcd3aio._protobuf import LeaseRevokeRequest

        for lease in self._leases.values():
            await self._lease_stub.LeaseRevoke(LeaseRevokeRequest(ID=lease), timeout=CALL_TIMEOUT)
        await self._channel.close(None)


class Redis:
    """``SET NX PX`` with retry, and a compare-and-delete script."""

    def __init__(
        self,
        address: str,
        workers: list[int],
        tag: str,
        contended: bool,
        retry_delay: float = 0.001,
    ) -> None:
        self._address = address
        self._workers = workers
        self._tag = tag
        self._contended = contended
        self._retry_delay = retry_delay
        self.retries = 0

    async def open(self) -> None:
        import redis.asyncio

        host, _, port = self._address.rpartition(":")
        self._client = redis.asyncio.Redis(
            host=host,
            port=int(port),
            max_connections=len(self._workers),
            socket_timeout=CALL_TIMEOUT,
        )
        self._release = self._client.register_script(_RELEASE_LUA)
        await self._client.ping()

    async def acquire(self, worker: int, n: int) -> Any:
        key = f"bench:{self._tag}:" + ("contended" if self._contended else str(worker))
        token = f"{os.getpid()}-{worker}-{n}"
        deadline = asyncio.get_running_loop().time() + CALL_TIMEOUT
        while not await self._client.set(key, token, nx=True, px=LEASE_SECONDS * 1000):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"Redis lock {key} not taken in {CALL_TIMEOUT}s")
            self.retries += 1
            await asyncio.sleep(self._retry_delay)
        return key, token

    async def release(self, worker: int, handle: Any) -> None:
        key, token = handle
        if await self._release(keys=[key], args=[token]) != 1:
            raise RuntimeError(f"Redis lock {key} was not ours any more")

    async def close(self) -> None:
        await self._client.aclose()


SYSTEMS: dict[str, type] = {
    "noop": Noop,
    "stream": Stream,
    "runguard": RunGuard,
    "etcd": Etcd,
    "redis": Redis,
}


def make_system(
    name: str, address: str, workers: list[int], tag: str, contended: bool, **extra: Any
) -> System:
    """The system ``name`` for these workers of one client process."""
    system: System = SYSTEMS[name](address, workers, tag, contended, **extra)
    return system
