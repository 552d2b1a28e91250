"""``python -m bench.codec``: what a stored guard record costs to write and read.

One realistic guard, made by the core itself: capacity 2 with both slots held
(one holder reporting progress), 32 callers queued, 200 dedup entries of runs
that ended (with tombstones), and the two changes of a hand-off. Each codec
encodes and decodes that record (etcd's value: document, changes, commit id)
and the document alone (sqlite's row):

- ``json`` — format 1, the JSON text older servers wrote (``codec_v1``);
- ``msgpack`` — format 2, what the server writes now (``codec``): msgspec's
  MessagePack straight from the core's dataclasses;
- ``structs`` — the alternative weighed for format 2: array-like msgspec
  Structs mirroring the dataclasses (smaller, no field names), converted from
  and to the core's dataclasses in Python.

Each time is the best of several timed loops, over rounds in which the codecs
take turns (microseconds per call). The ratios are json's figure over the
other's: above 1, the other is faster (or smaller). Not a test: times depend on
the machine.
"""

from __future__ import annotations

import argparse
import hashlib
import timeit
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

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
    Waiter,
    begin,
    end,
    keep_alive,
)
from runguard.server.stores import codec, codec_v1

HOLDERS, QUEUED, DEDUP = 2, 32, 200


def realistic() -> tuple[GuardDoc, tuple[Change, ...]]:
    """A guard with 2 holders, 32 queued and 200 dedup entries, and a hand-off's changes."""
    policy = GuardPolicy(capacity=HOLDERS, dedup_window=3600.0, max_queue=1000)
    doc = GuardDoc(name="render-video", next_fencing=1_764_000_000_000_000)
    now = 1_764_600_000.123456

    def command(i: int, wait: float = 0.0) -> BeginCommand:
        return BeginCommand(
            operation_id=f"op-{i:05d}-{hashlib.md5(str(i).encode()).hexdigest()[:12]}",
            fingerprint=hashlib.sha256(f"submission {i}".encode()).hexdigest(),
            lease_token=hashlib.sha256(f"token {i}".encode()).hexdigest()[:32],
            ttl=300.0,
            wait=wait,
            labels=(("team", "media"), ("user", f"u{i % 17}")),
            owner="replica-7f3a",
            principal=f"svc-{i % 5}",
        )

    for i in range(DEDUP - HOLDERS - 1):  # the holders and the granted waiter make up the rest
        cmd = command(i)
        doc = begin(doc, policy, cmd, now).doc
        now += 0.731
        doc = end(
            doc, policy, cmd.operation_id, cmd.lease_token, now, outcome=RunOutcome.SUCCEEDED
        ).doc
        now += 0.117
    held = [command(DEDUP + i) for i in range(HOLDERS)]
    for cmd in held:
        doc = begin(doc, policy, cmd, now).doc
    first = held[0]
    doc = keep_alive(
        doc,
        policy,
        first.operation_id,
        first.lease_token,
        now + 1,
        progress=RunProgress(fraction=0.42, message="encoding pass 2 of 3"),
    ).doc
    for i in range(QUEUED + 1):  # the hand-off grants the first
        doc = begin(doc, policy, command(DEDUP + HOLDERS + i, wait=600.0), now + 2 + i / 10).doc
    hand_off = end(doc, policy, first.operation_id, first.lease_token, now + 9)
    doc = hand_off.doc
    assert len(doc.holders) == HOLDERS
    assert len(doc.queue) == QUEUED
    assert len(doc.accepted) == DEDUP
    return doc, hand_off.changes


# -- the alternative: array-like Structs mirroring the dataclasses -------------------


class _Progress(msgspec.Struct, array_like=True):
    fraction: float | None
    message: str
    at: float


class _Cancel(msgspec.Struct, array_like=True):
    reason: str
    by: str
    at: float


class _Ending(msgspec.Struct, array_like=True):
    reason: ReleaseReason
    at: float
    outcome: RunOutcome | None
    result: str


class _Run(msgspec.Struct, array_like=True):
    guard: str
    operation_id: str
    fingerprint: str
    fencing_token: int
    started_at: float
    expires_at: float
    labels: tuple[tuple[str, str], ...]
    principal: str
    progress: _Progress | None
    cancel: _Cancel | None
    ending: _Ending | None


class _Holder(msgspec.Struct, array_like=True):
    run: _Run
    lease_token: str
    ttl: float
    progress_shown_at: float | None
    progress_due: float | None


class _Waiter(msgspec.Struct, array_like=True):
    operation_id: str
    fingerprint: str
    lease_token: str
    ttl: float
    labels: tuple[tuple[str, str], ...]
    enqueued_at: float
    deadline: float
    owner: str
    principal: str


class _Accepted(msgspec.Struct, array_like=True):
    run: _Run
    accepted_at: float
    kept_from: float


class _Tombstone(msgspec.Struct, array_like=True):
    operation_id: str
    reason: ReleaseReason
    at: float


