"""The HTTP front has the gRPC port's security: tokens and roles on every route, watch
tokens for EventSource, exact CORS origins, TLS, and the same refusals of an open listen."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

from runguard.server.auth import ALL_ROLES, Authenticator, Principal
from runguard.server.config import ServerConfig
from runguard.server.errors import Unauthenticated
from runguard.server.http.credentials import WATCH_TOKEN_TTL, HttpCredentials
from tests.certs import Pki
from tests.conftest import Running, Served
from tests.http.conftest import SERVICE_PATH, base_url, curl
from tests.http.sse_reader import SseReader, count
from tests.security.conftest import Tokens, token_file_text

BEGIN = '{"guard":"generate","route":"/generate","payload":{"prompt":"cats"}}'


@pytest.fixture
async def secured(start_server: Callable[..., Any], tokens: Tokens) -> Running:
    """An in-process server with tokens and the HTTP front (plaintext, loopback)."""
    running: Running = await start_server(http_listen="127.0.0.1:0", auth_tokens=str(tokens.path))
    return running


async def call(running: Running, method: str, body: str, token: str | None = None) -> Any:
    """A Connect JSON call with curl, with a bearer token or none."""
    auth = ["-H", f"Authorization: Bearer {token}"] if token else []
    return await curl(
        *auth,
        "-H",
        "Content-Type: application/json",
        "-d",
        body,
        f"{base_url(running)}{SERVICE_PATH}/{method}",
    )


@pytest.mark.parametrize(
    ("who", "method", "body", "status", "code"),
    [
        pytest.param("none", "Begin", BEGIN, 401, "unauthenticated", id="no-token"),
        pytest.param("bogus", "Begin", BEGIN, 401, "unauthenticated", id="unknown-token"),
        pytest.param(
            "none", "ListGuards", '{"guard":"s"}', 401, "unauthenticated", id="no-token-bad-body"
        ),
        pytest.param("none", "Begin", "{not json", 401, "unauthenticated", id="no-token-not-json"),
        pytest.param("watcher", "Begin", BEGIN, 403, "permission_denied", id="watch-begins"),
        pytest.param("watcher", "Current", '{"guard":"g"}', 200, None, id="watch-current"),
        pytest.param("runner", "Begin", BEGIN, 200, None, id="run-begins"),
        pytest.param(
            "runner",
            "End",
            '{"guard":"g","operationId":"x","force":true}',
            403,
            "permission_denied",
            id="run-forces",
        ),
        pytest.param(
            "admin", "End", '{"guard":"g","operationId":"x","force":true}', 200, None, id="admin"
        ),
    ],
)
async def test_roles_decide_every_connect_call(
    secured: Running, tokens: Tokens, who: str, method: str, body: str, status: int, code: Any
) -> None:
    """Each Connect call needs the role it needs over gRPC; refusals are Connect errors."""
    token = (
        None
        if who == "none"
        else secrets.token_urlsafe(24)
        if who == "bogus"
        else getattr(tokens, who)
    )

    answer = await call(secured, method, body, token)

    assert answer.status == status
    if code is not None:
        assert answer.json()["code"] == code


async def test_a_run_begun_over_http_names_its_principal(secured: Running, tokens: Tokens) -> None:
    """A Begin with worker-7's token records principal worker-7 on the run."""
    answer = await call(secured, "Begin", BEGIN, tokens.runner)

    assert answer.json()["granted"]["run"]["principal"] == "worker-7"


async def test_events_need_credentials(secured: Running, tokens: Tokens) -> None:
    """``/v1/events`` without credentials is 401; a runner's bearer token opens it."""
    refused = await curl(f"{base_url(secured)}/v1/events")
    assert refused.status == 401
    assert refused.json()["code"] == "unauthenticated"

    reader = await SseReader.open(
        f"{base_url(secured)}/v1/events", f"Authorization: Bearer {tokens.runner}"
    )
    try:
        await reader.wait(count("snapshot", 1))
        assert reader.status == 200
    finally:
        await reader.close()


async def mint(running: Running, token: str | None) -> Any:
    """POST /v1/watch-tokens with a bearer token (or none)."""
    auth = ["-H", f"Authorization: Bearer {token}"] if token else []
    return await curl("-X", "POST", *auth, f"{base_url(running)}/v1/watch-tokens")


async def test_a_watch_token_comes_as_json_and_an_http_only_cookie(
    secured: Running, tokens: Tokens
) -> None:
    """A watcher's POST /v1/watch-tokens gives a token and a strict, HttpOnly cookie of it."""
    answer = await mint(secured, tokens.watcher)

    assert answer.status == 200
    token = answer.json()["token"]
    assert answer.json()["expiresInSeconds"] == int(WATCH_TOKEN_TTL)
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"runguard_watch={token};")
    for part in ("HttpOnly", "SameSite=Strict", "Path=/v1/", f"Max-Age={int(WATCH_TOKEN_TTL)}"):
        assert part in cookie
    assert "Secure" not in cookie  # plaintext here; the TLS test checks Secure
    assert tokens.watcher not in answer.body.decode()


