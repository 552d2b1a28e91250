"""The ``Store`` contract for batches (group commit): ``read_many`` and ``commit_batch``.

Every test runs unchanged against each store in ``conftest.STORES``.
"""

from __future__ import annotations

import asyncio
import itertools

from runguard.server.core import Change, GuardDoc, begin, end
from runguard.server.stores import Batch, Commit, Store, Write
from runguard.server.stores.base import reclaim_shard
from tests.contract.test_store_contract import POLICY, T0, acquire, command, next_commit
from tests.contract.test_store_growth import NO_WINDOW


async def grants(store: Store, guards: list[str], op: str = "a") -> list[Write]:
    """For each guard, a write of a Begin of ``op`` on the guard as the store has it."""
    found = await store.read_many(guards)
    writes = []
    for guard, current in zip(guards, found, strict=True):
        t = begin(current.doc, POLICY, command(op), T0)
        assert t.dirty
        writes.append(Write(guard, current.version, t.doc, t.changes))
    return writes


async def commit_all(store: Store, writes: list[Write]) -> Batch:
    """Commit a batch with nothing moved; a store that writes all or nothing lands it whole."""
    batch = await store.commit_batch(writes)
    assert batch.moved == {}
    assert [c.guard for c in batch.commits] == [w.guard for w in writes]
    return batch


async def test_read_many_reads_each_guard_as_read_does(store: Store) -> None:
    """``read_many`` gives, in order, what ``read`` gives for each guard, stored or not."""
    await acquire(store, "b", "x")
    many = await store.read_many(["a", "b", "c"])
    assert [v.doc for v in many] == [(await store.read(g)).doc for g in ["a", "b", "c"]]
    assert many[1].version == (await store.read("b")).version > 0
    assert many[0].version <= 0
    assert many[2].version <= 0


async def test_a_batch_writes_every_guard_with_its_own_changes(store: Store) -> None:
    """Each write of a batch lands with its document and its own changes, each carrying
    its commit's revision, and every guard reads back at that revision."""
    guards = [f"g{n}" for n in range(5)]
    batch = await commit_all(store, await grants(store, guards))
    for commit in batch.commits:
        assert [c.run.guard for c in commit.changes if c.run] == [commit.guard]
        assert {c.revision for c in commit.changes} == {commit.revision}
        current = await store.read(commit.guard)
        assert (current.doc, current.version) == (commit.doc, commit.revision)
    revisions = [c.revision for c in batch.commits]
    assert revisions == sorted(revisions)
    assert store.revision == revisions[-1]


async def test_the_feed_delivers_a_batch_in_order(store: Store) -> None:
    """Every commit of a batch reaches the feed, in the order of the writes."""
    feed = store.subscribe()
    guards = ["p", "q", "r"]
    batch = await commit_all(store, await grants(store, guards))
    delivered = [await next_commit(feed) for _ in guards]
    assert [(c.guard, c.revision, c.changes) for c in delivered] == [
        (c.guard, c.revision, c.changes) for c in batch.commits
    ]


async def test_changes_since_replays_a_whole_batch(store: Store) -> None:
    """A resume from before a batch replays every change of it, in the order of the writes,
    even where the batch's guards share one revision."""
    before = store.revision
    guards = [f"h{n}" for n in range(4)]
    batch = await commit_all(store, await grants(store, guards))
    replayed = await store.changes_since(before)
    assert replayed == [c for commit in batch.commits for c in commit.changes]


async def test_a_moved_guard_comes_back_current_and_unwritten(store: Store) -> None:
    """A write whose guard moved since it was read is not written: the batch names the guard
    with its current document and version, and the write made on that lands."""
    stale = await grants(store, ["m", "n"])
    winner = await acquire(store, "m", "first")
    batch = await store.commit_batch(stale)
    current = await store.read("m")
    assert batch.moved["m"] == current
    assert current.doc == winner.doc
    assert "m" not in [c.guard for c in batch.commits]
    # The other write landed, or (all or nothing) may be sent again as it was.
    again = [w for w in stale if w.guard == "n" and w.guard not in [c.guard for c in batch.commits]]
    t = begin(current.doc, POLICY, command("second"), T0)
    retry = await store.commit_batch([Write("m", current.version, t.doc, t.changes), *again])
    assert retry.moved == {}
    assert (await store.read("m")).doc == t.doc
    assert [h.run.operation_id for h in (await store.read("n")).doc.holders] == ["a"]


