"""Format 1 of the stored values: one JSON text per document, change or record.

Servers before format 2 wrote these; ``codec`` still reads them (a store keeps
old records until they are next written) and still writes store-wide settings
this way (a tiny value written once, kept as text). Every object carries only
its fields' values under short, stable names; floats go through ``repr``
(Python's JSON does), so times round-trip exactly. A field added to the core
later gets a default when an older text lacks it.

Pure functions: no I/O. Decoding a text that is not such a value raises what
``json`` or the field access raised (a ``ValueError``, ``KeyError``, ``TypeError``
or ``AttributeError``); ``codec`` turns each into its ``CodecError``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from runguard.server.core import (
    Accepted,
    Cancellation,
    Change,
    ChangeKind,
    Ending,
    GuardDoc,
    GuardSettings,
    GuardView,
    Holder,
    Labels,
    ReleaseReason,
    Run,
    RunOutcome,
    RunProgress,
    Tombstone,
    Waiter,
)

__all__ = [
    "decode_change",
    "decode_doc",
    "decode_record",
    "decode_settings",
    "encode_change",
    "encode_doc",
    "encode_record",
    "encode_settings",
]

FORMAT = 1
"""The version of the layout below; a text claiming a newer one is refused."""

# -- to plain JSON values ------------------------------------------------------


def _labels(labels: Labels) -> list[list[str]]:
    return [[key, value] for key, value in labels]


def _run(run: Run) -> dict[str, Any]:
    data: dict[str, Any] = {
        "guard": run.guard,
        "op": run.operation_id,
        "fp": run.fingerprint,
        "fence": run.fencing_token,
        "start": run.started_at,
        "exp": run.expires_at,
        "labels": _labels(run.labels),
        "who": run.principal,
    }
    # Written only when set, so documents of runs without them stay as they were.
    if run.progress is not None:
        p = run.progress
        data["progress"] = {"fraction": p.fraction, "message": p.message, "at": p.at}
    if run.cancel is not None:
        c = run.cancel
        data["cancel"] = {"reason": c.reason, "by": c.by, "at": c.at}
    if run.ending is not None:
        e = run.ending
        data["ending"] = {
            "reason": e.reason.value,
            "at": e.at,
            "outcome": None if e.outcome is None else e.outcome.value,
            "result": e.result,
        }
    return data


def _holder(holder: Holder) -> dict[str, Any]:
    data: dict[str, Any] = {"run": _run(holder.run), "token": holder.lease_token, "ttl": holder.ttl}
    if holder.progress_shown_at is not None:
        data["shown"] = holder.progress_shown_at
    if holder.progress_due is not None:
        data["due"] = holder.progress_due
    return data


def _settings(settings: GuardSettings) -> dict[str, Any]:
    return {
        "capacity": settings.capacity,
        "dedup_window": settings.dedup_window,
        "max_queue": settings.max_queue,
    }


def _from_settings(data: dict[str, Any]) -> GuardSettings:
    return GuardSettings(
        capacity=int(data["capacity"]),
        dedup_window=float(data["dedup_window"]),
        max_queue=int(data["max_queue"]),
    )


def _doc(doc: GuardDoc) -> dict[str, Any]:
    return {
        "settings": None if doc.settings is None else _settings(doc.settings),
        "format": FORMAT,
        "name": doc.name,
        "next_fencing": doc.next_fencing,
        "holders": [_holder(h) for h in doc.holders],
        "queue": [
            {
                "op": w.operation_id,
                "fp": w.fingerprint,
                "token": w.lease_token,
                "ttl": w.ttl,
                "labels": _labels(w.labels),
                "at": w.enqueued_at,
                "deadline": w.deadline,
                "owner": w.owner,
                "who": w.principal,
            }
            for w in doc.queue
        ],
        "accepted": [
            {"run": _run(a.run), "at": a.accepted_at, "kept": a.kept_from}
            for a in doc.accepted.values()
        ],
        "tombstones": [
            {"op": t.operation_id, "reason": t.reason.value, "at": t.at} for t in doc.tombstones
        ],
    }


def _change(change: Change) -> dict[str, Any]:
    state = change.state
    return {
        "kind": change.kind.value,
        "run": None if change.run is None else _run(change.run),
        "state": {
            "guard": state.guard,
            "capacity": state.capacity,
            "holders": [_run(run) for run in state.holders],
            "queue_length": state.queue_length,
            "dedup_window": state.dedup_window,
            "max_queue": state.max_queue,
            "configured": state.configured,
        },
        "reason": None if change.reason is None else change.reason.value,
    }


# -- from plain JSON values ------------------------------------------------------


def _from_labels(data: Any) -> Labels:
    return tuple((str(key), str(value)) for key, value in data)


def _from_run(data: dict[str, Any]) -> Run:
    progress = data.get("progress")
    cancel = data.get("cancel")
    ending = data.get("ending")
    return Run(
        guard=data["guard"],
        operation_id=data["op"],
        fingerprint=data["fp"],
        fencing_token=int(data["fence"]),
        started_at=float(data["start"]),
        expires_at=float(data["exp"]),
        labels=_from_labels(data.get("labels", ())),
        principal=str(data.get("who", "")),
        progress=None
        if progress is None
        else RunProgress(
            fraction=None if progress["fraction"] is None else float(progress["fraction"]),
            message=str(progress["message"]),
            at=float(progress["at"]),
        ),
        cancel=None
        if cancel is None
        else Cancellation(
            reason=str(cancel["reason"]), by=str(cancel["by"]), at=float(cancel["at"])
        ),
        ending=None
        if ending is None
        else Ending(
            reason=ReleaseReason(ending["reason"]),
            at=float(ending["at"]),
            outcome=None if ending["outcome"] is None else RunOutcome(ending["outcome"]),
            result=str(ending["result"]),
        ),
    )


def _from_holder(data: dict[str, Any]) -> Holder:
    shown, due = data.get("shown"), data.get("due")
    return Holder(
        run=_from_run(data["run"]),
        lease_token=data["token"],
        ttl=float(data["ttl"]),
        progress_shown_at=None if shown is None else float(shown),
        progress_due=None if due is None else float(due),
    )


def _from_doc(data: dict[str, Any]) -> GuardDoc:
    if data.get("format", FORMAT) > FORMAT:
        raise ValueError(f"document format {data['format']} is newer than {FORMAT}")
    return GuardDoc(
        name=data["name"],
        next_fencing=int(data["next_fencing"]),
        holders=tuple(_from_holder(h) for h in data.get("holders", ())),
        queue=tuple(
            Waiter(
                operation_id=w["op"],
                fingerprint=w["fp"],
                lease_token=w["token"],
                ttl=float(w["ttl"]),
                labels=_from_labels(w.get("labels", ())),
                enqueued_at=float(w["at"]),
                deadline=float(w["deadline"]),
                owner=w.get("owner", ""),
                principal=str(w.get("who", "")),
            )
            for w in data.get("queue", ())
        ),
        accepted={
            entry.run.fingerprint: entry
            for entry in (
                Accepted(
                    run=_from_run(a["run"]),
                    accepted_at=float(a["at"]),
                    kept_from=float(a.get("kept", 0.0)),
                )
                for a in data.get("accepted", ())
            )
        },
        tombstones=tuple(
            Tombstone(operation_id=t["op"], reason=ReleaseReason(t["reason"]), at=float(t["at"]))
            for t in data.get("tombstones", ())
        ),
        settings=None if data.get("settings") is None else _from_settings(data["settings"]),
    )


def _from_change(data: dict[str, Any], revision: int) -> Change:
    state = data["state"]
    reason = data.get("reason")
    return Change(
        kind=ChangeKind(data["kind"]),
        run=None if data["run"] is None else _from_run(data["run"]),
        state=GuardView(
            guard=state["guard"],
            capacity=int(state["capacity"]),
            holders=tuple(_from_run(run) for run in state["holders"]),
            queue_length=int(state["queue_length"]),
            dedup_window=float(state.get("dedup_window", 0.0)),
            max_queue=int(state.get("max_queue", 0)),
            configured=bool(state.get("configured", False)),
        ),
        reason=None if reason is None else ReleaseReason(reason),
        revision=revision,
    )


def _dumps(value: Any) -> bytes:
    # allow_nan=False: the core never makes a non-finite time, and JSON has none.
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def encode_doc(doc: GuardDoc) -> bytes:
    """A guard document as compact UTF-8 JSON."""
    return _dumps(_doc(doc))


def decode_doc(text: bytes | str) -> GuardDoc:
    """The guard document ``encode_doc`` made."""
    return _from_doc(json.loads(text))


def encode_settings(settings: GuardSettings) -> bytes:
    """Guard settings as compact UTF-8 JSON."""
    return _dumps(_settings(settings))


def decode_settings(text: bytes | str) -> GuardSettings:
    """The settings ``encode_settings`` made."""
    return _from_settings(json.loads(text))


def encode_change(change: Change) -> bytes:
    """A change as compact UTF-8 JSON, without its revision (the store keeps that)."""
    return _dumps(_change(change))


def decode_change(text: bytes | str, revision: int) -> Change:
    """The change ``encode_change`` made, carrying ``revision``."""
    return _from_change(json.loads(text), revision)


def encode_record(doc: GuardDoc, changes: Sequence[Change], *, commit_id: str = "") -> bytes:
    """A guard document and the changes of the commit that wrote it, as one JSON text."""
    return _dumps({"id": commit_id, "doc": _doc(doc), "changes": [_change(c) for c in changes]})


def decode_record(text: bytes | str, revision: int) -> tuple[GuardDoc, tuple[Change, ...], str]:
    """The document, changes (carrying ``revision``) and commit id ``encode_record`` wrote."""

    def build(data: Any) -> tuple[GuardDoc, tuple[Change, ...], str]:
        return (
            _from_doc(data["doc"]),
            tuple(_from_change(c, revision) for c in data["changes"]),
            str(data.get("id", "")),
        )

    return build(json.loads(text))