class _Settings(msgspec.Struct, array_like=True):
    capacity: int
    dedup_window: float
    max_queue: int


class _Doc(msgspec.Struct, array_like=True):
    name: str
    next_fencing: int
    holders: tuple[_Holder, ...]
    queue: tuple[_Waiter, ...]
    accepted: dict[str, _Accepted]
    tombstones: tuple[_Tombstone, ...]
    settings: _Settings | None


class _View(msgspec.Struct, array_like=True):
    guard: str
    capacity: int
    holders: tuple[_Run, ...]
    queue_length: int
    dedup_window: float
    max_queue: int
    configured: bool


class _Change(msgspec.Struct, array_like=True):
    kind: ChangeKind
    run: _Run | None
    state: _View
    reason: ReleaseReason | None


class _Record(msgspec.Struct, array_like=True):
    id: str
    doc: _Doc
    changes: tuple[_Change, ...]


def _s_run(r: Run) -> _Run:
    p, c, e = r.progress, r.cancel, r.ending
    return _Run(
        r.guard,
        r.operation_id,
        r.fingerprint,
        r.fencing_token,
        r.started_at,
        r.expires_at,
        r.labels,
        r.principal,
        None if p is None else _Progress(p.fraction, p.message, p.at),
        None if c is None else _Cancel(c.reason, c.by, c.at),
        None if e is None else _Ending(e.reason, e.at, e.outcome, e.result),
    )


def _d_run(r: _Run) -> Run:
    p, c, e = r.progress, r.cancel, r.ending
    return Run(
        guard=r.guard,
        operation_id=r.operation_id,
        fingerprint=r.fingerprint,
        fencing_token=r.fencing_token,
        started_at=r.started_at,
        expires_at=r.expires_at,
        labels=r.labels,
        principal=r.principal,
        progress=None
        if p is None
        else RunProgress(fraction=p.fraction, message=p.message, at=p.at),
        cancel=None if c is None else Cancellation(reason=c.reason, by=c.by, at=c.at),
        ending=None
        if e is None
        else Ending(reason=e.reason, at=e.at, outcome=e.outcome, result=e.result),
    )


def _s_doc(d: GuardDoc) -> _Doc:
    s = d.settings
    return _Doc(
        d.name,
        d.next_fencing,
        tuple(
            _Holder(_s_run(h.run), h.lease_token, h.ttl, h.progress_shown_at, h.progress_due)
            for h in d.holders
        ),
        tuple(
            _Waiter(
                w.operation_id,
                w.fingerprint,
                w.lease_token,
                w.ttl,
                w.labels,
                w.enqueued_at,
                w.deadline,
                w.owner,
                w.principal,
            )
            for w in d.queue
        ),
        {k: _Accepted(_s_run(a.run), a.accepted_at, a.kept_from) for k, a in d.accepted.items()},
        tuple(_Tombstone(t.operation_id, t.reason, t.at) for t in d.tombstones),
        None if s is None else _Settings(s.capacity, s.dedup_window, s.max_queue),
    )


def _d_doc(d: _Doc) -> GuardDoc:
    s = d.settings
    return GuardDoc(
        name=d.name,
        next_fencing=d.next_fencing,
        holders=tuple(
            Holder(
                run=_d_run(h.run),
                lease_token=h.lease_token,
                ttl=h.ttl,
                progress_shown_at=h.progress_shown_at,
                progress_due=h.progress_due,
            )
            for h in d.holders
        ),
        queue=tuple(
            Waiter(
                operation_id=w.operation_id,
                fingerprint=w.fingerprint,
                lease_token=w.lease_token,
                ttl=w.ttl,
                labels=w.labels,
                enqueued_at=w.enqueued_at,
                deadline=w.deadline,
                owner=w.owner,
                principal=w.principal,
            )
            for w in d.queue
        ),
        accepted={
            k: Accepted(run=_d_run(a.run), accepted_at=a.accepted_at, kept_from=a.kept_from)
            for k, a in d.accepted.items()
        },
        tombstones=tuple(
            Tombstone(operation_id=t.operation_id, reason=t.reason, at=t.at) for t in d.tombstones
        ),
        settings=None
        if s is None
        else GuardSettings(capacity=s.capacity, dedup_window=s.dedup_window, max_queue=s.max_queue),
    )


def _s_change(c: Change) -> _Change:
    v = c.state
    return _Change(
        c.kind,
        None if c.run is None else _s_run(c.run),
        _View(
            v.guard,
            v.capacity,
            tuple(_s_run(r) for r in v.holders),
            v.queue_length,
            v.dedup_window,
            v.max_queue,
            v.configured,
        ),
        c.reason,
    )


def _d_change(c: _Change, revision: int) -> Change:
    v = c.state
    return Change(
        kind=c.kind,
        run=None if c.run is None else _d_run(c.run),
        state=GuardView(
            guard=v.guard,
            capacity=v.capacity,
            holders=tuple(_d_run(r) for r in v.holders),
            queue_length=v.queue_length,
            dedup_window=v.dedup_window,
            max_queue=v.max_queue,
            configured=v.configured,
        ),
        reason=c.reason,
        revision=revision,
    )


