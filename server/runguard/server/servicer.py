"""The gRPC face of the coordinator: validation, proto <-> core, error mapping.

Every handler validates the whole request first (so a bad one changes
nothing), calls the coordinator, and converts the outcome. Errors leave
through one function, which uses the table in ``runguard.server.status``;
anything unexpected is logged with its traceback and returned as a bare
INTERNAL, never a stack trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import structlog
from runguard.server import convert
from runguard.server.coordinator import Coordinator
from runguard.server.errors import RunGuardError
from runguard.server.status import status_of
from runguard.server.validation import (
    parse_begin,
    parse_current,
    parse_end,
    parse_keep_alive,
    parse_watch,
)
from runguard.v1 import runguard_pb2 as pb

__all__ = ["RunGuardServicer"]

log = structlog.get_logger("runguard")

WRITE_FAILED_GRACE = 1.0
"""Seconds a Watch whose write failed waits for the call's cancellation before it
reports the failure as an internal error."""

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Context = grpc.aio.ServicerContext[Any, Any]


def _mapped(
    method: Callable[[RunGuardServicer, Req, Context], Awaitable[Resp]],
) -> Callable[[RunGuardServicer, Req, Context], Awaitable[Resp]]:
    @functools.wraps(method)
    async def handler(self: RunGuardServicer, request: Req, context: Context) -> Resp:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return await method(self, request, context)
        except RunGuardError as error:
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
        )
        return convert.begin_response(outcome)

    @_mapped
    async def End(self, request: pb.EndRequest, context: Context) -> pb.EndResponse:
        args = parse_end(request)
        result = await self._coordinator.end(
            args.guard, args.operation_id, args.lease_token, force=args.force
        )
        return convert.end_response(result)

    @_mapped
    async def KeepAlive(
        self, request: pb.KeepAliveRequest, context: Context
    ) -> pb.KeepAliveResponse:
        args = parse_keep_alive(request, self._config)
        run = await self._coordinator.keep_alive(
            args.guard, args.operation_id, args.lease_token, args.ttl
        )
        return pb.KeepAliveResponse(run=convert.run_message(run))

    @_mapped
    async def Current(self, request: pb.CurrentRequest, context: Context) -> pb.CurrentResponse:
        guard = parse_current(request)
        view, revision = await self._coordinator.current(guard)
        return pb.CurrentResponse(
            state=convert.state_message(view),
            revision=revision,
            epoch=self._coordinator.store.epoch,
        )

    @_mapped
    async def Watch(self, request: pb.WatchRequest, context: Context) -> None:
        args = parse_watch(request)
        epoch = self._coordinator.store.epoch
        stream = self._coordinator.hub.stream(args.guards, args.after_revision, args.epoch)
        # aclosing: a cancelled stream unsubscribes now, not when collected;
        # the CancelledError itself propagates (swallowing it leaks).
        async with contextlib.aclosing(stream) as events:
            async for event in events:
                message = convert.watch_response(event, epoch)
                try:
                    await context.write(message)
                except Exception:
                    # A write held by flow control fails (grpc's ExecuteBatchError)
                    # when a cancel, deadline or lost connection ends the call under
                    # it; the CancelledError follows at the next await. Let it come
                    # and propagate, rather than report the stalled reader's exit as
                    # an internal error.
                    await asyncio.sleep(WRITE_FAILED_GRACE)
                    raise
