"""Every transition of a guard, in one place.

Each public function takes the guard's current document, its policy, a
command and ``now``, and returns a :class:`~runguard.server.core.work.Transition`:
the new document, the outcome, and the slot changes in the order they happened.
Every command first *settles* the guard, in the seed's order: leases that are
due expire, waiters whose wait is over leave the queue, and freed slots go to
the queue in arrival order (the mechanics every command shares are in
``work``). A transition that raises changed nothing.

``policy`` is the policy of a guard without settings of its own (the store-wide
defaults and the server's lease limit); a document's own ``settings`` take its
place (``work.policy_of``).

A guard with no holders, no queue, no dedup entry inside its window and no
settings of its own is *reclaimed*: the transition that leaves it so says
``reclaim`` and the store deletes it, so invented names leave no state behind.

Invariants (property-tested): never more holders than capacity; fencing
tokens strictly increase per guard; a queue only exists while the guard is
full; a DUPLICATE only inside the dedup window.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TypeVar, cast

from runguard.server.core.model import (
    Accepted,
    BeginCommand,
    Cancellation,
    CancelResult,
    Change,
    ChangeKind,
    EndResult,
    GuardDoc,
    GuardPolicy,
    GuardSettings,
    GuardView,
    Rejection,
    RejectionReason,
    ReleaseReason,
    Run,
    RunOutcome,
    RunProgress,
    Tombstone,
    Waiter,
)
from runguard.server.core.work import Transition, Work, kept_since, known_end, policy_of
from runguard.server.errors import (
    LeaseLost,
    LeaseMismatch,
    NotPermitted,
    OperationConflict,
    RunNotFound,
)

__all__ = [
    "PROGRESS_INTERVAL",
    "Granted",
    "Queued",
    "begin",
    "cancel",
    "cancel_wait",
    "configure",
    "end",
    "find_run",
    "keep_alive",
    "next_deadline",
    "settle",
    "view",
    "without_waiters_of",
]

PROGRESS_INTERVAL = 1.0
"""Seconds between two PROGRESSED changes of one run: reports in between update the
run at once (Current, snapshots) but are shown to watchers as one change, the
latest, when the interval is over."""

_OTHER_PRINCIPAL = "of another principal"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Granted:
    """The caller holds a slot. ``replayed`` when a retried Begin got its own grant back."""

    run: Run
    lease_token: str
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Queued:
    """The caller waits in the guard's queue until granted or its deadline."""

    operation_id: str
    lease_token: str
    deadline: float


def view(doc: GuardDoc, policy: GuardPolicy) -> GuardView:
    """The guard as watchers see it (call after :func:`settle` for an up-to-date view)."""
    return Work(doc, policy).view()


def settle(doc: GuardDoc, policy: GuardPolicy, now: float) -> Transition[None]:
    """Expire due leases, drop waiters past their deadline, hand freed slots to the queue."""
    work = Work(doc, policy)
    work.settle(now)
    return work.finish(None, now)


def begin(
    doc: GuardDoc, policy: GuardPolicy, cmd: BeginCommand, now: float
) -> Transition[Granted | Queued | Rejection]:
    """Ask for a slot: the seed's order of checks, then the queue.

    The guard settles first (the seed's expiry); then each check of ``_BEGIN_CHECKS``
    in turn may answer, and the first that does decides; a Begin none of them
    answers joins the queue (the guard is full) or is granted.

    A ``resume_only`` command only gets back the grant its operation_id holds
    (rejected NOT_HELD otherwise): it never grants, queues or joins a window.

    Raises:
        OperationConflict: ``cmd.operation_id`` names a live or queued run of
            this guard with another fingerprint, or of another principal (a
            replay hands out the lease token, so only its own principal gets it).
    """
    work = Work(doc, policy)
    work.settle(now)
    for check in _BEGIN_CHECKS:
        answer = check(work, cmd, now)
        if answer is not None:
            return work.finish(answer, now)
    return work.finish(_admit(work, cmd, now), now)


