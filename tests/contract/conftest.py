"""The stores the contract suite runs against: one line in ``STORES`` per store.

Every test in this directory takes a ``store`` (or ``open_stores``) and runs
unchanged against each entry of ``STORES``. To add a store, append one
``pytest.param(StoreKind(...), id="...")``.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from runguard.server.stores import Store, open_store
from tests import etcd_harness


@dataclass(frozen=True, slots=True)
class StoreKind:
    """How to open one kind of store, and the characteristics it must declare.

    Attributes:
        open: builds a store keeping its state under ``workdir`` (the same
            workdir reopens the same durable state) with ``history`` changes
            kept for ``changes_since``.
        durable: its state outlives the store (``Store.durable``).
        exclusive: one server process is its only writer (``Store.exclusive``).
        inline: its calls complete without suspending (``Store.inline``).
    """

    open: Callable[[Path, int], Store]
    durable: bool
    exclusive: bool
    inline: bool


def _memory(workdir: Path, history: int) -> Store:
    return open_store("memory://", history=history)


def _sqlite(workdir: Path, history: int) -> Store:
    return open_store(f"sqlite://{workdir / 'runguard.db'}", history=history)


def _etcd(size: int) -> Callable[[Path, int], Store]:
    def open_on(workdir: Path, history: int) -> Store:
        # One key prefix per workdir: reopening the workdir reopens its state.
        prefix = "contract-" + hashlib.sha1(str(workdir).encode()).hexdigest()[:16]
        return open_store(etcd_harness.shared(size).url(prefix), history=history)

    return open_on


STORES = [
    pytest.param(StoreKind(_memory, durable=False, exclusive=True, inline=True), id="memory"),
    pytest.param(StoreKind(_sqlite, durable=True, exclusive=True, inline=False), id="sqlite"),
    pytest.param(StoreKind(_etcd(1), durable=True, exclusive=False, inline=False), id="etcd"),
    pytest.param(
        StoreKind(_etcd(3), durable=True, exclusive=False, inline=False), id="etcd-cluster"
    ),
]
"""Every store the contract runs against."""


class OpenStore:
    """Opens stores of one kind for a test and closes them all after it."""

    def __init__(self, kind: StoreKind, root: Path) -> None:
        self.kind = kind
        self._root = root
        self._numbers = itertools.count()
        self._opened: list[Store] = []

    def workdir(self) -> Path:
        """A fresh directory for one store's state."""
        path = self._root / f"store-{next(self._numbers)}"
        path.mkdir()
        return path

    def __call__(self, *, history: int = 10_000, workdir: Path | None = None) -> Store:
        """A store with ``history`` changes kept; in a fresh workdir unless one is given."""
        store = self.kind.open(workdir if workdir is not None else self.workdir(), history)
        self._opened.append(store)
        return store

    async def close_all(self) -> None:
        """Close every store this test opened."""
        for store in self._opened:
            await store.close()


@pytest.fixture(params=STORES)
def store_kind(request: pytest.FixtureRequest) -> StoreKind:
    """One kind of store from ``STORES``."""
    kind: StoreKind = request.param
    return kind


@pytest.fixture
async def open_stores(store_kind: StoreKind, tmp_path: Path) -> AsyncIterator[OpenStore]:
    """Open stores of the kind under test; all are closed after the test."""
    opener = OpenStore(store_kind, tmp_path)
    yield opener
    await opener.close_all()


@pytest.fixture
def store(open_stores: OpenStore) -> Store:
    """A fresh store of the kind under test."""
    return open_stores()
