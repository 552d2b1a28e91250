"""The rules of a guard, as the pure core states them.

Each test builds a guard document, runs transitions at explicit times and checks
the outcome, the changes and the document. The first group replays the seed
module's scenarios (``run_guard.py``): single flight, the dedup window that outlives
the run, idempotent End and the stale-slot watchdog.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from runguard.server.core import (
    BeginCommand,
    Change,
    ChangeKind,
    Ending,
    EndResult,
    Granted,
    GuardDoc,
    GuardPolicy,
    GuardView,
    Queued,
    Rejection,
    RejectionReason,
    ReleaseReason,
    Run,
    Transition,
    begin,
    cancel_wait,
    end,
    keep_alive,
    next_deadline,
    settle,
    view,
)
from runguard.server.errors import LeaseLost, LeaseMismatch, OperationConflict
from tests.runs import run_of

T0 = 1_000.0
"""A start time whose sums with small floats stay exact."""

SEED = GuardPolicy()
"""The seed's rules: single flight, 5 s dedup window, 1800 s watchdog."""


def ended(run: Run, reason: ReleaseReason, at: float) -> Run:
    """``run`` as a RELEASED change (and its dedup entry) show it once it left its slot."""
    return dataclasses.replace(run, ending=Ending(reason=reason, at=at))


def new_doc(next_fencing: int = 1) -> GuardDoc:
    """A guard as a store creates it on first use."""
    return GuardDoc(name="g", next_fencing=next_fencing)


def cmd(
    op: str,
    fp: str = "fp-a",
    *,
    ttl: float | None = None,
    wait: float = 0.0,
    token: str | None = None,
    labels: tuple[tuple[str, str], ...] = (),
) -> BeginCommand:
    """A Begin for ``op`` whose lease token defaults to ``tok-<op>``."""
    return BeginCommand(
        operation_id=op,
        fingerprint=fp,
        lease_token=f"tok-{op}" if token is None else token,
        ttl=ttl,
        wait=wait,
        labels=labels,
    )


def granted(t: Transition[Any]) -> Granted:
    """The grant of a Begin that must have been granted."""
    assert isinstance(t.outcome, Granted), t.outcome
    return t.outcome


def queued(t: Transition[Any]) -> Queued:
    """The queue ticket of a Begin that must have queued."""
    assert isinstance(t.outcome, Queued), t.outcome
    return t.outcome


def rejected(t: Transition[Any]) -> Rejection:
    """The rejection of a command that must have been refused."""
    assert isinstance(t.outcome, Rejection), t.outcome
    return t.outcome


def hold(
    doc: GuardDoc, policy: GuardPolicy, command: BeginCommand, now: float
) -> tuple[GuardDoc, Run]:
    """Begin ``command`` and return the document and the run it was granted."""
    t = begin(doc, policy, command, now)
    return t.doc, granted(t).run


def ops(runs: tuple[Run, ...]) -> list[str]:
    """The operation_ids of some runs, in order."""
    return [r.operation_id for r in runs]


# --- the seed's scenarios ---------------------------------------------------------------


def test_first_begin_is_granted_with_a_full_run() -> None:
    """A Begin on a free guard is granted: a run with the next fencing token and a lease."""
    t = begin(new_doc(7), SEED, cmd("op-1", "fp-a", labels=(("user", "ann"),)), T0)

    grant = granted(t)
    assert grant == Granted(
        Run(
            guard="g",
            operation_id="op-1",
            fingerprint="fp-a",
            fencing_token=7,
            started_at=T0,
            expires_at=T0 + 1800.0,
            labels=(("user", "ann"),),
        ),
        "tok-op-1",
        replayed=False,
    )
    assert t.dirty
    assert t.changes == (
        Change(
            kind=ChangeKind.ACQUIRED,
            run=grant.run,
            state=GuardView(
                guard="g",
                capacity=1,
                holders=(grant.run,),
                queue_length=0,
                dedup_window=5.0,
                max_queue=1000,
            ),
        ),
    )
    assert [h.run for h in t.doc.holders] == [grant.run]
    assert t.doc.holders[0].lease_token == "tok-op-1"
    assert t.doc.next_fencing == 8


def test_second_begin_while_held_is_in_flight_naming_the_holder() -> None:
    """Single flight: a Begin while a run holds the slot is IN_FLIGHT, naming that run."""
    doc, run = hold(new_doc(), SEED, cmd("op-1", "fp-a"), T0)

    t = begin(doc, SEED, cmd("op-2", "fp-b"), T0 + 10)

    rejection = rejected(t)
    assert rejection.reason is RejectionReason.IN_FLIGHT
    assert rejection.holders == (run,)
    assert "operation_id=op-1" in rejection.message
    assert rejection.retry_after == run.expires_at - (T0 + 10)
    assert rejection.duplicate_of is None


