"""The change feed of a store whose commits all happen in this process.

Each subscriber gets its own queue, registered when ``subscribe`` is called
(not on first iteration), so no commit slips by. Unbounded on purpose: the
only subscriber is the server's own feed task, which hands each commit on
without awaiting anything slow.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from runguard.server.stores.base import Commit

__all__ = ["Fanout"]

_CLOSED = object()


class Fanout:
    """Commits handed to every open subscription, in the order they are published."""

    def __init__(self) -> None:
        self._queues: list[asyncio.Queue[Commit | object]] = []
        self._closed = False

    def subscribe(self) -> AsyncIterator[Commit]:
        """Every commit published from now on, until ``close``."""
        queue: asyncio.Queue[Commit | object] = asyncio.Queue()
        if self._closed:
            queue.put_nowait(_CLOSED)
        self._queues.append(queue)
        return self._drain(queue)

    def publish(self, commit: Commit) -> None:
        """Hand a commit to every subscription; never waits."""
        for queue in self._queues:
            queue.put_nowait(commit)

    def close(self) -> None:
        """End every subscription, present and future."""
        self._closed = True
        for queue in self._queues:
            queue.put_nowait(_CLOSED)

    async def _drain(self, queue: asyncio.Queue[Commit | object]) -> AsyncIterator[Commit]:
        try:
            while True:
                item = await queue.get()
                if item is _CLOSED:
                    return
                assert isinstance(item, Commit)
                yield item
        finally:
            self._queues.remove(queue)
