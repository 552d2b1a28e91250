"""What each store declares it is (its characteristics), and that it behaves so."""

from __future__ import annotations

from runguard.server.stores import Store
from tests.contract.conftest import OpenStore, StoreKind
from tests.contract.test_store_contract import acquire


def test_a_store_declares_the_characteristics_of_its_kind(
    store_kind: StoreKind, store: Store
) -> None:
    """Each store says whether it is durable, exclusive and inline, as its kind is."""
    declared = (store.durable, store.exclusive, store.inline)
    assert declared == (store_kind.durable, store_kind.exclusive, store_kind.inline)
    assert store.batch_limit >= 1


async def test_a_durable_store_keeps_its_guards_across_a_reopen_and_no_other_does(
    store_kind: StoreKind, open_stores: OpenStore
) -> None:
    """A guard committed before a close is there after a reopen just when the store is durable."""
    workdir = open_stores.workdir()
    old = open_stores(workdir=workdir)
    await acquire(old, "g", "a")
    await old.close()
    reopened = open_stores(workdir=workdir)
    found = await reopened.read("g")
    assert (found.version > 0) is store_kind.durable
    assert bool(found.doc.holders) is store_kind.durable
