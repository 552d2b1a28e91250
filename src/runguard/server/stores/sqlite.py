"""``sqlite:///path``: a durable store in one SQLite file (standard library, WAL).

What survives a ``kill -9`` of the server: every guard document (holders with
their leases' ``expires_at``, the queue, dedup entries, tombstones, the next
fencing token), the current revision, the epoch, and the bounded change
history watchers resume from. Leases are judged against the stored deadlines
when the server comes back, so a lease that ran out while it was down expires
at once, as of its own ``expires_at``.

Layout: ``meta`` (epoch, revision, the history floor, the fencing floor, the
store-wide guard defaults), ``guards`` (name, version = the revision that last
wrote it, the document as ``codec`` writes it), ``changes`` (revision, position
in its commit, the change). A reclaimed guard's row is deleted and the fencing floor raised to
its next token, so the name starts above its old tokens if it comes back.

Waiters belong to the incarnation of the server that queued them (a random id
per open): after a restart the old incarnation's callers are gone, so their
waiters are left out of every read and never promoted.

One batch of commits is one SQLite transaction (one fsync), so a crash leaves
either all of it or none of it. ``synchronous=FULL`` by default: a commit is on disk
before Begin answers, so a grant (and its fencing token) survives a power cut
too, not only a crash of the process (``?synchronous=normal`` trades that for
speed: WAL without an fsync per commit still survives ``kill -9``).

Threads: every SQLite call runs on one worker thread owned by the store, with
one connection, so the event loop never waits on the disk (a commit's fsync
takes milliseconds) and commits are serialised in revision order. The worker
hands each commit to the subscribers through the event loop, in commit order,
before ``commit`` returns. One server process per file: a second one is refused
(an advisory lock on ``<path>.lock``, released by the OS when the process dies).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from runguard.server.core import Change, GuardDoc, GuardSettings
from runguard.server.errors import StoreUnavailable
from runguard.server.stores.base import (
    Batch,
    Commit,
    NewDocuments,
    Store,
    Versioned,
    Write,
    only_waiters_of,
    reclaim_shard,
)
from runguard.server.stores.codec import (
    CodecError,
    decode_change,
    decode_doc,
    decode_settings,
    encode_change,
    encode_doc,
    encode_settings,
)
from runguard.server.stores.fanout import Fanout

__all__ = ["SqliteStore"]

T = TypeVar("T")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS guards (
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS changes (
    revision INTEGER NOT NULL,
    position INTEGER NOT NULL,
    change TEXT NOT NULL,
    PRIMARY KEY (revision, position)
);
"""