def test_capacity_two_admits_two_runs_then_is_in_flight() -> None:
    """With capacity 2 two different runs hold slots and a third is IN_FLIGHT naming both."""
    policy = GuardPolicy(capacity=2)
    doc, run1 = hold(new_doc(), policy, cmd("op-1", "fp-a"), T0)
    doc, run2 = hold(doc, policy, cmd("op-2", "fp-b", ttl=60), T0 + 1)

    rejection = rejected(begin(doc, policy, cmd("op-3", "fp-c"), T0 + 2))

    assert rejection.reason is RejectionReason.IN_FLIGHT
    assert rejection.holders == (run1, run2)
    assert "op-1" in rejection.message
    assert "op-2" in rejection.message
    assert rejection.retry_after == run2.expires_at - (T0 + 2)


def test_same_submission_within_window_is_duplicate_even_after_the_run_ended() -> None:
    """A double submit inside the window is DUPLICATE although the first run already ended."""
    doc, run = hold(new_doc(), SEED, cmd("op-1", "fp-a"), T0)
    doc = end(doc, SEED, "op-1", "tok-op-1", T0 + 1).doc

    t = begin(doc, SEED, cmd("op-2", "fp-a"), T0 + 2)

    rejection = rejected(t)
    assert rejection.reason is RejectionReason.DUPLICATE
    assert rejection.duplicate_of == dataclasses.replace(
        run, ending=Ending(reason=ReleaseReason.ENDED, at=T0 + 1)
    )
    assert rejection.retry_after == 3.0
    assert rejection.holders == ()
    assert "op-1" in rejection.message
    assert "2.0s ago" in rejection.message


@pytest.mark.parametrize(
    ("age", "is_duplicate"),
    [
        pytest.param(0.0, True, id="same-instant"),
        pytest.param(4.75, True, id="inside-window"),
        pytest.param(5.0, False, id="exactly-window"),
        pytest.param(60.0, False, id="long-after"),
    ],
)
def test_dedup_window_is_measured_from_the_accepted_start(age: float, is_duplicate: bool) -> None:
    """The same submission is DUPLICATE while younger than the window, then granted again."""
    doc, _ = hold(new_doc(), SEED, cmd("op-1", "fp-a"), T0)
    doc = end(doc, SEED, "op-1", "tok-op-1", T0).doc

    t = begin(doc, SEED, cmd("op-2", "fp-a"), T0 + age)

    if is_duplicate:
        assert rejected(t).reason is RejectionReason.DUPLICATE
        assert rejected(t).retry_after == 5.0 - age
    else:
        assert granted(t).run.operation_id == "op-2"


def test_another_submission_within_window_is_granted() -> None:
    """Dedup is per fingerprint: another submission right after a run ended is granted."""
    doc, _ = hold(new_doc(), SEED, cmd("op-1", "fp-a"), T0)
    doc = end(doc, SEED, "op-1", "tok-op-1", T0 + 1).doc

    assert granted(begin(doc, SEED, cmd("op-2", "fp-b"), T0 + 1)).run.fingerprint == "fp-b"


def test_zero_dedup_window_never_rejects_as_duplicate() -> None:
    """A dedup window of 0 turns dedup off."""
    policy = GuardPolicy(dedup_window=0.0)
    doc, _ = hold(new_doc(), policy, cmd("op-1", "fp-a"), T0)
    doc = end(doc, policy, "op-1", "tok-op-1", T0).doc

    assert granted(begin(doc, policy, cmd("op-2", "fp-a"), T0)).run.operation_id == "op-2"


def test_in_flight_is_checked_before_duplicate() -> None:
    """Seed order: the same submission while its run still holds the slot is IN_FLIGHT."""
    doc, run = hold(new_doc(), SEED, cmd("op-1", "fp-a"), T0)

    rejection = rejected(begin(doc, SEED, cmd("op-2", "fp-a"), T0 + 1))

    assert rejection.reason is RejectionReason.IN_FLIGHT
    assert rejection.holders == (run,)


def test_duplicate_is_checked_before_queueing() -> None:
    """A waiting Begin of a submission accepted inside the window is DUPLICATE, not queued."""
    doc, run = hold(new_doc(), SEED, cmd("op-1", "fp-a"), T0)

    t = begin(doc, SEED, cmd("op-2", "fp-a", wait=30), T0 + 1)

    assert rejected(t).reason is RejectionReason.DUPLICATE
    assert rejected(t).duplicate_of == run
    assert t.doc.queue == ()


