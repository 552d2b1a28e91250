"""The watch hub under abuse: readers that stall, reconnect storms, streams that go away.

Each test abuses a real server over real sockets and checks what must hold: bounded
buffers, every change delivered in order (or replaced by a resynced Snapshot, never a
gap), and nothing left behind. No test asserts how fast anything is; every wait is
bounded so that a server that does block fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import bisect
import signal
import sys
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any

import grpc
import pytest
import structlog.testing

from runguard.server.hub import Hub
from runguard.server.limits import LABEL_VALUE_MAX_CHARS, LABELS_MAX
from runguard.v1 import runguard_pb2 as pb
from tests.conftest import Served
from tests.integration.support import Stream, begin_request, end_request, queue_reaches
from tests.stubs import async_stub

BIG = "big"
"""The guard whose messages are made as large as the limits allow."""

CAPACITY = 16
"""Slots of BIG: 15 stay held, one is taken and given back over and over."""

LABEL_KEY_CHARS = 63
"""The longest label key (LABEL_KEY_PATTERN allows 1 to 63 characters)."""

WATCH_BUFFER = 8
"""Changes a watcher may have buffered before it is coalesced."""

CYCLES = 100
"""Begin+End cycles on BIG while a watcher stalls: 200 changes of about 80 KiB each."""

STEP = 60.0
"""Seconds any one step may take before the test fails: generous, never a speed claim."""

LONG_CALL = 100.0
"""Deadline of calls meant to outlive the test's steps, so nothing can hang forever."""

STALLED_OPTIONS = [
    # Its own TCP connection, so it holds up nobody else's flow-control window...
    ("grpc.use_local_subchannel_pool", 1),
    # ...and a small window that never grows, so one big message fills it.
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", 1024),
]

Kind = int
ChangeKey = tuple[int, Kind, str]
"""A change as (revision, kind, operation_id)."""


def big_begin(operation_id: str) -> pb.BeginRequest:
    """A Begin on BIG with 16 labels at the size limits: about 5 KiB per run in every message."""
    request = begin_request(operation_id, guard=BIG)
    for index in range(LABELS_MAX):
        key = f"{index:02d}".ljust(LABEL_KEY_CHARS, "k")
        request.labels[key] = f"{operation_id}:{index}".ljust(LABEL_VALUE_MAX_CHARS, "v")
    return request


async def fill_big(stub: Any) -> None:
    """Hold all but one slot of BIG, so every message about it carries 15 big runs."""
    for index in range(CAPACITY - 1):
        reply = await stub.Begin(big_begin(f"holder-{index}"))
        assert reply.WhichOneof("outcome") == "granted"


class BufferProbe:
    """Records a server-side watcher's buffer around every change pushed to it."""

    def __init__(self, watcher: Any) -> None:
        self.watcher = watcher
        self.lengths: list[int] = []
        self.fell_behind = False
        push = watcher.push

        def probed(changes: Sequence[Any]) -> None:
            if len(watcher.buffer) + len(changes) > watcher.limit:
                self.fell_behind = True
            push(changes)
            self.lengths.append(len(watcher.buffer))

        watcher.push = probed

    @property
    def longest(self) -> int:
        """The longest the buffer has been after a push."""
        return max(self.lengths, default=0)


async def watchers_reach(hub: Hub, count: int) -> None:
    """Wait until the hub holds exactly ``count`` watchers (at most STEP seconds)."""
    for _ in range(int(STEP * 100)):
        if hub.watchers == count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the hub holds {hub.watchers} watchers, never {count}")


async def new_watchers(hub: Hub, known: set[Any], count: int = 1) -> list[Any]:
    """Wait for ``count`` watchers beyond ``known`` to subscribe; returns them."""
    await watchers_reach(hub, len(known) + count)
    return list(hub._watchers - known)


