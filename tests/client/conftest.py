"""What the tests of both Python clients share: one awaitable face over either client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from runguard.client import AsyncClient, Client
from tests.conftest import Served


class Api:
    """One face over both clients: every method is awaitable (the sync one runs on a thread)."""

    def __init__(self, kind: str, address: str) -> None:
        self.kind = kind
        self.sync = Client(address) if kind == "sync" else None
        self.aio = AsyncClient(address) if kind == "async" else None

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if self.aio is not None:
            return getattr(self.aio, name)  # type: ignore[no-any-return]
        method = getattr(self.sync, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(method, *args, **kwargs)

        return call

    async def close(self) -> None:
        if self.aio is not None:
            await self.aio.aclose()
        if self.sync is not None:
            self.sync.close()


@pytest.fixture(params=["sync", "async"])
async def api(request: pytest.FixtureRequest, served: Callable[..., Served]) -> AsyncIterator[Api]:
    """The sync and the async client, each against its own served server (60 s dedup
    window)."""
    server = served("--dedup-window", "60")
    made = Api(request.param, server.address)
    yield made
    await made.close()
