"""Replicas on one etcd told different things agree anyway; 100,000 guards start and serve."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import structlog
from etcd3aio import Etcd3Client
from etcd3aio.kv import KVService

from runguard.server.core import GuardDoc, GuardSettings
from runguard.server.stores.codec import encode_record
from runguard.v1 import runguard_pb2 as pb
from tests import etcd_harness
from tests.conftest import Running
from tests.integration.support import Stream, begin_request, end_request

ROUNDS = 30
"""Racing rounds of the two-replica test."""

MANY = 100_000
"""Guards stored before a replica starts, in the growth test."""


@pytest.fixture
def etcd_url() -> str:
    """A store URL on the shared 3-member cluster, under a prefix of its own."""
    return etcd_harness.shared(3).url(f"settings-{uuid.uuid4().hex[:12]}")


async def test_replicas_told_different_settings_enforce_the_stored_ones(
    start_server: Callable[..., Any], etcd_url: str
) -> None:
    """A (g=2, 60 s window) starts first; B (defaults, 0 s window) follows the store, says so,
    and never lets more than 2 hold g nor erases A's dedup entries."""
    a: Running = await start_server(store_url=etcd_url, capacities={"g": 2}, dedup_window=60.0)
    with structlog.testing.capture_logs() as logs:
        b: Running = await start_server(store_url=etcd_url, dedup_window=0.0)
    mismatches = [e for e in logs if e["event"] == "policy_mismatch"]
    assert [(e["setting"], e["stored"], e["flag"]) for e in mismatches] == [
        ("dedup_window", 60.0, 0.0)
    ]
    for replica in (a, b):
        state = (await replica.stub.Current(pb.CurrentRequest(guard="g"))).state
        assert (state.capacity, state.dedup_window.seconds, state.configured) == (2, 60, True)

    for n in range(ROUNDS):
        replies = await asyncio.gather(
            *(
                (a if i % 2 else b).stub.Begin(
                    begin_request(f"r{n}-{i}", {"round": n, "i": i}, guard="g")
                )
                for i in range(6)
            )
        )
        granted = [r.granted for r in replies if r.WhichOneof("outcome") == "granted"]
        assert len(granted) == 2, n
        for replica in (a, b):
            state = (await replica.stub.Current(pb.CurrentRequest(guard="g"))).state
            assert len(state.holders) == 2
        await asyncio.gather(*(a.stub.End(end_request(g)) for g in granted))

    first = (await a.stub.Begin(begin_request("x-1", {"same": True}, guard="g"))).granted
    await a.stub.End(end_request(first))
    other = (await b.stub.Begin(begin_request("y-1", {"other": True}, guard="g"))).granted
    await b.stub.End(end_request(other))
    for replica in (a, b):
        again = await replica.stub.Begin(begin_request("x-2", {"same": True}, guard="g"))
        assert again.rejected.reason == pb.REJECTION_REASON_DUPLICATE


async def test_configure_on_one_replica_is_seen_by_every_replica_and_watcher(
    start_server: Callable[..., Any], etcd_url: str
) -> None:
    """ConfigureGuard through B changes what A enforces and what A's watchers see."""
    a: Running = await start_server(store_url=etcd_url)
    b: Running = await start_server(store_url=etcd_url)
    stream = Stream(a.stub.Watch(pb.WatchRequest(guards=["g"])))
    await stream.until(1)
    await b.stub.ConfigureGuard(pb.ConfigureGuardRequest(guard="g", capacity=3))
    events = await stream.until(2)
    stream.cancel()
    assert events[1].change.kind == pb.CHANGE_KIND_CONFIGURED
    assert events[1].change.state.capacity == 3
    replies = [await a.stub.Begin(begin_request(f"op-{i}", guard="g")) for i in range(4)]
    assert [r.WhichOneof("outcome") for r in replies] == ["granted"] * 3 + ["rejected"]


async def _store_many(url: str, prefix: str) -> None:
    """Write MANY guards with settings of their own straight into etcd, as a store holds them."""
    endpoints = url.removeprefix("etcd://").split("/")[0].split(",")
    client = Etcd3Client(endpoints)
    await client.connect()
    try:
        assert client.kv is not None
        kv = client.kv
        settings = GuardSettings(capacity=2)

        async def put_batch(start: int) -> None:
            ops = []
            for i in range(start, min(start + 128, MANY)):
                name = f"many-{i:06d}"
                doc = GuardDoc(name=name, next_fencing=1, settings=settings)
                ops.append(KVService.txn_op_put(f"{prefix}/g/{name}", encode_record(doc, ())))
            await kv.txn([], ops, timeout=30)

        starts = list(range(0, MANY, 128))
        for chunk in range(0, len(starts), 32):
            await asyncio.gather(*(put_batch(s) for s in starts[chunk : chunk + 32]))
    finally:
        await client.close()


@pytest.mark.timeout(600)
async def test_a_hundred_thousand_guards_start_list_watch_and_restart_on_etcd(
    start_server: Callable[..., Any],
) -> None:
    """With 100,000 stored guards, a replica starts, ListGuards pages through all of them, a
    Watch of every guard gets them all in parts, and the replica starts again after a stop."""
    cluster = etcd_harness.shared(1)
    prefix = f"many-{uuid.uuid4().hex[:12]}"
    url = cluster.url(prefix)
    await _store_many(url, prefix)
    for attempt in range(2):  # the second start is the restart
        running: Running = await start_server(store_url=url)
        listed = 0
        token = ""
        while True:
            reply = await running.stub.ListGuards(
                pb.ListGuardsRequest(page_size=1000, page_token=token)
            )
            listed += len(reply.guards)
            token = reply.next_page_token
            if not token:
                break
        assert listed == MANY
        stream = Stream(running.stub.Watch(pb.WatchRequest(), timeout=300))
        parts: list[pb.WatchResponse] = []
        while not parts or parts[-1].snapshot.more:
            parts = await stream.until(len(parts) + 1, within=120)
        stream.cancel()
        assert sum(len(p.snapshot.guards) for p in parts) == MANY, attempt
        assert max(p.ByteSize() for p in parts) < 4 * 1024 * 1024
        await running.server.stop(grace=0.1)
