"""The bytes durable stores keep: guard documents, changes, records.

Format 2 (what this server writes) is MessagePack, made and read by msgspec
straight from the core's dataclasses: each object a map of its field names to
their values, enums by value, labels as pairs, the dedup entries as a map in
their order. Floats are IEEE doubles, so times round-trip exactly. A field
added to the core later must have a default; an older value that lacks it
decodes with that default, and one that has a field this server does not know
decodes without it.

Every format-2 value starts with a header: ``MAGIC`` and the format number
(one byte). A record (etcd's value: a document with the changes of the commit
that wrote it) then holds its commit id (a length byte and the id's UTF-8),
so ``record_commit_id`` reads it without decoding the rest; every later
format keeps that header. A value without the header is format 1, the JSON
text older servers wrote (``codec_v1``): it decodes as it always did, and the
store rewrites it in format 2 the next time it writes that guard. A value of
a format newer than ``FORMAT`` is refused with a ``CodecError`` naming it.

Store-wide settings stay JSON (format 1): written once per store, and sqlite
keeps them as text.

Pure functions: no I/O. A value that is not what was asked for raises
``CodecError`` (a ``ValueError``) with a short sentence; stores turn it into
their own error at their edge.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import msgspec

from runguard.server.core import Accepted, Change, GuardDoc, GuardSettings
from runguard.server.stores import codec_v1

__all__ = [
    "FORMAT",
    "MAGIC",
    "CodecError",
    "Record",
    "decode_change",
    "decode_doc",
    "decode_record",
    "decode_settings",
    "encode_change",
    "encode_doc",
    "encode_record",
    "encode_settings",
    "record_commit_id",
]

FORMAT = 2
"""The newest format this codec reads, and the one it writes."""

MAGIC = b"\xc1RG"
"""How every value of format 2 or later starts. 0xC1 is a byte no UTF-8 text
(so no JSON text of format 1) and no MessagePack value begins with."""

_HEADER = MAGIC + bytes([FORMAT])
_ID_MAX = 255
"""The longest commit id a record holds, in UTF-8 bytes (its length is one byte)."""

T = TypeVar("T")


class CodecError(ValueError):
    """A value is not a guard document, change or record this codec can read."""


@dataclass(frozen=True, slots=True)
class Record:
    """A guard document with the changes of the commit that wrote it.

    ``commit_id`` is the writer's unique name for that commit, so a writer
    that lost the answer to its write can tell by reading whether it landed.
    """

    doc: GuardDoc
    changes: tuple[Change, ...]
    commit_id: str = ""


_encoder = msgspec.msgpack.Encoder()
_doc_decoder = msgspec.msgpack.Decoder(GuardDoc)
_change_decoder = msgspec.msgpack.Decoder(Change)
_body_decoder = msgspec.msgpack.Decoder(tuple[GuardDoc, tuple[Change, ...]])


# -- the header ----------------------------------------------------------------


def _after_header(value: bytes | str) -> memoryview | None:
    """What follows the header of a value of format 2 (None: format 1, JSON text).

    Raises:
        CodecError: the header is cut short, or names a format not 2.
    """
    if isinstance(value, str) or not value.startswith(MAGIC):
        return None
    if len(value) <= len(MAGIC):
        raise CodecError("the value is cut short inside its header")
    found = value[len(MAGIC)]
    if found > FORMAT:
        raise CodecError(
            f"the value is of format {found}, newer than this server reads (formats 1 to "
            f"{FORMAT}): it was written by a newer RunGuard, so run that version"
        )
    if found < 2:
        raise CodecError(f"the value claims format {found}, which has no header")
    return memoryview(value)[len(_HEADER) :]


_ENTRIES_KEPT = 100_000
"""Dedup entries whose encoding is kept for the next write of their document."""

_entries: dict[int, tuple[Accepted, msgspec.Raw]] = {}
"""Encoded dedup entries by the identity of the entry: a transition shares every entry
it does not change with the document before it, so each is encoded once, not on every
write of its guard."""

_DOC_FIELDS = tuple(f.name for f in dataclasses.fields(GuardDoc))


def _entry(entry: Accepted) -> msgspec.Raw:
    kept = _entries.get(id(entry))
    if kept is not None and kept[0] is entry:
        return kept[1]
    if len(_entries) >= _ENTRIES_KEPT:
        _entries.clear()
    raw = msgspec.Raw(_encoder.encode(entry))
    _entries[id(entry)] = (entry, raw)
    return raw


def _doc(doc: GuardDoc) -> dict[str, object]:
    """``doc`` as the map msgspec writes for it, its dedup entries encoded once each."""
    fields = {name: getattr(doc, name) for name in _DOC_FIELDS}
    fields["accepted"] = {key: _entry(entry) for key, entry in doc.accepted.items()}
    return fields


def _encode(value: object, prefix: bytes) -> bytes:
    try:
        return prefix + _encoder.encode(value)
    except (msgspec.EncodeError, OverflowError, TypeError, UnicodeEncodeError) as error:
        raise CodecError(f"cannot encode the value: {error}") from error


def _decode(decoder: msgspec.msgpack.Decoder[T], body: memoryview, what: str) -> T:
    try:
        return decoder.decode(body)
    except msgspec.DecodeError as error:  # ValidationError (a wrong field) is one too
        message = str(error)
        if message[1:2].islower():  # "Expected `str`..." reads on after a colon; "JSON" keeps
            message = message[:1].lower() + message[1:]
        raise CodecError(f"not a {what}: {message}") from error


def _decode_v1(value: bytes | str, build: Callable[[bytes | str], T], what: str) -> T:
    try:
        return build(value)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise CodecError(f"not a {what} ({type(error).__name__}: {error})") from error


def _at(change: Change, revision: int) -> Change:
    # The revision is the store's, not the value's (which holds the core's 0).
    return change if change.revision == revision else dataclasses.replace(change, revision=revision)


# -- the public functions --------------------------------------------------------


def encode_doc(doc: GuardDoc) -> bytes:
    """A guard document in format 2."""
    return _encode(_doc(doc), _HEADER)


def decode_doc(text: bytes | str) -> GuardDoc:
    """The guard document ``encode_doc`` made, or one an older server wrote as JSON.

    Raises:
        CodecError: ``text`` is not such a document, or of a newer format.
    """
    body = _after_header(text)
    if body is None:
        return _decode_v1(text, codec_v1.decode_doc, "guard document")
    return _decode(_doc_decoder, body, "guard document")


def encode_settings(settings: GuardSettings) -> bytes:
    """Guard settings (the store-wide defaults) as compact UTF-8 JSON (format 1)."""
    return codec_v1.encode_settings(settings)


def decode_settings(text: bytes | str) -> GuardSettings:
    """The settings ``encode_settings`` made.

    Raises:
        CodecError: ``text`` is not such settings.
    """
    return _decode_v1(text, codec_v1.decode_settings, "guard settings")


def encode_change(change: Change) -> bytes:
    """A change in format 2 (its revision is the store's to give when it reads it back)."""
    return _encode(change, _HEADER)


def decode_change(text: bytes | str, revision: int) -> Change:
    """The change ``encode_change`` made (or an older server's JSON), carrying ``revision``.

    Raises:
        CodecError: ``text`` is not such a change, or of a newer format.
    """
    body = _after_header(text)
    if body is None:
        return _decode_v1(text, lambda t: codec_v1.decode_change(t, revision), "change")
    return _at(_decode(_change_decoder, body, "change"), revision)


def encode_record(doc: GuardDoc, changes: Sequence[Change], *, commit_id: str = "") -> bytes:
    """A guard document and the changes of the commit that wrote it, in format 2.

    Raises:
        CodecError: ``commit_id`` is longer than 255 bytes in UTF-8.
    """
    cid = commit_id.encode()
    if len(cid) > _ID_MAX:
        raise CodecError(f"a commit id has at most {_ID_MAX} bytes, got {len(cid)}")
    return _encode((_doc(doc), tuple(changes)), _HEADER + bytes([len(cid)]) + cid)


def decode_record(text: bytes | str, revision: int) -> Record:
    """The record ``encode_record`` made (or an older server's JSON); its changes carry
    ``revision``.

    Raises:
        CodecError: ``text`` is not such a record, or of a newer format.
    """
    rest = _after_header(text)
    if rest is None:
        doc, changes, commit_id = _decode_v1(
            text, lambda t: codec_v1.decode_record(t, revision), "guard record"
        )
        return Record(doc=doc, changes=changes, commit_id=commit_id)
    if not rest or len(rest) <= rest[0]:
        raise CodecError("not a guard record: it is cut short inside its commit id")
    end = 1 + rest[0]
    try:
        commit_id = str(rest[1:end], "utf-8")
    except UnicodeDecodeError as error:
        raise CodecError("not a guard record: its commit id is not UTF-8") from error
    doc, changes = _decode(_body_decoder, rest[end:], "guard record")
    return Record(doc=doc, changes=tuple(_at(c, revision) for c in changes), commit_id=commit_id)


def record_commit_id(value: bytes) -> str | None:
    """The commit id of a record of format 2 or later, read from its header alone.

    None for a record of format 1 (its id is inside the JSON: decode it) and for
    anything that is not a record; "" for a record written without an id.
    """
    start = len(_HEADER) + 1
    if not value.startswith(MAGIC) or len(value) < start or value[len(MAGIC)] < 2:
        return None
    end = start + value[start - 1]
    if len(value) < end:
        return None
    try:
        return value[start:end].decode()
    except UnicodeDecodeError:
        return None
