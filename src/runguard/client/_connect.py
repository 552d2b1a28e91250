"""How a client proves who it is: TLS files and a bearer token as ``Client`` arguments.

``Client(target, **connect_options(ca=..., cert=..., key=..., token=...))`` (the
same for ``AsyncClient``). The command line and the seed drop-in read the same
settings from ``RUNGUARD_CACERT``, ``RUNGUARD_CERT``, ``RUNGUARD_KEY`` and
``RUNGUARD_TOKEN`` through :func:`connect_options_from_env`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import TypedDict

import grpc

from runguard.contract import AUTHORIZATION

__all__ = ["ENVIRONMENT", "ConnectOptions", "connect_options", "connect_options_from_env"]

ENVIRONMENT = {
    "ca": "RUNGUARD_CACERT",
    "cert": "RUNGUARD_CERT",
    "key": "RUNGUARD_KEY",
    "token": "RUNGUARD_TOKEN",
}
"""The environment variable of each :func:`connect_options` argument."""

_TOKEN = re.compile(r"[\x21-\x7e]+")


class ConnectOptions(TypedDict):
    """Keyword arguments of ``Client`` and ``AsyncClient``."""

    credentials: grpc.ChannelCredentials | None
    metadata: tuple[tuple[str, str], ...]


def _read(what: str, path: str | os.PathLike[str] | None) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise ValueError(f"cannot read the {what} {os.fspath(path)}: {error}") from None


def connect_options(
    *,
    ca: str | os.PathLike[str] | None = None,
    cert: str | os.PathLike[str] | None = None,
    key: str | os.PathLike[str] | None = None,
    token: str | None = None,
) -> ConnectOptions:
    """The ``credentials`` and ``metadata`` a client needs for a server with TLS or tokens.

    Args:
        ca: PEM file of the CA that signed the server's certificate (the
            system's CAs when None). Any of ``ca``, ``cert``, ``key`` turns TLS on.
        cert: PEM file of this client's certificate, for a server that asks
            for one (mTLS); needs ``key``.
        key: PEM file of this client's private key.
        token: a bearer token of the server's token file, sent as
            ``authorization: Bearer TOKEN`` with every call. Without TLS it
            crosses the network readable: use it so only on loopback.

    Returns:
        ``{"credentials": ..., "metadata": ...}``, to pass as ``**`` keyword arguments.

    Raises:
        ValueError: a file cannot be read, ``cert`` comes without ``key`` (or
            the other way round), or the token is not visible ASCII.
    """
    if (cert is None) != (key is None):
        raise ValueError("a client certificate and its key go together: give cert and key")
    credentials = None
    if ca is not None or cert is not None:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read("CA certificate", ca),
            private_key=_read("client key", key),
            certificate_chain=_read("client certificate", cert),
        )
    metadata: tuple[tuple[str, str], ...] = ()
    if token is not None:
        if not _TOKEN.fullmatch(token):
            raise ValueError("a bearer token is visible ASCII characters without spaces")
        metadata = ((AUTHORIZATION, f"Bearer {token}"),)
    return ConnectOptions(credentials=credentials, metadata=metadata)


def connect_options_from_env(env: Mapping[str, str]) -> ConnectOptions:
    """:func:`connect_options` from ``RUNGUARD_CACERT``, ``_CERT``, ``_KEY`` and ``_TOKEN``
    (an empty variable counts as unset).

    Raises:
        ValueError: as :func:`connect_options`.
    """
    values = {name: env.get(variable) or None for name, variable in ENVIRONMENT.items()}
    return connect_options(
        ca=values["ca"], cert=values["cert"], key=values["key"], token=values["token"]
    )
