"""Closed-loop load from several client processes: throughput and hand-off latency.

Each client process (``multiprocessing``, spawned: no state forked from the
parent) runs some of the workers as asyncio tasks; a worker loops
acquire -> release as fast as the system lets it. All processes start on a
common instant; cycles are counted in a window after a warm-up, so connection
set-up and the first calls are not measured. Every loop is bounded by the
window's end and by ``max_cycles``; every call by a deadline.

Times are ``time.monotonic_ns()``: CLOCK_MONOTONIC, one clock for every
process of the machine (``check_shared_clock`` checks it), so a release in one
process and the next grant in another can be subtracted.

When the server's pid is known (for a cluster: every member's), its CPU time
(``/proc/PID/stat``) over the measured window divided by the cycles counted in
it is its work per cycle, a figure that other processes competing for the
cores disturb far less than throughput.

Hand-off latency (contended runs): with one slot, grants and releases
alternate; merged in time order across processes, each release is followed by
the next grant, and their difference is the release -> next-grant latency
(release timed just before its call is sent, grant when its reply arrives).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from bench.children import await_reports, reap
from bench.peers import cpu_seconds
from bench.systems import make_system

__all__ = ["LoadResult", "LoadSpec", "check_shared_clock", "run_load"]

START_DELAY = 0.5
"""Seconds between telling the processes to go and the common start."""


@dataclass(frozen=True)
class LoadSpec:
    """One load phase."""

    system: str
    address: str
    in_flight: int
    processes: int
    contended: bool
    tag: str
    warmup: float
    duration: float
    max_cycles: int = 1_000_000
    extra: dict[str, Any] = field(default_factory=dict)
    pid: int | None = None
    """The server's pid, to read the CPU time it spends in the measured window."""
    more_pids: tuple[int, ...] = ()
    """Further server processes whose CPU time counts too (the other members of a cluster)."""


@dataclass
class LoadResult:
    """What one phase measured."""

    spec: LoadSpec
    processes: int
    cycles: int
    rate: float
    cycle_ns: list[int]
    handoff_ns: list[int]
    out_of_order: int
    retries: int
    cpu_seconds: float | None

    @property
    def cpu_us_per_cycle(self) -> float | None:
        """The server's CPU time per counted cycle, in microseconds."""
        if self.cpu_seconds is None or not self.cycles:
            return None
        return self.cpu_seconds / self.cycles * 1e6


def _split(total: int, parts: int) -> list[list[int]]:
    return [list(range(i, total, parts)) for i in range(parts) if i < total]


async def _worker(
    system: Any,
    worker: int,
    window: tuple[int, int, int],
    max_cycles: int,
    out: dict[str, Any],
) -> None:
    start, measure, stop = window
    delay = (start - time.monotonic_ns()) / 1e9
    if delay > 0:
        await asyncio.sleep(delay)
    for n in range(max_cycles):
        began = time.monotonic_ns()
        if began >= stop:
            break
        handle = await system.acquire(worker, n)
        granted = time.monotonic_ns()
        releasing = time.monotonic_ns()
        await system.release(worker, handle)
        done = time.monotonic_ns()
        if measure <= began and done <= stop:
            out["cycles"] += 1
            out["cycle_ns"].append(done - began)
        if measure <= granted and releasing <= stop:
            out["grants"].append(granted)
            out["releases"].append(releasing)


async def _client(spec: LoadSpec, workers: list[int], conn: Connection) -> None:
    system = make_system(spec.system, spec.address, workers, spec.tag, spec.contended, **spec.extra)
    await system.open()
    conn.send(("ready",))
    loop = asyncio.get_running_loop()
    ready = await loop.run_in_executor(None, conn.poll, 120.0)
    if not ready:
        raise TimeoutError("no start signal")
    _, start = conn.recv()
    measure = start + int(spec.warmup * 1e9)
    stop = measure + int(spec.duration * 1e9)
    out: dict[str, Any] = {"cycles": 0, "cycle_ns": [], "grants": [], "releases": []}
    await asyncio.gather(
        *(_worker(system, w, (start, measure, stop), spec.max_cycles, out) for w in workers)
    )
    retries = getattr(system, "retries", 0)
    await system.close()
    conn.send(("done", out, retries))