def test_end_frees_the_slot() -> None:
    """End with the lease token is ENDED, emits RELEASED/ENDED and the next Begin is granted."""
    doc, run = hold(new_doc(), SEED, cmd("op-1", "fp-a"), T0)

    t = end(doc, SEED, "op-1", "tok-op-1", T0 + 3)

    assert t.outcome is EndResult.ENDED
    assert t.dirty
    assert t.changes == (
        Change(
            kind=ChangeKind.RELEASED,
            run=ended(run, ReleaseReason.ENDED, T0 + 3),
            state=GuardView(
                guard="g", capacity=1, holders=(), queue_length=0, dedup_window=5.0, max_queue=1000
            ),
            reason=ReleaseReason.ENDED,
        ),
    )
    assert t.doc.holders == ()
    assert granted(begin(t.doc, SEED, cmd("op-2", "fp-b"), T0 + 3)).run.fencing_token == 2


def test_end_is_idempotent() -> None:
    """A second End of the same run is ALREADY_ENDED and writes nothing."""
    doc, _ = hold(new_doc(), SEED, cmd("op-1"), T0)
    doc = end(doc, SEED, "op-1", "tok-op-1", T0 + 1).doc

    t = end(doc, SEED, "op-1", "tok-op-1", T0 + 2)

    assert t.outcome is EndResult.ALREADY_ENDED
    assert not t.dirty
    assert t.doc is doc
    assert t.changes == ()


def test_end_of_another_operation_changes_nothing() -> None:
    """End naming an operation_id the guard never had is UNKNOWN and leaves the holder alone."""
    doc, run = hold(new_doc(), SEED, cmd("op-1"), T0)

    t = end(doc, SEED, "op-2", "tok-op-2", T0 + 1)

    assert t.outcome is EndResult.UNKNOWN
    assert not t.dirty
    assert t.doc is doc
    assert [h.run for h in t.doc.holders] == [run]


def test_end_with_a_wrong_lease_token_is_refused() -> None:
    """End of a live run with another lease token raises LeaseMismatch; the run keeps its slot."""
    doc, run = hold(new_doc(), SEED, cmd("op-1"), T0)
    before = doc

    with pytest.raises(LeaseMismatch) as caught:
        end(doc, SEED, "op-1", "not-the-token", T0 + 1)

    assert (caught.value.guard, caught.value.operation_id) == ("g", "op-1")
    assert doc == before
    assert [h.run for h in doc.holders] == [run]
    assert rejected(begin(doc, SEED, cmd("op-2", "fp-b"), T0 + 1)).reason is (
        RejectionReason.IN_FLIGHT
    )


@pytest.mark.parametrize(
    "token",
    [pytest.param("", id="no-token"), pytest.param("wrong", id="wrong-token")],
)
def test_force_end_frees_the_slot_without_the_token(token: str) -> None:
    """An admin's forced End frees the slot whatever the token, with reason FORCED."""
    doc, run = hold(new_doc(), SEED, cmd("op-1"), T0)

    t = end(doc, SEED, "op-1", token, T0 + 1, force=True)

    assert t.outcome is EndResult.ENDED
    assert [(c.kind, c.run, c.reason) for c in t.changes] == [
        (ChangeKind.RELEASED, ended(run, ReleaseReason.FORCED, T0 + 1), ReleaseReason.FORCED)
    ]
    assert t.doc.holders == ()


def test_force_end_of_a_gone_run_is_already_ended() -> None:
    """A forced End of a run that holds nothing is ALREADY_ENDED, like any End."""
    doc, _ = hold(new_doc(), SEED, cmd("op-1"), T0)
    doc = end(doc, SEED, "op-1", "tok-op-1", T0 + 1).doc

    t = end(doc, SEED, "op-1", "", T0 + 2, force=True)

    assert t.outcome is EndResult.ALREADY_ENDED
    assert not t.dirty


def test_force_end_of_a_run_never_had_is_unknown() -> None:
    """A forced End of an operation_id the guard never had is UNKNOWN and writes nothing."""
    t = end(new_doc(), SEED, "op-1", "", T0, force=True)

    assert t.outcome is EndResult.UNKNOWN
    assert not t.dirty


# --- leases ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "expired"),
    [
        pytest.param(T0 + 9.5, False, id="before-expiry"),
        pytest.param(T0 + 10.0, True, id="at-expires-at"),
        pytest.param(T0 + 500.0, True, id="long-after"),
    ],
)
def test_lease_expires_at_expires_at_and_not_before(at: float, expired: bool) -> None:
    """Settle releases a run with reason EXPIRED once ``now`` reaches its expires_at."""
    doc, run = hold(new_doc(), SEED, cmd("op-1", ttl=10), T0)
    assert run.expires_at == T0 + 10

    t = settle(doc, SEED, at)

    if expired:
        assert t.dirty
        assert t.changes == (
            Change(
                kind=ChangeKind.RELEASED,
                run=ended(run, ReleaseReason.EXPIRED, T0 + 10),
                state=GuardView(
                    guard="g",
                    capacity=1,
                    holders=(),
                    queue_length=0,
                    dedup_window=5.0,
                    max_queue=1000,
                ),
                reason=ReleaseReason.EXPIRED,
            ),
        )
        assert t.doc.holders == ()
    else:
        assert not t.dirty
        assert t.doc is doc
        assert t.changes == ()


