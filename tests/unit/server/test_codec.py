"""The codec durable stores keep guard documents, changes and records in (formats 1 and 2)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import msgspec
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
    GuardSettings,
    GuardView,
    Holder,
    ReleaseReason,
    Run,
    RunOutcome,
    RunProgress,
    Tombstone,
    Transition,
    Waiter,
    begin,
    cancel,
    end,
    keep_alive,
)
from runguard.server.stores import codec_v1
from runguard.server.stores.codec import (
    FORMAT,
    MAGIC,
    CodecError,
    decode_change,
    decode_doc,
    decode_record,
    decode_settings,
    encode_change,
    encode_doc,
    encode_record,
    encode_settings,
    record_commit_id,
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
    principal=TEXT,
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
    principal=TEXT,
)
SETTINGS = st.builds(
    GuardSettings,
    capacity=st.integers(min_value=1, max_value=65_535),
    dedup_window=TIMES,
    max_queue=st.integers(min_value=0, max_value=10_000),
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
    # Insertion order is the dedup entries' age order: the strategies shuffle it freely.
    accepted=st.lists(
        st.builds(Accepted, run=RUNS, accepted_at=TIMES, kept_from=TIMES), max_size=4
    ).map(lambda entries: {a.run.fingerprint: a for a in entries}),
    tombstones=st.lists(
        st.builds(Tombstone, operation_id=TEXT, reason=st.sampled_from(ReleaseReason), at=TIMES),
        max_size=3,
    ).map(tuple),
    settings=st.none() | SETTINGS,
)
CHANGES = st.builds(
    Change,
    kind=st.sampled_from(ChangeKind),
    run=st.none() | RUNS,
    state=st.builds(
        GuardView,
        guard=TEXT,
        capacity=st.integers(min_value=1, max_value=100),
        holders=st.lists(RUNS, max_size=3).map(tuple),
        queue_length=st.integers(min_value=0, max_value=1000),
        dedup_window=TIMES,
        max_queue=st.integers(min_value=0, max_value=10_000),
        configured=st.booleans(),
    ),
    reason=st.none() | st.sampled_from(ReleaseReason),
    revision=st.integers(min_value=0, max_value=2**62),
)


OLD_RECORD = (
    b'{"id":"c-1","doc":{"settings":null,"format":1,"name":"g","next_fencing":8,"holders":[{"run":'
    b'{"guard":"g","op":"a","fp":"f1","fence":7,"start":1.5,"exp":1801.5,"labels":[["k","v"]],'
    b'"who":"alice"},"token":"t1","ttl":1800.0}],"queue":[{"op":"b","fp":"f2","token":"t2",'
    b'"ttl":1800.0,"labels":[],"at":2.25,"deadline":32.25,"owner":"r1","who":""}],"accepted":'
    b'[{"run":{"guard":"g","op":"a","fp":"f1","fence":7,"start":1.5,"exp":1801.5,"labels":'
    b'[["k","v"]],"who":"alice"},"at":1.5,"kept":0.0}],"tombstones":[]},"changes":[{"kind":'
    b'"acquired","run":{"guard":"g","op":"a","fp":"f1","fence":7,"start":1.5,"exp":1801.5,'
    b'"labels":[["k","v"]],"who":"alice"},"state":{"guard":"g","capacity":1,"holders":[{"guard":'
    b'"g","op":"a","fp":"f1","fence":7,"start":1.5,"exp":1801.5,"labels":[["k","v"]],"who":'
    b'"alice"}],"queue_length":0,"dedup_window":5.0,"max_queue":5,"configured":false},'
    b'"reason":null}]}'
)
"""A record as a server of format 1 wrote it to etcd (two Begins: one granted, one queued)."""

OLD_RUN = Run(
    guard="g",
    operation_id="a",
    fingerprint="f1",
    fencing_token=7,
    started_at=1.5,
    expires_at=1801.5,
    labels=(("k", "v"),),
    principal="alice",
)

OLD_WAITER = Waiter(
    operation_id="b",
    fingerprint="f2",
    lease_token="t2",
    ttl=1800.0,
    labels=(),
    enqueued_at=2.25,
    deadline=32.25,
    owner="r1",
)
"""The queued Begin of OLD_RECORD."""

STORED_FIELDS: dict[type, tuple[str, ...]] = {
    GuardDoc: ("name", "next_fencing", "holders", "queue", "accepted", "tombstones", "settings"),
    Holder: ("run", "lease_token", "ttl", "progress_shown_at", "progress_due"),
    Waiter: (
        "operation_id",
        "fingerprint",
        "lease_token",
        "ttl",
        "labels",
        "enqueued_at",
        "deadline",
        "owner",
        "principal",
    ),
    Run: (
        "guard",
        "operation_id",
        "fingerprint",
        "fencing_token",
        "started_at",
        "expires_at",
        "labels",
        "principal",
        "progress",
        "cancel",
        "ending",
    ),
    RunProgress: ("fraction", "message", "at"),
    Cancellation: ("reason", "by", "at"),
    Ending: ("reason", "at", "outcome", "result"),
    Accepted: ("run", "accepted_at", "kept_from"),
    Tombstone: ("operation_id", "reason", "at"),
    GuardSettings: ("capacity", "dedup_window", "max_queue"),
    Change: ("kind", "run", "state", "reason", "revision"),
    GuardView: (
        "guard",
        "capacity",
        "holders",
        "queue_length",
        "dedup_window",
        "max_queue",
        "configured",
    ),
}
"""The field names format 2 stores, per core class: its values' keys."""


