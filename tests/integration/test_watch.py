"""Watch: snapshot, then changes, then heartbeats; resumes never skip a change silently."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from runguard.v1 import runguard_pb2 as pb
from tests.integration.support import Stream, begin_request, queue_reaches


async def _cycle(stub: Any, operation_id: str, guard: str = "generate") -> None:
    grant = await stub.Begin(begin_request(operation_id, guard=guard))
    await stub.End(
        pb.EndRequest(guard=guard, operation_id=operation_id, lease_token=grant.granted.lease_token)
    )


async def test_snapshot_then_changes_with_state_after_each(running: Any) -> None:
    """A watcher gets the current holders, then ACQUIRED and RELEASED, each with the state after."""
    grant = await running.stub.Begin(begin_request("op-1"))
    stream = Stream(running.stub.Watch(pb.WatchRequest(guards=["generate"])))
    (snapshot,) = await stream.until(1)
    assert [r.operation_id for r in snapshot.snapshot.guards[0].holders] == ["op-1"]
    assert not snapshot.snapshot.resynced
    await running.stub.End(
        pb.EndRequest(guard="generate", operation_id="op-1", lease_token=grant.granted.lease_token)
    )
    await running.stub.Begin(begin_request("op-2"))
    _, released, acquired = await stream.until(3)
    stream.cancel()
    assert released.change.kind == pb.CHANGE_KIND_RELEASED
    assert released.change.release_reason == pb.RELEASE_REASON_ENDED
    assert list(released.change.state.holders) == []
    assert acquired.change.kind == pb.CHANGE_KIND_ACQUIRED
    assert [r.operation_id for r in acquired.change.state.holders] == ["op-2"]
    assert snapshot.snapshot.revision < released.change.revision < acquired.change.revision
    assert {m.epoch for m in stream.messages} == {snapshot.epoch}


async def test_watch_filters_by_guard(running: Any) -> None:
    """A watcher of one guard sees none of another guard's changes."""
    stream = Stream(running.stub.Watch(pb.WatchRequest(guards=["mine"])))
    await stream.until(1)
    await _cycle(running.stub, "theirs-1", guard="theirs")
    await _cycle(running.stub, "mine-1", guard="mine")
    events = await stream.until(3)
    stream.cancel()
    assert [e.change.run.guard for e in events[1:]] == ["mine", "mine"]


async def test_hand_off_to_a_waiter_shares_one_revision(running: Any) -> None:
    """An End that hands the slot to a queued caller is one commit: RELEASED then ACQUIRED."""
    holder = await running.stub.Begin(begin_request("holder"))
    stream = Stream(running.stub.Watch(pb.WatchRequest(guards=["generate"])))
    await stream.until(1)
    waiter = running.stub.Begin(begin_request("waiter", wait=10))
    await queue_reaches(running.stub, 1)
    await running.stub.End(
        pb.EndRequest(
            guard="generate", operation_id="holder", lease_token=holder.granted.lease_token
        )
    )
    assert (await waiter).granted.run.operation_id == "waiter"
    _, released, acquired = await stream.until(3)
    stream.cancel()
    assert released.change.revision == acquired.change.revision
    assert released.change.state.queue_length == 1
    assert acquired.change.state.queue_length == 0


async def test_resume_replays_exactly_what_was_missed(running: Any) -> None:
    """Reconnecting with after_revision and epoch replays the missed changes, no snapshot."""
    await _cycle(running.stub, "op-0")
    stream = Stream(running.stub.Watch(pb.WatchRequest(guards=["generate"])))
    (first,) = await stream.until(1)
    stream.cancel()
    await _cycle(running.stub, "op-1")
    await _cycle(running.stub, "op-2")
    resumed = Stream(
        running.stub.Watch(
            pb.WatchRequest(
                guards=["generate"],
                after_revision=first.snapshot.revision,
                epoch=first.epoch,
            )
        )
    )
    events = await resumed.until(4)
    resumed.cancel()
    assert [e.WhichOneof("event") for e in events] == ["change"] * 4
    assert [(e.change.run.operation_id, e.change.kind) for e in events] == [
        ("op-1", pb.CHANGE_KIND_ACQUIRED),
        ("op-1", pb.CHANGE_KIND_RELEASED),
        ("op-2", pb.CHANGE_KIND_ACQUIRED),
        ("op-2", pb.CHANGE_KIND_RELEASED),
    ]


async def test_resume_from_another_epoch_is_resynced(running: Any) -> None:
    """A revision from another epoch (a restarted store) gets a resynced snapshot."""
    await _cycle(running.stub, "op-1")
    stream = Stream(running.stub.Watch(pb.WatchRequest(after_revision=1, epoch="some-older-epoch")))
    (first,) = await stream.until(1)
    stream.cancel()
    assert first.snapshot.resynced


async def test_resume_after_history_is_gone_is_resynced(start_server: Any) -> None:
    """When the bounded history no longer holds the missed changes, the stream resyncs."""
    running = await start_server(history=2)
    await _cycle(running.stub, "op-first")
    stream = Stream(running.stub.Watch(pb.WatchRequest()))
    (first,) = await stream.until(1)
    stream.cancel()
    for i in range(4):
        await _cycle(running.stub, f"op-{i}")
    resumed = Stream(
        running.stub.Watch(
            pb.WatchRequest(after_revision=first.snapshot.revision, epoch=first.epoch)
        )
    )
    (again,) = await resumed.until(1)
    resumed.cancel()
    assert again.snapshot.resynced
    assert again.snapshot.revision > first.snapshot.revision


async def test_quiet_stream_gets_progress_heartbeats(start_server: Any) -> None:
    """With nothing changing, Progress messages carry the revision the stream is caught up to."""
    running = await start_server(progress_interval=0.1)
    await _cycle(running.stub, "op-1")
    stream = Stream(running.stub.Watch(pb.WatchRequest(guards=["generate"])))
    await stream.until(1)
    for _ in range(100):
        if len(stream.messages) >= 3:
            break
        await asyncio.sleep(0.05)
    stream.cancel()
    progress = [m.progress for m in stream.messages if m.WhichOneof("event") == "progress"]
    assert progress
    assert all(p.revision >= stream.messages[0].snapshot.revision for p in progress)


async def test_server_stop_ends_watchers_with_unavailable(start_server: Any) -> None:
    """A draining server ends every Watch with UNAVAILABLE so clients reconnect."""
    running = await start_server()
    stream = Stream(running.stub.Watch(pb.WatchRequest()))
    await stream.until(1)
    await running.server.stop(grace=1)
    await stream.ended()
    assert stream.error is not None
    assert stream.error.code() == grpc.StatusCode.UNAVAILABLE
    assert "reconnect" in (stream.error.details() or "")
