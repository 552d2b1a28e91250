"""The ``Store`` contract for bounded state: stored defaults, reclaiming, paging, dead waiters.

Every test runs unchanged against each store in ``conftest.STORES``.
"""

from __future__ import annotations

import asyncio

import pytest

from runguard.server.core import GuardPolicy, GuardSettings, begin, configure, end
from runguard.server.errors import VersionConflict
from runguard.server.stores import Commit, Store
from tests.contract.conftest import OpenStore
from tests.contract.test_store_contract import (
    T0,
    acquire,
    apply,
    command,
    next_commit,
    release,
)

NO_WINDOW = GuardPolicy(capacity=1, dedup_window=0.0, max_queue=10)
"""Nothing is remembered after a run ends, so its End leaves the guard with nothing to keep."""


async def reclaim(store: Store, guard: str) -> Commit:
    """Run a Begin and End with no dedup window, then commit the guard's reclaiming."""
    await apply(store, guard, lambda doc: begin(doc, NO_WINDOW, command("r"), T0))
    current = await store.read(guard)
    t = end(current.doc, NO_WINDOW, "r", "tok-r", T0 + 1)
    assert t.reclaim
    return await store.commit(guard, current.version, t.doc, (), reclaim=True)


# -- stored defaults ---------------------------------------------------------------------


async def test_the_first_defaults_proposed_are_kept(open_stores: OpenStore) -> None:
    """The first server's defaults are stored; a later proposal gets the stored ones back."""
    workdir = open_stores.workdir()
    first = GuardSettings(capacity=2, dedup_window=60.0, max_queue=7)
    store = open_stores(workdir=workdir)
    assert await store.defaults(first) == first
    assert await store.defaults(GuardSettings(dedup_window=0.0)) == first


async def test_a_guards_own_settings_are_stored_with_it(store: Store) -> None:
    """Settings given to a guard come back from every read of it."""
    settings = GuardSettings(capacity=3, dedup_window=1.5, max_queue=2)
    await apply(store, "g", lambda doc: configure(doc, NO_WINDOW, settings, T0))
    assert (await store.read("g")).doc.settings == settings
    _, docs = await store.snapshot(None)
    assert [d.settings for d in docs] == [settings]


# -- reclaiming ----------------------------------------------------------------------------


async def test_a_reclaimed_guard_is_gone_from_every_read(store: Store) -> None:
    """A reclaimed guard reads as new, and is neither listed, snapshotted nor counted."""
    await acquire(store, "kept", "k")
    commit = await reclaim(store, "gone")
    assert commit.reclaimed
    assert commit.changes == ()
    found = await store.read("gone")
    assert found.version <= 0  # not stored
    assert found.doc.holders == ()
    _, docs = await store.snapshot(None)
    assert [d.name for d in docs] == ["kept"]
    _, page = await store.list_guards("", 10)
    assert [d.name for d in page] == ["kept"]
    assert await store.guard_count() == 1


async def test_fencing_tokens_keep_increasing_across_reclaiming(store: Store) -> None:
    """A name written again after it was reclaimed grants tokens above all its earlier ones."""
    first = await acquire(store, "g", "a")
    token = first.changes[0].run.fencing_token if first.changes[0].run else 0
    await release(store, "g", "a")
    for _ in range(3):
        await reclaim(store, "g")
    again = await acquire(store, "g", "b")
    assert again.changes[0].run is not None
    assert again.changes[0].run.fencing_token > token + 3


async def test_fencing_tokens_keep_increasing_across_reclaiming_and_reopening(
    open_stores: OpenStore,
) -> None:
    """A durable store keeps the reclaimed guards' floor when it is opened again."""
    workdir = open_stores.workdir()
    store = open_stores(workdir=workdir)
    await reclaim(store, "g")
    floor = (await store.read("g")).doc.next_fencing
    await store.close()
    again = open_stores(workdir=workdir)
    assert (await again.read("g")).doc.next_fencing >= floor


