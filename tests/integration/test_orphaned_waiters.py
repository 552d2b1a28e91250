"""Queued callers across a server's death: none is ever granted a slot nobody waits for.

``runguard serve --store sqlite:///…`` processes, killed (SIGKILL) or stopped (SIGTERM)
while callers wait in a guard's queue, then started again on the same file.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from runguard.client import AsyncClient, Client, Unavailable
from runguard.v1 import runguard_pb2 as pb
from tests.conftest import Served
from tests.integration.support import begin_request, end_request, queue_reaches
from tests.stubs import sync_stub

STEP = 30.0
"""Seconds any one step may take before the test fails: generous, never a speed claim."""


def _stop(server: Served, how: signal.Signals) -> None:
    server.process.send_signal(how)
    server.process.wait(STEP)


def _state(stub: Any, guard: str = "g") -> pb.GuardState:
    # wait_for_ready: a channel to a restarted server's address may still be backing off.
    reply: pb.CurrentResponse = stub.Current(
        pb.CurrentRequest(guard=guard), timeout=STEP, wait_for_ready=True
    )
    return reply.state


def _until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + STEP
    while not check():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.02)


@pytest.fixture
def channel_to() -> Iterator[Callable[[Served], grpc.Channel]]:
    """Channels to servers; all closed after the test."""
    opened: list[grpc.Channel] = []

    def open_to(server: Served) -> grpc.Channel:
        channel = grpc.insecure_channel(server.address)
        opened.append(channel)
        return channel

    yield open_to
    for channel in opened:
        channel.close()


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_waiters_of_a_dead_server_are_never_promoted(
    served: Callable[..., Served],
    channel_to: Callable[[Served], grpc.Channel],
    tmp_path: Path,
    how: signal.Signals,
) -> None:
    """After a restart with callers queued, the holder's End frees the slot for a new
    caller at once: the dead server's waiters are not in the queue and never granted."""
    url = f"sqlite://{tmp_path / 'runguard.db'}"
    first = served("--store", url)
    stub = sync_stub(channel_to(first))
    held = stub.Begin(begin_request("holder", guard="g"), timeout=STEP).granted
    waiting: list[grpc.CallFuture[pb.BeginResponse]] = [
        stub.Begin.future(begin_request(f"waiter-{n}", guard="g", wait=60), timeout=STEP * 3)
        for n in range(3)
    ]
    _until(lambda: _state(stub).queue_length == 3)
    _stop(first, how)
    for call in waiting:
        with pytest.raises(grpc.RpcError) as caught:
            call.result(STEP)
        assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)

    second = served("--store", url)
    stub = sync_stub(channel_to(second))
    state = _state(stub)
    assert [h.operation_id for h in state.holders] == ["holder"]
    assert state.queue_length == 0
    assert stub.End(end_request(held), timeout=STEP).result == pb.END_RESULT_ENDED
    assert list(_state(stub).holders) == []
    fresh = stub.Begin(begin_request("fresh", guard="g", wait=5), timeout=STEP)
    assert fresh.WhichOneof("outcome") == "granted"


def test_a_waiting_client_begin_survives_a_restart_within_its_wait(
    served: Callable[..., Served],
    channel_to: Callable[[Served], grpc.Channel],
    tmp_path: Path,
) -> None:
    """Client.begin(wait=…) queued when the server restarts sends itself again, with the same
    operation_id, and is granted once the holder ends on the new server."""
    url = f"sqlite://{tmp_path / 'runguard.db'}"
    first = served("--store", url)
    port = first.address.rpartition(":")[2]
    stub = sync_stub(channel_to(first))
    held = stub.Begin(begin_request("holder", guard="g"), timeout=STEP).granted
    outcome: dict[str, Any] = {}

    def wait_for_slot() -> None:
        with Client(first.address, timeout=STEP) as client:
            try:
                outcome["grant"] = client.begin(
                    "g", payload={"job": 1}, operation_id="patient", wait=60
                )
            except Exception as error:  # reported to the test below
                outcome["error"] = error

    waiter = threading.Thread(target=wait_for_slot)
    waiter.start()
    _until(lambda: _state(stub).queue_length == 1)
    _stop(first, signal.SIGTERM)
    second = served("--store", url, "--listen", f"127.0.0.1:{port}")
    stub = sync_stub(channel_to(second))
    _until(lambda: _state(stub).queue_length == 1)  # it came back and queued again
    assert stub.End(end_request(held), timeout=STEP).result == pb.END_RESULT_ENDED
    waiter.join(STEP)
    assert not waiter.is_alive()
    assert "error" not in outcome, outcome
    grant = outcome["grant"]
    assert grant.run.operation_id == "patient"
    assert [h.operation_id for h in _state(stub).holders] == ["patient"]


if TYPE_CHECKING:  # grpc-stubs make the base generic; at run time it is not subscriptable
    _Interceptor = grpc.UnaryUnaryClientInterceptor[Any, Any]