class SqliteStore(Store):
    """Guard documents, revisions and change history in one SQLite file.

    Args:
        path: the database file (created with its directory if missing).
        fencing_floor: the first fencing token of a guard never written
            (callers pass the clock in microseconds, as for ``memory://``, so
            tokens stay increasing even if the file is deleted).
        history: changes kept for ``changes_since``: at least this many (in
            whole commits), pruned when 10% more have piled up.
        synchronous: ``"full"`` (default): each commit is fsynced before it
            returns; ``"normal"``: a commit survives a crash of the process
            but the last ones may be lost in a power cut (and their fencing
            tokens handed out again), for a fraction of the latency.

    Raises:
        StoreUnavailable: the file cannot be opened, is not a RunGuard
            store, or another process has it open.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fencing_floor: int,
        history: int = 10_000,
        synchronous: str = "full",
    ) -> None:
        if history < 1:
            raise ValueError(f"history must be at least 1, got {history}")
        if synchronous not in ("full", "normal"):
            raise ValueError(f"synchronous must be full or normal, got {synchronous!r}")
        self._synchronous = synchronous.upper()
        self._path = Path(path)
        self._history = history
        self._slack = max(1, history // 10)
        self._feed = Fanout()
        self._closed = False
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="runguard-sqlite")
        try:
            self._lock = self._take_lock()
            self._db, epoch, revision, self._floor, self._kept, fence = self._worker.submit(
                self._open
            ).result()
            super().__init__(epoch=epoch, revision=revision)
            self._new = NewDocuments(max(fencing_floor, fence))
            self._count = self._worker.submit(
                lambda: int(self._db.execute("SELECT count(*) FROM guards").fetchone()[0])
            ).result()
            # The worker's own count: commits made there before the event
            # loop has run _publish for the previous ones still number on.
            self._committed = self._revision
        except BaseException:
            self._worker.shutdown(wait=False)
            raise

    # -- opening -------------------------------------------------------------

    def _take_lock(self) -> int:
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(f"{self._path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            raise StoreUnavailable(f"cannot open {self._path}: {error}") from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            raise StoreUnavailable(
                f"{self._path} is in use by another RunGuard process (one server per file)"
            ) from error
        return fd

    def _open(self) -> tuple[sqlite3.Connection, str, int, int, int, int]:
        try:
            db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=True)
        except sqlite3.Error as error:
            raise StoreUnavailable(f"cannot open {self._path}: {error}") from error
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self._synchronous}")
            db.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('epoch', ?), ('revision', '0'), ('floor', '0'),"
                " ('fence', '0')",
                (uuid.uuid4().hex,),
            )
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            kept = db.execute("SELECT count(*) FROM changes").fetchone()[0]
            db.execute("COMMIT")
            return (
                db,
                meta["epoch"],
                int(meta["revision"]),
                int(meta["floor"]),
                int(kept),
                int(meta["fence"]),
            )
        except (sqlite3.Error, KeyError, ValueError) as error:
            db.close()
            raise StoreUnavailable(f"{self._path} is not a RunGuard store: {error}") from error

    # -- running on the worker -----------------------------------------------

    async def _run(self, work: Callable[[], T]) -> T:
        if self._closed:
            raise StoreUnavailable("the store is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._worker, work)
        except sqlite3.Error as error:
            # Callers see what failed, not where the file is (that is the operator's).
            raise StoreUnavailable(f"the sqlite store failed: {error}") from error
        except CodecError as error:
            raise StoreUnavailable(f"the sqlite store holds a bad record: {error}") from error
        except RuntimeError as error:  # the worker was shut down by close()
            raise StoreUnavailable("the store is closed") from error

    @property
    def durable(self) -> bool:
        return True

    @property
    def exclusive(self) -> bool:
        return True  # one server process per file (the lock)

    def _decode(self, text: str) -> GuardDoc:
        """A stored document without the waiters of earlier incarnations (their calls died)."""
        return only_waiters_of(decode_doc(text), self._replica)

    def _read(self, guard: str) -> Versioned:
        row = self._db.execute(
            "SELECT version, doc FROM guards WHERE name = ?", (guard,)
        ).fetchone()
        if row is None:
            return self._new.absent(guard)
        return Versioned(self._decode(row[1]), int(row[0]))

    async def read(self, guard: str) -> Versioned:
        return await self._run(lambda: self._read(guard))

    async def read_many(self, guards: Sequence[str]) -> list[Versioned]:
        return await self._run(lambda: [self._read(guard) for guard in guards])

    async def commit_batch(self, writes: Sequence[Write]) -> Batch:
        encoded = [
            (write, encode_doc(write.doc), [encode_change(c) for c in write.changes])
            for write in writes
        ]
        loop = asyncio.get_running_loop()

        def work() -> Batch:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                revision = self._committed
                fence, count, kept, floor = (
                    self._new.fencing_floor,
                    self._count,
                    self._kept,
                    self._floor,
                )
                reclaims = dict.fromkeys((reclaim_shard(w.guard) for w in writes), 0)
                landed: list[Write] = []
                moved: dict[str, Versioned] = {}
                for write, text, changes in encoded:
                    guard, shard = write.guard, reclaim_shard(write.guard)
                    # The compare is the statement's own WHERE: one statement a write.
                    # The version is the revision that wrote it, so a guard reclaimed and
                    # written again never repeats an old version.
                    if write.version <= 0:
                        absent_at = -(self._new.reclaims[shard] + reclaims[shard])
                        swapped = write.version == absent_at and (
                            write.reclaim
                            or db.execute(
                                "INSERT INTO guards VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
                                (guard, revision + 1, text),
                            ).rowcount
                            == 1
                        )
                    elif write.reclaim:
                        swapped = (
                            db.execute(
                                "DELETE FROM guards WHERE name = ? AND version = ?",
                                (guard, write.version),
                            ).rowcount
                            == 1
                        )
                    else:
                        swapped = (
                            db.execute(
                                "UPDATE guards SET version = ?, doc = ? "
                                "WHERE name = ? AND version = ?",
                                (revision + 1, text, guard, write.version),
                            ).rowcount
                            == 1
                        )
                    if not swapped:
                        moved[guard] = self._read(guard)
                        continue
                    revision += 1
                    if write.reclaim:
                        fence = max(fence, write.doc.next_fencing)
                        count -= write.version > 0
                        reclaims[shard] += write.version > 0
                    else:
                        count += write.version <= 0
                    db.executemany(
                        "INSERT INTO changes VALUES (?, ?, ?)",
                        [(revision, i, c) for i, c in enumerate(changes)],
                    )
                    kept += len(changes)
                    landed.append(write)
                if landed:
                    if fence != self._new.fencing_floor:
                        db.execute("UPDATE meta SET value = ? WHERE key = 'fence'", (str(fence),))
                    db.execute("UPDATE meta SET value = ? WHERE key = 'revision'", (str(revision),))
                    if kept > self._history + self._slack:
                        kept, floor = self._prune(kept, floor)
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
            first = self._committed + 1
            self._kept, self._floor, self._committed = kept, floor, revision
            self._new.fencing_floor, self._count = fence, count
            for shard, n in reclaims.items():
                self._new.reclaims[shard] += n
            commits = tuple(w.landed(at) for at, w in enumerate(landed, start=first))
            # Scheduled from this one thread in commit order, so subscribers
            # see revision order, and before commit_batch() resumes.
            if commits:
                loop.call_soon_threadsafe(self._publish, commits)
            return Batch(commits, moved)

        return await self._run(work)

    def _prune(self, kept: int, floor: int) -> tuple[int, int]:
        """Drop the oldest whole commits while at least ``history`` changes stay."""
        db = self._db
        row = db.execute(
            "SELECT revision FROM changes ORDER BY revision DESC, position DESC LIMIT 1 OFFSET ?",
            (self._history - 1,),
        ).fetchone()
        if row is None:
            return kept, floor
        keep_from = int(row[0])
        gone = db.execute(
            "SELECT count(*), max(revision) FROM changes WHERE revision < ?", (keep_from,)
        ).fetchone()
        if not gone[0]:
            return kept, floor
        db.execute("DELETE FROM changes WHERE revision < ?", (keep_from,))
        floor = max(floor, int(gone[1]))
        db.execute("UPDATE meta SET value = ? WHERE key = 'floor'", (str(floor),))
        return kept - int(gone[0]), floor

    def _publish(self, commits: Sequence[Commit]) -> None:
        self._advance(commits[-1].revision)
        for commit in commits:
            self._feed.publish(commit)

    def _as_of_one_revision(self, read: Callable[[], list[GuardDoc]]) -> tuple[int, list[GuardDoc]]:
        """``read``'s documents and the revision they are as of, in one read transaction."""
        db = self._db
        db.execute("BEGIN")
        try:
            revision = int(
                db.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()[0]
            )
            return revision, read()
        finally:
            db.execute("COMMIT")

    async def snapshot(self, guards: Sequence[str] | None) -> tuple[int, list[GuardDoc]]:
        def read() -> list[GuardDoc]:
            if guards is not None:
                return [self._read(name).doc for name in guards]
            rows = self._db.execute("SELECT doc FROM guards ORDER BY name")
            return [self._decode(row[0]) for row in rows]

        return await self._run(lambda: self._as_of_one_revision(read))

    async def list_guards(self, after: str, limit: int) -> tuple[int, list[GuardDoc]]:
        def read() -> list[GuardDoc]:
            rows = self._db.execute(
                "SELECT doc FROM guards WHERE name > ? ORDER BY name LIMIT ?", (after, limit)
            )
            return [self._decode(row[0]) for row in rows]

        return await self._run(lambda: self._as_of_one_revision(read))

    async def guard_count(self) -> int:
        return self._count  # kept by the commits, so no scan of the table

    async def defaults(self, proposed: GuardSettings) -> GuardSettings:
        def work() -> GuardSettings:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('defaults', ?)",
                    (encode_settings(proposed).decode(),),
                )
                text = db.execute("SELECT value FROM meta WHERE key = 'defaults'").fetchone()[0]
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
            return decode_settings(text)

        return await self._run(work)

    async def changes_since(self, after: int) -> list[Change] | None:
        def work() -> list[Change] | None:
            if after > self._committed or after < self._floor:
                return None
            rows = self._db.execute(
                "SELECT revision, change FROM changes WHERE revision > ? "
                "ORDER BY revision, position",
                (after,),
            ).fetchall()
            return [decode_change(text, int(revision)) for revision, text in rows]

        return await self._run(work)

    def subscribe(self) -> AsyncIterator[Commit]:
        return self._feed.subscribe()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        with contextlib.suppress(sqlite3.Error):
            await loop.run_in_executor(self._worker, self._db.close)
        self._worker.shutdown(wait=True)
        os.close(self._lock)
        self._feed.close()
