"""The expiry timer: each guard is settled when its next deadline comes.

A lease running out, a wait ending, progress due to watchers or a guard left
with nothing to keep is acted on when it is due, not only on the next command
of that guard. One deadline per guard is kept, in a heap; the timer settles the
due guards through the command path, several at once, and logs a settle that
fails (it is tried again after ``EXPIRY_RETRY``).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections.abc import Awaitable, Callable

import structlog

from runguard.server import core
from runguard.server.core import GuardDoc, GuardPolicy, Transition
from runguard.server.stores import Commit

__all__ = ["EXPIRY_RETRY", "SETTLES_IN_FLIGHT", "Expiry"]

EXPIRY_RETRY = 1.0
"""Seconds before a failed expiry is tried again."""

SETTLES_IN_FLIGHT = 32
"""Guards the expiry timer settles at once (their commands go to the store together)."""

Settle = Callable[[str], Awaitable[tuple[Transition[None], Commit | None]]]
"""Settle a guard now; returns the transition and its commit (None: nothing written)."""

log = structlog.get_logger("runguard")


class Expiry:
    """The next deadline of each guard, and the timer that settles it when it comes."""

    def __init__(
        self, *, settle: Settle, policy: Callable[[], GuardPolicy], clock: Callable[[], float]
    ) -> None:
        self._settle = settle
        self._policy = policy
        self._clock = clock
        self.deadlines: dict[str, float] = {}
        """Each guard's next deadline (guards with none are absent)."""
        self._heap: list[tuple[float, str]] = []
        self._wake = asyncio.Event()

    def track(self, doc: GuardDoc, *, exact: bool = False) -> None:
        """Learn the guard's next deadline from its document as it now is."""
        deadline = core.next_deadline(doc, self._policy(), exact=exact)
        if deadline is None:
            self.deadlines.pop(doc.name, None)
            return
        if self.deadlines.get(doc.name) == deadline:
            return
        self.deadlines[doc.name] = deadline
        heapq.heappush(self._heap, (deadline, doc.name))
        if len(self._heap) > 2 * len(self.deadlines) + 64:
            # Every renewal moves a deadline and leaves the old entry behind: rebuild from
            # the deadlines in force, so the heap stays near one entry per guard.
            self._heap = [(when, name) for name, when in self.deadlines.items()]
            heapq.heapify(self._heap)
        if self._heap[0] == (deadline, doc.name):
            self._wake.set()

    def forget(self, guard: str) -> None:
        """The guard is gone (reclaimed): it has no deadline."""
        self.deadlines.pop(guard, None)

    async def run(self) -> None:
        """Settle each guard when its deadline comes, SETTLES_IN_FLIGHT at once: under load
        the due guards (leases ending, one-shot names to reclaim) come faster than one
        store write after another could keep up with, and settles in flight together
        share a write."""
        slots = asyncio.Semaphore(SETTLES_IN_FLIGHT)
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                while self._heap and self.deadlines.get(self._heap[0][1]) != self._heap[0][0]:
                    heapq.heappop(self._heap)
                self._wake.clear()
                if not self._heap:
                    await self._wake.wait()
                    continue
                deadline, guard = self._heap[0]
                delay = deadline - self._clock()
                if delay > 0:
                    # timeout(), not wait_for(): 3.11's wait_for drops a cancel that
                    # comes as the wake does, and stop() would wait for ever.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._wake.wait()
                    continue
                heapq.heappop(self._heap)
                del self.deadlines[guard]
                await slots.acquire()
                task = asyncio.create_task(self._settle_due(guard, slots))
                running.add(task)
                task.add_done_callback(running.discard)
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _settle_due(self, guard: str, slots: asyncio.Semaphore) -> None:
        try:
            transition, commit = await self._settle(guard)
            if commit is None:  # due too early (an entry out of order): the exact deadline
                self.track(transition.doc, exact=True)
        except Exception as error:  # expiry must go on for every other guard
            log.warning("expiry_failed", guard=guard, error=str(error))
            if guard not in self.deadlines:
                self.deadlines[guard] = self._clock() + EXPIRY_RETRY
                heapq.heappush(self._heap, (self.deadlines[guard], guard))
                self._wake.set()
        finally:
            slots.release()
