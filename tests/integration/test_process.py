"""``runguard serve`` as a process: its logs, its health, and how it stops."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from runguard.v1 import runguard_pb2 as pb
from tests.conftest import Served
from tests.integration.support import begin_request, end_request
from tests.stubs import sync_stub


def _log_lines(served: Served) -> list[dict[str, Any]]:
    return [json.loads(line) for line in served.log.read_text().splitlines() if line.strip()]


def test_logs_one_json_line_per_outcome_and_never_a_secret(
    served: Callable[..., Served],
) -> None:
    """Begin outcomes, Ends and expiries are JSON lines; no lease token or payload."""
    server = served("--dedup-window", "60")
    with grpc.insecure_channel(server.address) as channel:
        stub = sync_stub(channel)
        granted = stub.Begin(begin_request("op-1", {"secret": "p4yl0ad"})).granted
        stub.Begin(begin_request("op-2", {"other": 1}))
        stub.End(end_request(granted))
        short = stub.Begin(begin_request("op-3", {"n": 3}, ttl=0.2)).granted
        time.sleep(0.6)
    server.process.terminate()
    server.process.wait(10)
    text = server.log.read_text()
    assert granted.lease_token not in text
    assert short.lease_token not in text
    assert "p4yl0ad" not in text
    lines = _log_lines(server)
    begins = [line for line in lines if line["event"] == "begin"]
    assert [(b["operation_id"], b["outcome"]) for b in begins] == [
        ("op-1", "granted"),
        ("op-2", "rejected"),
        ("op-3", "granted"),
    ]
    assert begins[0]["fencing_token"] == granted.run.fencing_token
    assert begins[1]["reason"] == "in_flight"
    assert [line["operation_id"] for line in lines if line["event"] == "end"] == ["op-1"]
    expired = [line for line in lines if line["event"] == "expired"]
    assert [(e["guard"], e["operation_id"]) for e in expired] == [("generate", "op-3")]
    assert expired[0]["fencing_token"] == short.run.fencing_token


def test_sigterm_drains_watchers_then_exits(served: Callable[..., Served]) -> None:
    """On SIGTERM, health turns NOT_SERVING, watchers end UNAVAILABLE, and the process exits 0."""
    server = served("--shutdown-grace", "2")
    channel = grpc.insecure_channel(server.address)
    stub = sync_stub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest()).status == (
        health_pb2.HealthCheckResponse.SERVING
    )
    statuses: list[int] = []
    watch_health = health.Watch(health_pb2.HealthCheckRequest())
    first_status = threading.Event()

    def follow_health() -> None:
        try:
            for reply in watch_health:
                statuses.append(reply.status)
                first_status.set()
        except grpc.RpcError:
            first_status.set()

    follower = threading.Thread(target=follow_health)
    follower.start()
    assert first_status.wait(5)
    stream = stub.Watch(pb.WatchRequest())
    assert next(stream).WhichOneof("event") == "snapshot"
    server.process.send_signal(signal.SIGTERM)
    with pytest.raises(grpc.RpcError) as caught:
        for _ in stream:
            pass
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "reconnect" in (caught.value.details() or "")
    assert server.process.wait(10) == 0
    follower.join(10)
    channel.close()
    assert health_pb2.HealthCheckResponse.NOT_SERVING in statuses
    events = [line["event"] for line in _log_lines(server)]
    assert events[-2:] == ["draining", "stopped"]
