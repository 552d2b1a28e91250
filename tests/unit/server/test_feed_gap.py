"""A feed that lost commits (a compacted distributed store) resyncs every watcher."""

from __future__ import annotations

from collections.abc import AsyncIterator

from runguard.server.config import ServerConfig
from runguard.server.coordinator import Coordinator
from runguard.server.core import BeginCommand, Change, GuardPolicy, begin
from runguard.server.hub import Snapshot
from runguard.server.stores import Commit, FeedGap, MemoryStore
from tests.runs import run_of


async def _commit(store: MemoryStore, guard: str, operation_id: str) -> Commit:
    current = await store.read(guard)
    command = BeginCommand(operation_id=operation_id, fingerprint=operation_id, lease_token="t")
    step = begin(current.doc, GuardPolicy(), command, now=1.0)
    return await store.commit(guard, current.version, step.doc, step.changes)


async def test_a_gap_in_the_feed_resyncs_every_watcher(
    config: ServerConfig, store: MemoryStore
) -> None:
    """After a FeedGap, a watcher's next message is a resynced Snapshot of the store as it is."""
    coordinator = Coordinator(config, store)
    stream = coordinator.hub.stream(["g"])
    first = await anext(stream)
    assert isinstance(first, Snapshot)
    assert not first.resynced
    seen = await _commit(store, "g", "a")
    missed = await _commit(store, "g", "b")

    async def feed() -> AsyncIterator[Commit | FeedGap]:
        yield seen
        yield FeedGap(after=seen.revision)  # `missed` never arrives

    await coordinator._feed.follow(feed())
    again = await anext(stream)
    assert isinstance(again, Snapshot)
    assert again.resynced
    assert again.revision == missed.revision
    assert [run.operation_id for run in again.guards[0].holders] == ["a"]
    await stream.aclose()


async def test_without_a_gap_the_watcher_gets_each_change(
    config: ServerConfig, store: MemoryStore
) -> None:
    """The same feed without the gap hands the watcher the change itself."""
    coordinator = Coordinator(config, store)
    stream = coordinator.hub.stream(["g"])
    await anext(stream)
    seen = await _commit(store, "g", "a")

    async def feed() -> AsyncIterator[Commit | FeedGap]:
        yield seen

    await coordinator._feed.follow(feed())
    change = await anext(stream)
    assert isinstance(change, Change)
    assert run_of(change).operation_id == "a"
    await stream.aclose()