_Check = Callable[[Work, BeginCommand, float], Granted | Queued | Rejection | None]
"""One of Begin's checks: its answer, or None to let the next check decide."""


def _replay(work: Work, cmd: BeginCommand, now: float) -> Granted | None:
    """A retried Begin of a run that holds a slot gets its own grant back."""
    held = work.holder(cmd.operation_id)
    if held is None:
        return None
    _same_submission(work, cmd, held.run.fingerprint, held.run.principal)
    return Granted(held.run, held.lease_token, replayed=True)


def _not_held(work: Work, cmd: BeginCommand, now: float) -> Rejection | None:
    """A resume-only Begin that holds no slot is refused NOT_HELD."""
    if not cmd.resume_only:
        return None
    return _reject(
        work,
        RejectionReason.NOT_HELD,
        f"operation_id={cmd.operation_id} holds no slot of guard {work.doc.name!r}",
    )


def _rejoin(work: Work, cmd: BeginCommand, now: float) -> Queued | None:
    """A retried Begin of a queued caller keeps its place in the queue."""
    queued = work.waiter(cmd.operation_id)
    if queued is None:
        return None
    _same_submission(work, cmd, queued.fingerprint, queued.principal)
    return Queued(queued.operation_id, queued.lease_token, queued.deadline)


def _in_flight(work: Work, cmd: BeginCommand, now: float) -> Rejection | None:
    """A full guard refuses a caller that does not wait: IN_FLIGHT, with the holders."""
    if not work.full() or cmd.wait > 0:
        return None
    soonest = min(h.run.expires_at for h in work.holders)
    names = ", ".join(h.run.operation_id for h in work.holders)
    return _reject(
        work,
        RejectionReason.IN_FLIGHT,
        f"guard {work.doc.name!r} is at capacity {work.policy.capacity}: held by "
        f"operation_id={names}. End it first or wait for it to finish.",
        retry_after=max(0.0, soonest - now),
    )


def _duplicate(work: Work, cmd: BeginCommand, now: float) -> Rejection | None:
    """A submission accepted inside the dedup window is a DUPLICATE, even if its run ended."""
    earlier = work.recent(cmd.fingerprint, now)
    if earlier is None:
        return None
    age = now - earlier.accepted_at
    first = _latest(work, earlier.run)
    return _reject(
        work,
        RejectionReason.DUPLICATE,
        "an identical submission was accepted "
        f"{age:.1f}s ago (operation_id={earlier.run.operation_id}, "
        f"{_state_words(first)}). Wait and try again if this was intentional.",
        duplicate_of=first,
        retry_after=max(0.0, earlier.accepted_at + work.policy.dedup_window - now),
    )


def _queued_twin(work: Work, cmd: BeginCommand, now: float) -> Rejection | None:
    """A submission identical to one already queued is a DUPLICATE too."""
    twin = next((w for w in work.queue if w.fingerprint == cmd.fingerprint), None)
    if twin is None:
        return None
    return _reject(
        work,
        RejectionReason.DUPLICATE,
        f"an identical submission is already queued (operation_id={twin.operation_id}).",
    )


def _queue_full(work: Work, cmd: BeginCommand, now: float) -> Rejection | None:
    """A caller that would wait in a queue at its limit is refused QUEUE_FULL."""
    if not work.full() or len(work.queue) < work.policy.max_queue:
        return None
    return _reject(
        work,
        RejectionReason.QUEUE_FULL,
        f"guard {work.doc.name!r} has {len(work.queue)} callers queued, "
        f"its limit is {work.policy.max_queue}",
    )


_BEGIN_CHECKS: tuple[_Check, ...] = (
    _replay,
    _not_held,
    _rejoin,
    _in_flight,
    _duplicate,
    _queued_twin,
    _queue_full,
)
"""Begin's checks in the seed's order (its own run first, then in-flight, then duplicate)."""


