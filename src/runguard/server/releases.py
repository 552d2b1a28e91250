"""Metrics and log lines of the runs this process's commits release.

Each commit this process makes is seen here once, as it lands: how long each
released run held its slot (by how it ended), the leases that expired, and a
log line of each expiry. Other replicas count their own commits.
"""

from __future__ import annotations

import structlog

from runguard.server.core import ChangeKind, ReleaseReason
from runguard.server.metrics import Metrics
from runguard.server.stores import Commit

__all__ = ["record_releases"]

log = structlog.get_logger("runguard")


def record_releases(metrics: Metrics, commit: Commit, now: float) -> None:
    """Count and log the runs ``commit`` released (``now``: when it landed)."""
    label = metrics.guard(commit.guard)
    for change in commit.changes:
        if (
            change.kind is ChangeKind.RELEASED
            and change.reason is not None
            and change.run is not None
        ):
            metrics.hold_seconds.labels(label, change.reason.value).observe(
                max(0.0, now - change.run.started_at)
            )
            if change.reason is ReleaseReason.EXPIRED:
                metrics.expirations.labels(label).inc()
    for change in commit.changes:
        if change.reason is ReleaseReason.EXPIRED and change.run is not None:
            log.info(
                "expired",
                guard=commit.guard,
                operation_id=change.run.operation_id,
                fencing_token=change.run.fencing_token,
                revision=change.revision,
            )
