"""The seed's ``run_guard`` API, backed by a RunGuard server: change one import.

::

    # before: from utils import run_guard
    from runguard.client import run_guard

    run = run_guard.begin_run(operation_id, "/generate-sse", body)   # may raise RunRejected
    try:
        ...
    finally:
        run_guard.end_run(operation_id)

What the seed's UI needed, added beside its calls (the old ones work unchanged)::

    run_guard.report_progress(operation_id, 0.4, "frame 40 of 100")  # True: asked to stop
    run_guard.end_run(operation_id, outcome="succeeded", result={"batch": path})
    run_guard.cancel_run(operation_id, reason="user pressed stop")   # the job stops itself
    run_guard.get_run(operation_id)          # a second tab: progress, or how it ended
    except RunRejected as rejected:          # a double submit:
        rejected.earlier_state, rejected.earlier_result   # "ended", {"batch": ...}

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
from runguard.client._shared import json_payload
from runguard.client._sync import Client
from runguard.client.errors import AlreadyExists, RunNotFound, RunRejected
from runguard.client.models import CancelReply, Run
from runguard.contract import DEFAULT_TARGET
from runguard.contract import fingerprint as _canonical_fingerprint

__all__ = [
    "DEDUP_WINDOW_SECS",
    "MAX_RUN_SECS",
    "RunNotFound",
    "RunRejected",
    "begin_run",
    "cancel_requested",
    "cancel_run",
    "current_run",
    "end_run",
    "fingerprint",
    "get_run",
    "report_progress",
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


def end_run(
    operation_id: str,
    outcome: Optional[str] = None,  # noqa: UP045  # the seed's style
    result: object = None,
) -> None:
    """Release the slot. Idempotent — safe to call from a ``finally`` block.

    ``outcome`` ("succeeded", "failed" or "cancelled") and a small JSON ``result``
    are kept with the ended run, so a double submit and ``get_run`` can show them.
    """
    with _lock:
        token = _tokens.get(operation_id)
    if token is None:
        return  # not ours (or already ended): the seed changed nothing either
    client, guard = _connection()
    client.end(guard, operation_id, token, outcome=outcome, result=result)
    with _lock:  # only once End got through, so a failed end_run can be repeated
        _tokens.pop(operation_id, None)


def report_progress(
    operation_id: str,
    fraction: Optional[float] = None,  # noqa: UP045  # the seed's style
    message: str = "",
) -> bool:
    """Report how far this process's run has got (``fraction`` 0 to 1 and/or a message);
    it renews the run's lease too. Returns True once somebody asked the run to stop
    (``cancel_run``): wind down, then ``end_run(operation_id, outcome="cancelled")``.

    Raises:
        LeaseLost: the run holds no slot any more (it expired or was force-ended).
        ValueError: ``operation_id`` is not a run this process began.
    """
    with _lock:
        token = _tokens.get(operation_id)
    if token is None:
        raise ValueError(f"operation_id {operation_id!r} is not a run this process began")
    client, guard = _connection()
    run = client.keep_alive(guard, operation_id, token, fraction=fraction, message=message or None)
    return run.cancel_requested


def cancel_run(operation_id: str, reason: str = "") -> CancelReply:
    """Ask a run to stop. Its slot stays held until its job ends it (the job learns of it
    from ``report_progress`` or ``cancel_requested``), so two jobs never run at once.

    Raises:
        RunNotFound: no such run (or it ended longer ago than the dedup window).
        PermissionDenied: the run is another principal's and this one is no admin.
    """
    client, guard = _connection()
    return client.cancel(guard, operation_id, reason=reason)


def cancel_requested(operation_id: str) -> bool:
    """True once somebody asked the run to stop (see ``cancel_run``)."""
    return get_run(operation_id).cancel_requested


def get_run(operation_id: str) -> Run:
    """The run: live (with its latest ``progress``), or ended (``outcome``, ``result``)
    while the guard keeps it (its dedup window).

    Raises:
        RunNotFound: no such run (any more).
    """
    client, guard = _connection()
    return client.get_run(guard, operation_id)


def current_run() -> Optional[str]:  # noqa: UP045  # the seed's own signature
    """Return the operation_id of the in-flight run, if any."""
    client, guard = _connection()
    holders = client.current(guard).holders
    return holders[0].operation_id if holders else None