def _admit(work: Work, cmd: BeginCommand, now: float) -> Granted | Queued:
    """A Begin every check let through: queued when the guard is full, else granted."""
    ttl = work.policy.max_ttl if cmd.ttl is None else cmd.ttl
    if work.full():
        waiter = Waiter(
            operation_id=cmd.operation_id,
            fingerprint=cmd.fingerprint,
            lease_token=cmd.lease_token,
            ttl=ttl,
            labels=cmd.labels,
            enqueued_at=now,
            deadline=now + cmd.wait,
            owner=cmd.owner,
            principal=cmd.principal,
        )
        work.queue.append(waiter)
        work.dirty = True
        return Queued(waiter.operation_id, waiter.lease_token, waiter.deadline)
    holder = work.grant(
        operation_id=cmd.operation_id,
        fingerprint=cmd.fingerprint,
        lease_token=cmd.lease_token,
        ttl=ttl,
        labels=cmd.labels,
        now=now,
        principal=cmd.principal,
    )
    return Granted(holder.run, holder.lease_token)


def _same_submission(work: Work, cmd: BeginCommand, fingerprint: str, principal: str) -> None:
    """A Begin naming a run or waiter of this guard must be the same submission, by the
    same principal (a replay hands out the lease token)."""
    if fingerprint != cmd.fingerprint:
        raise OperationConflict(work.doc.name, cmd.operation_id)
    if principal != cmd.principal:
        raise OperationConflict(work.doc.name, cmd.operation_id, detail=_OTHER_PRINCIPAL)


def _reject(
    work: Work,
    reason: RejectionReason,
    message: str,
    *,
    duplicate_of: Run | None = None,
    retry_after: float | None = None,
) -> Rejection:
    """A refused Begin, showing the guard's holders as the command left them."""
    return Rejection(
        reason=reason,
        message=message,
        holders=tuple(h.run for h in work.holders),
        duplicate_of=duplicate_of,
        retry_after=retry_after,
    )


def cancel_wait(
    doc: GuardDoc, policy: GuardPolicy, operation_id: str, lease_token: str, now: float
) -> Transition[Granted | Rejection]:
    """Leave the queue when a wait is over; the grant if the slot came first."""
    work = Work(doc, policy)
    work.settle(now)
    held = work.holder(operation_id)
    if held is not None and held.lease_token == lease_token:
        return work.finish(Granted(held.run, held.lease_token), now)
    waiter = work.waiter(operation_id)
    if waiter is not None and waiter.lease_token == lease_token:
        work.queue.remove(waiter)
        work.dirty = True
    return work.finish(
        _reject(
            work, RejectionReason.WAIT_TIMEOUT, f"no slot of guard {doc.name!r} freed while waiting"
        ),
        now,
    )


def end(
    doc: GuardDoc,
    policy: GuardPolicy,
    operation_id: str,
    lease_token: str,
    now: float,
    *,
    force: bool = False,
    outcome: RunOutcome | None = None,
    result: str = "",
) -> Transition[EndResult]:
    """Give a slot back (idempotent); the freed slot goes to the queue at once.

    ``outcome`` and ``result`` (JSON text) are kept with the ended run. An
    operation_id the guard knows nothing of is UNKNOWN rather than ALREADY_ENDED.

    Raises:
        LeaseMismatch: the run is live and ``lease_token`` is not its token
            (and ``force`` is not set).
    """
    work = Work(doc, policy)
    work.settle(now)
    held = work.holder(operation_id)
    if held is None:
        known = work.known_end(operation_id, now) is not None
        return work.finish(EndResult.ALREADY_ENDED if known else EndResult.UNKNOWN, now)
    if not force and held.lease_token != lease_token:
        raise LeaseMismatch(doc.name, operation_id)
    reason = ReleaseReason.FORCED if force else ReleaseReason.ENDED
    work.release(held, reason, now, outcome, result)
    work.promote(now)
    return work.finish(EndResult.ENDED, now)


