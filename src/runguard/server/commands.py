"""The command path: the core decides, the store keeps, in batches (group commit).

Commands that arrive while a batch is being written wait for the next one. A
batch groups its commands by guard: each guard's commands are decided by the
core one after another, each on the document the previous one produced, and
the guards' new documents go to the store in one ``Store.commit_batch`` (one
etcd ``Txn``, one SQLite transaction and fsync). Commands of one process so
never conflict with each other; only another replica's writes make a
compare-and-swap fail, and a failed one comes back with the guard's current
document, decided on again at once.

The latest document of each guard this process has seen (its own commits, the
feed, failed compares) is kept, up to ``KNOWN_GUARDS`` guards, so a command
costs one store round trip, not a read and a write. A command that writes
nothing is only answered from a kept document on a store this process alone
writes (``Store.exclusive``); on a shared one it is decided on a fresh read, so
no replica answers from a state another replica has already changed.

Speaks core types only: no protobuf, no grpc.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from runguard.server.core import ChangeKind, GuardDoc, Transition
from runguard.server.errors import (
    RunGuardError,
    ShuttingDown,
    StoreUnavailable,
    TooManyGuards,
)
from runguard.server.metrics import Metrics
from runguard.server.stores import Batch, Commit, Store, Versioned, Write

__all__ = ["CAS_ATTEMPTS", "KNOWN_GUARDS", "Commands", "Step"]

T = TypeVar("T")

CAS_ATTEMPTS = 64
"""Compare-and-swap attempts before a command gives up as UNAVAILABLE."""

WRITES_IN_FLIGHT = 1
"""Batches written at once, each of other guards. One (the classic group commit): the
commands that arrive during a write all go in the next, and the bench measured fewer,
larger writes to beat several small ones in flight on every store (a store round trip
costs this process CPU, whatever it carries)."""

KNOWN_GUARDS = 10_000
"""Guards whose latest document is kept (least recently used dropped first)."""

Step = Callable[[GuardDoc, float], Transition[Any]]
"""A command: the core's transition of a guard's document at a time."""

Outcome = tuple[Transition[Any], Commit | None]

_order = itertools.count()


@dataclass(eq=False)
class _Command:
    guard: str
    step: Step
    future: asyncio.Future[Outcome]
    attempts: int = 0
    order: int = field(default_factory=lambda: next(_order))


@dataclass
class _Plan:
    """One guard's commands of a batch, decided in order on its document."""

    decided: list[tuple[_Command, Transition[Any] | BaseException]]
    write: Write | None
    reclaim_after: bool = False
    """The write has changes and leaves the guard with nothing to keep."""


