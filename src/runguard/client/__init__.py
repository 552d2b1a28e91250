"""The RunGuard Python client: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

Take a slot, keep its lease alive while the job runs, always give it back::

    from runguard.client import Client

    with Client("127.0.0.1:50051") as client:
        with client.run("generate", route="/generate", payload={"prompt": "cats"}, ttl=30):
            do_the_work()

A refusal raises ``RunRejected`` (``reason`` "in_flight", "duplicate", ...);
nothing returns a bare protobuf. A server with TLS or tokens takes
``Client(target, **connect_options(ca=..., cert=..., key=..., token=...))``.
"""

from runguard.client._async import AsyncClient, AsyncWatch
from runguard.client._connect import ConnectOptions, connect_options
from runguard.client._holding import Holding
from runguard.client._shared import BeginOptions, RetryPolicy
from runguard.client._sync import Client, Watch
from runguard.client.errors import (
    AlreadyExists,
    CallFailed,
    Cancelled,
    InvalidArgument,
    LeaseLost,
    PermissionDenied,
    ResourceExhausted,
    RunGuardError,
    RunNotFound,
    RunRejected,
    Unauthenticated,
    Unavailable,
)
from runguard.client.models import (
    CancelReply,
    CancelResult,
    Change,
    EndResult,
    Grant,
    GuardState,
    Progress,
    Run,
    RunProgress,
    Snapshot,
    WatchEvent,
)
from runguard.contract import fingerprint

__all__ = [
    "AlreadyExists",
    "AsyncClient",
    "AsyncWatch",
    "BeginOptions",
    "CallFailed",
    "CancelReply",
    "CancelResult",
    "Cancelled",
    "Change",
    "Client",
    "ConnectOptions",
    "EndResult",
    "Grant",
    "GuardState",
    "Holding",
    "InvalidArgument",
    "LeaseLost",
    "PermissionDenied",
    "Progress",
    "ResourceExhausted",
    "RetryPolicy",
    "Run",
    "RunGuardError",
    "RunNotFound",
    "RunProgress",
    "RunRejected",
    "Snapshot",
    "Unauthenticated",
    "Unavailable",
    "Watch",
    "WatchEvent",
    "connect_options",
    "fingerprint",
]
