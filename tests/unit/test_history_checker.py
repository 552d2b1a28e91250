"""The history checker finds what breaks the contract, and nothing else."""

from __future__ import annotations

from tests.history import Duplicate, Grant, check


def _grant(op: str, token: int, answered: float, released: float) -> Grant:
    return Grant(
        guard="g", operation_id=op, fencing_token=token, answered=answered, released=released
    )


def test_a_clean_history_passes() -> None:
    """Back-to-back grants with increasing tokens and an in-window DUPLICATE pass."""
    grants = [_grant("a", 1, 0.0, 1.0), _grant("b", 2, 1.1, 2.0), _grant("c", 3, 2.2, 9.0)]
    dup = Duplicate(guard="g", sent=3.0, answered=3.1, earlier_started=0.0)
    assert check(grants, [dup], capacity=1, dedup_window=5.0) == []


def test_overlapping_grants_beyond_capacity_are_found() -> None:
    """A grant answered while capacity others still held is reported."""
    grants = [_grant("a", 1, 0.0, 2.0), _grant("b", 2, 1.0, 3.0)]
    assert any("granted while a held" in p for p in check(grants, [], capacity=1, dedup_window=5.0))
    assert check(grants, [], capacity=2, dedup_window=5.0) == []


def test_fencing_tokens_going_back_or_repeating_are_found() -> None:
    """A later grant with a smaller (or the same) token is reported."""
    backwards = [_grant("a", 5, 0.0, 1.0), _grant("b", 4, 2.0, 3.0)]
    assert any("fencing token" in p for p in check(backwards, [], capacity=1, dedup_window=5))
    twice = [_grant("a", 5, 0.0, 1.0), _grant("b", 5, 2.0, 3.0)]
    assert any("twice" in p for p in check(twice, [], capacity=1, dedup_window=5))


def test_a_duplicate_outside_its_window_is_found() -> None:
    """A DUPLICATE of a run that started more than the window before the call is reported."""
    dup = Duplicate(guard="g", sent=10.0, answered=10.1, earlier_started=1.0)
    assert any("outside" in p for p in check([], [dup], capacity=1, dedup_window=5.0))