async def cycle(stub: Any, operation_id: str) -> list[tuple[Kind, str]]:
    """Take BIG's free slot and give it back; returns the two changes that makes."""
    reply = await stub.Begin(big_begin(operation_id))
    assert reply.WhichOneof("outcome") == "granted", reply
    assert (await stub.End(end_request(reply.granted))).result == pb.END_RESULT_ENDED
    return [(pb.CHANGE_KIND_ACQUIRED, operation_id), (pb.CHANGE_KIND_RELEASED, operation_id)]


async def produce(stub: Any, readers: Sequence[Stream], cycles: int) -> list[tuple[Kind, str]]:
    """Run ``cycles`` Begin+End cycles, each read by every reader before the next one starts."""
    produced: list[tuple[Kind, str]] = []
    for index in range(cycles):
        produced += await cycle(stub, f"cycle-{index}")
        for reader in readers:
            await reader.until(1 + len(produced), within=STEP)
    return produced


def errors(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    """The error lines among captured log lines."""
    return [entry for entry in logs if entry["log_level"] == "error"]


async def read(
    call: grpc.aio.UnaryStreamCall[pb.WatchRequest, pb.WatchResponse],
) -> pb.WatchResponse:
    """The stream's next message (it must not have ended)."""
    message = await call.read()
    assert isinstance(message, pb.WatchResponse), f"the stream ended: {message!r}"
    return message


def key(message: pb.WatchResponse) -> ChangeKey:
    """A Change message as (revision, kind, operation_id)."""
    change = message.change
    return (change.revision, change.kind, change.run.operation_id)


def every_change_in_order(reader: Stream, produced: list[tuple[Kind, str]]) -> list[ChangeKey]:
    """Check a reader got one Snapshot, then exactly the produced changes in order; return them."""
    snapshot, *changes = reader.events()
    assert snapshot.WhichOneof("event") == "snapshot"
    assert not snapshot.snapshot.resynced
    assert [m.WhichOneof("event") for m in changes] == ["change"] * len(produced)
    keys = [key(m) for m in changes]
    assert [(kind, op) for _, kind, op in keys] == produced
    revisions = [snapshot.snapshot.revision] + [revision for revision, _, _ in keys]
    assert revisions == sorted(set(revisions)), "revisions must strictly increase"
    return keys


def position_after(messages: Sequence[pb.WatchResponse], expected: list[ChangeKey]) -> int:
    """How far into ``expected`` the messages got; fails on any change out of place (a gap).

    A Snapshot moves the position to the first change after its revision; every Change
    must then be exactly the next expected one.
    """
    revisions = [revision for revision, _, _ in expected]
    position: int | None = None
    for message in messages:
        event = message.WhichOneof("event")
        if event == "snapshot":
            position = bisect.bisect_right(revisions, message.snapshot.revision)
        elif event == "change":
            assert position is not None, "a change before any snapshot"
            assert position < len(expected), f"a change nobody made: {key(message)}"
            assert key(message) == expected[position], "a change out of place: a gap"
            position += 1
    assert position is not None, "no snapshot"
    return position


async def test_a_watcher_that_never_reads_is_bounded_coalesced_and_holds_nobody_up(
    start_server: Callable[..., Any],
) -> None:
    """A watcher that never reads keeps at most watch_buffer changes while Begin/End and a
    reading watcher go on unhindered, and when it reads gets a resynced Snapshot, not a gap."""
    running = await start_server(watch_buffer=WATCH_BUFFER, capacities={BIG: CAPACITY})
    hub = running.server.coordinator.hub
    await fill_big(running.stub)
    stalled_channel = grpc.aio.insecure_channel(running.address, options=STALLED_OPTIONS)
    stalled_stub = async_stub(stalled_channel)
    # Created and never iterated: the call is sent, nothing is read until the end.
    stalled = stalled_stub.Watch(pb.WatchRequest(guards=[BIG]), timeout=LONG_CALL)
    reader = None
    try:
        (stalled_watcher,) = await new_watchers(hub, set())
        stalled_probe = BufferProbe(stalled_watcher)
        reader = Stream(running.stub.Watch(pb.WatchRequest(guards=[BIG]), timeout=LONG_CALL))
        (reader_watcher,) = await new_watchers(hub, {stalled_watcher})
        reader_probe = BufferProbe(reader_watcher)
        await reader.until(1, within=STEP)

        # (b) A fixed number of Begin/End cycles completes; (c) the reader keeps up.
        produced = await asyncio.wait_for(produce(running.stub, [reader], CYCLES), STEP)

        # (a) The stalled watcher really fell behind, and its buffer stayed bounded.
        assert len(stalled_probe.lengths) == len(produced)
        assert stalled_probe.longest <= WATCH_BUFFER
        assert reader_probe.longest <= WATCH_BUFFER
        assert stalled_probe.fell_behind, "the watcher kept up: nothing was tested"
        assert hub._watchers == {stalled_watcher, reader_watcher}
        assert all(len(w.buffer) <= WATCH_BUFFER for w in hub._watchers)

        # (c) The reader got every change, in order, and was never resynced.
        expected = every_change_in_order(reader, produced)

        # (d) Reading at last: what was in flight, then a resynced Snapshot; never a gap.
        received: list[pb.WatchResponse] = []
        for _ in range(len(expected) + 10):
            received.append(await asyncio.wait_for(read(stalled), STEP))
            if position_after(received, expected) == len(expected):
                break
        assert position_after(received, expected) == len(expected)
        first, *rest = received
        assert first.WhichOneof("event") == "snapshot"
        assert not first.snapshot.resynced
        resyncs = [m.snapshot for m in rest if m.WhichOneof("event") == "snapshot"]
        assert resyncs
        assert all(s.resynced for s in resyncs)
        assert len([m for m in rest if m.WhichOneof("event") == "change"]) < len(expected)
        final = resyncs[-1]
        assert final.revision == expected[-1][0]
        (state,) = final.guards
        assert [run.operation_id for run in state.holders] == [
            f"holder-{index}" for index in range(CAPACITY - 1)
        ]
    finally:
        stalled.cancel()
        if reader is not None:
            reader.cancel()
        await stalled_channel.close(None)


@pytest.mark.parametrize(
    "how", [pytest.param("cancel", id="client-cancel"), pytest.param("deadline", id="deadline")]
)
async def test_a_watcher_that_goes_away_while_a_write_to_it_is_held_leaves_quietly(
    start_server: Callable[..., Any], how: str
) -> None:
    """A stalled watcher cancelled or out of time while flow control holds a write to it is
    dropped from the hub, and the server logs no internal error for it."""
    running = await start_server(watch_buffer=WATCH_BUFFER, capacities={BIG: CAPACITY})
    hub = running.server.coordinator.hub
    await fill_big(running.stub)
    stalled_channel = grpc.aio.insecure_channel(running.address, options=STALLED_OPTIONS)
    stalled_stub = async_stub(stalled_channel)
    try:
        with structlog.testing.capture_logs() as logs:
            # A deadline well past the time the cycles below take.
            stalled = stalled_stub.Watch(
                pb.WatchRequest(guards=[BIG]), timeout=3.0 if how == "deadline" else LONG_CALL
            )
            (watcher,) = await new_watchers(hub, set())
            probe = BufferProbe(watcher)
            for index in range(WATCH_BUFFER):
                await cycle(running.stub, f"cycle-{index}")
            assert probe.fell_behind, "the watcher kept up: nothing was tested"
            if how == "cancel":
                stalled.cancel()
            code = await asyncio.wait_for(stalled.code(), STEP)
            await watchers_reach(hub, 0)
            # The server still serves watchers.
            stream = Stream(running.stub.Watch(pb.WatchRequest(guards=[BIG])))
            await stream.until(1, within=STEP)
            stream.cancel()
            await watchers_reach(hub, 0)
    finally:
        await stalled_channel.close(None)
    expected = grpc.StatusCode.CANCELLED if how == "cancel" else grpc.StatusCode.DEADLINE_EXCEEDED
    assert code == expected
    assert errors(logs) == []


FROZEN_WATCHER = """\
import sys, time
import grpc
from runguard.v1 import runguard_pb2 as pb, runguard_pb2_grpc
address, guard, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
stub = runguard_pb2_grpc.RunGuardServiceStub(grpc.insecure_channel(address))
stream = stub.Watch(pb.WatchRequest(guards=[guard]), timeout=seconds)
print(next(stream).WhichOneof("event"), flush=True)
time.sleep(seconds)
"""
"""A client process that opens a Watch, reads its Snapshot, and reads nothing more."""

READERS = 3
"""Watchers that read while another one is frozen."""


async def test_a_frozen_watcher_process_never_delays_other_watchers(
    start_server: Callable[..., Any],
) -> None:
    """With a watcher's process frozen (SIGSTOP), every other watcher gets every change in
    order, the frozen one stays within watch_buffer, and its stream goes when the process dies."""
    running = await start_server(watch_buffer=WATCH_BUFFER, capacities={BIG: CAPACITY})
    hub = running.server.coordinator.hub
    await fill_big(running.stub)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        FROZEN_WATCHER,
        running.address,
        BIG,
        str(LONG_CALL),
        stdout=asyncio.subprocess.PIPE,
    )
    readers: list[Stream] = []
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), STEP)
        assert line.strip() == b"snapshot"
        (frozen_watcher,) = await new_watchers(hub, set())
        frozen = BufferProbe(frozen_watcher)
        process.send_signal(signal.SIGSTOP)

        readers = [
            Stream(running.stub.Watch(pb.WatchRequest(guards=[BIG]), timeout=LONG_CALL))
            for _ in range(READERS)
        ]
        reader_probes = [BufferProbe(w) for w in await new_watchers(hub, {frozen_watcher}, READERS)]
        for reader in readers:
            await reader.until(1, within=STEP)

        produced = await asyncio.wait_for(produce(running.stub, readers, CYCLES), STEP)

        for reader in readers:
            every_change_in_order(reader, produced)
        assert frozen.longest <= WATCH_BUFFER
        assert all(probe.longest <= WATCH_BUFFER for probe in reader_probes)
        assert frozen.fell_behind, "the frozen watcher kept up: nothing was tested"

        with structlog.testing.capture_logs() as logs:
            process.kill()
            await asyncio.wait_for(process.communicate(), STEP)
            # The dead peer's stream, held in a write, goes with its connection.
            await watchers_reach(hub, READERS)
        assert frozen_watcher not in hub._watchers
        assert errors(logs) == []
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()
        for reader in readers:
            reader.cancel()


