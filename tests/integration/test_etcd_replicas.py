"""Several RunGuard replicas on one 3-member etcd cluster behave as one service."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from runguard.v1 import runguard_pb2 as pb
from tests import etcd_harness
from tests.conftest import Running, Served
from tests.integration.support import Stream, begin_request, end_request, queue_reaches
from tests.stubs import sync_stub


@pytest.fixture
def etcd_url() -> str:
    """A store URL on the shared 3-member cluster, under a prefix of its own."""
    cluster = etcd_harness.shared(3)
    return cluster.url(f"replicas-{uuid.uuid4().hex[:12]}") + "?presence_ttl=1"


@pytest.fixture
async def replicas(start_server: Callable[..., Any], etcd_url: str) -> list[Running]:
    """Three in-process replicas on the same etcd prefix; guard "pool" has capacity 2."""
    return [
        await start_server(store_url=etcd_url, capacities={"pool": 2}, dedup_window=0.0)
        for _ in range(3)
    ]


async def _changes(stream: Stream, count: int) -> list[pb.Change]:
    events = await stream.until(count + 1)
    return [e.change for e in events if e.WhichOneof("event") == "change"]


async def test_racing_begins_on_different_replicas_grant_exactly_capacity(
    replicas: list[Running],
) -> None:
    """60 Begins for one guard, spread over three replicas at once: exactly capacity (2) win."""
    calls = [
        replicas[i % 3].stub.Begin(begin_request(f"op-{i}", {"i": i}, guard="pool"))
        for i in range(60)
    ]
    replies = await asyncio.gather(*calls)
    granted = [r.granted for r in replies if r.WhichOneof("outcome") == "granted"]
    assert len(granted) == 2
    assert {r.rejected.reason for r in replies if r.WhichOneof("outcome") == "rejected"} == {
        pb.REJECTION_REASON_IN_FLIGHT
    }
    assert len({g.run.fencing_token for g in granted}) == 2
    for running in replicas:
        state = (await running.stub.Current(pb.CurrentRequest(guard="pool"))).state
        assert sorted(r.operation_id for r in state.holders) == sorted(
            g.run.operation_id for g in granted
        )


async def test_a_watcher_on_one_replica_sees_another_replicas_changes_in_order(
    replicas: list[Running],
) -> None:
    """Changes made through replica A reach a Watch on replica B in order, with etcd's revisions."""
    a, b = replicas[0], replicas[1]
    stream = Stream(b.stub.Watch(pb.WatchRequest(guards=["job"])))
    await stream.until(1)
    expected = []
    for n in range(4):
        granted = (await a.stub.Begin(begin_request(f"op-{n}", {"n": n}, guard="job"))).granted
        await a.stub.End(end_request(granted))
        expected += [(f"op-{n}", pb.CHANGE_KIND_ACQUIRED), (f"op-{n}", pb.CHANGE_KIND_RELEASED)]
    changes = await _changes(stream, len(expected))
    stream.cancel()
    assert [(c.run.operation_id, c.kind) for c in changes] == expected
    revisions = [c.revision for c in changes]
    assert revisions == sorted(set(revisions))
    current = await a.stub.Current(pb.CurrentRequest(guard="job"))
    # Other guards' commits (reclaims among them) may have moved the store on since.
    assert current.revision >= revisions[-1]
    assert current.epoch == (await b.stub.Current(pb.CurrentRequest(guard="job"))).epoch


async def test_fifo_waiters_are_served_in_arrival_order_across_replicas(
    replicas: list[Running],
) -> None:
    """Callers queued on B, C, then A get the slot in that order as it frees."""
    a, b, c = replicas
    holder = (await a.stub.Begin(begin_request("holder", {}, guard="job"))).granted
    order = [b, c, a]
    calls = []
    for n, replica in enumerate(order):
        calls.append(
            asyncio.ensure_future(
                replica.stub.Begin(begin_request(f"w{n}", {"n": n}, guard="job", wait=20))
            )
        )
        await queue_reaches(a.stub, n + 1, guard="job")
    current = holder
    for n in range(3):
        await a.stub.End(end_request(current))
        reply = await asyncio.wait_for(calls[n], 10)
        current = reply.granted
        assert current.run.operation_id == f"w{n}"
    await a.stub.End(end_request(current))


async def test_a_lease_expires_once_whichever_replica_notices(replicas: list[Running]) -> None:
    """A short lease taken on A is released EXPIRED exactly once, though every replica tracks it."""
    a, b = replicas[0], replicas[1]
    stream = Stream(b.stub.Watch(pb.WatchRequest(guards=["short"])))
    await stream.until(1)
    granted = (await a.stub.Begin(begin_request("brief", {}, guard="short", ttl=0.3))).granted
    changes = await _changes(stream, 2)
    await asyncio.sleep(1.0)  # every replica's expiry timer has fired by now
    stream.cancel()
    changes = [e.change for e in stream.events() if e.WhichOneof("event") == "change"]
    assert [(c.kind, c.release_reason) for c in changes] == [
        (pb.CHANGE_KIND_ACQUIRED, pb.RELEASE_REASON_UNSPECIFIED),
        (pb.CHANGE_KIND_RELEASED, pb.RELEASE_REASON_EXPIRED),
    ]
    assert changes[1].run.expires_at == granted.run.expires_at


def test_a_killed_replicas_runs_keep_their_leases_and_its_waiters_are_dropped(
    served: Callable[..., Served], etcd_url: str, tmp_path: Path
) -> None:
    """After kill -9 of replica B, its held run still holds (A can end it with the token), and
    its queued caller is dropped, never promoted into a slot nobody holds."""
    a = served("--store", etcd_url)
    b = served("--store", etcd_url)
    with grpc.insecure_channel(a.address) as ca, grpc.insecure_channel(b.address) as cb:
        stub_a = sync_stub(ca)
        stub_b = sync_stub(cb)
        held = stub_b.Begin(begin_request("held-by-b", {"n": 1}, guard="job")).granted
        outcome: list[object] = []

        def queue_on_b() -> None:
            try:
                outcome.append(
                    stub_b.Begin(begin_request("queued-on-b", {"n": 2}, guard="job", wait=30))
                )
            except grpc.RpcError as error:
                outcome.append(error.code())

        waiter = threading.Thread(target=queue_on_b)
        waiter.start()
        deadline = time.monotonic() + 10
        while stub_a.Current(pb.CurrentRequest(guard="job")).state.queue_length != 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        b.process.kill()
        b.process.wait(10)
        waiter.join(10)
        assert outcome == [grpc.StatusCode.UNAVAILABLE]
        # Its run holds on: the lease lives in etcd, any replica serves it.
        state = stub_a.Current(pb.CurrentRequest(guard="job")).state
        assert [r.operation_id for r in state.holders] == ["held-by-b"]
        time.sleep(2.5)  # B's presence lease (1 s) has run out by now
        assert stub_a.End(end_request(held)).result == pb.END_RESULT_ENDED
        state = stub_a.Current(pb.CurrentRequest(guard="job")).state
        assert list(state.holders) == []
        assert state.queue_length == 0
        # The slot is free for a live caller.
        assert stub_a.Begin(begin_request("next", {"n": 3}, guard="job")).WhichOneof("outcome") == (
            "granted"
        )
