"""Queued Begins' grants: a commit that grants a waiting Begin hands it its holder."""

from __future__ import annotations

import pytest

from runguard.server.core import BeginCommand, GuardPolicy, begin
from runguard.server.errors import ShuttingDown
from runguard.server.grants import Grants
from runguard.server.stores import Commit, MemoryStore


async def _grant(store: MemoryStore, guard: str, operation_id: str) -> Commit:
    current = await store.read(guard)
    command = BeginCommand(operation_id=operation_id, fingerprint=operation_id, lease_token="t")
    step = begin(current.doc, GuardPolicy(), command, now=1.0)
    return await store.commit(guard, current.version, step.doc, step.changes)


async def test_a_commit_granting_a_waiting_begin_hands_it_the_holder(store: MemoryStore) -> None:
    """The future of the granted guard and operation_id is set to its holder; others wait on."""
    grants = Grants()
    mine = grants.watch(("g", "a"))
    other = grants.watch(("g", "b"))
    grants.hand_over(await _grant(store, "g", "a"))
    assert mine.done()
    assert mine.result().run.operation_id == "a"
    assert mine.result().lease_token == "t"
    assert not other.done()


async def test_unwatching_the_last_future_of_a_begin_forgets_it() -> None:
    """A Begin no longer waits once its only future is unwatched."""
    grants = Grants()
    first = grants.watch(("g", "a"))
    second = grants.watch(("g", "a"))
    grants.unwatch(("g", "a"), first)
    assert grants.waiting() == frozenset({("g", "a")})
    grants.unwatch(("g", "a"), second)
    assert grants.waiting() == frozenset()


async def test_draining_fails_waiting_begins_and_those_that_come_later() -> None:
    """After drain, the futures watched before and after it fail with ShuttingDown."""
    grants = Grants()
    before = grants.watch(("g", "a"))
    grants.drain()
    after = grants.watch(("g", "b"))
    for future in (before, after):
        with pytest.raises(ShuttingDown):
            future.result()
