"""A Begin whose caller goes away while it is being committed leaves no slot held."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from runguard.server.config import ServerConfig
from runguard.server.coordinator import Coordinator
from runguard.server.stores import Batch, MemoryStore, Write


class HeldCommits(MemoryStore):
    """A memory store whose commits wait until the test lets them land."""

    def __init__(self) -> None:
        super().__init__(fencing_floor=1)
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    @property
    def inline(self) -> bool:
        return False  # its writes wait, as a store with a round trip's do

    async def commit_batch(self, writes: Sequence[Write]) -> Batch:
        if not self.gate.is_set():
            self.waiting.set()
            await self.gate.wait()
        return await super().commit_batch(writes)


async def test_a_grant_committed_after_its_caller_left_is_given_back() -> None:
    """Cancelled while its grant is on its way to the store, a Begin's grant still lands,
    and is ended at once: nobody could ever learn its lease token."""
    store = HeldCommits()
    coordinator = Coordinator(ServerConfig(), store)
    store.gate.set()
    await coordinator.start()
    try:
        feed = store.subscribe()
        store.gate.clear()
        call = asyncio.ensure_future(
            coordinator.begin("g", operation_id="op", fingerprint="fp", ttl=None, wait=0, labels=())
        )
        await asyncio.wait_for(store.waiting.wait(), 10)
        call.cancel()
        store.gate.set()
        kinds = []
        async with asyncio.timeout(10):
            async for commit in feed:
                kinds += [c.kind.value for c in commit.changes]
                if "released" in kinds:
                    break
        assert kinds == ["acquired", "released"]
        assert (await store.read("g")).doc.holders == ()
        assert call.cancelled()
    finally:
        store.gate.set()
        await coordinator.stop()
        await store.close()
