"""The ``Store`` contract: every guarantee ``stores/base.py`` states, for every store.

Documents and changes are made by the core's own transitions (Begin, End,
KeepAlive), so each commit is one a server could make. Every test runs
unchanged against each store in ``conftest.STORES``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from runguard.server.core import (
    BeginCommand,
    ChangeKind,
    GuardDoc,
    GuardPolicy,
    Transition,
    begin,
    end,
    keep_alive,
)
from runguard.server.errors import VersionConflict
from runguard.server.stores import Commit, FeedGap, Store
from tests.contract.conftest import OpenStore
from tests.runs import run_of

T0 = 1_000.0
"""The time every transition runs at: no lease is ever due."""

POLICY = GuardPolicy(capacity=1, max_queue=10)
"""Single flight, so an End that frees the slot also grants the next in the queue."""

TIMEOUT = 2.0
"""Seconds a feed may take to deliver a commit (generous for networked stores)."""


def command(op: str, *, wait: float = 0.0, owner: str = "") -> BeginCommand:
    """A Begin for ``op`` with fingerprint ``fp-<op>`` and lease token ``tok-<op>``, queued
    (if it queues) as a caller of server ``owner``."""
    return BeginCommand(
        operation_id=op, fingerprint=f"fp-{op}", lease_token=f"tok-{op}", wait=wait, owner=owner
    )


async def apply(store: Store, guard: str, step: Callable[[GuardDoc], Transition[Any]]) -> Commit:
    """Read the guard, let the core make a transition, commit it at the version read."""
    current = await store.read(guard)
    transition = step(current.doc)
    assert transition.dirty, transition.outcome
    return await store.commit(guard, current.version, transition.doc, transition.changes)


async def acquire(store: Store, guard: str, op: str, *, wait: float = 0.0) -> Commit:
    """Commit a Begin of ``op`` (granted, or queued when the guard is full and ``wait`` > 0)."""
    return await apply(
        store,
        guard,
        lambda doc: begin(doc, POLICY, command(op, wait=wait, owner=store.replica), T0),
    )


async def release(store: Store, guard: str, op: str) -> Commit:
    """Commit the End of ``op`` with its own lease token."""
    return await apply(store, guard, lambda doc: end(doc, POLICY, op, f"tok-{op}", T0))


async def renew(store: Store, guard: str, op: str) -> Commit:
    """Commit a KeepAlive of ``op``: a real write that changes no slot."""
    return await apply(
        store, guard, lambda doc: keep_alive(doc, POLICY, op, f"tok-{op}", T0 + 1, ttl=60)
    )


async def cycles(store: Store, guard: str, count: int) -> list[Commit]:
    """``count`` commits of one change each: End the guard's holder if any, else Begin a new run."""
    commits: list[Commit] = []
    for _ in range(count):
        holders = (await store.read(guard)).doc.holders
        if holders:
            commits.append(await release(store, guard, holders[0].run.operation_id))
        else:
            commits.append(await acquire(store, guard, f"{guard}-{store.revision}"))
    return commits


async def next_commit(feed: AsyncIterator[Commit | FeedGap]) -> Commit:
    """The feed's next commit, failing the test if none arrives in time or a gap does."""
    item = await asyncio.wait_for(anext(feed), TIMEOUT)
    assert isinstance(item, Commit), f"the feed reported a gap: {item!r}"
    return item


async def drain(feed: AsyncIterator[Commit | FeedGap]) -> list[Commit | FeedGap]:
    """Everything the feed yields until it ends."""
    return [commit async for commit in feed]


# -- read and commit ---------------------------------------------------------


async def test_new_store_is_at_revision_zero(store: Store) -> None:
    """A store that has committed nothing is at revision 0."""
    assert store.revision == 0


async def test_read_of_unknown_guard_is_a_new_document_at_version_zero(
    open_stores: OpenStore,
) -> None:
    """An unknown guard reads as an empty document at version 0, fencing from the clock up."""
    before = time.time_ns() // 1000
    store = open_stores()
    found = await store.read("fresh")
    assert found.version <= 0  # not stored
    assert found.doc == GuardDoc(name="fresh", next_fencing=found.doc.next_fencing)
    assert found.doc.next_fencing >= before


