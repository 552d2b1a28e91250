"""The watch hub: snapshot then changes, bounded buffers that coalesce, resumes, shutdown.

Commits are made as the coordinator makes them: the core decides, the memory
store commits, and the commit is handed to ``hub.publish`` (the feed's job).
The config buffers 4 changes per watcher and sends Progress every 50 ms.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import pytest

from runguard.server import core
from runguard.server.config import ServerConfig
from runguard.server.core import BeginCommand, Change, ChangeKind, ReleaseReason
from runguard.server.errors import ShuttingDown
from runguard.server.hub import Hub, Progress, Snapshot, WatchEvent
from runguard.server.stores import Commit, MemoryStore

T0 = 1_000.0
"""The time every transition runs at: no lease is ever due."""

TIMEOUT = 1.0
"""Seconds a stream may take to yield what a test expects."""

Stream = AsyncGenerator[WatchEvent, None]


class Feed:
    """Makes commits the way the coordinator does and publishes each to the hub."""

    def __init__(self, config: ServerConfig, store: MemoryStore, hub: Hub) -> None:
        self.config = config
        self.store = store
        self.hub = hub

    async def _apply(self, guard: str, step: core.Transition[Any]) -> Commit:
        assert step.dirty, step.outcome
        version = (await self.store.read(guard)).version
        commit = await self.store.commit(guard, version, step.doc, step.changes)
        self.hub.publish(commit)
        return commit

    async def begin(self, guard: str, op: str) -> Commit:
        """Grant ``op`` a slot of ``guard`` (lease token ``tok-<op>``) and publish it."""
        doc = (await self.store.read(guard)).doc
        command = BeginCommand(operation_id=op, fingerprint=f"fp-{op}", lease_token=f"tok-{op}")
        return await self._apply(guard, core.begin(doc, self.config.policy(guard), command, T0))

    async def configure(self, guard: str, capacity: int) -> Commit:
        """Give ``guard`` a capacity of its own, as ConfigureGuard does, and publish it."""
        doc = (await self.store.read(guard)).doc
        settings = dataclasses.replace(self.config.default_settings, capacity=capacity)
        return await self._apply(guard, core.configure(doc, self.config.policy(""), settings, T0))

    async def end(self, guard: str, op: str) -> Commit:
        """End ``op``'s run in ``guard`` and publish it."""
        doc = (await self.store.read(guard)).doc
        return await self._apply(
            guard, core.end(doc, self.config.policy(guard), op, f"tok-{op}", T0)
        )

    async def churn(self, guard: str, count: int) -> list[Commit]:
        """``count`` commits of one change each: Begin a new run, End it, and so on."""
        commits: list[Commit] = []
        for _ in range(count):
            holders = (await self.store.read(guard)).doc.holders
            if holders:
                commits.append(await self.end(guard, holders[0].run.operation_id))
            else:
                commits.append(await self.begin(guard, f"{guard}-{self.store.revision}"))
        return commits


@pytest.fixture
def feed(config: ServerConfig, store: MemoryStore, hub: Hub) -> Feed:
    """Commits through the store, published to the hub."""
    return Feed(config, store, hub)


async def next_event(stream: Stream) -> WatchEvent:
    """The stream's next event, failing the test if none comes in time."""
    return await asyncio.wait_for(anext(stream), TIMEOUT)


async def next_snapshot(stream: Stream) -> Snapshot:
    """The next event, which must be a Snapshot."""
    event = await next_event(stream)
    assert isinstance(event, Snapshot), event
    return event


async def next_change(stream: Stream) -> Change:
    """The next event, which must be a Change."""
    event = await next_event(stream)
    assert isinstance(event, Change), event
    return event


def holders(snapshot: Snapshot) -> dict[str, list[str]]:
    """The operation_ids holding each guard of a snapshot."""
    return {view.guard: [run.operation_id for run in view.holders] for view in snapshot.guards}


# -- snapshot, then changes ------------------------------------------------------


