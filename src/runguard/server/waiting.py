"""A queued Begin's wait, and how it leaves the queue.

A Begin that the core queued waits for its grant (handed over by
``grants.Grants``) until its wait is over; then it leaves the queue, with the
grant if the slot came first, else ``WAIT_TIMEOUT``. A caller that goes away
leaves the queue too, and a grant that came too late for it to learn its lease
token is given back; while the server drains, a waiting Begin leaves at once
and answers UNAVAILABLE. The wait-time histogram is observed here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from runguard.server import core
from runguard.server.commands import Commands
from runguard.server.core import GuardPolicy, Holder, Rejection, Transition
from runguard.server.errors import RunGuardError, ShuttingDown
from runguard.server.grants import DRAINED, Grants
from runguard.server.metrics import Metrics
from runguard.server.stores import Commit

__all__ = ["Waiting"]

End = Callable[[str, str, str], Awaitable[object]]
"""End a run (guard, operation_id, lease_token), as the service's End does."""

log = structlog.get_logger("runguard")


class Waiting:
    """Queued Begins of this process: their wait, and leaving the queue."""

    def __init__(
        self,
        commands: Commands,
        grants: Grants,
        *,
        policy: Callable[[], GuardPolicy],
        end: End,
        clock: Callable[[], float],
        metrics: Metrics,
    ) -> None:
        self._commands = commands
        self._grants = grants
        self._policy = policy
        self._end = end
        self._clock = clock
        self._metrics = metrics
        self._orphans: set[asyncio.Future[None]] = set()

    async def wait(
        self, guard: str, queued: core.Queued, arrival: asyncio.Future[Holder]
    ) -> core.Granted | Rejection:
        """Wait for the grant ``arrival`` brings until ``queued``'s deadline, then leave
        the queue.

        Raises:
            ShuttingDown: the server drains and the grant had not come.
        """
        key = (guard, queued.operation_id)
        waited = self._metrics.wait_seconds
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
                    waited.labels(self._metrics.guard(guard), "granted").observe(
                        self._clock() - started
                    )
                    return core.Granted(holder.run, holder.lease_token)
                self._grants.unwatch(key, arrival)
                arrival = self._grants.watch(key)
            outcome = await self._leave_queue(guard, queued)
            ended = "granted" if isinstance(outcome, core.Granted) else "timeout"
            waited.labels(self._metrics.guard(guard), ended).observe(self._clock() - started)
            return outcome
        except asyncio.CancelledError:
            # The caller went away: leave the queue, and give back a slot that
            # came too late for anybody to learn its lease token.
            cleanup = asyncio.create_task(self._abandon(guard, queued))
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(cleanup)
            raise
        finally:
            self._grants.unwatch(key, arrival)

    def give_back(
        self, guard: str, deciding: asyncio.Future[tuple[Transition[Any], Commit | None]]
    ) -> None:
        """The caller of a Begin went away while ``deciding`` was being committed: a grant
        (or a place in the queue) it will never hear of is given back, not left held.
        Runs to its end in the background."""
        task = asyncio.ensure_future(self._give_back(guard, deciding))
        self._orphans.add(task)
        task.add_done_callback(self._orphans.discard)

    async def _leave_queue(self, guard: str, queued: core.Queued) -> core.Granted | Rejection:
        """Leave the queue: the grant if the slot came first, else WAIT_TIMEOUT."""
        transition, _ = await self._commands.apply(
            guard,
            lambda doc, now: core.cancel_wait(
                doc, self._policy(), queued.operation_id, queued.lease_token, now
            ),
        )
        return transition.outcome

    async def _leave_draining(self, guard: str, queued: core.Queued) -> core.Granted:
        """Leave the queue as the server drains: the grant if it came first, else UNAVAILABLE."""
        outcome = await self._leave_queue(guard, queued)
        if isinstance(outcome, core.Granted):
            return outcome
        raise ShuttingDown(DRAINED)

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
                await self._end(guard, outcome.run.operation_id, outcome.lease_token)
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
                await self._end(guard, queued.operation_id, queued.lease_token)
        except RunGuardError as error:
            log.warning(
                "abandon_failed", guard=guard, operation_id=queued.operation_id, error=str(error)
            )