_struct_encoder = msgspec.msgpack.Encoder()
_struct_record = msgspec.msgpack.Decoder(_Record)
_struct_doc = msgspec.msgpack.Decoder(_Doc)


def structs_encode_record(doc: GuardDoc, changes: Sequence[Change], *, commit_id: str) -> bytes:
    """The record as array-like Structs."""
    return _struct_encoder.encode(
        _Record(commit_id, _s_doc(doc), tuple(_s_change(c) for c in changes))
    )


def structs_decode_record(value: bytes, revision: int) -> codec.Record:
    """The record ``structs_encode_record`` made."""
    r = _struct_record.decode(value)
    return codec.Record(
        doc=_d_doc(r.doc),
        changes=tuple(_d_change(c, revision) for c in r.changes),
        commit_id=r.id,
    )


def structs_encode_doc(doc: GuardDoc) -> bytes:
    """The document as array-like Structs."""
    return _struct_encoder.encode(_s_doc(doc))


def structs_decode_doc(value: bytes) -> GuardDoc:
    """The document ``structs_encode_doc`` made."""
    return _d_doc(_struct_doc.decode(value))


# -- measuring -------------------------------------------------------------------------


def best_us(call: Callable[[], Any], seconds: float) -> float:
    """The best time of one call, in microseconds, over about ``seconds`` of loops."""
    timer = timeit.Timer(call)
    number, took = timer.autorange()
    repeat = max(3, int(seconds / max(took, 1e-9)))
    return min(timer.repeat(repeat=repeat, number=number)) / number * 1e6


def _measure(
    name: str,
    functions: tuple[Callable[..., bytes], Callable[..., Any], Any, Any],
    doc: GuardDoc,
    changes: tuple[Change, ...],
    cid: str,
    seconds: float,
) -> dict[str, float]:
    """Check that one codec round-trips the record, then time its four calls."""
    enc_rec, dec_rec, enc_doc, dec_doc = functions
    record = enc_rec(doc, changes, commit_id=cid)
    value = enc_doc(doc)
    decoded = dec_rec(record, 9)
    got = decoded.doc if isinstance(decoded, codec.Record) else decoded[0]
    assert got == doc, name
    assert list(got.accepted) == list(doc.accepted), name
    assert dec_doc(value) == doc, name
    return {
        "bytes": len(record),
        "encode record": best_us(lambda: enc_rec(doc, changes, commit_id=cid), seconds),
        "decode record": best_us(lambda: dec_rec(record, 9), seconds),
        "encode doc": best_us(lambda: enc_doc(doc), seconds),
        "decode doc": best_us(lambda: dec_doc(value), seconds),
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Measure every codec on the realistic record and print one table."""
    parser = argparse.ArgumentParser(prog="python -m bench.codec", description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.0, help="time per figure")
    parser.add_argument("--rounds", type=int, default=3, help="turns the codecs take")
    args = parser.parse_args(argv)
    doc, changes = realistic()
    cid = "5f0c2d7e9b1a4c3d8e6f7a8b9c0d1e2f"
    codecs: dict[str, tuple[Callable[..., bytes], Callable[..., Any], Any, Any]] = {
        "json": (
            codec_v1.encode_record,
            codec_v1.decode_record,
            codec_v1.encode_doc,
            codec_v1.decode_doc,
        ),
        "msgpack": (codec.encode_record, codec.decode_record, codec.encode_doc, codec.decode_doc),
        "structs": (
            structs_encode_record,
            structs_decode_record,
            structs_encode_doc,
            structs_decode_doc,
        ),
    }
    rows: dict[str, dict[str, float]] = {}
    # Rounds taking turns, best of each: a load that comes and goes hits every codec alike.
    for _ in range(args.rounds):
        for name, functions in codecs.items():
            got = _measure(name, functions, doc, changes, cid, args.seconds / args.rounds)
            best = rows.setdefault(name, got)
            for column, figure in got.items():
                best[column] = min(best[column], figure)
    print(
        f"record: {len(doc.holders)} holders, {len(doc.queue)} queued, "
        f"{len(doc.accepted)} dedup entries, {len(doc.tombstones)} tombstones, "
        f"{len(changes)} changes"
    )
    columns = ["bytes", "encode record", "decode record", "encode doc", "decode doc"]
    print(f"{'codec':<9}" + "".join(f"{c:>15}" for c in columns))
    for name, row in rows.items():
        cells = [f"{row['bytes']:.0f} B"] + [f"{row[c]:.0f} us" for c in columns[1:]]
        print(f"{name:<9}" + "".join(f"{cell:>15}" for cell in cells))
    for name in ("msgpack", "structs"):
        ratios = [rows["json"][c] / rows[name][c] for c in columns]
        print(f"json / {name:<8}" + "".join(f"{r:>14.2f}x" for r in ratios))


if __name__ == "__main__":
    main()
