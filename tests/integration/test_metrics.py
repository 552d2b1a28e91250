"""Prometheus metrics, scraped over HTTP from a real server."""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from runguard.v1 import runguard_pb2 as pb
from tests.integration.support import Stream, begin_request, end_request, queue_reaches


async def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    def fetch() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            return str(reply.read().decode())

    text = await asyncio.to_thread(fetch)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_count_outcomes_waits_expiries_and_watchers(start_server: Any) -> None:
    """Begin outcomes, End results, expirations, holds, waits, watchers and RPCs are exported."""
    running = await start_server(metrics_listen="127.0.0.1:0")
    stub = running.stub
    stream = Stream(stub.Watch(pb.WatchRequest(guards=["generate"])))
    await stream.until(1)
    first = (await stub.Begin(begin_request("op-1"))).granted
    await stub.Begin(begin_request("op-2", {"other": 1}))
    waiting = asyncio.ensure_future(stub.Begin(begin_request("op-3", {"w": 1}, wait=10)))
    await queue_reaches(stub, 1)
    queued = await _scrape(running.server.metrics_port)
    await stub.End(end_request(first))
    third = (await waiting).granted
    await stub.End(end_request(third))
    await stub.Begin(begin_request("op-4", {"short": 1}, guard="brief", ttl=0.2))
    await asyncio.sleep(0.5)
    metrics = await _scrape(running.server.metrics_port)
    stream.cancel()

    assert queued[("runguard_queue_length", (("guard", "generate"),))] == 1
    assert queued[("runguard_watchers", ())] == 1
    begins = {
        labels: value for (name, labels), value in metrics.items() if name == "runguard_begin_total"
    }
    assert begins[(("guard", "generate"), ("outcome", "granted"), ("reason", ""))] == 2
    assert begins[(("guard", "generate"), ("outcome", "rejected"), ("reason", "in_flight"))] == 1
    assert begins[(("guard", "brief"), ("outcome", "granted"), ("reason", ""))] == 1
    assert metrics[("runguard_end_total", (("guard", "generate"), ("result", "ended")))] == 2
    assert metrics[("runguard_expired_total", (("guard", "brief"),))] == 1
    assert metrics[("runguard_queue_length", (("guard", "generate"),))] == 0
    holds = ("runguard_hold_seconds_count", (("guard", "generate"), ("reason", "ended")))
    assert metrics[holds] == 2
    waits = ("runguard_wait_seconds_count", (("guard", "generate"), ("outcome", "granted")))
    assert metrics[waits] == 1
    rpcs = ("runguard_rpc_seconds_count", (("code", "OK"), ("method", "Begin")))
    assert metrics[rpcs] == 4
    writes = metrics[("runguard_store_batch_guards_count", ())]
    assert writes >= 5  # at least the grants, the Ends and the expiry were written
    assert metrics[("runguard_store_batch_guards_sum", ())] >= writes
    assert metrics[("runguard_store_batch_seconds_count", ())] == writes
    assert metrics[("runguard_store_conflicts_total", ())] == 0  # one server: no replica to lose to


async def test_metrics_are_off_by_default(running: Any) -> None:
    """Without metrics_listen no HTTP listener is opened."""
    assert running.server.metrics_port == 0