def _body(value: bytes) -> Any:
    """The plain MessagePack data of a format-2 document or change."""
    return msgspec.msgpack.decode(value[len(MAGIC) + 1 :])


def _rebuilt(value: bytes, data: Any) -> bytes:
    """A format-2 value with ``value``'s header and ``data`` as its body."""
    return value[: len(MAGIC) + 1] + msgspec.msgpack.encode(data)


def _same_order(a: GuardDoc, b: GuardDoc) -> bool:
    """Whether two documents' dedup entries are in the same order (== ignores a dict's)."""
    return list(a.accepted) == list(b.accepted)


@settings(deadline=None)  # a loaded machine must not fail a pure check
@given(DOCS)
def test_every_document_round_trips_exactly(doc: GuardDoc) -> None:
    """A guard document decodes to an equal document, floats, enums and entry order and all."""
    decoded = decode_doc(encode_doc(doc))
    assert decoded == doc
    assert _same_order(decoded, doc)


@settings(deadline=None)  # a loaded machine must not fail a pure check
@given(CHANGES)
def test_every_change_round_trips_with_the_revision_given(change: Change) -> None:
    """A change decodes equal, with the revision the store names (not one in the value)."""
    assert decode_change(encode_change(change), change.revision) == change
    assert decode_change(encode_change(change), 7).revision == 7


@settings(deadline=None)  # a loaded machine must not fail a pure check
@given(
    DOCS,
    st.lists(CHANGES, max_size=3),
    st.integers(min_value=1, max_value=2**62),
    st.text(max_size=40),
)
def test_a_record_round_trips_its_document_changes_and_commit_id(
    doc: GuardDoc, changes: list[Change], revision: int, commit_id: str
) -> None:
    """A record gives back the document, the changes (each carrying the record's revision)
    and the commit id, which its header also gives without decoding the rest."""
    value = encode_record(doc, changes, commit_id=commit_id)
    record = decode_record(value, revision)
    assert record.doc == doc
    assert _same_order(record.doc, doc)
    assert record.commit_id == commit_id
    assert list(record.changes) == [dataclasses.replace(c, revision=revision) for c in changes]
    assert record_commit_id(value) == commit_id