async def test_minting_needs_a_known_token(secured: Running) -> None:
    """No token, or an unknown one, gets no watch token."""
    assert (await mint(secured, None)).status == 401
    assert (await mint(secured, secrets.token_urlsafe(24))).status == 401


@pytest.mark.parametrize("how", ["cookie", "query"])
async def test_a_watch_token_opens_events(secured: Running, tokens: Tokens, how: str) -> None:
    """The watch token opens /v1/events as the cookie or as ``?watch_token=``."""
    token = (await mint(secured, tokens.watcher)).json()["token"]
    url = f"{base_url(secured)}/v1/events"
    if how == "cookie":
        reader = await SseReader.open(url, f"Cookie: runguard_watch={token}")
    else:
        reader = await SseReader.open(f"{url}?watch_token={token}")
    try:
        await reader.wait(count("snapshot", 1))
        assert reader.status == 200
    finally:
        await reader.close()


async def test_a_watch_token_cannot_begin(secured: Running, tokens: Tokens) -> None:
    """A watch token is no bearer token: Begin with it is refused, as a cookie too."""
    token = (await mint(secured, tokens.runner)).json()["token"]

    as_bearer = await call(secured, "Begin", BEGIN, token)
    as_cookie = await curl(
        "-H",
        f"Cookie: runguard_watch={token}",
        "-H",
        "Content-Type: application/json",
        "-d",
        BEGIN,
        f"{base_url(secured)}{SERVICE_PATH}/Begin",
    )

    assert as_bearer.status == 401
    assert as_cookie.status == 401


async def test_a_forged_watch_token_is_refused(secured: Running) -> None:
    """A watch token this server did not sign is 401."""
    answer = await curl(f"{base_url(secured)}/v1/events?watch_token=eyJwIjoib3BzIn0.c2lnbmF0dXJl")

    assert answer.status == 401


def test_watch_tokens_expire_and_follow_reloads(tokens: Tokens) -> None:
    """A watch token stops opening streams after its TTL, and when a reload takes its
    principal's roles away."""
    authenticator = Authenticator(tokens_path=str(tokens.path), client_certificates=False)
    credentials = HttpCredentials(authenticator)
    watcher = Principal("dashboard", ALL_ROLES, "token")
    made = credentials.mint(watcher, now=1000.0)

    assert credentials.watcher(made.token, now=1000.0 + WATCH_TOKEN_TTL - 1).name == "dashboard"
    with pytest.raises(Unauthenticated, match="expired"):
        credentials.watcher(made.token, now=1000.0 + WATCH_TOKEN_TTL)
    tokens.path.write_text(token_file_text({tokens.runner: ("worker-7", "run")}))
    assert authenticator.reload()
    with pytest.raises(Unauthenticated, match="no longer"):
        credentials.watcher(made.token, now=1000.0)


async def test_no_cors_headers_by_default(http: Running) -> None:
    """Without --http-cors-origin no origin is allowed: no CORS headers, preflight refused."""
    answer = await curl("-H", "Origin: https://app.example", f"{base_url(http)}/v1/healthz")
    preflight = await curl(
        "-X",
        "OPTIONS",
        "-H",
        "Origin: https://app.example",
        "-H",
        "Access-Control-Request-Method: POST",
        f"{base_url(http)}{SERVICE_PATH}/Begin",
    )

    assert "access-control-allow-origin" not in answer.headers
    assert preflight.status == 403
    assert "access-control-allow-origin" not in preflight.headers


async def test_cors_allows_exactly_the_configured_origins(
    start_server: Callable[..., Any],
) -> None:
    """A configured origin gets its preflight and headers; another origin gets none."""
    running = await start_server(
        http_listen="127.0.0.1:0", http_cors_origins=("https://app.example",)
    )
    url = f"{base_url(running)}{SERVICE_PATH}/Begin"

    asks = ("-H", "Access-Control-Request-Method: POST")
    preflight = await curl("-X", "OPTIONS", "-H", "Origin: https://app.example", *asks, url)
    posting = ("-H", "Content-Type: application/json", "-d", BEGIN, url)
    allowed = await curl("-H", "Origin: https://app.example", *posting)
    other = await curl("-H", "Origin: https://app.example.evil", *posting)

    assert preflight.status == 204
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert "authorization" in preflight.headers["access-control-allow-headers"]
    assert "connect-protocol-version" in preflight.headers["access-control-allow-headers"]
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "grpc-status" in allowed.headers["access-control-expose-headers"]
    assert "access-control-allow-origin" not in other.headers


