"""What the client hands back: plain frozen values, never a bare protobuf."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

OUTCOMES = ("succeeded", "failed", "cancelled")
"""What End's ``outcome`` may say about a run (None: not said)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunProgress:
    """How far a run has got, as its holder last reported it."""

    fraction: float | None
    """From 0 to 1; None when the holder only gave a message."""
    message: str
    reported_at: datetime | None


__all__ = [
    "OUTCOMES",
    "CancelReply",
    "CancelResult",
    "Change",
    "EndResult",
    "Grant",
    "GuardState",
    "Progress",
    "Run",
    "RunProgress",
    "Snapshot",
    "WatchEvent",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """A run as anybody may see it (no lease token)."""

    guard: str
    operation_id: str
    fingerprint: str
    fencing_token: int
    started_at: datetime
    expires_at: datetime
    labels: Mapping[str, str] = field(default_factory=dict)
    principal: str = ""
    """Who was granted the run, as the server authenticated it ("" without auth)."""
    state: str = "running"
    """"running" while it holds its slot, "ended" after."""
    end_reason: str | None = None
    """For an ended run: "ended", "expired" or "forced"."""
    outcome: str | None = None
    """For an ended run: "succeeded", "failed" or "cancelled", when End said so."""
    result: Any = None
    """For an ended run: the result End gave (plain JSON values), or None."""
    ended_at: datetime | None = None
    progress: RunProgress | None = None
    """The latest progress its holder reported."""
    cancel_requested: bool = False
    """True once somebody asked the run to stop (see ``Client.cancel``)."""
    cancel_reason: str = ""
    cancelled_by: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Grant:
    """A slot the caller holds: the run and the secret End and KeepAlive need."""

    run: Run
    lease_token: str
    replayed: bool = False
    """The run held the slot before this call (a repeated Begin); see the proto."""


class EndResult(enum.Enum):
    """What End did."""

    ENDED = "ended"
    """This call freed the slot."""
    ALREADY_ENDED = "already_ended"
    """The run was already gone."""
    UNKNOWN = "unknown"
    """The guard knows no run of that operation_id (never granted, or forgotten since)."""


class CancelResult(enum.Enum):
    """What Cancel did."""

    REQUESTED = "requested"
    ALREADY_REQUESTED = "already_requested"
    ALREADY_ENDED = "already_ended"


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelReply:
    """What Cancel did, and the run as it is now (still holding its slot, or ended)."""

    result: CancelResult
    run: Run


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardState:
    """A guard's holders, capacity and queue length, as of ``revision``."""

    guard: str
    capacity: int
    holders: tuple[Run, ...]
    queue_length: int
    dedup_window: float = 0.0
    """Seconds an accepted submission is remembered for dedup."""
    max_queue: int = 0
    """How many callers may queue."""
    configured: bool = False
    """Whether the guard has settings of its own (else the store-wide defaults)."""
    revision: int = 0
    epoch: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """The watched guards at ``revision``; ``resynced``: rebuild what you derived before."""

    epoch: str
    """Names the store's history that ``revision`` counts in (a new one after a restart
    of a store that keeps no history)."""
    revision: int
    guards: tuple[GuardState, ...]
    resynced: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """One change: ``kind`` "acquired" or "released" (then ``reason`` says how),
    "progressed" (``run.progress`` is the latest report), "cancel_requested", or
    "configured" (an operator changed the guard's settings; ``run`` is None)."""

    epoch: str
    revision: int
    kind: str
    run: Run | None
    state: GuardState
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """A heartbeat: nothing changed in the watched guards up to ``revision``."""

    epoch: str
    revision: int


WatchEvent = Snapshot | Change | Progress
