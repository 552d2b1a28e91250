"""Following the store's feed: every commit, this replica's or another's, reaches
each piece that keeps state of it.

The command path's kept documents, the expiry timer's deadlines, the queued
Begins waiting on a grant, the queue-length gauge and the watch hub all learn
each commit from here. A gap in the feed (commits lost) resyncs every watcher
and relearns every deadline. One bad commit is logged and the feed goes on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog

from runguard.server.commands import Commands
from runguard.server.errors import RunGuardError
from runguard.server.expiry import Expiry
from runguard.server.grants import Grants
from runguard.server.hub import Hub
from runguard.server.metrics import Metrics
from runguard.server.stores import Commit, FeedGap, Store

__all__ = ["Feed"]

log = structlog.get_logger("runguard")


class Feed:
    """Hands each commit of the store's feed to the pieces that follow it."""

    def __init__(
        self,
        store: Store,
        *,
        commands: Commands,
        expiry: Expiry,
        grants: Grants,
        hub: Hub,
        metrics: Metrics,
    ) -> None:
        self._store = store
        self._commands = commands
        self._expiry = expiry
        self._grants = grants
        self._hub = hub
        self._metrics = metrics

    async def follow(self, feed: AsyncIterator[Commit | FeedGap]) -> None:
        """Pass on each commit of ``feed`` until it ends."""
        async for commit in feed:
            if isinstance(commit, FeedGap):
                await self._recover(commit)
                continue
            try:
                self._commands.learn(commit)
                if commit.reclaimed:
                    self._expiry.forget(commit.guard)
                else:
                    self._expiry.track(commit.doc)
                self._metrics.queue_length.labels(self._metrics.guard(commit.guard)).set(
                    len(commit.doc.queue)
                )
                self._grants.hand_over(commit)
                self._hub.publish(commit)
            except Exception:  # one bad commit must not stop the feed for everybody
                log.exception("feed_failed", guard=commit.guard, revision=commit.revision)

    async def _recover(self, gap: FeedGap) -> None:
        """Commits were lost from the feed: every watcher resyncs, every deadline is relearned."""
        log.warning("feed_gap", after=gap.after)
        self._commands.forget()
        self._hub.resync_all()
        try:
            _, docs = await self._store.snapshot(None)
        except RunGuardError as error:
            log.warning("feed_gap_rescan_failed", error=str(error))
            return
        for doc in docs:
            self._expiry.track(doc)