async def test_commit_at_the_version_read_succeeds_and_moves_the_version(store: Store) -> None:
    """A commit at the version read swaps the document in and gives the guard a new version."""
    first = await acquire(store, "g", "a")
    after = await store.read("g")
    assert after.doc == first.doc
    assert after.version != 0
    second = await release(store, "g", "a")
    again = await store.read("g")
    assert again.doc == second.doc
    assert again.version not in (0, after.version)


@pytest.mark.parametrize(
    "version",
    [
        pytest.param(0, id="stale"),
        pytest.param(7, id="never-was"),
    ],
)
async def test_commit_at_another_version_raises_and_writes_nothing(
    store: Store, version: int
) -> None:
    """A commit naming a version the guard is not at raises VersionConflict and changes nothing."""
    written = await acquire(store, "g", "a")
    before = await store.read("g")
    feed = store.subscribe()
    moved = end(before.doc, POLICY, "a", "tok-a", T0)
    with pytest.raises(VersionConflict):
        await store.commit("g", version, moved.doc, moved.changes)
    assert await store.read("g") == before
    assert store.revision == written.revision
    assert await store.changes_since(written.revision) == []
    marker = await acquire(store, "other", "b")
    assert await next_commit(feed) == marker


async def test_commit_returns_the_changes_carrying_its_revision(store: Store) -> None:
    """A commit's changes are the ones given, in order, each carrying the commit's revision."""
    await acquire(store, "g", "a")
    queued = await acquire(store, "g", "b", wait=30)
    before = await store.read("g")
    transition = end(before.doc, POLICY, "a", "tok-a", T0)
    commit = await store.commit("g", before.version, transition.doc, transition.changes)
    assert [(c.kind, run_of(c).operation_id) for c in commit.changes] == [
        (ChangeKind.RELEASED, "a"),
        (ChangeKind.ACQUIRED, "b"),
    ]
    assert {c.revision for c in commit.changes} == {commit.revision}
    assert commit.revision > queued.revision
    assert (commit.guard, commit.doc) == ("g", transition.doc)


async def test_revisions_strictly_increase_across_commits_and_guards(store: Store) -> None:
    """Every commit takes a revision above every earlier one, whatever guard it writes."""
    commits = []
    for guard in ("a", "b", "a", "c", "b"):
        commits.extend(await cycles(store, guard, 2))
    revisions = [c.revision for c in commits]
    assert revisions == sorted(set(revisions))
    assert revisions[0] > 0
    assert store.revision == revisions[-1]


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(renew, id="keep-alive"),
        pytest.param(lambda s, g, op: acquire(s, g, "queued", wait=30), id="queue"),
    ],
)
async def test_commit_without_changes_still_takes_a_revision(
    store: Store, write: Callable[[Store, str, str], Any]
) -> None:
    """A write that changes no slot (a renewal, a caller joining the queue) takes a revision."""
    held = await acquire(store, "g", "a")
    commit: Commit = await write(store, "g", "a")
    assert commit.changes == ()
    assert commit.revision > held.revision
    assert store.revision == commit.revision
    assert (await store.read("g")).doc == commit.doc


async def test_fencing_of_a_new_document_is_above_tokens_handed_out_before_a_restart(
    open_stores: OpenStore,
) -> None:
    """After a restart, a guard's next fencing token is above every token handed out before."""
    workdir = open_stores.workdir()
    old = open_stores(workdir=workdir)
    await acquire(old, "g", "a")
    await release(old, "g", "a")
    token = run_of((await acquire(old, "g", "b")).changes[0]).fencing_token
    await old.close()
    reopened = open_stores(workdir=workdir)
    assert (await reopened.read("g")).doc.next_fencing > token


# -- subscribe and close -------------------------------------------------------


async def test_subscribe_delivers_every_later_commit_in_order_to_every_subscriber(
    store: Store,
) -> None:
    """Each subscriber gets every commit made after subscribe() (even unread), in order."""
    await acquire(store, "early", "x")
    feeds = [store.subscribe(), store.subscribe()]
    commits = await cycles(store, "a", 3) + await cycles(store, "b", 2)
    for feed in feeds:
        assert [await next_commit(feed) for _ in commits] == commits


