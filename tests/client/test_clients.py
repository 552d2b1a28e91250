"""Both clients against a real server: the same calls, the same outcomes."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from runguard.client import (
    AsyncClient,
    Client,
    EndResult,
    InvalidArgument,
    LeaseLost,
    PermissionDenied,
    RunRejected,
    Unavailable,
)
from tests.client.conftest import Api
from tests.conftest import Served


async def test_begin_end_current(api: Api) -> None:
    """A grant shows in Current, End frees it, and a second End says ALREADY_ENDED."""
    grant = await api.begin("generate", route="/g", payload={"p": 1}, labels={"who": "test"})
    state = await api.current("generate")
    assert [run.operation_id for run in state.holders] == [grant.run.operation_id]
    assert state.holders[0].labels == {"who": "test"}
    assert await api.end_grant(grant) is EndResult.ENDED
    assert await api.end_grant(grant) is EndResult.ALREADY_ENDED
    assert (await api.current("generate")).holders == ()


async def test_refusals_are_typed(api: Api) -> None:
    """IN_FLIGHT and DUPLICATE raise RunRejected with the seed's reasons and the holder."""
    grant = await api.begin("generate", route="/g", payload={"p": 1})
    with pytest.raises(RunRejected) as in_flight:
        await api.begin("generate", route="/g", payload={"p": 2})
    assert in_flight.value.reason == "in_flight"
    assert in_flight.value.operation_id == grant.run.operation_id
    await api.end_grant(grant)
    with pytest.raises(RunRejected) as duplicate:
        await api.begin("generate", route="/g", payload={"p": 1.0})
    assert duplicate.value.reason == "duplicate"
    assert duplicate.value.duplicate_of is not None
    assert duplicate.value.duplicate_of.operation_id == grant.run.operation_id


async def test_faults_are_typed(api: Api) -> None:
    """Bad fields, a wrong token and a lost lease raise their own errors."""
    with pytest.raises(InvalidArgument) as invalid:
        await api.begin("not a guard", route="/g", ttl=-1)
    assert [field for field, _ in invalid.value.violations] == ["guard", "ttl"]
    grant = await api.begin("generate", route="/g")
    with pytest.raises(PermissionDenied):
        await api.end("generate", grant.run.operation_id, "wrong")
    await api.end_grant(grant)
    with pytest.raises(LeaseLost) as lost:
        await api.keep_alive("generate", grant.run.operation_id, grant.lease_token)
    assert "ended" in lost.value.message


async def test_waiting_begin_is_granted_when_the_slot_frees(api: Api) -> None:
    """A Begin with wait queues and is granted as soon as the holder ends."""
    grant = await api.begin("generate", route="/g", payload=1)
    waiting = asyncio.ensure_future(api.begin("generate", route="/g", payload=2, wait=10))
    for _ in range(500):
        if (await api.current("generate")).queue_length == 1:
            break
        await asyncio.sleep(0.01)
    await api.end_grant(grant)
    second = await waiting
    assert second.run.fencing_token > grant.run.fencing_token


async def test_unreachable_server_is_unavailable_after_retries() -> None:
    """With no server, calls fail Unavailable after the retry policy's attempts."""
    from runguard.client import RetryPolicy

    fast = RetryPolicy(attempts=2, initial_backoff=0.01, max_backoff=0.02)
    async with AsyncClient("127.0.0.1:1", retry=fast, timeout=2) as client:
        with pytest.raises(Unavailable):
            await client.current("generate")


def test_run_renews_the_lease_and_ends_on_exit(served: Callable[..., Served]) -> None:
    """Inside run(), a short lease outlives its ttl through renewals; the slot frees on exit."""
    server = served()
    with Client(server.address) as client:
        with client.run("job", route="/j", ttl=0.3) as holding:
            time.sleep(1.0)
            assert not holding.lost
            assert [r.operation_id for r in client.current("job").holders] == [
                holding.run.operation_id
            ]
        assert client.current("job").holders == ()


def test_run_ends_the_slot_when_the_body_raises(served: Callable[..., Served]) -> None:
    """An exception in the body propagates and the slot is still given back."""
    server = served()
    with Client(server.address) as client:
        with pytest.raises(ZeroDivisionError), client.run("job", route="/j"):
            _ = 1 / 0
        assert client.current("job").holders == ()


