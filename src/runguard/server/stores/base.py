"""The store seam: where guard documents live, and the feed of what changed.

The core decides, a store only keeps. Each guard is one versioned document;
a command reads it at version v, the core computes the new document and its
changes, and the store swaps it in only if the guard is still at v. So every
store gets every rule of the core for free, and a distributed engine only has
to offer compare-and-swap and an ordered, watchable feed.
"""

from __future__ import annotations

import abc
import dataclasses
import uuid
import zlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from runguard.server.core import Change, GuardDoc, GuardSettings, without_waiters_of
from runguard.server.errors import VersionConflict

__all__ = [
    "RECLAIM_SHARDS",
    "Batch",
    "Commit",
    "FeedGap",
    "NewDocuments",
    "Store",
    "Versioned",
    "Write",
    "only_waiters_of",
    "reclaim_shard",
]

RECLAIM_SHARDS = 256
"""Guard names are spread over this many counts of reclaims (see ``Versioned``): a stale
read conflicts with a reclaim of its own shard only, and no state is kept per name."""


def reclaim_shard(guard: str) -> int:
    """Which reclaim count a guard name belongs to."""
    return zlib.crc32(guard.encode()) % RECLAIM_SHARDS


def only_waiters_of(doc: GuardDoc, replica: str) -> GuardDoc:
    """``doc`` without the waiters of any other server than ``replica``.

    For a store one server process uses at a time: a waiter queued by another
    incarnation (before a restart) has no caller left to hand a grant to.
    """
    return without_waiters_of(doc, {w.owner for w in doc.queue} - {replica})


@dataclass(frozen=True, slots=True)
class Versioned:
    """A guard document and the version a compare-and-swap must name.

    A guard the store does not hold reads at a version <= 0 that names the reclaims of
    its name's shard so far (so creating it from a read older than its own reclaim, with a
    fencing floor that reclaim has since raised, is a VersionConflict); a stored one at a
    version > 0.
    """

    doc: GuardDoc
    version: int


class NewDocuments:
    """Where the new documents of a store of one server process start (memory, SQLite).

    Above every fencing token a name had: one fencing floor, raised to each reclaimed
    guard's next token, so no state is kept per reclaimed name; and the reclaims per
    shard of names, which the version of an absent guard names (see ``Versioned``).
    """

    def __init__(self, fencing_floor: int) -> None:
        self.fencing_floor = fencing_floor
        self.reclaims = [0] * RECLAIM_SHARDS

    def absent(self, guard: str) -> Versioned:
        """A guard the store does not hold: a new document at version -reclaims of its
        shard, so a command that read it before a reclaim raised the floor cannot
        create it from the floor it read."""
        return Versioned(
            GuardDoc(name=guard, next_fencing=self.fencing_floor),
            -self.reclaims[reclaim_shard(guard)],
        )

    def reclaimed(self, guard: str, next_fencing: int) -> None:
        """Note that ``guard`` was reclaimed with ``next_fencing`` as its next token."""
        self.fencing_floor = max(self.fencing_floor, next_fencing)
        self.reclaims[reclaim_shard(guard)] += 1


@dataclass(frozen=True, slots=True)
class Commit:
    """One committed swap: the guard's new document and the changes it made.

    ``reclaimed``: the guard was deleted (it had nothing left to keep); ``doc``
    is what it was left as, with no holders and no queue.
    """

    revision: int
    guard: str
    doc: GuardDoc
    changes: tuple[Change, ...]
    reclaimed: bool = False


@dataclass(frozen=True, slots=True)
class Write:
    """One guard's part of a batch: swap in ``doc`` if the guard is still at ``version``.

    ``reclaim``: delete the guard instead (``doc`` has nothing left to keep).
    ``promotes``: the servers whose waiters this write grants a slot to; a shared
    store writes it only while each of them is still there (see ``Store.replica``).
    """

    guard: str
    version: int
    doc: GuardDoc
    changes: tuple[Change, ...]
    reclaim: bool = False
    promotes: frozenset[str] = frozenset()

    def landed(self, revision: int) -> Commit:
        """The commit this write made at ``revision`` (its changes carry it)."""
        return Commit(
            revision=revision,
            guard=self.guard,
            doc=self.doc,
            changes=tuple(dataclasses.replace(c, revision=revision) for c in self.changes),
            reclaimed=self.reclaim,
        )


