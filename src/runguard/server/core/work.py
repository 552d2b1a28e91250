"""A guard document being changed by one command: what every transition shares.

``Work`` holds the document's parts while a command changes them: it settles the
guard in the seed's order (leases that are due expire, waiters whose wait is over
leave the queue, freed slots go to the queue in arrival order), grants and
releases slots, records each change, and ``finish`` makes the new document into
a :class:`Transition` (dropping dedup entries out of the window, and saying
``reclaim`` when the guard is left with nothing to keep). The rules that decide
what a command does are in ``transitions``; like them, this is pure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from runguard.server.core.model import (
    Accepted,
    Change,
    ChangeKind,
    Ending,
    GuardDoc,
    GuardPolicy,
    GuardView,
    Holder,
    ReleaseReason,
    Run,
    RunOutcome,
    Tombstone,
    Waiter,
)

__all__ = ["Transition", "kept_since", "policy_of"]

TOMBSTONES_KEPT = 64
"""How many ended runs a guard remembers to explain a lost lease."""

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Transition(Generic[T]):
    """The result of a command: commit ``doc`` only when ``dirty``.

    ``reclaim``: the guard is left with nothing to keep; the store deletes it
    instead of writing ``doc`` (and a guard never written is not written).
    """

    doc: GuardDoc
    outcome: T
    changes: tuple[Change, ...]
    dirty: bool
    reclaim: bool = False


def kept_since(entry: Accepted) -> float:
    """When a dedup entry's keeping is measured from: when its run's end was recorded, else
    its acceptance. A DUPLICATE is measured from the acceptance alone (the seed's window);
    an ended run stays known (GetRun, a DUPLICATE's duplicate_of, a late End) for a window
    after it ended, however long it ran."""
    return max(entry.accepted_at, entry.kept_from)


def policy_of(doc: GuardDoc, policy: GuardPolicy) -> GuardPolicy:
    """The policy ``doc`` is run by: its own settings when it has some, else ``policy``."""
    return policy.with_settings(doc.settings)


class Work:
    """A guard document being changed by one command."""

    def __init__(self, doc: GuardDoc, policy: GuardPolicy) -> None:
        self.doc = doc
        self.settings = doc.settings
        self.policy = policy_of(doc, policy)
        self.holders = list(doc.holders)
        self.queue = list(doc.queue)
        self.accepted: Mapping[str, Accepted] = doc.accepted
        self._accepted_copied = False
        self.tombstones = list(doc.tombstones)
        self.next_fencing = doc.next_fencing
        self.changes: list[Change] = []
        self.dirty = False
        self.now = 0.0
        """The command's time (set by ``settle``, which every command runs first)."""

    def view(self) -> GuardView:
        return GuardView(
            guard=self.doc.name,
            capacity=self.policy.capacity,
            holders=tuple(h.run for h in self.holders),
            queue_length=len(self.queue),
            dedup_window=self.policy.dedup_window,
            max_queue=self.policy.max_queue,
            configured=self.settings is not None,
        )

    def holder(self, operation_id: str) -> Holder | None:
        return next((h for h in self.holders if h.run.operation_id == operation_id), None)

    def waiter(self, operation_id: str) -> Waiter | None:
        return next((w for w in self.queue if w.operation_id == operation_id), None)

    def grant(
        self,
        *,
        operation_id: str,
        fingerprint: str,
        lease_token: str,
        ttl: float,
        labels: tuple[tuple[str, str], ...],
        now: float,
        principal: str = "",
    ) -> Holder:
        run = Run(
            guard=self.doc.name,
            operation_id=operation_id,
            fingerprint=fingerprint,
            fencing_token=self.next_fencing,
            started_at=now,
            expires_at=now + ttl,
            labels=labels,
            principal=principal,
        )
        self.next_fencing += 1
        holder = Holder(run=run, lease_token=lease_token, ttl=ttl)
        self.holders.append(holder)
        # Re-inserted last, so the mapping stays in order of acceptance.
        accepted = self._own_accepted()
        accepted.pop(fingerprint, None)
        accepted[fingerprint] = Accepted(run=run, accepted_at=now)
        self.dirty = True
        self.changes.append(Change(kind=ChangeKind.ACQUIRED, run=run, state=self.view()))
        return holder

    def release(
        self,
        holder: Holder,
        reason: ReleaseReason,
        now: float,
        outcome: RunOutcome | None = None,
        result: str = "",
    ) -> Run:
        self.holders.remove(holder)
        self.tombstones.append(
            Tombstone(operation_id=holder.run.operation_id, reason=reason, at=now)
        )
        del self.tombstones[:-TOMBSTONES_KEPT]
        ended = dataclasses.replace(
            holder.run, ending=Ending(reason=reason, at=now, outcome=outcome, result=result)
        )
        self._keep_ended(ended, now)
        self.dirty = True
        self.changes.append(
            Change(kind=ChangeKind.RELEASED, run=ended, state=self.view(), reason=reason)
        )
        return ended

    def _keep_ended(self, ended: Run, now: float) -> None:
        """The run's dedup entry now shows how it ended, and is kept for a window from now.

        A run that outlived its window had its entry dropped: it gets one again (accepted
        at its start, so it makes no DUPLICATE). An entry of a later run of the same
        submission is left as it is.
        """
        entry = self.accepted.get(ended.fingerprint)
        if entry is not None and entry.run.started_at > ended.started_at:
            return
        # Re-inserted last: the entries stay in the order they are kept from (see
        # kept_since), so dropping stale ones from the front finds them all.
        accepted = self._own_accepted()
        accepted.pop(ended.fingerprint, None)
        accepted[ended.fingerprint] = Accepted(
            run=ended, accepted_at=ended.started_at, kept_from=max(now, self.now)
        )

    def put(self, old: Holder, new: Holder) -> Holder:
        """Put ``new`` in the place of ``old`` among the holders."""
        self.holders[self.holders.index(old)] = new
        self.dirty = True
        return new

    def show_progress(self, holder: Holder, now: float) -> None:
        """Tell watchers the holder's latest progress (one PROGRESSED change)."""
        self.put(holder, dataclasses.replace(holder, progress_shown_at=now, progress_due=None))
        self.changes.append(Change(kind=ChangeKind.PROGRESSED, run=holder.run, state=self.view()))

    def known_end(self, operation_id: str, now: float) -> Run | Tombstone | None:
        """What the guard still knows of an ended run: the run itself, or its tombstone."""
        cutoff = now - self.policy.dedup_window
        return known_end(self.accepted, self.tombstones, operation_id, cutoff)

    def settle(self, now: float) -> None:
        """Expire due leases, drop waiters whose wait is over, promote the queue."""
        self.now = now
        for holder in [h for h in self.holders if h.run.expires_at <= now]:
            # A lease ran out at its expires_at, however late it is noticed.
            self.release(holder, ReleaseReason.EXPIRED, holder.run.expires_at)
        live = [w for w in self.queue if w.deadline > now]
        if len(live) != len(self.queue):
            self.queue = live
            self.dirty = True
        self.promote(now)
        for holder in [h for h in self.holders if h.progress_due is not None]:
            if holder.progress_due is not None and holder.progress_due <= now:
                self.show_progress(holder, now)

    def promote(self, now: float) -> None:
        while self.queue and len(self.holders) < self.policy.capacity:
            waiter = self.queue.pop(0)
            self.grant(
                operation_id=waiter.operation_id,
                fingerprint=waiter.fingerprint,
                lease_token=waiter.lease_token,
                ttl=waiter.ttl,
                labels=waiter.labels,
                now=now,
                principal=waiter.principal,
            )

    def _own_accepted(self) -> dict[str, Accepted]:
        """The dedup entries, copied on the first change (documents are never mutated)."""
        if not self._accepted_copied:
            self.accepted = dict(self.accepted)
            self._accepted_copied = True
        assert isinstance(self.accepted, dict)
        return self.accepted

    def full(self) -> bool:
        return len(self.holders) >= self.policy.capacity

    def recent(self, fingerprint: str, now: float) -> Accepted | None:
        found = self.accepted.get(fingerprint)
        if found is None or found.accepted_at <= now - self.policy.dedup_window:
            return None
        return found

    def finish(self, outcome: T, now: float) -> Transition[T]:
        cutoff = now - self.policy.dedup_window
        idle = not self.holders and not self.queue and self.settings is None
        if not self.dirty:
            stale = not any(kept_since(a) > cutoff for a in self.accepted.values())
            if not (idle and stale and (self.accepted or self.doc.tombstones)):
                return Transition(doc=self.doc, outcome=outcome, changes=(), dirty=False)
            # Nothing left to keep but stale entries: the guard is reclaimed.
            self.dirty = True
        # Dedup entries are only dropped when the document is written anyway:
        # lookups ignore stale ones, so a rejection never costs a write.
        # Oldest first: drop from the front until an entry is still inside the
        # window (one out of order, from another replica's clock, waits its turn;
        # lookups ignore it meanwhile).
        while self.accepted:
            oldest = next(iter(self.accepted))
            if kept_since(self.accepted[oldest]) > cutoff:
                break
            del self._own_accepted()[oldest]
        doc = dataclasses.replace(
            self.doc,
            holders=tuple(self.holders),
            queue=tuple(self.queue),
            accepted=self.accepted,
            tombstones=tuple(self.tombstones),
            next_fencing=self.next_fencing,
            settings=self.settings,
        )
        return Transition(
            doc=doc,
            outcome=outcome,
            changes=tuple(self.changes),
            dirty=True,
            reclaim=idle and not self.accepted,
        )


def known_end(
    accepted: Mapping[str, Accepted],
    tombstones: Collection[Tombstone],
    operation_id: str,
    cutoff: float,
) -> Run | Tombstone | None:
    """What a guard still knows of an ended run: the run itself while its dedup entry is
    kept (its run ended after ``cutoff``; stale ones wait for the next write to be
    dropped), or else its tombstone."""
    for entry in reversed(list(accepted.values())):
        run = entry.run
        ended = run.operation_id == operation_id and run.ending is not None
        if ended and kept_since(entry) > cutoff:
            return run
    return next((t for t in reversed(list(tombstones)) if t.operation_id == operation_id), None)