async def test_an_open_loopback_server_refuses_other_host_names(http: Running) -> None:
    """Without authentication, a request naming a non-loopback Host (DNS rebinding) is 403."""
    answer = await curl("-H", "Host: rebound.example:80", f"{base_url(http)}/v1/healthz")
    local = await curl("-H", f"Host: localhost:{http.server.http_port}", f"{base_url(http)}/")

    assert answer.status == 403
    assert local.status == 200


async def test_tls_covers_the_http_front(
    start_server: Callable[..., Any], pki: Pki, tokens: Tokens
) -> None:
    """With TLS the HTTP front speaks only HTTPS, and the watch cookie is Secure."""
    running = await start_server(
        http_listen="127.0.0.1:0",
        tls_cert=str(pki.server.cert),
        tls_key=str(pki.server.key),
        auth_tokens=str(tokens.path),
    )
    https = f"https://127.0.0.1:{running.server.http_port}"

    auth = f"Authorization: Bearer {tokens.watcher}"
    answer = await curl(
        "--cacert", str(pki.ca), "-X", "POST", "-H", auth, f"{https}/v1/watch-tokens"
    )
    plain = f"http://127.0.0.1:{running.server.http_port}/"
    process = await asyncio.create_subprocess_exec(
        *("curl", "-sS", "--max-time", "5", plain),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )

    assert answer.status == 200
    assert "Secure" in answer.headers["set-cookie"]
    assert await process.wait() != 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({"http_listen": "0.0.0.0:8080"}, "refusing to serve", id="open-network"),
        pytest.param(
            {"http_cors_origins": ("https://app.example/path",), "http_listen": "127.0.0.1:0"},
            "not an exact origin",
            id="origin-with-path",
        ),
        pytest.param(
            {"http_cors_origins": ("*",), "http_listen": "127.0.0.1:0"},
            "not an exact origin",
            id="wildcard-origin",
        ),
    ],
)
def test_config_refuses_an_open_or_vague_http_front(
    overrides: dict[str, Any], message: str
) -> None:
    """A non-loopback HTTP listen without TLS or tokens, or a CORS origin that is not exact,
    is refused at start with a message naming the field."""
    with pytest.raises(ValueError, match=message):
        ServerConfig(**overrides)


def test_a_non_loopback_http_front_with_tokens_is_allowed(tokens: Tokens) -> None:
    """With bearer tokens the HTTP front may listen on every address, as gRPC may."""
    config = ServerConfig(http_listen="0.0.0.0:8080", auth_tokens=str(tokens.path))

    assert config.http_listen == "0.0.0.0:8080"


def http_port_of(server: Served) -> int:
    """The HTTP port a ``runguard serve`` process logged in its 'serving' line."""
    for line in server.log.read_text().splitlines():
        if line.startswith("{") and json.loads(line).get("event") == "serving":
            return int(json.loads(line)["http_port"])
    raise AssertionError("no serving line")


def test_tokens_and_payloads_never_reach_the_log(
    served: Callable[..., Served], tokens: Tokens
) -> None:
    """Connect calls, refusals, a watch token in a URL and a cookie, and SSE leave no bearer
    token, watch token, lease token or payload in the debug log."""
    server = served(
        "--http-listen", "127.0.0.1:0", "--auth-tokens", str(tokens.path), "--log-level", "debug"
    )
    base = f"http://127.0.0.1:{http_port_of(server)}"
    marker = f"p4yl0ad-{secrets.token_hex(8)}"
    bogus = secrets.token_urlsafe(24)

    def run(*args: str) -> str:
        return subprocess.run(
            ["curl", "-sS", "--max-time", "2", *args], capture_output=True, text=True, check=False
        ).stdout

    def connect(method: str, token: str, body: object) -> str:
        return run(
            *("-H", "Content-Type: application/json", "-H", f"Authorization: Bearer {token}"),
            *("-d", json.dumps(body), f"{base}{SERVICE_PATH}/{method}"),
        )

    begin = {"guard": "g", "route": "/r", "payload": {"secret": marker}}
    granted = json.loads(connect("Begin", tokens.runner, begin))["granted"]
    connect("Begin", bogus, begin)
    connect("Begin", tokens.watcher, begin)
    watcher = f"Authorization: Bearer {tokens.watcher}"
    watch = json.loads(run("-X", "POST", "-H", watcher, f"{base}/v1/watch-tokens"))["token"]
    run(f"{base}/v1/events?watch_token={watch}")
    run("-H", f"Cookie: runguard_watch={watch}", f"{base}/v1/events")
    run(f"{base}/v1/events?watch_token={bogus}")
    run_id = granted["run"]["operationId"]
    connect(
        "End",
        tokens.runner,
        {"guard": "g", "operationId": run_id, "leaseToken": granted["leaseToken"]},
    )
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(10)
    time.sleep(0.1)

    log = server.log.read_text()
    assert '"refused": "Unauthenticated"' in log  # the refusals were logged, as audit lines
    secrets_seen = [tokens.runner, tokens.watcher, bogus, watch, granted["leaseToken"], marker]
    assert [s for s in secrets_seen if s in log] == []
