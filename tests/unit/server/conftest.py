"""Fixtures for the server's units: a small-buffer config, a memory store, a watch hub."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from runguard.server.config import ServerConfig
from runguard.server.hub import Hub
from runguard.server.stores import MemoryStore


@pytest.fixture
def config() -> ServerConfig:
    """Watchers buffer 4 changes, quiet streams send Progress every 50 ms, "wide" has 3 slots."""
    return ServerConfig(watch_buffer=4, progress_interval=0.05, capacities={"wide": 3})


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    """A memory store keeping 8 changes of history; closed after the test."""
    memory = MemoryStore(fencing_floor=time.time_ns() // 1000, history=8)
    yield memory
    await memory.close()


@pytest.fixture
def hub(config: ServerConfig, store: MemoryStore) -> Hub:
    """A watch hub over the store."""
    return Hub(config, store)