@settings(deadline=None)  # a loaded machine must not fail a pure check
@given(DOCS, st.lists(CHANGES, max_size=3), st.integers(min_value=1, max_value=2**62))
def test_values_of_format_1_still_decode_unchanged(
    doc: GuardDoc, changes: list[Change], revision: int
) -> None:
    """What an older server wrote as JSON (bytes from etcd, text from sqlite) decodes as
    before: documents, changes and records, equal field for field."""
    assert decode_doc(codec_v1.encode_doc(doc)) == doc
    assert decode_doc(codec_v1.encode_doc(doc).decode()) == doc
    for change in changes:
        assert decode_change(codec_v1.encode_change(change).decode(), revision) == (
            dataclasses.replace(change, revision=revision)
        )
    record = decode_record(codec_v1.encode_record(doc, changes, commit_id="c"), revision)
    assert (record.doc, record.commit_id) == (doc, "c")
    assert _same_order(record.doc, doc)
    assert list(record.changes) == [dataclasses.replace(c, revision=revision) for c in changes]


def test_a_record_an_older_server_wrote_reads_as_it_was_written() -> None:
    """A literal format-1 record decodes to the document and change its server had, and its
    header gives no commit id (that is inside the JSON)."""
    record = decode_record(OLD_RECORD, 12)
    assert record.commit_id == "c-1"
    assert record.doc == GuardDoc(
        name="g",
        next_fencing=8,
        holders=(Holder(run=OLD_RUN, lease_token="t1", ttl=1800.0),),
        queue=(OLD_WAITER,),
        accepted={"f1": Accepted(run=OLD_RUN, accepted_at=1.5)},
    )
    assert record.changes == (
        Change(
            kind=ChangeKind.ACQUIRED,
            run=OLD_RUN,
            state=GuardView(
                guard="g",
                capacity=1,
                holders=(OLD_RUN,),
                queue_length=0,
                dedup_window=5.0,
                max_queue=5,
            ),
            revision=12,
        ),
    )
    assert record_commit_id(OLD_RECORD) is None


