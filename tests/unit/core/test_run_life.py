"""A run's life in the pure core: progress coalesced per run, cooperative cancel, and the
ended run kept with its dedup entry so duplicates and lookups can say how it went."""

from __future__ import annotations

import pytest

from runguard.server.core import (
    PROGRESS_INTERVAL,
    BeginCommand,
    CancelResult,
    ChangeKind,
    EndResult,
    Granted,
    GuardDoc,
    GuardPolicy,
    Rejection,
    RejectionReason,
    ReleaseReason,
    RunOutcome,
    RunProgress,
    begin,
    cancel,
    end,
    find_run,
    keep_alive,
    next_deadline,
    settle,
)
from runguard.server.errors import NotPermitted, RunNotFound
from tests.runs import run_of

T0 = 1_000.0
SEED = GuardPolicy()


def held(principal: str = "") -> GuardDoc:
    """A guard whose one slot is held by op-1 (token tok-1, submission fp-a) since T0."""
    command = BeginCommand(
        operation_id="op-1", fingerprint="fp-a", lease_token="tok-1", principal=principal
    )
    t = begin(GuardDoc(name="g", next_fencing=1), SEED, command, T0)
    assert isinstance(t.outcome, Granted)
    return t.doc


def report(doc: GuardDoc, at: float, fraction: float) -> GuardDoc:
    """op-1 reports ``fraction`` done at ``at``; returns the new document."""
    return keep_alive(doc, SEED, "op-1", "tok-1", at, progress=RunProgress(fraction=fraction)).doc


def test_reports_within_the_interval_become_one_later_change_with_the_latest_value() -> None:
    """The first report is shown at once; the next ones wait for the interval and only the last
    is shown, by the settle the guard's timer runs when it is due."""
    doc = held()
    first = keep_alive(doc, SEED, "op-1", "tok-1", T0 + 1, progress=RunProgress(fraction=0.1))
    assert [c.kind for c in first.changes] == [ChangeKind.PROGRESSED]
    doc = report(first.doc, T0 + 1.2, 0.2)
    second = keep_alive(doc, SEED, "op-1", "tok-1", T0 + 1.5, progress=RunProgress(fraction=0.3))
    assert second.changes == ()
    assert second.doc.holders[0].run.progress == RunProgress(fraction=0.3, at=T0 + 1.5)
    assert next_deadline(second.doc, SEED) == T0 + 1 + PROGRESS_INTERVAL

    assert settle(second.doc, SEED, T0 + 1.9).changes == ()
    shown = settle(second.doc, SEED, T0 + 2)

    (change,) = shown.changes
    assert change.kind is ChangeKind.PROGRESSED
    assert run_of(change).progress == RunProgress(fraction=0.3, at=T0 + 1.5)
    assert shown.doc.holders[0].progress_due is None


def test_progress_pending_when_the_run_ends_is_not_shown_after_it() -> None:
    """A run that ends with a report pending shows it in its RELEASED change, and nothing after."""
    doc = report(report(held(), T0 + 1, 0.1), T0 + 1.5, 0.9)

    ended = end(doc, SEED, "op-1", "tok-1", T0 + 1.6, outcome=RunOutcome.SUCCEEDED)

    (released,) = ended.changes
    assert run_of(released).progress == RunProgress(fraction=0.9, at=T0 + 1.5)
    # The only deadline left is the guard's reclaim, a window after the run ended.
    assert next_deadline(ended.doc, SEED) == T0 + 1.6 + SEED.dedup_window
    assert settle(ended.doc, SEED, T0 + 2).changes == ()


