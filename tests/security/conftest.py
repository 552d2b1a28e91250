"""Fixtures for TLS, tokens and roles: certificates and a token file made in the test run."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from runguard.client import connect_options
from tests.conftest import Running
from tests.stubs import async_stub


@dataclass(frozen=True)
class Tokens:
    """A token file with one principal per role, and a token of each."""

    path: Path
    runner: str
    """Token of principal ``worker-7``, role ``run``."""
    watcher: str
    """Token of principal ``dashboard``, role ``watch``."""
    admin: str
    """Token of principal ``ops``, role ``admin``."""
    both: str
    """Token of principal ``ci``, roles ``run`` and ``watch``."""


def token_file_text(tokens: dict[str, tuple[str, str]], extra: str = "") -> str:
    """A token file: ``tokens`` maps token -> (principal, roles)."""
    lines = ["# TOKEN PRINCIPAL ROLES"]
    lines += [f"{token} {principal} {roles}" for token, (principal, roles) in tokens.items()]
    return "\n".join(lines) + "\n" + extra


@pytest.fixture
def tokens(tmp_path: Path) -> Tokens:
    """A fresh token file (mode 600) with random tokens for worker-7, dashboard, ops and ci;
    the certificate principal ``alice`` gets the role watch (``-`` line)."""
    made = Tokens(
        path=tmp_path / "tokens",
        runner=secrets.token_urlsafe(24),
        watcher=secrets.token_urlsafe(24),
        admin=secrets.token_urlsafe(24),
        both=secrets.token_urlsafe(24),
    )
    text = token_file_text(
        {
            made.runner: ("worker-7", "run"),
            made.watcher: ("dashboard", "watch"),
            made.admin: ("ops", "admin"),
            made.both: ("ci", "run,watch"),
        },
        extra="-  alice  watch   # roles of a certificate principal\n",
    )
    made.path.write_text(text)
    made.path.chmod(0o600)
    return made


@dataclass
class Caller:
    """Raw stub calls to a server with one set of credentials."""

    channel: grpc.aio.Channel
    stub: Any
    metadata: tuple[tuple[str, str], ...]

    async def __call__(self, method: str, request: Any, deadline: float = 10) -> Any:
        """Call a unary method with a deadline of ``deadline`` seconds."""
        return await getattr(self.stub, method)(request, metadata=self.metadata, timeout=deadline)

    def watch(self, request: Any, timeout: float | None = None) -> Any:
        """Open a Watch stream."""
        return self.stub.Watch(request, metadata=self.metadata, timeout=timeout)


@pytest.fixture
async def callers() -> Any:
    """Make Callers to an address with connect_options(...) arguments; all closed after."""
    made: list[Caller] = []

    def make(address: str, **options: Any) -> Caller:
        settings = connect_options(**options)
        credentials = settings["credentials"]
        channel = (
            grpc.aio.secure_channel(address, credentials)
            if credentials is not None
            else grpc.aio.insecure_channel(address)
        )
        caller = Caller(channel, async_stub(channel), settings["metadata"])
        made.append(caller)
        return caller

    yield make
    for caller in made:
        await caller.channel.close(None)


MakeCaller = Callable[..., Caller]


@pytest.fixture
async def server(start_server: Callable[..., Any], tokens: Tokens) -> Running:
    """An in-process server that takes the token file (plaintext, on loopback)."""
    running: Running = await start_server(auth_tokens=str(tokens.path))
    return running


@pytest.fixture
def as_(server: Running, callers: MakeCaller, tokens: Tokens) -> Callable[[str], Caller]:
    """A caller of ``server`` holding the token of one principal: runner, watcher, admin,
    both, or none (no token at all)."""

    def make(who: str) -> Caller:
        token = None if who == "none" else getattr(tokens, who)
        return callers(server.address, token=token)

    return make