async def test_stream_starts_with_a_snapshot_then_the_changes_of_its_guards(
    hub: Hub, feed: Feed, store: MemoryStore
) -> None:
    """A new stream sends the watched guards as of now, then each later change to them only."""
    await feed.configure("wide", 3)
    await feed.begin("a", "a-1")
    async with aclosing(hub.stream(["a", "wide"])) as stream:
        snapshot = await next_snapshot(stream)
        assert snapshot.revision == store.revision
        assert not snapshot.resynced
        assert holders(snapshot) == {"a": ["a-1"], "wide": []}
        assert {v.guard: v.capacity for v in snapshot.guards} == {"a": 1, "wide": 3}
        await feed.begin("b", "b-1")
        released = await feed.end("a", "a-1")
        acquired = await feed.begin("wide", "w-1")
        assert await next_change(stream) == released.changes[0]
        assert await next_change(stream) == acquired.changes[0]


async def test_stream_of_every_guard_snapshots_every_written_guard(hub: Hub, feed: Feed) -> None:
    """A stream without guards snapshots every guard written so far and gets every change."""
    await feed.begin("a", "a-1")
    await feed.begin("b", "b-1")
    async with aclosing(hub.stream(None)) as stream:
        assert holders(await next_snapshot(stream)) == {"a": ["a-1"], "b": ["b-1"]}
        commit = await feed.end("b", "b-1")
        change = await next_change(stream)
        assert change == commit.changes[0]
        assert (change.kind, change.reason) == (ChangeKind.RELEASED, ReleaseReason.ENDED)


async def test_quiet_stream_yields_progress_at_the_latest_revision(
    hub: Hub, feed: Feed, store: MemoryStore
) -> None:
    """With no change to its guards, a stream sends Progress carrying the newest revision."""
    async with aclosing(hub.stream(["a"])) as stream:
        await next_snapshot(stream)
        await feed.begin("other", "o-1")
        assert await next_event(stream) == Progress(store.revision)
        assert await next_event(stream) == Progress(store.revision)


# -- bounded buffers -------------------------------------------------------------


async def test_watcher_that_reads_nothing_gets_every_change_up_to_its_buffer(
    hub: Hub, feed: Feed, config: ServerConfig
) -> None:
    """Exactly watch_buffer unread changes are all delivered, in order, with no resync."""
    async with aclosing(hub.stream(None)) as stream:
        await next_snapshot(stream)
        commits = await feed.churn("a", config.watch_buffer)
        for commit in commits:
            assert await next_change(stream) == commit.changes[0]


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(1, id="one-over"),
        pytest.param(10, id="far-over"),
    ],
)
async def test_watcher_that_falls_behind_is_resynced_once_and_others_get_every_change(
    hub: Hub, feed: Feed, store: MemoryStore, config: ServerConfig, extra: int
) -> None:
    """Past watch_buffer unread changes a watcher gets one resynced Snapshot; a reader gets all."""
    async with aclosing(hub.stream(None)) as slow, aclosing(hub.stream(None)) as fast:
        await next_snapshot(slow)
        await next_snapshot(fast)
        for i in range(config.watch_buffer + extra):
            (commit,) = await feed.churn("b" if i else "a", 1)
            assert await next_change(fast) == commit.changes[0]
        resync = await next_snapshot(slow)
        assert resync.resynced
        assert resync.revision == store.revision
        assert holders(resync) == {
            guard: [h.run.operation_id for h in (await store.read(guard)).doc.holders]
            for guard in ("a", "b")
        }
        assert await next_event(slow) == Progress(store.revision)
        later = await feed.churn("a", 1)
        assert await next_change(slow) == later[0].changes[0]
        assert await next_change(fast) == later[0].changes[0]


async def test_publish_is_synchronous_even_with_a_stalled_watcher(
    hub: Hub, store: MemoryStore, config: ServerConfig
) -> None:
    """publish() is a plain function that returns at once, however far a watcher is behind."""
    assert not inspect.iscoroutinefunction(Hub.publish)
    policy = config.policy("a")
    async with aclosing(hub.stream(None)) as stalled:
        await next_snapshot(stalled)
        for i in range(100):
            current = await store.read("a")
            command = BeginCommand(operation_id=f"op-{i}", fingerprint=f"fp-{i}", lease_token="t")
            step = (
                core.end(current.doc, policy, f"op-{i - 1}", "t", T0)
                if current.doc.holders
                else core.begin(current.doc, policy, command, T0)
            )
            commit = await store.commit("a", current.version, step.doc, step.changes)
            hub.publish(commit)  # a plain call: there is nothing to await
        resync = await next_snapshot(stalled)
        assert (resync.resynced, resync.revision) == (True, store.revision)


