"""Nothing secret in the logs: a whole session with TLS, tokens and every call, then a grep."""

from __future__ import annotations

import json
import secrets
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from runguard.client import (
    Client,
    PermissionDenied,
    RunRejected,
    Unauthenticated,
    connect_options,
)
from tests.certs import Pki
from tests.conftest import Served
from tests.security.conftest import Tokens, token_file_text


def _lines(server: Served) -> list[dict[str, Any]]:
    return [json.loads(line) for line in server.log.read_text().splitlines() if line[:1] == "{"]


def _wait_for(server: Served, event: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while sum(line["event"] == event for line in _lines(server)) < count:
        assert time.monotonic() < deadline, f"fewer than {count} {event!r} lines"
        time.sleep(0.02)


def test_a_full_session_logs_no_token_lease_token_or_payload(
    served: Callable[..., Served], pki: Pki, tokens: Tokens
) -> None:
    """Begin (granted, queued, rejected), KeepAlive, End, a forced End, Watch, refusals for an
    unknown token, a missing role and a wrong lease token, and two SIGHUP reloads (one of a bad
    file) on an mTLS server with tokens: the log has audit lines for the refusals and the force,
    and not one bearer token, lease token, payload or idempotency key."""
    server = served(
        *("--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key)),
        *("--tls-client-ca", str(pki.ca), "--auth-tokens", str(tokens.path)),
        *("--log-level", "debug"),
    )
    marker = f"p4yl0ad-{secrets.token_hex(8)}"
    key = f"idem-{secrets.token_hex(8)}"
    bogus = secrets.token_urlsafe(24)
    wrong_lease = secrets.token_urlsafe(24)
    new_token = secrets.token_urlsafe(24)
    bad_file_token = secrets.token_urlsafe(24)
    cert = {"ca": pki.ca, "cert": pki.bob.cert, "key": pki.bob.key}

    def client(token: str) -> Client:
        return Client(server.address, timeout=10, **connect_options(**cert, token=token))

    lease_tokens: list[str] = []
    with (
        client(tokens.runner) as runner,
        client(tokens.both) as ci,
        client(tokens.watcher) as watcher,
        client(tokens.admin) as admin,
        client(bogus) as stranger,
    ):
        events: list[Any] = []
        watch = watcher.watch(["generate", "jobs"])
        follower = threading.Thread(target=lambda: events.extend(watch), daemon=True)
        follower.start()

        grant = runner.begin("generate", route="/generate", payload={"prompt": marker}, ttl=30)
        lease_tokens.append(grant.lease_token)
        runner.keep_alive("generate", grant.run.operation_id, grant.lease_token, ttl=30)
        with pytest.raises(RunRejected):
            ci.begin("generate", payload={"prompt": marker})
        waiting = threading.Thread(
            target=lambda: lease_tokens.append(
                ci.begin("generate", idempotency_key=key, wait=10).lease_token
            )
        )
        waiting.start()
        time.sleep(0.3)
        with pytest.raises(PermissionDenied):
            runner.end("generate", grant.run.operation_id, wrong_lease)
        runner.end_grant(grant)
        waiting.join(10)
        with pytest.raises(PermissionDenied):
            runner.end("generate", "anything", force=True)
        admin.end("generate", ci.current("generate").holders[0].operation_id, force=True)
        with pytest.raises(PermissionDenied):
            watcher.begin("jobs", payload={"prompt": marker})
        with pytest.raises(Unauthenticated):
            stranger.current("generate")
        with runner.run("jobs", payload={"secret": marker}, ttl=3) as held:
            lease_tokens.append(held.grant.lease_token)
            time.sleep(1.2)  # at least one renewal

        tokens.path.write_text(
            token_file_text(
                {
                    tokens.runner: ("worker-7", "run"),
                    tokens.watcher: ("dashboard", "watch"),
                    tokens.admin: ("ops", "admin"),
                    new_token: ("worker-9", "run"),
                }
            )
        )
        server.process.send_signal(signal.SIGHUP)
        _wait_for(server, "auth_tokens_reloaded", 1)
        with client(new_token) as newcomer:
            fresh = newcomer.begin("jobs", payload={"prompt": marker})
            lease_tokens.append(fresh.lease_token)
            newcomer.end_grant(fresh)
        tokens.path.write_text(f"{bad_file_token} someone nosuchrole\n")
        server.process.send_signal(signal.SIGHUP)
        _wait_for(server, "auth_tokens_reload_failed", 1)
        watch.close()
        follower.join(10)

    assert len(lease_tokens) == 4
    assert [e for e in events if getattr(e, "kind", "") == "acquired"]
    server.process.terminate()
    server.process.wait(10)
    text = server.log.read_text()
    secret_values = {
        "runner token": tokens.runner,
        "ci token": tokens.both,
        "watcher token": tokens.watcher,
        "admin token": tokens.admin,
        "unknown token": bogus,
        "reloaded token": new_token,
        "token of the bad file": bad_file_token,
        "wrong lease token": wrong_lease,
        "payload": marker,
        "idempotency key": key,
        **{f"lease token {i}": lease for i, lease in enumerate(lease_tokens)},
    }
    leaked = [name for name, value in secret_values.items() if value in text]
    assert not leaked, f"secrets in the log: {leaked}"
    assert "PRIVATE KEY" not in text
    audits = [line for line in _lines(server) if line["event"] == "audit"]
    assert {(a["principal"], a.get("refused"), a.get("action")) for a in audits} >= {
        ("worker-7", "LeaseMismatch", None),
        ("worker-7", "NotPermitted", None),
        ("ops", None, "force"),
        ("dashboard", "NotPermitted", None),
        ("", "Unauthenticated", None),
    }
