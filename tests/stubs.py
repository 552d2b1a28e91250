"""Typed views of the generated gRPC stub, one for sync channels and one for aio channels.

grpcio-tools writes ``RunGuardServiceStub`` without annotations; these protocols give its
attributes their request and response types, so the tests are type-checked through it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, cast

import grpc
import grpc.aio

from runguard.v1 import runguard_pb2 as pb
from runguard.v1 import runguard_pb2_grpc


class WatchCall(Protocol):
    """A sync Watch in flight: an iterator of responses that is also the call.

    grpc-stubs types it as an iterable only, without ``next`` or ``cancel``.
    """

    def __iter__(self) -> Iterator[pb.WatchResponse]: ...
    def __next__(self) -> pb.WatchResponse: ...
    def cancel(self) -> bool: ...
    def code(self) -> grpc.StatusCode: ...
    def details(self) -> str | None: ...


class Watch(Protocol):
    """The sync Watch method."""

    def __call__(self, request: pb.WatchRequest, **options: Any) -> WatchCall: ...


class Stub(Protocol):
    """``RunGuardServiceStub`` over a ``grpc.Channel``."""

    Begin: grpc.UnaryUnaryMultiCallable[pb.BeginRequest, pb.BeginResponse]
    End: grpc.UnaryUnaryMultiCallable[pb.EndRequest, pb.EndResponse]
    KeepAlive: grpc.UnaryUnaryMultiCallable[pb.KeepAliveRequest, pb.KeepAliveResponse]
    Current: grpc.UnaryUnaryMultiCallable[pb.CurrentRequest, pb.CurrentResponse]
    Watch: Watch
    ConfigureGuard: grpc.UnaryUnaryMultiCallable[
        pb.ConfigureGuardRequest, pb.ConfigureGuardResponse
    ]
    ListGuards: grpc.UnaryUnaryMultiCallable[pb.ListGuardsRequest, pb.ListGuardsResponse]
    Cancel: grpc.UnaryUnaryMultiCallable[pb.CancelRequest, pb.CancelResponse]
    GetRun: grpc.UnaryUnaryMultiCallable[pb.GetRunRequest, pb.GetRunResponse]


class AsyncStub(Protocol):
    """``RunGuardServiceStub`` over a ``grpc.aio.Channel``."""

    Begin: grpc.aio.UnaryUnaryMultiCallable[pb.BeginRequest, pb.BeginResponse]
    End: grpc.aio.UnaryUnaryMultiCallable[pb.EndRequest, pb.EndResponse]
    KeepAlive: grpc.aio.UnaryUnaryMultiCallable[pb.KeepAliveRequest, pb.KeepAliveResponse]
    Current: grpc.aio.UnaryUnaryMultiCallable[pb.CurrentRequest, pb.CurrentResponse]
    Watch: grpc.aio.UnaryStreamMultiCallable[pb.WatchRequest, pb.WatchResponse]
    ConfigureGuard: grpc.aio.UnaryUnaryMultiCallable[
        pb.ConfigureGuardRequest, pb.ConfigureGuardResponse
    ]
    ListGuards: grpc.aio.UnaryUnaryMultiCallable[pb.ListGuardsRequest, pb.ListGuardsResponse]
    Cancel: grpc.aio.UnaryUnaryMultiCallable[pb.CancelRequest, pb.CancelResponse]
    GetRun: grpc.aio.UnaryUnaryMultiCallable[pb.GetRunRequest, pb.GetRunResponse]


def sync_stub(channel: grpc.Channel) -> Stub:
    """The generated stub over a sync channel, typed."""
    return cast(Stub, runguard_pb2_grpc.RunGuardServiceStub(channel))  # type: ignore[no-untyped-call]  # generated


def async_stub(channel: grpc.aio.Channel) -> AsyncStub:
    """The generated stub over an aio channel, typed."""
    return cast(AsyncStub, runguard_pb2_grpc.RunGuardServiceStub(channel))  # type: ignore[no-untyped-call]  # generated
