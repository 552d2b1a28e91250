"""The bounded change history watchers resume from."""

from __future__ import annotations

import dataclasses

import pytest

from runguard.server.core import Change, ChangeKind, ChangeLog, GuardView, Run

RUN = Run(
    guard="g",
    operation_id="op",
    fingerprint="fp",
    fencing_token=1,
    started_at=0.0,
    expires_at=10.0,
)
STATE = GuardView(guard="g", capacity=1, holders=(), queue_length=0)


def commit(revision: int, size: int = 1) -> list[Change]:
    """A commit of ``size`` changes, all stamped with ``revision``."""
    return [
        Change(
            kind=ChangeKind.ACQUIRED,
            run=dataclasses.replace(RUN, operation_id=f"op-{revision}-{i}"),
            state=STATE,
            revision=revision,
        )
        for i in range(size)
    ]


def revisions(changes: list[Change] | None) -> list[int] | None:
    """The revisions of some changes, or None when there are none to give."""
    return None if changes is None else [c.revision for c in changes]


def test_an_empty_log_replays_nothing() -> None:
    """A new log has floor 0 and nothing to replay after revision 0."""
    log = ChangeLog(3)

    assert log.floor == 0
    assert log.since(0) == []


def test_since_returns_the_changes_above_after_in_order() -> None:
    """since(after) returns every kept change with a larger revision, oldest first."""
    log = ChangeLog(10)
    for revision in (1, 2, 3):
        log.append(commit(revision))

    assert revisions(log.since(0)) == [1, 2, 3]
    assert revisions(log.since(1)) == [2, 3]
    assert log.since(3) == []
    assert log.since(99) == []


def test_keeps_only_the_last_n_changes() -> None:
    """With limit N the log keeps the newest N single-change commits and forgets older ones."""
    log = ChangeLog(3)
    for revision in range(1, 7):
        log.append(commit(revision))

    assert log.floor == 3
    assert revisions(log.since(3)) == [4, 5, 6]


@pytest.mark.parametrize(
    "after",
    [pytest.param(0, id="from-scratch"), pytest.param(2, id="just-below-floor")],
)
def test_since_is_none_when_the_needed_history_is_gone(after: int) -> None:
    """Resuming from before the oldest kept revision returns None (resync), never a gap."""
    log = ChangeLog(3)
    for revision in range(1, 7):
        log.append(commit(revision))

    assert log.since(after) is None


def test_evicts_whole_commits() -> None:
    """A commit is kept or forgotten as a whole, so a replay never starts inside one."""
    log = ChangeLog(4)
    log.append(commit(1, size=3))
    log.append(commit(2))
    log.append(commit(3))

    assert log.floor == 0
    assert revisions(log.since(0)) == [1, 1, 1, 2, 3]

    log.append(commit(4, size=2))

    assert log.floor == 1
    assert revisions(log.since(1)) == [2, 3, 4, 4]
    assert log.since(0) is None


def test_keeps_at_least_the_last_n_changes_rounded_up_to_whole_commits() -> None:
    """The last N changes stay replayable even when the oldest of them shares a commit."""
    log = ChangeLog(3)
    log.append(commit(1, size=2))
    log.append(commit(2, size=2))

    assert log.floor == 0
    assert revisions(log.since(0)) == [1, 1, 2, 2]

    log.append(commit(3, size=1))

    assert log.floor == 1
    assert revisions(log.since(1)) == [2, 2, 3]


def test_a_commit_larger_than_the_limit_stays_replayable() -> None:
    """A single commit with more than N changes is kept whole, not dropped with the older ones."""
    log = ChangeLog(1)
    log.append(commit(1))
    log.append(commit(2, size=2))

    assert log.floor == 1
    assert revisions(log.since(1)) == [2, 2]


def test_a_floor_given_at_start_is_the_oldest_resumable_revision() -> None:
    """A log started at floor F (a store reopened at revision F) can only resume from F on."""
    log = ChangeLog(5, floor=10)
    log.append(commit(11))

    assert log.since(9) is None
    assert revisions(log.since(10)) == [11]


def test_changes_must_come_in_revision_order() -> None:
    """Appending a change older than the newest kept one raises ValueError."""
    log = ChangeLog(5)
    log.append(commit(2))

    with pytest.raises(ValueError, match="revision order"):
        log.append(commit(1))


def test_limit_must_be_positive() -> None:
    """A log that can keep nothing is refused."""
    with pytest.raises(ValueError, match="limit"):
        ChangeLog(0)
