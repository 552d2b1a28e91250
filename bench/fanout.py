"""Watch fan-out: time from a release to the last of N watchers hearing of it.

N watchers watch one guard (RunGuard), one key (etcd) or the bench server's
``Hold`` stream (the ceiling: the same grpc.aio stack, no RunGuard logic), spread over several
spawned watcher processes, each holding its share on several connections
(``per_connection`` streams per channel; ``grpc.use_local_subchannel_pool``
makes every channel its own connection). Each watcher is its own stream.

A round: the driver (this process) takes the slot (RunGuard ``Begin`` / etcd
``Put`` / a ``Broadcast``) and waits until every watcher has seen it, so
nothing is in flight; then notes the time and releases it (``End`` / ``Delete``
/ another ``Broadcast``). Each watcher process reports when the first and the
last of its watchers received the release (RunGuard ``RELEASED`` change / etcd
``DELETE`` event / the broadcast bytes); the round's
figure is the latest of those minus the release's start. Times are
``time.monotonic_ns()`` (CLOCK_MONOTONIC, shared by every process of the
machine). Rounds are bounded in number and in total time.

The server's memory per watcher is its VmRSS after the rounds (all watchers
still connected) minus before any watcher connected, divided by N; its CPU
time (``/proc/PID/stat``) over the measured rounds, divided by the deliveries
(two changes a round, N watchers each), is its work per delivered change: a
figure that other processes competing for the cores disturb much less than
they disturb latencies.
"""

from __future__ import annotations

import asyncio
import gc
import math
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import grpc

from bench.children import await_reports, reap
from bench.peers import cpu_seconds, rss_kib
from bench.server import BROADCAST_METHOD, HOLD_METHOD, READY

__all__ = ["FanoutResult", "FanoutSpec", "run_fanout"]

ACQUIRED, RELEASED = "acquired", "released"
ROUND_TIMEOUT = 60.0
"""Seconds a round may take before the phase is abandoned."""


@dataclass(frozen=True)
class FanoutSpec:
    """One fan-out phase."""

    system: str  # "runguard", "etcd" or "noop" (the ceiling)
    address: str
    pid: int
    watchers: int
    processes: int
    per_connection: int
    rounds: int
    warmup_rounds: int
    budget: float
    tag: str


@dataclass
class FanoutResult:
    """What one fan-out phase measured."""

    spec: FanoutSpec
    processes: int
    connections: int
    rounds: int
    last_ns: list[int]
    first_ns: list[int]
    open_seconds: float
    rss_before_kib: int
    rss_after_kib: int
    cpu_seconds: float

    @property
    def cpu_us_per_delivery(self) -> float:
        """The server's CPU time per change per watcher (two changes a round), microseconds."""
        if not self.rounds:
            return float("nan")
        return self.cpu_seconds / (2 * self.rounds * self.spec.watchers) * 1e6

    @property
    def kib_per_watcher(self) -> float:
        """Server memory per watcher."""
        return (self.rss_after_kib - self.rss_before_kib) / self.spec.watchers


# -- the watcher processes --------------------------------------------------


class _Tally:
    """Arrivals per (kind, round) in one process; reports when all its watchers have one."""

    def __init__(self, watchers: int, conn: Connection) -> None:
        self.watchers = watchers
        self.conn = conn
        self.ready = 0
        self.arrivals: dict[tuple[str, int], list[int]] = {}

    def watching(self) -> None:
        self.ready += 1
        if self.ready == self.watchers:
            self.conn.send(("ready", self.ready))

    def arrived(self, kind: str, round_: int) -> None:
        now = time.monotonic_ns()
        entry = self.arrivals.get((kind, round_))
        if entry is None:
            entry = self.arrivals[kind, round_] = [0, now, now]
        entry[0] += 1
        entry[2] = now
        if entry[0] == self.watchers:
            del self.arrivals[kind, round_]
            self.conn.send((kind, round_, entry[1], entry[2]))


