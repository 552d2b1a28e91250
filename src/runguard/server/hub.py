"""The watch hub: fans committed changes out to every Watch stream.

Each watcher has a bounded buffer. Publishing never waits: a watcher whose
buffer is full is *coalesced* (its buffer dropped and the next thing it sends
is a fresh Snapshot marked ``resynced``), so a slow reader can neither block
Begin/End nor grow memory, and never silently misses a change.

Fan-out to many streams is the hot path, so a watcher holds little: its guards,
a list of unsent changes, and while it is idle one future that ``publish``
resolves. Watchers are indexed by guard, so a commit touches only the watchers
of its guard. Heartbeats come from one ticker for the whole hub rather than a
timer per watcher: a stream that has sent nothing for ``progress_interval``
seconds gets a Progress within a quarter interval more.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType

from runguard.server import core
from runguard.server.config import ServerConfig
from runguard.server.core import Change, GuardDoc, GuardPolicy, GuardView
from runguard.server.errors import ShuttingDown
from runguard.server.metrics import Metrics
from runguard.server.stores import Commit, Store

__all__ = ["HEARTBEAT_TICKS", "Hub", "Progress", "Snapshot", "Subscription", "WatchEvent"]

HEARTBEAT_TICKS = 4
"""Ticks of the hub's heartbeat clock per ``progress_interval``."""


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
    """What the hub keeps of one stream: its guards, its unsent changes, how to wake it."""

    def __init__(self, guards: tuple[str, ...] | None, limit: int, tick: int) -> None:
        self.guards = guards
        """None for every guard; a tuple (a few names: cheaper to hold than a set)."""
        self.limit = limit
        self.buffer: list[Change] = []
        self.overflowed = False
        self.waiter: asyncio.Future[None] | None = None
        """Set while the stream waits for something to send."""
        self.heard = tick
        """The hub's tick when the stream last sent something."""
        self.progress_due = False
        self.peer = ""
        """The connection the stream is on."""

    def push(self, changes: Sequence[Change]) -> None:
        """Buffer changes of its guards (or coalesce, past ``limit``) and wake the stream."""
        if len(self.buffer) + len(changes) > self.limit:
            self.buffer.clear()
            self.overflowed = True
        else:
            self.buffer.extend(changes)
        self.wake()

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)


