"""Picking fixed ports for programs that cannot take port 0 and say which they got."""

from __future__ import annotations

import socket


def is_free(port: int) -> bool:
    """Whether 127.0.0.1:``port`` can be bound right now (it may be taken a moment later)."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
