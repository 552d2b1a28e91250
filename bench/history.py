"""A long history across RunGuard replicas on one etcd, checked against the contract.

Several RunGuard servers share one ``etcd://`` store (one key prefix of the
bench's etcd). Many clients, spread over the replicas, loop on two guards (one
slot and two slots): Begin (some queueing with ``wait``), hold a few
milliseconds, End. Now and then a client abandons its grant (no End), so its
lease expires and the next holder is granted by expiry; now and then it
resubmits an earlier payload, so DUPLICATEs happen. Every outcome is recorded
with its fencing token and time window, and ``tests/history.py``'s checker
judges the whole history: never more than ``capacity`` overlapping grants per
guard, fencing tokens increasing in grant order, every DUPLICATE inside its
window.

Times are the clients' ``time.time()``; the replicas run on the same machine,
so on the same clock.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import duration_pb2, json_format, struct_pb2

from tests import history_calls
from tests.history import Duplicate, Grant, check

__all__ = ["CAPACITIES", "DEDUP_WINDOW", "HistoryResult", "run_history"]

CAPACITIES = {"hist-one": 1, "hist-two": 2}
"""The guards the clients use, and their slots."""

DEDUP_WINDOW = 1.0
"""Seconds a submission is remembered (short, so both sides of it are exercised)."""

TTL = 1.0
"""Lease of every grant: an abandoned grant frees its slot by expiry within this."""

ABANDON = 0.03
"""Share of grants a client never Ends (their leases expire)."""

REPEAT = 0.2
"""Share of Begins that resubmit the client's previous payload."""


@dataclass
class HistoryResult:
    """What the clients saw, and what the checker found."""

    replicas: int
    clients: int
    seconds: float
    grants: list[Grant] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    expired: int = 0
    """Grants abandoned to lease expiry."""
    rejected: int = 0
    """Begins rejected other than as DUPLICATE (in flight, wait timed out, queue full)."""
    unavailable: int = 0
    errors: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    @property
    def operations(self) -> int:
        """Outcomes checked: every grant (with its End or expiry) and every DUPLICATE."""
        return len(self.grants) + len(self.duplicates)

    def summary(self) -> str:
        """One line for the report."""
        return (
            f"{self.operations:,} operations checked ({len(self.grants):,} grants, "
            f"{self.expired:,} of them ended by lease expiry, {len(self.duplicates):,} "
            f"DUPLICATEs; {self.rejected:,} other rejections, {self.unavailable:,} "
            f"UNAVAILABLE) from {self.clients} clients on {self.replicas} replicas in "
            f"{self.seconds:g} s: violations: {len(self.violations)}"
        )


def _duration(amount: float) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    message.FromNanoseconds(round(amount * 1e9))
    return message


def _payload(data: Any) -> struct_pb2.Value:
    message = struct_pb2.Value()
    json_format.ParseDict(data, message)
    return message


async def _client(
    stub: Any, pb: Any, name: str, guard: str, until: float, result: HistoryResult, seed: int
) -> None:
    rng = random.Random(seed)
    n = 0
    last_payload: dict[str, Any] = {"c": name, "n": 0}
    while time.time() < until:
        n += 1
        op = f"{name}-{n}"
        payload = last_payload if rng.random() < REPEAT else {"c": name, "n": n}
        last_payload = payload
        request = pb.BeginRequest(guard=guard, operation_id=op, route="/bench")
        request.payload.CopyFrom(_payload(payload))
        request.ttl.CopyFrom(_duration(TTL))
        if rng.random() < 0.5:
            request.wait.CopyFrom(_duration(2.0))
        sent = time.time()
        reply = await history_calls.begin(stub, request, result.errors)
        if reply is None:
            result.unavailable += 1
            await asyncio.sleep(0.05)
            continue
        answered = time.time()
        if reply.WhichOneof("outcome") == "granted":
            granted = reply.granted
            expires = granted.run.expires_at.ToNanoseconds() / 1e9
            token = granted.run.fencing_token
            await asyncio.sleep(rng.uniform(0.0, 0.01))
            if rng.random() < ABANDON:
                result.expired += 1
                result.grants.append(Grant(guard, op, token, answered, expires))
                continue
            released = await history_calls.end(stub, granted, result.errors)
            result.grants.append(Grant(guard, op, token, answered, released))
        elif reply.rejected.reason == pb.REJECTION_REASON_DUPLICATE:
            result.duplicates.append(history_calls.duplicate(reply, guard, sent, answered))
        else:
            result.rejected += 1
            await asyncio.sleep(0.005)


async def _run(addresses: list[str], clients: int, seconds: float, result: HistoryResult) -> None:
    from runguard.v1 import runguard_pb2, runguard_pb2_grpc

    channels = [grpc.aio.insecure_channel(a) for a in addresses]
    try:
        stubs = [runguard_pb2_grpc.RunGuardServiceStub(c) for c in channels]  # type: ignore[no-untyped-call]
        guards = list(CAPACITIES)
        until = time.time() + seconds
        await asyncio.gather(
            *(
                _client(
                    stubs[i % len(stubs)],
                    runguard_pb2,
                    f"c{i}",
                    guards[i % len(guards)],
                    until,
                    result,
                    seed=i,
                )
                for i in range(clients)
            )
        )
    finally:
        for channel in channels:
            await channel.close(None)


def run_history(addresses: list[str], clients: int, seconds: float) -> HistoryResult:
    """Drive ``clients`` clients over the replicas at ``addresses`` for ``seconds``, then
    check the history (the replicas must run with :data:`CAPACITIES` and
    :data:`DEDUP_WINDOW`)."""
    result = HistoryResult(replicas=len(addresses), clients=clients, seconds=seconds)
    asyncio.run(_run(addresses, clients, seconds, result))
    for guard, capacity in CAPACITIES.items():
        result.violations += check(
            [g for g in result.grants if g.guard == guard],
            [d for d in result.duplicates if d.guard == guard],
            capacity=capacity,
            dedup_window=DEDUP_WINDOW,
        )
    result.violations += result.errors
    return result