def test_documents_made_by_the_core_round_trip() -> None:
    """A guard with a holder, a queue, dedup entries and tombstones survives the codec."""
    policy = GuardPolicy(capacity=1, max_queue=5)
    doc = GuardDoc(name="g", next_fencing=1_700_000_000_000_000)
    steps: list[Callable[[GuardDoc], Transition[Any]]] = [
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
    """A format-1 queue entry without ``owner`` (an older server's) decodes with owner ""."""
    data = json.loads(codec_v1.encode_doc(GuardDoc(name="g", next_fencing=1, queue=(OLD_WAITER,))))
    del data["queue"][0]["owner"]
    assert decode_doc(json.dumps(data)).queue[0].owner == ""


def test_a_format_2_value_without_a_later_field_decodes_with_its_default() -> None:
    """Fields the core gained later (a waiter's owner, a run's principal and progress, a dedup
    entry's kept_from, a document's settings, a view's configured) read as their defaults
    when a value lacks them."""
    run = dataclasses.replace(OLD_RUN, progress=RunProgress(fraction=0.5, at=3.0))
    doc = GuardDoc(
        name="g",
        next_fencing=8,
        holders=(Holder(run=run, lease_token="t1", ttl=1800.0),),
        queue=(dataclasses.replace(OLD_WAITER, principal="bob"),),
        accepted={"f1": Accepted(run=run, accepted_at=1.5, kept_from=9.0)},
        settings=GuardSettings(capacity=3),
    )
    value = encode_doc(doc)
    data = _body(value)
    for run_data in (data["holders"][0]["run"], data["accepted"]["f1"]["run"]):
        del run_data["principal"], run_data["progress"]
    del data["queue"][0]["owner"], data["queue"][0]["principal"]
    del data["accepted"]["f1"]["kept_from"], data["settings"]
    old = decode_doc(_rebuilt(value, data))
    bare = dataclasses.replace(OLD_RUN, principal="")
    assert old == dataclasses.replace(
        doc,
        holders=(Holder(run=bare, lease_token="t1", ttl=1800.0),),
        queue=(dataclasses.replace(doc.queue[0], owner="", principal=""),),
        accepted={"f1": Accepted(run=bare, accepted_at=1.5)},
        settings=None,
    )
    change = Change(
        kind=ChangeKind.CONFIGURED,
        run=None,
        state=GuardView(guard="g", capacity=2, holders=(), queue_length=0, configured=True),
    )
    changed = encode_change(change)
    data = _body(changed)
    del data["state"]["configured"], data["reason"], data["revision"]
    assert decode_change(_rebuilt(changed, data), 4) == dataclasses.replace(
        change, state=dataclasses.replace(change.state, configured=False), revision=4
    )


def test_a_format_2_value_with_a_field_this_server_does_not_know_still_decodes() -> None:
    """A field a newer server of the same format added is skipped, as format 1 skipped it."""
    doc = GuardDoc(name="g", next_fencing=1, holders=(Holder(run=OLD_RUN, lease_token="t", ttl=1),))
    value = encode_doc(doc)
    data = _body(value)
    data["later"] = {"x": 1}
    data["holders"][0]["run"]["later"] = [1.5]
    assert decode_doc(_rebuilt(value, data)) == doc


def test_every_stored_field_keeps_its_name_and_every_new_field_has_a_default() -> None:
    """Format 2 keys values by field name: renaming or dropping a stored field (or adding one
    without a default) would misread older records, so it needs a new FORMAT and this list."""
    for cls, stored in STORED_FIELDS.items():
        fields = {f.name: f for f in dataclasses.fields(cls)}
        assert set(stored) <= set(fields), f"{cls.__name__} lost a stored field"
        for name, field in fields.items():
            if name not in stored:
                assert (
                    field.default is not dataclasses.MISSING
                    or field.default_factory is not dataclasses.MISSING
                ), f"{cls.__name__}.{name} is new and has no default"


def test_infinite_times_round_trip_exactly() -> None:
    """MessagePack keeps IEEE doubles, so even an unbounded deadline comes back as it was."""
    waiter = Waiter(
        operation_id="w",
        fingerprint="f",
        lease_token="t",
        ttl=1.0,
        labels=(),
        enqueued_at=1.0,
        deadline=float("inf"),
    )
    doc = GuardDoc(name="g", next_fencing=1, queue=(waiter,))
    assert decode_doc(encode_doc(doc)) == doc


def test_settings_stay_json_text_of_format_1() -> None:
    """Store-wide settings are UTF-8 JSON (sqlite keeps them as text) and round-trip."""
    value = GuardSettings(capacity=4, dedup_window=2.5, max_queue=9)
    text = encode_settings(value).decode()
    assert json.loads(text) == {"capacity": 4, "dedup_window": 2.5, "max_queue": 9}
    assert decode_settings(text) == value


def _v2(data: Any) -> bytes:
    return MAGIC + bytes([FORMAT]) + msgspec.msgpack.encode(data)


GOOD = encode_doc(GuardDoc(name="g", next_fencing=1))


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"\x00\xff\x10garbage", id="garbage"),
        pytest.param(b"[]", id="list"),
        pytest.param(b'{"name": "g"}', id="missing-field"),
        pytest.param(b'{"format": 99, "name": "g", "next_fencing": 1}', id="newer-json-format"),
        pytest.param(b'{"format": 1, "name": "g", "next_fencing": "x"}', id="bad-number"),
        pytest.param(MAGIC, id="header-cut-short"),
        pytest.param(MAGIC + b"\x01{}", id="format-1-with-a-header"),
        pytest.param(GOOD[:-3], id="truncated"),
        pytest.param(GOOD + b"\x00", id="trailing-bytes"),
        pytest.param(_v2({"name": 1, "next_fencing": 1}), id="wrong-type"),
        pytest.param(_v2({"name": "g"}), id="v2-missing-field"),
        pytest.param(_v2([1, 2, 3]), id="v2-list"),
        pytest.param(
            _v2({"name": "g", "next_fencing": 1, "settings": {"capacity": 0}}), id="bad-capacity"
        ),
        pytest.param(
            _v2(
                {
                    "name": "g",
                    "next_fencing": 1,
                    "tombstones": [{"operation_id": "a", "reason": "vanished", "at": 1.0}],
                }
            ),
            id="bad-enum",
        ),
    ],
)
def test_a_value_that_is_not_a_document_raises_codec_error(text: bytes) -> None:
    """Anything but a document raises CodecError (a ValueError) with one short sentence that
    names no library, never something else."""
    for decode in (decode_doc, lambda t: decode_change(t, 1)):
        with pytest.raises(CodecError) as caught:
            decode(text)
        message = str(caught.value)
        assert "\n" not in message
        assert len(message) < 200
        assert "msgspec" not in message.lower()
    with pytest.raises(CodecError):
        decode_record(text, 1)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        pytest.param(MAGIC + bytes([FORMAT]), "cut short inside its commit id", id="no-id"),
        pytest.param(MAGIC + bytes([FORMAT, 9]) + b"abc", "cut short inside", id="id-cut-short"),
        pytest.param(MAGIC + bytes([FORMAT, 2]) + b"\xff\xfe", "not UTF-8", id="id-not-utf8"),
        pytest.param(MAGIC + bytes([FORMAT, 1]) + b"x\x92", "truncated", id="body-truncated"),
    ],
)
def test_a_broken_record_raises_codec_error_saying_what_is_wrong(value: bytes, why: str) -> None:
    """A record whose commit id or body is broken is refused, saying which."""
    with pytest.raises(CodecError, match=why):
        decode_record(value, 1)


