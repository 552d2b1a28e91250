"""The coordinator's expiry timer: due guards are settled many at a time, not one by one."""

from __future__ import annotations

import asyncio

from runguard.server.config import ServerConfig
from runguard.server.coordinator import SETTLES_IN_FLIGHT, Coordinator
from runguard.server.stores import MemoryStore, Versioned

GUARDS = SETTLES_IN_FLIGHT + 8
"""More due guards than the timer settles at once."""


class HeldReads(MemoryStore):
    """A memory store whose reads of ``due-*`` guards wait until the test lets them go."""

    def __init__(self) -> None:
        super().__init__(fencing_floor=1)
        self.gate = asyncio.Event()
        self.full = asyncio.Event()
        self.waiting = 0
        self.most_waiting = 0

    async def read(self, guard: str) -> Versioned:
        if guard.startswith("due-") and not self.gate.is_set():
            self.waiting += 1
            self.most_waiting = max(self.most_waiting, self.waiting)
            if self.waiting >= SETTLES_IN_FLIGHT:
                self.full.set()
            await self.gate.wait()
            self.waiting -= 1
        return await super().read(guard)


async def test_due_guards_are_settled_concurrently_and_all_reclaimed() -> None:
    """With many one-shot guards due at once, the timer has SETTLES_IN_FLIGHT store round
    trips open together (never more), and every guard is reclaimed in the end."""
    store = HeldReads()
    coordinator = Coordinator(ServerConfig(dedup_window=0.05), store)
    await coordinator.start()
    feed = store.subscribe()
    try:
        store.gate.set()  # Begin and End go through; only the timer's reads are held
        for n in range(GUARDS):
            grant = await coordinator.begin(
                f"due-{n}", operation_id="op", fingerprint="fp", ttl=None, wait=0, labels=()
            )
            assert not isinstance(grant, Exception)
            await coordinator.end(f"due-{n}", "op", grant.lease_token)  # type: ignore[union-attr]
        store.gate.clear()
        await asyncio.wait_for(store.full.wait(), 10)
        await asyncio.sleep(0.1)  # room for one read more, if the timer allowed one
        assert store.most_waiting == SETTLES_IN_FLIGHT
        store.gate.set()
        reclaimed = 0
        async with asyncio.timeout(10):
            async for commit in feed:
                reclaimed += commit.reclaimed
                if reclaimed == GUARDS:
                    break
        assert await store.guard_count() == 0
    finally:
        store.gate.set()
        await coordinator.stop()
        await store.close()
