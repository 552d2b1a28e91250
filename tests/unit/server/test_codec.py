"""The JSON codec durable stores keep guard documents and changes in."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from runguard.server.core import (
    Accepted,
    BeginCommand,
    Cancellation,
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
    RunProgress,
    Tombstone,
    Waiter,
    begin,
    cancel,
    end,
    keep_alive,
)
from runguard.server.stores.codec import (
    CodecError,
    decode_change,
    decode_doc,
    decode_record,
    encode_change,
    encode_doc,
    encode_record,
)

TEXT = st.text(max_size=12)
TIMES = st.floats(min_value=0, max_value=4e9, allow_nan=False, allow_infinity=False)
LABELS = st.lists(st.tuples(TEXT, TEXT), max_size=3).map(lambda pairs: tuple(sorted(pairs)))
RUNS = st.builds(
    Run,
    guard=TEXT,
    operation_id=TEXT,
    fingerprint=TEXT,
    fencing_token=st.integers(min_value=0, max_value=2**62),
    started_at=TIMES,
    expires_at=TIMES,
    labels=LABELS,
    progress=st.none()
    | st.builds(
        RunProgress,
        fraction=st.none() | st.floats(min_value=0, max_value=1),
        message=TEXT,
        at=TIMES,
    ),
    cancel=st.none() | st.builds(Cancellation, reason=TEXT, by=TEXT, at=TIMES),
    ending=st.none()
    | st.builds(
        Ending,
        reason=st.sampled_from(ReleaseReason),
        at=TIMES,
        outcome=st.none() | st.sampled_from(RunOutcome),
        result=TEXT,
    ),
)
WAITERS = st.builds(
    Waiter,
    operation_id=TEXT,
    fingerprint=TEXT,
    lease_token=TEXT,
    ttl=TIMES,
    labels=LABELS,
    enqueued_at=TIMES,
    deadline=TIMES,
    owner=TEXT,
)
DOCS = st.builds(
    GuardDoc,
    name=TEXT,
    next_fencing=st.integers(min_value=0, max_value=2**62),
    holders=st.lists(
        st.builds(
            Holder,
            run=RUNS,
            lease_token=TEXT,
            ttl=TIMES,
            progress_shown_at=st.none() | TIMES,
            progress_due=st.none() | TIMES,
        ),
        max_size=3,
    ).map(tuple),
    queue=st.lists(WAITERS, max_size=3).map(tuple),
    accepted=st.lists(st.builds(Accepted, run=RUNS, accepted_at=TIMES), max_size=3).map(
        lambda entries: {a.run.fingerprint: a for a in entries}
    ),
    tombstones=st.lists(
        st.builds(Tombstone, operation_id=TEXT, reason=st.sampled_from(ReleaseReason), at=TIMES),
        max_size=3,
    ).map(tuple),
)
CHANGES = st.builds(
    Change,
    kind=st.sampled_from(ChangeKind),
    run=RUNS,
    state=st.builds(
        GuardView,
        guard=TEXT,
        capacity=st.integers(min_value=1, max_value=100),
        holders=st.lists(RUNS, max_size=3).map(tuple),
        queue_length=st.integers(min_value=0, max_value=1000),
    ),
    reason=st.none() | st.sampled_from(ReleaseReason),
    revision=st.integers(min_value=0, max_value=2**62),
)


@settings(deadline=None)  # a loaded machine must not fail a pure check
@given(DOCS)
def test_every_document_round_trips_exactly(doc: GuardDoc) -> None:
    """A guard document decodes to an equal document, floats and all."""
    assert decode_doc(encode_doc(doc)) == doc


@settings(deadline=None)  # a loaded machine must not fail a pure check
@given(CHANGES)
def test_every_change_round_trips_with_the_revision_given(change: Change) -> None:
    """A change decodes equal, with the revision the store names (not one in the text)."""
    assert decode_change(encode_change(change), change.revision) == change
    assert decode_change(encode_change(change), 7).revision == 7


@settings(deadline=None)  # a loaded machine must not fail a pure check
@given(DOCS, st.lists(CHANGES, max_size=3), st.integers(min_value=1, max_value=2**62))
def test_a_record_round_trips_its_document_and_changes(
    doc: GuardDoc, changes: list[Change], revision: int
) -> None:
    """A record gives back the document and the changes, each carrying the record's revision."""
    record = decode_record(encode_record(doc, changes, commit_id="c-1"), revision)
    assert record.doc == doc
    assert record.commit_id == "c-1"
    assert list(record.changes) == [
        Change(kind=c.kind, run=c.run, state=c.state, reason=c.reason, revision=revision)
        for c in changes
    ]


