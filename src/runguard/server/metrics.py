"""Prometheus metrics of one server, in a registry of its own.

Served over HTTP only when ``--metrics-listen`` is given. Guard names are
chosen by callers, so the ``guard`` label is capped: after
:data:`GUARD_LABELS_MAX` distinct guards, further ones are counted as
``_other`` to keep the series count bounded.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["GUARD_LABELS_MAX", "Metrics"]

GUARD_LABELS_MAX = 100
"""Distinct guard label values before the rest are folded into ``_other``."""

_SECONDS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300, 1800, 3600)


class Metrics:
    """Every metric the server exports; one instance per server."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._guards: set[str] = set()
        self._lock = threading.Lock()
        r = self.registry
        self.begins = Counter(
            "runguard_begin", "Begin outcomes.", ["guard", "outcome", "reason"], registry=r
        )
        self.ends = Counter("runguard_end", "End results.", ["guard", "result"], registry=r)
        self.expirations = Counter(
            "runguard_expired", "Leases that ran out.", ["guard"], registry=r
        )
        self.hold_seconds = self._per_guard_seconds(
            "runguard_hold_seconds", "How long runs held their slot, by how they left it.", "reason"
        )
        self.queue_length = Gauge(
            "runguard_queue_length", "Begins waiting in a guard's queue.", ["guard"], registry=r
        )
        self.wait_seconds = self._per_guard_seconds(
            "runguard_wait_seconds",
            "How long queued Begins waited, by how the wait ended.",
            "outcome",
        )
        self.watchers = Gauge("runguard_watchers", "Open Watch streams.", registry=r)
        self.resyncs = Counter(
            "runguard_watch_resyncs",
            "Watch streams sent a resynced snapshot (fell behind, or could not resume).",
            ["cause"],
            registry=r,
        )
        self.batch_guards = Histogram(
            "runguard_store_batch_guards",
            "Guards written by one store write (commands that arrive together share one).",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.batch_seconds = Histogram(
            "runguard_store_batch_seconds",
            "How long one store write took.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5),
            registry=r,
        )
        self.conflicts = Counter(
            "runguard_store_conflicts",
            "Guards whose write lost a compare-and-swap to another replica (decided again).",
            registry=r,
        )
        self.rpc_seconds = Histogram(
            "runguard_rpc_seconds",
            "RPC latency by method and status code (Watch: the stream's lifetime).",
            ["method", "code"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5, 30),
            registry=r,
        )

    def _per_guard_seconds(self, name: str, documentation: str, by: str) -> Histogram:
        """A histogram of seconds (up to an hour) by guard and ``by``."""
        return Histogram(
            name, documentation, ["guard", by], buckets=_SECONDS, registry=self.registry
        )

    def guard(self, name: str) -> str:
        """The label value for a guard (``_other`` past the cap)."""
        with self._lock:
            if name in self._guards:
                return name
            if len(self._guards) < GUARD_LABELS_MAX:
                self._guards.add(name)
                return name
        return "_other"

    def serve(self, address: str) -> tuple[WSGIServer, threading.Thread]:
        """Serve ``/metrics`` on host:port in a background thread."""
        host, _, port = address.rpartition(":")
        return start_http_server(int(port), addr=host, registry=self.registry)
