"""Fixtures of the HTTP front's tests: an in-process server with HTTP on, and real curl."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from google.rpc import error_details_pb2

from tests.conftest import Running

SERVICE_PATH = "/runguard.v1.RunGuardService"


@dataclass
class Answer:
    """What curl got: the HTTP status, the headers (lower-case names) and the body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


def base_url(running: Running) -> str:
    """The HTTP front's base URL of an in-process server."""
    port = running.server.http_port
    assert port, "the server was started without http_listen"
    return f"http://127.0.0.1:{port}"


async def curl(*args: str, data: bytes | None = None) -> Answer:
    """Run the real ``curl`` (without blocking the loop the server runs in)."""
    binary = shutil.which("curl")
    if binary is None:
        pytest.fail("curl is not on PATH: install it (Debian: apt-get install curl)")
    process = await asyncio.create_subprocess_exec(
        binary,
        "-sS",
        "-D",
        "/dev/stderr",
        *args,
        stdin=asyncio.subprocess.PIPE if data is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await process.communicate(data)
    return _answer(out, err, process.returncode)


def _answer(out: bytes, err: bytes, code: int | None) -> Answer:
    blocks = [b for b in err.decode("latin-1").split("\r\n\r\n") if b.startswith("HTTP/")]
    assert blocks, f"curl got no response (exit {code}): {err!r}"
    lines = blocks[-1].split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(status, headers, out)


def envelope(message: dict[str, Any]) -> bytes:
    """One Connect streaming request frame: flag 0, big-endian length, JSON."""
    body = json.dumps(message).encode()
    return struct.pack(">BI", 0, len(body)) + body


def frames(data: bytes) -> list[tuple[int, Any]]:
    """The (flag, JSON) frames of a Connect streaming response body."""
    found = []
    while data:
        flag, length = struct.unpack(">BI", data[:5])
        found.append((flag, json.loads(data[5 : 5 + length])))
        data = data[5 + length :]
    return found


def violations(error: dict[str, Any]) -> list[tuple[str, str]]:
    """The (field, description) pairs of the google.rpc.BadRequest in a Connect error."""
    (detail,) = error["details"]
    assert detail["type"] == "google.rpc.BadRequest"
    raw = base64.b64decode(detail["value"] + "=" * (-len(detail["value"]) % 4))
    bad = error_details_pb2.BadRequest.FromString(raw)
    return [(v.field, v.description) for v in bad.field_violations]


@pytest.fixture
async def http(start_server: Callable[..., Any]) -> Running:
    """An in-process server with the HTTP front on 127.0.0.1:0 (memory store)."""
    running: Running = await start_server(http_listen="127.0.0.1:0")
    return running


def parse_sse(text: str) -> list[dict[str, str]]:
    """The events of an SSE body: each a dict of its fields (id, event, data, retry)."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
        if fields:
            events.append(fields)
    return events


# The token file of the gRPC security tests, for the same checks over HTTP.
from tests.security.conftest import tokens  # noqa: E402, F401  # fixtures, used by name
