"""``RunGuardService`` over Connect and gRPC-Web: the gRPC servicer's handlers, bridged.

Nothing here validates a request or maps an error: each Connect method calls the
servicer's handler of the same RPC (validation, the coordinator, the conversion,
the error table of ``runguard.server.status`` and its metrics), with a small
stand-in for the grpc context whose ``abort`` raises the matching Connect error
and whose ``write`` feeds the server stream. The bridge is built from the
service's descriptor, so an RPC added to the contract and the servicer is served
over HTTP too, with no line here.

Callers are identified and authorized the same way as on the gRPC port (the
roles of ``runguard.server.auth``), by ``runguard.server.http.credentials``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, cast

import grpc
from connectrpc.codec import Codec
from connectrpc.compat import google_protobuf_binary_codec, google_protobuf_json_codec
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from google.protobuf.message import Message

from runguard.server.auth import ANONYMOUS, Principal, acting_as, audit, authorize
from runguard.server.errors import (
    FieldViolation,
    InvalidArgument,
    NotPermitted,
    RunGuardError,
    Unauthenticated,
)
from runguard.server.http.credentials import HttpCredentials
from runguard.server.servicer import SERVICE, RunGuardServicer, Undecodable
from runguard.server.status import connect_error, connect_error_of
from runguard.v1 import runguard_connect

__all__ = ["CallContext", "connect_app", "written"]

_UNKNOWN_FIELD = re.compile(r'has no field named "([^"]{1,128})"')
_BAD_VALUE = re.compile(r"^Failed to parse (\w{1,128}) field")
"""How google.protobuf's JSON parser names a field the message does not have."""

_END = object()
"""Put on a stream's queue when its handler has returned."""


class CallContext:
    """What the servicer's handlers use of ``grpc.aio.ServicerContext``, for one HTTP call."""

    writes_messages = True
    """Watch writes messages here (the codecs encode them), not gRPC's wire bytes."""

    def __init__(self, peer: str, write: Callable[[Message], Awaitable[None]] | None = None):
        self._peer = peer
        self._write = write

    def peer(self) -> str:
        return self._peer

    def done(self) -> bool:
        return False

    async def write(self, message: Message) -> None:
        if self._write is None:  # pragma: no cover - only streaming handlers write
            raise RuntimeError("write on a unary call")
        await self._write(message)

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: tuple[tuple[str, bytes], ...] = (),
    ) -> NoReturn:
        raise connect_error(code, details, tuple(trailing_metadata))


class _StrictCodec:
    """A codec whose undecodable request is refused as the gRPC port refuses it:
    INVALID_ARGUMENT naming the request's type, with a field violation (an unknown
    JSON field included)."""

    def __init__(self, inner: Codec[Any, Any]) -> None:
        self._inner = inner

    def name(self) -> str:
        return self._inner.name()

    def encode(self, message: Any) -> bytes:
        return self._inner.encode(message)

    def decode(self, data: bytes | bytearray, message_class: Any) -> Any:
        try:
            return self._inner.decode(data, message_class)
        except Exception as error:
            name = message_class.DESCRIPTOR.full_name
            violations = _json_violations(data, message_class.DESCRIPTOR, str(error))
            refusal = (
                InvalidArgument(violations)
                if violations
                else Undecodable(name, str(error).splitlines()[0] if str(error) else "").refusal()
            )
            raise connect_error_of(refusal) from None


