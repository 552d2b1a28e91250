"""The values the core works on: runs, guard documents, policies, changes.

All frozen, all plain data (str, int, float, tuples), so a store can keep a
guard document as it is or serialise it field by field. Times are seconds
since the Unix epoch as floats; the core never reads a clock.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "CAPACITY_MAX",
    "Accepted",
    "BeginCommand",
    "CancelResult",
    "Cancellation",
    "Change",
    "ChangeKind",
    "EndResult",
    "Ending",
    "GuardDoc",
    "GuardPolicy",
    "GuardSettings",
    "GuardView",
    "Holder",
    "Labels",
    "Rejection",
    "RejectionReason",
    "ReleaseReason",
    "Run",
    "RunOutcome",
    "RunProgress",
    "Tombstone",
    "Waiter",
]

Labels = tuple[tuple[str, str], ...]
"""Labels as sorted (key, value) pairs, so documents stay hashable."""


class ChangeKind(enum.Enum):
    """What happened to a slot."""

    ACQUIRED = "acquired"
    """A Begin was granted, at once or from the queue."""
    RELEASED = "released"
    """A run left its slot; the change's ``reason`` says how."""
    CONFIGURED = "configured"
    """An operator changed the guard's settings (capacity, dedup window, queue limit)."""
    PROGRESSED = "progressed"
    """The holder reported progress (coalesced per run, see ``PROGRESS_INTERVAL``)."""
    CANCEL_REQUESTED = "cancel_requested"
    """Somebody asked the run to stop; it still holds its slot."""


class ReleaseReason(enum.Enum):
    """How a run left its slot."""

    ENDED = "ended"
    """Its holder called End with the lease token."""
    EXPIRED = "expired"
    """Its lease ran out without a KeepAlive."""
    FORCED = "forced"
    """An admin called End with ``force``."""


class RejectionReason(enum.Enum):
    """Why Begin refused a slot; the values read like the seed's ``reason``."""

    IN_FLIGHT = "in_flight"
    """The guard is at capacity and the caller did not ask to wait."""
    DUPLICATE = "duplicate"
    """The same submission was accepted within the dedup window, or is queued."""
    WAIT_TIMEOUT = "wait_timeout"
    """The caller queued and no slot freed before its wait elapsed."""
    QUEUE_FULL = "queue_full"
    """The caller asked to wait but the queue is at its limit."""
    NOT_HELD = "not_held"
    """A resume-only Begin named an operation_id that holds no slot."""


class EndResult(enum.Enum):
    """What End did."""

    ENDED = "ended"
    """This call freed the slot."""
    ALREADY_ENDED = "already_ended"
    """The run was already gone."""
    UNKNOWN = "unknown"
    """No run of that operation_id is known (never granted, or forgotten since)."""


