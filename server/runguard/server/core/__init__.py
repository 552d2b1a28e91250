"""The pure core of RunGuard: every rule of a guard, and nothing else.

No grpc, no asyncio, no clock, no storage: each transition takes a guard's
document, its policy, a command and ``now`` and returns the new document, the
outcome and the changes it made. Randomness (lease tokens, server-made
operation_ids) comes in with the command, so the core is deterministic.
"""

from runguard.server.core.fingerprint import canonical_json, fingerprint
from runguard.server.core.history import ChangeLog
from runguard.server.core.model import (
    CAPACITY_MAX,
    Accepted,
    BeginCommand,
    Change,
    ChangeKind,
    EndResult,
    GuardDoc,
    GuardPolicy,
    GuardSettings,
    GuardView,
    Holder,
    Labels,
    Rejection,
    RejectionReason,
    ReleaseReason,
    Run,
    Tombstone,
    Waiter,
)
from runguard.server.core.transitions import (
    Granted,
    Queued,
    Transition,
    begin,
    cancel_wait,
    configure,
    end,
    keep_alive,
    next_deadline,
    policy_of,
    settle,
    view,
    without_waiters_of,
)

__all__ = [
    "CAPACITY_MAX",
    "Accepted",
    "BeginCommand",
    "Change",
    "ChangeKind",
    "ChangeLog",
    "EndResult",
    "Granted",
    "GuardDoc",
    "GuardPolicy",
    "GuardSettings",
    "GuardView",
    "Holder",
    "Labels",
    "Queued",
    "Rejection",
    "RejectionReason",
    "ReleaseReason",
    "Run",
    "Tombstone",
    "Transition",
    "Waiter",
    "begin",
    "cancel_wait",
    "canonical_json",
    "configure",
    "end",
    "fingerprint",
    "keep_alive",
    "next_deadline",
    "policy_of",
    "settle",
    "view",
    "without_waiters_of",
]
