"""``memory://``: the embedded store. Nothing to install; forgets on restart.

Fencing tokens of a guard first written after a restart start from the clock
(microseconds since the epoch at store start), so they stay above those of the
previous process as long as it handed out fewer than a million a second on
average. The epoch is random, so watchers of the old process resync.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Sequence

from runguard.server.core import Change, ChangeLog, GuardDoc
from runguard.server.errors import VersionConflict
from runguard.server.stores.base import Commit, Store, Versioned
from runguard.server.stores.fanout import Fanout

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """Guard documents in a dict; every method completes without yielding."""

    def __init__(self, *, fencing_floor: int, history: int = 10_000) -> None:
        self._epoch = uuid.uuid4().hex
        self._fencing_floor = fencing_floor
        self._docs: dict[str, Versioned] = {}
        self._revision = 0
        self._log = ChangeLog(history)
        self._feed = Fanout()

    @property
    def epoch(self) -> str:
        return self._epoch

    @property
    def revision(self) -> int:
        return self._revision

    def _current(self, guard: str) -> Versioned:
        found = self._docs.get(guard)
        if found is None:
            return Versioned(GuardDoc(name=guard, next_fencing=self._fencing_floor), 0)
        return found

    async def read(self, guard: str) -> Versioned:
        return self._current(guard)

    async def commit(
        self, guard: str, version: int, doc: GuardDoc, changes: Sequence[Change]
    ) -> Commit:
        if self._current(guard).version != version:
            raise VersionConflict(f"guard {guard!r} is no longer at version {version}")
        self._revision += 1
        commit = Commit(
            revision=self._revision,
            guard=guard,
            doc=doc,
            changes=tuple(dataclasses.replace(c, revision=self._revision) for c in changes),
        )
        self._docs[guard] = Versioned(doc, version + 1)
        self._log.append(commit.changes)
        self._feed.publish(commit)
        return commit

    async def snapshot(self, guards: Sequence[str] | None) -> tuple[int, list[GuardDoc]]:
        names = sorted(self._docs) if guards is None else list(guards)
        return self._revision, [self._current(name).doc for name in names]

    async def changes_since(self, after: int) -> list[Change] | None:
        if after > self._revision:
            return None
        return self._log.since(after)

    def subscribe(self) -> AsyncIterator[Commit]:
        return self._feed.subscribe()

    async def close(self) -> None:
        self._feed.close()
