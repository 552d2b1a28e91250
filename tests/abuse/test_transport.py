"""Hostile bytes on the server's port: garbage, HTTP/1.1, and connections left half-open.

None of them may disturb other clients: while they are open, a normal client's calls are
answered within a short deadline and a Watch opened before keeps receiving changes.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from runguard.client import connect_options
from runguard.v1 import runguard_pb2 as pb
from tests.certs import make_pki
from tests.conftest import Served, serve_process
from tests.integration.support import begin_request, end_request
from tests.stubs import sync_stub

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
"""What every HTTP/2 (so gRPC) connection starts with."""

HALF_OPEN = 200
"""Connections opened and then left alone, in each way of leaving them."""

QUICK = 5.0
"""Seconds a normal call may take while the port is abused: generous, not a speed claim."""


def _open(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=QUICK)
    sock.settimeout(QUICK)
    return sock


def _drained(sock: socket.socket) -> bool:
    """Whether the server closed the connection (read until EOF, at most QUICK seconds)."""
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True  # reset by the server
    return True


class Normal:
    """A well-behaved client, checked while the port is abused."""

    def __init__(self, address: str, **options: Any) -> None:
        settings = connect_options(**options)
        credentials = settings["credentials"]
        self.channel = (
            grpc.secure_channel(address, credentials)
            if credentials is not None
            else grpc.insecure_channel(address)
        )
        self.stub = sync_stub(self.channel)
        self.guard = f"t-{uuid.uuid4().hex[:12]}"
        self.watch = self.stub.Watch(pb.WatchRequest(guards=[self.guard]), timeout=120)
        assert next(self.watch).WhichOneof("event") == "snapshot"
        self.count = 0

    def still_served(self) -> None:
        """A Begin, the Watch's change for it, an End and a Current, each within QUICK."""
        self.count += 1
        request = begin_request(f"op-{self.count}", guard=self.guard)
        reply = self.stub.Begin(request, timeout=QUICK)
        assert reply.WhichOneof("outcome") == "granted"
        got: list[Any] = []
        reader = threading.Thread(target=lambda: got.append(next(self.watch)), daemon=True)
        reader.start()
        reader.join(QUICK)
        assert got, "the Watch opened before stopped receiving changes"
        assert got[0].change.run.operation_id == f"op-{self.count}"
        self.stub.End(end_request(reply.granted), timeout=QUICK)
        assert next(self.watch).change.kind == pb.CHANGE_KIND_RELEASED
        current = self.stub.Current(pb.CurrentRequest(guard=self.guard), timeout=QUICK)
        assert current.state.guard == self.guard

    def close(self) -> None:
        """Cancel the Watch and close the channel."""
        self.watch.cancel()
        self.channel.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One plaintext ``runguard serve`` for the module's tests."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("RUNGUARD_LISTEN", "RUNGUARD_STORE"):
            patch.delenv(name, raising=False)
        started = serve_process(tmp_path_factory.mktemp("transport"))
    yield started
    started.stop()


@pytest.fixture
def normal(server: Served) -> Iterator[tuple[Served, Normal]]:
    """The server and a normal client of it with a Watch open."""
    client = Normal(server.address)
    yield server, client
    client.close()


@pytest.mark.parametrize(
    "junk",
    [
        pytest.param(lambda: os.urandom(4096), id="random-bytes"),
        pytest.param(lambda: b"\x00" * 100_000, id="zeros"),
        pytest.param(lambda: PREFACE + os.urandom(2048), id="preface-then-garbage"),
        pytest.param(
            lambda: PREFACE + b"\x00\xff\xff\x04\x00\x00\x00\x00\x00" + b"\x00" * 100,
            id="oversized-settings-frame",
        ),
        pytest.param(
            lambda: b"GET / HTTP/1.1\r\nHost: runguard\r\nConnection: keep-alive\r\n\r\n",
            id="http-1.1-get",
        ),
        pytest.param(
            lambda: (
                b"POST /runguard.v1.RunGuardService/Begin HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/grpc\r\nContent-Length: 5\r\n\r\n\x00\x00\x00\x00\x00"
            ),
            id="http-1.1-grpc-post",
        ),
    ],
)
def test_junk_on_the_port_is_dropped_and_others_are_served(
    normal: tuple[Served, Normal], junk: Callable[[], bytes]
) -> None:
    """Twenty connections sending junk are closed by the server; meanwhile and afterwards a
    normal client is served and its Watch keeps streaming."""
    server, client = normal
    socks = [_open(server.address) for _ in range(20)]
    for sock in socks:
        with contextlib.suppress(OSError):  # the server may close before all is sent
            sock.sendall(junk())
    client.still_served()
    assert all(_drained(sock) for sock in socks), "a junk connection was left open"
    for sock in socks:
        sock.close()
    client.still_served()
    assert server.process.poll() is None


def _half_open(address: str, how: str) -> socket.socket:
    sock = _open(address)
    if how == "partial-preface":
        sock.sendall(PREFACE[:10])
    elif how == "preface-then-silence":
        sock.sendall(PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # empty SETTINGS
    elif how == "write-side-shut":
        sock.sendall(PREFACE[:10])
        sock.shutdown(socket.SHUT_WR)
    return sock


@pytest.mark.parametrize(
    "how",
    ["silent", "partial-preface", "preface-then-silence", "write-side-shut"],
)
def test_half_open_connections_do_not_hold_up_others(
    normal: tuple[Served, Normal], how: str
) -> None:
    """Two hundred connections opened and left half-done (silent, a partial preface, a preface
    and then nothing, or the write side shut) hold up no one; closing them leaves the server
    serving."""
    server, client = normal
    socks = [_half_open(server.address, how) for _ in range(HALF_OPEN)]
    client.still_served()
    client.still_served()
    for sock in socks:
        sock.close()
    client.still_served()
    assert server.process.poll() is None


def test_a_tls_port_drops_plaintext_junk_and_half_open_connections(
    served: Callable[..., Served], tmp_path: Path
) -> None:
    """On a TLS port, plaintext gRPC, HTTP/1.1, random bytes and silent connections fail their
    handshake or wait alone; a TLS client is served throughout."""
    pki = make_pki(tmp_path)
    server = served("--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key))
    client = Normal(server.address, ca=pki.ca)
    try:
        silent = [_open(server.address) for _ in range(50)]
        noisy = [_open(server.address) for _ in range(3)]
        for sock, data in zip(
            noisy,
            [PREFACE + b"\x00" * 9, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", os.urandom(4096)],
            strict=True,
        ):
            sock.sendall(data)
        client.still_served()
        assert all(_drained(sock) for sock in noisy)
        for sock in silent + noisy:
            sock.close()
        client.still_served()
    finally:
        client.close()
