"""Bearer tokens and roles over a real connection: who may call what, what is audited,
and who holds a slot."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import pytest
import structlog.testing
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from runguard.v1 import runguard_pb2 as pb
from tests.conftest import Running
from tests.integration.support import begin_request, end_request, keep_alive_request
from tests.security.conftest import Caller, MakeCaller, Tokens

OK = grpc.StatusCode.OK
DENIED = grpc.StatusCode.PERMISSION_DENIED


async def _code(call: Any) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return OK


async def _revision(caller: Caller) -> int:
    reply = await caller("Current", pb.CurrentRequest(guard="generate"))
    return int(reply.revision)


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param((), id="no-token"),
        pytest.param((("authorization", "Bearer " + "x" * 32),), id="unknown-token"),
        pytest.param((("authorization", "Basic dXNlcjpwYXNz"),), id="not-bearer"),
        pytest.param((("authorization", "Bearer"),), id="empty-bearer"),
    ],
)
async def test_calls_without_a_known_token_are_unauthenticated_and_change_nothing(
    server: Running, as_: Callable[[str], Caller], metadata: tuple[tuple[str, str], ...]
) -> None:
    """No token, an unknown token or a malformed header: UNAUTHENTICATED, audited, no change."""
    admin = as_("admin")
    before = await _revision(admin)
    stranger = as_("none")
    stranger.metadata = metadata
    with structlog.testing.capture_logs() as logs:
        for method, request in [
            ("Begin", begin_request("op-1")),
            ("Current", pb.CurrentRequest(guard="generate")),
            ("End", pb.EndRequest(guard="generate", operation_id="op-1", force=True)),
        ]:
            assert await _code(stranger(method, request)) == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stranger.watch(pb.WatchRequest()):
                pass
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await _revision(admin) == before
    audits = [line for line in logs if line["event"] == "audit"]
    assert [a["method"] for a in audits] == ["Begin", "Current", "End", "Watch"]
    assert all(a["refused"] == "Unauthenticated" and a["principal"] == "" for a in audits)
    assert audits[0]["guard"] == "generate"
    assert audits[0]["operation_id"] == "op-1"


ROLE_MATRIX = [
    ("runner", "Begin", OK),
    ("runner", "End", OK),
    ("runner", "KeepAlive", OK),
    ("runner", "Current", OK),
    ("runner", "Watch", OK),
    ("runner", "End force", DENIED),
    ("watcher", "Begin", DENIED),
    ("watcher", "End", DENIED),
    ("watcher", "KeepAlive", DENIED),
    ("watcher", "Current", OK),
    ("watcher", "Watch", OK),
    ("watcher", "End force", DENIED),
    ("admin", "Begin", OK),
    ("admin", "End", OK),
    ("admin", "KeepAlive", OK),
    ("admin", "Current", OK),
    ("admin", "Watch", OK),
    ("admin", "End force", OK),
    ("runner", "ListGuards", OK),
    ("watcher", "ListGuards", OK),
    ("admin", "ListGuards", OK),
    ("runner", "ConfigureGuard", DENIED),
    ("watcher", "ConfigureGuard", DENIED),
    ("admin", "ConfigureGuard", OK),
]


@pytest.mark.parametrize(
    ("who", "action", "code"),
    [pytest.param(w, a, c, id=f"{w}-{a.replace(' ', '-')}") for w, a, c in ROLE_MATRIX],
)
async def test_each_role_may_make_exactly_its_calls(
    as_: Callable[[str], Caller], who: str, action: str, code: grpc.StatusCode
) -> None:
    """run: Begin, End, KeepAlive, Current, Watch, ListGuards; watch: Current, Watch,
    ListGuards; admin: all, force and ConfigureGuard.

    A refused call is PERMISSION_DENIED, even with the right lease token, and changes nothing.
    """
    held = (await as_("runner")("Begin", begin_request("op-held"))).granted
    caller = as_(who)
    before = await _revision(as_("admin"))
    if action == "Begin":
        call = caller("Begin", begin_request("op-new", guard="other"))
    elif action == "End":
        call = caller("End", end_request(held))
    elif action == "KeepAlive":
        call = caller("KeepAlive", keep_alive_request(held))
    elif action == "Current":
        call = caller("Current", pb.CurrentRequest(guard="generate"))
    elif action == "End force":
        call = caller("End", pb.EndRequest(guard="generate", operation_id="op-held", force=True))
    elif action == "ListGuards":
        call = caller("ListGuards", pb.ListGuardsRequest())
    elif action == "ConfigureGuard":
        call = caller("ConfigureGuard", pb.ConfigureGuardRequest(guard="generate", capacity=2))
    else:
        call = _first_watch_message(caller)
    assert await _code(call) == code
    if code is DENIED:
        assert await _revision(as_("admin")) == before


async def _first_watch_message(caller: Caller) -> None:
    stream = caller.watch(pb.WatchRequest(guards=["generate"]))
    try:
        message = await stream.read()
        assert message.WhichOneof("event") == "snapshot"
    finally:
        stream.cancel()


async def test_forced_ends_and_refusals_are_audit_lines_without_secrets(
    as_: Callable[[str], Caller], tokens: Tokens
) -> None:
    """A forced End, a force without admin and a wrong lease token each log one audit line,
    naming principal, method, guard and operation_id; no token appears in any line."""
    runner, admin = as_("runner"), as_("admin")
    held = (await runner("Begin", begin_request("op-1", {"secret": "p4yl0ad"}))).granted
    force = pb.EndRequest(guard="generate", operation_id="op-1", force=True)
    wrong = pb.EndRequest(guard="generate", operation_id="op-1", lease_token="not-the-token")
    with structlog.testing.capture_logs() as logs:
        assert await _code(runner("End", force)) == DENIED
        assert await _code(runner("End", wrong)) == DENIED
        assert await _code(admin("End", force)) == OK
    audits = [line for line in logs if line["event"] == "audit"]
    assert [
        (a["principal"], a["method"], a["guard"], a["operation_id"], a.get("refused"))
        for a in audits
    ] == [
        ("worker-7", "End", "generate", "op-1", "NotPermitted"),
        ("worker-7", "End", "generate", "op-1", "LeaseMismatch"),
        ("ops", "End", "generate", "op-1", None),
    ]
    assert "force needs the role admin" in audits[0]["reason"]
    assert audits[2]["action"] == "force"
    assert audits[2]["result"] == "ended"
    text = repr(logs)
    for secret in (held.lease_token, tokens.runner, tokens.admin, "p4yl0ad"):
        assert secret not in text


async def test_current_and_watch_show_who_holds_each_slot(
    server: Running, as_: Callable[[str], Caller]
) -> None:
    """A run carries its principal in the grant, Current, a rejection, and Watch's changes,
    also when it was granted from the queue."""
    runner, ci, watcher = as_("runner"), as_("both"), as_("watcher")
    stream = watcher.watch(pb.WatchRequest(guards=["generate"]))
    assert (await stream.read()).WhichOneof("event") == "snapshot"
    held = (await runner("Begin", begin_request("op-1"))).granted
    assert held.run.principal == "worker-7"
    current = await watcher("Current", pb.CurrentRequest(guard="generate"))
    assert [h.principal for h in current.state.holders] == ["worker-7"]
    refused = await ci("Begin", begin_request("op-2"))
    assert [h.principal for h in refused.rejected.holders] == ["worker-7"]
    queued = asyncio.ensure_future(ci("Begin", begin_request("op-3", wait=10)))
    await asyncio.sleep(0.2)
    await runner("End", end_request(held))
    granted = (await queued).granted
    assert (granted.run.operation_id, granted.run.principal) == ("op-3", "ci")
    changes = [(await stream.read()).change for _ in range(3)]
    stream.cancel()
    assert [(c.run.operation_id, c.run.principal) for c in changes] == [
        ("op-1", "worker-7"),
        ("op-1", "worker-7"),
        ("op-3", "ci"),
    ]
    assert [h.principal for h in changes[2].state.holders] == ["ci"]


async def test_another_principal_cannot_replay_a_begin_to_get_its_lease_token(
    as_: Callable[[str], Caller],
) -> None:
    """The same Begin (operation_id and payload) from another principal is ALREADY_EXISTS,
    never the holder's grant; the holder's own retry still gets it back."""
    runner, ci = as_("runner"), as_("both")
    first = (await runner("Begin", begin_request("op-1"))).granted
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ci("Begin", begin_request("op-1"))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "of another principal" in (caught.value.details() or "")
    again = (await runner("Begin", begin_request("op-1"))).granted
    assert again.replayed
    assert again.lease_token == first.lease_token


async def test_health_and_reflection_stay_open_without_a_token(
    server: Running, callers: MakeCaller
) -> None:
    """Probes and `grpcurl list` need no credentials: health and reflection are not guarded."""
    caller = callers(server.address)
    health = health_pb2_grpc.HealthStub(caller.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(caller.channel)
    call = reflection.ServerReflectionInfo(timeout=5)
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    answer = await call.read()
    await call.done_writing()
    names = [s.name for s in answer.list_services_response.service]
    assert "runguard.v1.RunGuardService" in names


async def test_watchers_of_one_principal_are_capped_while_others_keep_working(
    start_server: Callable[..., Any], tokens: Tokens, callers: MakeCaller
) -> None:
    """One principal past max_watchers_per_principal gets RESOURCE_EXHAUSTED (audited); other
    principals still watch and begin, and a closed stream frees a place."""
    server = await start_server(auth_tokens=str(tokens.path), max_watchers_per_principal=3)
    greedy = callers(server.address, token=tokens.watcher)
    other = callers(server.address, token=tokens.runner)
    streams = [greedy.watch(pb.WatchRequest()) for _ in range(3)]
    for stream in streams:
        assert (await stream.read()).WhichOneof("event") == "snapshot"
    with structlog.testing.capture_logs() as logs:
        for _ in range(5):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await greedy.watch(pb.WatchRequest()).read()
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "dashboard" in (caught.value.details() or "")
    refused = [line for line in logs if line["event"] == "audit"]
    assert len(refused) == 5
    assert {line["refused"] for line in refused} == {"TooManyWatchers"}
    mine = other.watch(pb.WatchRequest())
    assert (await mine.read()).WhichOneof("event") == "snapshot"
    assert (await other("Begin", begin_request("op-1"))).WhichOneof("outcome") == "granted"
    streams[0].cancel()
    codes = []
    for _ in range(100):  # the server learns of the cancel asynchronously
        again = greedy.watch(pb.WatchRequest())
        try:
            first = await again.read()
        except grpc.aio.AioRpcError as error:
            codes.append(error.code())
            await asyncio.sleep(0.02)
            continue
        assert first.WhichOneof("event") == "snapshot"
        break
    else:
        raise AssertionError("a closed stream never freed its place")
    assert set(codes) <= {grpc.StatusCode.RESOURCE_EXHAUSTED}
    for stream in [*streams, mine, again]:
        stream.cancel()
