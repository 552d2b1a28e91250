"""Guard settings kept in the document, and guards reclaimed when nothing is left to keep."""

from __future__ import annotations

import pytest

from runguard.server.core import (
    ChangeKind,
    GuardDoc,
    GuardPolicy,
    GuardSettings,
    begin,
    configure,
    end,
    next_deadline,
    policy_of,
    settle,
    view,
)
from tests.unit.core.test_transitions import SEED, T0, cmd, granted, hold, new_doc, queued

WIDE = GuardSettings(capacity=3, dedup_window=60.0, max_queue=5)
"""Settings of a guard's own, unlike the defaults in every field."""


def test_a_guard_without_settings_follows_the_defaults() -> None:
    """A document with no settings of its own is run by the policy it is given."""
    assert policy_of(new_doc(), SEED) == SEED
    assert not view(new_doc(), SEED).configured


def test_own_settings_replace_the_defaults_but_not_the_lease_limit() -> None:
    """A guard's settings take the place of the defaults; max_ttl stays the server's."""
    doc = configure(new_doc(), SEED, WIDE, T0).doc
    assert policy_of(doc, SEED) == GuardPolicy(
        capacity=3, dedup_window=60.0, max_ttl=SEED.max_ttl, max_queue=5
    )
    shown = view(doc, SEED)
    assert (shown.capacity, shown.dedup_window, shown.max_queue, shown.configured) == (
        3,
        60.0,
        5,
        True,
    )


def test_configure_is_a_configured_change_without_a_run() -> None:
    """Watchers learn new settings from a CONFIGURED change whose state shows them."""
    t = configure(new_doc(), SEED, WIDE, T0)
    assert t.dirty
    assert not t.reclaim
    assert [(c.kind, c.run, c.state.capacity) for c in t.changes] == [
        (ChangeKind.CONFIGURED, None, 3)
    ]


def test_the_same_settings_again_change_nothing() -> None:
    """Configuring a guard with the settings it has writes nothing."""
    doc = configure(new_doc(), SEED, WIDE, T0).doc
    again = configure(doc, SEED, WIDE, T0 + 1)
    assert not again.dirty
    assert again.changes == ()


def test_raising_capacity_grants_queued_callers_at_once() -> None:
    """More slots go to the queue in arrival order in the same transition."""
    doc, _ = hold(new_doc(), SEED, cmd("a", "fp-a"), T0)
    for op in ("b", "c", "d"):
        step = begin(doc, SEED, cmd(op, f"fp-{op}", wait=30), T0)
        queued(step)
        doc = step.doc
    t = configure(doc, SEED, GuardSettings(capacity=3), T0 + 1)
    kinds = [(c.kind, c.run.operation_id if c.run else None) for c in t.changes]
    assert kinds == [
        (ChangeKind.CONFIGURED, None),
        (ChangeKind.ACQUIRED, "b"),
        (ChangeKind.ACQUIRED, "c"),
    ]
    assert [w.operation_id for w in t.doc.queue] == ["d"]


def test_lowering_capacity_never_evicts_a_holder() -> None:
    """Holders over a lowered capacity keep their slots until they leave."""
    policy = GuardPolicy(capacity=2)
    doc, _ = hold(new_doc(), policy, cmd("a", "fp-a"), T0)
    doc, _ = hold(doc, policy, cmd("b", "fp-b"), T0)
    t = configure(doc, policy, GuardSettings(capacity=1), T0 + 1)
    assert [h.run.operation_id for h in t.doc.holders] == ["a", "b"]
    ended = end(t.doc, policy, "a", "tok-a", T0 + 2)
    assert [h.run.operation_id for h in ended.doc.holders] == ["b"]


def test_reset_drops_own_settings() -> None:
    """Configuring None makes the guard follow the defaults again."""
    doc = configure(new_doc(), SEED, WIDE, T0).doc
    t = configure(doc, SEED, None, T0 + 1)
    assert t.doc.settings is None
    assert view(t.doc, SEED).capacity == SEED.capacity