def _json_violations(data: bytes | bytearray, descriptor: Any, error: str) -> list[FieldViolation]:
    """The fields a JSON request got wrong: every name the message has no field for, or
    else the one field whose value does not parse. Empty when it cannot tell (binary)."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict):
        known = {f.name for f in descriptor.fields} | {f.json_name for f in descriptor.fields}
        unknown = [key for key in body if key not in known]
        if unknown:
            return [
                FieldViolation(key[:128], f"is not a field of {descriptor.full_name}")
                for key in unknown
            ]
    found = _UNKNOWN_FIELD.search(error)
    if found:
        return [FieldViolation(found.group(1), f"is not a field of {descriptor.full_name}")]
    bad = _BAD_VALUE.search(error)
    if bad:
        field = _snake(bad.group(1))
        detail = error.split(": ", 1)[1] if ": " in error else error
        return [FieldViolation(field, f"does not parse: {detail.splitlines()[0][:200]}")]
    return []


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class _Bridge:
    """Runs one RPC's servicer handler for a Connect call, as the caller it comes from."""

    def __init__(
        self, servicer: RunGuardServicer, credentials: HttpCredentials, method: str
    ) -> None:
        self._handler = getattr(servicer, method)
        self._credentials = credentials
        self._method = method

    def _admit(self, request: Message, ctx: RequestContext[Any, Any]) -> tuple[Principal, str]:
        peer = f"http:{ctx.client_address or '?'}"
        principal = None
        try:
            principal = self._credentials.identify(ctx.request_headers, method=self._method)
            authorize(principal, self._method, request)
        except (Unauthenticated, NotPermitted) as error:
            self._refused(request, peer, principal, error)
            raise connect_error_of(error) from None
        return principal, peer

    def _refused(
        self, request: Message, peer: str, principal: Principal | None, error: RunGuardError
    ) -> None:
        audit(
            self._method,
            request,
            principal=principal or ANONYMOUS,
            peer=peer,
            refused=type(error).__name__,
            reason=str(error),
        )

    async def unary(self, request: Message, ctx: RequestContext[Any, Any]) -> Message:
        principal, peer = self._admit(request, ctx)
        with acting_as(principal):
            response: Message = await self._handler(request, CallContext(peer))
        return response

    async def stream(
        self, request: Message, ctx: RequestContext[Any, Any]
    ) -> AsyncIterator[Message]:
        principal, peer = self._admit(request, ctx)
        async with contextlib.aclosing(written(self._handler, request, peer, principal)) as stream:
            async for message in stream:
                yield message


async def written(
    handler: Any, request: Message, peer: str, principal: Principal
) -> AsyncGenerator[Message, None]:
    """What a streaming servicer handler writes, as it writes it.

    The handler runs in a task of its own, as ``principal``; closing the generator
    cancels it. Raises the handler's ConnectError (its ``abort``) when it ends with one.
    """
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)

    async def run() -> None:
        try:
            await handler(request, CallContext(peer, queue.put))
        finally:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(_END)

    with acting_as(principal):  # the task copies the context: the handler sees it
        task = asyncio.create_task(run(), name="runguard-http-stream")
    getter: asyncio.Future[Any] | None = None
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                item = getter.result()
            else:
                getter.cancel()
                item = queue.get_nowait() if not queue.empty() else _END
            if item is _END:
                await task  # raises the handler's ConnectError, if it ended with one
                return
            yield cast(Message, item)
    finally:
        if getter is not None:
            getter.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectError):
                await task


def _service(servicer: RunGuardServicer, credentials: HttpCredentials) -> Any:
    """An instance of the generated Connect service Protocol, one bridge per RPC."""
    methods: dict[str, Any] = {}
    for method in SERVICE.methods:
        bridge = _Bridge(servicer, credentials, method.name)
        methods[_snake(method.name)] = bridge.stream if method.server_streaming else bridge.unary
    service_class = type("RunGuardConnectService", (runguard_connect.RunGuardService,), {})
    service = service_class()
    for name, function in methods.items():
        setattr(service, name, function)
    return service


def connect_app(
    servicer: RunGuardServicer, credentials: HttpCredentials, read_max_bytes: int
) -> Any:
    """The ASGI app serving ``RunGuardService`` over Connect (JSON, binary) and gRPC-Web."""
    codecs: list[Any] = [
        _StrictCodec(google_protobuf_binary_codec()),
        _StrictCodec(google_protobuf_json_codec(ignore_unknown_fields=False)),
    ]
    return runguard_connect.RunGuardServiceASGIApplication(
        _service(servicer, credentials), codecs=codecs, read_max_bytes=read_max_bytes
    )
