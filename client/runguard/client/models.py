"""What the client hands back: plain frozen values, never a bare protobuf."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

__all__ = [
    "Change",
    "EndResult",
    "Grant",
    "GuardState",
    "Progress",
    "Run",
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
    revision: int
    guards: tuple[GuardState, ...]
    resynced: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """One slot change: ``kind`` "acquired" or "released" (then ``reason`` says how), or
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
