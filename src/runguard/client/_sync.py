"""The blocking client."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar, Unpack

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

__all__ = ["Client", "Watch"]

T = TypeVar("T")


def _error(error: grpc.RpcError, *, tls: bool = False) -> RunGuardError:
    call: Any = error
    return error_from_status(call.code(), call.details(), call.trailing_metadata(), tls=tls)


class Client:
    """A blocking RunGuard client. Thread-safe; close it (or use ``with``) when done.

    Args:
        target: host:port of the server.
        timeout: seconds each call may take (a waiting Begin gets its wait on top).
        credentials: channel credentials for TLS; None for plaintext.
        metadata: sent with every call (e.g. an authorization header).
        retry: how calls safe to repeat are retried on UNAVAILABLE.
        options: extra grpc channel options.
        channel: use this channel instead of making one (it is not closed by ``close``).
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
        channel: grpc.Channel | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.metadata = tuple(metadata)
        self.retry = retry
        self.tls = credentials is not None
        self._owned = channel is None
        if channel is None:
            channel = (
                grpc.secure_channel(target, credentials, options=channel_options(options))
                if credentials is not None
                else grpc.insecure_channel(target, options=channel_options(options))
            )
        self._channel = channel
        self._stub: Any = runguard_pb2_grpc.RunGuardServiceStub(channel)  # type: ignore[no-untyped-call]  # generated

    def close(self) -> None:
        """Close the channel (if this client made it)."""
        if self._owned:
            self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        return self._attempts(method, request, timeout)[0]

    def _attempts(self, method: str, request: Any, timeout: float | None) -> tuple[Any, int]:
        """The reply, and how many times the request was sent to get it."""
        deadline = timeout if timeout is not None else self.timeout
        for attempt in range(self.retry.attempts):
            try:
                reply = getattr(self._stub, method)(
                    request, timeout=deadline, metadata=self.metadata
                )
                return reply, attempt + 1
            except grpc.RpcError as error:
                code = error.code()
                if not retryable(code) or attempt + 1 == self.retry.attempts:
                    raise _error(error, tls=self.tls) from None
            time.sleep(self.retry.delay(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def begin(self, guard: str = "", **options: Unpack[BeginOptions]) -> Grant:
        """Take a slot of ``guard``.

        Args:
            guard: the guard's name ("" is "default").
            **options: ``route``, ``payload`` or ``idempotency_key``, ``operation_id``,
                ``ttl``, ``wait``, ``labels`` (see ``BeginOptions``).

        Returns:
            The grant: the run and its lease token.

        Raises:
            RunRejected: the slot was refused; ``reason`` says why.
            InvalidArgument: a field broke a limit (``violations`` names it).
            Unavailable: the server stayed unreachable through the retries.
        """
        request = begin_request(guard, **options)
        wait = options.get("wait")
        if not wait:
            reply, sent = self._attempts("Begin", request, self.timeout)
            return grant_or_raise(reply, retried=sent > 1)
        plan = WaitingBegin(request, wait, self.timeout, self.retry, time.monotonic)
        while True:
            attempt, deadline = plan.next()
            try:
                reply = self._stub.Begin(attempt, timeout=deadline, metadata=self.metadata)
            except grpc.RpcError as error:
                code = error.code()
                pause = plan.retry(code)
                if pause is None:
                    if plan.may_have_won(code):
                        self._give_back(plan)
                    raise _error(error, tls=self.tls) from None
                time.sleep(pause)
                continue
            return grant_or_raise(reply, retried=plan.attempt > 0)

    def _give_back(self, plan: WaitingBegin) -> None:
        """End the run a Begin we gave up on may have been granted (best effort, once)."""
        try:
            reply = self._stub.Begin(
                plan.resume_request(), timeout=self.timeout or 5.0, metadata=self.metadata
            )
            if reply.WhichOneof("outcome") == "granted":
                run = reply.granted.run
                self._stub.End(
                    end_request(run.guard, run.operation_id, reply.granted.lease_token),
                    timeout=self.timeout or 5.0,
                    metadata=self.metadata,
                )
        except grpc.RpcError:
            pass  # the server is still unreachable: the run's lease ends it

    def end(
        self,
        guard: str,
        operation_id: str,
        lease_token: str = "",
        *,
        force: bool = False,
        outcome: str | None = None,
        result: Any = None,
    ) -> EndResult:
        """Give a slot back; idempotent (ALREADY_ENDED when it was gone, UNKNOWN when the
        guard never had it).

        Args:
            outcome: "succeeded", "failed" or "cancelled", kept with the ended run.
            result: a small JSON value (at most 4 KiB) kept with the ended run, so a
                duplicate submission and ``get_run`` can show it.

        Raises:
            PermissionDenied: the lease token is not the run's.
            InvalidArgument: the result is too large (``violations`` names it).
        """
        request = end_request(
            guard, operation_id, lease_token, force=force, outcome=outcome, result=result
        )
        return end_result(self._call("End", request))

    def end_grant(
        self, grant: Grant, *, outcome: str | None = None, result: Any = None
    ) -> EndResult:
        """End the run of a grant."""
        run = grant.run
        return self.end(
            run.guard, run.operation_id, grant.lease_token, outcome=outcome, result=result
        )

    def keep_alive(
        self,
        guard: str,
        operation_id: str,
        lease_token: str,
        *,
        ttl: float | None = None,
        fraction: float | None = None,
        message: str | None = None,
    ) -> Run:
        """Extend a lease, and report progress when ``fraction`` (0 to 1) or ``message`` is
        given; returns the run with its new ``expires_at`` (and ``cancel_requested``).

        Raises:
            LeaseLost: the run holds no slot any more; stop working.
        """
        request = keep_alive_request(
            guard, operation_id, lease_token, ttl=ttl, fraction=fraction, message=message
        )
        try:
            return run_from(self._call("KeepAlive", request).run)
        except LeaseLost as error:
            raise LeaseLost(error.message, guard=guard, operation_id=operation_id) from None

    def cancel(self, guard: str, operation_id: str, *, reason: str = "") -> CancelReply:
        """Ask the holder of a run to stop. Its slot stays held until the holder Ends.

        Raises:
            RunNotFound: the guard knows no such run.
            PermissionDenied: the run is another principal's and the caller is no admin.
        """
        request = pb.CancelRequest(guard=guard, operation_id=operation_id, reason=reason)
        try:
            return cancel_result(self._call("Cancel", request))
        except LeaseLost as error:
            raise RunNotFound(error.message, guard=guard, operation_id=operation_id) from None

    def get_run(self, guard: str, operation_id: str) -> Run:
        """A live run, or an ended one with its outcome and result while the guard keeps it.

        Raises:
            RunNotFound: the guard knows no such run (any more).
        """
        request = pb.GetRunRequest(guard=guard, operation_id=operation_id)
        try:
            return run_from(self._call("GetRun", request).run)
        except LeaseLost as error:
            raise RunNotFound(error.message, guard=guard, operation_id=operation_id) from None

    def configure_guard(
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
        reply = self._call("ConfigureGuard", request)
        return guard_state(reply.state, reply.revision, reply.epoch)

    def list_guards(
        self, *, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[GuardState], str]:
        """One page of the guards the store holds, by name, and the next page's token
        ("" after the last page)."""
        reply = self._call(
            "ListGuards", pb.ListGuardsRequest(page_size=page_size, page_token=page_token)
        )
        states = [guard_state(g, reply.revision, reply.epoch) for g in reply.guards]
        return states, reply.next_page_token

    def current(self, guard: str = "") -> GuardState:
        """A guard's holders, capacity and queue length."""
        reply = self._call("Current", pb.CurrentRequest(guard=guard))
        return guard_state(reply.state, reply.revision, reply.epoch)

    def watch(
        self,
        guards: Iterable[str] = (),
        *,
        after_revision: int = 0,
        epoch: str = "",
    ) -> Watch:
        """Snapshots and changes of ``guards`` (every guard when empty), reconnecting by itself.

        A reconnect resumes after the last revision seen, so no change is lost or
        repeated; when the server cannot replay (history gone, store restarted) the
        iterator yields a Snapshot with ``resynced`` set. Close it to stop.
        """
        return Watch(self, list(guards), WatchCursor(after_revision, epoch))

    @contextlib.contextmanager
    def run(
        self,
        guard: str = "",
        *,
        on_lost: Callable[[LeaseLost], object] | None = None,
        on_cancel: Callable[[Cancelled], object] | None = None,
        **options: Unpack[BeginOptions],
    ) -> Iterator[Holding]:
        """Hold a slot for the ``with`` block: Begin, renew in the background, End on exit.

        The lease is renewed every third of its length, and a Watch on the guard
        reports a loss the moment the server frees the slot. When the slot is
        lost, ``holding.lost`` turns true, ``on_lost`` is called, and leaving the
        block raises LeaseLost (unless the block raised first).

        When somebody cancels the run, ``holding.cancel_requested`` turns true,
        ``on_cancel`` is called and ``holding.check()`` raises Cancelled; the slot
        stays held until the block is left. The End on leaving says how the run
        went: what ``holding.finish(...)`` set, else "cancelled" once cancel was
        requested, "failed" when the block raised, "succeeded" otherwise.

        Raises:
            RunRejected: the slot was refused (the block does not run).
            LeaseLost: on exit, if the slot was lost while the block ran.
        """
        grant = self.begin(guard, **options)
        holding = Holding(grant, on_lost, on_cancel)
        stop = threading.Event()
        wake = threading.Event()
        holding.wake = wake.set
        watch = self.watch([grant.run.guard])
        threads = [
            threading.Thread(target=self._renew, args=(holding, stop, wake), daemon=True),
            threading.Thread(target=self._follow, args=(holding, watch), daemon=True),
        ]
        for thread in threads:
            thread.start()

        def release(failed: bool) -> None:
            stop.set()
            wake.set()
            watch.close()
            for thread in threads:
                thread.join()
            if not holding.lost:
                self.end_grant(grant, outcome=holding.end_outcome(failed), result=holding.result)

        try:
            yield holding
        except BaseException as error:
            with contextlib.suppress(RunGuardError):  # the block's own error wins
                release(failed=not isinstance(error, Cancelled))
            raise
        release(failed=False)
        if holding.lost:
            holding.check()

    def _renew(self, holding: Holding, stop: threading.Event, wake: threading.Event) -> None:
        grant = holding.grant
        run = grant.run
        expires = run.expires_at.timestamp()
        renewal = time.monotonic() + renew_every(grant)
        while not stop.is_set():
            report, too_soon = holding.take_progress()
            due = renewal - time.monotonic()
            if report is None and due > 0:
                wake.wait(min(due, too_soon) if too_soon > 0 else due)
                wake.clear()
                continue
            fraction, message = report if report is not None else (None, None)
            try:
                renewed = self.keep_alive(
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

    def _follow(self, holding: Holding, watch: Watch) -> None:
        try:
            for event in watch:
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
                        self.keep_alive(run.guard, run.operation_id, holding.grant.lease_token)
                        continue
                    except LeaseLost as error:
                        reason = error.message
                holding.lose(reason)
                return
        except RunGuardError:
            pass  # the renewals still guard the lease


class Watch(Iterator[WatchEvent]):
    """A reconnecting Watch stream (see ``Client.watch``); ``close()`` ends it."""

    def __init__(self, client: Client, guards: list[str], cursor: WatchCursor) -> None:
        self._client = client
        self._guards = guards
        self.cursor = cursor
        self._call: Any = None
        self.reconnects = 0
        """How many times the stream was resumed after it broke."""
        self._closed = threading.Event()

    def __iter__(self) -> Watch:
        return self

    def __next__(self) -> WatchEvent:
        failures = 0
        quiet_since = time.monotonic()
        while not self._closed.is_set():
            if self._call is None:
                self._call = self._client._stub.Watch(
                    self.cursor.request(self._guards), metadata=self._client.metadata
                )
            try:
                message = next(self._call)
            except StopIteration:
                error_code = grpc.StatusCode.UNAVAILABLE  # a stream must not end: resume
                error: grpc.RpcError | None = None
            except grpc.RpcError as caught:
                error_code, error = caught.code(), caught
            else:
                event = self.cursor.accept(message)
                if event is not None:
                    return event
                continue
            if self._closed.is_set():
                break
            if not retryable(error_code) or (
                time.monotonic() - quiet_since > self._client.retry.watch_give_up
            ):
                if error is None:
                    raise Unavailable("the Watch stream ended")
                raise _error(error, tls=self._client.tls) from None
            self._call = None
            self.reconnects += 1
            self.cursor.reconnecting()
            self._closed.wait(self._client.retry.delay(failures))
            failures += 1
        raise StopIteration

    def close(self) -> None:
        """Stop the stream; a blocked ``next`` ends with StopIteration."""
        self._closed.set()
        if self._call is not None:
            self._call.cancel()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