RECONNECTING = 2000
"""Watchers that lose their server and come back at once."""

CHANNELS = 8
"""Client connections the watchers are spread over (250 streams each)."""

RECONNECT_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),
    # Retry the restarted server within a second, not after grpc's default backoff.
    # (Not grpc.min_reconnect_backoff_ms: it is also the connect timeout, and a busy
    # machine can take more than a second to answer a connection with SETTINGS.)
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


async def _next_message(call: Any) -> pb.WatchResponse | grpc.StatusCode:
    try:
        message: pb.WatchResponse = await call.read()
    except grpc.aio.AioRpcError as error:
        return error.code()
    return message


async def _end_code(call: Any) -> grpc.StatusCode:
    try:
        while await call.read() is not grpc.aio.EOF:  # type: ignore[attr-defined]  # not in grpc-stubs
            pass
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def _codes(results: Sequence[object]) -> dict[str, int]:
    names = [r.name if isinstance(r, grpc.StatusCode) else "message" for r in results]
    return {name: names.count(name) for name in sorted(set(names))}


async def _next_messages(calls: Sequence[Any]) -> list[pb.WatchResponse]:
    """The next message of every call; fails naming the codes if any call ended instead."""
    results = await asyncio.wait_for(asyncio.gather(*map(_next_message, calls)), STEP)
    messages = [r for r in results if isinstance(r, pb.WatchResponse)]
    assert len(messages) == len(calls), _codes(results)
    return messages


