"""``memory://``: the embedded store. Nothing to install; forgets on restart.

Fencing tokens of a guard first written after a restart start from the clock
(microseconds since the epoch at store start), so they stay above those of the
previous process as long as it handed out fewer than a million a second on
average. The epoch is random, so watchers of the old process resync. A guard
reclaimed and written again starts above every token its name had: the store
keeps one floor, raised to a reclaimed guard's next token.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence

from runguard.server.core import Change, ChangeLog, GuardDoc, GuardSettings
from runguard.server.stores.base import (
    Batch,
    Commit,
    NewDocuments,
    Store,
    Versioned,
    Write,
    only_waiters_of,
)
from runguard.server.stores.fanout import Fanout

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """Guard documents in a dict; every method completes without yielding."""

    def __init__(self, *, fencing_floor: int, history: int = 10_000) -> None:
        super().__init__(epoch=uuid.uuid4().hex, revision=0)
        self._new = NewDocuments(fencing_floor)
        self._docs: dict[str, Versioned] = {}
        self._log = ChangeLog(history)
        self._feed = Fanout()
        self._defaults: GuardSettings | None = None

    @property
    def durable(self) -> bool:
        return False

    @property
    def exclusive(self) -> bool:
        return True

    @property
    def inline(self) -> bool:
        return True

    def _current(self, guard: str) -> Versioned:
        found = self._docs.get(guard)
        if found is None:
            return self._new.absent(guard)
        return Versioned(only_waiters_of(found.doc, self._replica), found.version)

    async def read(self, guard: str) -> Versioned:
        return self._current(guard)

    async def commit_batch(self, writes: Sequence[Write]) -> Batch:
        commits: list[Commit] = []
        moved: dict[str, Versioned] = {}
        for write in writes:
            current = self._current(write.guard)
            if current.version != write.version:
                moved[write.guard] = current
                continue
            commits.append(self._commit(write))
        return Batch(tuple(commits), moved)

    def _commit(self, write: Write) -> Commit:
        self._revision += 1
        guard, doc = write.guard, write.doc
        commit = write.landed(self._revision)
        if write.reclaim:
            self._docs.pop(guard, None)
            self._new.reclaimed(guard, doc.next_fencing)
        else:
            self._docs[guard] = Versioned(doc, self._revision)
        self._log.append(commit.changes)
        self._feed.publish(commit)
        return commit

    async def snapshot(self, guards: Sequence[str] | None) -> tuple[int, list[GuardDoc]]:
        names = sorted(self._docs) if guards is None else list(guards)
        return self._revision, [self._current(name).doc for name in names]

    async def list_guards(self, after: str, limit: int) -> tuple[int, list[GuardDoc]]:
        names = sorted(name for name in self._docs if name > after)[:limit]
        return self._revision, [self._current(name).doc for name in names]

    async def guard_count(self) -> int:
        return len(self._docs)

    async def defaults(self, proposed: GuardSettings) -> GuardSettings:
        if self._defaults is None:
            self._defaults = proposed
        return self._defaults

    async def changes_since(self, after: int) -> list[Change] | None:
        if after > self._revision:
            return None
        return self._log.since(after)

    def subscribe(self) -> AsyncIterator[Commit]:
        return self._feed.subscribe()

    async def close(self) -> None:
        self._feed.close()
