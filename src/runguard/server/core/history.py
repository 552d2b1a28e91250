"""A bounded history of committed changes, for resuming watchers.

Pure data structure: it never reads a clock or a store. Whole commits are
evicted together, so a replay never starts in the middle of one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from runguard.server.core.model import Change

__all__ = ["ChangeLog"]


class ChangeLog:
    """The last ``limit`` changes (rounded up to whole commits) in revision order."""

    def __init__(self, limit: int, *, floor: int = 0) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self._limit = limit
        self._changes: deque[Change] = deque()
        self._floor = floor

    @property
    def floor(self) -> int:
        """The newest revision whose changes are no longer kept."""
        return self._floor

    def append(self, changes: Iterable[Change]) -> None:
        """Add a commit's changes (all of one revision, above every kept one)."""
        for change in changes:
            if self._changes and change.revision < self._changes[-1].revision:
                raise ValueError("changes must be appended in revision order")
            self._changes.append(change)
        while len(self._changes) > self._limit:
            # Evict the oldest commit only if the last ``limit`` changes stay kept.
            oldest = self._changes[0].revision
            size = next(
                (i for i, c in enumerate(self._changes) if c.revision != oldest),
                len(self._changes),
            )
            if len(self._changes) - size < self._limit:
                break
            for _ in range(size):
                self._changes.popleft()
            self._floor = oldest

    def since(self, after: int) -> list[Change] | None:
        """Every kept change with a revision above ``after``; None when some are gone."""
        if after < self._floor:
            return None
        return [c for c in self._changes if c.revision > after]