class Commands:
    """Runs commands against a store, batching those that arrive together.

    ``on_commit`` sees every commit this process makes, once, as it lands.
    """

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], float],
        max_guards: int,
        on_commit: Callable[[Commit], None],
        known: int = KNOWN_GUARDS,
        writes_in_flight: int = WRITES_IN_FLIGHT,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._max_guards = max_guards
        self._on_commit = on_commit
        self._limit = known
        self._writes_in_flight = writes_in_flight
        self._metrics = metrics if metrics is not None else Metrics()
        self._known: OrderedDict[str, Versioned] = OrderedDict()
        self._pending: list[_Command] = []
        self._busy: set[str] = set()
        """Guards in a batch being written (each guard is in one batch at a time)."""
        self._writers: set[asyncio.Task[None]] = set()
        self._closed = False

    async def apply(
        self, guard: str, step: Callable[[GuardDoc, float], Transition[T]]
    ) -> tuple[Transition[T], Commit | None]:
        """Decide ``step`` on the guard's current document and commit what it changed.

        Returns the transition and its commit (None when it wrote nothing). The command
        runs to its end even if the caller is cancelled meanwhile.
        """
        if self._store.inline and not self._pending and not self._writers and not self._closed:
            return await self._run_inline(guard, step)
        future = self._submit(guard, step)
        return await asyncio.shield(future)

    async def _run_inline(self, guard: str, step: Step) -> Outcome:
        """Run one command in the caller: the store never suspends, so nothing else runs
        (or can cancel it) until it is decided and written."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        command = _Command(guard, step, future)
        try:
            await self._run([command])
        except Exception as error:
            _fail(command, error)
        return future.result()

    def _submit(self, guard: str, step: Step) -> asyncio.Future[Outcome]:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        if self._closed:
            future.set_exception(ShuttingDown("server shutting down; try again"))
            return future
        self._pending.append(_Command(guard, step, future))
        # A busy guard's commands are taken by the writer of its batch when it is done.
        if not self._writers or (
            guard not in self._busy and len(self._writers) < self._writes_in_flight
        ):
            self._writers.add(asyncio.create_task(self._write_all(), name="runguard-commands"))
        return future

    def learn(self, commit: Commit) -> None:
        """A commit from the store's feed (this process's or another replica's)."""
        if commit.guard not in self._known:
            return  # read when a command needs it: the kept guards stay the used ones
        if commit.reclaimed:
            self._known.pop(commit.guard, None)
        else:
            self._keep(commit.guard, Versioned(commit.doc, commit.revision))

    def forget(self) -> None:
        """The feed lost commits: every guard is read again before it is decided on."""
        self._known.clear()

    async def close(self) -> None:
        """Refuse new commands; the batch being written ends, the waiting ones fail."""
        self._closed = True
        for command in self._pending:
            if not command.future.done():
                command.future.set_exception(ShuttingDown("server shutting down; try again"))
        self._pending.clear()
        writers = list(self._writers)
        for writer in writers:
            writer.cancel()
        for writer in writers:
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    # -- the documents kept ---------------------------------------------------

    def _keep(self, guard: str, current: Versioned, *, read: bool = False) -> None:
        """Keep ``current`` unless a newer version is kept already. ``read``: it came from
        the store just now, and replaces whatever was kept (a reclaim reads as absent)."""
        known = self._known.get(guard)
        if read or known is None or current.version > known.version:
            self._known[guard] = current
        self._known.move_to_end(guard)
        while len(self._known) > self._limit:
            self._known.popitem(last=False)

    # -- writing ----------------------------------------------------------------

    async def _write_all(self) -> None:
        try:
            await self._write_batches()
        finally:
            # Left here, not in a done callback (those run a step later): a command
            # submitted in between would count on a writer that takes nothing more.
            task = asyncio.current_task()
            assert task is not None
            self._writers.discard(task)

    async def _write_batches(self) -> None:
        while batch := self._take():
            guards = {command.guard for command in batch}
            self._busy |= guards
            try:
                await self._run(batch)
            except asyncio.CancelledError:
                for command in batch:
                    _fail(command, ShuttingDown("server shutting down; try again"))
                raise
            except Exception as error:  # every command of the batch hears of it
                for command in batch:
                    _fail(command, error)
            finally:
                self._busy -= guards

    def _take(self) -> list[_Command]:
        """The oldest pending commands of up to ``batch_limit`` guards no other batch is
        writing (all of their commands, so each guard's stay in order)."""
        guards: set[str] = set()
        taken: list[_Command] = []
        left: list[_Command] = []
        for command in self._pending:
            if command.guard in guards or (
                command.guard not in self._busy and len(guards) < self._store.batch_limit
            ):
                guards.add(command.guard)
                taken.append(command)
            else:
                left.append(command)
        self._pending = left
        return taken

    async def _run(self, commands: list[_Command]) -> None:
        fresh: set[str] = set()
        while commands:
            by_guard: dict[str, list[_Command]] = {}
            for command in commands:
                by_guard.setdefault(command.guard, []).append(command)
            await self._read_unknown(by_guard, fresh)
            retry: list[_Command] = []
            plans: dict[str, _Plan] = {}
            now = self._clock()
            for guard, mine in by_guard.items():
                plan = self._decide(self._known[guard], mine, now)
                if plan.write is None:
                    if self._store.exclusive or guard in fresh:
                        self._resolve(plan, None)
                    else:  # decided on a kept document: read it, then decide again
                        self._known.pop(guard, None)
                        retry.extend(mine)
                    continue
                plans[guard] = plan
            await self._refuse_new_guards(plans)
            if plans:
                retry.extend(await self._write(plans, fresh))
            commands = sorted(retry, key=lambda c: c.order)

    async def _read_unknown(self, by_guard: dict[str, list[_Command]], fresh: set[str]) -> None:
        unknown = [guard for guard in by_guard if guard not in self._known]
        if not unknown:
            return
        try:
            found = await self._store.read_many(unknown)
        except RunGuardError as error:
            for guard in unknown:
                for command in by_guard.pop(guard):
                    _fail(command, error)
            return
        for guard, current in zip(unknown, found, strict=True):
            self._keep(guard, current, read=True)
            fresh.add(guard)

    def _decide(self, base: Versioned, commands: Sequence[_Command], now: float) -> _Plan:
        """The guard's commands in order, each on the document the one before produced."""
        doc = base.doc
        changes: list[Any] = []
        decided: list[tuple[_Command, Transition[Any] | BaseException]] = []
        last: Transition[Any] | None = None
        for command in commands:
            try:
                transition = command.step(doc, now)
            except RunGuardError as error:  # the command's own answer (not found, ...)
                decided.append((command, error))
                continue
            decided.append((command, transition))
            if transition.dirty:
                doc, last = transition.doc, transition
                changes.extend(transition.changes)
        if last is None:
            return _Plan(decided, None)
        # A reclaim is a write of its own, with no changes (etcd's delete carries no
        # value): a batch that has changes writes the document, and a reclaim follows.
        reclaim = last.reclaim and not changes
        if reclaim and base.version <= 0:  # never stored, nothing to keep: nothing to write
            return _Plan(decided, None)
        acquired = {c.run.operation_id for c in changes if c.kind is ChangeKind.ACQUIRED and c.run}
        promotes = frozenset(w.owner for w in base.doc.queue if w.operation_id in acquired)
        write = Write(base.doc.name, base.version, doc, tuple(changes), reclaim, promotes)
        return _Plan(decided, write, reclaim_after=last.reclaim and bool(changes))

    async def _refuse_new_guards(self, plans: dict[str, _Plan]) -> None:
        """Writes that would store more guards than ``max_guards`` fail, theirs only."""
        creating = [
            guard
            for guard, plan in plans.items()
            if plan.write is not None and plan.write.version <= 0 and not plan.write.reclaim
        ]
        if not creating:
            return
        try:
            room = self._max_guards - await self._store.guard_count()
        except RunGuardError as error:
            for guard in creating:
                for command, _ in plans.pop(guard).decided:
                    _fail(command, error)
            return
        for guard in creating[max(room, 0) :]:
            for command, _ in plans.pop(guard).decided:
                _fail(command, TooManyGuards(guard, self._max_guards))

    async def _write(self, plans: dict[str, _Plan], fresh: set[str]) -> list[_Command]:
        """Write the plans in one batch; returns the commands to decide again."""
        writes = [plan.write for plan in plans.values() if plan.write is not None]
        started = time.perf_counter()
        try:
            batch: Batch = await self._store.commit_batch(writes)
        except RunGuardError as error:
            for plan in plans.values():
                for command, _ in plan.decided:
                    _fail(command, error)
            return []
        self._metrics.batch_seconds.observe(time.perf_counter() - started)
        self._metrics.batch_guards.observe(len(writes))
        if batch.moved:
            self._metrics.conflicts.inc(len(batch.moved))
        for commit in batch.commits:
            plan = plans.pop(commit.guard)
            if commit.reclaimed:
                self._known.pop(commit.guard, None)
            else:
                self._keep(commit.guard, Versioned(commit.doc, commit.revision))
            self._on_commit(commit)
            self._resolve(plan, commit)
            if plan.reclaim_after:
                self._reclaim_later(commit)
        retry: list[_Command] = []
        for guard, plan in plans.items():
            current = batch.moved.get(guard)
            if current is not None:
                self._keep(guard, current, read=True)
                fresh.add(guard)
            for command, _ in plan.decided:
                command.attempts += 1
                if command.attempts >= CAS_ATTEMPTS:
                    _fail(command, StoreUnavailable(f"guard {guard!r} is too contended; try again"))
                else:
                    retry.append(command)
        return retry

    def _resolve(self, plan: _Plan, commit: Commit | None) -> None:
        for command, decided in plan.decided:
            if command.future.done():
                continue
            if isinstance(decided, BaseException):
                command.future.set_exception(decided)
            else:
                command.future.set_result((decided, commit if decided.dirty else None))

    def _reclaim_later(self, commit: Commit) -> None:
        """Reclaim a guard its own commit left with nothing to keep (that commit had
        changes to write first), unless anything moved it since: then the expiry timer
        sees to it."""
        written = commit.doc

        def reclaim(doc: GuardDoc, now: float) -> Transition[None]:
            return Transition(doc=doc, outcome=None, changes=(), dirty=doc is written, reclaim=True)

        future = self._submit(commit.guard, reclaim)
        future.add_done_callback(_ignore_failure)


def _fail(command: _Command, error: BaseException) -> None:
    if not command.future.done():
        command.future.set_exception(error)


def _ignore_failure(future: asyncio.Future[Outcome]) -> None:
    """A reclaim nobody waits for may fail: the expiry timer tries again."""
    if not future.cancelled():
        future.exception()
