"""The core driven by Hypothesis: random commands on a fake clock, checked against a model.

One guard per run, with a random capacity (1..3), dedup window, max TTL and queue
limit. Rules Begin (with and without wait, fingerprints and operation_ids from small
pools so duplicates, replays and conflicts happen), End (right token, wrong token,
force; with or without an outcome and a result), KeepAlive (with or without a progress
report), Cancel (by the run's principal, another one, or an admin), cancel_wait and
settle, and move the clock by random steps or
exactly onto the next lease expiry, wait deadline or dedup-window edge. Times are
multiples of 1/8 s, so sums are exact and those edges are hit exactly.

Every transition is compared with a small reference model written from the
contract, and a simulated store commits dirty transitions, stamping revisions on
the changes as a real store does and feeding a ChangeLog. On top, the invariants of
the contract are checked against what was observed, not against the model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from runguard.server.core import (
    PROGRESS_INTERVAL,
    BeginCommand,
    CancelResult,
    Change,
    ChangeKind,
    ChangeLog,
    EndResult,
    Granted,
    GuardDoc,
    GuardPolicy,
    GuardSettings,
    GuardView,
    Queued,
    Rejection,
    RejectionReason,
    ReleaseReason,
    Run,
    RunOutcome,
    RunProgress,
    Transition,
    begin,
    cancel,
    cancel_wait,
    configure,
    end,
    keep_alive,
    kept_since,
    next_deadline,
    policy_of,
    settle,
)
from runguard.server.errors import (
    LeaseLost,
    LeaseMismatch,
    NotPermitted,
    OperationConflict,
    RunGuardError,
    RunNotFound,
)
from tests.runs import run_of

OPS = ["a", "b", "c", "d", "e", "f"]
FINGERPRINTS = ["fp-1", "fp-2", "fp-3", "fp-4"]
EIGHTHS = st.sampled_from([k / 8 for k in range(49)])
TTLS = st.one_of(st.none(), st.sampled_from([k / 8 for k in range(1, 81)]))
WAITS = st.one_of(st.just(0.0), st.sampled_from([k / 8 for k in range(1, 161)]))
START = 1_000.0
PROGRESS = st.one_of(
    st.none(),
    st.builds(
        RunProgress,
        fraction=st.one_of(st.none(), st.sampled_from([0.0, 0.5, 1.0])),
        message=st.sampled_from(["", "half", "done"]),
    ),
)

# --- the reference model --------------------------------------------------------------

Outcome = tuple[Any, ...]
"""An outcome reduced to comparable plain values (see ``reduce``)."""


@dataclass
class MHolder:
    op: str
    fp: str
    token: str
    ttl: float
    fencing: int
    started_at: float
    expires_at: float
    progress: tuple[float | None, str, float] | None = None
    shown_at: float | None = None
    due: float | None = None
    cancelled: bool = False


@dataclass
class MWaiter:
    op: str
    fp: str
    token: str
    ttl: float
    deadline: float


@dataclass
class Model:
    """The guard as the contract describes it, in the simplest terms."""

    policy: GuardPolicy
    next_fencing: int
    holders: list[MHolder] = field(default_factory=list)
    queue: list[MWaiter] = field(default_factory=list)
    accepted: dict[str, tuple[float, str, int]] = field(default_factory=dict)
    last_release: dict[str, tuple[ReleaseReason, float]] = field(default_factory=dict)
    ended: set[int] = field(default_factory=set)
    """Fencing tokens of the runs that left their slot."""
    events: list[tuple[ChangeKind, str, ReleaseReason | None, int]] = field(default_factory=list)
    dirty: bool = False
    kept: dict[str, float] = field(default_factory=dict)
    """The dedup entries as the stored document keeps them (stale ones go on each write)."""
    reclaim: bool = False
    defaults: GuardPolicy | None = None
    """The policy of the guard without settings of its own (``policy`` is the one in force)."""
    configured: bool = False

    def clone(self) -> Model:
        """A copy to run one command on (committed only if the core agrees)."""
        return Model(
            policy=self.policy,
            next_fencing=self.next_fencing,
            holders=[dataclasses.replace(h) for h in self.holders],
            queue=[dataclasses.replace(w) for w in self.queue],
            accepted=dict(self.accepted),
            last_release=dict(self.last_release),
            ended=set(self.ended),
            kept=dict(self.kept),
            defaults=self.defaults,
            configured=self.configured,
        )

    def finish(self, now: float) -> None:
        """What every command ends with: a guard with nothing left to keep is reclaimed."""
        window = self.policy.dedup_window
        idle = not self.holders and not self.queue and not self.configured
        live = {fp: at for fp, at in self.kept.items() if now - at < window}
        if not self.dirty and idle and not live and (self.kept or self.last_release):
            self.dirty = True
        if not self.dirty:
            return
        self.kept = live
        self.reclaim = idle and not live
        if self.reclaim:
            # The store deletes the guard: how its runs left is forgotten with it.
            self.kept, self.accepted, self.last_release = {}, {}, {}

    def holder(self, op: str) -> MHolder | None:
        return next((h for h in self.holders if h.op == op), None)

    def waiter(self, op: str) -> MWaiter | None:
        return next((w for w in self.queue if w.op == op), None)

    def release(self, h: MHolder, reason: ReleaseReason, at: float, now: float) -> None:
        self.holders.remove(h)
        self.last_release[h.op] = (reason, at)
        self.ended.add(h.fencing)
        # The run's dedup entry is kept a window from its end (given back to a run that
        # outlived its window), unless it belongs to a later run of the same submission.
        entry = self.accepted.get(h.fp)
        if h.fp not in self.kept or entry is None or entry[0] <= h.started_at:
            self.accepted[h.fp] = (h.started_at, h.op, h.fencing)
            self.kept[h.fp] = now
        self.dirty = True
        self.events.append((ChangeKind.RELEASED, h.op, reason, len(self.queue)))

    def grant(self, op: str, fp: str, token: str, ttl: float, now: float) -> MHolder:
        h = MHolder(op, fp, token, ttl, self.next_fencing, now, now + ttl)
        self.next_fencing += 1
        self.holders.append(h)
        self.accepted.pop(fp, None)  # re-inserted last, as the core keeps them
        self.accepted[fp] = (now, op, h.fencing)
        self.kept.pop(fp, None)
        self.kept[fp] = now
        self.dirty = True
        self.events.append((ChangeKind.ACQUIRED, op, None, len(self.queue)))
        return h

    def promote(self, now: float) -> None:
        while self.queue and len(self.holders) < self.policy.capacity:
            w = self.queue.pop(0)
            self.grant(w.op, w.fp, w.token, w.ttl, now)

    def settle(self, now: float) -> Outcome:
        for h in [h for h in self.holders if h.expires_at <= now]:
            self.release(h, ReleaseReason.EXPIRED, h.expires_at, now)
        live = [w for w in self.queue if w.deadline > now]
        if len(live) < len(self.queue):
            self.queue = live
            self.dirty = True
        self.promote(now)
        for h in list(self.holders):
            if h.due is not None and h.due <= now:
                self.show(h, now)
        return ("none",)

    def show(self, h: MHolder, now: float) -> None:
        h.shown_at, h.due = now, None
        self.dirty = True
        self.events.append((ChangeKind.PROGRESSED, h.op, None, len(self.queue)))

    def ended_run(self, op: str, now: float) -> tuple[float, str, int] | None:
        """The latest dedup entry inside the window whose run (``op``) has ended."""
        for fp, (at, entry_op, fencing) in reversed(list(self.accepted.items())):
            if fp not in self.kept:
                continue
            kept_from = self.kept[fp]
            if (
                entry_op == op
                and fencing in self.ended
                and now - kept_from < self.policy.dedup_window
            ):
                return (at, entry_op, fencing)
        return None

    def in_window(self, fp: str, now: float) -> tuple[float, str, int] | None:
        # What the document kept: an entry dropped under a shorter window stays gone.
        hit = self.accepted.get(fp) if fp in self.kept else None
        if hit is not None and now - hit[0] < self.policy.dedup_window:
            return hit
        return None

    def holder_ops(self) -> tuple[str, ...]:
        return tuple(h.op for h in self.holders)

    def begin(self, cmd: BeginCommand, now: float) -> Outcome:
        self.settle(now)
        h = self.holder(cmd.operation_id)
        if h is not None:
            if h.fp != cmd.fingerprint:
                return ("raise", OperationConflict)
            return granted_outcome(h, replayed=True)
        w = self.waiter(cmd.operation_id)
        if w is not None:
            if w.fp != cmd.fingerprint:
                return ("raise", OperationConflict)
            return ("queued", w.op, w.token, w.deadline)
        full = len(self.holders) >= self.policy.capacity
        if full and cmd.wait <= 0:
            soonest = min(h.expires_at for h in self.holders)
            return ("rejected", RejectionReason.IN_FLIGHT, self.holder_ops(), None, soonest - now)
        earlier = self.in_window(cmd.fingerprint, now)
        if earlier is not None:
            retry = earlier[0] + self.policy.dedup_window - now
            return ("rejected", RejectionReason.DUPLICATE, self.holder_ops(), earlier[1], retry)
        if any(w.fp == cmd.fingerprint for w in self.queue):
            return ("rejected", RejectionReason.DUPLICATE, self.holder_ops(), None, None)
        ttl = self.policy.max_ttl if cmd.ttl is None else cmd.ttl
        if full:
            if len(self.queue) >= self.policy.max_queue:
                return ("rejected", RejectionReason.QUEUE_FULL, self.holder_ops(), None, None)
            w = MWaiter(cmd.operation_id, cmd.fingerprint, cmd.lease_token, ttl, now + cmd.wait)
            self.queue.append(w)
            self.dirty = True
            return ("queued", w.op, w.token, w.deadline)
        h = self.grant(cmd.operation_id, cmd.fingerprint, cmd.lease_token, ttl, now)
        return granted_outcome(h, replayed=False)

    def end(self, op: str, token: str, force: bool, now: float) -> Outcome:
        self.settle(now)
        h = self.holder(op)
        if h is None:
            known = op in self.last_release
            return ("end", EndResult.ALREADY_ENDED if known else EndResult.UNKNOWN)
        if not force and h.token != token:
            return ("raise", LeaseMismatch)
        self.release(h, ReleaseReason.FORCED if force else ReleaseReason.ENDED, now, now)
        self.promote(now)
        return ("end", EndResult.ENDED)

    def cancel(self, op: str, by: str, admin: bool, now: float) -> Outcome:
        self.settle(now)
        h = self.holder(op)
        if h is None and self.ended_run(op, now) is None:
            return ("raise", RunNotFound)
        # Every run of this machine is granted to the principal "".
        if not admin and by != "":
            return ("raise", NotPermitted)
        if h is None:
            hit = self.ended_run(op, now)
            assert hit is not None
            return ("cancel", CancelResult.ALREADY_ENDED, op, hit[2])
        if h.cancelled:
            return ("cancel", CancelResult.ALREADY_REQUESTED, op, h.fencing)
        h.cancelled = True
        self.dirty = True
        self.events.append((ChangeKind.CANCEL_REQUESTED, op, None, len(self.queue)))
        return ("cancel", CancelResult.REQUESTED, op, h.fencing)

    def keep_alive(
        self,
        op: str,
        token: str,
        ttl: float | None,
        now: float,
        progress: RunProgress | None = None,
    ) -> Outcome:
        self.settle(now)
        h = self.holder(op)
        if h is None:
            why = self.last_release.get(op)
            if why is None:
                return ("raise", LeaseLost, "no such run")
            reason, at = why
            return ("raise", LeaseLost, f"{reason.value} {now - at:.1f}s ago")
        if h.token != token:
            return ("raise", LeaseMismatch)
        h.ttl = h.ttl if ttl is None else ttl
        h.expires_at = now + h.ttl
        self.dirty = True
        if progress is not None:
            h.progress = (progress.fraction, progress.message, now)
            if h.shown_at is None or now - h.shown_at >= PROGRESS_INTERVAL:
                self.show(h, now)
            else:
                h.due = h.shown_at + PROGRESS_INTERVAL
        return ("run", h.op, h.fencing, h.expires_at)

    def configure(self, settings: GuardSettings | None, now: float) -> Outcome:
        self.settle(now)
        defaults = self.defaults or self.policy
        policy = defaults if settings is None else defaults.with_settings(settings)
        if (settings is not None) != self.configured or policy != self.policy:
            self.policy, self.configured = policy, settings is not None
            self.dirty = True
            self.events.append((ChangeKind.CONFIGURED, "", None, len(self.queue)))
            self.promote(now)
        return ("view", self.policy.capacity, self.policy.dedup_window, self.policy.max_queue)

    def cancel_wait(self, op: str, token: str, now: float) -> Outcome:
        self.settle(now)
        h = self.holder(op)
        if h is not None and h.token == token:
            return granted_outcome(h, replayed=False)
        w = self.waiter(op)
        if w is not None and w.token == token:
            self.queue.remove(w)
            self.dirty = True
        return ("rejected", RejectionReason.WAIT_TIMEOUT, self.holder_ops(), None, None)


def granted_outcome(h: MHolder, *, replayed: bool) -> Outcome:
    """A model holder's grant, reduced."""
    return ("granted", h.op, h.fencing, h.started_at, h.expires_at, h.token, replayed)


