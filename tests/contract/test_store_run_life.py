"""The ``Store`` contract for a run's life: progress, a cancel request and the ended run with
its outcome and result come back from every store, in documents, snapshots and the feed.

Every test runs unchanged against each store in ``conftest.STORES``.
"""

from __future__ import annotations

from runguard.server.core import (
    ChangeKind,
    RunOutcome,
    RunProgress,
    cancel,
    end,
    find_run,
    keep_alive,
)
from runguard.server.stores import Store
from tests.contract.test_store_contract import POLICY, T0, acquire, apply, next_commit


async def test_progress_cancel_and_outcome_survive_the_store(store: Store) -> None:
    """A holder's progress and cancel mark, then the ended run's outcome and result, read back
    equal from the store and arrive in the feed as PROGRESSED, CANCEL_REQUESTED, RELEASED."""
    feed = store.subscribe()
    await acquire(store, "g", "a")
    await next_commit(feed)
    report = RunProgress(fraction=0.5, message="half")
    await apply(store, "g", lambda doc: keep_alive(doc, POLICY, "a", "tok-a", T0, progress=report))
    await apply(
        store, "g", lambda doc: cancel(doc, POLICY, "a", T0, reason="stop", by="ops", admin=True)
    )

    held = (await store.read("g")).doc.holders[0]
    _, docs = await store.snapshot(["g"])

    assert held.run.progress == RunProgress(fraction=0.5, message="half", at=T0)
    assert held.progress_shown_at == T0
    assert held.run.cancel is not None
    assert (held.run.cancel.reason, held.run.cancel.by) == ("stop", "ops")
    assert docs[0].holders == (held,)

    await apply(
        store,
        "g",
        lambda doc: end(
            doc, POLICY, "a", "tok-a", T0, outcome=RunOutcome.SUCCEEDED, result='{"n":1}'
        ),
    )
    kinds = [(await next_commit(feed)).changes[0].kind for _ in range(3)]
    ended = find_run((await store.read("g")).doc, POLICY, "a", T0)

    assert kinds == [ChangeKind.PROGRESSED, ChangeKind.CANCEL_REQUESTED, ChangeKind.RELEASED]
    assert ended.ending is not None
    assert (ended.ending.outcome, ended.ending.result) == (RunOutcome.SUCCEEDED, '{"n":1}')
    assert ended.progress == held.run.progress
    assert ended.cancel == held.run.cancel