async def test_two_thousand_watchers_reconnecting_at_once_after_a_restart_all_get_back_in(
    served: Callable[..., Served],
) -> None:
    """2,000 watchers whose server restarts on the same port all reconnect at once, each gets
    a resynced Snapshot of the new epoch, none fails, and all of them see the next change."""
    # No heartbeats: the message after each Snapshot is the test's change.
    flags = ("--shutdown-grace", "5", "--progress-interval", "600")
    old = served(*flags)
    channels = [
        grpc.aio.insecure_channel(old.address, options=RECONNECT_OPTIONS) for _ in range(CHANNELS)
    ]
    stubs = [async_stub(channel) for channel in channels]
    calls: list[Any] = []
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), STEP)
        calls = [
            stubs[i % CHANNELS].Watch(pb.WatchRequest(), timeout=LONG_CALL)
            for i in range(RECONNECTING)
        ]
        firsts = await _next_messages(calls)
        assert {m.WhichOneof("event") for m in firsts} == {"snapshot"}
        old_epoch = firsts[0].epoch

        ended = asyncio.gather(*map(_end_code, calls))
        old.process.terminate()
        assert _codes(await asyncio.wait_for(ended, STEP)) == {"UNAVAILABLE": RECONNECTING}
        assert await asyncio.to_thread(old.process.wait, STEP) == 0

        # Every watcher asks again before the new server is up: they all get in at once.
        calls = [
            stubs[i % CHANNELS].Watch(
                pb.WatchRequest(after_revision=first.snapshot.revision, epoch=first.epoch),
                timeout=LONG_CALL,
                wait_for_ready=True,
            )
            for i, first in enumerate(firsts)
        ]
        again = asyncio.ensure_future(_next_messages(calls))
        new = await asyncio.to_thread(served, *flags, "--listen", old.address)
        assert new.address == old.address
        seconds = await again
        assert {m.WhichOneof("event") for m in seconds} == {"snapshot"}
        assert all(m.snapshot.resynced for m in seconds)
        new_epoch = (await stubs[0].Current(pb.CurrentRequest(guard="generate"))).epoch
        assert {m.epoch for m in seconds} == {new_epoch}
        assert new_epoch != old_epoch

        # They are live subscribers, not just answered: one change reaches all of them.
        await stubs[0].Begin(begin_request("after-restart"))
        changes = await _next_messages(calls)
        assert {key(m)[1:] for m in changes} == {(pb.CHANGE_KIND_ACQUIRED, "after-restart")}
    finally:
        for call in calls:
            call.cancel()
        for channel in channels:
            await channel.close(None)