async def test_a_version_from_before_reclaiming_never_matches_again(store: Store) -> None:
    """A command that read the guard before it was reclaimed cannot commit over its new life."""
    stale = await store.read("g")
    await reclaim(store, "g")
    for op in ("x", "y"):
        await acquire(store, "g", op)
        await release(store, "g", op)
    doc = begin(stale.doc, NO_WINDOW, command("late"), T0).doc
    with pytest.raises(VersionConflict):
        await store.commit("g", stale.version, doc, ())


async def test_a_create_from_a_read_older_than_the_names_reclaim_conflicts(
    store: Store,
) -> None:
    """A guard read as absent, then created, granted and reclaimed elsewhere, cannot be
    created from that stale read: its floor is below the tokens the name handed out."""
    stale = await store.read("g")
    used = await apply(store, "g", lambda doc: begin(doc, NO_WINDOW, command("first"), T0))
    token = used.changes[0].run.fencing_token if used.changes[0].run else 0
    current = await store.read("g")
    t = end(current.doc, NO_WINDOW, "first", "tok-first", T0 + 1)
    await store.commit("g", current.version, t.doc, (), reclaim=True)
    late = begin(stale.doc, NO_WINDOW, command("late"), T0 + 2)
    assert late.changes[0].run is not None
    assert late.changes[0].run.fencing_token <= token  # what the stale read would grant
    with pytest.raises(VersionConflict):
        await store.commit("g", stale.version, late.doc, late.changes)
    again = await acquire(store, "g", "fresh")
    assert again.changes[0].run is not None
    assert again.changes[0].run.fencing_token > token


async def test_the_feed_reports_a_reclaim(store: Store) -> None:
    """Subscribers learn a guard was reclaimed, in revision order with its other commits."""
    feed = store.subscribe()
    written = await reclaim(store, "g")
    first = await next_commit(feed)
    second = await next_commit(feed)
    assert (first.reclaimed, second.reclaimed) == (False, True)
    assert second.guard == "g"
    assert first.revision < second.revision == written.revision


async def test_a_resume_after_a_reclaim_replays_without_resync(store: Store) -> None:
    """changes_since from a reclaim's revision is empty history, not a gap."""
    commit = await reclaim(store, "g")
    assert await store.changes_since(commit.revision) == []


# -- paging ------------------------------------------------------------------------------


async def test_list_guards_pages_by_name(store: Store) -> None:
    """Guards come in name order, ``limit`` at a time, each page after the last name."""
    names = [f"g{i:02d}" for i in range(7)]
    for name in reversed(names):
        await acquire(store, name, "a")
    pages: list[list[str]] = []
    after = ""
    while True:
        _, docs = await store.list_guards(after, 3)
        if not docs:
            break
        pages.append([d.name for d in docs])
        after = docs[-1].name
    assert pages == [names[0:3], names[3:6], names[6:7]]


async def test_a_snapshot_of_every_guard_spans_many_pages(store: Store) -> None:
    """Every guard comes back, in name order, when there are more than one page of them."""
    names = [f"p{i:04d}" for i in range(1_100)]
    settings = GuardSettings(capacity=2)
    await asyncio.gather(
        *(apply(store, name, lambda doc: configure(doc, NO_WINDOW, settings, T0)) for name in names)
    )
    revision, docs = await store.snapshot(None)
    assert [d.name for d in docs] == names
    assert revision <= store.revision
    named = await store.snapshot(names[::-1])
    assert [d.name for d in named[1]] == names[::-1]
    assert await store.guard_count() == len(names)


# -- waiters of servers that are gone ------------------------------------------------------


async def test_waiters_of_a_server_that_is_gone_are_left_out(store: Store) -> None:
    """A queued caller of another (dead) server is never read back, so never promoted."""
    await acquire(store, "g", "holder")
    await apply(
        store,
        "g",
        lambda doc: begin(doc, NO_WINDOW, command("orphan", wait=30, owner="gone-server"), T0),
    )
    await acquire(store, "g", "mine", wait=30)
    found = await store.read("g")
    assert [w.operation_id for w in found.doc.queue] == ["mine"]
    ended = end(found.doc, NO_WINDOW, "holder", "tok-holder", T0 + 1)
    assert [c.run.operation_id for c in ended.changes if c.run] == ["holder", "mine"]
