"""The store seam: where guard documents live, and the feed of what changed.

The core decides, a store only keeps. Each guard is one versioned document;
a command reads it at version v, the core computes the new document and its
changes, and the store swaps it in only if the guard is still at v. So every
store gets every rule of the core for free, and a distributed engine only has
to offer compare-and-swap and an ordered, watchable feed.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from runguard.server.core import Change, GuardDoc

__all__ = ["Commit", "FeedGap", "Store", "Versioned"]


@dataclass(frozen=True, slots=True)
class Versioned:
    """A guard document and the version a compare-and-swap must name (0: never written)."""

    doc: GuardDoc
    version: int


@dataclass(frozen=True, slots=True)
class Commit:
    """One committed swap: the guard's new document and the changes it made."""

    revision: int
    guard: str
    doc: GuardDoc
    changes: tuple[Change, ...]


@dataclass(frozen=True, slots=True)
class FeedGap:
    """In a feed: commits after ``after`` may be missing (a distributed store's history
    was compacted under a lagging feed). Whoever follows the feed must resync."""

    after: int


class Store(abc.ABC):
    """Versioned guard documents with compare-and-swap and an ordered change feed.

    Revisions belong to the store's ``epoch``. Every commit takes the next
    revision (strictly larger than every earlier one in the epoch); the
    changes of one commit all carry it.
    """

    @property
    @abc.abstractmethod
    def epoch(self) -> str:
        """An id fixed when the store's state was created; revisions belong to it."""

    @property
    @abc.abstractmethod
    def revision(self) -> int:
        """The revision of the newest commit (0 before the first)."""

    @property
    def replica(self) -> str:
        """This server's id among the replicas sharing the store ("" when only one serves it).

        Queued callers are recorded under it (``Waiter.owner``), so a store
        shared by replicas can drop the waiters of a replica that died
        instead of promoting them into a slot nobody would hold.
        """
        return ""

    @abc.abstractmethod
    async def read(self, guard: str) -> Versioned:
        """The guard's current document, or a new one at version 0.

        Waiters of a replica known to be gone are left out (see ``replica``).

        A new document's ``next_fencing`` is above every fencing token the
        store has handed out for that guard, also across restarts.
        """

    @abc.abstractmethod
    async def commit(
        self, guard: str, version: int, doc: GuardDoc, changes: Sequence[Change]
    ) -> Commit:
        """Swap in ``doc`` if the guard is still at ``version``, atomically.

        Returns the commit, whose changes carry its revision. The commit is
        delivered to every open ``subscribe`` iterator in revision order.

        Raises:
            VersionConflict: the guard has moved on; nothing was written.
            StoreUnavailable: the store cannot be reached; nothing was written.
        """

    @abc.abstractmethod
    async def snapshot(self, guards: Sequence[str] | None) -> tuple[int, list[GuardDoc]]:
        """The named guards (every written guard when None) as of one revision.

        Named guards never written come back as new documents.
        """

    @abc.abstractmethod
    async def changes_since(self, after: int) -> list[Change] | None:
        """Every change with a revision above ``after``, in order; None when the
        history needed is gone (or ``after`` is not a revision of this epoch)."""

    @abc.abstractmethod
    def subscribe(self) -> AsyncIterator[Commit | FeedGap]:
        """Every commit from now on, in revision order, until ``close``.

        Where the store cannot deliver some commits (its history is gone), it says
        so with a :class:`FeedGap` in their place, never by skipping silently.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the store's resources and end every ``subscribe`` iterator."""