# -- resuming --------------------------------------------------------------------


async def test_resume_with_the_right_epoch_replays_exactly_the_missed_changes(
    hub: Hub, feed: Feed, store: MemoryStore
) -> None:
    """A resume after revision r sends the watched guards' changes above r, then live ones."""
    seen = (await feed.begin("a", "a-1")).revision
    released = await feed.end("a", "a-1")
    await feed.begin("b", "b-1")
    acquired = await feed.begin("a", "a-2")
    async with aclosing(hub.stream(["a"], seen, store.epoch)) as stream:
        assert await next_change(stream) == released.changes[0]
        assert await next_change(stream) == acquired.changes[0]
        live = await feed.end("a", "a-2")
        assert await next_change(stream) == live.changes[0]


async def test_resume_at_the_current_revision_replays_nothing(
    hub: Hub, feed: Feed, store: MemoryStore
) -> None:
    """A watcher that missed nothing gets no Snapshot: the next thing is Progress."""
    await feed.churn("a", 3)
    async with aclosing(hub.stream(None, store.revision, store.epoch)) as stream:
        assert await next_event(stream) == Progress(store.revision)


@pytest.mark.parametrize(
    ("after", "right_epoch"),
    [
        pytest.param(2, False, id="wrong-epoch"),
        pytest.param(1, True, id="history-evicted"),
        pytest.param(1_000, True, id="revision-from-the-future"),
    ],
)
async def test_resume_that_cannot_be_replayed_starts_with_a_resynced_snapshot(
    hub: Hub, feed: Feed, store: MemoryStore, after: int, right_epoch: bool
) -> None:
    """A resume from another epoch or past the kept history gets a resynced Snapshot, not a gap."""
    await feed.churn("a", 12)  # the store keeps 8 changes
    epoch = store.epoch if right_epoch else "an-earlier-epoch"
    async with aclosing(hub.stream(["a"], after, epoch)) as stream:
        snapshot = await next_snapshot(stream)
        assert snapshot.resynced
        assert snapshot.revision == store.revision
        assert [v.guard for v in snapshot.guards] == ["a"]
        commit = await feed.churn("a", 1)
        assert await next_change(stream) == commit[0].changes[0]


# -- shutdown and unsubscribe ----------------------------------------------------


async def test_close_ends_an_open_stream_with_shutting_down(hub: Hub) -> None:
    """hub.close() makes a stream that is waiting for changes raise ShuttingDown."""
    async with aclosing(hub.stream(None)) as stream:
        await next_snapshot(stream)
        waiting = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0)
        hub.close()
        with pytest.raises(ShuttingDown):
            await asyncio.wait_for(waiting, TIMEOUT)
    assert hub.watchers == 0


async def test_close_refuses_new_streams(hub: Hub) -> None:
    """After hub.close() a new stream raises ShuttingDown before sending anything."""
    hub.close()
    async with aclosing(hub.stream(None)) as stream:
        with pytest.raises(ShuttingDown):
            await next_event(stream)


async def test_aclose_unregisters_the_watcher(hub: Hub) -> None:
    """Closing a stream removes its watcher; the others stay."""
    first = hub.stream(None)
    second = hub.stream(["a"])
    await next_snapshot(first)
    await next_snapshot(second)
    assert hub.watchers == 2
    await first.aclose()
    assert hub.watchers == 1
    await second.aclose()
    assert hub.watchers == 0


async def test_cancelling_a_waiting_reader_unregisters_the_watcher(hub: Hub) -> None:
    """A reader cancelled while the stream waits (a client hanging up) leaves no watcher behind."""
    async with aclosing(hub.stream(None)) as stream:
        await next_snapshot(stream)
        waiting = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert hub.watchers == 0
