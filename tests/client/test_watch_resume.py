"""The watch iterators resume by themselves: no change lost, none repeated."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from runguard.client import AsyncClient, Change, Client, Snapshot, WatchEvent
from runguard.client._shared import WatchCursor
from runguard.v1 import runguard_pb2 as pb
from tests.conftest import Served
from tests.runs import run_of


def _collect(client: Client, guards: list[str]) -> tuple[list[WatchEvent], Callable[[], None]]:
    events: list[WatchEvent] = []
    stream = client.watch(guards)

    def read() -> None:
        for event in stream:
            events.append(event)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()

    def stop() -> None:
        stream.close()
        thread.join(5)

    return events, stop


def _wait_for(predicate: Callable[[], bool], within: float = 10) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_server_restart_is_handed_over_as_a_resynced_snapshot(
    served: Callable[..., Served],
) -> None:
    """After a restart (a new epoch) the iterator yields a resynced Snapshot, then goes on."""
    first = served()
    with Client(first.address) as client:
        events, stop = _collect(client, ["job"])
        _wait_for(lambda: len(events) == 1)
        client.begin("job", route="/before")
        _wait_for(lambda: len(events) == 2)
        first.process.terminate()
        first.process.wait(10)
        served("--listen", first.address)
        _wait_for(lambda: len(events) == 3)
        client.begin("job", route="/after")
        _wait_for(lambda: len(events) == 4)
        stop()
    before, acquired, resynced, after = events
    assert isinstance(before, Snapshot)
    assert not before.resynced
    assert isinstance(acquired, Change)
    assert acquired.kind == "acquired"
    assert isinstance(resynced, Snapshot)
    assert resynced.resynced
    assert resynced.epoch != before.epoch
    assert resynced.guards[0].holders == ()
    assert isinstance(after, Change)
    assert after.epoch == resynced.epoch


async def test_connection_age_cutoffs_lose_and_repeat_nothing(
    served: Callable[..., Served],
) -> None:
    """With connections cut every 0.3 s, the iterator still yields every change exactly once."""
    server = served("--max-connection-age", "0.3", "--max-connection-age-grace", "0.05")
    cycles = 30
    async with AsyncClient(server.address) as watcher, AsyncClient(server.address) as worker:
        stream = watcher.watch(["job"])
        seen: list[WatchEvent] = []

        async def read() -> None:
            async for event in stream:
                seen.append(event)

        reader = asyncio.create_task(read())
        await _until(lambda: bool(seen))
        for i in range(cycles):
            grant = await worker.begin("job", route="/r", payload=i)
            await asyncio.sleep(0.03)
            await worker.end_grant(grant)
        await _until(lambda: sum(isinstance(e, Change) for e in seen) >= 2 * cycles)
        await stream.aclose()
        await asyncio.wait_for(reader, 5)
    snapshots = [e for e in seen if isinstance(e, Snapshot)]
    changes = [e for e in seen if isinstance(e, Change)]
    assert len(snapshots) == 1, "a resume must replay, not resync"
    assert stream.reconnects >= 2
    assert [(c.kind, run_of(c).fencing_token) for c in changes] == [
        (kind, token)
        for token in sorted({run_of(c).fencing_token for c in changes})
        for kind in ("acquired", "released")
    ]
    assert len(changes) == 2 * cycles
    assert [c.revision for c in changes] == sorted(c.revision for c in changes)


async def _until(predicate: Callable[[], bool]) -> None:
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


def _change(
    revision: int, operation_id: str, kind: pb.ChangeKind = pb.CHANGE_KIND_ACQUIRED
) -> pb.WatchResponse:
    return pb.WatchResponse(
        epoch="e",
        change=pb.Change(revision=revision, kind=kind, run=pb.Run(operation_id=operation_id)),
    )


def test_cursor_resumes_inside_a_commit_without_repeating() -> None:
    """A break between two changes of one commit resumes before it and skips the one delivered."""
    cursor = WatchCursor()
    cursor.accept(pb.WatchResponse(epoch="e", snapshot=pb.Snapshot(revision=3)))
    cursor.accept(_change(5, "a", pb.CHANGE_KIND_RELEASED))
    cursor.reconnecting()
    request = cursor.request(["g"])
    assert (request.after_revision, request.epoch) == (3, "e")
    replayed = [
        cursor.accept(_change(5, "a", pb.CHANGE_KIND_RELEASED)),
        cursor.accept(_change(5, "b")),
        cursor.accept(_change(7, "c")),
    ]
    assert replayed[0] is None
    assert [run_of(e).operation_id for e in replayed[1:] if isinstance(e, Change)] == ["b", "c"]
    assert cursor.request(["g"]).after_revision == 5


def test_cursor_counts_progress_as_complete() -> None:
    """A Progress at or past the pending revision completes it, so a resume starts after it."""
    cursor = WatchCursor(after_revision=2, epoch="e")
    cursor.accept(_change(4, "a"))
    assert cursor.request([]).after_revision == 2
    cursor.accept(pb.WatchResponse(epoch="e", progress=pb.Progress(revision=9)))
    cursor.reconnecting()
    assert cursor.request([]).after_revision == 9
    assert cursor.accept(_change(10, "b")) is not None