async def _runguard_watcher(channel: grpc.aio.Channel, guard: str, tally: _Tally) -> None:
    from runguard.v1 import runguard_pb2 as pb
    from tests.stubs import async_stub

    stub = async_stub(channel)
    call = stub.Watch(pb.WatchRequest(guards=[guard]))
    try:
        async for message in call:
            which = message.WhichOneof("event")
            if which == "snapshot":
                if message.snapshot.resynced:
                    raise RuntimeError("a watcher was resynced: it fell behind")
                tally.watching()
            elif which == "change":
                change = message.change
                kind = ACQUIRED if change.kind == pb.CHANGE_KIND_ACQUIRED else RELEASED
                tally.arrived(kind, int(change.run.operation_id.rpartition("-")[2]))
    finally:
        call.cancel()


async def _etcd_watcher(channel: grpc.aio.Channel, key: str, tally: _Tally) -> None:
    from etcd3aio._protobuf import WatchCreateRequest, WatchRequest, WatchStub

    done = asyncio.Event()

    async def requests() -> Any:
        yield WatchRequest(create_request=WatchCreateRequest(key=key.encode()))
        await done.wait()

    call = WatchStub(channel).Watch(requests())
    seen = {ACQUIRED: 0, RELEASED: 0}
    try:
        async for response in call:
            if response.created:
                tally.watching()
            for event in response.events:
                kind = ACQUIRED if event.type == 0 else RELEASED  # mvccpb PUT=0, DELETE=1
                tally.arrived(kind, seen[kind])
                seen[kind] += 1
    finally:
        done.set()
        call.cancel()


async def _noop_watcher(channel: grpc.aio.Channel, tag: str, tally: _Tally) -> None:
    call = channel.unary_stream(HOLD_METHOD, request_serializer=None, response_deserializer=None)(
        b""
    )
    try:
        async for message in call:
            if message == READY:
                tally.watching()
                continue
            kind, _, round_ = message.partition(b" ")[0].decode().partition("-")
            tally.arrived(kind, int(round_))
    finally:
        call.cancel()


_WATCHERS = {"runguard": _runguard_watcher, "etcd": _etcd_watcher, "noop": _noop_watcher}