async def test_close_ends_every_subscribe_iterator(open_stores: OpenStore) -> None:
    """close() ends the subscribe iterators, whether one is waiting for a commit or not."""
    store = open_stores()
    idle = store.subscribe()
    waiting = store.subscribe()
    pending = asyncio.create_task(drain(waiting))
    await asyncio.sleep(0)
    await store.close()
    assert await asyncio.wait_for(pending, TIMEOUT) == []
    assert await asyncio.wait_for(drain(idle), TIMEOUT) == []


# -- snapshot ------------------------------------------------------------------


async def test_snapshot_of_every_guard_lists_each_written_guard(store: Store) -> None:
    """snapshot(None) returns every written guard's document, at the current revision."""
    for guard in ("b", "a", "c"):
        await acquire(store, guard, f"{guard}-1")
    await release(store, "a", "a-1")
    await store.read("never-written")
    revision, docs = await store.snapshot(None)
    assert revision == store.revision
    assert {d.name: d for d in docs} == {g: (await store.read(g)).doc for g in ("a", "b", "c")}
    assert len(docs) == 3


async def test_snapshot_of_named_guards_gives_new_documents_for_unknown_ones(
    store: Store,
) -> None:
    """snapshot(names) returns exactly those guards; an unknown one comes back as a new document."""
    held = await acquire(store, "a", "a-1")
    await acquire(store, "b", "b-1")
    revision, docs = await store.snapshot(["a", "unknown"])
    assert revision == store.revision
    by_name = {d.name: d for d in docs}
    assert len(docs) == 2
    assert by_name["a"] == held.doc
    assert by_name["unknown"] == (await store.read("unknown")).doc
    assert by_name["unknown"].holders == ()


async def test_snapshot_of_an_empty_store_is_empty_at_revision_zero(store: Store) -> None:
    """A store with nothing written snapshots to no guards at revision 0."""
    assert await store.snapshot(None) == (0, [])


# -- changes_since ---------------------------------------------------------------


async def test_changes_since_returns_exactly_the_changes_above_a_revision(store: Store) -> None:
    """changes_since(r) returns every change with a revision above r, in order, for each r."""
    commits = (
        await cycles(store, "a", 3) + await cycles(store, "b", 2) + await cycles(store, "a", 2)
    )
    changes = [change for commit in commits for change in commit.changes]
    for after in [0, *(c.revision for c in commits)]:
        assert await store.changes_since(after) == [c for c in changes if c.revision > after]


async def test_changes_since_the_current_revision_is_empty(store: Store) -> None:
    """A caller that has seen everything gets an empty list, not None."""
    await cycles(store, "a", 2)
    assert await store.changes_since(store.revision) == []


@pytest.mark.parametrize(
    "ahead",
    [
        pytest.param(1, id="next"),
        pytest.param(1000, id="far"),
    ],
)
async def test_changes_since_a_revision_beyond_the_current_one_is_none(
    store: Store, ahead: int
) -> None:
    """A revision the store has not reached (e.g. from another epoch) gives None."""
    await cycles(store, "a", 2)
    assert await store.changes_since(store.revision + ahead) is None


async def test_changes_since_is_none_when_the_history_was_evicted(open_stores: OpenStore) -> None:
    """With a small history, a revision before the kept changes gives None; a recent one works."""
    store = open_stores(history=3)
    commits = await cycles(store, "a", 10)
    assert await store.changes_since(0) is None
    assert await store.changes_since(commits[2].revision) is None
    recent = [c.changes[0] for c in commits[-3:]]
    assert await store.changes_since(commits[-4].revision) == recent


# -- epoch -----------------------------------------------------------------------


async def test_epoch_is_a_non_empty_string_fixed_for_the_store_lifetime(store: Store) -> None:
    """The epoch is a non-empty string that commits do not change."""
    epoch = store.epoch
    assert isinstance(epoch, str)
    assert epoch
    await cycles(store, "a", 4)
    await store.snapshot(None)
    assert store.epoch == epoch


async def test_two_stores_have_different_epochs(open_stores: OpenStore) -> None:
    """Two stores created separately never share an epoch, so their revisions are never confused."""
    assert open_stores().epoch != open_stores().epoch
