"""``GET /v1/events``: the Watch stream as Server-Sent Events, resumable by ``EventSource``.

``?guard=a&guard=b`` picks guards (none: every guard). Each Watch message is one
event named ``snapshot``, ``change`` or ``progress`` whose data is the
``WatchResponse`` in the proto3 JSON mapping, on one line. Its ``id:`` is
``EPOCH:REVISION`` (snapshot, progress) or ``EPOCH:REVISION.N`` (the N-th change
of that revision on this stream: one commit can make several changes).

A browser's ``EventSource`` reconnects by itself and sends the last id it saw as
``Last-Event-ID`` (or give it as ``?last_event_id=``): the stream resumes after
it, replaying exactly what was missed, or starts with a ``snapshot`` whose
``resynced`` is true when the history no longer reaches back, the store restarted
empty, or the id does not parse. A reconnect is never answered with an error
status (``EventSource`` gives up for good after one): while the server is
draining or the store is down, it is answered 200 with only a ``retry:`` and
ends, so the browser tries again. Only a refused credential (401/403) or a bad
guard name (400) is an error, the same on the first request as on any other.

``progress`` events are the heartbeats (``--progress-interval``), which keep
proxies from closing a quiet stream. The handler is the servicer's ``Watch``:
the same validation, watcher limits and metrics as gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from google.protobuf import json_format

from runguard.server.auth import ANONYMOUS, Principal, audit, authorize
from runguard.server.errors import NotPermitted, Unauthenticated
from runguard.server.http.connect import written
from runguard.server.http.credentials import HttpCredentials
from runguard.server.http.respond import cookies_of, headers_of, send_error
from runguard.server.servicer import RunGuardServicer
from runguard.server.status import connect_error_of
from runguard.v1 import runguard_pb2 as pb

__all__ = ["RETRY_MS", "encode_event", "event_id", "parse_event_id", "serve_events"]

RETRY_MS = 1000
"""Milliseconds the browser waits before it reconnects (sent as ``retry:``)."""

_ID = re.compile(r"([A-Za-z0-9_-]{1,128}):([0-9]{1,19})(?:\.([0-9]{1,9}))?")

ASGIReceive = Callable[[], Awaitable[dict[str, Any]]]
ASGISend = Callable[[dict[str, Any]], Awaitable[None]]


def event_id(epoch: str, revision: int, index: int | None = None) -> str:
    """The ``id:`` of an event."""
    return f"{epoch}:{revision}" if index is None else f"{epoch}:{revision}.{index}"


def parse_event_id(text: str) -> tuple[str, int, int | None]:
    """(epoch, revision, index of the change within it) of an id; one that does not
    parse gives an epoch no store has, so the stream resyncs."""
    match = _ID.fullmatch(text.strip())
    if match is None:
        return "unparsed-event-id", 0, None
    index = None if match.group(3) is None else int(match.group(3))
    return match.group(1), int(match.group(2)), index


def encode_event(message: pb.WatchResponse, index: int | None) -> bytes:
    """One Watch message as an SSE event; ``index``: which change of its revision it is."""
    kind = message.WhichOneof("event") or "progress"
    revision = getattr(message, kind).revision
    data = json.dumps(json_format.MessageToDict(message), separators=(",", ":"))
    if kind == "snapshot" and message.snapshot.more:
        # A part of a snapshot has no id: a reconnect in the middle of one resumes from
        # before it (and gets it whole again), never from a half-sent snapshot.
        return f"event: {kind}\ndata: {data}\n\n".encode()
    return (
        f"id: {event_id(message.epoch, revision, index)}\nevent: {kind}\ndata: {data}\n\n".encode()
    )


class _Resume:
    """Which replayed changes a resume from ``EPOCH:REVISION.N`` has already seen."""

    def __init__(self, last: str | None) -> None:
        self.epoch, self.after, self.skip_through = "", 0, -1
        self.revision = 0
        if last is None or not last.strip():
            return
        epoch, revision, index = parse_event_id(last)
        self.epoch = epoch
        if index is None:
            self.after = revision
        else:  # mid-commit: replay the commit, skipping the changes already shown
            self.after, self.revision, self.skip_through = max(revision - 1, 0), revision, index

    def request(self, guards: list[str]) -> pb.WatchRequest:
        return pb.WatchRequest(guards=guards, after_revision=self.after, epoch=self.epoch)


class _Numbering:
    """Numbers the changes of each revision on one stream, and drops the ones a resume saw."""

    def __init__(self, resume: _Resume) -> None:
        self._resume = resume
        self._revision = -1
        self._index = -1

    def index(self, message: pb.WatchResponse) -> int | None:
        """The change's index in its revision; None for other events; -1 to drop it."""
        if message.WhichOneof("event") != "change":
            self._resume.skip_through = -1  # a snapshot replaces everything before it
            return None
        revision = message.change.revision
        self._index = self._index + 1 if revision == self._revision else 0
        self._revision = revision
        if revision == self._resume.revision and self._index <= self._resume.skip_through:
            return -1
        return self._index