def keep_alive(
    doc: GuardDoc,
    policy: GuardPolicy,
    operation_id: str,
    lease_token: str,
    now: float,
    *,
    ttl: float | None = None,
    progress: RunProgress | None = None,
) -> Transition[Run]:
    """Extend a lease to ``now + ttl`` (the run's own lease length when None).

    With ``progress`` the run shows it at once; watchers get a PROGRESSED change
    now, or, within ``PROGRESS_INTERVAL`` of the last one, when the interval is
    over (only the latest report). Progress never changes holders or the queue.

    Raises:
        LeaseLost: the run holds no slot; the message says why when known.
        LeaseMismatch: the lease token is not the run's.
    """
    work = Work(doc, policy)
    work.settle(now)
    held = work.holder(operation_id)
    if held is None:
        stone = next((t for t in reversed(work.tombstones) if t.operation_id == operation_id), None)
        reason = (
            f"{stone.reason.value} {now - stone.at:.1f}s ago"
            if stone is not None
            else "no such run (ended, expired long ago, or never granted)"
        )
        raise LeaseLost(doc.name, operation_id, reason)
    if held.lease_token != lease_token:
        raise LeaseMismatch(doc.name, operation_id)
    new_ttl = held.ttl if ttl is None else ttl
    run = dataclasses.replace(held.run, expires_at=now + new_ttl)
    if progress is not None:
        run = dataclasses.replace(run, progress=dataclasses.replace(progress, at=now))
    renewed = work.put(held, dataclasses.replace(held, run=run, ttl=new_ttl))
    if progress is not None:
        shown = held.progress_shown_at
        if shown is None or now - shown >= PROGRESS_INTERVAL:
            work.show_progress(renewed, now)
        else:
            work.put(renewed, dataclasses.replace(renewed, progress_due=shown + PROGRESS_INTERVAL))
    return work.finish(run, now)


def cancel(
    doc: GuardDoc,
    policy: GuardPolicy,
    operation_id: str,
    now: float,
    *,
    reason: str = "",
    by: str = "",
    admin: bool = False,
) -> Transition[tuple[CancelResult, Run]]:
    """Ask a run to stop: mark it cancel-requested. Its slot stays held.

    ``by`` is the caller's principal; only an ``admin`` or the run's own
    principal may cancel it. Marking again, or a run that has ended, changes
    nothing.

    Raises:
        NotPermitted: the caller is neither admin nor the run's principal.
        RunNotFound: the guard knows no such run.
    """
    work = Work(doc, policy)
    work.settle(now)
    held = work.holder(operation_id)
    run = held.run if held is not None else None
    if run is None:
        known = work.known_end(operation_id, now)
        if not isinstance(known, Run):
            raise RunNotFound(doc.name, operation_id, _gone(known, now))
        run = known
    if not admin and run.principal != by:
        raise NotPermitted(
            f"run {operation_id!r} of guard {doc.name!r} belongs to principal "
            f"{run.principal!r}; only it or an admin may cancel it"
        )
    if held is None:
        return work.finish((CancelResult.ALREADY_ENDED, run), now)
    if run.cancel is not None:
        return work.finish((CancelResult.ALREADY_REQUESTED, run), now)
    marked = dataclasses.replace(run, cancel=Cancellation(reason=reason, by=by, at=now))
    work.put(held, dataclasses.replace(held, run=marked))
    work.changes.append(Change(kind=ChangeKind.CANCEL_REQUESTED, run=marked, state=work.view()))
    return work.finish((CancelResult.REQUESTED, marked), now)