class RunOutcome(enum.Enum):
    """How the holder said its run went."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class CancelResult(enum.Enum):
    """What a cancel request did."""

    REQUESTED = "requested"
    """This call marked the run."""
    ALREADY_REQUESTED = "already_requested"
    """The run was marked already."""
    ALREADY_ENDED = "already_ended"
    """The run has ended; nothing changed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunProgress:
    """The latest progress a holder reported: ``fraction`` in [0, 1] and/or a message."""

    fraction: float | None = None
    message: str = ""
    at: float = 0.0
    """When the report arrived."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancellation:
    """A request that the run stop, and who made it."""

    reason: str
    by: str
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Ending:
    """How a run left its slot: why, when, and what its holder said about it."""

    reason: ReleaseReason
    at: float
    outcome: RunOutcome | None = None
    result: str = ""
    """The result as JSON text ("" when none was given)."""


CAPACITY_MAX = 65_535
"""The most slots a guard may have (a commit grants at most this many runs, which
keeps the fencing tokens of a reclaimed and re-created guard increasing)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardSettings:
    """What operators set per guard, kept in the store so every replica enforces it.

    A guard's own settings live in its document; a guard without them follows
    the store-wide defaults (written once, by the first server on the store).
    """

    capacity: int = 1
    dedup_window: float = 5.0
    max_queue: int = 1000

    def __post_init__(self) -> None:
        if not 1 <= self.capacity <= CAPACITY_MAX:
            raise ValueError(f"capacity must be 1 to {CAPACITY_MAX}, got {self.capacity}")
        if not (self.dedup_window >= 0 and math.isfinite(self.dedup_window)):
            raise ValueError(f"dedup_window must be a finite number >= 0, got {self.dedup_window}")
        if self.max_queue < 0:
            raise ValueError(f"max_queue must not be negative, got {self.max_queue}")


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardPolicy:
    """The rules one guard is run by: its settings and the server's lease limit."""

    capacity: int = 1
    dedup_window: float = 5.0
    max_ttl: float = 1800.0
    max_queue: int = 1000

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {self.capacity}")
        if self.dedup_window < 0:
            raise ValueError(f"dedup_window must not be negative, got {self.dedup_window}")
        if self.max_ttl <= 0:
            raise ValueError(f"max_ttl must be positive, got {self.max_ttl}")
        if self.max_queue < 0:
            raise ValueError(f"max_queue must not be negative, got {self.max_queue}")

    def with_settings(self, settings: GuardSettings | None) -> GuardPolicy:
        """This policy with ``settings`` in place of its own (None: this policy)."""
        if settings is None:
            return self
        return GuardPolicy(
            capacity=settings.capacity,
            dedup_window=settings.dedup_window,
            max_ttl=self.max_ttl,
            max_queue=settings.max_queue,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """A run as anybody may see it: no lease token."""

    guard: str
    operation_id: str
    fingerprint: str
    fencing_token: int
    started_at: float
    expires_at: float
    labels: Labels = ()
    principal: str = ""
    """Who was granted the run (the authenticated caller of its Begin); "" without auth."""
    progress: RunProgress | None = None
    """The latest progress its holder reported."""
    cancel: Cancellation | None = None
    """Set once somebody asked the run to stop."""
    ending: Ending | None = None
    """Set once the run left its slot (only on ended runs: changes, dedup entries)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Holder:
    """A run holding a slot, with the secret and the lease length only it knows."""

    run: Run
    lease_token: str
    ttl: float
    progress_shown_at: float | None = None
    """When watchers were last shown this run's progress (a PROGRESSED change)."""
    progress_due: float | None = None
    """When a report not yet shown must be shown (None: nothing pending)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Waiter:
    """A Begin queued for a slot. Its lease token is made when it queues."""

    operation_id: str
    fingerprint: str
    lease_token: str
    ttl: float
    labels: Labels
    enqueued_at: float
    deadline: float
    owner: str = ""
    """The replica whose caller waits for the grant ("" for a single-process store)."""
    principal: str = ""
    """Who asked (see ``Run.principal``); the run granted from the queue carries it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Accepted:
    """A dedup entry: a submission accepted at ``accepted_at`` (its run's start).

    Once the run ends, ``run`` is the ended run (with its ``ending``), so a
    DUPLICATE and GetRun can say how it went for as long as the entry lasts.
    """

    run: Run
    accepted_at: float
    kept_from: float = 0.0
    """When the run's end was recorded (0 while it runs): the entry is kept a dedup
    window from then, so an ended run stays known however long it ran."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Tombstone:
    """How a recent run left, so a late KeepAlive can say why its lease is lost."""

    operation_id: str
    reason: ReleaseReason
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardDoc:
    """Everything a guard keeps: the one document a store versions and swaps."""

    name: str
    next_fencing: int
    holders: tuple[Holder, ...] = ()
    queue: tuple[Waiter, ...] = ()
    accepted: Mapping[str, Accepted] = field(default_factory=dict)
    """Dedup entries by fingerprint, oldest first (a new grant moves its entry last).
    Never mutated: a transition builds a new mapping."""
    tombstones: tuple[Tombstone, ...] = ()
    settings: GuardSettings | None = None
    """The guard's own settings (None: it follows the store-wide defaults)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardView:
    """A guard's state as watchers and Current see it."""

    guard: str
    capacity: int
    holders: tuple[Run, ...]
    queue_length: int
    dedup_window: float = 0.0
    max_queue: int = 0
    configured: bool = False
    """Whether the guard has settings of its own (else it follows the defaults)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """One slot change and the guard's state right after it.

    ``revision`` is 0 as the core makes it; the store sets it when it commits.
    """

    kind: ChangeKind
    run: Run | None
    """The run that acquired or released (None for CONFIGURED)."""
    state: GuardView
    reason: ReleaseReason | None = None
    revision: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejection:
    """A refused Begin, with what the caller needs to decide what to do next."""

    reason: RejectionReason
    message: str
    holders: tuple[Run, ...] = ()
    duplicate_of: Run | None = None
    retry_after: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BeginCommand:
    """A validated Begin, with the randomness the core must not make itself.

    ``ttl`` None means the policy's max TTL; ``wait`` 0 means do not queue.
    """

    operation_id: str
    fingerprint: str
    lease_token: str
    ttl: float | None = None
    wait: float = 0.0
    labels: Labels = field(default=())
    owner: str = ""
    """The replica the caller waits on if it queues (see ``Waiter.owner``)."""
    principal: str = ""
    """The authenticated caller ("" without auth); a replay by another principal conflicts."""
    resume_only: bool = False
    """Only give back a grant ``operation_id`` already holds; never grant or queue anew."""
