"""Stores, picked by URL in one place: ``memory://`` today."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from runguard.server.stores.base import Commit, Store, Versioned
from runguard.server.stores.memory import MemoryStore

__all__ = ["Commit", "MemoryStore", "Store", "Versioned", "open_store"]

SCHEMES = ("memory",)


def open_store(url: str, *, history: int = 10_000) -> Store:
    """Build the store a URL names.

    Raises:
        ValueError: the URL's scheme is not one of :data:`SCHEMES`.
    """
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryStore(fencing_floor=time.time_ns() // 1000, history=history)
    raise ValueError(f"unsupported store URL {url!r}: the schemes are {', '.join(SCHEMES)}")
