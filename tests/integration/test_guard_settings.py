"""Guard settings over the API, ListGuards, idle guards reclaimed, and --max-guards."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog

from runguard.v1 import runguard_pb2 as pb
from tests.conftest import Running
from tests.integration.support import (
    Stream,
    bad_request,
    begin_request,
    end_request,
    queue_reaches,
    seconds,
)


def violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    """The BadRequest field violations of an INVALID_ARGUMENT, by field."""
    return {v.field: v.description for v in bad_request(error).field_violations}


async def test_raising_capacity_grants_queued_callers_and_watchers_see_it(
    running: Running,
) -> None:
    """A higher capacity grants the queue at once, and watchers get a CONFIGURED change."""
    stub = running.stub
    held = (await stub.Begin(begin_request("a", guard="g"))).granted
    waiting = []
    for op in "bc":  # one after the other, so the queue's order is known
        waiting.append(asyncio.ensure_future(stub.Begin(begin_request(op, guard="g", wait=30))))
        await queue_reaches(stub, len(waiting), guard="g")
    stream = Stream(stub.Watch(pb.WatchRequest(guards=["g"])))
    await stream.until(1)
    reply = await stub.ConfigureGuard(pb.ConfigureGuardRequest(guard="g", capacity=3))
    assert (reply.state.capacity, reply.state.configured) == (3, True)
    granted = [(await task).granted for task in waiting]
    assert [g.run.operation_id for g in granted] == ["b", "c"]
    events = await stream.until(4)
    changes = [e.change for e in events[1:]]
    assert [c.kind for c in changes] == [
        pb.CHANGE_KIND_CONFIGURED,
        pb.CHANGE_KIND_ACQUIRED,
        pb.CHANGE_KIND_ACQUIRED,
    ]
    assert not changes[0].HasField("run")
    assert changes[0].state.capacity == 3
    stream.cancel()
    assert held.run.operation_id == "a"


async def test_lowering_capacity_keeps_every_holder(running: Running) -> None:
    """A lower capacity evicts nobody; new Begins wait until enough holders leave."""
    stub = running.stub
    await stub.ConfigureGuard(pb.ConfigureGuardRequest(guard="g", capacity=2))
    a = (await stub.Begin(begin_request("a", guard="g"))).granted
    b = (await stub.Begin(begin_request("b", guard="g"))).granted
    await stub.ConfigureGuard(pb.ConfigureGuardRequest(guard="g", capacity=1))
    state = (await stub.Current(pb.CurrentRequest(guard="g"))).state
    assert [h.operation_id for h in state.holders] == ["a", "b"]
    await stub.End(end_request(a))
    refused = await stub.Begin(begin_request("c", guard="g"))
    assert refused.rejected.reason == pb.REJECTION_REASON_IN_FLIGHT
    await stub.End(end_request(b))
    assert (await stub.Begin(begin_request("c", guard="g"))).WhichOneof("outcome") == "granted"


async def test_configure_changes_the_dedup_window_and_reset_restores_the_defaults(
    running: Running,
) -> None:
    """A guard's own dedup window is enforced; reset makes it follow the defaults again."""
    stub = running.stub
    await stub.ConfigureGuard(pb.ConfigureGuardRequest(guard="g", dedup_window=seconds(0)))
    first = (await stub.Begin(begin_request("a", {"x": 1}, guard="g"))).granted
    await stub.End(end_request(first))
    again = await stub.Begin(begin_request("b", {"x": 1}, guard="g"))
    assert again.WhichOneof("outcome") == "granted"
    reply = await stub.ConfigureGuard(pb.ConfigureGuardRequest(guard="g", reset=True))
    assert not reply.state.configured
    assert reply.state.dedup_window.ToTimedelta().total_seconds() == 5.0