def test_default_ttl_is_the_seed_watchdog() -> None:
    """Without a ttl a run holds for policy.max_ttl (RUN_MAX_SECS, 1800 s), then frees the slot."""
    doc, run = hold(new_doc(), SEED, cmd("op-1", "fp-a"), T0)
    assert run.expires_at == T0 + 1800.0

    still_held = begin(doc, SEED, cmd("op-2", "fp-b"), T0 + 1799.5)
    assert rejected(still_held).reason is RejectionReason.IN_FLIGHT

    t = begin(doc, SEED, cmd("op-2", "fp-b"), T0 + 1800.0)
    assert granted(t).run.operation_id == "op-2"
    assert [(c.kind, run_of(c).operation_id, c.reason) for c in t.changes] == [
        (ChangeKind.RELEASED, "op-1", ReleaseReason.EXPIRED),
        (ChangeKind.ACQUIRED, "op-2", None),
    ]


def test_default_ttl_follows_the_policy() -> None:
    """The default lease length is whatever max_ttl the guard's policy sets."""
    policy = GuardPolicy(max_ttl=30.0)

    _, run = hold(new_doc(), policy, cmd("op-1"), T0)

    assert run.expires_at == T0 + 30.0


def test_keep_alive_extends_the_lease_by_the_runs_ttl() -> None:
    """KeepAlive without a ttl renews the lease to now plus the run's original ttl."""
    doc, run = hold(new_doc(), SEED, cmd("op-1", ttl=10), T0)

    t = keep_alive(doc, SEED, "op-1", "tok-op-1", T0 + 8)

    assert t.outcome == Run(
        guard="g",
        operation_id="op-1",
        fingerprint="fp-a",
        fencing_token=run.fencing_token,
        started_at=T0,
        expires_at=T0 + 18,
    )
    assert t.dirty
    assert t.changes == ()
    assert [h.run for h in t.doc.holders] == [t.outcome]
    assert not settle(t.doc, SEED, T0 + 17.5).dirty
    assert settle(t.doc, SEED, T0 + 18).doc.holders == ()


def test_keep_alive_with_its_own_ttl() -> None:
    """KeepAlive with a ttl renews the lease to now plus that ttl."""
    doc, _ = hold(new_doc(), SEED, cmd("op-1", ttl=10), T0)

    t = keep_alive(doc, SEED, "op-1", "tok-op-1", T0 + 5, ttl=60)

    assert t.outcome.expires_at == T0 + 65
    assert t.doc.holders[0].run.expires_at == T0 + 65


def test_keep_alive_with_a_wrong_token_is_refused() -> None:
    """KeepAlive of a live run with another lease token raises LeaseMismatch."""
    doc, _ = hold(new_doc(), SEED, cmd("op-1", ttl=10), T0)

    with pytest.raises(LeaseMismatch):
        keep_alive(doc, SEED, "op-1", "wrong", T0 + 1)


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        pytest.param("expire", "expired", id="expired"),
        pytest.param("end", "ended", id="ended"),
        pytest.param("force", "forced", id="force-ended"),
        pytest.param("never", "no such run", id="never-granted"),
    ],
)
def test_keep_alive_of_a_lost_lease_says_why(how: str, reason: str) -> None:
    """KeepAlive of a run that holds no slot raises LeaseLost whose reason says what happened."""
    doc, _ = hold(new_doc(), SEED, cmd("op-1", ttl=10), T0)
    if how == "end":
        doc = end(doc, SEED, "op-1", "tok-op-1", T0 + 2).doc
    elif how == "force":
        doc = end(doc, SEED, "op-1", "", T0 + 2, force=True).doc
    elif how == "never":
        doc = new_doc()

    with pytest.raises(LeaseLost) as caught:
        keep_alive(doc, SEED, "op-1", "tok-op-1", T0 + 12)

    assert caught.value.operation_id == "op-1"
    assert caught.value.guard == "g"
    assert caught.value.reason.startswith(reason)


@pytest.mark.parametrize(
    "settled_at_expiry",
    [
        pytest.param(True, id="expiry-committed-on-time"),
        pytest.param(False, id="expiry-noticed-late"),
    ],
)
def test_lost_lease_reason_counts_from_the_expiry(settled_at_expiry: bool) -> None:
    """LeaseLost says how long ago the lease ran out, whenever the expiry was settled."""
    doc, _ = hold(new_doc(), SEED, cmd("op-1", ttl=10), T0)
    if settled_at_expiry:
        doc = settle(doc, SEED, T0 + 10).doc

    with pytest.raises(LeaseLost) as caught:
        keep_alive(doc, SEED, "op-1", "tok-op-1", T0 + 12)

    assert caught.value.reason == "expired 2.0s ago"


