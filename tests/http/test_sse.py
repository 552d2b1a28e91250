"""``GET /v1/events``: Watch as Server-Sent Events, read by the real curl, resumed with
Last-Event-ID the way a browser's EventSource resumes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from google.protobuf import json_format

from runguard.v1 import runguard_pb2 as pb
from tests.conftest import Running
from tests.http.conftest import base_url, curl, parse_sse, violations
from tests.http.sse_reader import SseReader, count
from tests.integration.support import begin_request


@pytest.fixture
async def readers() -> AsyncIterator[Callable[..., Any]]:
    """Open SSE readers; all closed after the test."""
    opened: list[SseReader] = []

    async def open_reader(url: str, *headers: str) -> SseReader:
        reader = await SseReader.open(url, *headers)
        opened.append(reader)
        return reader

    yield open_reader
    for reader in opened:
        await reader.close()


async def end(running: Running, granted: pb.Granted) -> None:
    """End a granted run over native gRPC."""
    await running.stub.End(
        pb.EndRequest(
            guard=granted.run.guard,
            operation_id=granted.run.operation_id,
            lease_token=granted.lease_token,
        )
    )


async def test_events_are_watch_messages_in_proto3_json(
    http: Running, readers: Callable[..., Any]
) -> None:
    """A snapshot, then one change per Begin/End made over gRPC, each the WatchResponse's
    proto3 JSON with an id naming epoch and revision."""
    reader = await readers(f"{base_url(http)}/v1/events")
    await reader.wait(count("snapshot", 1))
    granted = (await http.stub.Begin(begin_request("sse-run"))).granted
    await end(http, granted)
    await reader.wait(count("change", 2))

    assert reader.status == 200
    assert b"content-type: text/event-stream" in reader.raw.lower()
    epoch = http.server.store.epoch
    snapshot, acquired, released = reader.events[:3]
    assert snapshot["event"] == "snapshot"
    assert snapshot["id"] == f"{epoch}:0"
    for event in (acquired, released):
        message = json_format.Parse(event["data"], pb.WatchResponse())
        assert message.epoch == epoch
        assert event["id"] == f"{epoch}:{message.change.revision}.0"
        assert message.change.run.operation_id == "sse-run"
    kinds = [
        json_format.Parse(e["data"], pb.WatchResponse()).change.kind for e in (acquired, released)
    ]
    assert kinds == [pb.CHANGE_KIND_ACQUIRED, pb.CHANGE_KIND_RELEASED]


async def test_last_event_id_replays_exactly_what_was_missed(
    http: Running, readers: Callable[..., Any]
) -> None:
    """A reconnect with Last-Event-ID gets the changes made while it was away, and no snapshot."""
    first = await readers(f"{base_url(http)}/v1/events")
    await first.wait(count("snapshot", 1))
    granted = (await http.stub.Begin(begin_request("one"))).granted
    await first.wait(count("change", 1))
    last_id = first.events[-1]["id"]
    await first.close()
    await end(http, granted)
    await http.stub.Begin(begin_request("two"))

    second = await readers(f"{base_url(http)}/v1/events", f"Last-Event-ID: {last_id}")
    await second.wait(count("change", 2))

    assert second.status == 200
    assert [e["event"] for e in second.events] == ["change", "change"]
    runs = [c["change"]["run"]["operationId"] for c in second.of("change")]
    assert runs == ["one", "two"]


async def test_resume_inside_a_commit_skips_only_what_was_seen(
    http: Running, readers: Callable[..., Any]
) -> None:
    """An End that hands the slot to a waiter is one revision with two changes; resuming from
    the first replays just the second."""
    holder = (await http.stub.Begin(begin_request("holder"))).granted
    waiting = asyncio.ensure_future(http.stub.Begin(begin_request("waiter", wait=10)))
    current = pb.CurrentRequest(guard="generate")
    for _ in range(500):  # until the waiter is queued
        if (await http.stub.Current(current)).state.queue_length:
            break
        await asyncio.sleep(0.01)
    first = await readers(f"{base_url(http)}/v1/events")
    await first.wait(count("snapshot", 1))
    await end(http, holder)
    await first.wait(count("change", 2))
    await waiting
    released_id, acquired_id = (e["id"] for e in first.events if e["event"] == "change")
    assert released_id.endswith(".0")
    assert acquired_id == released_id[:-2] + ".1"

    second = await readers(f"{base_url(http)}/v1/events?last_event_id={released_id}")
    await second.wait(count("change", 1))
    await asyncio.sleep(0.2)

    assert [e["id"] for e in second.events] == [acquired_id]
    assert second.of("change")[0]["change"]["run"]["operationId"] == "waiter"


@pytest.mark.parametrize(
    "last_id",
    [
        pytest.param("0123456789abcdef:1", id="another-epoch"),
        pytest.param("not an id at all", id="unparsable"),
    ],
)
async def test_an_id_that_cannot_resume_gets_a_resynced_snapshot(
    http: Running, readers: Callable[..., Any], last_id: str
) -> None:
    """A Last-Event-ID of another store (or garbage) is answered 200 with a resynced snapshot."""
    await http.stub.Begin(begin_request("held"))

    reader = await readers(f"{base_url(http)}/v1/events", f"Last-Event-ID: {last_id}")
    await reader.wait(count("snapshot", 1))

    assert reader.status == 200
    (snapshot,) = reader.of("snapshot")
    assert snapshot["snapshot"]["resynced"] is True
    assert snapshot["snapshot"]["guards"][0]["holders"][0]["operationId"] == "held"


async def test_guard_query_filters_the_stream(http: Running, readers: Callable[..., Any]) -> None:
    """``?guard=a`` sends only guard a's changes."""
    reader = await readers(f"{base_url(http)}/v1/events?guard=wanted")
    await reader.wait(count("snapshot", 1))
    await http.stub.Begin(begin_request("other", guard="ignored"))
    await http.stub.Begin(begin_request("mine", guard="wanted"))
    await reader.wait(count("change", 1))
    await asyncio.sleep(0.2)

    assert [c["change"]["run"]["operationId"] for c in reader.of("change")] == ["mine"]


