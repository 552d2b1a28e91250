"""The service's behaviour over one store: the facade the front ends call.

Each call goes through ``commands.Commands`` (the core decides, the store keeps,
in group commits) and is counted and logged here. The other jobs are pieces of
their own, wired together here: ``grants`` (queued Begins handed their grant),
``waiting`` (a queued Begin's wait and how it leaves the queue), ``expiry`` (the
timer that settles a guard when its deadline comes), ``feed`` (following the
store's feed), ``releases`` (metrics of the runs a commit releases) and
``adoption`` (the store's guard settings at start). A transition that leaves a
guard with nothing to keep reclaims it (the store deletes it), in a commit of its
own. It speaks core types only: no protobuf, no grpc.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from typing import TypeVar

import structlog

from runguard.server import core
from runguard.server.adoption import adopt_defaults, adopt_guards
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
    Labels,
    Rejection,
    Run,
    RunOutcome,
    RunProgress,
    Transition,
)
from runguard.server.errors import RunNotFound
from runguard.server.expiry import Expiry
from runguard.server.feed import Feed
from runguard.server.grants import Grants
from runguard.server.hub import Hub
from runguard.server.metrics import Metrics
from runguard.server.releases import record_releases
from runguard.server.stores import Commit, Store
from runguard.server.waiting import Waiting

__all__ = ["Coordinator"]

T = TypeVar("T")

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
        self._tasks: list[asyncio.Task[None]] = []
        self._commands = Commands(
            store,
            clock=clock,
            max_guards=config.max_guards,
            on_commit=self._committed,
            metrics=self.metrics,
        )
        self._grants = Grants()
        self._waiting = Waiting(
            self._commands,
            self._grants,
            policy=lambda: self.defaults,
            end=self.end,
            clock=clock,
            metrics=self.metrics,
        )
        self._expiry = Expiry(settle=self._settle, policy=lambda: self.defaults, clock=clock)
        self._feed = Feed(
            store,
            commands=self._commands,
            expiry=self._expiry,
            grants=self._grants,
            hub=self.hub,
            metrics=self.metrics,
        )

    async def start(self) -> None:
        """Adopt the store's settings, follow its feed and expire leases on time."""
        stored = await adopt_defaults(self.config, self.store)
        self.defaults = self.config.policy("").with_settings(stored)
        await adopt_guards(self.config, self.store, stored, self.configure)
        feed = self.store.subscribe()
        _, docs = await self.store.snapshot(None)
        for doc in docs:
            self._expiry.track(doc)
        self._tasks = [
            asyncio.create_task(self._feed.follow(feed), name="runguard-feed"),
            asyncio.create_task(self._expiry.run(), name="runguard-expiry"),
        ]

    def drain(self) -> None:
        """The server is stopping: every queued Begin leaves the queue now and answers
        UNAVAILABLE, so its caller sends it again elsewhere (another replica, or this
        server once it is back) instead of waiting out the shutdown grace."""
        self._grants.drain()

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

    def policy_of(self, doc: GuardDoc) -> GuardPolicy:
        """The policy a guard is run by: its own settings, else the store's defaults."""
        return core.policy_of(doc, self.defaults)

    # -- commands ----------------------------------------------------------

    async def _apply(
        self, guard: str, step: Callable[[GuardDoc, float], Transition[T]]
    ) -> tuple[Transition[T], Commit | None]:
        return await self._commands.apply(guard, step)

    def _committed(self, commit: Commit) -> None:
        """A commit this process made (each seen once): its queued callers granted here hear
        of it now, not once the feed brings it back; the runs it released are counted."""
        self._grants.hand_over(commit)
        record_releases(self.metrics, commit, self._clock())

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
        arrival = self._grants.watch(key)
        try:
            deciding = asyncio.ensure_future(
                self._apply(guard, lambda doc, now: core.begin(doc, self.defaults, command, now))
            )
            try:
                transition, _ = await asyncio.shield(deciding)
            except asyncio.CancelledError:
                self._waiting.give_back(guard, deciding)
                raise
            outcome = transition.outcome
            if isinstance(outcome, core.Queued):
                outcome = await self._waiting.wait(guard, outcome, arrival)
        finally:
            self._grants.unwatch(key, arrival)
        if isinstance(outcome, core.Granted):
            result, reason = "granted", ""
            details: dict[str, object] = {
                "fencing_token": outcome.run.fencing_token,
                "replayed": outcome.replayed,
            }
        else:
            result, reason = "rejected", outcome.reason.value
            details = {"reason": reason, "holders": [run.operation_id for run in outcome.holders]}
        self.metrics.begins.labels(self.metrics.guard(guard), result, reason).inc()
        log.info("begin", guard=guard, operation_id=operation_id, outcome=result, **details)
        return outcome

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