@pytest.mark.parametrize(
    ("request_", "fields"),
    [
        pytest.param(pb.ConfigureGuardRequest(guard="g", capacity=0), {"capacity"}, id="zero"),
        pytest.param(
            pb.ConfigureGuardRequest(guard="g", capacity=70_000), {"capacity"}, id="too-many"
        ),
        pytest.param(
            pb.ConfigureGuardRequest(guard="g", dedup_window=seconds(-1)),
            {"dedup_window"},
            id="negative-window",
        ),
        pytest.param(
            pb.ConfigureGuardRequest(guard="g", max_queue=200_000), {"max_queue"}, id="queue"
        ),
        pytest.param(pb.ConfigureGuardRequest(guard="g"), {"capacity"}, id="nothing-to-set"),
        pytest.param(
            pb.ConfigureGuardRequest(guard="g", capacity=2, reset=True), {"reset"}, id="reset-and"
        ),
        pytest.param(
            pb.ConfigureGuardRequest(guard="bad name!", capacity=0),
            {"guard", "capacity"},
            id="every-field",
        ),
    ],
)
async def test_bad_settings_are_refused_naming_each_field_and_change_nothing(
    running: Running, request_: pb.ConfigureGuardRequest, fields: set[str]
) -> None:
    """ConfigureGuard with bad values is INVALID_ARGUMENT naming each field; nothing changes."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await running.stub.ConfigureGuard(request_)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations(caught.value)) == fields
    state = (await running.stub.Current(pb.CurrentRequest(guard="g"))).state
    assert (state.capacity, state.configured) == (1, False)
    assert await running.server.store.guard_count() == 0


async def test_list_guards_pages_through_every_stored_guard(running: Running) -> None:
    """ListGuards returns every stored guard once, by name, a page at a time."""
    names = [f"job-{i:03d}" for i in range(250)]
    for name in names:
        await running.stub.ConfigureGuard(pb.ConfigureGuardRequest(guard=name, capacity=2))
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        reply = await running.stub.ListGuards(pb.ListGuardsRequest(page_token=token))
        seen += [g.guard for g in reply.guards]
        pages += 1
        token = reply.next_page_token
        if not token:
            break
    assert seen == names
    assert pages == 3
    assert all(g.capacity == 2 for g in reply.guards)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        pytest.param(pb.ListGuardsRequest(page_size=5000), "page_size", id="page-too-big"),
        pytest.param(pb.ListGuardsRequest(page_size=-1), "page_size", id="negative-page"),
        pytest.param(pb.ListGuardsRequest(page_token="not-a-token"), "page_token", id="token"),
    ],
)
async def test_bad_list_requests_name_the_field(
    running: Running, request_: pb.ListGuardsRequest, field: str
) -> None:
    """ListGuards with a bad page size or token is INVALID_ARGUMENT naming it."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await running.stub.ListGuards(request_)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations(caught.value)) == {field}


async def test_one_shot_guard_names_leave_no_state_behind(
    start_server: Callable[..., Any],
) -> None:
    """Thousands of Begin+End on invented names leave no guard once their window passed."""
    running = await start_server(dedup_window=0.3)
    stub = running.stub
    for batch in range(10):
        replies = await asyncio.gather(
            *(
                stub.Begin(begin_request(f"op-{batch}-{i}", guard=f"once-{batch}-{i}"))
                for i in range(200)
            )
        )
        await asyncio.gather(*(stub.End(end_request(r.granted)) for r in replies))
    store = running.server.store
    for _ in range(200):
        if await store.guard_count() == 0:
            break
        await asyncio.sleep(0.05)
    assert await store.guard_count() == 0
    assert (await stub.ListGuards(pb.ListGuardsRequest())).guards == []
    stream = Stream(stub.Watch(pb.WatchRequest()))
    (snapshot,) = await stream.until(1)
    assert list(snapshot.snapshot.guards) == []
    stream.cancel()
    assert running.server.coordinator._expiry.deadlines == {}