def test_every_cut_of_a_record_is_refused() -> None:
    """A record cut anywhere (as a short read would leave it) raises CodecError."""
    value = encode_record(
        GuardDoc(name="g", next_fencing=1, holders=(Holder(run=OLD_RUN, lease_token="t", ttl=1),)),
        [],
        commit_id="c-1",
    )
    for cut in range(len(value)):
        with pytest.raises(CodecError):
            decode_record(value[:cut], 1)


@pytest.mark.parametrize("newer", [FORMAT + 1, 255])
def test_a_value_of_a_newer_format_is_refused_naming_it(newer: int) -> None:
    """A value written by a newer server (a format above ours) is refused with its format
    number, for documents, changes and records alike."""
    value = MAGIC + bytes([newer, 3]) + b"c-9" + msgspec.msgpack.encode([{}, []])
    for decode in (decode_doc, lambda t: decode_change(t, 1), lambda t: decode_record(t, 1)):
        with pytest.raises(CodecError, match=f"format {newer}, newer than"):
            decode(value)
    assert record_commit_id(value) == "c-9"  # the header layout stays, so its id is readable


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(encode_record(GuardDoc(name="g", next_fencing=1), [], commit_id="abc"), "abc"),
        pytest.param(encode_record(GuardDoc(name="g", next_fencing=1), []), "", id="no-id"),
        pytest.param(MAGIC + bytes([FORMAT, 2]) + b"id" + b"\xc1 not a body", "id", id="header"),
        pytest.param(OLD_RECORD, None, id="format-1"),
        pytest.param(b"", None, id="empty"),
        pytest.param(MAGIC + bytes([FORMAT, 9]) + b"abc", None, id="cut-short"),
        pytest.param(MAGIC + bytes([FORMAT, 2]) + b"\xff\xfe", None, id="not-utf8"),
        pytest.param(MAGIC + b"\x01\x00", None, id="format-1-with-a-header"),
    ],
)
def test_the_commit_id_is_read_from_the_header_alone(value: bytes, expected: str | None) -> None:
    """``record_commit_id`` gives a record's commit id from its header (even when the body
    would not decode), and None where the header has none."""
    assert record_commit_id(value) == expected


def test_a_commit_id_longer_than_its_length_byte_allows_is_refused() -> None:
    """A commit id of more than 255 UTF-8 bytes cannot be written (its length is one byte)."""
    doc = GuardDoc(name="g", next_fencing=1)
    assert record_commit_id(encode_record(doc, [], commit_id="x" * 255)) == "x" * 255
    with pytest.raises(CodecError, match="at most 255 bytes"):
        encode_record(doc, [], commit_id="x" * 256)
