"""Fixtures for the CLI verbs: one ``runguard serve`` per module, a fresh guard per test."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator

import pytest

from runguard.client import Client
from tests.conftest import Served, serve_process

Cli = Callable[..., subprocess.CompletedProcess[str]]


def runguard_command(verb: str, target: str, *args: str) -> list[str]:
    """``python -m runguard.server VERB --target TARGET ARGS`` as an argument list."""
    return [sys.executable, "-m", "runguard.server", verb, "--target", target, *args]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A ``runguard serve`` process shared by a module's tests (each uses its own guard)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith(("RUNGUARD_", "RUN_DEDUP", "RUN_MAX")):
                patch.delenv(name)
        # A long dedup window: a test that needs its first run still kept when a later
        # verb starts must not depend on how fast the machine starts a process.
        started = serve_process(tmp_path_factory.mktemp("cli-server"), "--dedup-window", "120")
    yield started
    started.stop()


@pytest.fixture(scope="module")
def client(server: Served) -> Iterator[Client]:
    """A Python client of the server, to set up and inspect what a verb is tested against."""
    with Client(server.address) as made:
        yield made


@pytest.fixture
def guard() -> str:
    """A guard no other test uses."""
    return f"cli-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def cli(server: Served) -> Cli:
    """Run ``runguard VERB ARGS`` against the server; returns the finished process."""

    def run(verb: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            runguard_command(verb, server.address, *args),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run