def test_lost_lease_reason_counts_from_the_end() -> None:
    """LeaseLost of an ended run says how long ago it ended."""
    doc, _ = hold(new_doc(), SEED, cmd("op-1", ttl=10), T0)
    doc = end(doc, SEED, "op-1", "tok-op-1", T0 + 2).doc

    with pytest.raises(LeaseLost) as caught:
        keep_alive(doc, SEED, "op-1", "tok-op-1", T0 + 5)

    assert caught.value.reason == "ended 3.0s ago"


def test_ended_runs_remembered_for_lost_leases_are_bounded() -> None:
    """A guard remembers only its latest 64 ended runs to explain lost leases."""
    doc = new_doc()
    policy = GuardPolicy(dedup_window=0.0)
    for i in range(70):
        doc, _ = hold(doc, policy, cmd(f"op-{i}"), T0 + i)
        doc = end(doc, policy, f"op-{i}", f"tok-op-{i}", T0 + i).doc

    assert len(doc.tombstones) == 64
    with pytest.raises(LeaseLost, match="no such run"):
        keep_alive(doc, policy, "op-0", "tok-op-0", T0 + 100)
    with pytest.raises(LeaseLost, match="ended"):
        keep_alive(doc, policy, "op-69", "tok-op-69", T0 + 100)


# --- fencing tokens -------------------------------------------------------------------


def test_fencing_tokens_start_at_next_fencing_and_increase_per_grant() -> None:
    """Each grant takes the guard's next fencing token; ends, expiries and refusals use none."""
    policy = GuardPolicy(capacity=2, dedup_window=0.0)
    doc = new_doc(100)
    doc, a = hold(doc, policy, cmd("a", "fp-a", ttl=5), T0)
    doc, b = hold(doc, policy, cmd("b", "fp-b"), T0)
    doc = begin(doc, policy, cmd("x", "fp-x"), T0).doc  # IN_FLIGHT
    doc = end(doc, policy, "b", "tok-b", T0 + 1).doc
    doc, c = hold(doc, policy, cmd("c", "fp-c"), T0 + 1)
    doc, d = hold(doc, policy, cmd("d", "fp-d"), T0 + 6)  # "a" expired first

    assert [a.fencing_token, b.fencing_token, c.fencing_token, d.fencing_token] == [
        100,
        101,
        102,
        103,
    ]
    assert doc.next_fencing == 104


# --- the queue ------------------------------------------------------------------------


def test_begin_with_wait_on_a_free_guard_is_granted_at_once() -> None:
    """Asking to wait does not queue when a slot is free."""
    t = begin(new_doc(), SEED, cmd("op-1", wait=30), T0)

    assert granted(t).run.operation_id == "op-1"
    assert t.doc.queue == ()


def test_begin_with_wait_on_a_full_guard_queues() -> None:
    """A waiting Begin on a full guard joins the queue with a deadline; no slot changes."""
    doc, _ = hold(new_doc(), SEED, cmd("op-1", "fp-a"), T0)

    t = begin(doc, SEED, cmd("op-2", "fp-b", wait=30), T0 + 1)

    assert queued(t) == Queued("op-2", "tok-op-2", T0 + 31)
    assert t.dirty
    assert t.changes == ()
    assert [(w.operation_id, w.deadline) for w in t.doc.queue] == [("op-2", T0 + 31)]
    assert view(t.doc, SEED).queue_length == 1


def test_end_hands_the_slot_to_the_head_of_the_queue_in_the_same_transition() -> None:
    """End grants the oldest waiter at once: RELEASED then ACQUIRED, each with its state."""
    doc, run1 = hold(new_doc(), SEED, cmd("op-1", "fp-a"), T0)
    doc = begin(doc, SEED, cmd("op-2", "fp-b", wait=30, ttl=20), T0 + 1).doc

    t = end(doc, SEED, "op-1", "tok-op-1", T0 + 4)

    run2 = Run(
        guard="g",
        operation_id="op-2",
        fingerprint="fp-b",
        fencing_token=2,
        started_at=T0 + 4,
        expires_at=T0 + 24,
    )
    assert t.outcome is EndResult.ENDED
    assert t.changes == (
        Change(
            kind=ChangeKind.RELEASED,
            run=ended(run1, ReleaseReason.ENDED, T0 + 4),
            state=GuardView(
                guard="g", capacity=1, holders=(), queue_length=1, dedup_window=5.0, max_queue=1000
            ),
            reason=ReleaseReason.ENDED,
        ),
        Change(
            kind=ChangeKind.ACQUIRED,
            run=run2,
            state=GuardView(
                guard="g",
                capacity=1,
                holders=(run2,),
                queue_length=0,
                dedup_window=5.0,
                max_queue=1000,
            ),
        ),
    )
    assert t.doc.queue == ()
    assert t.doc.holders[0].lease_token == "tok-op-2"


