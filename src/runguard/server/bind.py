"""Why an address could not be bound, in words: grpc says only "Failed to bind"."""

from __future__ import annotations

import errno
import socket

__all__ = ["bind_failure"]


def bind_failure(listen: str) -> str:
    """The reason ``listen`` (HOST:PORT) cannot be bound, found by binding it once more.

    Called only after a bind failed, to name the cause; it never picks a port.
    """
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        addresses = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except (socket.gaierror, ValueError):
        return f"{host!r} is not an address of this machine"
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    return "the port is in use (is another server running on it?)"
                if error.errno == errno.EADDRNOTAVAIL:
                    return f"{host} is not an address of this machine"
                return (error.strerror or str(error)).lower()
    return "grpc could not bind it (GRPC_VERBOSITY=debug shows grpc's reason)"
