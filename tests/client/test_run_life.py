"""The clients and a run's life against a real server: outcomes and results, progress from
inside ``run()``, and a cooperative cancel the holder learns of while it keeps its slot."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from runguard.client import (
    AsyncClient,
    Cancelled,
    CancelResult,
    Change,
    Client,
    EndResult,
    RunNotFound,
    RunRejected,
)
from tests.client import test_clients
from tests.client.test_clients import Api
from tests.conftest import Served

api = test_clients.api  # the sync and the async client, as the client tests have them


async def test_a_double_submit_gets_the_first_runs_result(api: Api) -> None:
    """End with an outcome and a result; a second identical Begin is refused carrying both."""
    grant = await api.begin("gen", route="/generate", payload={"prompt": "cats"})
    result = await api.end_grant(grant, outcome="succeeded", result={"batch": "/out/17"})
    assert result is EndResult.ENDED

    with pytest.raises(RunRejected) as caught:
        await api.begin("gen", route="/generate", payload={"prompt": "cats"})

    rejected = caught.value
    assert rejected.reason == "duplicate"
    assert rejected.earlier_state == "ended"
    assert rejected.earlier_outcome == "succeeded"
    assert rejected.earlier_result == {"batch": "/out/17"}
    run = await api.get_run("gen", grant.run.operation_id)
    assert (run.state, run.end_reason, run.result) == ("ended", "ended", {"batch": "/out/17"})


async def test_unknown_runs_are_told_apart(api: Api) -> None:
    """End of a run never held is UNKNOWN; GetRun and Cancel of it raise RunNotFound."""
    assert await api.end("gen", "never-held", "x") is EndResult.UNKNOWN
    with pytest.raises(RunNotFound, match="not known"):
        await api.get_run("gen", "never-held")
    with pytest.raises(RunNotFound):
        await api.cancel("gen", "never-held")


async def test_keep_alive_carries_progress_and_says_when_cancel_was_asked(api: Api) -> None:
    """KeepAlive with a fraction shows in Current; after Cancel it returns cancel_requested."""
    grant = await api.begin("gen", route="/generate", payload=1)
    run = grant.run
    renewed = await api.keep_alive("gen", run.operation_id, grant.lease_token, fraction=0.5)
    assert renewed.progress is not None
    assert renewed.progress.fraction == 0.5
    assert (await api.current("gen")).holders[0].progress == renewed.progress

    reply = await api.cancel("gen", run.operation_id, reason="stop please")

    assert reply.result is CancelResult.REQUESTED
    again = await api.keep_alive("gen", run.operation_id, grant.lease_token, message="winding down")
    assert again.cancel_requested
    assert again.cancel_reason == "stop please"
    assert again.progress is not None
    assert again.progress.message == "winding down"


def test_run_learns_of_a_cancel_keeps_the_slot_and_ends_cancelled(
    served: Callable[..., Served],
) -> None:
    """Inside run(): on_cancel is called, check() raises Cancelled, the slot is still held;
    leaving the block Ends the run with outcome cancelled and frees the slot."""
    server = served()
    asked = threading.Event()
    seen: list[Cancelled] = []

    def on_cancel(error: Cancelled) -> None:
        seen.append(error)
        asked.set()

    def body(client: Client, other: Client) -> str:
        with client.run("job", route="/j", ttl=600, on_cancel=on_cancel) as slot:
            other.cancel("job", slot.run.operation_id, reason="user pressed stop")
            # ttl 600 renews every 200 s: only the watch can tell this fast.
            assert asked.wait(5)
            assert slot.cancel_requested
            holders = other.current("job").holders
            assert [r.operation_id for r in holders] == [slot.run.operation_id]
            operation_id.append(slot.run.operation_id)
            slot.check()
        return "not reached"

    operation_id: list[str] = []
    with Client(server.address) as client, Client(server.address) as other:
        with pytest.raises(Cancelled, match="user pressed stop"):
            body(client, other)
        assert len(seen) == 1
        assert other.current("job").holders == ()
        ended = other.get_run("job", operation_id[0])
        assert (ended.state, ended.outcome) == ("ended", "cancelled")


def test_progress_reported_inside_run_reaches_a_watcher(served: Callable[..., Served]) -> None:
    """report_progress() from inside run() reaches another client's watch; the last value
    arrives, and finish() sets the End's outcome and result."""
    server = served()
    with Client(server.address) as client, Client(server.address) as viewer:
        watch = viewer.watch(["job"])
        next(watch)  # the snapshot: the watch is open before the run starts
        with client.run("job", route="/j", ttl=600) as slot:
            for step in range(1, 11):
                slot.report_progress(step / 10, f"step {step} of 10")
            last = None
            for event in watch:
                if isinstance(event, Change) and event.kind == "progressed" and event.run:
                    last = event.run.progress
                    if last is not None and last.message == "step 10 of 10":
                        break
            slot.finish({"frames": 10}, outcome="succeeded")
        watch.close()
        assert last is not None
        assert last.fraction == 1.0
        ended = viewer.get_run("job", slot.run.operation_id)
        assert (ended.outcome, ended.result) == ("succeeded", {"frames": 10})


def test_a_block_that_raises_ends_failed(served: Callable[..., Served]) -> None:
    """An exception out of run() Ends the run with outcome failed."""
    server = served()
    with Client(server.address) as client:
        with pytest.raises(ZeroDivisionError), client.run("job", route="/j") as slot:
            _ = 1 / 0
        assert client.get_run("job", slot.run.operation_id).outcome == "failed"


async def test_async_run_learns_of_a_cancel(served: Callable[..., Served]) -> None:
    """The async run() sees a cancel too and Ends cancelled when its block returns."""
    server = served()
    async with AsyncClient(server.address) as client, AsyncClient(server.address) as other:
        async with client.run("job", route="/j", ttl=600) as slot:
            await other.cancel("job", slot.run.operation_id)
            for _ in range(500):
                if slot.cancel_requested:
                    break
                await asyncio.sleep(0.01)
            assert slot.cancel_requested
            with pytest.raises(Cancelled):
                slot.check()
        ended = await other.get_run("job", slot.run.operation_id)
        assert ended.outcome == "cancelled"
