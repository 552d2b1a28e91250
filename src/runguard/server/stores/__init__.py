"""Stores, picked by URL in one place.

- ``memory://``: embedded, nothing to install; forgets on restart.
- ``sqlite:///abs/path.db`` (or ``sqlite:relative/path.db``), optionally
  ``?synchronous=normal``: one durable file, for one server process.
- ``etcd://h1:p1,h2:p2/prefix?timeout=3&presence_ttl=5``: an etcd cluster, for
  several replicas (the prefix defaults to ``runguard``); needs the ``etcd``
  extra (``runguard.server.stores.etcd``, imported only for such a URL).
"""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

from runguard.server.stores.base import Batch, Commit, FeedGap, Store, Versioned, Write
from runguard.server.stores.memory import MemoryStore
from runguard.server.stores.sqlite import SqliteStore

__all__ = [
    "Batch",
    "Commit",
    "FeedGap",
    "MemoryStore",
    "SqliteStore",
    "Store",
    "Versioned",
    "Write",
    "open_store",
]

SCHEMES = ("etcd", "memory", "sqlite")


def _clock_floor() -> int:
    """Microseconds since the Unix epoch: where a new guard's fencing tokens start."""
    return time.time_ns() // 1000


def open_store(url: str, *, history: int = 10_000) -> Store:
    """Build the store a URL names.

    Raises:
        ValueError: the URL's scheme is not one of :data:`SCHEMES`, or the URL
            is malformed for its scheme.
        StoreUnavailable: a durable store cannot be opened.
    """
    parts = urlsplit(url)
    if parts.scheme == "memory":
        return MemoryStore(fencing_floor=_clock_floor(), history=history)
    if parts.scheme == "sqlite":
        options = _options(url, parts.query, {"synchronous"})
        if parts.netloc or not parts.path or parts.fragment:
            raise ValueError(
                f"a sqlite store URL is sqlite:///absolute/path.db or sqlite:relative.db "
                f"(with ?synchronous=full or normal), got {url!r}"
            )
        return SqliteStore(
            parts.path,
            fencing_floor=_clock_floor(),
            history=history,
            synchronous=options.get("synchronous", "full"),
        )
    if parts.scheme == "etcd":
        return _etcd(url, history)
    raise ValueError(f"unsupported store URL {url!r}: the schemes are {', '.join(SCHEMES)}")


def _options(url: str, query: str, known: set[str]) -> dict[str, str]:
    try:
        options = {k: v[-1] for k, v in parse_qs(query, strict_parsing=bool(query)).items()}
    except ValueError:
        raise ValueError(f"malformed store options in {url!r}") from None
    unknown = set(options) - known
    if unknown:
        raise ValueError(f"unknown store options {sorted(unknown)} in {url!r}")
    return options


def _etcd(url: str, history: int) -> Store:
    try:
        from runguard.server.stores.etcd import EtcdStore  # optional extra: imported only here
    except ImportError as error:
        raise ValueError(
            f"{url!r} needs the etcd client: pip install 'runguard[etcd]' ({error})"
        ) from error
    parts = urlsplit(url)
    endpoints = [e for e in parts.netloc.split(",") if e]
    if not endpoints or any(":" not in e for e in endpoints) or parts.fragment:
        raise ValueError(
            f"an etcd store URL is etcd://host:port[,host:port...][/prefix], got {url!r}"
        )
    options = _options(url, parts.query, {"timeout", "presence_ttl"})
    try:
        timeout = float(options.get("timeout", "3"))
        presence_ttl = int(options.get("presence_ttl", "5"))
    except ValueError:
        raise ValueError(f"etcd store options must be numbers, got {url!r}") from None
    if not (timeout > 0 and presence_ttl >= 1):
        raise ValueError(f"timeout must be > 0 and presence_ttl >= 1 in {url!r}")
    return EtcdStore(
        endpoints,
        parts.path.strip("/") or "runguard",
        fencing_floor=0,  # etcd's revisions seed the tokens (see FENCING_BASE)
        history=history,
        timeout=timeout,
        presence_ttl=presence_ttl,
    )
