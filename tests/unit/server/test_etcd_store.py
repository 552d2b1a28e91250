"""What the etcd store adds to the contract: a lost Txn answer is resolved, never resent."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from etcd3aio import EtcdTransientError
from etcd3aio.kv import KVService

from runguard.server.core import BeginCommand, GuardPolicy, begin
from runguard.server.errors import StoreUnavailable, VersionConflict
from runguard.server.stores import Store, open_store
from tests import etcd_harness

POLICY = GuardPolicy()


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    """An etcd store on the shared single-member cluster, under a prefix of its own."""
    opened = open_store(etcd_harness.shared(1).url(f"unit-{uuid.uuid4().hex[:12]}"))
    yield opened
    await opened.close()


def _lose_answers(monkeypatch: pytest.MonkeyPatch, *, lands: bool) -> list[Any]:
    """Make every Txn with a put raise as a timeout would: after landing, or without sending."""
    calls: list[Any] = []
    real = KVService.txn

    async def txn(self: KVService, compare: Any, success: Any, *args: Any, **kwargs: Any) -> Any:
        if not any(op.HasField("request_put") for op in success):
            return await real(self, compare, success, *args, **kwargs)
        calls.append(kwargs.get("max_attempts"))
        if lands:
            await real(self, compare, success, *args, **kwargs)
        raise EtcdTransientError("KV.Txn failed: DEADLINE_EXCEEDED")

    monkeypatch.setattr(KVService, "txn", txn)
    return calls


async def _grant(store: Store, op: str) -> Any:
    current = await store.read("g")
    step = begin(
        current.doc, POLICY, BeginCommand(operation_id=op, fingerprint=op, lease_token=op), 1.0
    )
    return current, step, await store.commit("g", current.version, step.doc, step.changes)


async def test_a_txn_that_landed_but_lost_its_answer_is_found_by_reading(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit whose answer is lost after it landed returns its commit, sent exactly once."""
    calls = _lose_answers(monkeypatch, lands=True)
    _, step, commit = await _grant(store, "a")
    assert calls == [1]
    after = await store.read("g")
    assert after.doc == step.doc
    assert after.version == commit.revision


async def test_a_txn_whose_fate_is_unknown_is_unavailable_not_resent(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit whose answer is lost while the guard is unchanged is UNAVAILABLE, sent once."""
    calls = _lose_answers(monkeypatch, lands=False)
    with pytest.raises(StoreUnavailable, match="outcome is unknown"):
        await _grant(store, "a")
    assert calls == [1]
    assert (await store.read("g")).version <= 0  # still not stored


async def test_a_lost_answer_on_a_guard_that_moved_on_is_a_conflict(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If another writer moved the guard meanwhile, the lost write can never land: a conflict."""
    current = await store.read("g")
    step = begin(
        current.doc, POLICY, BeginCommand(operation_id="x", fingerprint="x", lease_token="x"), 1.0
    )
    await store.commit("g", current.version, step.doc, step.changes)  # the other writer
    _lose_answers(monkeypatch, lands=False)
    with pytest.raises(VersionConflict):
        await store.commit("g", current.version, step.doc, step.changes)


def test_no_endpoint_answering_is_unavailable_at_open() -> None:
    """A store whose endpoints are all dead cannot be opened: StoreUnavailable."""
    with pytest.raises(StoreUnavailable, match="no etcd endpoint answered"):
        open_store("etcd://127.0.0.1:1,127.0.0.1:2/x?timeout=0.5")
