"""Who an HTTP request comes from: bearer tokens, and short-lived watch tokens for browsers.

Every HTTP route asks the same question as the gRPC port, with the same token
file and roles (``runguard.server.auth``): ``Authorization: Bearer TOKEN``.

A browser's ``EventSource`` cannot send that header, and a long-lived token in
a URL ends up in history, logs and ``Referer``. So a page that holds a bearer
token (one with a role that may Watch) trades it, with ``POST /v1/watch-tokens``,
for a **watch token**: it names the principal and an expiry
(:data:`WATCH_TOKEN_TTL`) and is signed with a key the process draws at start.
It comes back twice: in the JSON answer, and as the ``HttpOnly`` cookie
``runguard_watch`` (``SameSite=Strict``, ``Path=/v1/``, ``Secure`` under TLS),
which same-origin ``EventSource`` requests (and their reconnects) send by
themselves. A page on another origin passes it as ``?watch_token=`` instead.

A watch token only opens ``/v1/events`` (Watch): never Begin, End or anything
else. It is checked when a stream opens, against the current token file: a
principal whose roles were taken away by a reload can no longer use one. A
stream already open keeps running, as a gRPC stream does after a reload. After
a restart (a new key) or its expiry, a reconnect is refused 401 and the page
trades its bearer token again.

No token, cookie or watch token reaches a log line.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

from runguard.contract import AUTHORIZATION
from runguard.server.auth import ANONYMOUS, Authenticator, Principal, Role
from runguard.server.errors import Unauthenticated

__all__ = ["WATCH_COOKIE", "WATCH_TOKEN_TTL", "HttpCredentials", "WatchToken"]

WATCH_TOKEN_TTL = 600.0
"""Seconds a watch token may open streams after it was made."""

WATCH_COOKIE = "runguard_watch"
"""The cookie that carries a watch token."""

_WATCH_ROLES = frozenset({Role.RUN, Role.WATCH, Role.ADMIN})
_MAX_WATCH_TOKEN = 1024


@dataclass(frozen=True, slots=True)
class WatchToken:
    """A watch token as handed to a page."""

    token: str
    expires_at: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class HttpCredentials:
    """Identifies HTTP callers with the server's authenticator, and signs watch tokens."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator
        self._key = secrets.token_bytes(32)

    @property
    def enabled(self) -> bool:
        """Whether callers must prove who they are."""
        return self._authenticator.enabled

    def identify(self, headers: Mapping[str, str], *, method: str) -> Principal:
        """The principal of a request from its ``authorization`` header.

        Raises:
            Unauthenticated: authentication is on and the header is missing or
                names no known token.
        """
        if not self._authenticator.enabled:
            return ANONYMOUS
        header = headers.get(AUTHORIZATION)
        if header is None:
            raise Unauthenticated(f"{method}: no credentials: send 'Authorization: Bearer TOKEN'")
        return self._authenticator.identify(((AUTHORIZATION, header),), None)

    def mint(self, principal: Principal, now: float | None = None) -> WatchToken:
        """A watch token for ``principal``.

        Raises:
            Unauthenticated: the principal has no role that may Watch.
        """
        if not principal.roles & _WATCH_ROLES:
            raise Unauthenticated(f"principal {principal.name!r} may not Watch")
        expires = (time.time() if now is None else now) + WATCH_TOKEN_TTL
        body = _b64(json.dumps({"p": principal.name, "e": round(expires, 3)}).encode())
        return WatchToken(f"{body}.{self._sign(body)}", expires)

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())

    def watcher(self, token: str, now: float | None = None) -> Principal:
        """The principal a watch token stands for, with only the ``watch`` role.

        Raises:
            Unauthenticated: the token is malformed, not ours, expired, or its
                principal may no longer Watch.
        """
        body, _, signature = token.partition(".")
        if len(token) > _MAX_WATCH_TOKEN or not hmac.compare_digest(
            signature.encode(), self._sign(body).encode()
        ):
            raise Unauthenticated("unknown watch token")
        try:
            claims = json.loads(_unb64(body))
            name, expires = str(claims["p"]), float(claims["e"])
        except (ValueError, KeyError, TypeError):
            raise Unauthenticated("unknown watch token") from None
        if expires <= (time.time() if now is None else now):
            raise Unauthenticated("the watch token has expired: make a new one")
        if self._authenticator.enabled and not self._may_watch(name):
            raise Unauthenticated(f"principal {name!r} may no longer Watch")
        return Principal(name, frozenset({Role.WATCH}), "watch-token")

    def _may_watch(self, name: str) -> bool:
        # Token principals have their roles in the file; certificate-only ones
        # never mint over HTTP (config refuses HTTP with certificates alone).
        return bool(self._authenticator.roles_of(name) & _WATCH_ROLES)

    def watch_principal(
        self, headers: Mapping[str, str], cookies: Mapping[str, str], query_token: str | None
    ) -> Principal:
        """The principal of an ``/v1/events`` request: a bearer token, else a watch token.

        Raises:
            Unauthenticated: none is given, or the one given is not valid.
        """
        if not self._authenticator.enabled:
            return ANONYMOUS
        if AUTHORIZATION in headers:
            return self.identify(headers, method="Watch")
        token = query_token if query_token is not None else cookies.get(WATCH_COOKIE)
        if token is None:
            raise Unauthenticated(
                "no credentials: send 'Authorization: Bearer TOKEN', or a watch token "
                "(POST /v1/watch-tokens) as the runguard_watch cookie or ?watch_token="
            )
        return self.watcher(token)
