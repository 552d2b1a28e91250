"""The whole RunGuardService over Connect (JSON and binary) and gRPC-Web, driven by the
real curl and by connectrpc's own client, on the same state as the gRPC port."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.protocol import ProtocolType
from google.protobuf import json_format
from google.rpc import error_details_pb2

from runguard.server.servicer import SERVICE
from runguard.v1 import runguard_connect
from runguard.v1 import runguard_pb2 as pb
from tests.conftest import Running
from tests.http.conftest import SERVICE_PATH, base_url, curl, envelope, frames, violations
from tests.integration.support import bad_request, begin_request

QUICK_START_BEGIN = '{"guard":"generate","route":"/generate","payload":{"prompt":"cats"}}'


async def post_json(running: Running, method: str, body: str) -> tuple[int, dict[str, Any]]:
    """POST a Connect unary JSON request with curl; the status and the JSON answer."""
    answer = await curl(
        "-H",
        "Content-Type: application/json",
        "-d",
        body,
        f"{base_url(running)}{SERVICE_PATH}/{method}",
    )
    return answer.status, answer.json()


async def test_curl_begin_is_granted_then_in_flight(http: Running) -> None:
    """The quick start's curl Begin is granted with a lease token; the same again is IN_FLIGHT."""
    status, first = await post_json(http, "Begin", QUICK_START_BEGIN)
    assert status == 200
    assert first["granted"]["run"]["guard"] == "generate"
    assert first["granted"]["leaseToken"]

    status, second = await post_json(http, "Begin", QUICK_START_BEGIN)

    assert status == 200
    assert second["rejected"]["reason"] == "REJECTION_REASON_IN_FLIGHT"
    holders = second["rejected"]["holders"]
    assert [h["operationId"] for h in holders] == [first["granted"]["run"]["operationId"]]
    assert "leaseToken" not in json.dumps(holders)


async def test_http_and_grpc_share_one_state(http: Running) -> None:
    """A run granted over native gRPC is Connect's Current holder; Connect's End frees it."""
    granted = (await http.stub.Begin(begin_request("grpc-run"))).granted

    _, current = await post_json(http, "Current", '{"guard":"generate"}')
    assert [h["operationId"] for h in current["state"]["holders"]] == ["grpc-run"]

    body = json.dumps(
        {"guard": "generate", "operationId": "grpc-run", "leaseToken": granted.lease_token}
    )
    _, ended = await post_json(http, "End", body)
    assert ended["result"] == "END_RESULT_ENDED"
    assert ended["run"]["state"] == "RUN_STATE_ENDED"  # the ended run, as gRPC shows it
    assert not (await http.stub.Current(pb.CurrentRequest(guard="generate"))).state.holders


async def test_bad_request_carries_the_same_field_violations_as_grpc(http: Running) -> None:
    """An invalid Begin is HTTP 400 invalid_argument with the BadRequest gRPC gives for it."""
    body = '{"guard":"no spaces allowed","route":"/r","payload":1,"ttl":"-5s"}'
    request = pb.BeginRequest()
    json_format.Parse(body, request)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await http.stub.Begin(request)
    grpc_bad = bad_request(raised.value)

    code, error = await post_json(http, "Begin", body)

    assert code == 400
    assert error["code"] == "invalid_argument"
    assert error["message"] == raised.value.details()
    assert violations(error) == [(v.field, v.description) for v in grpc_bad.field_violations]
    assert {field for field, _ in violations(error)} == {"guard", "ttl"}


async def test_unknown_json_field_is_refused_by_name(http: Running) -> None:
    """A JSON field the contract does not have is invalid_argument naming it; nothing changes."""
    code, error = await post_json(http, "Begin", '{"guard":"generate","capacity":5}')

    assert code == 400
    assert error["code"] == "invalid_argument"
    assert violations(error) == [("capacity", "is not a field of runguard.v1.BeginRequest")]
    assert not (await http.stub.Current(pb.CurrentRequest(guard="generate"))).state.holders


async def test_json_that_does_not_parse_is_invalid_argument(http: Running) -> None:
    """A body that is not JSON is invalid_argument naming the request, not a stack trace."""
    code, error = await post_json(http, "Begin", '{"guard": ')

    assert code == 400
    assert error["code"] == "invalid_argument"
    ((field, description),) = violations(error)
    assert field == "request"
    assert description.startswith("is not a valid runguard.v1.BeginRequest")
    assert "Traceback" not in error["message"]


