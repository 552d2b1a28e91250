"""The watch hub: fans committed changes out to every Watch stream.

Each watcher has a bounded buffer. Publishing never waits: a watcher whose
buffer is full is *coalesced* (its buffer dropped and the next thing it sends
is a fresh Snapshot marked ``resynced``), so a slow reader can neither block
Begin/End nor grow memory, and never silently misses a change.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass

from runguard.server import core
from runguard.server.config import ServerConfig
from runguard.server.core import Change, GuardDoc, GuardPolicy, GuardView
from runguard.server.errors import ShuttingDown
from runguard.server.metrics import Metrics
from runguard.server.stores import Commit, Store

__all__ = ["Hub", "Progress", "Snapshot", "WatchEvent"]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The watched guards as of ``revision``; ``resynced`` when it replaces lost changes."""

    revision: int
    guards: tuple[GuardView, ...]
    resynced: bool


@dataclass(frozen=True, slots=True)
class Progress:
    """Nothing changed in the watched guards up to ``revision``."""

    revision: int


WatchEvent = Snapshot | Change | Progress


class _Watcher:
    def __init__(self, guards: frozenset[str] | None, limit: int) -> None:
        self.guards = guards
        self.limit = limit
        self.buffer: deque[Change] = deque()
        self.wake = asyncio.Event()
        self.overflowed = False

    def push(self, changes: Sequence[Change]) -> None:
        wanted = [c for c in changes if self.guards is None or c.state.guard in self.guards]
        if not wanted:
            return
        if len(self.buffer) + len(wanted) > self.limit:
            self.buffer.clear()
            self.overflowed = True
        else:
            self.buffer.extend(wanted)
        self.wake.set()


class Hub:
    """Every open Watch stream, and the last revision handed to them."""

    def __init__(
        self,
        config: ServerConfig,
        store: Store,
        metrics: Metrics | None = None,
        *,
        policy: Callable[[], GuardPolicy] | None = None,
    ) -> None:
        """``policy`` gives the policy of guards without settings of their own (the
        store's defaults); without it, the flags' defaults."""
        self._config = config
        self._store = store
        self._policy = policy if policy is not None else (lambda: config.policy(""))
        self._metrics = metrics if metrics is not None else Metrics()
        self._metrics.watchers.set_function(lambda: len(self._watchers))
        self._watchers: set[_Watcher] = set()
        self._published = 0
        self._closed = False

    @property
    def watchers(self) -> int:
        """How many Watch streams are open."""
        return len(self._watchers)

    def publish(self, commit: Commit) -> None:
        """Hand a commit's changes to every watcher of its guard; never waits."""
        self._published = max(self._published, commit.revision)
        if commit.changes:
            for watcher in self._watchers:
                watcher.push(commit.changes)

    def resync_all(self) -> None:
        """Every watcher's next message is a resynced Snapshot (the feed lost commits)."""
        for watcher in self._watchers:
            watcher.buffer.clear()
            watcher.overflowed = True
            watcher.wake.set()

    def close(self) -> None:
        """End every stream with ShuttingDown; refuse new ones."""
        self._closed = True
        for watcher in self._watchers:
            watcher.wake.set()

    def _view(self, doc: GuardDoc) -> GuardView:
        return core.view(doc, self._policy())

    async def _snapshot(self, guards: Sequence[str] | None, *, resynced: bool) -> Snapshot:
        revision, docs = await self._store.snapshot(guards)
        return Snapshot(revision, tuple(self._view(d) for d in docs), resynced)

    async def stream(
        self, guards: Sequence[str] | None, after_revision: int = 0, epoch: str = ""
    ) -> AsyncGenerator[WatchEvent, None]:
        """Subscribe, then a Snapshot (or the missed changes), then changes and heartbeats.

        Raises:
            ShuttingDown: the hub was closed; the caller should reconnect.
        """
        if self._closed:
            raise ShuttingDown("server shutting down; reconnect")
        guards = list(guards) if guards else None
        watcher = _Watcher(None if guards is None else frozenset(guards), self._config.watch_buffer)
        self._watchers.add(watcher)
        try:
            # A resume names its epoch; without one only a fresh start (revision 0)
            # is trusted, anything else cannot be checked and is resynced.
            resuming = bool(epoch) or after_revision > 0
            missed = None
            if resuming and epoch == self._store.epoch:
                missed = await self._store.changes_since(after_revision)
            if missed is None:
                if resuming:
                    self._metrics.resyncs.labels("resume").inc()
                snapshot = await self._snapshot(guards, resynced=resuming)
                base = snapshot.revision
                yield snapshot
            else:
                base = after_revision
                for change in missed:
                    if watcher.guards is None or change.state.guard in watcher.guards:
                        yield change
                    base = max(base, change.revision)
            while True:
                if not watcher.buffer and not watcher.overflowed and not self._closed:
                    watcher.wake.clear()
                    try:
                        # timeout(), not wait_for(): no extra task per wait (3.11's
                        # wait_for wraps the wait in one), which fan-out pays per watcher.
                        async with asyncio.timeout(self._config.progress_interval):
                            await watcher.wake.wait()
                    except TimeoutError:
                        # The feed may have published while the timeout unwound:
                        # a heartbeat must never pass a change it has not sent.
                        if not watcher.buffer and not watcher.overflowed:
                            yield Progress(max(base, self._published))
                        continue
                if self._closed:
                    raise ShuttingDown("server shutting down; reconnect")
                if watcher.overflowed:
                    self._metrics.resyncs.labels("overflow").inc()
                    watcher.overflowed = False
                    watcher.buffer.clear()
                    snapshot = await self._snapshot(guards, resynced=True)
                    base = snapshot.revision
                    yield snapshot
                    continue
                change = watcher.buffer.popleft()
                if change.revision > base:
                    yield change
        finally:
            self._watchers.discard(watcher)
