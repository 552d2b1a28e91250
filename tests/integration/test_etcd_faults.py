"""Faults under load on etcd: nothing lost, nothing granted twice, service resumes by itself."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from runguard.v1 import runguard_pb2 as pb
from tests import history_calls
from tests.conftest import Running
from tests.etcd_harness import EtcdCluster
from tests.history import Duplicate, Grant, check
from tests.integration.support import begin_request, end_request

CAPACITY = 2
WINDOW = 1.0


@pytest.fixture
def cluster() -> Iterator[EtcdCluster]:
    """A 3-member cluster of this test's own (members get killed)."""
    started = EtcdCluster(3).start()
    yield started
    started.stop()


@dataclass
class History:
    """What the load's clients saw."""

    grants: list[Grant] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    unavailable: list[float] = field(default_factory=list)
    other: list[str] = field(default_factory=list)


async def _client(stub: Any, name: str, until: float, history: History) -> None:
    """Begin, hold briefly, End, again; a payload repeats now and then (so DUPLICATEs happen)."""
    n = 0
    while time.time() < until:
        n += 1
        op = f"{name}-{n}"
        sent = time.time()
        request = begin_request(op, {"c": name, "p": n // 3}, guard="hot", ttl=3.0)
        reply = await history_calls.begin(stub, request, history.other)
        if reply is None:
            history.unavailable.append(sent)
            await asyncio.sleep(0.05)
            continue
        answered = time.time()
        if reply.WhichOneof("outcome") == "granted":
            granted = reply.granted
            await asyncio.sleep(0.02)
            released = await history_calls.end(stub, granted, history.other)
            history.grants.append(Grant("hot", op, granted.run.fencing_token, answered, released))
        elif reply.rejected.reason == pb.REJECTION_REASON_DUPLICATE:
            history.duplicates.append(history_calls.duplicate(reply, "hot", sent, answered))
        else:
            await asyncio.sleep(0.01)


async def test_killing_the_etcd_leader_under_load_grants_nothing_twice(
    start_server: Callable[..., Any], cluster: EtcdCluster
) -> None:
    """With the etcd leader killed under load, Begins in the gap get UNAVAILABLE (never a
    double grant), and grants resume by themselves; the history checks out."""
    url = cluster.url(f"faults-{uuid.uuid4().hex[:8]}") + "?timeout=1"
    replicas: list[Running] = [
        await start_server(store_url=url, capacities={"hot": CAPACITY}, dedup_window=WINDOW)
        for _ in range(2)
    ]
    history = History()
    start = time.time()
    until = start + 5.0
    load = [
        asyncio.create_task(_client(replicas[i % 2].stub, f"c{i}", until, history))
        for i in range(8)
    ]
    await asyncio.sleep(1.5)
    leader = cluster.leader()
    assert leader is not None
    killed_at = time.time()
    cluster.kill(leader)
    await asyncio.gather(*load)
    assert history.other == []
    problems = check(history.grants, history.duplicates, capacity=CAPACITY, dedup_window=WINDOW)
    assert problems == []
    assert any(g.answered < killed_at for g in history.grants)
    assert any(g.answered > killed_at + 0.5 for g in history.grants), "service did not resume"
    assert history.duplicates, "the load made no DUPLICATE to check"
    print(  # for the record: -s shows how the gap looked
        f"grants={len(history.grants)} duplicates={len(history.duplicates)} "
        f"unavailable={len(history.unavailable)}"
    )


async def _health_becomes(health: Any, status: int, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while (await health.Check(health_pb2.HealthCheckRequest())).status != status:
        assert time.monotonic() < deadline, f"health never became {status}"
        await asyncio.sleep(0.1)


@pytest.fixture
def single() -> Iterator[EtcdCluster]:
    """A one-member cluster of this test's own (it gets killed)."""
    started = EtcdCluster(1).start()
    yield started
    started.stop()


async def test_the_whole_store_down_is_unavailable_then_service_resumes(
    start_server: Callable[..., Any], single: EtcdCluster
) -> None:
    """With every etcd member down, Begin is UNAVAILABLE, health NOT_SERVING and nothing is
    half-applied; when etcd is back, health is SERVING, the holder from before is still
    there and Begins are served again."""
    url = single.url(f"down-{uuid.uuid4().hex[:8]}") + "?timeout=0.5"
    server: Running = await start_server(store_url=url)
    held = (await server.stub.Begin(begin_request("before", {"n": 1}, guard="job"))).granted
    for member in single.members:
        single.kill(member)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await server.stub.Begin(begin_request("during", {"n": 2}, guard="job"), timeout=20)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    # A sentence for people, never the client library's repr.
    said = caught.value.details() or ""
    assert said.startswith(("etcd did not answer in", "etcd cannot be reached")), said
    assert not any(junk in said for junk in ("<", "AioRpcError", "debug_error_string")), said
    health = health_pb2_grpc.HealthStub(server.channel)
    await _health_becomes(health, health_pb2.HealthCheckResponse.NOT_SERVING)
    for member in single.members:
        single.restart(member)
    single.wait_ready()
    for _ in range(100):
        try:
            state = (await server.stub.Current(pb.CurrentRequest(guard="job"))).state
            break
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.1)
    else:
        raise AssertionError("the store never came back")
    assert [r.operation_id for r in state.holders] == ["before"]
    await _health_becomes(health, health_pb2.HealthCheckResponse.SERVING)
    assert (await server.stub.End(end_request(held))).result == pb.END_RESULT_ENDED
    again = await server.stub.Begin(begin_request("after", {"n": 3}, guard="job"))
    assert again.WhichOneof("outcome") == "granted"
    assert again.granted.run.fencing_token > held.run.fencing_token
