"""Authentication and authorization without sockets: the token file, roles, identities,
and the settings that turn them on."""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any

import pytest
import structlog.testing

from runguard.server.auth import (
    ALL_ROLES,
    METHOD_ROLES,
    Authenticator,
    Principal,
    Role,
    authorize,
    parse_tokens,
)
from runguard.server.cli import _parser, build_config
from runguard.server.config import ServerConfig, is_loopback
from runguard.server.errors import NotPermitted, Unauthenticated
from runguard.v1 import runguard_pb2 as pb

TOKEN_A = "tok-A-0123456789abcdef"
TOKEN_B = "tok-B-0123456789abcdef"
TOKEN_C = "tok-C-0123456789abcdef"

FILE = f"""
# TOKEN  PRINCIPAL  ROLES
{TOKEN_A}  worker-7  run        # a worker
{TOKEN_B}  ops       admin,watch
{TOKEN_C}  worker-7  watch      # a second token of worker-7, for rotation

-  alice  watch
"""


class FakeContext:
    """The part of a grpc ServicerContext the authenticator reads."""

    def __init__(self, identities: list[bytes] | None = None) -> None:
        self.identities = identities

    def peer_identities(self) -> list[bytes] | None:
        """The client certificate's identities, as grpc gives them."""
        return self.identities


def test_the_token_file_maps_each_token_to_its_principal_and_roles() -> None:
    """Comments and blank lines are skipped; a principal may have several tokens."""
    table = parse_tokens(FILE)
    assert table.find(TOKEN_A) == Principal("worker-7", frozenset({Role.RUN}), "token")
    assert table.find(TOKEN_B) == Principal("ops", frozenset({Role.ADMIN, Role.WATCH}), "token")
    assert table.find(TOKEN_C) == Principal("worker-7", frozenset({Role.WATCH}), "token")
    assert table.find("tok-D-0123456789abcdef") is None
    assert table.roles == {
        "worker-7": frozenset({Role.RUN, Role.WATCH}),
        "ops": frozenset({Role.ADMIN, Role.WATCH}),
        "alice": frozenset({Role.WATCH}),
    }


def test_a_lookup_compares_every_token_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """find() compares the digest with every entry through hmac.compare_digest, with no early
    exit, so its time does not depend on which token (if any) matches."""
    table = parse_tokens(FILE)
    calls: list[int] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    for token in (TOKEN_A, TOKEN_C, "nope" * 8):
        calls.clear()
        table.find(token)
        assert len(calls) == 3
    assert all(len(digest) == 32 for digest, _ in table.tokens)  # only SHA-256 digests kept


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(f"{TOKEN_A} worker-7", "line 1: expected TOKEN PRINCIPAL", id="two-fields"),
        pytest.param(f"{TOKEN_A} a run extra", "got 4", id="four-fields"),
        pytest.param(f"{TOKEN_A} a runner", "line 1: unknown role 'runner'", id="unknown-role"),
        pytest.param("short-token a run", "line 1: a token is 16 to 512", id="short-token"),
        pytest.param(
            f"{TOKEN_A} a run\n\n{TOKEN_A} b watch", "line 3: the same token as line 1", id="dup"
        ),
        pytest.param(f"{TOKEN_A}\u00e9 a run", "a token is 16 to 512", id="non-ascii-token"),
    ],
)
def test_a_malformed_line_is_named_by_number_and_never_quotes_a_token(
    text: str, message: str
) -> None:
    """Each malformed line raises ValueError naming the file and line; the token is not in it."""
    with pytest.raises(ValueError, match=message) as caught:
        parse_tokens(text, "tokens.txt")
    assert str(caught.value).startswith("tokens.txt line ")
    assert TOKEN_A not in str(caught.value)


def test_a_hash_inside_a_token_is_not_a_comment() -> None:
    """Only a '#' at the start of a line or after white space starts a comment."""
    table = parse_tokens("abc#def0123456789xyz p run  # comment\n")
    assert table.find("abc#def0123456789xyz") == Principal("p", frozenset({Role.RUN}), "token")


METHODS = ("Begin", "End", "KeepAlive", "Current", "Watch", "ListGuards", "ConfigureGuard")
"""Every method of the service."""


@pytest.mark.parametrize(
    ("roles", "method", "allowed"),
    [
        pytest.param({Role.RUN}, method, method != "ConfigureGuard", id=f"run-{method}")
        for method in METHODS
    ]
    + [
        pytest.param(
            {Role.WATCH},
            method,
            method in ("Current", "Watch", "ListGuards"),
            id=f"watch-{method}",
        )
        for method in METHODS
    ]
    + [pytest.param({Role.ADMIN}, method, True, id=f"admin-{method}") for method in METHODS]
    + [pytest.param(set(), "Current", False, id="no-role")],
)
def test_roles_allow_their_methods(roles: set[Role], method: str, allowed: bool) -> None:
    """run: all but ConfigureGuard; watch: Current, Watch, ListGuards; admin: everything."""
    principal = Principal("p", frozenset(roles), "token")
    if allowed:
        authorize(principal, method, object())
    else:
        with pytest.raises(NotPermitted, match=f"^{method} needs the role"):
            authorize(principal, method, object())