@pytest.mark.parametrize(
    ("window", "reclaimed_by_end"),
    [
        pytest.param(0.0, True, id="no-window"),
        pytest.param(5.0, False, id="entry-still-in-window"),
    ],
)
def test_end_reclaims_a_guard_with_nothing_left_to_keep(
    window: float, reclaimed_by_end: bool
) -> None:
    """An End that leaves no holder, queue, settings or live dedup entry reclaims the guard."""
    policy = GuardPolicy(dedup_window=window)
    doc, _ = hold(new_doc(), policy, cmd("a", "fp-a"), T0)
    t = end(doc, policy, "a", "tok-a", T0 + 1)
    assert t.reclaim is reclaimed_by_end


def test_settle_reclaims_once_the_last_entry_leaves_the_window() -> None:
    """An idle guard is reclaimed by the settle at the deadline next_deadline names."""
    doc, _ = hold(new_doc(), SEED, cmd("a", "fp-a"), T0)
    doc = end(doc, SEED, "a", "tok-a", T0 + 1).doc
    deadline = next_deadline(doc, SEED)
    assert deadline == T0 + 1 + SEED.dedup_window  # a window after the run ended
    early = settle(doc, SEED, deadline - 0.5)
    assert not early.dirty
    late = settle(doc, SEED, deadline)
    assert late.dirty
    assert late.reclaim
    assert late.changes == ()


def test_the_deadline_of_an_idle_guard_is_its_newest_entrys_unless_asked_exactly() -> None:
    """next_deadline reads the newest (last) dedup entry only; with an entry out of order
    (another replica's clock ahead) that deadline is early, and ``exact`` finds the later
    one, which the settle at the early deadline keeps the guard for."""
    doc, _ = hold(new_doc(), SEED, cmd("a", "fp-a"), T0 + 10)  # a clock 10 s ahead
    doc = end(doc, SEED, "a", "tok-a", T0 + 10).doc
    doc, _ = hold(doc, SEED, cmd("b", "fp-b"), T0)
    doc = end(doc, SEED, "b", "tok-b", T0 + 1).doc
    assert list(doc.accepted) == ["fp-a", "fp-b"]
    early = next_deadline(doc, SEED)
    assert early == T0 + 1 + SEED.dedup_window
    assert next_deadline(doc, SEED, exact=True) == T0 + 10 + SEED.dedup_window
    assert not settle(doc, SEED, early).reclaim


def test_a_guard_with_own_settings_is_never_reclaimed() -> None:
    """Settings of its own keep a guard, whatever else it has."""
    doc = configure(new_doc(), SEED, GuardSettings(dedup_window=0.0), T0).doc
    doc, _ = hold(doc, SEED, cmd("a", "fp-a"), T0)
    t = end(doc, SEED, "a", "tok-a", T0 + 1)
    assert not t.reclaim
    assert next_deadline(t.doc, SEED) is None


def test_a_new_document_is_never_dirty_for_reclaiming() -> None:
    """Settling a guard never written writes nothing (there is nothing to delete)."""
    t = settle(GuardDoc(name="g", next_fencing=1), SEED, T0)
    assert not t.dirty


def test_fencing_tokens_survive_in_the_document_until_it_is_reclaimed() -> None:
    """The reclaiming transition carries the next fencing token, for the store's floor."""
    policy = GuardPolicy(dedup_window=0.0)
    doc, run = hold(new_doc(next_fencing=40), policy, cmd("a", "fp-a"), T0)
    t = end(doc, policy, "a", "tok-a", T0 + 1)
    assert t.reclaim
    assert t.doc.next_fencing == run.fencing_token + 1
    again = begin(new_doc(next_fencing=t.doc.next_fencing), policy, cmd("b", "fp-b"), T0 + 2)
    assert granted(again).run.fencing_token > run.fencing_token
