"""The coordinator's expiry timer: due guards are settled many at a time, not one by one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from runguard.server.config import ServerConfig
from runguard.server.coordinator import Coordinator
from runguard.server.expiry import SETTLES_IN_FLIGHT
from runguard.server.stores import Batch, MemoryStore, Write

GUARDS = SETTLES_IN_FLIGHT + 8
"""More due guards than the timer settles at once."""


class HeldBatches(MemoryStore):
    """A memory store whose writes of ``due-*`` guards wait until the test lets them go."""

    def __init__(self) -> None:
        super().__init__(fencing_floor=1)
        self.gate = asyncio.Event()
        self.held = asyncio.Event()
        self.batches: list[int] = []

    @property
    def inline(self) -> bool:
        return False  # its writes wait, as a store with a round trip's do

    async def commit_batch(self, writes: Sequence[Write]) -> Batch:
        due = [w for w in writes if w.guard.startswith("due-")]
        if due:
            self.batches.append(len(due))
        if due and not self.gate.is_set():
            self.held.set()
            await self.gate.wait()
        return await super().commit_batch(writes)


async def test_due_guards_are_settled_together_and_all_reclaimed() -> None:
    """With many one-shot guards due while writes of the store are held, the due guards
    pile up and go to the store together, never more than SETTLES_IN_FLIGHT in one
    write, and every guard is reclaimed in the end."""
    store = HeldBatches()
    # The clock stands still while the guards are made, so that none falls due before the
    # last one is in, however slow the machine; then it jumps past the dedup window.
    started = time.time()
    elapsed = 0.0
    coordinator = Coordinator(
        ServerConfig(dedup_window=0.05), store, clock=lambda: started + elapsed
    )
    await coordinator.start()
    feed = store.subscribe()
    try:
        store.gate.set()  # Begin and End go through; only the timer's writes are held
        for n in range(GUARDS):
            grant = await coordinator.begin(
                f"due-{n}", operation_id="op", fingerprint="fp", ttl=None, wait=0, labels=()
            )
            assert not isinstance(grant, Exception)
            await coordinator.end(f"due-{n}", "op", grant.lease_token)  # type: ignore[union-attr]
        store.batches.clear()  # the Begins and Ends; nothing is due yet
        store.gate.clear()
        elapsed = 1.0
        await asyncio.wait_for(store.held.wait(), 10)
        await asyncio.sleep(0.1)  # room for a write more, if the timer allowed one
        store.gate.set()
        reclaimed = 0
        async with asyncio.timeout(10):
            async for commit in feed:
                reclaimed += commit.reclaimed
                if reclaimed == GUARDS:
                    break
        assert sum(store.batches) == GUARDS
        assert 1 < max(store.batches) <= SETTLES_IN_FLIGHT
        assert await store.guard_count() == 0
    finally:
        store.gate.set()
        await coordinator.stop()
        await store.close()


async def test_an_idle_guard_with_an_entry_out_of_order_is_still_reclaimed() -> None:
    """A dedup entry kept from a later time than the newest one (a clock that was ahead)
    makes the first settle early; the timer then waits for that entry and reclaims."""
    skew = 0.3
    ahead = True
    coordinator_clock = lambda: time.time() + (skew if ahead else 0.0)  # noqa: E731
    store = MemoryStore(fencing_floor=1)
    coordinator = Coordinator(ServerConfig(dedup_window=0.1), store, clock=coordinator_clock)
    await coordinator.start()
    feed = store.subscribe()
    try:
        for op in ("ahead", "now"):
            grant = await coordinator.begin(
                "g", operation_id=op, fingerprint=op, ttl=None, wait=0, labels=()
            )
            await coordinator.end("g", op, grant.lease_token)  # type: ignore[union-attr]
            ahead = False
        async with asyncio.timeout(5):
            async for commit in feed:
                if commit.reclaimed:
                    break
        assert await store.guard_count() == 0
    finally:
        await coordinator.stop()
        await store.close()