class Subscription(_Watcher):
    """One Watch stream: ``await next()`` gives its events; leaving the ``with`` unsubscribes.

    First a Snapshot (or, on a resume, the missed changes), then the changes of
    its guards and heartbeats, as :meth:`Hub.stream` describes.
    """

    def __init__(
        self, hub: Hub, guards: Sequence[str] | None, after_revision: int, epoch: str
    ) -> None:
        super().__init__(tuple(guards) if guards else None, hub.buffer_limit, hub.tick)
        self._hub = hub
        self._start: tuple[int, str] | None = (after_revision, epoch)
        self._replay: list[Change] | None = None
        """Missed changes still to send after a resume, last first."""
        self.base = 0
        """The revision everything up to which has been sent or replaced by a Snapshot."""

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Unsubscribe (idempotent)."""
        self._hub._remove(self)

    def poll(self) -> WatchEvent | asyncio.Future[None] | None:
        """Without waiting: the next event; or a future to await before polling again;
        or None when the next event needs the store (then call :meth:`next`).

        Raises:
            ShuttingDown: the hub was closed; the caller should reconnect.
        """
        hub = self._hub
        if hub.closed:
            raise ShuttingDown("server shutting down; reconnect")
        if self._start is not None or self.overflowed:
            return None
        if self._replay:
            change = self._replay.pop()
            if not self._replay:
                self._replay = None
            return self._sent(change)
        buffer = self.buffer
        while buffer:
            change = buffer.pop(0)
            if change.revision > self.base:
                return self._sent(change)
        if self.progress_due:
            self.progress_due = False
            # ``complete``, not the last revision published: a heartbeat must
            # never pass a change of a revision whose commits are still coming.
            return self._sent(Progress(max(self.base, hub.complete)))
        waiter = asyncio.get_running_loop().create_future()
        self.waiter = waiter
        return waiter

    async def next(self) -> WatchEvent:
        """The stream's next event; waits while there is nothing to send.

        Raises:
            ShuttingDown: the hub was closed; the caller should reconnect.
        """
        while True:
            polled = self.poll()
            if polled is None:
                start = self._start
                if start is not None:
                    self._start = None
                    return await self._begin(*start)
                self._hub.metrics.resyncs.labels("overflow").inc()
                self.overflowed = False
                self.buffer.clear()
                return self._sent(await self._snapshot(resynced=True))
            if not isinstance(polled, asyncio.Future):
                return polled
            # A wake (publish, heartbeat, close) resolves it and clears ``waiter``.
            await polled

    def _sent(self, event: WatchEvent) -> WatchEvent:
        self.heard = self._hub.tick
        return event

    async def _begin(self, after_revision: int, epoch: str) -> WatchEvent:
        hub = self._hub
        # A resume names its epoch; without one only a fresh start (revision 0)
        # is trusted, anything else cannot be checked and is resynced.
        resuming = bool(epoch) or after_revision > 0
        missed = None
        if resuming and epoch == hub.store.epoch:
            missed = await hub.store.changes_since(after_revision)
        if missed is None:
            if resuming:
                hub.metrics.resyncs.labels("resume").inc()
            return self._sent(await self._snapshot(resynced=resuming))
        self.base = after_revision
        guards = self.guards
        replay = []
        for change in missed:
            self.base = max(self.base, change.revision)
            if guards is None or change.state.guard in guards:
                replay.append(change)
        replay.reverse()
        self._replay = replay or None
        return await self.next()

    async def _snapshot(self, *, resynced: bool) -> Snapshot:
        snapshot = await self._hub.snapshot(self.guards, resynced=resynced)
        self.base = snapshot.revision
        return snapshot


class _Group:
    """Watchers kept together by connection (``peer``): a commit wakes the streams of
    one connection one after another, so their writes leave in fewer packets."""

    def __init__(self) -> None:
        self._by_peer: dict[str, set[_Watcher]] = {}

    def __bool__(self) -> bool:
        return bool(self._by_peer)

    def __iter__(self) -> Iterator[_Watcher]:
        for watchers in self._by_peer.values():
            yield from watchers

    def add(self, watcher: _Watcher) -> None:
        self._by_peer.setdefault(watcher.peer, set()).add(watcher)

    def discard(self, watcher: _Watcher) -> None:
        watchers = self._by_peer.get(watcher.peer)
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self._by_peer[watcher.peer]


_NOBODY = _Group()


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
        self.store = store
        self._policy = policy if policy is not None else (lambda: config.policy(""))
        self.metrics = metrics if metrics is not None else Metrics()
        self.metrics.watchers.set_function(lambda: len(self._watchers))
        self.buffer_limit = config.watch_buffer
        self._watchers: set[_Watcher] = set()
        self._everything = _Group()
        """Watchers of every guard."""
        self._by_guard: dict[str, _Group] = {}
        self.complete = 0
        """The revision every change up to which has been handed to the watchers."""
        self.tick = 0
        self._ticker: asyncio.Task[None] | None = None
        self.closed = False

    @property
    def watchers(self) -> int:
        """How many Watch streams are open."""
        return len(self._watchers)

    def publish(self, commit: Commit, *, more: bool = False) -> None:
        """Hand a commit's changes to every watcher of its guards; never waits.

        ``more``: other commits of the same revision follow (a batch published
        commit by commit); heartbeats claim the revision only after its last one.
        """
        complete = commit.revision - 1 if more else commit.revision
        if complete > self.complete:
            self.complete = complete
        changes = commit.changes
        if not changes:
            return
        for watcher in self._everything:
            watcher.push(changes)
        guard = changes[0].state.guard
        if all(change.state.guard == guard for change in changes):
            for watcher in self._by_guard.get(guard, _NOBODY):
                watcher.push(changes)
            return
        # Changes of several guards in one commit: each watcher gets its own, in order.
        touched: dict[_Watcher, None] = {}
        for change in changes:
            touched.update(dict.fromkeys(self._by_guard.get(change.state.guard, _NOBODY)))
        for watcher in touched:
            wanted = watcher.guards or ()
            watcher.push([change for change in changes if change.state.guard in wanted])

    def resync_all(self) -> None:
        """Every watcher's next message is a resynced Snapshot (the feed lost commits)."""
        for watcher in self._watchers:
            watcher.buffer.clear()
            watcher.overflowed = True
            watcher.wake()

    def close(self) -> None:
        """End every stream with ShuttingDown; refuse new ones."""
        self.closed = True
        for watcher in self._watchers:
            watcher.wake()
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    def subscribe(
        self,
        guards: Sequence[str] | None,
        after_revision: int = 0,
        epoch: str = "",
        *,
        peer: str = "",
    ) -> Subscription:
        """A new stream, subscribed now (so it misses no commit); see :meth:`stream`.

        ``peer``: the stream's connection (``context.peer()``).
        """
        subscription = Subscription(self, guards, after_revision, epoch)
        subscription.peer = sys.intern(peer)  # one string per connection, not per stream
        self._watchers.add(subscription)
        if subscription.guards is None:
            self._everything.add(subscription)
        else:
            for guard in subscription.guards:
                self._by_guard.setdefault(guard, _Group()).add(subscription)
        if not self.closed and (self._ticker is None or self._ticker.done()):
            self._ticker = asyncio.get_running_loop().create_task(
                self._heartbeats(), name="runguard-watch-heartbeats"
            )
        return subscription

    def _remove(self, watcher: _Watcher) -> None:
        if watcher not in self._watchers:
            return
        self._watchers.discard(watcher)
        if watcher.guards is None:
            self._everything.discard(watcher)
        else:
            for guard in watcher.guards:
                watchers = self._by_guard.get(guard)
                if watchers is not None:
                    watchers.discard(watcher)
                    if not watchers:
                        del self._by_guard[guard]
        if not self._watchers and self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    async def _heartbeats(self) -> None:
        """Every quarter interval: mark the idle streams that have been quiet a whole one."""
        period = self._config.progress_interval / HEARTBEAT_TICKS
        while self._watchers and not self.closed:
            await asyncio.sleep(period)
            self.tick += 1
            # Quiet since before tick ``due`` + 1 means quiet for HEARTBEAT_TICKS periods.
            due = self.tick - HEARTBEAT_TICKS - 1
            for watcher in self._watchers:
                if watcher.waiter is not None and watcher.heard <= due:
                    watcher.progress_due = True
                    watcher.wake()

    def _view(self, doc: GuardDoc) -> GuardView:
        return core.view(doc, self._policy())

    async def snapshot(self, guards: Sequence[str] | None, *, resynced: bool) -> Snapshot:
        """The guards (None: every guard) as the store has them now."""
        revision, docs = await self.store.snapshot(guards)
        return Snapshot(revision, tuple(self._view(d) for d in docs), resynced)

    async def stream(
        self, guards: Sequence[str] | None, after_revision: int = 0, epoch: str = ""
    ) -> AsyncGenerator[WatchEvent, None]:
        """Subscribe, then a Snapshot (or the missed changes), then changes and heartbeats.

        Raises:
            ShuttingDown: the hub was closed; the caller should reconnect.
        """
        with self.subscribe(guards, after_revision, epoch) as subscription:
            while True:
                yield await subscription.next()
