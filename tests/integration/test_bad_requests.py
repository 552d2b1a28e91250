"""Bad input: INVALID_ARGUMENT naming each bad field, and nothing changes."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from runguard.v1 import runguard_pb2 as pb
from tests.integration.support import bad_request, begin_request, seconds, value


def _violations(error: grpc.aio.AioRpcError) -> list[str]:
    return [v.field for v in bad_request(error).field_violations]


def _with(**changes: Any) -> pb.BeginRequest:
    request = begin_request("op-1")
    for name, new in changes.items():
        if name in ("ttl", "wait"):
            getattr(request, name).CopyFrom(new)
        elif name == "payload":
            request.payload.CopyFrom(new)
        elif name == "labels":
            request.labels.update(new)
        else:
            setattr(request, name, new)
    return request


@pytest.mark.parametrize(
    ("request_", "fields"),
    [
        pytest.param(_with(guard="no spaces"), ["guard"], id="guard-characters"),
        pytest.param(_with(guard="g" * 129), ["guard"], id="guard-too-long"),
        pytest.param(_with(operation_id="a b"), ["operation_id"], id="operation-id"),
        pytest.param(_with(route="r" * 257), ["route"], id="route-too-long"),
        pytest.param(_with(route="a\nb"), ["route"], id="route-control-character"),
        pytest.param(_with(ttl=seconds(-1)), ["ttl"], id="negative-ttl"),
        pytest.param(_with(ttl=seconds(0)), ["ttl"], id="zero-ttl"),
        pytest.param(_with(ttl=seconds(1801)), ["ttl"], id="ttl-over-max"),
        pytest.param(_with(wait=seconds(-1)), ["wait"], id="negative-wait"),
        pytest.param(_with(wait=seconds(3601)), ["wait"], id="wait-over-max"),
        pytest.param(_with(payload=value({"s": "x" * 70000})), ["payload"], id="payload-too-big"),
        pytest.param(
            _with(labels={f"k{i}": "v" for i in range(17)}), ["labels"], id="labels-count"
        ),
        pytest.param(_with(labels={"bad key": "v"}), ["labels['bad key']"], id="label-key"),
        pytest.param(
            _with(guard="!", route="\x00", ttl=seconds(-1)),
            ["guard", "route", "ttl"],
            id="several-fields",
        ),
    ],
)
async def test_bad_begin_names_each_field_and_changes_nothing(
    running: Any, request_: pb.BeginRequest, fields: list[str]
) -> None:
    """A bad Begin is INVALID_ARGUMENT with one BadRequest violation per bad field; no grant."""
    before = await running.stub.Current(pb.CurrentRequest(guard="generate"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await running.stub.Begin(request_)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(caught.value) == fields
    after = await running.stub.Current(pb.CurrentRequest(guard="generate"))
    assert after.revision == before.revision
    assert list(after.state.holders) == []


async def test_deep_payload_is_refused(running: Any) -> None:
    """A payload nested deeper than 32 levels is refused by name."""
    deep: Any = 1
    for _ in range(40):
        deep = [deep]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await running.stub.Begin(_with(payload=value(deep)))
    assert _violations(caught.value) == ["payload"]


@pytest.mark.parametrize(
    ("method", "request_", "fields"),
    [
        pytest.param("End", pb.EndRequest(operation_id="op"), ["lease_token"], id="end-no-token"),
        pytest.param("End", pb.EndRequest(lease_token="t"), ["operation_id"], id="end-no-id"),
        pytest.param(
            "KeepAlive",
            pb.KeepAliveRequest(operation_id="op", lease_token="t", ttl=seconds(-5)),
            ["ttl"],
            id="keepalive-negative-ttl",
        ),
        pytest.param("Current", pb.CurrentRequest(guard="a b"), ["guard"], id="current-guard"),
    ],
)
async def test_bad_unary_requests(
    running: Any, method: str, request_: Any, fields: list[str]
) -> None:
    """End, KeepAlive and Current name their bad fields too."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await getattr(running.stub, method)(request_)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(caught.value) == fields


async def test_bad_watch_is_refused_before_streaming(running: Any) -> None:
    """A Watch with a bad guard name or a negative revision ends INVALID_ARGUMENT."""
    call = running.stub.Watch(pb.WatchRequest(guards=["ok", "not ok"], after_revision=-1))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(caught.value) == ["guards[1]", "after_revision"]