def test_an_expired_lease_hands_the_slot_to_the_queue() -> None:
    """Settle at a lease's expiry grants the head of the queue in the same transition."""
    doc, _ = hold(new_doc(), SEED, cmd("op-1", "fp-a", ttl=10), T0)
    doc = begin(doc, SEED, cmd("op-2", "fp-b", wait=60), T0 + 1).doc

    t = settle(doc, SEED, T0 + 10)

    assert [(c.kind, run_of(c).operation_id, c.reason) for c in t.changes] == [
        (ChangeKind.RELEASED, "op-1", ReleaseReason.EXPIRED),
        (ChangeKind.ACQUIRED, "op-2", None),
    ]
    assert ops(view(t.doc, SEED).holders) == ["op-2"]


def test_queue_is_first_in_first_out() -> None:
    """Waiters are granted in the order they arrived."""
    doc, _ = hold(new_doc(), SEED, cmd("a", "fp-a"), T0)
    for i, op in enumerate(["b", "c", "d"]):
        doc = begin(doc, SEED, cmd(op, f"fp-{op}", wait=100), T0 + 1 + i).doc

    order = []
    holder = "a"
    for i in range(3):
        t = end(doc, SEED, holder, f"tok-{holder}", T0 + 10 + i)
        doc = t.doc
        [acquired] = [c for c in t.changes if c.kind is ChangeKind.ACQUIRED]
        holder = run_of(acquired).operation_id
        order.append(holder)

    assert order == ["b", "c", "d"]
    assert doc.queue == ()


def test_capacity_two_hands_out_two_freed_slots_in_queue_order() -> None:
    """When two leases expire together the two oldest waiters take the slots, oldest first."""
    policy = GuardPolicy(capacity=2)
    doc, _ = hold(new_doc(), policy, cmd("a", "fp-a", ttl=10), T0)
    doc, _ = hold(doc, policy, cmd("b", "fp-b", ttl=10), T0)
    for op in ["c", "d", "e"]:
        doc = begin(doc, policy, cmd(op, f"fp-{op}", wait=100), T0 + 1).doc

    t = settle(doc, policy, T0 + 10)

    assert [(c.kind, run_of(c).operation_id) for c in t.changes] == [
        (ChangeKind.RELEASED, "a"),
        (ChangeKind.RELEASED, "b"),
        (ChangeKind.ACQUIRED, "c"),
        (ChangeKind.ACQUIRED, "d"),
    ]
    assert [run_of(c).fencing_token for c in t.changes[2:]] == [3, 4]
    assert [w.operation_id for w in t.doc.queue] == ["e"]


@pytest.mark.parametrize(
    "max_queue",
    [pytest.param(0, id="no-queue"), pytest.param(2, id="two-places")],
)
def test_queue_full_at_max_queue(max_queue: int) -> None:
    """A waiting Begin is QUEUE_FULL once max_queue callers wait; nothing is written."""
    policy = GuardPolicy(max_queue=max_queue)
    doc, run = hold(new_doc(), policy, cmd("a", "fp-a"), T0)
    for i in range(max_queue):
        doc = begin(doc, policy, cmd(f"w{i}", f"fp-w{i}", wait=100), T0).doc

    t = begin(doc, policy, cmd("late", "fp-late", wait=100), T0 + 1)

    assert rejected(t).reason is RejectionReason.QUEUE_FULL
    assert rejected(t).holders == (run,)
    assert not t.dirty
    assert len(t.doc.queue) == max_queue


def test_an_identical_queued_submission_is_duplicate() -> None:
    """A waiting Begin whose submission is already queued is DUPLICATE and is not queued twice."""
    doc, _ = hold(new_doc(), SEED, cmd("a", "fp-a"), T0)
    doc = begin(doc, SEED, cmd("b", "fp-b", wait=100), T0 + 1).doc

    t = begin(doc, SEED, cmd("c", "fp-b", wait=100), T0 + 20)

    rejection = rejected(t)
    assert rejection.reason is RejectionReason.DUPLICATE
    assert "queued" in rejection.message
    assert "operation_id=b" in rejection.message
    assert rejection.duplicate_of is None
    assert [w.operation_id for w in t.doc.queue] == ["b"]