def outcome_op(outcome: Granted | Queued) -> str:
    """The operation_id a grant or a queue ticket is for."""
    return outcome.run.operation_id if isinstance(outcome, Granted) else outcome.operation_id


def describe(outcome: Outcome) -> str:
    """A short name of an outcome, for Hypothesis' statistics."""
    if outcome[0] == "granted":
        return "replayed" if outcome[-1] else "granted"
    if outcome[0] in ("rejected", "end"):
        return f"{outcome[0]} {outcome[1].value}"
    return str(outcome[0])


def reduce(outcome: object) -> Outcome:
    """A core outcome as the plain tuple the model gives."""
    if isinstance(outcome, Granted):
        r = outcome.run
        return (
            "granted",
            r.operation_id,
            r.fencing_token,
            r.started_at,
            r.expires_at,
            outcome.lease_token,
            outcome.replayed,
        )
    if isinstance(outcome, Queued):
        return ("queued", outcome.operation_id, outcome.lease_token, outcome.deadline)
    if isinstance(outcome, Rejection):
        dup = None if outcome.duplicate_of is None else outcome.duplicate_of.operation_id
        holders = tuple(r.operation_id for r in outcome.holders)
        return ("rejected", outcome.reason, holders, dup, outcome.retry_after)
    if isinstance(outcome, EndResult):
        return ("end", outcome)
    if isinstance(outcome, Run):
        return ("run", outcome.operation_id, outcome.fencing_token, outcome.expires_at)
    if isinstance(outcome, tuple):
        result, run = outcome
        return ("cancel", result, run.operation_id, run.fencing_token)
    if isinstance(outcome, GuardView):
        return ("view", outcome.capacity, outcome.dedup_window, outcome.max_queue)
    assert outcome is None, outcome
    return ("none",)


