"""Queued Begins' grants, handed over in this process.

A Begin that queues waits on a future keyed by its guard and operation_id; a
commit that grants it (this process's own, as it lands, or another replica's,
from the feed) sets the future to the holder, so the caller learns its grant at
once. When the server drains, every future fails with ``ShuttingDown``. Holds no
store and decides nothing: the core grants, this only passes the news on.
"""

from __future__ import annotations

import asyncio

from runguard.server.core import ChangeKind, Holder
from runguard.server.errors import ShuttingDown
from runguard.server.stores import Commit

__all__ = ["DRAINED", "Grants"]

DRAINED = (
    "server shutting down: the Begin left the queue; send it again "
    "(to another replica, or here after the restart)"
)
"""What a queued Begin answers when the server drains."""

Key = tuple[str, str]
"""A queued Begin's guard and operation_id."""


class Grants:
    """The futures of the Begins waiting in a queue, by guard and operation_id."""

    def __init__(self) -> None:
        self._acquired: dict[Key, list[asyncio.Future[Holder]]] = {}
        self._draining = False

    def waiting(self) -> frozenset[Key]:
        """The guards and operation_ids of the Begins that wait on a grant now."""
        return frozenset(self._acquired)

    def watch(self, key: Key) -> asyncio.Future[Holder]:
        """A future that is set to the holder when ``key`` is granted (it fails at once
        while the server drains)."""
        future: asyncio.Future[Holder] = asyncio.get_running_loop().create_future()
        if self._draining:
            future.set_exception(ShuttingDown(DRAINED))
        self._acquired.setdefault(key, []).append(future)
        return future

    def unwatch(self, key: Key, future: asyncio.Future[Holder]) -> None:
        """Stop waiting on ``future`` (done or not)."""
        futures = self._acquired.get(key)
        if futures is not None and future in futures:
            futures.remove(future)
            if not futures:
                del self._acquired[key]

    def hand_over(self, commit: Commit) -> None:
        """Tell the Begins waiting in this process that their queued call was granted."""
        for change in commit.changes:
            if change.kind is not ChangeKind.ACQUIRED or change.run is None:
                continue
            futures = self._acquired.get((commit.guard, change.run.operation_id))
            if not futures:
                continue
            holder = next(
                (h for h in commit.doc.holders if h.run.operation_id == change.run.operation_id),
                None,
            )
            # None: granted and ended within one commit; the wait then times out
            # and cancel_wait reports what happened.
            if holder is None:
                continue
            for future in futures:
                if not future.done():
                    future.set_result(holder)

    def drain(self) -> None:
        """The server is stopping: every waiting future, and every one watched from now on,
        fails with ShuttingDown."""
        self._draining = True
        for futures in self._acquired.values():
            for future in futures:
                if not future.done():
                    future.set_exception(ShuttingDown(DRAINED))