@pytest.mark.parametrize(
    ("at", "dropped"),
    [
        pytest.param(T0 + 30.5, False, id="before-deadline"),
        pytest.param(T0 + 31.0, True, id="at-deadline"),
    ],
)
def test_settle_drops_a_waiter_past_its_deadline(at: float, dropped: bool) -> None:
    """A waiter leaves the queue when its wait is over, without any slot change."""
    doc, _ = hold(new_doc(), SEED, cmd("a", "fp-a"), T0)
    doc = begin(doc, SEED, cmd("b", "fp-b", wait=30), T0 + 1).doc

    t = settle(doc, SEED, at)

    assert t.changes == ()
    assert t.dirty is dropped
    assert len(t.doc.queue) == (0 if dropped else 1)


def test_cancel_wait_leaves_the_queue_with_wait_timeout() -> None:
    """cancel_wait of a waiter still queued removes it and says WAIT_TIMEOUT."""
    doc, run = hold(new_doc(), SEED, cmd("a", "fp-a"), T0)
    doc = begin(doc, SEED, cmd("b", "fp-b", wait=30), T0 + 1).doc

    t = cancel_wait(doc, SEED, "b", "tok-b", T0 + 5)

    rejection = rejected(t)
    assert rejection.reason is RejectionReason.WAIT_TIMEOUT
    assert rejection.holders == (run,)
    assert t.dirty
    assert t.doc.queue == ()


def test_cancel_wait_returns_the_grant_when_the_slot_came_first() -> None:
    """cancel_wait of a waiter that was already granted returns its grant and keeps the slot."""
    doc, _ = hold(new_doc(), SEED, cmd("a", "fp-a"), T0)
    doc = begin(doc, SEED, cmd("b", "fp-b", wait=30), T0 + 1).doc
    doc = end(doc, SEED, "a", "tok-a", T0 + 2).doc

    t = cancel_wait(doc, SEED, "b", "tok-b", T0 + 3)

    grant = granted(t)
    assert grant.run.operation_id == "b"
    assert grant.run.started_at == T0 + 2
    assert grant.lease_token == "tok-b"
    assert not t.dirty
    assert ops(view(t.doc, SEED).holders) == ["b"]


def test_cancel_wait_with_another_token_leaves_the_waiter_queued() -> None:
    """cancel_wait needs the waiter's lease token; with another one it changes nothing."""
    doc, _ = hold(new_doc(), SEED, cmd("a", "fp-a"), T0)
    doc = begin(doc, SEED, cmd("b", "fp-b", wait=30), T0 + 1).doc

    t = cancel_wait(doc, SEED, "b", "wrong", T0 + 5)

    assert rejected(t).reason is RejectionReason.WAIT_TIMEOUT
    assert not t.dirty
    assert [w.operation_id for w in t.doc.queue] == ["b"]


def test_a_waiter_is_granted_with_its_own_ttl_and_labels() -> None:
    """A waiter granted from the queue gets the ttl and labels it asked for, from the grant time."""
    doc, _ = hold(new_doc(), SEED, cmd("a", "fp-a"), T0)
    doc = begin(doc, SEED, cmd("b", "fp-b", wait=30, ttl=7, labels=(("k", "v"),)), T0 + 1).doc

    t = end(doc, SEED, "a", "tok-a", T0 + 3)

    run = run_of(t.changes[-1])
    assert (run.operation_id, run.started_at, run.expires_at, run.labels) == (
        "b",
        T0 + 3,
        T0 + 10,
        (("k", "v"),),
    )


# --- retries of the same operation ----------------------------------------------------


def test_a_repeated_begin_while_holding_replays_the_grant() -> None:
    """A retried Begin (same operation_id and submission) gets its grant back, replayed."""
    doc, run = hold(new_doc(), SEED, cmd("op-1", "fp-a"), T0)

    t = begin(doc, SEED, cmd("op-1", "fp-a", token="another-token"), T0 + 2)

    assert t.outcome == Granted(run, "tok-op-1", replayed=True)
    assert t.changes == ()
    assert not t.dirty
    assert t.doc is doc


def test_a_repeated_begin_while_queued_returns_the_same_ticket() -> None:
    """A retried waiting Begin that is still queued gets the same queue ticket, nothing written."""
    doc, _ = hold(new_doc(), SEED, cmd("a", "fp-a"), T0)
    doc = begin(doc, SEED, cmd("b", "fp-b", wait=30), T0 + 1).doc

    t = begin(doc, SEED, cmd("b", "fp-b", wait=99, token="other"), T0 + 2)

    assert queued(t) == Queued("b", "tok-b", T0 + 31)
    assert not t.dirty
    assert t.doc is doc