def find_run(doc: GuardDoc, policy: GuardPolicy, operation_id: str, now: float) -> Run:
    """A live run, or an ended one still kept with its dedup entry (call after settle).

    Raises:
        RunNotFound: the guard knows no such run; the message says what it knows.
    """
    held = next((h for h in doc.holders if h.run.operation_id == operation_id), None)
    if held is not None:
        return held.run
    window = policy_of(doc, policy).dedup_window
    known = known_end(doc.accepted, doc.tombstones, operation_id, now - window)
    if isinstance(known, Run):
        return known
    raise RunNotFound(doc.name, operation_id, _gone(known, now))


def _gone(stone: Run | Tombstone | None, now: float) -> str:
    if stone is None:
        return "no such run (never granted, or ended longer ago than the guard remembers)"
    assert isinstance(stone, Tombstone)
    return (
        f"it {stone.reason.value} {now - stone.at:.1f}s ago and is no longer kept "
        "(ended runs are kept as long as their dedup entry)"
    )


def _state_words(run: Run) -> str:
    """How a run stands, for people: "still running", "ended: succeeded", "expired"."""
    ending = run.ending
    if ending is None:
        return "still running"
    if ending.outcome is not None:
        return f"ended: {ending.outcome.value}"
    return "ended" if ending.reason is ReleaseReason.ENDED else ending.reason.value


def _latest(work: Work, run: Run) -> Run:
    """The run as it is now: its live holder's run (progress, cancel) if it still holds."""
    held = work.holder(run.operation_id)
    if held is not None and held.run.fencing_token == run.fencing_token:
        return held.run
    return run


def without_waiters_of(doc: GuardDoc, owners: Collection[str]) -> GuardDoc:
    """The document without the queued callers that wait on one of ``owners``.

    For a store shared by replicas: the waiters of a replica that is gone have
    nobody to hand a grant to, so they leave the queue before any command sees
    it (and are never promoted). The others keep their arrival order. Returns
    ``doc`` itself when no waiter is dropped.
    """
    if not owners or not any(w.owner in owners for w in doc.queue):
        return doc
    return dataclasses.replace(doc, queue=tuple(w for w in doc.queue if w.owner not in owners))


def configure(
    doc: GuardDoc, policy: GuardPolicy, settings: GuardSettings | None, now: float
) -> Transition[GuardView]:
    """Give the guard settings of its own (None: follow the defaults again).

    A higher capacity grants queued callers at once; a lower one never evicts a
    holder (the guard stays full until enough runs leave). The change is a
    CONFIGURED change, so watchers see the new settings; the same settings
    again change nothing.
    """
    work = Work(doc, policy)
    work.settle(now)
    if settings != work.settings:
        work.settings = settings
        work.policy = policy.with_settings(settings)
        work.dirty = True
        work.changes.append(Change(kind=ChangeKind.CONFIGURED, run=None, state=work.view()))
        work.promote(now)
    return work.finish(work.view(), now)


def next_deadline(doc: GuardDoc, policy: GuardPolicy, *, exact: bool = False) -> float | None:
    """When the guard next needs settling on its own: a lease or a wait running out,
    progress to show to watchers, or, for a guard with nothing else to keep, its last
    dedup entry leaving the window.

    That last entry is the newest one (entries are kept in the order they are kept from),
    found without reading the others; one out of order, from another replica's clock, makes
    the deadline early, and the settle then finds the guard still in use: ``exact`` reads
    every entry, for that case."""
    times = [h.run.expires_at for h in doc.holders] + [w.deadline for w in doc.queue]
    times += [h.progress_due for h in doc.holders if h.progress_due is not None]
    if not times and doc.settings is None:
        if doc.accepted:  # no settings of its own: the defaults' window
            if exact:
                newest = max(kept_since(a) for a in doc.accepted.values())
            else:  # a dict at run time: its last key is the newest entry's
                ordered = cast("dict[str, Accepted]", doc.accepted)
                newest = kept_since(ordered[next(reversed(ordered))])
            return newest + policy.dedup_window
        if doc.tombstones:  # only how runs left is kept: reclaim at once
            return doc.tombstones[-1].at
    return min(times, default=None)