ABANDONED = 300
"""Watch streams opened and abandoned in one test: a third each way."""


async def _abandon_watch(stub: Any, index: int) -> grpc.StatusCode:
    """Open a Watch and abandon it: cancel at once, cancel after the Snapshot, or let it expire."""
    way = index % 3
    call = stub.Watch(pb.WatchRequest(), timeout=0.5 if way == 2 else LONG_CALL)
    if way == 0:
        call.cancel()
    elif way == 1:
        assert (await call.read()).WhichOneof("event") == "snapshot"
        call.cancel()
    else:
        return await _end_code(call)
    code: grpc.StatusCode = await call.code()
    return code


async def test_cancelled_and_expired_watch_streams_leave_no_watcher_behind(
    running: Any,
) -> None:
    """Hundreds of Watch streams cancelled by the client or ended by their deadline leave the
    hub with no watcher, the coordinator with no waiter, and no error in the log."""
    hub = running.server.coordinator.hub
    with structlog.testing.capture_logs() as logs:
        codes = await asyncio.wait_for(
            asyncio.gather(*(_abandon_watch(running.stub, i) for i in range(ABANDONED))), STEP
        )
        await watchers_reach(hub, 0)
    assert _codes(codes) == {"CANCELLED": ABANDONED * 2 // 3, "DEADLINE_EXCEEDED": ABANDONED // 3}
    assert errors(logs) == []
    assert running.server.coordinator._grants.waiting() == frozenset()
    # The hub still serves: a new watcher subscribes and is the only one.
    stream = Stream(running.stub.Watch(pb.WatchRequest()))
    await stream.until(1, within=STEP)
    assert hub.watchers == 1
    stream.cancel()
    await watchers_reach(hub, 0)


@pytest.mark.parametrize(
    "how", [pytest.param("cancel", id="client-cancel"), pytest.param("deadline", id="deadline")]
)
async def test_a_waiting_begin_that_goes_away_leaves_nothing_queued(running: Any, how: str) -> None:
    """A Begin waiting for a slot (wait=30) that the client cancels or whose deadline passes
    leaves no queue entry and no waiter, and never takes the slot later."""
    coordinator = running.server.coordinator
    holder = await running.stub.Begin(begin_request("holder"))
    # A deadline well past the time it takes to see the waiter queued.
    waiter = running.stub.Begin(
        begin_request("waiter", wait=30), timeout=3.0 if how == "deadline" else LONG_CALL
    )
    await queue_reaches(running.stub, 1)
    assert ("generate", "waiter") in coordinator._grants.waiting()
    if how == "cancel":
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert await waiter.code() == grpc.StatusCode.CANCELLED
    else:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await asyncio.wait_for(waiter, STEP)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await queue_reaches(running.stub, 0)
    for _ in range(int(STEP * 100)):
        if not coordinator._grants.waiting():
            break
        await asyncio.sleep(0.01)
    assert coordinator._grants.waiting() == frozenset()
    await running.stub.End(end_request(holder.granted))
    state = (await running.stub.Current(pb.CurrentRequest(guard="generate"))).state
    assert (list(state.holders), state.queue_length) == ([], 0)


ROUNDS = 5
"""Rounds of abandoned Watch streams against one server process."""

PER_ROUND = 200
"""Watch streams opened and abandoned per round."""

RSS_GROWTH_LIMIT = 20 * 1024 * 1024
"""How much the server's RSS may grow from round 2 to round 5.

Round 1 pays for warm-up (imports, allocator arenas, grpc's pools), so the comparison
starts after round 2. Measured on a 2-core machine the server sits near 50 MB and moves
by 2 to 5 MB from round 2 to round 5 whatever happens, so 20 MB is far above the noise.
The price is reach: 603 streams run in rounds 3 to 5, so only a leak of roughly 40 KB
or more per abandoned stream crosses it (one kept deliberately measured 20 to 26 MB).
Smaller leaks are beyond this check; leaked watchers and waiters are caught exactly by
the hub and coordinator checks above.
"""


def vm_rss(pid: int) -> int:
    """A process's resident set size in bytes, from /proc."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


async def test_server_memory_stays_flat_across_rounds_of_abandoned_streams(
    served: Callable[..., Served],
) -> None:
    """Rounds of 200 Watch streams cancelled or expired do not grow a server's memory
    round after round."""
    server = served()
    channel = grpc.aio.insecure_channel(server.address)
    stub = async_stub(channel)
    sizes: list[int] = []
    try:
        for _ in range(ROUNDS):
            codes = await asyncio.wait_for(
                asyncio.gather(*(_abandon_watch(stub, i) for i in range(PER_ROUND))), STEP
            )
            assert set(_codes(codes)) == {"CANCELLED", "DEADLINE_EXCEEDED"}
            # One more stream served start to end: the server has worked through the round.
            probe = stub.Watch(pb.WatchRequest(), timeout=STEP)
            assert (await read(probe)).WhichOneof("event") == "snapshot"
            probe.cancel()
            sizes.append(vm_rss(server.process.pid))
    finally:
        await channel.close(None)
    growth = sizes[-1] - sizes[1]
    assert growth < RSS_GROWTH_LIMIT, f"RSS per round (MB): {[s >> 20 for s in sizes]}"