async def test_quiet_stream_gets_progress_heartbeats(
    start_server: Callable[..., Any], readers: Callable[..., Any]
) -> None:
    """A stream with nothing to tell sends progress events, each with a resumable id."""
    running = await start_server(http_listen="127.0.0.1:0", progress_interval=0.2)

    reader = await readers(f"{base_url(running)}/v1/events")
    await reader.wait(count("progress", 2))

    progress = [e for e in reader.events if e["event"] == "progress"]
    assert all(e["id"] == f"{running.server.store.epoch}:0" for e in progress)


async def test_bad_guard_is_400_with_field_violations(http: Running) -> None:
    """A guard name the contract refuses is a 400 Connect error naming ``guards[0]``."""
    answer = await curl(f"{base_url(http)}/v1/events?guard=bad%20name")

    assert answer.status == 400
    assert [field for field, _ in violations(answer.json())] == ["guards[0]"]


async def test_reconnect_while_draining_is_200_with_only_retry(http: Running) -> None:
    """While the server drains, a reconnect is answered 200 and a retry hint, never an error."""
    http.server.coordinator.hub.close()

    answer = await curl("-H", "Last-Event-ID: x:1", f"{base_url(http)}/v1/events")

    assert answer.status == 200
    assert parse_sse(answer.body.decode()) == [{"retry": "1000"}]


async def test_stop_ends_open_streams_cleanly(http: Running, readers: Callable[..., Any]) -> None:
    """Stopping the server ends an open SSE response properly (curl exits 0, no error)."""
    reader = await readers(f"{base_url(http)}/v1/events")
    await reader.wait(count("snapshot", 1))

    await http.server.stop(grace=0.5)

    assert await reader.ended() == 0
