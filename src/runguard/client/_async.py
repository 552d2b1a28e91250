"""The asyncio client: the same keyword arguments and methods as ``Client``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, Unpack

import grpc

from runguard.client._holding import Holding
from runguard.client._shared import (
    DEFAULT_RETRY,
    BeginOptions,
    RetryPolicy,
    WaitingBegin,
    WatchCursor,
    begin_request,
    cancel_result,
    channel_options,
    configure_request,
    end_request,
    end_result,
    grant_or_raise,
    guard_state,
    keep_alive_request,
    renew_every,
    retryable,
    run_from,
)
from runguard.client.errors import (
    Cancelled,
    LeaseLost,
    RunGuardError,
    RunNotFound,
    Unavailable,
    error_from_status,
)
from runguard.client.models import (
    CancelReply,
    EndResult,
    Grant,
    GuardState,
    Run,
    Snapshot,
    WatchEvent,
)
from runguard.contract import DEFAULT_TARGET
from runguard.v1 import runguard_pb2 as pb
from runguard.v1 import runguard_pb2_grpc

__all__ = ["AsyncClient", "AsyncWatch"]


def _error(error: grpc.aio.AioRpcError, *, tls: bool = False) -> RunGuardError:
    metadata: Any = error.trailing_metadata()  # grpc.aio.Metadata: (key, value) pairs
    trailers = [(key, value) for key, value in metadata or ()]
    return error_from_status(error.code(), error.details(), trailers, tls=tls)


class AsyncClient:
    """An asyncio RunGuard client; ``await aclose()`` (or ``async with``) when done.

    Takes the same keyword arguments as :class:`runguard.client.Client`.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float | None = 10.0,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        retry: RetryPolicy = DEFAULT_RETRY,
        options: Sequence[tuple[str, Any]] = (),
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.metadata = tuple(metadata)
        self.retry = retry
        self.tls = credentials is not None
        self._owned = channel is None
        if channel is None:
            channel = (
                grpc.aio.secure_channel(target, credentials, options=channel_options(options))
                if credentials is not None
                else grpc.aio.insecure_channel(target, options=channel_options(options))
            )
        self._channel = channel
        self._stub: Any = runguard_pb2_grpc.RunGuardServiceStub(channel)  # type: ignore[no-untyped-call]  # generated

    async def aclose(self) -> None:
        """Close the channel (if this client made it)."""
        if self._owned:
            await self._channel.close(None)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _call(self, method: str, request: Any, deadline: float | None = None) -> Any:
        return (await self._attempts(method, request, deadline))[0]

    async def _attempts(self, method: str, request: Any, deadline: float | None) -> tuple[Any, int]:
        """The reply, and how many times the request was sent to get it."""
        deadline = deadline if deadline is not None else self.timeout
        for attempt in range(self.retry.attempts):
            try:
                reply = await getattr(self._stub, method)(
                    request, timeout=deadline, metadata=self.metadata
                )
                return reply, attempt + 1
            except grpc.aio.AioRpcError as error:
                if not retryable(error.code()) or attempt + 1 == self.retry.attempts:
                    raise _error(error, tls=self.tls) from None
            await asyncio.sleep(self.retry.delay(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    async def begin(self, guard: str = "", **options: Unpack[BeginOptions]) -> Grant:
        """Take a slot of ``guard``; see ``Client.begin``."""
        request = begin_request(guard, **options)
        wait = options.get("wait")
        if not wait:
            reply, sent = await self._attempts("Begin", request, self.timeout)
            return grant_or_raise(reply, retried=sent > 1)
        plan = WaitingBegin(request, wait, self.timeout, self.retry, time.monotonic)
        while True:
            attempt, deadline = plan.next()
            try:
                reply = await self._stub.Begin(attempt, timeout=deadline, metadata=self.metadata)
            except grpc.aio.AioRpcError as error:
                code = error.code()
                pause = plan.retry(code)
                if pause is None:
                    if plan.may_have_won(code):
                        await self._give_back(plan)
                    raise _error(error, tls=self.tls) from None
                await asyncio.sleep(pause)
                continue
            return grant_or_raise(reply, retried=plan.attempt > 0)

    async def _give_back(self, plan: WaitingBegin) -> None:
        """End the run a Begin we gave up on may have been granted (best effort, once)."""
        try:
            reply = await self._stub.Begin(
                plan.resume_request(), timeout=self.timeout or 5.0, metadata=self.metadata
            )
            if reply.WhichOneof("outcome") == "granted":
                run = reply.granted.run
                await self._stub.End(
                    end_request(run.guard, run.operation_id, reply.granted.lease_token),
                    timeout=self.timeout or 5.0,
                    metadata=self.metadata,
                )
        except grpc.RpcError:
            pass  # the server is still unreachable: the run's lease ends it

    async def end(
        self,
        guard: str,
        operation_id: str,
        lease_token: str = "",
        *,
        force: bool = False,
        outcome: str | None = None,
        result: Any = None,
    ) -> EndResult:
        """Give a slot back; see ``Client.end``."""
        request = end_request(
            guard, operation_id, lease_token, force=force, outcome=outcome, result=result
        )
        return end_result(await self._call("End", request))

    async def end_grant(
        self, grant: Grant, *, outcome: str | None = None, result: Any = None
    ) -> EndResult:
        """End the run of a grant."""
        run = grant.run
        return await self.end(
            run.guard, run.operation_id, grant.lease_token, outcome=outcome, result=result
        )

    async def keep_alive(
        self,
        guard: str,
        operation_id: str,
        lease_token: str,
        *,
        ttl: float | None = None,
        fraction: float | None = None,
        message: str | None = None,
    ) -> Run:
        """Extend a lease (and report progress); see ``Client.keep_alive``."""
        request = keep_alive_request(
            guard, operation_id, lease_token, ttl=ttl, fraction=fraction, message=message
        )
        try:
            return run_from((await self._call("KeepAlive", request)).run)
        except LeaseLost as error:
            raise LeaseLost(error.message, guard=guard, operation_id=operation_id) from None

    async def cancel(self, guard: str, operation_id: str, *, reason: str = "") -> CancelReply:
        """Ask the holder of a run to stop; see ``Client.cancel``."""
        request = pb.CancelRequest(guard=guard, operation_id=operation_id, reason=reason)
        try:
            return cancel_result(await self._call("Cancel", request))
        except LeaseLost as error:
            raise RunNotFound(error.message, guard=guard, operation_id=operation_id) from None

    async def get_run(self, guard: str, operation_id: str) -> Run:
        """A live or recently ended run; see ``Client.get_run``."""
        request = pb.GetRunRequest(guard=guard, operation_id=operation_id)
        try:
            return run_from((await self._call("GetRun", request)).run)
        except LeaseLost as error:
            raise RunNotFound(error.message, guard=guard, operation_id=operation_id) from None

    async def configure_guard(
        self,
        guard: str,
        *,
        capacity: int | None = None,
        dedup_window: float | None = None,
        max_queue: int | None = None,
        reset: bool = False,
    ) -> GuardState:
        """Give a guard settings of its own (the role ``admin``); None keeps a setting,
        ``reset`` makes the guard follow the store-wide defaults again.

        Raises:
            InvalidArgument: a setting is out of range (``violations`` names it).
            PermissionDenied: the caller lacks the ``admin`` role.
        """
        request = configure_request(
            guard, capacity=capacity, dedup_window=dedup_window, max_queue=max_queue, reset=reset
        )
        reply = await self._call("ConfigureGuard", request)
        return guard_state(reply.state, reply.revision, reply.epoch)

    async def list_guards(
        self, *, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[GuardState], str]:
        """One page of the guards the store holds, by name, and the next page's token
        ("" after the last page)."""
        reply = await self._call(
            "ListGuards", pb.ListGuardsRequest(page_size=page_size, page_token=page_token)
        )
        states = [guard_state(g, reply.revision, reply.epoch) for g in reply.guards]
        return states, reply.next_page_token

    async def current(self, guard: str = "") -> GuardState:
        """A guard's holders, capacity and queue length."""
        reply = await self._call("Current", pb.CurrentRequest(guard=guard))
        return guard_state(reply.state, reply.revision, reply.epoch)

    def watch(
        self, guards: Iterable[str] = (), *, after_revision: int = 0, epoch: str = ""
    ) -> AsyncWatch:
        """Snapshots and changes, reconnecting by itself; see ``Client.watch``."""
        return AsyncWatch(self, list(guards), WatchCursor(after_revision, epoch))

    @contextlib.asynccontextmanager
    async def run(
        self,
        guard: str = "",
        *,
        on_lost: Callable[[LeaseLost], object] | None = None,
        on_cancel: Callable[[Cancelled], object] | None = None,
        **options: Unpack[BeginOptions],
    ) -> AsyncIterator[Holding]:
        """Hold a slot for the ``async with`` block; see ``Client.run``."""
        grant = await self.begin(guard, **options)
        holding = Holding(grant, on_lost, on_cancel)
        wake = asyncio.Event()
        holding.wake = wake.set
        watch = self.watch([grant.run.guard])
        tasks = [
            asyncio.create_task(self._renew(holding, wake)),
            asyncio.create_task(self._follow(holding, watch)),
        ]

        async def release(failed: bool) -> None:
            for task in tasks:
                task.cancel()
            await watch.aclose()
            await asyncio.gather(*tasks, return_exceptions=True)
            if not holding.lost:
                await self.end_grant(
                    grant, outcome=holding.end_outcome(failed), result=holding.result
                )

        try:
            yield holding
        except BaseException as error:
            with contextlib.suppress(RunGuardError):  # the block's own error wins
                await release(failed=not isinstance(error, Cancelled))
            raise
        await release(failed=False)
        if holding.lost:
            holding.check()

    async def _renew(self, holding: Holding, wake: asyncio.Event) -> None:
        grant = holding.grant
        run = grant.run
        expires = run.expires_at.timestamp()
        renewal = time.monotonic() + renew_every(grant)
        while True:
            report, too_soon = holding.take_progress()
            due = renewal - time.monotonic()
            if report is None and due > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(due, too_soon) if too_soon > 0 else due):
                        await wake.wait()
                wake.clear()
                continue
            fraction, message = report if report is not None else (None, None)
            try:
                renewed = await self.keep_alive(
                    run.guard,
                    run.operation_id,
                    grant.lease_token,
                    fraction=fraction,
                    message=message,
                )
            except LeaseLost as error:
                holding.lose(error.message)
                return
            except RunGuardError as error:
                if time.time() >= expires:
                    holding.lose(f"the lease expired while renewals failed: {error.message}")
                    return
            else:
                expires = renewed.expires_at.timestamp()
                if renewed.cancel_requested:
                    holding.request_cancel(renewed)
            renewal = time.monotonic() + renew_every(grant)

    async def _follow(self, holding: Holding, watch: AsyncWatch) -> None:
        try:
            async for event in watch:
                asked = holding.cancel_seen(event)
                if asked is not None:
                    holding.request_cancel(asked)
                reason = holding.released(event)
                if reason is None:
                    continue
                if isinstance(event, Snapshot):
                    # Gone before the watch began: ask the server how.
                    run = holding.run
                    try:
                        await self.keep_alive(
                            run.guard, run.operation_id, holding.grant.lease_token
                        )
                        continue
                    except LeaseLost as error:
                        reason = error.message
                holding.lose(reason)
                return
        except RunGuardError:
            pass  # the renewals still guard the lease


class AsyncWatch:
    """A reconnecting Watch stream (see ``AsyncClient.watch``); ``await aclose()`` ends it."""

    def __init__(self, client: AsyncClient, guards: list[str], cursor: WatchCursor) -> None:
        self._client = client
        self._guards = guards
        self.cursor = cursor
        self._call: Any = None
        self.reconnects = 0
        """How many times the stream was resumed after it broke."""
        self._closed = False

    def __aiter__(self) -> AsyncWatch:
        return self

    async def __anext__(self) -> WatchEvent:
        failures = 0
        quiet_since = time.monotonic()
        while not self._closed:
            if self._call is None:
                self._call = self._client._stub.Watch(
                    self.cursor.request(self._guards), metadata=self._client.metadata
                )
            error: grpc.aio.AioRpcError | None = None
            try:
                message = await self._call.read()
            except grpc.aio.AioRpcError as caught:
                error = caught
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._closed and task is not None and not task.cancelling():
                    break  # our own aclose() cancelled the call, not the caller's task
                raise
            else:
                if message is not grpc.aio.EOF:  # type: ignore[attr-defined]  # missing from grpc-stubs
                    event = self.cursor.accept(message)
                    if event is not None:
                        return event
                    continue
            if self._closed:
                break
            code = error.code() if error is not None else grpc.StatusCode.UNAVAILABLE
            if (
                not retryable(code)
                or time.monotonic() - quiet_since > self._client.retry.watch_give_up
            ):
                if error is None:
                    raise Unavailable("the Watch stream ended")
                raise _error(error, tls=self._client.tls) from None
            self._call = None
            self.reconnects += 1
            self.cursor.reconnecting()
            await asyncio.sleep(self._client.retry.delay(failures))
            failures += 1
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Stop the stream."""
        self._closed = True
        if self._call is not None:
            self._call.cancel()

    async def __aenter__(self) -> AsyncWatch:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