def test_the_ended_run_answers_a_duplicate_and_a_lookup_with_its_outcome() -> None:
    """End(SUCCEEDED, result) is kept with the dedup entry: DUPLICATE and find_run show it."""
    doc = end(
        held(), SEED, "op-1", "tok-1", T0 + 2, outcome=RunOutcome.SUCCEEDED, result='{"n":1}'
    ).doc
    again = BeginCommand(operation_id="op-2", fingerprint="fp-a", lease_token="tok-2")

    rejection = begin(doc, SEED, again, T0 + 3).outcome

    assert isinstance(rejection, Rejection)
    assert rejection.reason is RejectionReason.DUPLICATE
    assert "(operation_id=op-1, ended: succeeded)" in rejection.message
    assert rejection.duplicate_of is not None
    ending = rejection.duplicate_of.ending
    assert ending is not None
    assert (ending.reason, ending.outcome, ending.result) == (
        ReleaseReason.ENDED,
        RunOutcome.SUCCEEDED,
        '{"n":1}',
    )
    assert find_run(doc, SEED, "op-1", T0 + 3) == rejection.duplicate_of
    # Known for a window from its end (T0 + 2), however long it ran.
    assert find_run(doc, SEED, "op-1", T0 + SEED.dedup_window + 1) == rejection.duplicate_of
    with pytest.raises(RunNotFound, match="no longer kept"):
        find_run(doc, SEED, "op-1", T0 + 2 + SEED.dedup_window)


def test_a_run_that_outlived_its_window_is_known_a_window_after_it_ended() -> None:
    """A run longer than the dedup window makes no DUPLICATE of a later submission, but its
    End is kept: GetRun shows the outcome and result for a window from the end."""
    long_end = T0 + SEED.dedup_window + 60
    doc = end(
        held(), SEED, "op-1", "tok-1", long_end, outcome=RunOutcome.SUCCEEDED, result='{"n":2}'
    ).doc
    found = find_run(doc, SEED, "op-1", long_end + 1)
    assert found.ending is not None
    assert (found.ending.outcome, found.ending.result) == (RunOutcome.SUCCEEDED, '{"n":2}')
    again = BeginCommand(operation_id="op-2", fingerprint="fp-a", lease_token="tok-2")
    assert not isinstance(begin(doc, SEED, again, long_end + 1).outcome, Rejection)
    assert next_deadline(doc, SEED) == long_end + SEED.dedup_window


def test_only_the_first_end_records_an_outcome() -> None:
    """A repeated End is ALREADY_ENDED and leaves the first outcome as it was."""
    doc = end(held(), SEED, "op-1", "tok-1", T0 + 1, outcome=RunOutcome.FAILED).doc

    again = end(doc, SEED, "op-1", "tok-1", T0 + 2, outcome=RunOutcome.SUCCEEDED)

    assert again.outcome is EndResult.ALREADY_ENDED
    kept = find_run(again.doc, SEED, "op-1", T0 + 2).ending
    assert kept is not None
    assert kept.outcome is RunOutcome.FAILED


def test_cancel_marks_the_run_and_keeps_its_slot() -> None:
    """Cancel by the run's principal marks it once; the slot stays held and Begin is IN_FLIGHT."""
    doc = held("alice")

    t = cancel(doc, SEED, "op-1", T0 + 1, reason="stop", by="alice")

    result, run = t.outcome
    assert result is CancelResult.REQUESTED
    assert run.cancel is not None
    assert (run.cancel.reason, run.cancel.by) == ("stop", "alice")
    assert [c.kind for c in t.changes] == [ChangeKind.CANCEL_REQUESTED]
    assert [h.run for h in t.doc.holders] == [run]
    other = BeginCommand(operation_id="op-2", fingerprint="fp-b", lease_token="tok-2")
    refused = begin(t.doc, SEED, other, T0 + 2).outcome
    assert isinstance(refused, Rejection)
    assert refused.reason is RejectionReason.IN_FLIGHT
    again = cancel(t.doc, SEED, "op-1", T0 + 3, by="ops", admin=True)
    assert again.outcome[0] is CancelResult.ALREADY_REQUESTED
    assert not again.dirty


def test_cancel_by_another_principal_is_refused_and_changes_nothing() -> None:
    """Cancel of alice's run by mallory (not an admin) raises NotPermitted."""
    with pytest.raises(NotPermitted, match="alice"):
        cancel(held("alice"), SEED, "op-1", T0 + 1, by="mallory")


def test_cancel_of_an_unknown_run_is_not_found() -> None:
    """Cancel of an operation_id the guard never had raises RunNotFound."""
    with pytest.raises(RunNotFound, match="never granted"):
        cancel(held(), SEED, "op-9", T0 + 1, admin=True)