def test_documents_made_by_the_core_round_trip() -> None:
    """A guard with a holder, a queue, dedup entries and tombstones survives the codec."""
    policy = GuardPolicy(capacity=1, max_queue=5)
    doc = GuardDoc(name="g", next_fencing=1_700_000_000_000_000)
    steps = [
        lambda d: begin(
            d,
            policy,
            BeginCommand(
                operation_id="a", fingerprint="f1", lease_token="t1", labels=(("k", "v"),)
            ),
            1.5,
        ),
        lambda d: begin(
            d,
            policy,
            BeginCommand(operation_id="b", fingerprint="f2", lease_token="t2", wait=30, owner="r1"),
            2.25,
        ),
        lambda d: keep_alive(d, policy, "a", "t1", 2.5, progress=RunProgress(fraction=0.5)),
        lambda d: keep_alive(d, policy, "a", "t1", 2.75, progress=RunProgress(message="m")),
        lambda d: cancel(d, policy, "a", 2.875, reason="stop", by="alice", admin=True),
        lambda d: end(d, policy, "a", "t1", 3.125, outcome=RunOutcome.CANCELLED, result='{"n":1}'),
    ]
    for step in steps:
        transition = step(doc)
        doc = transition.doc
        assert decode_doc(encode_doc(doc)) == doc
        for change in transition.changes:
            assert decode_change(encode_change(change), 0) == change
    assert doc.tombstones
    assert doc.accepted
    kept = doc.accepted["f1"].run
    assert kept.ending == Ending(
        reason=ReleaseReason.ENDED, at=3.125, outcome=RunOutcome.CANCELLED, result='{"n":1}'
    )
    assert kept.cancel == Cancellation(reason="stop", by="alice", at=2.875)
    assert kept.progress == RunProgress(message="m", at=2.75)


def test_a_document_written_before_waiters_had_owners_reads_with_no_owner() -> None:
    """A queue entry without ``owner`` (an older server's) decodes with owner ""."""
    waiter = Waiter(
        operation_id="w",
        fingerprint="f",
        lease_token="t",
        ttl=1.0,
        labels=(),
        enqueued_at=1.0,
        deadline=2.0,
        owner="r",
    )
    data = json.loads(encode_doc(GuardDoc(name="g", next_fencing=1, queue=(waiter,))))
    del data["queue"][0]["owner"]
    assert decode_doc(json.dumps(data)).queue[0].owner == ""


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"[]", id="list"),
        pytest.param(b'{"name": "g"}', id="missing-field"),
        pytest.param(b'{"format": 99, "name": "g", "next_fencing": 1}', id="newer-format"),
        pytest.param(b'{"format": 1, "name": "g", "next_fencing": "x"}', id="bad-number"),
    ],
)
def test_text_that_is_not_a_document_raises_codec_error(text: bytes) -> None:
    """Anything but a document raises CodecError (a ValueError), never something else."""
    with pytest.raises(CodecError):
        decode_doc(text)
    with pytest.raises(CodecError):
        decode_record(text, 1)


def test_non_finite_times_are_refused_when_encoding() -> None:
    """JSON has no NaN or infinity, so a document holding one is refused, not mangled."""
    waiter = Waiter(
        operation_id="w",
        fingerprint="f",
        lease_token="t",
        ttl=1.0,
        labels=(),
        enqueued_at=1.0,
        deadline=float("inf"),
    )
    with pytest.raises(ValueError, match="JSON"):
        encode_doc(GuardDoc(name="g", next_fencing=1, queue=(waiter,)))
