"""Runs the core's transitions against a store, on time.

Owns Begins that wait in a queue, the timer that expires leases when they are
due (not only on the next Begin), the feed task that hands every commit to the
watch hub, and the log line of each outcome; commands go through
``commands.Commands`` (the group commit). It speaks core types only: no
protobuf, no grpc.

Guard settings are the store's: at start the server proposes its flags as the
store-wide defaults and as the settings of the guards its flags name; what the
store already holds wins, and a flag that says otherwise is logged as a
``policy_mismatch`` warning. A transition that leaves a guard with nothing to
keep reclaims it (the store deletes it), in a commit of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import secrets
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

import structlog

from runguard.server import core
from runguard.server.commands import Commands
from runguard.server.config import ServerConfig
from runguard.server.core import (
    BeginCommand,
    CancelResult,
    ChangeKind,
    EndResult,
    GuardDoc,
    GuardPolicy,
    GuardSettings,
    GuardView,
    Holder,
    Labels,
    Rejection,
    ReleaseReason,
    Run,
    RunOutcome,
    RunProgress,
    Transition,
)
from runguard.server.errors import (
    RunGuardError,
    RunNotFound,
    ShuttingDown,
)
from runguard.server.hub import Hub
from runguard.server.metrics import Metrics
from runguard.server.stores import Commit, FeedGap, Store

__all__ = ["Coordinator"]

T = TypeVar("T")

EXPIRY_RETRY = 1.0
"""Seconds before a failed expiry is tried again."""

SETTLES_IN_FLIGHT = 32
"""Guards the expiry timer settles at once (their commands go to the store together)."""

DRAINED = (
    "server shutting down: the Begin left the queue; send it again "
    "(to another replica, or here after the restart)"
)
"""What a queued Begin answers when the server drains."""

log = structlog.get_logger("runguard")


def _new_token() -> str:
    """A lease token: 32 URL-safe characters that never start with "-", so that a shell's
    ``--token "$TOKEN"`` is never read as a flag."""
    while True:
        token = secrets.token_urlsafe(24)
        if not token.startswith("-"):
            return token


class Coordinator:
    """The service's behaviour over one store, for any number of concurrent calls."""

    def __init__(
        self,
        config: ServerConfig,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        new_token: Callable[[], str] = _new_token,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics if metrics is not None else Metrics()
        self.defaults: GuardPolicy = config.policy("")
        """The policy of guards without settings of their own (the store's, once started)."""
        self.hub = Hub(config, store, self.metrics, policy=lambda: self.defaults)
        self._clock = clock
        self._new_token = new_token
        self._acquired: dict[tuple[str, str], list[asyncio.Future[Holder]]] = {}
        self._deadlines: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._draining = False
        self._orphans: set[asyncio.Future[None]] = set()
        self._commands = Commands(
            store,
            clock=clock,
            max_guards=config.max_guards,
            on_commit=self._committed,
            metrics=self.metrics,
        )

    async def start(self) -> None:
        """Adopt the store's settings, follow its feed and expire leases on time."""
        await self._adopt_settings()
        feed = self.store.subscribe()
        _, docs = await self.store.snapshot(None)
        for doc in docs:
            self._track(doc)
        self._tasks = [
            asyncio.create_task(self._follow(feed), name="runguard-feed"),
            asyncio.create_task(self._expire_loop(), name="runguard-expiry"),
        ]

    def drain(self) -> None:
        """The server is stopping: every queued Begin leaves the queue now and answers
        UNAVAILABLE, so its caller sends it again elsewhere (another replica, or this
        server once it is back) instead of waiting out the shutdown grace."""
        self._draining = True
        for futures in self._acquired.values():
            for future in futures:
                if not future.done():
                    future.set_exception(ShuttingDown(DRAINED))

    async def stop(self) -> None:
        """End every Watch stream and stop the background tasks."""
        self.hub.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._commands.close()

    async def _adopt_settings(self) -> None:
        """Take the store's defaults, seed it with the flags' guards, warn where they differ."""
        proposed = self.config.default_settings
        stored = await self.store.defaults(proposed)
        self.defaults = self.config.policy("").with_settings(stored)
        self._warn_mismatch(
            "",
            stored,
            proposed,
            ("capacity", "dedup_window", "max_queue"),
            "the store's defaults are enforced (written by the first server on the store; "
            "give a guard settings of its own with runguard configure)",
        )
        for guard, capacity in sorted(self.config.capacities.items()):
            wanted = GuardSettings(
                capacity=capacity,
                dedup_window=stored.dedup_window,
                max_queue=stored.max_queue,
            )
            doc = (await self.store.read(guard)).doc
            if doc.settings is None:
                await self.configure(guard, wanted)
            else:  # --guard names a capacity only
                self._warn_mismatch(
                    guard,
                    doc.settings,
                    wanted,
                    ("capacity",),
                    f"guard {guard!r} keeps its stored settings "
                    f"(change them with runguard configure {guard})",
                )

    @staticmethod
    def _warn_mismatch(
        guard: str,
        stored: GuardSettings,
        flags: GuardSettings,
        names: tuple[str, ...],
        outcome: str,
    ) -> None:
        for name in names:
            have, told = getattr(stored, name), getattr(flags, name)
            if have != told:
                log.warning(
                    "policy_mismatch",
                    guard=guard or None,
                    setting=name,
                    stored=have,
                    flag=told,
                    detail=f"the store says {name}={have}, this server's flags say {told}: "
                    + outcome,
                )

    def policy_of(self, doc: GuardDoc) -> GuardPolicy:
        """The policy a guard is run by: its own settings, else the store's defaults."""
        return core.policy_of(doc, self.defaults)

    # -- commands ----------------------------------------------------------

    async def _apply(
        self, guard: str, step: Callable[[GuardDoc, float], Transition[T]]
    ) -> tuple[Transition[T], Commit | None]:
        return await self._commands.apply(guard, step)

    def _committed(self, commit: Commit) -> None:
        """Metrics and log lines of a commit this process made (each seen once); its queued
        callers granted here hear of it now, not once the feed brings it back."""
        self._hand_over(commit)
        self._count(commit)
        for change in commit.changes:
            if change.reason is ReleaseReason.EXPIRED and change.run is not None:
                log.info(
                    "expired",
                    guard=commit.guard,
                    operation_id=change.run.operation_id,
                    fencing_token=change.run.fencing_token,
                    revision=change.revision,
                )

    def _count(self, commit: Commit) -> None:
        """Metrics of the changes this process committed (each commit counted once)."""
        label = self.metrics.guard(commit.guard)
        now = self._clock()
        for change in commit.changes:
            if (
                change.kind is ChangeKind.RELEASED
                and change.reason is not None
                and change.run is not None
            ):
                self.metrics.hold_seconds.labels(label, change.reason.value).observe(
                    max(0.0, now - change.run.started_at)
                )
                if change.reason is ReleaseReason.EXPIRED:
                    self.metrics.expirations.labels(label).inc()

    async def begin(
        self,
        guard: str,
        *,
        operation_id: str,
        fingerprint: str,
        ttl: float | None,
        wait: float,
        labels: Labels,
        principal: str = "",
        resume_only: bool = False,
    ) -> core.Granted | Rejection:
        """Ask for a slot; with ``wait`` > 0, queue until granted or the wait is over.

        ``principal`` is the authenticated caller ("" without auth): the run shows it.
        """
        command = BeginCommand(
            operation_id=operation_id,
            fingerprint=fingerprint,
            lease_token=self._new_token(),
            ttl=ttl,
            wait=wait,
            labels=labels,
            owner=self.store.replica,
            principal=principal,
            resume_only=resume_only,
        )
        key = (guard, operation_id)
        arrival = self._watch_acquired(key)
        try:
            deciding = asyncio.ensure_future(
                self._apply(guard, lambda doc, now: core.begin(doc, self.defaults, command, now))
            )
            try:
                transition, _ = await asyncio.shield(deciding)
            except asyncio.CancelledError:
                # The caller went away while its Begin was being committed: a grant (or a
                # place in the queue) it will never hear of is given back, not left held.
                self._background(self._give_back(guard, deciding))
                raise
            outcome = transition.outcome
            if isinstance(outcome, core.Queued):
                outcome = await self._wait(guard, outcome, arrival)
        finally:
            self._unwatch_acquired(key, arrival)
        label = self.metrics.guard(guard)
        if isinstance(outcome, core.Granted):
            self.metrics.begins.labels(label, "granted", "").inc()
            log.info(
                "begin",
                guard=guard,
                operation_id=operation_id,
                outcome="granted",
                fencing_token=outcome.run.fencing_token,
                replayed=outcome.replayed,
            )
        else:
            self.metrics.begins.labels(label, "rejected", outcome.reason.value).inc()
            log.info(
                "begin",
                guard=guard,
                operation_id=operation_id,
                outcome="rejected",
                reason=outcome.reason.value,
                holders=[run.operation_id for run in outcome.holders],
            )
        return outcome

    async def _wait(
        self, guard: str, queued: core.Queued, arrival: asyncio.Future[Holder]
    ) -> core.Granted | Rejection:
        key = (guard, queued.operation_id)
        waited = self.metrics.wait_seconds
        started = self._clock()
        try:
            while (remaining := queued.deadline - self._clock()) > 0:
                done, _ = await asyncio.wait({arrival}, timeout=remaining)
                if not done:
                    break
                if arrival.exception() is not None:  # draining: leave the queue now
                    return await self._leave_draining(guard, queued)
                holder = arrival.result()
                if holder.lease_token == queued.lease_token:
                    waited.labels(self.metrics.guard(guard), "granted").observe(
                        self._clock() - started
                    )
                    return core.Granted(holder.run, holder.lease_token)
                self._unwatch_acquired(key, arrival)
                arrival = self._watch_acquired(key)
            outcome = await self._leave_queue(guard, queued)
            ended = "granted" if isinstance(outcome, core.Granted) else "timeout"
            waited.labels(self.metrics.guard(guard), ended).observe(self._clock() - started)
            return outcome
        except asyncio.CancelledError:
            # The caller went away: leave the queue, and give back a slot that
            # came too late for anybody to learn its lease token.
            cleanup = asyncio.create_task(self._abandon(guard, queued))
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(cleanup)
            raise
        finally:
            self._unwatch_acquired(key, arrival)

    async def _leave_queue(self, guard: str, queued: core.Queued) -> core.Granted | Rejection:
        """Leave the queue: the grant if the slot came first, else WAIT_TIMEOUT."""
        transition, _ = await self._apply(
            guard,
            lambda doc, now: core.cancel_wait(
                doc, self.defaults, queued.operation_id, queued.lease_token, now
            ),
        )
        return transition.outcome

    async def _leave_draining(self, guard: str, queued: core.Queued) -> core.Granted:
        """Leave the queue as the server drains: the grant if it came first, else UNAVAILABLE."""
        outcome = await self._leave_queue(guard, queued)
        if isinstance(outcome, core.Granted):
            return outcome
        raise ShuttingDown(DRAINED)

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` to its end even though the call that started it is gone."""
        task = asyncio.ensure_future(work)
        self._orphans.add(task)
        task.add_done_callback(self._orphans.discard)

    async def _give_back(
        self, guard: str, deciding: asyncio.Future[tuple[Transition[Any], Commit | None]]
    ) -> None:
        try:
            transition, _ = await deciding
        except RunGuardError:
            return
        outcome = transition.outcome
        if isinstance(outcome, core.Queued):
            await self._abandon(guard, outcome)
        elif isinstance(outcome, core.Granted) and not outcome.replayed:
            try:
                await self.end(guard, outcome.run.operation_id, outcome.lease_token)
            except RunGuardError as error:  # its lease ends it, then
                log.warning(
                    "give_back_failed",
                    guard=guard,
                    operation_id=outcome.run.operation_id,
                    error=str(error),
                )

    async def _abandon(self, guard: str, queued: core.Queued) -> None:
        try:
            if isinstance(await self._leave_queue(guard, queued), core.Granted):
                await self.end(guard, queued.operation_id, queued.lease_token)
        except RunGuardError as error:
            log.warning(
                "abandon_failed", guard=guard, operation_id=queued.operation_id, error=str(error)
            )

    async def end(
        self, guard: str, operation_id: str, lease_token: str, *, force: bool = False
    ) -> EndResult:
        """Give a slot back; idempotent."""
        result, _ = await self.end_run(guard, operation_id, lease_token, force=force)
        return result

    async def end_run(
        self,
        guard: str,
        operation_id: str,
        lease_token: str,
        *,
        force: bool = False,
        outcome: RunOutcome | None = None,
        result: str = "",
    ) -> tuple[EndResult, Run | None]:
        """Give a slot back, keeping ``outcome`` and ``result`` (JSON text) with the run.

        Returns what End did and the ended run, when the guard (still) keeps it.
        """
        transition, _ = await self._apply(
            guard,
            lambda doc, now: core.end(
                doc,
                self.defaults,
                operation_id,
                lease_token,
                now,
                force=force,
                outcome=outcome,
                result=result,
            ),
        )
        self.metrics.ends.labels(self.metrics.guard(guard), transition.outcome.value).inc()
        log.info(
            "end",
            guard=guard,
            operation_id=operation_id,
            result=transition.outcome.value,
            outcome=None if outcome is None else outcome.value,
            force=force,
        )
        ended = next(
            (
                c.run
                for c in transition.changes
                if c.kind is ChangeKind.RELEASED
                and c.run is not None
                and c.run.operation_id == operation_id
            ),
            None,
        )
        if ended is None and transition.outcome is EndResult.ALREADY_ENDED:
            try:
                ended = core.find_run(transition.doc, self.defaults, operation_id, self._clock())
            except RunNotFound:
                ended = None
        return transition.outcome, ended

    async def keep_alive(
        self,
        guard: str,
        operation_id: str,
        lease_token: str,
        ttl: float | None,
        progress: RunProgress | None = None,
    ) -> Run:
        """Extend a lease, and record the holder's progress when given."""
        transition, _ = await self._apply(
            guard,
            lambda doc, now: core.keep_alive(
                doc, self.defaults, operation_id, lease_token, now, ttl=ttl, progress=progress
            ),
        )
        return transition.outcome

    async def cancel(
        self, guard: str, operation_id: str, *, reason: str, principal: str, admin: bool
    ) -> tuple[CancelResult, Run]:
        """Ask a run to stop (its slot stays held until its holder Ends).

        Raises:
            NotPermitted: ``principal`` is neither ``admin`` nor the run's own.
            RunNotFound: the guard knows no such run.
        """
        transition, _ = await self._apply(
            guard,
            lambda doc, now: core.cancel(
                doc, self.defaults, operation_id, now, reason=reason, by=principal, admin=admin
            ),
        )
        result, run = transition.outcome
        log.info(
            "cancel",
            guard=guard,
            operation_id=operation_id,
            result=result.value,
            by=principal,
            reason=reason,
        )
        return result, run

    async def get_run(self, guard: str, operation_id: str) -> Run:
        """A live or recently ended run (the guard settled first).

        Raises:
            RunNotFound: the guard knows no such run.
        """
        transition, _ = await self._settle(guard)
        return core.find_run(transition.doc, self.defaults, operation_id, self._clock())

    async def current(self, guard: str) -> tuple[GuardView, int]:
        """The guard's state (settled first) and the revision it is as of."""
        transition, commit = await self._settle(guard)
        revision = commit.revision if commit is not None else self.store.revision
        return core.view(transition.doc, self.defaults), revision

    async def configure(
        self,
        guard: str,
        settings: GuardSettings | Callable[[GuardPolicy], GuardSettings | None] | None,
    ) -> tuple[GuardView, int]:
        """Give a guard settings of its own (None: follow the defaults); every replica
        and watcher sees them. ``settings`` may be a function of the guard's policy as the
        store has it, applied inside the compare-and-swap, so concurrent changes of
        different settings never lose one. Returns the guard's state and its revision."""

        def step(doc: GuardDoc, now: float) -> Transition[GuardView]:
            wanted = settings(self.policy_of(doc)) if callable(settings) else settings
            return core.configure(doc, self.defaults, wanted, now)

        transition, commit = await self._apply(guard, step)
        revision = commit.revision if commit is not None else self.store.revision
        log.info(
            "configured",
            guard=guard,
            capacity=transition.outcome.capacity,
            dedup_window=transition.outcome.dedup_window,
            max_queue=transition.outcome.max_queue,
            own=transition.outcome.configured,
            changed=commit is not None,
        )
        return transition.outcome, revision

    async def list_guards(self, after: str, limit: int) -> tuple[list[GuardView], int]:
        """Up to ``limit`` stored guards named after ``after``, in name order, as the
        store has them (a lease already due shows until the guard is next settled)."""
        revision, docs = await self.store.list_guards(after, limit)
        return [core.view(doc, self.defaults) for doc in docs], revision

    async def _settle(self, guard: str) -> tuple[Transition[None], Commit | None]:
        return await self._apply(guard, lambda doc, now: core.settle(doc, self.defaults, now))

    # -- waiting for a queued grant ----------------------------------------

    def _watch_acquired(self, key: tuple[str, str]) -> asyncio.Future[Holder]:
        future: asyncio.Future[Holder] = asyncio.get_running_loop().create_future()
        if self._draining:
            future.set_exception(ShuttingDown(DRAINED))
        self._acquired.setdefault(key, []).append(future)
        return future

    def _unwatch_acquired(self, key: tuple[str, str], future: asyncio.Future[Holder]) -> None:
        futures = self._acquired.get(key)
        if futures is not None and future in futures:
            futures.remove(future)
            if not futures:
                del self._acquired[key]

    # -- the feed and the expiry timer -------------------------------------

    async def _follow(self, feed: AsyncIterator[Commit | FeedGap]) -> None:
        async for commit in feed:
            if isinstance(commit, FeedGap):
                await self._recover(commit)
                continue
            try:
                self._commands.learn(commit)
                if commit.reclaimed:
                    self._deadlines.pop(commit.guard, None)
                else:
                    self._track(commit.doc)
                self.metrics.queue_length.labels(self.metrics.guard(commit.guard)).set(
                    len(commit.doc.queue)
                )
                self._hand_over(commit)
                self.hub.publish(commit)
            except Exception:  # one bad commit must not stop the feed for everybody
                log.exception("feed_failed", guard=commit.guard, revision=commit.revision)

    async def _recover(self, gap: FeedGap) -> None:
        """Commits were lost from the feed: every watcher resyncs, every deadline is relearned."""
        log.warning("feed_gap", after=gap.after)
        self._commands.forget()
        self.hub.resync_all()
        try:
            _, docs = await self.store.snapshot(None)
        except RunGuardError as error:
            log.warning("feed_gap_rescan_failed", error=str(error))
            return
        for doc in docs:
            self._track(doc)

    def _hand_over(self, commit: Commit) -> None:
        """Tell the Begins waiting in this process that their queued call was granted."""
        for change in commit.changes:
            if change.kind is not ChangeKind.ACQUIRED or change.run is None:
                continue
            futures = self._acquired.get((commit.guard, change.run.operation_id))
            if not futures:
                continue
            holder = next(
                (h for h in commit.doc.holders if h.run.operation_id == change.run.operation_id),
                None,
            )
            # None: granted and ended within one commit; the wait then times out
            # and cancel_wait reports what happened.
            if holder is None:
                continue
            for future in futures:
                if not future.done():
                    future.set_result(holder)

    def _track(self, doc: GuardDoc, *, exact: bool = False) -> None:
        deadline = core.next_deadline(doc, self.defaults, exact=exact)
        if deadline is None:
            self._deadlines.pop(doc.name, None)
            return
        if self._deadlines.get(doc.name) == deadline:
            return
        self._deadlines[doc.name] = deadline
        heapq.heappush(self._heap, (deadline, doc.name))
        if len(self._heap) > 2 * len(self._deadlines) + 64:
            # Every renewal moves a deadline and leaves the old entry behind: rebuild from
            # the deadlines in force, so the heap stays near one entry per guard.
            self._heap = [(when, name) for name, when in self._deadlines.items()]
            heapq.heapify(self._heap)
        if self._heap[0] == (deadline, doc.name):
            self._wake.set()

    async def _expire_loop(self) -> None:
        """Settle each guard when its deadline comes, SETTLES_IN_FLIGHT at once: under load
        the due guards (leases ending, one-shot names to reclaim) come faster than one
        store write after another could keep up with, and settles in flight together
        share a write."""
        slots = asyncio.Semaphore(SETTLES_IN_FLIGHT)
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                while self._heap and self._deadlines.get(self._heap[0][1]) != self._heap[0][0]:
                    heapq.heappop(self._heap)
                self._wake.clear()
                if not self._heap:
                    await self._wake.wait()
                    continue
                deadline, guard = self._heap[0]
                delay = deadline - self._clock()
                if delay > 0:
                    # timeout(), not wait_for(): 3.11's wait_for drops a cancel that
                    # comes as the wake does, and stop() would wait for ever.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._wake.wait()
                    continue
                heapq.heappop(self._heap)
                del self._deadlines[guard]
                await slots.acquire()
                task = asyncio.create_task(self._settle_due(guard, slots))
                running.add(task)
                task.add_done_callback(running.discard)
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _settle_due(self, guard: str, slots: asyncio.Semaphore) -> None:
        try:
            transition, commit = await self._settle(guard)
            if commit is None:  # due too early (an entry out of order): the exact deadline
                self._track(transition.doc, exact=True)
        except Exception as error:  # expiry must go on for every other guard
            log.warning("expiry_failed", guard=guard, error=str(error))
            if guard not in self._deadlines:
                self._deadlines[guard] = self._clock() + EXPIRY_RETRY
                heapq.heappush(self._heap, (self._deadlines[guard], guard))
                self._wake.set()
        finally:
            slots.release()