def test_every_method_of_the_service_has_roles() -> None:
    """METHOD_ROLES names exactly the service's methods."""
    service = pb.DESCRIPTOR.services_by_name["RunGuardService"]
    assert set(METHOD_ROLES) == {m.name for m in service.methods}


@pytest.mark.parametrize(
    ("roles", "allowed"),
    [
        pytest.param({Role.RUN}, False, id="run"),
        pytest.param({Role.RUN, Role.WATCH}, False, id="run-watch"),
        pytest.param({Role.ADMIN}, True, id="admin"),
    ],
)
def test_end_with_force_needs_admin(roles: set[Role], allowed: bool) -> None:
    """End is a run call, but End with force only an admin's."""
    principal = Principal("p", frozenset(roles), "token")
    authorize(principal, "End", pb.EndRequest(operation_id="op"))
    forced = pb.EndRequest(operation_id="op", force=True)
    if allowed:
        authorize(principal, "End", forced)
    else:
        with pytest.raises(NotPermitted, match="End with force needs the role admin"):
            authorize(principal, "End", forced)


def _authenticator(tmp_path: Path, text: str | None, *, certificates: bool) -> Authenticator:
    path = None
    if text is not None:
        (tmp_path / "tokens").write_text(text)
        (tmp_path / "tokens").chmod(0o600)
        path = str(tmp_path / "tokens")
    return Authenticator(tokens_path=path, client_certificates=certificates)


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        pytest.param((), "no credentials", id="none"),
        pytest.param((("authorization", "Bearer nope-nope-nope-nope"),), "unknown", id="unknown"),
        pytest.param((("authorization", "Basic abc"),), "must be 'Bearer TOKEN'", id="basic"),
        pytest.param((("authorization", "Bearer"),), "must be 'Bearer TOKEN'", id="empty"),
    ],
)
def test_calls_without_a_known_token_are_unauthenticated(
    tmp_path: Path, metadata: tuple[tuple[str, str], ...], message: str
) -> None:
    """With a token file and no certificates, a call needs a known bearer token."""
    authenticator = _authenticator(tmp_path, FILE, certificates=False)
    with pytest.raises(Unauthenticated, match=message):
        authenticator.identify(metadata, FakeContext())
    found = authenticator.identify((("authorization", f"bearer {TOKEN_A}"),), FakeContext())
    assert found.name == "worker-7"


def test_a_certificate_principal_has_the_roles_the_file_gives_it(tmp_path: Path) -> None:
    """The certificate's first identity is the principal; its roles come from the token file
    (none when unnamed), or are every role when there is no token file."""
    with_file = _authenticator(tmp_path, FILE, certificates=True)
    alice = with_file.identify((), FakeContext([b"alice"]))
    assert alice == Principal("alice", frozenset({Role.WATCH}), "certificate")
    worker = with_file.identify((), FakeContext([b"worker-7", b"other"]))
    assert worker.roles == frozenset({Role.RUN, Role.WATCH})
    assert with_file.identify((), FakeContext([b"mallory"])).roles == frozenset()
    token_wins = with_file.identify((("authorization", f"Bearer {TOKEN_B}"),), FakeContext([b"x"]))
    assert token_wins.name == "ops"
    without_file = _authenticator(tmp_path, None, certificates=True)
    assert without_file.identify((), FakeContext([b"alice"])).roles == ALL_ROLES
    with pytest.raises(Unauthenticated, match="names nobody"):
        without_file.identify((), FakeContext(None))


def test_a_reload_takes_a_good_file_and_keeps_the_old_one_for_a_bad_file(
    tmp_path: Path,
) -> None:
    """reload() swaps in a new file; a file that does not parse keeps the old tokens, and
    the log line says why (by line number, without the token)."""
    authenticator = _authenticator(tmp_path, FILE, certificates=False)
    good = ((("authorization", f"Bearer {TOKEN_A}"),), FakeContext())
    assert authenticator.identify(*good).name == "worker-7"
    (tmp_path / "tokens").write_text(f"{TOKEN_B} ops admin\n{TOKEN_A} worker-7 runn\n")
    with structlog.testing.capture_logs() as logs:
        assert not authenticator.reload()
    assert authenticator.identify(*good).name == "worker-7"
    assert [line["event"] for line in logs] == ["auth_tokens_reload_failed"]
    assert "line 2: unknown role 'runn'" in logs[0]["error"]
    assert TOKEN_A not in repr(logs)
    assert TOKEN_B not in repr(logs)
    (tmp_path / "tokens").write_text(f"{TOKEN_B} ops admin\n")
    with structlog.testing.capture_logs() as logs:
        assert authenticator.reload()
    assert logs[0]["event"] == "auth_tokens_reloaded"
    assert logs[0]["tokens"] == 1
    with pytest.raises(Unauthenticated):
        authenticator.identify(*good)


