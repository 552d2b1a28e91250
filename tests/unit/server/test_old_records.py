"""Durable stores holding what an older server wrote (format 1, JSON) read it, and rewrite
a guard in format 2 when they next commit it."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

from etcd3aio import Etcd3Client

from runguard.server.core import BeginCommand, GuardPolicy, begin, end
from runguard.server.stores import SqliteStore, Store, codec_v1, open_store
from runguard.server.stores.codec import (
    MAGIC,
    decode_change,
    decode_doc,
    decode_record,
    record_commit_id,
)
from tests import etcd_harness

POLICY = GuardPolicy(capacity=1)


async def _grant(store: Store, op: str, now: float, *, wait: float = 0.0) -> None:
    current = await store.read("g")
    step = begin(
        current.doc,
        POLICY,
        BeginCommand(operation_id=op, fingerprint=op, lease_token=op, wait=wait),
        now,
    )
    await store.commit("g", current.version, step.doc, step.changes)


async def _end(store: Store, op: str, now: float) -> None:
    current = await store.read("g")
    step = end(current.doc, POLICY, op, op, now)
    await store.commit("g", current.version, step.doc, step.changes)


def _to_format_1(path: Path) -> None:
    """Rewrite every document and change of a sqlite file as an older server kept them."""
    db = sqlite3.connect(path)
    try:
        for name, value in db.execute("SELECT name, doc FROM guards").fetchall():
            text = codec_v1.encode_doc(decode_doc(value)).decode()
            db.execute("UPDATE guards SET doc = ? WHERE name = ?", (text, name))
        rows = db.execute("SELECT revision, position, change FROM changes").fetchall()
        for revision, position, value in rows:
            text = codec_v1.encode_change(decode_change(value, revision)).decode()
            db.execute(
                "UPDATE changes SET change = ? WHERE revision = ? AND position = ?",
                (text, revision, position),
            )
        db.commit()
    finally:
        db.close()


def _kinds(path: Path) -> set[str]:
    """The sqlite storage classes of the stored documents."""
    db = sqlite3.connect(path)
    try:
        return {row[0] for row in db.execute("SELECT typeof(doc) FROM guards")}
    finally:
        db.close()


async def test_a_sqlite_file_of_format_1_reads_and_moves_to_format_2(tmp_path: Path) -> None:
    """Documents and changes an older server kept as JSON text read equal after a reopen,
    and the guard's next commit writes it as format 2 (a blob)."""
    path = tmp_path / "rg.db"
    store = SqliteStore(path, fencing_floor=1, history=100)
    await _grant(store, "a", 1.0)
    await _end(store, "a", 1.5)
    await _grant(store, "b", 2.0)
    doc, changes = (await store.read("g")).doc, await store.changes_since(0)
    await store.close()
    assert _kinds(path) == {"blob"}
    _to_format_1(path)
    assert _kinds(path) == {"text"}
    again = SqliteStore(path, fencing_floor=1, history=100)
    try:
        read = (await again.read("g")).doc
        assert read == doc
        assert list(read.accepted) == ["a", "b"]
        assert await again.changes_since(0) == changes
        await _end(again, "b", 3.0)
        assert (await again.read("g")).doc.holders == ()
    finally:
        await again.close()
    assert _kinds(path) == {"blob"}


async def test_an_etcd_record_of_format_1_reads_and_moves_to_format_2() -> None:
    """A guard record an older server put in etcd as JSON reads equal in a store opened on
    it, and that store's next commit writes it as format 2 with its commit id in front."""
    prefix = f"old-{uuid.uuid4().hex[:12]}"
    cluster = etcd_harness.shared(1)
    key = f"{prefix}/g/g".encode()
    client = Etcd3Client(cluster.endpoints.split(","))
    await client.connect()
    try:
        assert client.kv is not None
        first = open_store(cluster.url(prefix))
        try:
            await _grant(first, "a", 1.0)
            await _grant(first, "b", 2.0, wait=60.0)
            doc = (await first.read("g")).doc
        finally:
            await first.close()
        stored = (await client.kv.get(key)).kvs[0].value
        assert stored.startswith(MAGIC)
        record = decode_record(stored, 1)
        old = codec_v1.encode_record(record.doc, record.changes, commit_id=record.commit_id)
        await client.kv.put(key, old)

        second = open_store(cluster.url(prefix))
        try:
            assert (await second.read("g")).doc == doc
            await _end(second, "a", 3.0)
            assert [h.run.operation_id for h in (await second.read("g")).doc.holders] == ["b"]
        finally:
            await second.close()
        rewritten = (await client.kv.get(key)).kvs[0].value
        assert rewritten.startswith(MAGIC)
        assert record_commit_id(rewritten) == decode_record(rewritten, 1).commit_id != ""
    finally:
        await client.close()
