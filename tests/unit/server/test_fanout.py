"""Watch fan-out: one encoding per change shared by every stream, little state per watcher.

The servicer's Watch runs without sockets here, on a stand-in for the grpc
context that records what is written; commits are made with the memory store
and handed to the hub as the coordinator's feed hands them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import itertools
import tracemalloc
from contextlib import aclosing
from typing import Any, NoReturn

import grpc
import pytest

from runguard.server import core
from runguard.server.config import ServerConfig
from runguard.server.coordinator import Coordinator
from runguard.server.core import BeginCommand, Change
from runguard.server.hub import Hub, Progress, Snapshot, WatchEvent
from runguard.server.servicer import RunGuardServicer, _encode
from runguard.server.stores import Commit, MemoryStore
from runguard.v1 import runguard_pb2 as pb

T0 = 1_000.0
TIMEOUT = 1.0
"""Seconds a stream may take to yield what a test expects."""


class Recorder:
    """What Watch uses of a grpc context: it records every write."""

    def __init__(self, *, writes_messages: bool = False) -> None:
        if writes_messages:
            self.writes_messages = True
        self.written: list[Any] = []
        self.arrived = asyncio.Event()

    def peer(self) -> str:
        return "test"

    def done(self) -> bool:
        return False

    async def write(self, message: Any) -> None:
        self.written.append(message)
        self.arrived.set()

    async def abort(self, code: grpc.StatusCode, details: str = "", trailers: Any = ()) -> NoReturn:
        raise AssertionError(f"aborted {code}: {details}")

    async def until(self, count: int) -> list[Any]:
        """Wait until ``count`` messages have been written; returns them."""
        async with asyncio.timeout(TIMEOUT):
            while len(self.written) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.written


async def commit_begin(store: MemoryStore, config: ServerConfig, guard: str, op: str) -> Commit:
    """Grant ``op`` a slot of ``guard`` in the store (not yet published)."""
    current = await store.read(guard)
    command = BeginCommand(operation_id=op, fingerprint=f"fp-{op}", lease_token=f"tok-{op}")
    step = core.begin(current.doc, config.policy(guard), command, T0)
    return await store.commit(guard, current.version, step.doc, step.changes)


async def next_event(stream: Any) -> WatchEvent:
    """The stream's next event, failing the test if none comes in time."""
    event: WatchEvent = await asyncio.wait_for(anext(stream), TIMEOUT)
    return event


async def test_every_grpc_watcher_of_a_change_is_written_the_same_bytes_object(
    config: ServerConfig, store: MemoryStore
) -> None:
    """A change is serialised once: every gRPC stream of its guard writes one bytes object,
    which decodes to the change, while an HTTP stream is written the message itself."""
    coordinator = Coordinator(config, store)
    servicer = RunGuardServicer(coordinator)
    grpc_streams = [Recorder() for _ in range(3)]
    http_stream = Recorder(writes_messages=True)
    contexts = [*grpc_streams, http_stream]
    tasks: list[asyncio.Task[None]] = [
        asyncio.create_task(servicer.Watch(pb.WatchRequest(guards=["g"]), context))  # type: ignore[arg-type]
        for context in contexts
    ]
    try:
        for context in contexts:
            (snapshot,) = await context.until(1)
            assert snapshot.WhichOneof("event") == "snapshot"
        commit = await commit_begin(store, config, "g", "op-1")
        coordinator.hub.publish(commit)
        written = [(await context.until(2))[1] for context in grpc_streams]
        assert all(type(wire) is bytes for wire in written)
        assert all(wire is written[0] for wire in written)
        message = pb.WatchResponse.FromString(written[0])
        assert message.epoch == store.epoch
        assert message.change.revision == commit.revision
        assert message.change.kind == pb.CHANGE_KIND_ACQUIRED
        assert message.change.run.operation_id == "op-1"
        (_, over_http) = await http_stream.until(2)
        assert isinstance(over_http, pb.WatchResponse)
        assert over_http == message
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert coordinator.hub.watchers == 0


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(pb.WatchResponse(progress=pb.Progress(revision=7)), id="message"),
        pytest.param(
            pb.WatchResponse(progress=pb.Progress(revision=7)).SerializeToString(), id="bytes"
        ),
    ],
)
def test_stream_serializer_sends_bytes_as_they_are_and_serialises_messages(
    response: Any,
) -> None:
    """The streaming methods' serializer passes bytes through unchanged and encodes a message."""
    wire = _encode(response)
    if isinstance(response, bytes):
        assert wire is response
    assert pb.WatchResponse.FromString(wire).progress.revision == 7


