"""Which RunGuard replicas on an etcd store are there: presence keys on etcd leases.

``<prefix>/r/<replica>``: one key per running replica, attached to an etcd lease the
replica keeps alive. A replica whose key is gone (its lease ran out: it died) is
gone, and its queued waiters are left out of every document the store reads. This
module holds this replica's key and follows the others'; it knows nothing of guards
beyond the owners of their waiters.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Set

import structlog
from etcd3aio import Etcd3Client, prefix_range_end
from etcd3aio.kv import KVService

from runguard.server.core import GuardDoc, without_waiters_of
from runguard.server.stores.etcd_calls import FAILURES, call, closing, describe_failure

__all__ = ["Presence"]

log = structlog.get_logger("runguard")


class Presence:
    """This replica's presence key, and which replicas are known to be there or gone.

    Args:
        prefix: the store's key prefix.
        replica: this replica's id.
        ttl: seconds of the lease behind the presence key.
        timeout: seconds one etcd call may take.
        connect: the store's connected KV service (connecting first if need be).
    """

    def __init__(
        self,
        prefix: str,
        replica: str,
        *,
        ttl: int,
        timeout: float,
        connect: Callable[[], Awaitable[KVService]],
    ) -> None:
        self.prefix = f"{prefix}/r/".encode()
        self._replica = replica
        self._ttl = ttl
        self._timeout = timeout
        self._connect = connect
        self._live: set[str] = {replica}
        self._dead: set[str] = set()

    def key(self, replica: str) -> bytes:
        """The presence key of ``replica``."""
        return self.prefix + replica.encode()

    @property
    def dead(self) -> Set[str]:
        """The replicas known to be gone."""
        return self._dead

    def lost(self, replica: str) -> None:
        """Note that ``replica``'s presence key was found missing."""
        self._live.discard(replica)
        self._dead.add(replica)

    async def enter(self, client: Etcd3Client) -> int:
        """Put this replica's presence key on a new lease; returns the lease."""
        assert client.lease is not None
        assert client.kv is not None
        granted = await client.lease.grant(self._ttl, timeout=self._timeout)
        await client.kv.put(self.key(self._replica), b"", lease=granted.ID, timeout=self._timeout)
        return int(granted.ID)

    async def hold(self, client: Etcd3Client, lease: int) -> None:
        """Hold this replica's presence key; make a new lease if the old one is lost."""
        assert client.lease is not None
        lease_api = client.lease
        while True:
            try:
                if not lease:
                    lease = await self.enter(client)
                await asyncio.sleep(max(0.2, self._ttl / 3))
                stream = lease_api.keep_alive(lease)
                try:
                    async with asyncio.timeout(self._timeout):
                        async for answer in stream:
                            if answer.TTL <= 0:  # the lease ran out: be present again
                                lease = 0
                            break
                finally:
                    stream.cancel()
            except asyncio.CancelledError:
                if lease:
                    with contextlib.suppress(*FAILURES):
                        await lease_api.revoke(lease, timeout=1.0)
                raise
            except FAILURES as error:
                log.warning("etcd_presence_failed", error=describe_failure(error, self._timeout))
                await asyncio.sleep(0.5)

    async def follow(self, client: Etcd3Client) -> None:
        """Learn which replicas come and go, from their presence keys."""
        assert client.watch is not None
        while True:
            try:
                kv = client.kv
                assert kv is not None
                found = await kv.get(
                    self.prefix, prefix_range_end(self.prefix), timeout=self._timeout
                )
                for item in found.kvs:
                    self._live.add(item.key[len(self.prefix) :].decode())
                watch = client.watch.watch(
                    self.prefix,
                    prefix_range_end(self.prefix),
                    start_revision=found.header.revision + 1,
                )
                async with closing(watch) as responses:
                    async for response in responses:
                        for event in response.events:
                            name = event.kv.key[len(self.prefix) :].decode()
                            if event.type == 1:  # DELETE: the replica's lease ran out
                                self._live.discard(name)
                                if name != self._replica:
                                    self._dead.add(name)
                            else:
                                self._live.add(name)
                                self._dead.discard(name)
                        if response.canceled:
                            break
            except FAILURES as error:
                log.warning("etcd_peers_failed", error=describe_failure(error, self._timeout))
                await asyncio.sleep(0.5)

    async def gone(self, owners: set[str]) -> set[str]:
        """Which of ``owners`` are replicas known to be gone (asking etcd about new names)."""
        unknown = owners - self._live - self._dead - {""}
        if unknown:
            kv = await self._connect()
            for name in unknown:
                found = await call(kv.get(self.key(name), timeout=self._timeout), self._timeout)
                (self._live if found.kvs else self._dead).add(name)
        return owners & self._dead

    async def visible(self, doc: GuardDoc) -> GuardDoc:
        """The document without the waiters of replicas that are gone."""
        if not doc.queue:
            return doc
        return without_waiters_of(doc, await self.gone({w.owner for w in doc.queue}))