@pytest.mark.parametrize(
    "queued_op",
    [pytest.param(False, id="holding"), pytest.param(True, id="queued")],
)
def test_same_operation_id_with_another_submission_conflicts(queued_op: bool) -> None:
    """Reusing a live or queued operation_id for another submission raises OperationConflict."""
    doc, _ = hold(new_doc(), SEED, cmd("a", "fp-a"), T0)
    if queued_op:
        doc = begin(doc, SEED, cmd("b", "fp-b", wait=30), T0).doc
    op = "b" if queued_op else "a"

    with pytest.raises(OperationConflict) as caught:
        begin(doc, SEED, cmd(op, "fp-other", wait=30), T0 + 1)

    assert (caught.value.guard, caught.value.operation_id) == ("g", op)


# --- writes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "waits"),
    [
        pytest.param(RejectionReason.IN_FLIGHT, False, id="in-flight"),
        pytest.param(RejectionReason.DUPLICATE, True, id="duplicate"),
        pytest.param(RejectionReason.QUEUE_FULL, True, id="queue-full"),
    ],
)
def test_a_rejection_with_nothing_due_writes_nothing(reason: RejectionReason, waits: bool) -> None:
    """A refused Begin when no lease or wait is due returns the same document, not dirty."""
    policy = GuardPolicy(max_queue=0)
    doc, _ = hold(new_doc(), policy, cmd("a", "fp-a"), T0)
    fp = "fp-a" if reason is RejectionReason.DUPLICATE else "fp-b"

    t = begin(doc, policy, cmd("b", fp, wait=10 if waits else 0), T0 + 1)

    assert rejected(t).reason is reason
    assert not t.dirty
    assert t.doc is doc
    assert t.changes == ()


def test_a_rejection_still_commits_the_expiry_it_settled() -> None:
    """A refused Begin that first expired a lease is dirty and carries the RELEASED change."""
    doc, _ = hold(new_doc(), SEED, cmd("a", "fp-a", ttl=1), T0)

    t = begin(doc, SEED, cmd("b", "fp-a"), T0 + 2)

    assert rejected(t).reason is RejectionReason.DUPLICATE
    assert t.dirty
    assert [(c.kind, c.reason) for c in t.changes] == [(ChangeKind.RELEASED, ReleaseReason.EXPIRED)]
    assert t.doc.holders == ()


def test_dedup_entries_older_than_the_window_are_dropped_on_write() -> None:
    """The document keeps dedup entries only for the window, so it never grows unbounded."""
    doc, _ = hold(new_doc(), SEED, cmd("a", "fp-a"), T0)
    doc = end(doc, SEED, "a", "tok-a", T0 + 1).doc
    doc, _ = hold(doc, SEED, cmd("b", "fp-b"), T0 + 3)
    assert [a.run.fingerprint for a in doc.accepted.values()] == ["fp-a", "fp-b"]

    doc = end(doc, SEED, "b", "tok-b", T0 + 6).doc

    assert [a.run.fingerprint for a in doc.accepted.values()] == ["fp-b"]


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        pytest.param("empty", None, id="empty-guard"),
        pytest.param("holder", T0 + 10, id="lease"),
        pytest.param("waiter-first", T0 + 6, id="wait-before-lease"),
        pytest.param("lease-first", T0 + 10, id="lease-before-wait"),
    ],
)
def test_next_deadline_is_the_soonest_lease_or_wait(setup: str, expected: float | None) -> None:
    """next_deadline says when a guard next needs settling: its soonest expiry or wait deadline."""
    doc = new_doc()
    if setup != "empty":
        doc, _ = hold(doc, SEED, cmd("a", "fp-a", ttl=10), T0)
    if setup == "waiter-first":
        doc = begin(doc, SEED, cmd("b", "fp-b", wait=5), T0 + 1).doc
    if setup == "lease-first":
        doc = begin(doc, SEED, cmd("b", "fp-b", wait=50), T0 + 1).doc

    assert next_deadline(doc, SEED) == expected


def test_view_shows_runs_without_lease_tokens() -> None:
    """view gives the guard's capacity, its runs and the queue length."""
    policy = GuardPolicy(capacity=2)
    doc, a = hold(new_doc(), policy, cmd("a", "fp-a"), T0)

    assert view(doc, policy) == GuardView(
        guard="g", capacity=2, holders=(a,), queue_length=0, dedup_window=5.0, max_queue=1000
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"capacity": 0}, id="capacity-zero"),
        pytest.param({"dedup_window": -1.0}, id="negative-window"),
        pytest.param({"max_ttl": 0.0}, id="zero-max-ttl"),
        pytest.param({"max_queue": -1}, id="negative-queue"),
    ],
)
def test_policy_rejects_impossible_rules(kwargs: dict[str, Any]) -> None:
    """A GuardPolicy that cannot work raises ValueError naming the field."""
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        GuardPolicy(**kwargs)
