"""A bind failure is explained: a port in use, or an address not of this machine."""

from __future__ import annotations

import socket

from runguard.server.bind import bind_failure


def test_a_port_in_use_is_named_so() -> None:
    """An address another socket listens on is 'in use'."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert bind_failure(f"127.0.0.1:{port}").startswith("the port is in use")


def test_an_address_of_another_machine_is_named_so() -> None:
    """An address no interface has is 'not an address of this machine'."""
    assert bind_failure("192.0.2.1:1") == "192.0.2.1 is not an address of this machine"