async def _watch_process(spec: FanoutSpec, watchers: int, conn: Connection) -> None:
    connections = math.ceil(watchers / spec.per_connection)
    channels = [
        grpc.aio.insecure_channel(spec.address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(connections)
    ]
    tally = _Tally(watchers, conn)
    watch = _WATCHERS[spec.system]
    tasks = [
        asyncio.create_task(watch(channels[i % connections], spec.tag, tally))
        for i in range(watchers)
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(conn.fileno(), stop.set)
    stopper = asyncio.create_task(stop.wait())
    frozen = False
    pending: set[asyncio.Task[Any]] = {*tasks, stopper}
    while not stopper.done():
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        if not frozen and tally.ready == watchers:
            gc.freeze()  # long-lived streams: keep them out of the collector's way
            frozen = True
    loop.remove_reader(conn.fileno())
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for channel in channels:
        await channel.close(None)


def _child(spec: FanoutSpec, watchers: int, conn: Connection) -> None:
    try:
        asyncio.run(_watch_process(spec, watchers, conn))
    except BaseException as error:
        conn.send(("error", f"{type(error).__name__}: {error}"))
        raise


# -- the driver ---------------------------------------------------------------


class _RunGuardDriver:
    def __init__(self, address: str, guard: str) -> None:
        from runguard.v1 import runguard_pb2
        from tests.stubs import sync_stub

        self._pb = runguard_pb2
        self._channel = grpc.insecure_channel(address)
        self._stub = sync_stub(self._channel)
        self._guard = guard
        self._grant: Any = None

    def acquire(self, round_: int) -> None:
        reply = self._stub.Begin(
            self._pb.BeginRequest(
                guard=self._guard,
                operation_id=f"{self._guard}-{round_}",
                idempotency_key=f"{self._guard}-{round_}",
            ),
            timeout=ROUND_TIMEOUT,
        )
        if not reply.HasField("granted"):
            raise RuntimeError(f"Begin was refused: {reply.rejected.message}")
        self._grant = reply.granted

    def release(self, round_: int) -> None:
        run = self._grant.run
        self._stub.End(
            self._pb.EndRequest(
                guard=run.guard, operation_id=run.operation_id, lease_token=self._grant.lease_token
            ),
            timeout=ROUND_TIMEOUT,
        )

    def close(self) -> None:
        self._channel.close()


class _EtcdDriver:
    def __init__(self, address: str, key: str) -> None:
        from etcd3aio._protobuf import KVStub

        self._channel = grpc.insecure_channel(address)
        self._kv = KVStub(self._channel)
        self._key = key.encode()

    def acquire(self, round_: int) -> None:
        from etcd3aio._protobuf import PutRequest

        self._kv.Put(PutRequest(key=self._key, value=str(round_).encode()), timeout=ROUND_TIMEOUT)

    def release(self, round_: int) -> None:
        from etcd3aio._protobuf import DeleteRangeRequest

        self._kv.DeleteRange(DeleteRangeRequest(key=self._key), timeout=ROUND_TIMEOUT)

    def close(self) -> None:
        self._channel.close()


class _NoopDriver:
    """Broadcasts about as many bytes as RunGuard's RELEASED change takes."""

    def __init__(self, address: str, tag: str) -> None:
        self._channel = grpc.insecure_channel(address)
        self._broadcast = self._channel.unary_unary(
            BROADCAST_METHOD, request_serializer=None, response_deserializer=None
        )

    def _send(self, kind: str, round_: int) -> None:
        self._broadcast(f"{kind}-{round_} ".encode().ljust(170, b"."), timeout=ROUND_TIMEOUT)

    def acquire(self, round_: int) -> None:
        self._send(ACQUIRED, round_)

    def release(self, round_: int) -> None:
        self._send(RELEASED, round_)

    def close(self) -> None:
        self._channel.close()


_DRIVERS = {"runguard": _RunGuardDriver, "etcd": _EtcdDriver, "noop": _NoopDriver}


def run_fanout(
    spec: FanoutSpec, hooks: tuple[Callable[[], None], Callable[[], None]] | None = None
) -> FanoutResult:
    """Open the watchers, run the rounds, close everything.

    ``hooks`` (start, stop) are called around the rounds.
    """
    driver: Any = _DRIVERS[spec.system](spec.address, spec.tag)
    rss_before = rss_kib(spec.pid)
    context = multiprocessing.get_context("spawn")
    shares = [
        spec.watchers // spec.processes + (1 if i < spec.watchers % spec.processes else 0)
        for i in range(spec.processes)
    ]
    shares = [s for s in shares if s > 0]
    pipes = [context.Pipe() for _ in shares]
    children = [
        context.Process(target=_child, args=(spec, share, child), daemon=True)
        for share, (_, child) in zip(shares, pipes, strict=True)
    ]
    conns = [parent for parent, _ in pipes]
    opened = time.monotonic()
    for process in children:
        process.start()
    last: list[int] = []
    first: list[int] = []
    try:
        await_reports(conns, children, ("ready",), 300.0, "watcher")
        open_seconds = time.monotonic() - opened
        deadline = time.monotonic() + spec.budget
        total = spec.warmup_rounds + spec.rounds
        if hooks is not None:
            hooks[0]()
        cpu = 0.0
        for round_ in range(total):
            if time.monotonic() > deadline:
                break
            if round_ == spec.warmup_rounds:
                cpu = -cpu_seconds(spec.pid)
            driver.acquire(round_)
            await_reports(conns, children, (ACQUIRED, round_), ROUND_TIMEOUT, "watcher")
            released = time.monotonic_ns()
            driver.release(round_)
            reports = await_reports(conns, children, (RELEASED, round_), ROUND_TIMEOUT, "watcher")
            if round_ >= spec.warmup_rounds:
                last.append(max(r[3] for r in reports) - released)
                first.append(min(r[2] for r in reports) - released)
        if last:
            cpu += cpu_seconds(spec.pid)
        if hooks is not None:
            hooks[1]()
        rss_after = rss_kib(spec.pid)
    finally:
        for conn in conns:
            conn.send(("stop",))
        reap(children, 30)
        driver.close()
    return FanoutResult(
        spec=spec,
        processes=len(children),
        connections=sum(math.ceil(s / spec.per_connection) for s in shares),
        rounds=len(last),
        last_ns=last,
        first_ns=first,
        open_seconds=open_seconds,
        rss_before_kib=rss_before,
        rss_after_kib=rss_after,
        cpu_seconds=cpu,
    )