async def test_slow_grpc_watcher_is_coalesced_into_a_resynced_snapshot(
    config: ServerConfig, store: MemoryStore
) -> None:
    """A stream whose writes are held while more than watch_buffer changes come is sent a
    resynced Snapshot of the guard as it is now, then live changes as shared bytes again."""
    coordinator = Coordinator(config, store)
    servicer = RunGuardServicer(coordinator)
    held = asyncio.Event()
    context = Recorder()
    write = context.write

    async def held_write(message: Any) -> None:
        await write(message)
        if len(context.written) == 2:
            await held.wait()  # flow control: the reader does not read

    context.write = held_write  # type: ignore[method-assign]
    task: asyncio.Task[None] = asyncio.create_task(
        servicer.Watch(pb.WatchRequest(guards=["g"]), context)  # type: ignore[arg-type]
    )
    try:
        await context.until(1)
        ops = [f"op-{i}" for i in range(config.watch_buffer + 2)]
        first = await commit_begin(store, config, "g", ops[0])
        coordinator.hub.publish(first)
        await context.until(2)  # the first change is written, and held there
        policy = config.policy("g")
        for previous, op in itertools.pairwise(ops):
            current = await store.read("g")
            step = core.end(current.doc, policy, previous, f"tok-{previous}", T0)
            coordinator.hub.publish(
                await store.commit("g", current.version, step.doc, step.changes)
            )
            coordinator.hub.publish(await commit_begin(store, config, "g", op))
        held.set()
        resync = pb.WatchResponse.FromString(_encode((await context.until(3))[2]))
        assert resync.snapshot.resynced
        assert resync.snapshot.revision == store.revision
        assert [r.operation_id for r in resync.snapshot.guards[0].holders] == [ops[-1]]
        current = await store.read("g")
        step = core.end(current.doc, policy, ops[-1], f"tok-{ops[-1]}", T0)
        live = await store.commit("g", current.version, step.doc, step.changes)
        coordinator.hub.publish(live)
        changes: list[Any] = []
        while not changes:  # heartbeats may come first
            written = await context.until(len(context.written) + 1)
            changes = [wire for wire in written[3:] if type(wire) is bytes]
        assert pb.WatchResponse.FromString(changes[0]).change.revision == live.revision
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_commit_touching_several_guards_reaches_each_watcher_in_order(
    hub: Hub, config: ServerConfig, store: MemoryStore
) -> None:
    """A commit with changes of two guards gives a watcher of both its changes in the
    commit's order, and a watcher of one guard only that guard's change."""
    a = await commit_begin(store, config, "a", "a-1")
    b = await commit_begin(store, config, "b", "b-1")
    async with (
        aclosing(hub.stream(["b", "a"])) as both,
        aclosing(hub.stream(["a"])) as only_a,
    ):
        assert isinstance(await next_event(both), Snapshot)
        assert isinstance(await next_event(only_a), Snapshot)
        revision = store.revision + 1
        changes = tuple(
            dataclasses.replace(change, revision=revision) for change in (*b.changes, *a.changes)
        )
        hub.publish(Commit(revision=revision, guard="b", doc=b.doc, changes=changes))
        assert [await next_event(both), await next_event(both)] == list(changes)
        assert await next_event(only_a) == changes[1]


async def test_heartbeat_does_not_claim_a_revision_until_its_last_commit(
    hub: Hub, config: ServerConfig, store: MemoryStore
) -> None:
    """While commits of revision r are still coming (``more``), a quiet watcher's Progress
    stays below r; once the last one is published it reaches r, after the change."""
    async with aclosing(hub.stream(["a"])) as stream:
        snapshot = await next_event(stream)
        assert isinstance(snapshot, Snapshot)
        other = await commit_begin(store, config, "other", "o-1")
        mine = await commit_begin(store, config, "a", "a-1")
        revision = mine.revision
        shared = [
            dataclasses.replace(
                commit,
                revision=revision,
                changes=tuple(dataclasses.replace(c, revision=revision) for c in commit.changes),
            )
            for commit in (other, mine)
        ]
        hub.publish(shared[0], more=True)
        progress = await next_event(stream)
        assert progress == Progress(revision - 1)
        hub.publish(shared[1])
        change = await next_event(stream)
        assert isinstance(change, Change)
        assert change == shared[1].changes[0]
        assert await next_event(stream) == Progress(revision)


IDLE_WATCHERS = 200
IDLE_BYTES = 1024
"""Most bytes of Python objects the hub may hold per idle watcher (about 500 today)."""


async def test_idle_watchers_hold_little_memory_and_no_timer_each(
    hub: Hub, store: MemoryStore
) -> None:
    """Many idle streams cost the hub under a kilobyte of objects each, and share one
    heartbeat timer instead of scheduling one per stream."""
    loop = asyncio.get_running_loop()
    subscriptions = []
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for _ in range(IDLE_WATCHERS):
            subscription = hub.subscribe(["g"])
            assert isinstance(await subscription.next(), Snapshot)
            waiter = subscription.poll()
            assert isinstance(waiter, asyncio.Future)
            subscriptions.append((subscription, waiter))
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    held = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert held / IDLE_WATCHERS < IDLE_BYTES
    timers = [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
    assert len(timers) <= 1
    for subscription, _ in subscriptions:
        subscription.close()
    assert hub.watchers == 0