async def test_a_reclaimed_name_grants_higher_fencing_tokens(
    start_server: Callable[..., Any],
) -> None:
    """A guard reclaimed and used again hands out fencing tokens above its earlier ones."""
    running = await start_server(dedup_window=0.0)
    tokens = []
    for n in range(3):
        granted = (await running.stub.Begin(begin_request(f"op-{n}", guard="g"))).granted
        tokens.append(granted.run.fencing_token)
        await running.stub.End(end_request(granted))
        for _ in range(100):
            if await running.server.store.guard_count() == 0:
                break
            await asyncio.sleep(0.02)
        assert await running.server.store.guard_count() == 0
    assert tokens == sorted(set(tokens))


async def test_a_new_guard_past_max_guards_is_resource_exhausted(
    start_server: Callable[..., Any],
) -> None:
    """With --max-guards 3, a fourth guard is refused naming the limit; existing ones work."""
    running = await start_server(max_guards=3)
    for name in ("a", "b", "c"):
        await running.stub.Begin(begin_request(name, guard=name))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await running.stub.Begin(begin_request("d", guard="d"))
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--max-guards" in (caught.value.details() or "")
    assert await running.server.store.guard_count() == 3
    again = await running.stub.Begin(begin_request("a2", guard="a"))
    assert again.rejected.reason == pb.REJECTION_REASON_IN_FLIGHT


async def test_a_snapshot_of_many_guards_comes_in_parts(running: Running) -> None:
    """A Watch of every guard sends a big snapshot in parts, each well under gRPC's limit."""
    stub = running.stub
    names = [f"wide-{i:04d}-{'x' * 100}" for i in range(6000)]
    for start in range(0, len(names), 500):
        await asyncio.gather(
            *(
                stub.ConfigureGuard(pb.ConfigureGuardRequest(guard=n, capacity=2))
                for n in names[start : start + 500]
            )
        )
    stream = Stream(stub.Watch(pb.WatchRequest()))
    parts: list[pb.WatchResponse] = []
    while not parts or parts[-1].snapshot.more:
        parts = await stream.until(len(parts) + 1)
    stream.cancel()
    assert len(parts) > 1
    assert all(p.snapshot.revision == parts[0].snapshot.revision for p in parts)
    assert [g.guard for p in parts for g in p.snapshot.guards] == names
    assert max(p.ByteSize() for p in parts) < 1024 * 1024


async def test_a_restart_with_other_flags_keeps_the_stored_settings_and_says_so(
    start_server: Callable[..., Any], tmp_path: Path
) -> None:
    """On a durable store, settings changed at run time outlive a restart whose --guard flag
    says otherwise; the server warns once, naming the guard, the stored and its own value."""
    url = f"sqlite://{tmp_path / 'runguard.db'}"
    first: Running = await start_server(store_url=url, capacities={"g": 2})
    await first.stub.ConfigureGuard(pb.ConfigureGuardRequest(guard="g", dedup_window=seconds(120)))
    await first.server.stop(grace=0.1)
    with structlog.testing.capture_logs() as logs:
        second: Running = await start_server(store_url=url, capacities={"g": 3})
    warned = [e for e in logs if e["event"] == "policy_mismatch"]
    assert [(e["guard"], e["setting"], e["stored"], e["flag"]) for e in warned] == [
        ("g", "capacity", 2, 3)
    ]
    state = (await second.stub.Current(pb.CurrentRequest(guard="g"))).state
    assert (state.capacity, state.dedup_window.seconds) == (2, 120)


async def test_a_window_just_past_the_limit_reads_apart_from_it(running: Running) -> None:
    """The refusal writes seconds out in full: 2592001s past a 2592000s limit."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await running.stub.ConfigureGuard(
            pb.ConfigureGuardRequest(guard="g", dedup_window=seconds(2_592_001))
        )
    assert violations(caught.value) == {"dedup_window": "must be in [0s, 2592000s], got 2592001s"}