def test_run_learns_of_a_forced_end_at_once(served: Callable[..., Served]) -> None:
    """A force-ended holder sees lost turn true, on_lost called once, and LeaseLost on exit."""
    server = served()
    called: list[LeaseLost] = []
    lost = threading.Event()

    def on_lost(error: LeaseLost) -> None:
        called.append(error)
        lost.set()

    def body(client: Client) -> None:
        with client.run("job", route="/j", ttl=600, on_lost=on_lost) as holding:
            client.end("job", holding.run.operation_id, force=True)
            # ttl 600 renews every 200 s: only the watch can tell this fast.
            assert lost.wait(5)
            assert holding.lost

    with Client(server.address) as client:
        with pytest.raises(LeaseLost, match="forced"):
            body(client)
        assert len(called) == 1


def test_run_learns_of_expiry_when_renewals_fail(
    served: Callable[..., Served], monkeypatch: pytest.MonkeyPatch
) -> None:
    """When renewals cannot get through, the lease expires and the holder is told it expired."""
    server = served()
    with Client(server.address) as client:

        def unreachable(*args: Any, **kwargs: Any) -> Any:
            raise Unavailable("pretend the network is down")

        monkeypatch.setattr(client, "keep_alive", unreachable)

        def body() -> None:
            with client.run("job", route="/j", ttl=0.3) as holding:
                deadline = time.monotonic() + 5
                while not holding.lost and time.monotonic() < deadline:
                    time.sleep(0.02)

        with pytest.raises(LeaseLost, match="expired"):
            body()


async def test_async_run_renews_and_learns_of_a_forced_end(
    served: Callable[..., Served],
) -> None:
    """The async run() renews a short lease and reports a forced end."""
    server = served()
    async with AsyncClient(server.address) as client:
        async with client.run("job", route="/j", ttl=0.3) as holding:
            await asyncio.sleep(1.0)
            assert not holding.lost
        assert (await client.current("job")).holders == ()

        async def body() -> None:
            async with client.run("job", route="/j2", ttl=600) as holding:
                await client.end("job", holding.run.operation_id, force=True)
                for _ in range(500):
                    if holding.lost:
                        break
                    await asyncio.sleep(0.01)
                assert holding.lost

        with pytest.raises(LeaseLost, match="forced"):
            await body()


def test_run_refused_does_not_run_the_body(served: Callable[..., Served]) -> None:
    """A refused run() raises RunRejected before the body runs."""
    server = served()
    ran = []
    with Client(server.address) as client:
        client.begin("job", route="/other")
        with pytest.raises(RunRejected), client.run("job", route="/j"):
            ran.append(True)
    assert ran == []


def test_client_channels_reconnect_soon_after_a_server_comes_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both clients cap grpc's reconnect backoff (1 s, not 120 s), so a call soon after a
    server's restart is not refused for a backoff meant for a dead host; the caller's own
    options still win."""
    import grpc

    seen: dict[str, dict[str, Any]] = {}
    sync_channel, aio_channel = grpc.insecure_channel, grpc.aio.insecure_channel

    def sync_capture(target: str, options: list[tuple[str, Any]]) -> Any:
        seen["sync"] = dict(options)
        return sync_channel(target, options=options)

    def aio_capture(target: str, options: list[tuple[str, Any]]) -> Any:
        seen["async"] = dict(options)
        return aio_channel(target, options=options)

    monkeypatch.setattr(grpc, "insecure_channel", sync_capture)
    monkeypatch.setattr(grpc.aio, "insecure_channel", aio_capture)
    Client("127.0.0.1:1", options=[("grpc.max_reconnect_backoff_ms", 5000)]).close()

    async def open_async() -> None:
        await AsyncClient("127.0.0.1:1").aclose()

    asyncio.run(open_async())
    assert seen["sync"]["grpc.max_reconnect_backoff_ms"] == 5000  # the caller's wins
    assert seen["async"]["grpc.max_reconnect_backoff_ms"] == 1000
    assert seen["async"]["grpc.initial_reconnect_backoff_ms"] == 100
