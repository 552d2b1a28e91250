"""The etcd store's guard keys and the records they hold.

``<prefix>/g/<guard>`` holds a record (``codec``) of the guard's document and the
changes of the commit that wrote it, tagged with the commit id of the call that sent
it. This module encodes and decodes those records, and keeps the writes of this
replica's recent Txns by commit id until the feed brings them back, so its own
commits are not decoded again. It sends nothing to etcd.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from runguard.server.core import GuardDoc
from runguard.server.errors import StoreUnavailable
from runguard.server.stores.base import Commit, Write
from runguard.server.stores.codec import (
    CodecError,
    Record,
    decode_record,
    encode_record,
    record_commit_id,
)

__all__ = ["SENT_KEPT", "Records"]

SENT_KEPT = 4_096
"""Recent Txns whose writes are kept for the feed (older ones are decoded from it)."""


class Records:
    """Guard keys under ``<prefix>/g/``, their records, and this replica's sent writes."""

    def __init__(self, prefix: str) -> None:
        self.prefix = f"{prefix}/g/".encode()
        self._sent: OrderedDict[str, dict[str, Write]] = OrderedDict()
        """The writes of this replica's recent Txns by commit id, until the feed brings
        them back: its own commits are not decoded again."""

    def key(self, guard: str) -> bytes:
        """The key a guard's record lives at."""
        return self.prefix + guard.encode()

    def name(self, key: bytes) -> str:
        """The guard a key holds."""
        return key[len(self.prefix) :].decode()

    def encode(self, writes: Sequence[Write], commit_id: str) -> list[tuple[Write, bytes]]:
        """Each write with the record it puts (nothing for a reclaim: it deletes)."""
        return [
            (w, b"" if w.reclaim else encode_record(w.doc, w.changes, commit_id=commit_id))
            for w in writes
        ]

    def decode(self, value: bytes, revision: int) -> Record:
        """The record a key holds, written at ``revision``.

        Raises:
            StoreUnavailable: the value is not a record this version can read.
        """
        try:
            return decode_record(value, revision)
        except CodecError as error:
            raise StoreUnavailable(f"etcd holds a bad guard record: {error}") from error

    def remember_sent(self, commit_id: str, writes: Sequence[Write]) -> None:
        """Keep a batch's writes until the feed brings them back (at most SENT_KEPT)."""
        # One id for every Txn of a call: each adds its own writes.
        self._sent.setdefault(commit_id, {}).update((w.guard, w) for w in writes if not w.reclaim)
        while len(self._sent) > SENT_KEPT:
            self._sent.popitem(last=False)

    def forget_sent(self, commit_id: str) -> None:
        """Drop a batch's writes: its Txn did not land, the feed will not bring them."""
        self._sent.pop(commit_id, None)

    def own(self, item: Any, revision: int) -> Commit | None:
        """The commit of a PUT event this replica wrote, from its write: not decoded."""
        commit_id = record_commit_id(item.value) or ""
        sent = self._sent.get(commit_id)
        if sent is None:
            return None
        write = sent.pop(self.name(item.key), None)
        if not sent:
            del self._sent[commit_id]
        return None if write is None else write.landed(revision)

    def reclaimed(self, item: Any) -> Commit:
        """The commit of a DELETE event: the guard was reclaimed (it carries no changes)."""
        guard = self.name(item.key)
        return Commit(
            revision=int(item.mod_revision),
            guard=guard,
            doc=GuardDoc(name=guard, next_fencing=0),
            changes=(),
            reclaimed=True,
        )
