"""The gRPC face of the coordinator: validation, proto <-> core, error mapping.

Every handler validates the whole request first (so a bad one changes
nothing), calls the coordinator, and converts the outcome. Errors leave
through one function, which uses the table in ``runguard.server.status``;
anything unexpected is logged with its traceback and returned as a bare
INTERNAL, never a stack trace. A request that does not decode (bad UTF-8 in a
string, corrupt wire format, nesting past protobuf's limit) reaches its
handler as :class:`Undecodable` and is refused INVALID_ARGUMENT naming the
request's type: :func:`add_to_server` registers the service so (grpcio itself
would answer UNKNOWN).

Who calls is decided before a handler runs (``runguard.server.auth``); the
handlers read it from :func:`current_principal`: Begin records it on the run,
Watch counts the principal's open streams, and forced Ends and wrong lease
tokens are written as ``audit`` lines.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import structlog
from google.protobuf.message import Message

from runguard.server import convert
from runguard.server.auth import Role, audit, current_principal
from runguard.server.coordinator import Coordinator
from runguard.server.core import Change, GuardPolicy, GuardSettings, GuardView
from runguard.server.errors import (
    FieldViolation,
    InvalidArgument,
    LeaseMismatch,
    RunGuardError,
    TooManyWatchers,
)
from runguard.server.hub import WatchEvent
from runguard.server.status import status_of
from runguard.server.validation import (
    page_token,
    parse_begin,
    parse_cancel,
    parse_configure,
    parse_current,
    parse_end,
    parse_get_run,
    parse_keep_alive,
    parse_list,
    parse_watch,
)
from runguard.v1 import runguard_pb2 as pb

__all__ = ["SERVICE", "RunGuardServicer", "Undecodable", "add_to_server"]

SERVICE = pb.DESCRIPTOR.services_by_name["RunGuardService"]
"""The service's descriptor: its full name and methods."""

log = structlog.get_logger("runguard")

WRITE_FAILED_GRACE = 1.0
"""Seconds a Watch whose write failed waits for the call's cancellation before it
reports the failure as an internal error."""

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Context = grpc.aio.ServicerContext[Any, Any]
Stamped = TypeVar("Stamped", pb.CurrentResponse, pb.ConfigureGuardResponse)


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A request whose bytes are not a valid message of its type."""

    message_type: str
    error: str

    def refusal(self) -> InvalidArgument:
        """The INVALID_ARGUMENT that answers it, naming the request's type."""
        reason = self.error.rpartition("': ")[2] or self.error
        return InvalidArgument(
            [FieldViolation("request", f"is not a valid {self.message_type}: {reason}")]
        )


def _decoder(message_class: type[Message]) -> Callable[[bytes], Message | Undecodable]:
    name = message_class.DESCRIPTOR.full_name

    def decode(data: bytes) -> Message | Undecodable:
        try:
            return message_class.FromString(data)
        except Exception as error:  # DecodeError, or anything else upb refuses with
            return Undecodable(name, str(error))

    return decode


def _encode(message: Message | bytes) -> bytes:
    """A response's wire bytes; bytes (a Watch change every stream shares) pass as they are."""
    return message if isinstance(message, bytes) else message.SerializeToString()


def add_to_server(servicer: RunGuardServicer, server: grpc.aio.Server) -> None:
    """Register the service as the generated code does, but with decoders that never raise,
    and a serializer that sends an already serialised response as it is."""
    handlers = {}
    for method in SERVICE.methods:
        request_class = getattr(pb, method.input_type.name)
        response_class = getattr(pb, method.output_type.name)
        make = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        encode = _encode if method.server_streaming else response_class.SerializeToString
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=_decoder(request_class),
            response_serializer=encode,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),)
    )
    server.add_registered_method_handlers(SERVICE.full_name, handlers)  # type: ignore[attr-defined]  # grpc-stubs predate it


def _audit(method: str, request: object, context: Context, **what: Any) -> None:
    """An ``audit`` line for the calling principal, from the call's peer."""
    audit(method, request, principal=current_principal(), peer=context.peer(), **what)


