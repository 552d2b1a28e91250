"""Waiters record the replica they wait on; a gone replica's waiters are never promoted."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from runguard.server.core import (
    BeginCommand,
    ChangeKind,
    GuardDoc,
    GuardPolicy,
    Queued,
    begin,
    end,
    settle,
    without_waiters_of,
)
from tests.runs import run_of

REPLICAS = ["r1", "r2", "r3"]


def _queued(owners: list[str], capacity: int) -> GuardDoc:
    """A full guard (``capacity`` holders) with one waiter per entry of ``owners``, in order."""
    policy = GuardPolicy(capacity=capacity, max_queue=100)
    doc = GuardDoc(name="g", next_fencing=1)
    for n in range(capacity):
        doc = begin(
            doc,
            policy,
            BeginCommand(operation_id=f"h{n}", fingerprint=f"h{n}", lease_token=f"h{n}", ttl=10),
            0.0,
        ).doc
    for n, owner in enumerate(owners):
        step = begin(
            doc,
            policy,
            BeginCommand(
                operation_id=f"w{n}",
                fingerprint=f"w{n}",
                lease_token=f"w{n}",
                wait=100,
                owner=owner,
            ),
            1.0,
        )
        assert isinstance(step.outcome, Queued)
        doc = step.doc
    return doc


def test_a_queued_begin_records_its_owner() -> None:
    """The waiter a Begin leaves in the queue carries the command's owner."""
    doc = _queued(["r2"], 1)
    assert [(w.operation_id, w.owner) for w in doc.queue] == [("w0", "r2")]


def test_dropping_nobody_returns_the_document_itself() -> None:
    """With no waiter of a gone replica, the very same document comes back (nothing to write)."""
    doc = _queued(["r1", "", "r2"], 1)
    assert without_waiters_of(doc, {"r3"}) is doc
    assert without_waiters_of(doc, set()) is doc


@settings(deadline=None)  # a loaded machine must not fail a pure check
@given(
    owners=st.lists(st.sampled_from(["", *REPLICAS]), max_size=8),
    gone=st.sets(st.sampled_from(REPLICAS)),
    capacity=st.integers(min_value=1, max_value=3),
    freed=st.integers(min_value=0, max_value=3),
)
def test_waiters_of_gone_replicas_are_never_promoted(
    owners: list[str], gone: set[str], capacity: int, freed: int
) -> None:
    """After dropping gone replicas' waiters, freed slots go to the others in arrival order."""
    policy = GuardPolicy(capacity=capacity, max_queue=100)
    doc = without_waiters_of(_queued(owners, capacity), gone)
    assert all(w.owner not in gone for w in doc.queue)
    expected = [f"w{n}" for n, owner in enumerate(owners) if owner not in gone]
    assert [w.operation_id for w in doc.queue] == expected
    granted: list[str] = []
    for n in range(min(freed, capacity)):
        step = end(doc, policy, f"h{n}", f"h{n}", 2.0)
        doc = step.doc
        granted += [run_of(c).operation_id for c in step.changes if c.kind is ChangeKind.ACQUIRED]
    # Every lease ends at 10: the rest of the queue is promoted then, still in order.
    settled = settle(doc, policy, 10.0)
    granted += [run_of(c).operation_id for c in settled.changes if c.kind is ChangeKind.ACQUIRED]
    assert granted == expected[: len(granted)]
    assert len(settled.doc.holders) <= capacity