async def test_curl_follows_watch_as_a_connect_stream(http: Running) -> None:
    """curl reads Watch as a Connect server stream: a snapshot, then the end frame at shutdown."""
    await http.stub.Begin(begin_request("held"))
    url = f"{base_url(http)}{SERVICE_PATH}/Watch"
    reading = asyncio.create_task(
        curl(
            "-N",
            "-H",
            "Content-Type: application/connect+json",
            "--data-binary",
            "@-",
            url,
            data=envelope({"guards": ["generate"]}),
        )
    )
    await asyncio.sleep(0.5)
    await http.server.stop(grace=0.5)
    answer = await reading

    assert answer.status == 200
    (first_flag, first), *_, (last_flag, last) = frames(answer.body)
    assert first_flag == 0
    holders = first["snapshot"]["guards"][0]["holders"]
    assert [h["operationId"] for h in holders] == ["held"]
    assert last_flag == 2
    assert last["error"]["code"] == "unavailable"


@pytest.mark.parametrize(
    "protocol",
    [
        pytest.param(ProtocolType.CONNECT, id="connect-binary"),
        pytest.param(ProtocolType.GRPC_WEB, id="grpc-web"),
    ],
)
async def test_connectrpc_client_begins_watches_and_ends(
    http: Running, protocol: ProtocolType
) -> None:
    """connectrpc's generated client does Begin, follows Watch to its change, and Ends."""
    async with runguard_connect.RunGuardServiceClient(base_url(http), protocol=protocol) as client:
        granted = (await client.begin(begin_request("connect-run"))).granted
        stream = client.watch(pb.WatchRequest(guards=["generate"]))
        seen = []
        async for message in stream:
            seen.append(message)
            if message.WhichOneof("event") == "snapshot":
                ended = await client.end(
                    pb.EndRequest(
                        guard="generate",
                        operation_id="connect-run",
                        lease_token=granted.lease_token,
                    )
                )
                assert ended.result == pb.END_RESULT_ENDED
            if message.WhichOneof("event") == "change":
                break

    assert [m.WhichOneof("event") for m in seen] == ["snapshot", "change"]
    assert seen[1].change.kind == pb.CHANGE_KIND_RELEASED
    assert seen[1].change.run.operation_id == "connect-run"


async def test_connectrpc_client_reads_the_bad_request_detail(http: Running) -> None:
    """A Connect client gets invalid_argument with a BadRequest detail it can decode."""
    async with runguard_connect.RunGuardServiceClient(base_url(http)) as client:
        with pytest.raises(ConnectError) as raised:
            await client.end(pb.EndRequest(guard="generate"))

    assert raised.value.code is Code.INVALID_ARGUMENT
    (detail,) = raised.value.details
    bad = error_details_pb2.BadRequest.FromString(detail.message_bytes)
    assert {v.field for v in bad.field_violations} == {"operation_id", "lease_token"}


@pytest.mark.parametrize("method", [m.name for m in SERVICE.methods])
async def test_every_rpc_of_the_contract_is_served(http: Running, method: str) -> None:
    """Each RPC of RunGuardService answers over Connect (never unimplemented), with no
    per-method code in the HTTP front."""
    streaming = SERVICE.methods_by_name[method].server_streaming
    if streaming:
        answer = await curl(
            "--max-time",
            "1",
            "-H",
            "Content-Type: application/connect+json",
            "--data-binary",
            "@-",
            f"{base_url(http)}{SERVICE_PATH}/{method}",
            data=envelope({}),
        )
        assert answer.status == 200
        assert frames(answer.body)[0][0] == 0
        return
    status, body = await post_json(http, method, "{}")
    assert body.get("code") != Code.UNIMPLEMENTED.value
    assert status in (200, 400)


async def test_every_unknown_json_field_is_named(http: Running) -> None:
    """Each field the contract does not have gets its own violation, not just the first."""
    code, error = await post_json(
        http, "Current", '{"guard":"g","route":"/x","payload":{},"extra_thing":1}'
    )

    assert code == 400
    assert sorted(violations(error)) == [
        (name, "is not a field of runguard.v1.CurrentRequest")
        for name in ("extra_thing", "payload", "route")
    ]


async def test_a_value_that_does_not_parse_is_blamed_on_its_field(http: Running) -> None:
    """A JSON value of the wrong shape names the field it was given for."""
    code, error = await post_json(http, "Begin", '{"guard":"generate","ttl":"abc"}')

    assert code == 400
    ((field, description),) = violations(error)
    assert field == "ttl"
    assert description.startswith("does not parse: ")