# --- the machine ----------------------------------------------------------------------


class CoreMachine(RuleBasedStateMachine):
    """One guard, a fake clock, a simulated store, a model and the observed history."""

    def __init__(self) -> None:
        super().__init__()
        self.now = START
        self.policy = GuardPolicy()
        self.doc = GuardDoc(name="g", next_fencing=1)
        self.model = Model(policy=self.policy, next_fencing=1, defaults=self.policy)
        self.tokens = 0
        self.last_token: dict[str, str] = {}
        # The simulated store.
        self.revision = 0
        self.written_at: float | None = None
        self.committed: list[Change] = []
        self.history = 6
        self.log = ChangeLog(self.history)
        # What was observed, for the invariants.
        self.fencing_seen: list[int] = []
        self.grants_seen: list[tuple[str, float]] = []
        self.arrivals: list[tuple[str, str, float]] = []
        self.overfull = False
        """Holders above capacity are allowed: a configure lowered it under them."""

    @initialize(
        capacity=st.integers(min_value=1, max_value=3),
        dedup_window=st.sampled_from([0.0, 2.5, 5.0]),
        max_ttl=st.sampled_from([3.0, 20.0]),
        max_queue=st.integers(min_value=0, max_value=3),
        next_fencing=st.integers(min_value=1, max_value=2**40),
        history=st.integers(min_value=1, max_value=8),
        prefill=st.integers(min_value=0, max_value=3),
    )
    def new_guard(
        self,
        capacity: int,
        dedup_window: float,
        max_ttl: float,
        max_queue: int,
        next_fencing: int,
        history: int,
        prefill: int,
    ) -> None:
        """A new guard with random rules, maybe already holding some runs."""
        self.policy = GuardPolicy(
            capacity=capacity, dedup_window=dedup_window, max_ttl=max_ttl, max_queue=max_queue
        )
        self.doc = GuardDoc(name="g", next_fencing=next_fencing)
        self.model = Model(policy=self.policy, next_fencing=next_fencing, defaults=self.policy)
        self.history = history
        self.log = ChangeLog(history)
        for op, fp in zip(OPS[:prefill], FINGERPRINTS, strict=False):
            self.begin(op, fp, None, 0.0)

    # --- applying one command ---------------------------------------------------------

    def apply(
        self,
        command: Callable[[GuardDoc], Transition[Any]],
        model_step: Callable[[Model], Outcome],
    ) -> Transition[Any] | None:
        """Run a command on the core and the model, compare them, and commit like a store."""
        before = self.doc
        model = self.model.clone()
        expected = model_step(model)
        if expected[0] != "raise":
            model.finish(self.now)
        error: RunGuardError | None = None
        try:
            t = command(before)
        except RunGuardError as caught:
            error = caught
        if error is not None:
            event(f"raised {type(error).__name__}")
            assert expected[0] == "raise", (expected, error)
            assert isinstance(error, expected[1]), (expected, error)
            if isinstance(error, LeaseLost):
                assert error.reason.startswith(expected[2]), (error.reason, expected)
            # A transition that raises changed nothing: its document is simply not applied.
            assert self.doc is before
            return None
        assert reduce(t.outcome) == expected
        event(describe(expected))
        event(f"{len(t.changes)} changes")
        for change in t.changes:
            event(f"change {change.kind.value}")
        assert t.dirty == model.dirty
        assert t.reclaim == model.reclaim
        if t.reclaim:
            event("reclaimed")
        if not t.dirty:
            assert t.doc is before
            assert t.changes == ()
        assert [(c.kind, c.run.operation_id if c.run else "", c.reason) for c in t.changes] == [
            (kind, op, reason) for kind, op, reason, _ in model.events
        ]
        self.check_change_states(t.changes, model)
        self.model = model
        self.observe(t)
        self.commit(t)
        self.compare_document()
        return t

    def check_change_states(self, changes: tuple[Change, ...], model: Model) -> None:
        """Each change carries the guard's state right after it."""
        holders = [h.run for h in self.doc.holders]
        for change, (_, _, _, queue_length) in zip(changes, model.events, strict=True):
            if change.kind is ChangeKind.ACQUIRED:
                assert change.run is not None
                holders.append(change.run)
                # A grant never takes the guard past its capacity.
                assert len(holders) <= change.state.capacity
            elif change.kind is ChangeKind.RELEASED:
                assert change.run is not None
                gone = change.run.operation_id
                holders = [r for r in holders if r.operation_id != gone]
            elif change.kind is ChangeKind.CONFIGURED:
                assert change.run is None
                assert change.state.capacity == model.policy.capacity
            else:
                # Progress and cancel requests change the run, never who holds a slot.
                assert change.run is not None
                ops = [r.operation_id for r in holders]
                holders[ops.index(change.run.operation_id)] = change.run
            # An outcome only on ended runs: only a RELEASED change shows how a run ended.
            if change.kind is ChangeKind.RELEASED:
                assert change.run is not None
                assert change.run.ending is not None
                assert change.run.ending.reason is change.reason
            elif change.run is not None:
                assert change.run.ending is None
            assert change.state.guard == "g"
            assert list(change.state.holders) == holders
            assert change.state.queue_length == queue_length
            assert change.revision == 0

    def observe(self, t: Transition[Any]) -> None:
        """Record grants and arrivals, and check them against what was seen before."""
        queued_before = {(w.operation_id, w.lease_token) for w in self.doc.queue}
        for change in t.changes:
            if change.kind is not ChangeKind.ACQUIRED:
                continue
            run = change.run
            assert run is not None
            if self.fencing_seen:
                assert run.fencing_token > self.fencing_seen[-1]
            self.fencing_seen.append(run.fencing_token)
            self.grants_seen.append((run.fingerprint, run.started_at))
            # Waiters still waiting (their wait not over) in arrival order.
            waiting = [op for op, _, deadline in self.arrivals if deadline > self.now]
            if run.operation_id in waiting:
                event("granted from the queue")
                assert waiting[0] == run.operation_id, (waiting, run.operation_id)
                index = [op for op, _, _ in self.arrivals].index(run.operation_id)
                del self.arrivals[: index + 1]
        outcome = t.outcome
        if isinstance(outcome, Granted | Queued):
            self.last_token[outcome_op(outcome)] = outcome.lease_token
        if isinstance(outcome, Queued) and (outcome.operation_id, outcome.lease_token) not in (
            queued_before
        ):
            self.arrivals.append((outcome.operation_id, outcome.lease_token, outcome.deadline))
        # Waiters cancelled or dropped leave the arrival list.
        still = {(w.operation_id, w.lease_token) for w in t.doc.queue}
        self.arrivals = [a for a in self.arrivals if (a[0], a[1]) in still]

    def commit(self, t: Transition[Any]) -> None:
        """Commit as a store does: a dirty transition gets the next revision, on all its changes."""
        if not t.dirty:
            return
        revision = self.revision + 1
        stamped = [dataclasses.replace(c, revision=revision) for c in t.changes]
        assert all(c.revision == revision for c in stamped)
        if self.committed and stamped:
            assert stamped[0].revision > self.committed[-1].revision
        self.revision = revision
        self.committed += stamped
        self.log.append(stamped)
        # A reclaimed guard is deleted; reading it again gives a new document
        # whose fencing starts at the store's floor (the reclaimed one's next token).
        self.doc = GuardDoc(name="g", next_fencing=t.doc.next_fencing) if t.reclaim else t.doc
        self.written_at = self.now

    def compare_document(self) -> None:
        """The committed document holds exactly what the model holds."""
        doc, model = self.doc, self.model
        assert doc.next_fencing == model.next_fencing
        assert [
            (
                h.run.operation_id,
                h.run.fingerprint,
                h.lease_token,
                h.run.fencing_token,
                h.run.started_at,
                h.run.expires_at,
            )
            for h in doc.holders
        ] == [(h.op, h.fp, h.token, h.fencing, h.started_at, h.expires_at) for h in model.holders]
        assert [
            (
                None if h.run.progress is None else dataclasses.astuple(h.run.progress),
                h.progress_shown_at,
                h.progress_due,
                h.run.cancel is not None,
                h.run.ending,
            )
            for h in doc.holders
        ] == [(h.progress, h.shown_at, h.due, h.cancelled, None) for h in model.holders]
        assert [(w.operation_id, w.fingerprint, w.lease_token, w.deadline) for w in doc.queue] == [
            (w.op, w.fp, w.token, w.deadline) for w in model.queue
        ]
        # Dedup entries: every submission accepted within the window, and (once the
        # document was written) nothing older, so the document stays bounded.
        window = model.policy.dedup_window
        assert policy_of(doc, self.policy) == model.policy
        assert all(fp == a.run.fingerprint for fp, a in doc.accepted.items())
        kept = {
            fp: (a.accepted_at, a.run.operation_id, a.run.fencing_token)
            for fp, a in doc.accepted.items()
        }
        assert {fp: hit for fp, hit in kept.items() if self.now - hit[0] < window} == {
            fp: model.accepted[fp] for fp in model.kept if self.now - model.accepted[fp][0] < window
        }
        if self.written_at == self.now:
            assert all(self.now - kept_since(a) < window for a in doc.accepted.values())
        # An entry whose run ended shows how it ended (the model knows that it did).
        for fp, a in doc.accepted.items():
            if self.now - a.accepted_at < window:
                assert (a.run.ending is not None) == (a.run.fencing_token in model.ended), fp
        times = [h.expires_at for h in model.holders] + [w.deadline for w in model.queue]
        times += [h.due for h in model.holders if h.due is not None]
        deadline = next_deadline(doc, self.policy)
        if times:
            assert deadline == min(times)
        elif model.configured:
            assert deadline is None  # settings of its own: never reclaimed
        elif model.kept:
            assert deadline == max(model.kept.values()) + window
        elif model.last_release:
            assert deadline is not None
            assert deadline <= self.now  # nothing to keep: reclaim at once
        else:
            assert deadline is None

    # --- tokens and operations ------------------------------------------------------------

    def fresh_token(self) -> str:
        """A lease token never used before, as the servicer makes them."""
        self.tokens += 1
        return f"tok-{self.tokens}"

    def token_of(self, op: str) -> str:
        """The lease token the caller of ``op`` was given last."""
        return self.last_token.get(op, "never-issued")

    def pick(self, data: st.DataObject, *, waiting: bool = False) -> str:
        """An operation_id: mostly one that holds a slot (or waits), sometimes any."""
        if waiting:
            likely = [w.operation_id for w in self.doc.queue]
        else:
            likely = [h.run.operation_id for h in self.doc.holders]
        return data.draw(st.sampled_from(likely * 3 + OPS), label="op")

    # --- rules ------------------------------------------------------------------------

    @rule(step=EIGHTHS)
    def advance(self, step: float) -> None:
        """Time passes by a random multiple of 1/8 s."""
        self.now += step

    @rule(data=st.data())
    def advance_to_an_edge(self, data: st.DataObject) -> None:
        """Time jumps exactly onto a lease expiry, a wait deadline or a dedup-window edge."""
        edges = [h.run.expires_at for h in self.doc.holders]
        edges += [w.deadline for w in self.doc.queue]
        window = policy_of(self.doc, self.policy).dedup_window
        edges += [a.accepted_at + window for a in self.doc.accepted.values()]
        edges = sorted(e for e in edges if e >= self.now)
        if edges:
            offset = data.draw(st.sampled_from([0.0, 0.0, -0.125, 0.125]), label="offset")
            self.now = max(self.now, data.draw(st.sampled_from(edges), label="edge") + offset)

    @rule(
        op=st.sampled_from(OPS),
        fp=st.sampled_from(FINGERPRINTS),
        ttl=TTLS,
        wait=WAITS,
    )
    def begin(self, op: str, fp: str, ttl: float | None, wait: float) -> None:
        """Begin, maybe waiting, maybe repeating an operation_id or a submission."""
        cmd = BeginCommand(
            operation_id=op, fingerprint=fp, lease_token=self.fresh_token(), ttl=ttl, wait=wait
        )
        now = self.now
        t = self.apply(lambda d: begin(d, self.policy, cmd, now), lambda m: m.begin(cmd, now))
        if t is None:
            return
        outcome = t.outcome
        if isinstance(outcome, Rejection) and outcome.reason is RejectionReason.DUPLICATE:
            # Only a submission accepted within the window, or one already queued.
            window = self.model.policy.dedup_window
            recent = any(f == fp and now - at < window for f, at in self.grants_seen)
            twin = any(w.fingerprint == fp for w in t.doc.queue)
            assert recent or twin, outcome

    @rule(op=st.sampled_from(OPS), fp=st.sampled_from(FINGERPRINTS), ttl=TTLS, wait=WAITS)
    def queue_up(self, op: str, fp: str, ttl: float | None, wait: float) -> None:
        """Begin asking to wait, so that queues form."""
        self.begin(op, fp, ttl, wait or 4.0)

    @rule(data=st.data(), op=st.sampled_from(OPS), wait=WAITS)
    def resubmit_at_the_window_edge(self, data: st.DataObject, op: str, wait: float) -> None:
        """The same submission comes again just before, at or just after its dedup window ends."""
        window = self.model.policy.dedup_window
        offset = data.draw(st.sampled_from([-0.125, 0.0, 0.125]), label="offset")
        entries = self.doc.accepted.values()
        edges = [a for a in entries if a.accepted_at + window + offset >= self.now]
        if edges:
            accepted = data.draw(st.sampled_from(edges), label="accepted")
            self.now = accepted.accepted_at + window + offset
            self.begin(op, accepted.run.fingerprint, None, wait)

    @rule(
        data=st.data(),
        how=st.sampled_from(["token", "token", "wrong", "force"]),
        outcome=st.one_of(st.none(), st.sampled_from(RunOutcome)),
        result=st.sampled_from(["", '{"batch":"/out/1"}']),
    )
    def end(self, data: st.DataObject, how: str, outcome: RunOutcome | None, result: str) -> None:
        """End with the right token, a wrong one, or forced; maybe with an outcome and a result."""
        op = self.pick(data)
        token = {"token": self.token_of(op), "wrong": "wrong-token", "force": ""}[how]
        force = how == "force"
        now = self.now
        t = self.apply(
            lambda d: end(
                d, self.policy, op, token, now, force=force, outcome=outcome, result=result
            ),
            lambda m: m.end(op, token, force, now),
        )
        if t is not None and t.outcome is EndResult.ENDED:
            (mine,) = [
                run_of(c)
                for c in t.changes
                if c.kind is ChangeKind.RELEASED and c.reason is not ReleaseReason.EXPIRED
            ]
            assert mine.ending is not None
            assert (mine.ending.outcome, mine.ending.result, mine.ending.at) == (
                outcome,
                result,
                now,
            )

    @rule(data=st.data(), by=st.sampled_from(["", "", "mallory"]), admin=st.booleans())
    def cancel(self, data: st.DataObject, by: str, admin: bool) -> None:
        """Cancel by the run's own principal, another one, or an admin: never frees a slot."""
        op = self.pick(data)
        now = self.now
        settled = settle(self.doc, self.policy, now).doc
        t = self.apply(
            lambda d: cancel(d, self.policy, op, now, reason="stop", by=by, admin=admin),
            lambda m: m.cancel(op, by, admin, now),
        )
        if t is not None:
            assert [h.run.operation_id for h in t.doc.holders] == [
                h.run.operation_id for h in settled.holders
            ]
            result, run = t.outcome
            if result is not CancelResult.ALREADY_ENDED:
                assert run.cancel is not None
                assert run.ending is None

    @rule(data=st.data(), right=st.booleans(), ttl=TTLS, progress=PROGRESS)
    def keep_alive(
        self, data: st.DataObject, right: bool, ttl: float | None, progress: RunProgress | None
    ) -> None:
        """KeepAlive with or without the token, a new ttl, a progress report."""
        op = self.pick(data)
        token = self.token_of(op) if right else "wrong-token"
        now = self.now
        settled = settle(self.doc, self.policy, now).doc
        t = self.apply(
            lambda d: keep_alive(d, self.policy, op, token, now, ttl=ttl, progress=progress),
            lambda m: m.keep_alive(op, token, ttl, now, progress),
        )
        if t is not None:
            # Progress never changes holders, capacity or the queue.
            assert [h.run.operation_id for h in t.doc.holders] == [
                h.run.operation_id for h in settled.holders
            ]
            assert t.doc.queue == settled.queue

    @rule(data=st.data(), right=st.booleans())
    def cancel_wait(self, data: st.DataObject, right: bool) -> None:
        """A waiter gives up (or an impostor tries to make it)."""
        op = self.pick(data, waiting=True)
        token = self.token_of(op) if right else "wrong-token"
        now = self.now
        self.apply(
            lambda d: cancel_wait(d, self.policy, op, token, now),
            lambda m: m.cancel_wait(op, token, now),
        )

    @rule(
        settings=st.none()
        | st.builds(
            GuardSettings,
            capacity=st.integers(min_value=1, max_value=4),
            dedup_window=st.sampled_from([0.0, 2.5, 5.0]),
            max_queue=st.integers(min_value=0, max_value=3),
        )
    )
    def configure(self, settings: GuardSettings | None) -> None:
        """An operator gives the guard settings of its own, or resets them."""
        now = self.now
        before = len(self.doc.holders)
        t = self.apply(
            lambda d: configure(d, self.policy, settings, now),
            lambda m: m.configure(settings, now),
        )
        if t is not None and t.dirty:
            # Lowering capacity evicts nobody: every holder is still there.
            assert len(t.doc.holders) >= min(before, len(self.doc.holders))
            self.overfull = len(self.doc.holders) > self.model.policy.capacity

    @rule()
    def settle(self) -> None:
        """The store's timer settles the guard."""
        now = self.now
        self.apply(lambda d: settle(d, self.policy, now), lambda m: m.settle(now))

    @rule(data=st.data())
    def resume_a_watcher(self, data: st.DataObject) -> None:
        """A watcher resuming after any revision gets exactly the later changes, or None."""
        after = data.draw(st.integers(min_value=0, max_value=self.revision), label="after")
        later = [c for c in self.committed if c.revision > after]
        replay = self.log.since(after)
        event("resumed" if replay is not None else "resync")
        if replay is None:
            assert after < self.log.floor
            # Only history beyond the last ``limit`` changes may be gone.
            assert len(later) > self.history
        else:
            assert replay == later
        # The last ``history`` changes, rounded up to whole commits, are all kept.
        if self.committed:
            oldest_kept = self.committed[-min(self.history, len(self.committed))].revision
            assert self.log.since(oldest_kept - 1) == [
                c for c in self.committed if c.revision >= oldest_kept
            ]

    # --- invariants -------------------------------------------------------------------

    @invariant()
    def never_more_holders_than_capacity(self) -> None:
        """At most ``capacity`` runs hold a slot (more only while a lowered capacity
        waits for holders granted before it to leave)."""
        capacity = policy_of(self.doc, self.policy).capacity
        if len(self.doc.holders) <= capacity:
            self.overfull = False
        assert len(self.doc.holders) <= capacity or self.overfull

    @invariant()
    def queue_only_while_full(self) -> None:
        """Somebody waits only while every slot is taken."""
        if self.doc.queue:
            assert len(self.doc.holders) >= policy_of(self.doc, self.policy).capacity

    @invariant()
    def fencing_counter_is_ahead_of_every_grant(self) -> None:
        """The next fencing token is above every token ever granted."""
        if self.fencing_seen:
            assert self.doc.next_fencing > self.fencing_seen[-1]


CoreMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestCoreMachine = CoreMachine.TestCase