else:
    _Interceptor = grpc.UnaryUnaryClientInterceptor


class _LoseBeginAnswers(_Interceptor):
    """Lets every waiting Begin reach the server, then loses its answer (UNAVAILABLE)."""

    class Lost(grpc.RpcError, grpc.Call):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.UNAVAILABLE

        def details(self) -> str:
            return "connection reset while the answer was on its way"

        def trailing_metadata(self) -> tuple[()]:
            return ()

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        answer = continuation(details, request)
        if details.method.endswith("/Begin") and request.HasField("wait"):
            answer.result()  # the server decided; the caller never hears it
            raise self.Lost()
        return answer


def test_a_client_that_gives_up_on_a_begin_it_won_ends_that_run(
    served: Callable[..., Served], channel_to: Callable[[Served], grpc.Channel]
) -> None:
    """When every answer to a waiting Begin is lost, the client gives up when its wait is
    spent, picks up the grant it may have won (resume_only) and ends it: the slot is free."""
    server = served()
    stub = sync_stub(channel_to(server))
    lossy = grpc.intercept_channel(channel_to(server), _LoseBeginAnswers())
    with Client(server.address, timeout=5, channel=lossy) as client, pytest.raises(Unavailable):
        client.begin("g", payload={"job": 2}, operation_id="unlucky", wait=1.0)
    assert list(_state(stub).holders) == []
    again = stub.Begin(begin_request("next", guard="g"), timeout=STEP)
    assert again.WhichOneof("outcome") == "granted"


def test_resume_only_never_grants_or_queues_anew(
    served: Callable[..., Served], channel_to: Callable[[Served], grpc.Channel]
) -> None:
    """A resume-only Begin returns the grant its operation_id holds, else NOT_HELD and nothing
    changes (no run, no dedup entry, no guard)."""
    server = served()
    stub = sync_stub(channel_to(server))
    probe = begin_request("ghost", guard="empty")
    probe.resume_only = True
    refused = stub.Begin(probe, timeout=STEP)
    assert refused.rejected.reason == pb.REJECTION_REASON_NOT_HELD
    assert stub.ListGuards(pb.ListGuardsRequest(), timeout=STEP).guards == []
    held = stub.Begin(begin_request("mine", guard="g"), timeout=STEP).granted
    resumed = begin_request("mine", guard="g")
    resumed.resume_only = True
    again = stub.Begin(resumed, timeout=STEP).granted
    assert (again.lease_token, again.replayed) == (held.lease_token, True)


async def test_a_draining_server_sends_queued_callers_away_at_once(
    start_server: Callable[..., Any],
) -> None:
    """On stop, a queued Begin leaves the queue and answers UNAVAILABLE without waiting out
    the shutdown grace, so its caller can go to another replica or the restarted server."""
    running = await start_server()
    stub = running.stub
    await stub.Begin(begin_request("holder", guard="g"))
    queued = stub.Begin(begin_request("waiter", guard="g", wait=60))
    await queue_reaches(stub, 1, guard="g")
    stopping = asyncio.ensure_future(running.server.stop(grace=30.0))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(queued, STEP)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "send it again" in (caught.value.details() or "")
    doc = (await running.server.store.read("g")).doc
    assert [w.operation_id for w in doc.queue] == []
    await asyncio.wait_for(stopping, STEP)


async def test_an_async_client_begin_survives_a_restart_within_its_wait(
    served: Callable[..., Served],
    channel_to: Callable[[Served], grpc.Channel],
    tmp_path: Path,
) -> None:
    """AsyncClient.begin(wait=…) behaves as Client.begin across a restart: sent again, then
    granted on the new server once the holder ends."""
    url = f"sqlite://{tmp_path / 'runguard.db'}"
    first = await asyncio.to_thread(served, "--store", url)
    port = first.address.rpartition(":")[2]
    stub = sync_stub(channel_to(first))
    held = stub.Begin(begin_request("holder", guard="g"), timeout=STEP).granted
    async with AsyncClient(first.address, timeout=STEP) as client:
        waiting = asyncio.ensure_future(
            client.begin("g", payload={"job": 3}, operation_id="patient-async", wait=60)
        )
        await asyncio.to_thread(_until, lambda: _state(stub).queue_length == 1)
        await asyncio.to_thread(_stop, first, signal.SIGTERM)
        second = await asyncio.to_thread(served, "--store", url, "--listen", f"127.0.0.1:{port}")
        stub = sync_stub(channel_to(second))
        await asyncio.to_thread(_until, lambda: _state(stub).queue_length == 1)
        assert stub.End(end_request(held), timeout=STEP).result == pb.END_RESULT_ENDED
        grant = await asyncio.wait_for(waiting, STEP)
    assert grant.run.operation_id == "patient-async"
    assert [h.operation_id for h in _state(stub).holders] == ["patient-async"]
