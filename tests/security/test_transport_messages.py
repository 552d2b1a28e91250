"""What a user reads when the transport is wrong: a plaintext client at a TLS server, a TLS
client at a plaintext one, a port already in use; and a server log of JSON lines only."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from runguard.client import Client, RetryPolicy, Unavailable, connect_options
from tests.certs import Pki
from tests.conftest import Served, runguard

ONCE = RetryPolicy(attempts=1)


def _tls_args(pki: Pki) -> tuple[str, ...]:
    return ("--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key))


def test_python_client_without_tls_at_a_tls_server_is_told_to_pass_the_ca(
    served: Callable[..., Served], pki: Pki
) -> None:
    """A plaintext Client at a TLS port gets Unavailable whose message says to give the CA
    (--cacert, connect_options(ca=...)), not only grpc's 'Socket closed'."""
    server = served(*_tls_args(pki))
    with Client(server.address, retry=ONCE, timeout=5) as client, pytest.raises(Unavailable) as e:
        client.current("g")
    assert "Socket closed" in e.value.message
    assert "--cacert FILE" in e.value.message
    assert "connect_options(ca=FILE)" in e.value.message


def test_cli_without_tls_at_a_tls_server_is_told_to_pass_cacert(
    served: Callable[..., Served], pki: Pki
) -> None:
    """``runguard current`` and ``runguard health`` at a TLS port without --cacert fail (1)
    with one line that names --cacert; with it they succeed."""
    server = served(*_tls_args(pki))
    for verb in ("current", "health"):
        done = runguard(verb, "--target", server.address, "--timeout", "5")
        assert done.returncode == 1, done
        assert done.stderr.count("\n") == 1, done.stderr
        assert "give the CA that signed its certificate with --cacert FILE" in done.stderr
        fixed = runguard(verb, "--target", server.address, "--cacert", str(pki.ca))
        assert fixed.returncode == 0, fixed.stderr


def test_tls_client_at_a_plaintext_server_is_told_to_drop_tls(
    served: Callable[..., Served], pki: Pki
) -> None:
    """A Client with a CA at a plaintext port is told the server does not serve TLS."""
    server = served()
    options = connect_options(ca=str(pki.ca))
    client = Client(server.address, retry=ONCE, timeout=5, **options)
    with client, pytest.raises(Unavailable) as caught:
        client.current("g")
    assert "the server does not serve TLS here" in caught.value.message


def test_a_waiting_begin_that_gives_up_gets_the_same_hint(
    served: Callable[..., Served], pki: Pki
) -> None:
    """A Begin with a wait, retried until its wait is spent, ends with the hint a TLS client
    gets (at an mTLS port without a certificate: give one), not a plaintext client's."""
    server = served(*_tls_args(pki), "--tls-client-ca", str(pki.ca))
    options = connect_options(ca=str(pki.ca))
    client = Client(server.address, retry=ONCE, timeout=5, **options)
    with client, pytest.raises(Unavailable) as caught:
        client.begin("g", wait=0.5)
    assert "--cert FILE --cert-key FILE" in caught.value.message
    assert "--cacert FILE" not in caught.value.message


def test_client_without_its_certificate_at_an_mtls_server_is_told_to_pass_one(
    served: Callable[..., Served], pki: Pki
) -> None:
    """A TLS Client without a certificate at an mTLS port is told to give --cert/--cert-key."""
    server = served(*_tls_args(pki), "--tls-client-ca", str(pki.ca))
    options = connect_options(ca=str(pki.ca))
    client = Client(server.address, retry=ONCE, timeout=5, **options)
    with client, pytest.raises(Unavailable) as caught:
        client.current("g")
    assert "--cert FILE --cert-key FILE" in caught.value.message


def _wait_for_line(log: Path, text: str) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if text in log.read_text():
            return True
        time.sleep(0.1)
    return False


def _stop(server: Served) -> str:
    server.process.terminate()
    server.process.wait(10)
    return server.log.read_text()


def test_server_log_has_no_grpc_lines_by_default(served: Callable[..., Served], pki: Pki) -> None:
    """A failed TLS handshake (a plaintext client) leaves the server's stderr all JSON lines:
    grpc's own 'Handshake failed' line is not printed."""
    server = served(*_tls_args(pki))
    with Client(server.address, retry=ONCE, timeout=5) as client, pytest.raises(Unavailable):
        client.current("g")
    log = _stop(server)
    assert '"event": "stopped"' in log
    for line in log.splitlines():
        assert json.loads(line)["event"], line


def test_grpc_verbosity_shows_grpcs_own_lines(
    served: Callable[..., Served], pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With GRPC_VERBOSITY=info set, the documented switch, grpc's handshake line is there."""
    monkeypatch.setenv("GRPC_VERBOSITY", "info")
    server = served(*_tls_args(pki))
    with Client(server.address, retry=ONCE, timeout=5) as client, pytest.raises(Unavailable):
        client.current("g")
    assert _wait_for_line(server.log, "Handshake failed"), server.log.read_text()
    _stop(server)


@pytest.mark.parametrize(
    "flag",
    [pytest.param("--listen", id="grpc-port"), pytest.param("--metrics-listen", id="metrics")],
)
def test_a_port_in_use_is_one_line_and_nothing_keeps_running(
    served: Callable[..., Served], flag: str
) -> None:
    """A second server on a port in use exits 1 at once with one line naming the address and
    the cause, no traceback and no grpc line; the first server goes on serving."""
    first = served()
    args = ["serve", "--listen", first.address]
    if flag == "--metrics-listen":
        args = ["serve", "--listen", "127.0.0.1:0", "--metrics-listen", first.address]
    env = {k: v for k, v in os.environ.items() if k != "GRPC_VERBOSITY"}
    done = runguard(*args, env=env)
    what = "serve metrics on" if flag == "--metrics-listen" else "listen on"
    assert (done.returncode, done.stdout) == (1, ""), done
    assert done.stderr == (
        f"runguard: cannot {what} {first.address}: "
        "the port is in use (is another server running on it?)\n"
    )
    assert runguard("health", "--target", first.address).returncode == 0
