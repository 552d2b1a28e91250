"""Fixtures shared by every tier: config, an in-process server, a served process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from runguard.server.app import RunGuardServer
from runguard.server.config import ServerConfig
from tests.certs import Pki, make_pki
from tests.stubs import AsyncStub, async_stub


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's RunGuard settings."""
    for name in list(os.environ):
        if name.startswith(("RUNGUARD_", "RUN_DEDUP", "RUN_MAX")):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a server certificate for localhost and client certificates, made once a session
    (EC P-256, with ``cryptography``)."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@dataclass
class Running:
    """An in-process server and a channel to it."""

    server: RunGuardServer
    address: str
    channel: grpc.aio.Channel
    stub: AsyncStub


@pytest.fixture
async def start_server() -> AsyncIterator[Callable[..., Any]]:
    """Start in-process servers on 127.0.0.1:0 with ServerConfig overrides; all stopped after."""
    started: list[Running] = []

    async def start(**overrides: Any) -> Running:
        config = ServerConfig(listen="127.0.0.1:0", shutdown_grace=0.5, **overrides)
        server = RunGuardServer(config)
        port = await server.start()
        address = f"127.0.0.1:{port}"
        channel = grpc.aio.insecure_channel(address)
        running = Running(server, address, channel, async_stub(channel))
        started.append(running)
        return running

    yield start
    for running in started:
        await running.channel.close(None)
        await running.server.stop(grace=0.1)


@pytest.fixture
async def running(start_server: Callable[..., Any]) -> Running:
    """One in-process server with the default configuration."""
    result: Running = await start_server()
    return result


def stop_process(process: subprocess.Popen[str], grace: float = 10) -> None:
    """Stop a server process as a supervisor would: SIGTERM, ``grace`` seconds, then SIGKILL."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class Served:
    """A ``runguard serve`` process and the address it listens on."""

    process: subprocess.Popen[str]
    address: str
    log: Path

    def stop(self, grace: float = 10) -> None:
        """Terminate the server and reap it; killed if it outlives ``grace`` seconds."""
        stop_process(self.process, grace)


def runguard(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``runguard ARGS`` (as ``python -m runguard.server``) to its end, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "runguard.server", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
    )


def serve_process(tmp_path: Path, *args: str) -> Served:
    """Start ``runguard serve --listen 127.0.0.1:0 ARGS`` and wait for its 'serving' line."""
    log = tmp_path / f"server-{time.monotonic_ns()}.log"
    with log.open("w") as handle:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "runguard.server", "serve", "--listen", "127.0.0.1:0", *args],
            stdout=handle,
            stderr=subprocess.STDOUT,
            text=True,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith("{") and json.loads(line).get("event") == "serving":
                return Served(process, f"127.0.0.1:{json.loads(line)['port']}", log)
        if process.poll() is not None:
            raise RuntimeError(f"runguard serve exited: {log.read_text()}")
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"runguard serve did not start: {log.read_text()}")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """Start ``runguard serve`` processes on free ports; all terminated after."""
    processes: list[Served] = []

    def start(*args: str) -> Served:
        result = serve_process(tmp_path, *args)
        processes.append(result)
        return result

    yield start
    for item in processes:
        item.stop()