@dataclass(frozen=True, slots=True)
class Batch:
    """What became of a batch of writes.

    ``commits``: the writes that landed, in the order they were given. ``moved``: the
    guards that were no longer at the version their write named, with their current
    value (so the caller decides again without reading). A write in neither was not
    written and may be sent again as it is: a store that writes a batch all or nothing
    (etcd's ``Txn``) drops the whole batch when one guard moved.
    """

    commits: tuple[Commit, ...]
    moved: dict[str, Versioned]


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

    A store says what it is through its characteristics (``durable``, ``exclusive``,
    ``inline``, ``batch_limit``), so no caller needs to ask which class it is.
    """

    def __init__(self, *, epoch: str, revision: int) -> None:
        self._epoch = epoch
        self._revision = revision
        self._replica = uuid.uuid4().hex[:16]

    @property
    def epoch(self) -> str:
        """An id fixed when the store's state was created; revisions belong to it."""
        return self._epoch

    @property
    def revision(self) -> int:
        """The revision of the newest commit (0 before the first)."""
        return self._revision

    def _advance(self, revision: int) -> None:
        """Note a commit at ``revision`` (seen in any order: the newest one wins)."""
        self._revision = max(self._revision, revision)

    @property
    def replica(self) -> str:
        """This server's id: its incarnation on a single-process store, its replica id on
        a shared one; unique per process start.

        Queued callers are recorded under it (``Waiter.owner``), so the waiters
        of a server that died or restarted, whose calls are gone with it, are
        dropped instead of promoted into a slot nobody would hold.
        """
        return self._replica

    @property
    @abc.abstractmethod
    def durable(self) -> bool:
        """Whether the guards' state outlives the server process (a restart finds its
        holders, queues and fencing tokens again); a store that forgets on restart
        seeds the fencing tokens of new guards from the clock instead."""

    @property
    def exclusive(self) -> bool:
        """Whether this process is the store's only writer (one server per store): then
        the documents of its own commits are the current ones, and a command that writes
        nothing may be decided on them without reading the store again."""
        return False

    @property
    def inline(self) -> bool:
        """Whether every call completes without suspending (no I/O to wait for): a command
        then runs at once in its caller, as there is no round trip for others to share."""
        return False

    @property
    def batch_limit(self) -> int:
        """The most guards one ``commit_batch`` call may write."""
        return 64

    @abc.abstractmethod
    async def read(self, guard: str) -> Versioned:
        """The guard's current document, or a new one at version 0.

        Waiters of a server known to be gone (another incarnation of this
        process, a replica whose presence ran out) are left out (see ``replica``).

        A new document's ``next_fencing`` is above every fencing token the
        store has handed out for that guard name, also across reclaiming and
        restarts.
        """

    async def read_many(self, guards: Sequence[str]) -> list[Versioned]:
        """``read`` of each guard, in order (a store may read them in one round trip)."""
        return [await self.read(guard) for guard in guards]

    @abc.abstractmethod
    async def commit_batch(self, writes: Sequence[Write]) -> Batch:
        """Swap in each write's document if its guard is still at the write's version,
        atomically per guard, in one round trip where the store can (one etcd ``Txn``,
        one SQLite transaction and fsync). The guards of a batch are distinct.

        Every landed write is delivered to every open ``subscribe`` iterator in revision
        order, the commits of one revision together. Writes of one batch may share a
        revision (etcd); their changes then follow the order of ``writes``.

        Raises:
            StoreUnavailable: the store cannot be reached, or a write's outcome is
                unknown; nothing of the batch is reported as written.
        """

    async def commit(
        self,
        guard: str,
        version: int,
        doc: GuardDoc,
        changes: Sequence[Change],
        *,
        reclaim: bool = False,
    ) -> Commit:
        """Swap in ``doc`` if the guard is still at ``version``, atomically.

        With ``reclaim`` the guard is deleted instead (``doc`` has nothing left
        to keep); a later ``read`` gives a new document whose fencing tokens
        stay above ``doc``'s.

        Returns the commit, whose changes carry its revision. The commit is
        delivered to every open ``subscribe`` iterator in revision order.

        Raises:
            VersionConflict: the guard has moved on; nothing was written.
            StoreUnavailable: the store cannot be reached; nothing was written.
        """
        batch = await self.commit_batch([Write(guard, version, doc, tuple(changes), reclaim)])
        if not batch.commits:
            raise VersionConflict(f"guard {guard!r} is no longer at version {version}")
        return batch.commits[0]

    @abc.abstractmethod
    async def snapshot(self, guards: Sequence[str] | None) -> tuple[int, list[GuardDoc]]:
        """The named guards (every stored guard when None, by name) as of one revision.

        Named guards not stored come back as new documents. Reading every
        guard is done in pages, so no single read of the backend is unbounded.
        """

    @abc.abstractmethod
    async def list_guards(self, after: str, limit: int) -> tuple[int, list[GuardDoc]]:
        """Up to ``limit`` stored guards whose names sort after ``after``, by name,
        and the revision they are as of."""

    @abc.abstractmethod
    async def guard_count(self) -> int:
        """How many guards the store holds now."""

    @abc.abstractmethod
    async def defaults(self, proposed: GuardSettings) -> GuardSettings:
        """The store-wide settings of guards without their own.

        The first server on a store writes ``proposed``; after that the stored
        settings are returned unchanged, whatever is proposed, so every server
        on the store runs by the same numbers.
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
