"""The hint added to a failed connection's message names the TLS setting to change."""

from __future__ import annotations

import pytest

from runguard.client.hints import transport_hint, with_hint

CLOSED = "last error: UNAVAILABLE: ipv4:10.0.0.1:50051: Socket closed"
WRONG = "last error: UNKNOWN: Tls handshake failed (TSI_PROTOCOL_FAILURE): WRONG_VERSION_NUMBER"
UNTRUSTED = "Tls handshake failed: CERTIFICATE_VERIFY_FAILED: unable to get local issuer"


@pytest.mark.parametrize(
    ("details", "tls", "says"),
    [
        pytest.param(CLOSED, False, "--cacert FILE", id="plaintext-at-tls"),
        pytest.param(CLOSED, True, "--cert FILE --cert-key FILE", id="no-client-certificate"),
        pytest.param(WRONG, True, "does not serve TLS", id="tls-at-plaintext"),
        pytest.param(UNTRUSTED, True, "not signed by the CA", id="wrong-ca"),
    ],
)
def test_hint_names_the_setting(details: str, tls: bool, says: str) -> None:
    """Each TLS mismatch grpc reports gets a hint naming the flag that fixes it."""
    hint = transport_hint(details, tls=tls)
    assert hint is not None
    assert says in hint


def test_other_failures_get_no_hint() -> None:
    """A refused connection (no server) is left as grpc said it."""
    details = "failed to connect to all addresses; Connection refused"
    assert transport_hint(details, tls=False) is None
    assert with_hint(details, tls=False) == details
