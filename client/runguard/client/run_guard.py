"""The seed's ``run_guard`` API, backed by a RunGuard server: change one import.

::

    # before: from utils import run_guard
    from runguard.client import run_guard

    run = run_guard.begin_run(operation_id, "/generate-sse", body)   # may raise RunRejected
    try:
        ...
    finally:
        run_guard.end_run(operation_id)

Same names, signatures and meaning as the seed: single-flight per guard (one
guard, capacity 1 on the server by default), a dedup window counted from the
accepted run's start, a stale slot freed after ``RUN_MAX_SECS``. What changes:
the slot is shared by every process that talks to the same server, and
fingerprints are canonical JSON (equal values, any key order, any language).

Environment (read when the module is first used):
    RUNGUARD_TARGET   host:port of the server (127.0.0.1:50051)
    RUNGUARD_GUARD    the guard these calls use ("default")
    RUNGUARD_CACERT, RUNGUARD_CERT, RUNGUARD_KEY   TLS: the server's CA, and this
                      client's certificate and key (mTLS); any of them turns TLS on
    RUNGUARD_TOKEN    a bearer token, for a server with a token file
``DEDUP_WINDOW_SECS`` and ``MAX_RUN_SECS`` read ``RUN_DEDUP_WINDOW_SECS`` and
``RUN_MAX_SECS`` as the seed did; the server enforces its own settings.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Optional  # the seed's own signatures

from runguard.client._connect import connect_options_from_env
from runguard.client._shared import DEFAULT_TARGET, json_payload
from runguard.client._sync import Client
from runguard.client.errors import AlreadyExists, RunRejected
from runguard.server.core.fingerprint import fingerprint as _canonical_fingerprint

__all__ = [
    "DEDUP_WINDOW_SECS",
    "MAX_RUN_SECS",
    "RunRejected",
    "begin_run",
    "current_run",
    "end_run",
    "fingerprint",
]

DEDUP_WINDOW_SECS = float(os.environ.get("RUN_DEDUP_WINDOW_SECS", "5"))
MAX_RUN_SECS = float(os.environ.get("RUN_MAX_SECS", str(30 * 60)))


@dataclass
class _ActiveRun:
    operation_id: str
    fingerprint: str
    started_at: float


_lock = threading.Lock()
_client: Client | None = None
_tokens: dict[str, str] = {}


def _connection() -> tuple[Client, str]:
    global _client
    with _lock:
        if _client is None:
            _client = Client(
                os.environ.get("RUNGUARD_TARGET", DEFAULT_TARGET),
                **connect_options_from_env(os.environ),
            )
        return _client, os.environ.get("RUNGUARD_GUARD", "default")


def fingerprint(route: str, payload: object) -> str:
    """Stable hash of ``(route, payload)``. Used for dedup window matching."""
    return _canonical_fingerprint(route, json_payload(payload))


def begin_run(operation_id: str, route: str, payload: object) -> _ActiveRun:
    """Reserve the single-flight slot.

    Raises ``RunRejected`` if another run is already in flight or if the
    same payload was just submitted within the dedup window.
    """
    client, guard = _connection()
    with _lock:
        mine = operation_id in _tokens
    try:
        grant = (
            None
            if mine
            else client.begin(guard, route=route, payload=payload, operation_id=operation_id)
        )
    except AlreadyExists:
        grant = None
    if grant is None or grant.replayed:
        # The seed's slot was taken by that operation_id already: another
        # caller's run, which this caller must neither share nor end.
        raise RunRejected(
            reason="in_flight",
            message=(
                f"Another generation is already running (operation_id={operation_id}). "
                "Cancel it first or wait for it to finish."
            ),
            operation_id=operation_id,
        )
    with _lock:
        _tokens[operation_id] = grant.lease_token
    return _ActiveRun(
        operation_id=operation_id,
        fingerprint=grant.run.fingerprint,
        started_at=grant.run.started_at.timestamp(),
    )


def end_run(operation_id: str) -> None:
    """Release the slot. Idempotent — safe to call from a ``finally`` block."""
    with _lock:
        token = _tokens.get(operation_id)
    if token is None:
        return  # not ours (or already ended): the seed changed nothing either
    client, guard = _connection()
    client.end(guard, operation_id, token)
    with _lock:  # only once End got through, so a failed end_run can be repeated
        _tokens.pop(operation_id, None)


def current_run() -> Optional[str]:  # noqa: UP045  # the seed's own signature
    """Return the operation_id of the in-flight run, if any."""
    client, guard = _connection()
    holders = client.current(guard).holders
    return holders[0].operation_id if holders else None
