"""What ``sqlite://`` adds to the store contract: it keeps everything across a reopen."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from runguard.server.core import BeginCommand, GuardPolicy, begin, end
from runguard.server.errors import StoreUnavailable
from runguard.server.stores import SqliteStore

POLICY = GuardPolicy()


async def _cycle(store: SqliteStore, op: str) -> None:
    current = await store.read("g")
    granted = begin(
        current.doc, POLICY, BeginCommand(operation_id=op, fingerprint=op, lease_token=op), 1.0
    )
    await store.commit("g", current.version, granted.doc, granted.changes)
    current = await store.read("g")
    ended = end(current.doc, POLICY, op, op, 2.0)
    await store.commit("g", current.version, ended.doc, ended.changes)


async def test_reopening_keeps_epoch_revision_documents_and_history(tmp_path: Path) -> None:
    """A reopened file has the same epoch, revision, documents and resumable changes."""
    path = tmp_path / "rg.db"
    store = SqliteStore(path, fencing_floor=1, history=100)
    await _cycle(store, "a")
    epoch, revision, doc = store.epoch, store.revision, (await store.read("g")).doc
    changes = await store.changes_since(0)
    await store.close()
    again = SqliteStore(path, fencing_floor=1, history=100)
    try:
        assert (again.epoch, again.revision) == (epoch, revision)
        assert (await again.read("g")).doc == doc
        assert await again.changes_since(0) == changes
        assert await again.snapshot(None) == (revision, [doc])
    finally:
        await again.close()


async def test_pruned_history_stays_pruned_after_a_reopen(tmp_path: Path) -> None:
    """Changes pruned before a restart are reported gone (None) after it, never as a gap."""
    path = tmp_path / "rg.db"
    store = SqliteStore(path, fencing_floor=1, history=2)
    for n in range(5):
        await _cycle(store, f"op-{n}")
    await store.close()
    again = SqliteStore(path, fencing_floor=1, history=2)
    try:
        assert await again.changes_since(0) is None
        kept = await again.changes_since(again.revision - 2)
        assert kept is not None
        assert [c.revision for c in kept] == [again.revision - 1, again.revision]
    finally:
        await again.close()


def test_a_file_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    """A file that is no SQLite database gives StoreUnavailable naming the path."""
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreUnavailable, match=r"junk\.db"):
        SqliteStore(path, fencing_floor=1)


async def test_a_closed_store_is_unavailable(tmp_path: Path) -> None:
    """Calls on a closed store raise StoreUnavailable, not a sqlite3 error."""
    store = SqliteStore(tmp_path / "rg.db", fencing_floor=1)
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.read("g")


async def test_sqlite_errors_are_wrapped_at_the_edge(tmp_path: Path) -> None:
    """A failing SQLite statement leaves the store as StoreUnavailable, from the sqlite3 error."""
    store = SqliteStore(tmp_path / "rg.db", fencing_floor=1)
    try:
        await store._run(lambda: store._db.execute("DROP TABLE guards"))
        with pytest.raises(StoreUnavailable) as caught:
            await store.read("g")
        assert isinstance(caught.value.__cause__, sqlite3.Error)
    finally:
        await store.close()
