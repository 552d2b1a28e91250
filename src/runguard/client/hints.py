"""What to do when a connection fails for want of the right TLS settings, in words.

grpc reports a plaintext client at a TLS port only as ``Socket closed``, and a TLS client
at a plaintext port as a handshake failure (``WRONG_VERSION_NUMBER``). Pure: it reads the
status message and whether the client used TLS.
"""

from __future__ import annotations

__all__ = ["transport_hint", "with_hint"]

_CLOSED = ("Socket closed", "Connection reset by peer")


def transport_hint(details: str, *, tls: bool) -> str | None:
    """A sentence telling the caller which TLS setting to change, or None when none fits."""
    if "WRONG_VERSION_NUMBER" in details:
        return "the server does not serve TLS here: connect without --cacert (plaintext)"
    if "CERTIFICATE_VERIFY_FAILED" in details:
        return (
            "the server's certificate is not signed by the CA given with --cacert "
            "(RUNGUARD_CACERT, connect_options(ca=...)), or names another host"
        )
    if any(closed in details for closed in _CLOSED):
        if not tls:
            return (
                "if the server serves TLS, connect with TLS: give the CA that signed its "
                "certificate with --cacert FILE (RUNGUARD_CACERT; in Python "
                "connect_options(ca=FILE))"
            )
        return (
            "if the server requires client certificates (mTLS), give one its CA signed: "
            "--cert FILE --cert-key FILE (RUNGUARD_CERT, RUNGUARD_KEY; in Python "
            "connect_options(cert=..., key=...))"
        )
    return None


def with_hint(details: str, *, tls: bool) -> str:
    """``details``, followed by the hint that fits it, if any."""
    hint = transport_hint(details, tls=tls)
    return details if hint is None else f"{details} (hint: {hint})"
