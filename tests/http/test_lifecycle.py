"""The HTTP listener's life: flags, a port in use, SIGTERM with open streams, health."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
from collections.abc import Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from runguard.server.app import RunGuardServer
from runguard.server.cli import _parser, build_config
from runguard.server.config import ServerConfig
from tests.conftest import Running, Served
from tests.http.conftest import SERVICE_PATH, base_url, curl, envelope, frames
from tests.http.test_security import http_port_of


def test_flags_turn_the_http_front_on() -> None:
    """``--http-listen`` and repeated ``--http-cors-origin`` reach the config; HTTP is off
    by default."""
    args = _parser().parse_args(
        [
            "serve",
            "--http-listen",
            "127.0.0.1:8080",
            "--http-cors-origin",
            "https://a.example",
            "--http-cors-origin",
            "http://localhost:3000",
        ]
    )
    config = build_config(args, {})

    assert config.http_listen == "127.0.0.1:8080"
    assert config.http_cors_origins == ("https://a.example", "http://localhost:3000")
    assert build_config(_parser().parse_args(["serve"]), {}).http_listen is None


def test_a_port_in_use_fails_the_start_with_one_line(served: Callable[..., Served]) -> None:
    """``runguard serve`` on an HTTP port another server holds exits 1 with one clear line."""
    holder = served("--http-listen", "127.0.0.1:0")
    port = http_port_of(holder)

    command = [sys.executable, "-m", "runguard.server", "serve", "--listen", "127.0.0.1:0"]
    done = subprocess.run(
        [*command, "--http-listen", f"127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"runguard: cannot listen on http_listen 127.0.0.1:{port}: Address already in use"
    ]


async def test_a_taken_http_port_binds_nothing() -> None:
    """When the HTTP port is taken, start raises before the gRPC port is bound."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        server = RunGuardServer(ServerConfig(listen="127.0.0.1:0", http_listen=f"127.0.0.1:{port}"))
        with pytest.raises(RuntimeError, match="Address already in use"):
            await server.start()
    finally:
        taken.close()

    assert server.port == 0


async def test_a_taken_grpc_port_frees_the_http_port() -> None:
    """When the gRPC port is taken, start raises and the HTTP port it had bound is free again."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        server = RunGuardServer(ServerConfig(listen=f"127.0.0.1:{port}", http_listen="127.0.0.1:0"))
        with pytest.raises(RuntimeError, match="cannot listen"):
            await server.start()
    finally:
        taken.close()

    probe = socket.socket()
    probe.bind(("127.0.0.1", server.http_port))  # raises if the failed server still held it
    probe.close()


def test_sigterm_ends_http_streams_and_the_process_cleanly(served: Callable[..., Served]) -> None:
    """SIGTERM ends an open SSE stream (curl exits 0) and a Connect Watch (end frame,
    unavailable, so clients reconnect), and the process exits 0."""
    server = served("--http-listen", "127.0.0.1:0")
    base = f"http://127.0.0.1:{http_port_of(server)}"
    watch = ["curl", "-sS", "-N", "-H", "Content-Type: application/connect+json"]
    with (
        subprocess.Popen(["curl", "-sS", "-N", f"{base}/v1/events"], stdout=subprocess.PIPE) as sse,
        subprocess.Popen(
            [*watch, "--data-binary", "@-", f"{base}{SERVICE_PATH}/Watch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        ) as stream,
    ):
        assert stream.stdin is not None
        assert stream.stdout is not None
        assert sse.stdout is not None
        stream.stdin.write(envelope({}))
        stream.stdin.close()
        assert sse.stdout.readline().startswith(b"retry:")  # both streams are open
        assert stream.stdout.read(1) == b"\x00"

        server.process.send_signal(signal.SIGTERM)

        assert sse.wait(10) == 0
        rest = b"\x00" + stream.stdout.read()
        assert stream.wait(10) == 0
    flag, end = frames(rest)[-1]
    assert flag == 2
    assert end["error"]["code"] == "unavailable"
    assert server.process.wait(10) == 0


async def health_of(running: Running) -> int:
    """The gRPC health status of the server."""
    async with grpc.aio.insecure_channel(running.address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    status: int = reply.status
    return status


async def test_health_reflects_the_http_front(http: Running) -> None:
    """/v1/healthz says SERVING; if the HTTP listener stops, gRPC health turns NOT_SERVING."""
    healthz = await curl(f"{base_url(http)}/v1/healthz")
    assert healthz.status == 200
    assert healthz.json() == {"status": "SERVING"}
    assert await health_of(http) == health_pb2.HealthCheckResponse.SERVING
    assert http.server.http is not None

    await http.server.http.stop()

    for _ in range(100):
        if await health_of(http) == health_pb2.HealthCheckResponse.NOT_SERVING:
            break
        await asyncio.sleep(0.02)
    assert await health_of(http) == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_the_serving_line_names_the_http_port(
    served: Callable[..., Served],
) -> None:
    """The 'serving' log line carries http_port, the port the HTTP front got."""
    server = served("--http-listen", "127.0.0.1:0")
    port = http_port_of(server)

    answer = await curl(f"http://127.0.0.1:{port}/v1/healthz")

    assert answer.status == 200
    line = next(
        json.loads(raw) for raw in server.log.read_text().splitlines() if '"serving"' in raw
    )
    assert line["http_port"] == port
