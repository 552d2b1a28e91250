"""The HTTP front's ASGI app: which path goes where, CORS, and the checks every route shares.

::

    POST /runguard.v1.RunGuardService/*   the whole service over Connect and gRPC-Web
    GET  /v1/events                       Watch as Server-Sent Events (runguard.server.http.sse)
    POST /v1/watch-tokens                 a short-lived watch token for EventSource
                                          (runguard.server.http.credentials)
    GET  /v1/healthz                      200 SERVING or 503 NOT_SERVING, as gRPC health says
    GET  /                                the live status page (static files, no CDN)

CORS: only the exact origins of ``--http-cors-origin`` get ``Access-Control-*``
headers (and preflights answered); none by default, so other origins' pages can
neither read answers nor send the JSON requests Connect needs.

Without authentication, on a loopback address, a request must name a loopback
host (``Host: 127.0.0.1:PORT``, ``localhost``): a page whose own host name was
made to resolve to 127.0.0.1 (DNS rebinding) would otherwise be same-origin with
an open RunGuard.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from connectrpc.code import Code
from connectrpc.errors import ConnectError

from runguard.contract import DETAILS_KEY
from runguard.server.auth import ANONYMOUS, Principal
from runguard.server.config import ServerConfig, is_loopback
from runguard.server.errors import Unauthenticated
from runguard.server.http.connect import connect_app
from runguard.server.http.credentials import WATCH_COOKIE, WATCH_TOKEN_TTL, HttpCredentials
from runguard.server.http.respond import headers_of, send_bytes, send_error, send_json
from runguard.server.http.sse import serve_events
from runguard.server.servicer import SERVICE, RunGuardServicer
from runguard.server.status import connect_error_of

__all__ = ["HttpApp"]

ASGIReceive = Callable[[], Awaitable[dict[str, Any]]]
ASGISend = Callable[[dict[str, Any]], Awaitable[None]]

_ALLOW_HEADERS = (
    b"content-type, connect-protocol-version, connect-timeout-ms, grpc-timeout, x-grpc-web, "
    b"x-user-agent, authorization, last-event-id"
)
_EXPOSE_HEADERS = f"grpc-status, grpc-message, {DETAILS_KEY}".encode()

_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}
_PAGE_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        b"img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),
]


def _loopback_host(host: str) -> bool:
    name = host[1 : host.find("]")] if host.startswith("[") else host.partition(":")[0]
    name = name.lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class HttpApp:
    """The ASGI application of the HTTP front."""

    def __init__(
        self,
        config: ServerConfig,
        servicer: RunGuardServicer,
        credentials: HttpCredentials,
        serving: Callable[[], bool],
    ) -> None:
        self._config = config
        self._servicer = servicer
        self._credentials = credentials
        self._serving = serving
        self._origins = frozenset(config.http_cors_origins)
        self._check_host = not credentials.enabled and is_loopback(config.http_listen or "")
        self._connect = connect_app(servicer, credentials, config.max_request_bytes)
        self._prefix = f"/{SERVICE.full_name}/"
        self._files = {
            path: (resources.files(f"{__package__}.static").joinpath(name).read_bytes(), kind)
            for path, (name, kind) in _STATIC.items()
        }

    async def __call__(self, scope: dict[str, Any], receive: ASGIReceive, send: ASGISend) -> None:
        if scope["type"] != "http":  # lifespan is off; websockets are not served
            return
        headers = headers_of(scope)
        cors = self._cors(headers)
        if self._check_host and not _loopback_host(headers.get("host", "")):
            await send_error(
                send,
                ConnectError(
                    Code.PERMISSION_DENIED,
                    "this RunGuard serves loopback host names only (it has no authentication)",
                ),
            )
            return
        path, method = scope["path"], scope["method"]
        if method == "OPTIONS":
            await self._preflight(send, cors)
        elif path.startswith(self._prefix):
            if self._credentials.enabled:
                # Who calls is known before the body is read, as on the gRPC port: a call
                # without credentials learns nothing of the request it sent.
                try:
                    self._credentials.identify(headers, method=path.rpartition("/")[2])
                except Unauthenticated as error:
                    await send_error(send, connect_error_of(error), cors)
                    return
            await self._connect(scope, receive, _with_headers(send, cors))
        elif path == "/v1/events" and method == "GET":
            await serve_events(
                scope,
                receive,
                send,
                servicer=self._servicer,
                credentials=self._credentials,
                extra_headers=cors,
            )
        elif path == "/v1/watch-tokens" and method == "POST":
            await self._mint(scope, send, headers, cors)
        elif path == "/v1/healthz" and method in ("GET", "HEAD"):
            serving = self._serving()
            await send_json(
                send,
                200 if serving else 503,
                {"status": "SERVING" if serving else "NOT_SERVING"},
                cors,
            )
        elif path in self._files and method in ("GET", "HEAD"):
            body, kind = self._files[path]
            await send_bytes(send, 200, body, kind, _PAGE_HEADERS)
        else:
            await send_error(send, ConnectError(Code.NOT_FOUND, f"no route {method} {path}"), cors)

    def _cors(self, headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
        origin = headers.get("origin")
        if origin is None or origin not in self._origins:
            return []
        return [
            (b"access-control-allow-origin", origin.encode()),
            (b"access-control-expose-headers", _EXPOSE_HEADERS),
            (b"vary", b"Origin"),
        ]

    async def _preflight(self, send: ASGISend, cors: list[tuple[bytes, bytes]]) -> None:
        if not cors:
            await send_bytes(send, 403, b"", "text/plain")
            return
        await send_bytes(
            send,
            204,
            b"",
            "text/plain",
            [
                *cors,
                (b"access-control-allow-methods", b"GET, POST"),
                (b"access-control-allow-headers", _ALLOW_HEADERS),
                (b"access-control-max-age", b"600"),
            ],
        )

    async def _mint(
        self,
        scope: dict[str, Any],
        send: ASGISend,
        headers: dict[str, str],
        cors: list[tuple[bytes, bytes]],
    ) -> None:
        principal: Principal = ANONYMOUS
        try:
            if self._credentials.enabled:
                principal = self._credentials.identify(headers, method="watch-tokens")
            token = self._credentials.mint(principal)
        except Unauthenticated as error:
            await send_error(send, connect_error_of(error), cors)
            return
        cookie = (
            f"{WATCH_COOKIE}={token.token}; HttpOnly; SameSite=Strict; Path=/v1/; "
            f"Max-Age={int(WATCH_TOKEN_TTL)}"
        )
        if self._config.tls:
            cookie += "; Secure"
        await send_json(
            send,
            200,
            {"token": token.token, "expiresInSeconds": int(WATCH_TOKEN_TTL)},
            [*cors, (b"set-cookie", cookie.encode())],
        )


def _with_headers(send: ASGISend, extra: list[tuple[bytes, bytes]]) -> ASGISend:
    if not extra:
        return send

    async def wrapped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return wrapped