def test_a_token_file_others_may_read_is_warned_about(tmp_path: Path) -> None:
    """Loading a token file readable by group or others logs a warning (it still loads)."""
    path = tmp_path / "tokens"
    path.write_text(FILE)
    path.chmod(0o644)
    with structlog.testing.capture_logs() as logs:
        Authenticator(tokens_path=str(path), client_certificates=False)
    assert [line["event"] for line in logs] == ["auth_tokens_readable_by_others"]


def test_an_unreadable_token_file_stops_the_server_from_starting(tmp_path: Path) -> None:
    """A token file that is missing raises ValueError naming it."""
    with pytest.raises(ValueError, match=r"cannot read auth tokens .*missing"):
        Authenticator(tokens_path=str(tmp_path / "missing"), client_certificates=False)


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        pytest.param("127.0.0.1:1", True, id="ipv4"),
        pytest.param("127.9.9.9:1", True, id="ipv4-net"),
        pytest.param("[::1]:1", True, id="ipv6"),
        pytest.param("localhost:1", True, id="localhost"),
        pytest.param("0.0.0.0:1", False, id="any-ipv4"),
        pytest.param("[::]:1", False, id="any-ipv6"),
        pytest.param("10.0.0.5:1", False, id="private"),
        pytest.param("runguard.internal:1", False, id="host-name"),
    ],
)
def test_loopback_addresses(address: str, loopback: bool) -> None:
    """Only localhost, 127.0.0.0/8 and ::1 count as loopback; a host name never does."""
    assert is_loopback(address) is loopback


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"tls_cert": "c", "tls_key": "k"}, id="tls"),
        pytest.param({"auth_tokens": "t"}, id="tokens"),
        pytest.param({"insecure": True}, id="insecure"),
    ],
)
def test_a_network_address_needs_tls_tokens_or_insecure(settings: dict[str, Any]) -> None:
    """Serving 0.0.0.0 without TLS or tokens is refused with the reason and the way out."""
    with pytest.raises(ValueError, match=r"^listen: refusing to serve 0\.0\.0\.0:50051") as caught:
        ServerConfig(listen="0.0.0.0:50051")
    assert "--insecure" in str(caught.value)
    assert ServerConfig(listen="0.0.0.0:50051", **settings).listen == "0.0.0.0:50051"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        pytest.param({"tls_cert": "c"}, "tls_cert and tls_key", id="cert-without-key"),
        pytest.param({"tls_key": "k"}, "tls_cert and tls_key", id="key-without-cert"),
        pytest.param({"tls_client_ca": "ca"}, "tls_client_ca needs tls_cert", id="ca-alone"),
        pytest.param({"max_watchers_per_principal": 0}, "max_watchers_per", id="no-watchers"),
        pytest.param({"max_request_bytes": 1000}, "max_request_bytes must", id="tiny-requests"),
    ],
)
def test_security_settings_are_validated(settings: dict[str, Any], message: str) -> None:
    """Half a TLS setup, mTLS without TLS and limits below their floor are refused by name."""
    with pytest.raises(ValueError, match=message):
        ServerConfig(**settings)


def test_the_request_size_limit_is_a_grpc_option() -> None:
    """max_request_bytes (1 MiB) becomes grpc.max_receive_message_length."""
    assert ("grpc.max_receive_message_length", 1 << 20) in ServerConfig().grpc_options()
    options = ServerConfig(max_request_bytes=300_000).grpc_options()
    assert ("grpc.max_receive_message_length", 300_000) in options


def test_serve_flags_reach_the_security_settings() -> None:
    """Each TLS, token and limit flag of runguard serve sets its field."""
    args = _parser().parse_args(
        [
            "serve",
            "--listen",
            "0.0.0.0:7000",
            "--tls-cert",
            "s.pem",
            "--tls-key",
            "s-key.pem",
            "--tls-client-ca",
            "ca.pem",
            "--auth-tokens",
            "tokens",
            "--max-watchers-per-principal",
            "7",
            "--max-request-bytes",
            "300000",
        ]
    )
    config = build_config(args, {})
    assert (config.tls_cert, config.tls_key, config.tls_client_ca) == (
        "s.pem",
        "s-key.pem",
        "ca.pem",
    )
    assert config.auth_tokens == "tokens"
    assert (config.max_watchers_per_principal, config.max_request_bytes) == (7, 300_000)
    insecure = build_config(_parser().parse_args(["serve", "--listen", "[::]:1", "--insecure"]), {})
    assert insecure.insecure
