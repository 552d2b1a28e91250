"""TLS and mTLS over a real connection: who gets in, and which principal a certificate is."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from runguard.client import AsyncClient, PermissionDenied, connect_options
from runguard.v1 import runguard_pb2 as pb
from tests.certs import Pki
from tests.conftest import Running
from tests.integration.support import begin_request
from tests.security.conftest import MakeCaller, Tokens


def _tls(pki: Pki, **more: Any) -> dict[str, Any]:
    return {"tls_cert": str(pki.server.cert), "tls_key": str(pki.server.key), **more}


async def _code(call: Any) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_tls_without_client_certificates_encrypts_but_does_not_authenticate(
    start_server: Callable[..., Any], pki: Pki, callers: MakeCaller
) -> None:
    """With only --tls-cert/--tls-key a client that trusts the CA is served (as the anonymous
    principal ""), and a plaintext client is not."""
    server: Running = await start_server(**_tls(pki))
    trusting = callers(server.address, ca=pki.ca)
    granted = (await trusting("Begin", begin_request("op-1"))).granted
    assert granted.run.principal == ""
    plaintext = callers(server.address)
    assert await _code(plaintext("Current", pb.CurrentRequest(), deadline=3)) == (
        grpc.StatusCode.UNAVAILABLE
    )


@pytest.mark.parametrize(
    ("who", "principal"),
    [
        pytest.param("alice", "alice", id="common-name"),
        pytest.param("bob", "bob.example", id="first-subject-alternative-name"),
    ],
)
async def test_a_client_certificate_names_the_principal(
    start_server: Callable[..., Any], pki: Pki, callers: MakeCaller, who: str, principal: str
) -> None:
    """With --tls-client-ca the principal is the certificate's first SAN, else its CN; without
    a token file every certificate of the CA has every role (force included)."""
    server: Running = await start_server(**_tls(pki, tls_client_ca=str(pki.ca)))
    issued = getattr(pki, who)
    caller = callers(server.address, ca=pki.ca, cert=issued.cert, key=issued.key)
    granted = (await caller("Begin", begin_request("op-1"))).granted
    assert granted.run.principal == principal
    current = await caller("Current", pb.CurrentRequest(guard="generate"))
    assert [h.principal for h in current.state.holders] == [principal]
    forced = await caller("End", pb.EndRequest(guard="generate", operation_id="op-1", force=True))
    assert forced.result == pb.END_RESULT_ENDED


@pytest.mark.parametrize(
    "who",
    [
        pytest.param("none", id="no-client-certificate"),
        pytest.param("stranger", id="certificate-of-another-ca"),
    ],
)
async def test_mtls_turns_away_clients_without_a_certificate_of_its_ca(
    start_server: Callable[..., Any], pki: Pki, callers: MakeCaller, who: str
) -> None:
    """No client certificate, or one another CA signed: the handshake fails (UNAVAILABLE),
    so no call reaches the service; health is unreachable too, as on any TLS port."""
    server: Running = await start_server(**_tls(pki, tls_client_ca=str(pki.ca)))
    cert = {} if who == "none" else {"cert": pki.stranger.cert, "key": pki.stranger.key}
    caller = callers(server.address, ca=pki.ca, **cert)
    code = await _code(caller("Current", pb.CurrentRequest(), deadline=3))
    assert code == grpc.StatusCode.UNAVAILABLE


async def test_with_a_token_file_a_certificate_has_the_roles_the_file_gives_its_principal(
    start_server: Callable[..., Any], pki: Pki, tokens: Tokens, callers: MakeCaller
) -> None:
    """mTLS plus tokens: ``- alice watch`` lets alice watch but not begin; bob, whom the file
    does not name, may do nothing; a token sent with a certificate decides the principal, and
    an unknown one is UNAUTHENTICATED whatever the certificate."""
    server: Running = await start_server(
        **_tls(pki, tls_client_ca=str(pki.ca), auth_tokens=str(tokens.path))
    )
    alice = callers(server.address, ca=pki.ca, cert=pki.alice.cert, key=pki.alice.key)
    assert await _code(alice("Current", pb.CurrentRequest())) == grpc.StatusCode.OK
    assert await _code(alice("Begin", begin_request("op-1"))) == grpc.StatusCode.PERMISSION_DENIED
    bob = callers(server.address, ca=pki.ca, cert=pki.bob.cert, key=pki.bob.key)
    assert await _code(bob("Current", pb.CurrentRequest())) == grpc.StatusCode.PERMISSION_DENIED
    bob_runner = callers(
        server.address, ca=pki.ca, cert=pki.bob.cert, key=pki.bob.key, token=tokens.runner
    )
    granted = (await bob_runner("Begin", begin_request("op-1"))).granted
    assert granted.run.principal == "worker-7"
    bob_unknown = callers(
        server.address, ca=pki.ca, cert=pki.bob.cert, key=pki.bob.key, token="x" * 40
    )
    code = await _code(bob_unknown("Current", pb.CurrentRequest()))
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_the_python_client_takes_tls_files_and_a_token(
    start_server: Callable[..., Any], pki: Pki, tokens: Tokens
) -> None:
    """AsyncClient(target, **connect_options(ca=, cert=, key=, token=)) works over mTLS with a
    token; the runs it sees name their principal, and a role it lacks raises PermissionDenied."""
    server: Running = await start_server(
        **_tls(pki, tls_client_ca=str(pki.ca), auth_tokens=str(tokens.path))
    )
    alice_options = connect_options(ca=pki.ca, cert=pki.alice.cert, key=pki.alice.key)
    ci_options = connect_options(ca=pki.ca, cert=pki.bob.cert, key=pki.bob.key, token=tokens.both)
    async with (
        AsyncClient(server.address, **ci_options) as ci,
        AsyncClient(server.address, **alice_options) as alice,
    ):
        grant = await ci.begin("generate", payload={"n": 1})
        assert grant.run.principal == "ci"
        state = await alice.current("generate")
        assert [run.principal for run in state.holders] == ["ci"]
        with pytest.raises(PermissionDenied, match="needs the role run or admin"):
            await alice.begin("other")
        await ci.end_grant(grant)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        pytest.param({"cert": "c.pem"}, "go together", id="cert-without-key"),
        pytest.param({"ca": "/nonexistent/ca.pem"}, "cannot read the CA", id="missing-file"),
        pytest.param({"token": "two words"}, "visible ASCII", id="token-with-space"),
    ],
)
def test_connect_options_refuses_what_cannot_work(arguments: dict[str, str], message: str) -> None:
    """A certificate without its key, a file that is not there, or a token that cannot be
    sent as metadata raise ValueError before any connection."""
    with pytest.raises(ValueError, match=message):
        connect_options(**arguments)