async def serve_events(
    scope: dict[str, Any],
    receive: ASGIReceive,
    send: ASGISend,
    *,
    servicer: RunGuardServicer,
    credentials: HttpCredentials,
    extra_headers: list[tuple[bytes, bytes]],
) -> None:
    """Answer one ``GET /v1/events``."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    headers = headers_of(scope)
    last = headers.get("last-event-id", (query.get("last_event_id") or [None])[-1])
    resume = _Resume(last)
    request = resume.request(query.get("guard", []))
    peer = f"http:{(scope.get('client') or ('?', 0))[0]}"
    principal: Principal | None = None
    try:
        principal = credentials.watch_principal(
            headers, cookies_of(headers), (query.get("watch_token") or [None])[-1]
        )
        authorize(principal, "Watch", request)
    except (Unauthenticated, NotPermitted) as error:
        audit(
            "Watch",
            request,
            principal=principal or ANONYMOUS,
            peer=peer,
            refused=type(error).__name__,
            reason=str(error),
        )
        await send_error(send, connect_error_of(error), extra_headers)
        return
    await _stream(send, receive, servicer, principal, request, peer, resume, extra_headers)


async def _stream(
    send: ASGISend,
    receive: ASGIReceive,
    servicer: RunGuardServicer,
    principal: Principal,
    request: pb.WatchRequest,
    peer: str,
    resume: _Resume,
    extra_headers: list[tuple[bytes, bytes]],
) -> None:
    numbering = _Numbering(resume)
    started = False
    disconnected = asyncio.create_task(_disconnect(receive), name="runguard-sse-disconnect")
    stream = written(servicer.Watch, request, peer, principal)
    try:
        async with contextlib.aclosing(stream):
            while True:
                following = asyncio.ensure_future(anext(stream))
                await asyncio.wait({following, disconnected}, return_when=asyncio.FIRST_COMPLETED)
                if not following.done():  # the client went away
                    following.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await following
                    return
                try:
                    message = following.result()
                except (StopAsyncIteration, ConnectError) as ended:
                    error = ended if isinstance(ended, ConnectError) else None
                    if not started:
                        await _refuse(send, error, extra_headers)
                    else:
                        await send({"type": "http.response.body", "body": b"", "more_body": False})
                    return
                if not started:
                    await _start(send, extra_headers)
                    started = True
                index = numbering.index(message)  # type: ignore[arg-type]
                if index != -1:
                    body = encode_event(message, index)  # type: ignore[arg-type]
                    await send({"type": "http.response.body", "body": body, "more_body": True})
    finally:
        disconnected.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await disconnected


async def _start(send: ASGISend, extra_headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-store"),
                # nginx and its kind buffer responses unless told not to.
                (b"x-accel-buffering", b"no"),
                *extra_headers,
            ],
        }
    )
    await send(
        {"type": "http.response.body", "body": f"retry: {RETRY_MS}\n\n".encode(), "more_body": True}
    )


async def _refuse(
    send: ASGISend, error: ConnectError | None, extra_headers: list[tuple[bytes, bytes]]
) -> None:
    """End a stream that failed before its first event.

    UNAVAILABLE (draining, store down) is a 200 with only ``retry:``, so
    ``EventSource`` tries again instead of giving up.
    """
    if error is None or error.code is Code.UNAVAILABLE:
        await _start(send, extra_headers)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    await send_error(send, error, extra_headers)


async def _disconnect(receive: ASGIReceive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
