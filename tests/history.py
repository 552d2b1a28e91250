"""A history checker: what clients saw, checked against the contract.

Clients record each Begin with the time window it was in flight and its
outcome, and when they gave each grant back. :func:`check` then verifies, for
every guard:

- never more than ``capacity`` grants hold at once. A grant holds from when
  its Begin answered to when its End was sent (to its lease's end when the End
  failed or was never sent): a conservative window, since the real hold lies
  inside it and the next grant only answers after the slot freed;
- fencing tokens increase in grant order (a grant that answered after another
  one was given back has a larger token) and are never handed out twice;
- every DUPLICATE names an earlier run accepted within the dedup window of the
  call's time window.

Times are the clients' ``time.time()``; the servers' clocks are the same clock
here (one machine). Pure: no I/O, usable on short histories in the tests and
long ones in ``bench/``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

__all__ = ["Duplicate", "Grant", "check"]


@dataclass(frozen=True, slots=True)
class Grant:
    """A granted Begin as its client saw it."""

    guard: str
    operation_id: str
    fencing_token: int
    answered: float
    """When the Begin's answer arrived."""
    released: float
    """When End was sent, or the lease's end if End failed or never came."""


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A Begin rejected as DUPLICATE."""

    guard: str
    sent: float
    answered: float
    earlier_started: float
    """``started_at`` of the run it duplicates."""


def check(
    grants: list[Grant],
    duplicates: list[Duplicate],
    *,
    capacity: int,
    dedup_window: float,
    slack: float = 0.05,
) -> list[str]:
    """Every violation of the contract in the history; empty when it holds.

    ``slack`` seconds absorb the gap between a client's and the server's
    reading of the clock.
    """
    problems: list[str] = []
    by_guard: dict[str, list[Grant]] = defaultdict(list)
    for grant in grants:
        by_guard[grant.guard].append(grant)
    for guard, runs in by_guard.items():
        tokens = [g.fencing_token for g in runs]
        if len(set(tokens)) != len(tokens):
            problems.append(f"{guard}: a fencing token was handed out twice")
        # Holders at each answer: the runs answered earlier and not yet released.
        ordered = sorted(runs, key=lambda g: g.answered)
        for i, grant in enumerate(ordered):
            holding = [other for other in ordered[:i] if other.released > grant.answered + slack]
            if len(holding) + 1 > capacity:
                names = ", ".join(o.operation_id for o in holding)
                problems.append(
                    f"{guard}: {grant.operation_id} granted while {names} held "
                    f"(capacity {capacity})"
                )
            for other in ordered[:i]:
                if other.released < grant.answered - slack and (
                    other.fencing_token >= grant.fencing_token
                ):
                    problems.append(
                        f"{guard}: {grant.operation_id} got fencing token "
                        f"{grant.fencing_token} after {other.operation_id} had "
                        f"{other.fencing_token}"
                    )
    for dup in duplicates:
        if dup.earlier_started <= dup.sent - dedup_window - slack:
            problems.append(
                f"{dup.guard}: DUPLICATE of a run started {dup.sent - dup.earlier_started:.3f}s "
                f"before the call, outside the {dedup_window}s window"
            )
        if dup.earlier_started > dup.answered + slack:
            problems.append(f"{dup.guard}: DUPLICATE of a run that started after the answer")
    return problems
