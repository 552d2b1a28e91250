"""Fixtures for the seed drop-in: ``runguard.client.run_guard`` pointed at a real server."""

from __future__ import annotations

import importlib
import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from runguard.client import run_guard
from tests.conftest import Served, serve_process

UNIQUE = "<a guard of the test's own>"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Served]]:
    """``runguard serve FLAGS`` processes, one per set of flags, shared by a module's tests."""
    started: dict[tuple[str, ...], Served] = {}

    def get(*flags: str) -> Served:
        if flags not in started:
            with pytest.MonkeyPatch.context() as patch:
                for name in list(os.environ):
                    if name.startswith(("RUNGUARD_", "RUN_DEDUP", "RUN_MAX")):
                        patch.delenv(name)
                started[flags] = serve_process(tmp_path_factory.mktemp("seed-server"), *flags)
        return started[flags]

    yield get
    for server in started.values():
        server.stop()


@pytest.fixture
def drop_in(
    servers: Callable[..., Served], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Served]]:
    """Point the drop-in at a server started with FLAGS, with its cached client and tokens
    reset; RUNGUARD_GUARD names a guard no other test uses (``guard=None`` leaves it unset)."""

    def connect(*flags: str, guard: str | None = UNIQUE) -> Served:
        server = servers(*flags)
        monkeypatch.setenv("RUNGUARD_TARGET", server.address)
        if guard is not None:
            name = f"seed-{uuid.uuid4().hex[:12]}" if guard == UNIQUE else guard
            monkeypatch.setenv("RUNGUARD_GUARD", name)
        monkeypatch.setattr(run_guard, "_client", None)
        monkeypatch.setattr(run_guard, "_tokens", {})
        return server

    yield connect
    if run_guard._client is not None:
        run_guard._client.close()


@pytest.fixture
def reload_run_guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], None]]:
    """Re-import the drop-in (it reads its settings at import); re-imported clean after."""

    def reload() -> None:
        importlib.reload(run_guard)

    yield reload
    monkeypatch.delenv("RUN_DEDUP_WINDOW_SECS", raising=False)
    monkeypatch.delenv("RUN_MAX_SECS", raising=False)
    importlib.reload(run_guard)
