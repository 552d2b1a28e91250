"""Leases: KeepAlive extends them; a lost lease tells the worker to stop."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from runguard.v1 import runguard_pb2 as pb
from tests.integration.support import begin_request, seconds


async def test_keepalive_extends_the_lease(running: Any) -> None:
    """A run renewed before its lease runs out keeps its slot past the first deadline."""
    grant = (await running.stub.Begin(begin_request("op-1", ttl=0.4))).granted
    for _ in range(4):
        await asyncio.sleep(0.2)
        reply = await running.stub.KeepAlive(
            pb.KeepAliveRequest(
                guard="generate", operation_id="op-1", lease_token=grant.lease_token
            )
        )
    assert reply.run.expires_at.ToDatetime() > grant.run.expires_at.ToDatetime()
    current = await running.stub.Current(pb.CurrentRequest(guard="generate"))
    assert [r.operation_id for r in current.state.holders] == ["op-1"]


async def test_keepalive_with_a_new_ttl(running: Any) -> None:
    """KeepAlive with a ttl sets the lease to now + ttl."""
    grant = (await running.stub.Begin(begin_request("op-1", ttl=1))).granted
    request = pb.KeepAliveRequest(
        guard="generate", operation_id="op-1", lease_token=grant.lease_token, ttl=seconds(100)
    )
    reply = await running.stub.KeepAlive(request)
    lease = reply.run.expires_at.ToDatetime() - grant.run.started_at.ToDatetime()
    assert lease.total_seconds() == pytest.approx(100, abs=1)


@pytest.mark.parametrize(
    ("how", "reason"),
    [pytest.param("expire", "expired", id="expired"), pytest.param("end", "ended", id="ended")],
)
async def test_lost_lease_is_not_found_with_the_reason(running: Any, how: str, reason: str) -> None:
    """KeepAlive of a run that lost its slot is NOT_FOUND and says why."""
    grant = (await running.stub.Begin(begin_request("op-1", ttl=0.2))).granted
    if how == "expire":
        await asyncio.sleep(0.4)
    else:
        await running.stub.End(
            pb.EndRequest(guard="generate", operation_id="op-1", lease_token=grant.lease_token)
        )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await running.stub.KeepAlive(
            pb.KeepAliveRequest(
                guard="generate", operation_id="op-1", lease_token=grant.lease_token
            )
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason in (caught.value.details() or "")


async def test_keepalive_with_a_wrong_token_is_permission_denied(running: Any) -> None:
    """Only the holder of the lease token may renew it."""
    await running.stub.Begin(begin_request("op-1"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await running.stub.KeepAlive(
            pb.KeepAliveRequest(guard="generate", operation_id="op-1", lease_token="guess")
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_force_end_frees_without_the_token(running: Any) -> None:
    """End with force frees the slot without a token; watchers see FORCED."""
    from tests.integration.support import Stream

    await running.stub.Begin(begin_request("op-1"))
    stream = Stream(running.stub.Watch(pb.WatchRequest(guards=["generate"])))
    await stream.until(1)
    reply = await running.stub.End(pb.EndRequest(guard="generate", operation_id="op-1", force=True))
    assert reply.result == pb.END_RESULT_ENDED
    _, released = await stream.until(2)
    stream.cancel()
    assert released.change.release_reason == pb.RELEASE_REASON_FORCED


async def test_fencing_tokens_increase_across_grants(running: Any) -> None:
    """Every grant of a guard gets a larger fencing token than the one before."""
    tokens = []
    for i in range(5):
        grant = (await running.stub.Begin(begin_request(f"op-{i}"))).granted
        tokens.append(grant.run.fencing_token)
        await running.stub.End(
            pb.EndRequest(guard="generate", operation_id=f"op-{i}", lease_token=grant.lease_token)
        )
    assert tokens == sorted(tokens)
    assert len(set(tokens)) == 5