async def test_a_batch_creates_updates_and_reclaims_together(store: Store) -> None:
    """One batch may create a guard, change another and reclaim a third; the reclaimed one
    reads as new, with fencing tokens above the ones it handed out."""
    await acquire(store, "old", "x")
    current = await store.read("old")
    ended = end(current.doc, NO_WINDOW, "x", "tok-x", T0 + 1)
    [kept] = await grants(store, ["kept"])
    [made] = await grants(store, ["made"])
    await commit_all(store, [kept])
    kept_now = await store.read("kept")
    renewed = end(kept_now.doc, POLICY, "a", "tok-a", T0 + 1)
    batch = await commit_all(
        store,
        [
            made,
            Write("kept", kept_now.version, renewed.doc, renewed.changes),
            Write("old", current.version, ended.doc, (), reclaim=True),
        ],
    )
    assert [c.reclaimed for c in batch.commits] == [False, False, True]
    again = await store.read("old")
    assert again.version <= 0
    assert again.doc.next_fencing > current.doc.holders[0].run.fencing_token
    assert [h.run.operation_id for h in (await store.read("made")).doc.holders] == ["a"]
    assert (await store.read("kept")).doc.holders == ()


async def test_two_reclaims_of_one_shard_in_one_batch(store: Store) -> None:
    """Two guards whose names share a shard of reclaims are reclaimed in one batch."""
    names = (f"s{n}" for n in itertools.count())
    first = next(names)
    second = next(n for n in names if reclaim_shard(n) == reclaim_shard(first))
    writes = []
    for guard in (first, second):
        await acquire(store, guard, "x")
    for guard in (first, second):
        current = await store.read(guard)
        t = end(current.doc, NO_WINDOW, "x", "tok-x", T0 + 1)
        writes.append(Write(guard, current.version, t.doc, (), reclaim=True))
    batch = await commit_all(store, writes)
    assert all(c.reclaimed for c in batch.commits)
    assert [v.version <= 0 for v in await store.read_many([first, second])] == [True, True]


async def test_a_batch_of_the_most_guards_with_large_documents_lands(store: Store) -> None:
    """A batch of ``batch_limit`` guards, each with many dedup entries, lands whole (a
    store splits what one round trip cannot carry)."""
    guards = [f"big{n}" for n in range(store.batch_limit)]
    found = await store.read_many(guards)
    writes = []
    for guard, current in zip(guards, found, strict=True):
        doc: GuardDoc = current.doc
        changes: list[Change] = []
        for n in range(40):
            t = begin(doc, POLICY, command(f"op{n}"), T0)
            doc = end(t.doc, POLICY, f"op{n}", f"tok-op{n}", T0).doc
            changes.extend(t.changes)
        writes.append(Write(guard, current.version, doc, tuple(changes)))
    batch = await commit_all(store, writes)
    assert len(batch.commits) == store.batch_limit
    assert [len((await store.read(g)).doc.accepted) for g in guards] == [40] * len(guards)


async def test_concurrent_batches_of_one_guard_let_one_win(store: Store) -> None:
    """Two batches racing for one guard at one version: exactly one writes it."""
    [a] = await grants(store, ["race"], "a")
    [b] = await grants(store, ["race"], "b")
    results = await asyncio.gather(store.commit_batch([a]), store.commit_batch([b]))
    landed: list[Commit] = [c for r in results for c in r.commits]
    assert len(landed) == 1
    assert sum("race" in r.moved for r in results) == 1