def _mapped(
    method: Callable[[RunGuardServicer, Req, Context], Awaitable[Resp]],
) -> Callable[[RunGuardServicer, Req, Context], Awaitable[Resp]]:
    @functools.wraps(method)
    async def handler(self: RunGuardServicer, request: Req, context: Context) -> Resp:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            if isinstance(request, Undecodable):
                raise request.refusal()
            return await method(self, request, context)
        except RunGuardError as error:
            if isinstance(error, LeaseMismatch | TooManyWatchers):
                _audit(
                    method.__name__,
                    request,
                    context,
                    refused=type(error).__name__,
                    reason=str(error),
                )
            code, message, trailers = status_of(error)
            await context.abort(code, message, trailers)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception:
            if context.done():
                raise
            log.exception("internal_error", method=method.__name__)
            code = grpc.StatusCode.INTERNAL
            await context.abort(code, "internal error; see the server log")
        finally:
            self.metrics.rpc_seconds.labels(method.__name__, code.name).observe(
                time.perf_counter() - started
            )
        raise AssertionError("context.abort returned")  # pragma: no cover

    return handler


class RunGuardServicer:
    """``runguard.v1.RunGuardService`` on a coordinator."""

    def __init__(self, coordinator: Coordinator) -> None:
        self._coordinator = coordinator
        self._config = coordinator.config
        self.metrics = coordinator.metrics
        self._watching: Counter[str] = Counter()
        """Open Watch streams per authenticated principal."""

    def _stamped(self, response: type[Stamped], view: GuardView, revision: int) -> Stamped:
        """A response carrying one guard's state as of ``revision``, and the store's epoch."""
        return response(
            state=convert.state_message(view),
            revision=revision,
            epoch=self._coordinator.store.epoch,
        )

    @_mapped
    async def Begin(self, request: pb.BeginRequest, context: Context) -> pb.BeginResponse:
        args = parse_begin(request, self._config)
        outcome = await self._coordinator.begin(
            args.guard,
            operation_id=args.operation_id or uuid.uuid4().hex,
            fingerprint=args.fingerprint,
            ttl=args.ttl,
            wait=args.wait,
            labels=args.labels,
            principal=current_principal().name,
            resume_only=args.resume_only,
        )
        return convert.begin_response(outcome)

    @_mapped
    async def End(self, request: pb.EndRequest, context: Context) -> pb.EndResponse:
        args = parse_end(request)
        result, run = await self._coordinator.end_run(
            args.guard,
            args.operation_id,
            args.lease_token,
            force=args.force,
            outcome=args.outcome,
            result=args.result,
        )
        if args.force:
            _audit("End", request, context, action="force", result=result.value)
        return convert.end_response(result, run)

    @_mapped
    async def KeepAlive(
        self, request: pb.KeepAliveRequest, context: Context
    ) -> pb.KeepAliveResponse:
        args = parse_keep_alive(request, self._config)
        run = await self._coordinator.keep_alive(
            args.guard, args.operation_id, args.lease_token, args.ttl, args.progress
        )
        return pb.KeepAliveResponse(
            run=convert.run_message(run), cancel_requested=run.cancel is not None
        )

    @_mapped
    async def Cancel(self, request: pb.CancelRequest, context: Context) -> pb.CancelResponse:
        args = parse_cancel(request)
        principal = current_principal()
        result, run = await self._coordinator.cancel(
            args.guard,
            args.operation_id,
            reason=args.reason,
            principal=principal.name,
            admin=Role.ADMIN in principal.roles,
        )
        _audit("Cancel", request, context, action="cancel", result=result.value)
        return convert.cancel_response(result, run)

    @_mapped
    async def GetRun(self, request: pb.GetRunRequest, context: Context) -> pb.GetRunResponse:
        args = parse_get_run(request)
        run = await self._coordinator.get_run(args.guard, args.operation_id)
        return pb.GetRunResponse(run=convert.run_message(run))

    @_mapped
    async def Current(self, request: pb.CurrentRequest, context: Context) -> pb.CurrentResponse:
        guard = parse_current(request)
        view, revision = await self._coordinator.current(guard)
        return self._stamped(pb.CurrentResponse, view, revision)

    @_mapped
    async def ConfigureGuard(
        self, request: pb.ConfigureGuardRequest, context: Context
    ) -> pb.ConfigureGuardResponse:
        args = parse_configure(request)

        def changed(current: GuardPolicy) -> GuardSettings | None:
            """The settings asked for, the others kept as the store has them now."""
            if args.reset:
                return None
            return GuardSettings(
                capacity=current.capacity if args.capacity is None else args.capacity,
                dedup_window=(
                    current.dedup_window if args.dedup_window is None else args.dedup_window
                ),
                max_queue=current.max_queue if args.max_queue is None else args.max_queue,
            )

        view, revision = await self._coordinator.configure(args.guard, changed)
        _audit(
            "ConfigureGuard",
            request,
            context,
            action="reset" if args.reset else "configure",
            capacity=view.capacity,
            dedup_window=view.dedup_window,
            max_queue=view.max_queue,
        )
        return self._stamped(pb.ConfigureGuardResponse, view, revision)

    @_mapped
    async def ListGuards(
        self, request: pb.ListGuardsRequest, context: Context
    ) -> pb.ListGuardsResponse:
        args = parse_list(request)
        # One more than asked tells whether another page follows.
        views, revision = await self._coordinator.list_guards(args.after, args.limit + 1)
        page = views[: args.limit]
        return pb.ListGuardsResponse(
            guards=[convert.state_message(view) for view in page],
            next_page_token=page_token(page[-1].guard) if len(views) > args.limit else "",
            revision=revision,
            epoch=self._coordinator.store.epoch,
        )

    @_mapped
    async def Watch(self, request: pb.WatchRequest, context: Context) -> None:
        # One coroutine per stream, with no generator, context manager or timer of
        # its own: with thousands of streams open, each of those costs memory.
        args = parse_watch(request)
        principal = current_principal().name
        self._watch_opened(principal)
        try:
            epoch = self._coordinator.store.epoch
            # Over gRPC a change goes out as the bytes every stream shares (the
            # method's serializer passes bytes through); the HTTP bridge wants messages.
            wire = not getattr(context, "writes_messages", False)
            with self._coordinator.hub.subscribe(
                args.guards, args.after_revision, args.epoch, peer=context.peer()
            ) as subscription:
                del args
                while True:
                    event = subscription.poll()
                    if isinstance(event, asyncio.Future):
                        # Idle: wait on the future itself (no coroutine frame held).
                        await event
                        continue
                    if event is None:
                        event = await subscription.next()
                    try:
                        if wire and type(event) is Change:
                            await context.write(convert.watch_wire(event, epoch))
                        else:
                            await _write_messages(context, event, epoch)
                    except Exception:
                        # A write held by flow control fails (grpc's ExecuteBatchError)
                        # when a cancel, deadline or lost connection ends the call under
                        # it; the CancelledError follows at the next await. Let it come
                        # and propagate, rather than report the stalled reader's exit as
                        # an internal error.
                        await asyncio.sleep(WRITE_FAILED_GRACE)
                        raise
                    # Not kept while idle: a snapshot is this stream's alone.
                    del event
        finally:
            self._watch_closed(principal)

    def _watch_opened(self, principal: str) -> None:
        """Count one more open stream of ``principal``.

        Raises:
            TooManyWatchers: it already has ``max_watchers_per_principal`` open.
        """
        if not principal:  # anonymous: authentication is off, nobody to tell apart
            return
        limit = self._config.max_watchers_per_principal
        if self._watching[principal] >= limit:
            raise TooManyWatchers(principal, limit)
        self._watching[principal] += 1

    def _watch_closed(self, principal: str) -> None:
        if principal in self._watching:
            self._watching[principal] -= 1
            if not self._watching[principal]:
                del self._watching[principal]


async def _write_messages(context: Context, event: WatchEvent, epoch: str) -> None:
    for message in convert.watch_messages(event, epoch):
        await context.write(message)
