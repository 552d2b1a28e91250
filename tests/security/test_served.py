"""``runguard serve`` with TLS and tokens as a process: SIGHUP reloads, the refusal to serve a
network unprotected, and the client verbs, the health probe and the seed drop-in with
TLS files and a token."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from runguard.client import connect_options, run_guard
from runguard.server.cli import main
from runguard.v1 import runguard_pb2 as pb
from tests.certs import Pki
from tests.conftest import Served, runguard
from tests.integration.support import begin_request
from tests.security.conftest import Tokens, token_file_text
from tests.stubs import sync_stub


def _events(server: Served, event: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in server.log.read_text().splitlines() if line[:1] == "{"]
    return [line for line in lines if line["event"] == event]


def _wait_for(server: Served, event: str, count: int = 1) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = _events(server, event)
        if len(found) >= count:
            return found
        time.sleep(0.02)
    raise AssertionError(f"no {event!r} line in {server.log.read_text()}")


def _stub(address: str, token: str) -> tuple[grpc.Channel, Any, tuple[tuple[str, str], ...]]:
    channel = grpc.insecure_channel(address)
    return (
        channel,
        sync_stub(channel),
        connect_options(token=token)["metadata"],
    )


def test_sighup_rereads_the_token_file_without_dropping_streams(
    served: Callable[..., Served], tokens: Tokens
) -> None:
    """After SIGHUP a removed token is UNAUTHENTICATED and a new one works, while a Watch opened
    before keeps streaming; a file that does not parse keeps the tokens in force and the log
    says which line is wrong, without the token."""
    server = served("--auth-tokens", str(tokens.path))
    channel, stub, watcher = _stub(server.address, tokens.watcher)
    stream = stub.Watch(pb.WatchRequest(guards=["generate"]), metadata=watcher, timeout=30)
    assert next(stream).WhichOneof("event") == "snapshot"
    new_runner = "new-runner-token-0123456789"
    tokens.path.write_text(
        token_file_text({tokens.watcher: ("dashboard", "watch"), new_runner: ("worker-8", "run")})
    )
    server.process.send_signal(signal.SIGHUP)
    assert _wait_for(server, "auth_tokens_reloaded")[0]["tokens"] == 2
    old = connect_options(token=tokens.runner)["metadata"]
    with pytest.raises(grpc.RpcError) as caught:
        stub.Begin(begin_request("op-old"), metadata=old)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    new = connect_options(token=new_runner)["metadata"]
    granted = stub.Begin(begin_request("op-new"), metadata=new).granted
    assert granted.run.principal == "worker-8"
    change = next(m for m in stream if m.WhichOneof("event") == "change").change
    assert (change.run.operation_id, change.run.principal) == ("op-new", "worker-8")

    tokens.path.write_text(f"{new_runner} worker-8 run\nanother-token-0123456789 x sudo\n")
    server.process.send_signal(signal.SIGHUP)
    failed = _wait_for(server, "auth_tokens_reload_failed")[0]
    assert "line 2: unknown role 'sudo'" in failed["error"]
    assert stub.Current(pb.CurrentRequest(), metadata=watcher).state.guard == "default"
    stream.cancel()
    channel.close()
    assert new_runner not in server.log.read_text()


def test_serve_refuses_a_network_address_without_tls_or_tokens(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """runguard serve --listen 0.0.0.0:PORT exits 2, says why and how to proceed, binds nothing."""
    assert main(["serve", "--listen", "0.0.0.0:0"]) == 2
    err = capsys.readouterr().err
    assert "refusing to serve 0.0.0.0:0 without TLS or auth tokens" in err
    assert "--insecure" in err


def test_insecure_serves_a_network_address_and_warns(served: Callable[..., Served]) -> None:
    """With --insecure the server serves 0.0.0.0 and logs an 'unauthenticated' warning."""
    server = served("--listen", "0.0.0.0:0", "--insecure")
    warning = _wait_for(server, "unauthenticated")[0]
    assert "may Begin, End and force-End any run" in warning["detail"]


def test_client_verbs_and_health_take_tls_files_and_a_token(
    served: Callable[..., Served],
    pki: Pki,
    tokens: Tokens,
) -> None:
    """The client verbs take --cacert/--cert/--cert-key/--auth-token or RUNGUARD_CACERT,
    _CERT, _KEY, _TOKEN; runguard health takes the TLS files; without them the call fails."""
    server = served(
        *("--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key)),
        *("--tls-client-ca", str(pki.ca), "--auth-tokens", str(tokens.path)),
    )
    tls = ("--cacert", str(pki.ca), "--cert", str(pki.bob.cert), "--cert-key", str(pki.bob.key))
    target = ("--target", server.address)
    begun = runguard("begin", "nightly", *target, *tls, "--auth-token", tokens.runner, "--json")
    assert begun.returncode == 0, begun.stderr
    assert json.loads(begun.stdout)["run"]["principal"] == "worker-7"
    env = {
        **os.environ,
        "RUNGUARD_TARGET": server.address,
        "RUNGUARD_CACERT": str(pki.ca),
        "RUNGUARD_CERT": str(pki.alice.cert),
        "RUNGUARD_KEY": str(pki.alice.key),
    }
    current = runguard("current", "nightly", env=env)
    assert current.returncode == 0, current.stderr
    assert "by=worker-7" in current.stdout
    refused = runguard("begin", "other", env=env)  # alice's certificate: role watch only
    assert refused.returncode == 1
    assert "PermissionDenied" in refused.stderr
    plain = runguard("current", "nightly", *target, "--timeout", "2")
    assert plain.returncode == 1
    health = runguard("health", *target, *tls)
    assert (health.returncode, health.stdout.strip()) == (0, "SERVING")


def test_the_seed_drop_in_reads_tls_files_and_a_token_from_the_environment(
    served: Callable[..., Served], pki: Pki, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run_guard's begin_run/current_run/end_run work against a server with mTLS and tokens
    when RUNGUARD_CACERT, _CERT, _KEY and _TOKEN are set."""
    server = served(
        *("--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key)),
        *("--tls-client-ca", str(pki.ca), "--auth-tokens", str(tokens.path)),
    )
    monkeypatch.setenv("RUNGUARD_TARGET", server.address)
    monkeypatch.setenv("RUNGUARD_GUARD", "seed")
    monkeypatch.setenv("RUNGUARD_CACERT", str(pki.ca))
    monkeypatch.setenv("RUNGUARD_CERT", str(pki.bob.cert))
    monkeypatch.setenv("RUNGUARD_KEY", str(pki.bob.key))
    monkeypatch.setenv("RUNGUARD_TOKEN", tokens.both)
    monkeypatch.setattr(run_guard, "_client", None)
    monkeypatch.setattr(run_guard, "_tokens", {})
    try:
        run_guard.begin_run("op-1", "/generate", {"prompt": "cats"})
        assert run_guard.current_run() == "op-1"
        run_guard.end_run("op-1")
        assert run_guard.current_run() is None
    finally:
        if run_guard._client is not None:
            run_guard._client.close()


def test_a_stream_opened_before_a_reload_is_not_cut(
    served: Callable[..., Served], tokens: Tokens
) -> None:
    """Even a token removed by the reload keeps the stream it opened before (streams are
    authorized when they open); its next call is refused."""
    server = served("--auth-tokens", str(tokens.path))
    channel, stub, watcher = _stub(server.address, tokens.watcher)
    stream = stub.Watch(pb.WatchRequest(guards=["g"]), metadata=watcher, timeout=30)
    assert next(stream).WhichOneof("event") == "snapshot"
    tokens.path.write_text(token_file_text({tokens.runner: ("worker-7", "run")}))
    server.process.send_signal(signal.SIGHUP)
    _wait_for(server, "auth_tokens_reloaded")
    received: list[Any] = []
    reader = threading.Thread(target=lambda: received.append(next(stream)))
    reader.start()
    runner = connect_options(token=tokens.runner)["metadata"]
    stub.Begin(begin_request("op-1", guard="g"), metadata=runner)
    reader.join(10)
    assert received
    assert received[0].change.run.operation_id == "op-1"
    with pytest.raises(grpc.RpcError) as caught:
        stub.Current(pb.CurrentRequest(), metadata=watcher)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    stream.cancel()
    channel.close()
