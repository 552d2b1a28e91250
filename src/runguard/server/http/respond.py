"""Small pieces of ASGI shared by the HTTP routes: headers, cookies, JSON and error answers.

Errors leave as Connect errors (``{"code": ..., "message": ..., "details": [...]}``
with the HTTP status Connect gives that code), so every route answers a refusal
the same way as the Connect routes.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from http.cookies import CookieError, SimpleCookie
from typing import Any

from connectrpc._protocol import ConnectWireError  # the library's own body and status
from connectrpc.errors import ConnectError

__all__ = ["cookies_of", "headers_of", "send_bytes", "send_error", "send_json"]

ASGISend = Callable[[dict[str, Any]], Awaitable[None]]


def headers_of(scope: dict[str, Any]) -> dict[str, str]:
    """The request's headers, lower-case names; a repeated one keeps its last value."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def cookies_of(headers: dict[str, str]) -> dict[str, str]:
    """The request's cookies (none when the header does not parse)."""
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(headers.get("cookie", ""))
    except CookieError:
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


async def send_bytes(
    send: ASGISend,
    status: int,
    body: bytes,
    content_type: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """One complete response."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_json(
    send: ASGISend, status: int, value: object, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """A JSON response."""
    body = json.dumps(value, separators=(",", ":")).encode()
    await send_bytes(
        send, status, body, "application/json", [(b"cache-control", b"no-store"), *(headers or [])]
    )


async def send_error(
    send: ASGISend, error: ConnectError, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """A Connect error as its JSON body and HTTP status."""
    wire = ConnectWireError.from_exception(error)
    await send_bytes(
        send, wire.to_http_status().code, wire.to_json_bytes(), "application/json", headers
    )