def _child(spec: LoadSpec, workers: list[int], conn: Connection) -> None:
    try:
        asyncio.run(_client(spec, workers, conn))
    except BaseException as error:
        conn.send(("error", f"{type(error).__name__}: {error}"))
        raise


def run_load(
    spec: LoadSpec, hooks: tuple[Callable[[], None], Callable[[], None]] | None = None
) -> LoadResult:
    """Run one phase across ``spec.processes`` spawned client processes.

    ``hooks`` (start, stop) are called when the load starts and when it is done.
    """
    context = multiprocessing.get_context("spawn")
    groups = _split(spec.in_flight, min(spec.processes, spec.in_flight))
    pipes = [context.Pipe() for _ in groups]
    children = [
        context.Process(target=_child, args=(spec, group, child), daemon=True)
        for group, (_, child) in zip(groups, pipes, strict=True)
    ]
    for process in children:
        process.start()
    conns = [parent for parent, _ in pipes]
    try:
        await_reports(conns, children, ("ready",), 120.0, "client")
        start = time.monotonic_ns() + int(START_DELAY * 1e9)
        for conn in conns:
            conn.send(("go", start))
        if hooks is not None:
            hooks[0]()
        measure = start + int(spec.warmup * 1e9)
        pids = () if spec.pid is None else (spec.pid, *spec.more_pids)
        cpu = _cpu_in_window(pids, measure, measure + int(spec.duration * 1e9))
        try:
            reports = await_reports(
                conns,
                children,
                ("done",),
                START_DELAY + spec.warmup + spec.duration + 120.0,
                "client",
            )
        finally:
            if hooks is not None:
                hooks[1]()
    finally:
        reap(children, 10)
    cycles = sum(r[1]["cycles"] for r in reports)
    cycle_ns = [x for r in reports for x in r[1]["cycle_ns"]]
    handoff: list[int] = []
    out_of_order = 0
    if spec.contended:
        handoff, out_of_order = _handoffs(reports)
    return LoadResult(
        spec=spec,
        processes=len(children),
        cycles=cycles,
        rate=cycles / spec.duration,
        cycle_ns=cycle_ns,
        handoff_ns=handoff,
        out_of_order=out_of_order,
        retries=sum(r[2] for r in reports),
        cpu_seconds=cpu,
    )


def _cpu_in_window(pids: tuple[int, ...], begin: int, end: int) -> float | None:
    """The CPU time ``pids`` use together between two ``monotonic_ns`` instants (sleeping)."""
    if not pids:
        return None
    time.sleep(max(0.0, (begin - time.monotonic_ns()) / 1e9))
    before = sum(cpu_seconds(pid) for pid in pids)
    time.sleep(max(0.0, (end - time.monotonic_ns()) / 1e9))
    return sum(cpu_seconds(pid) for pid in pids) - before


def _handoffs(reports: list[tuple[Any, ...]]) -> tuple[list[int], int]:
    events = sorted(
        [(t, 1) for r in reports for t in r[1]["grants"]]
        + [(t, 0) for r in reports for t in r[1]["releases"]]
    )
    latencies: list[int] = []
    out_of_order = 0
    last_release: int | None = None
    holding = False
    for t, is_grant in events:
        if is_grant:
            if holding:
                out_of_order += 1  # two grants without a release between them
            if last_release is not None:
                latencies.append(t - last_release)
            last_release = None
            holding = True
        else:
            if not holding:
                out_of_order += 1
            last_release = t
            holding = False
    return latencies, out_of_order


def _clock_child(conn: Connection, rounds: int) -> None:
    for _ in range(rounds):
        conn.recv()
        conn.send(time.monotonic_ns())


def check_shared_clock(rounds: int = 20) -> bool:
    """Whether another process's ``monotonic_ns`` always falls between two of this one's."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_clock_child, args=(child, rounds), daemon=True)
    process.start()
    ok = True
    try:
        for _ in range(rounds):
            before = time.monotonic_ns()
            parent.send("now")
            if not parent.poll(60):
                return False
            theirs = parent.recv()
            after = time.monotonic_ns()
            ok = ok and before <= theirs <= after
    finally:
        process.join(10)
    return ok
