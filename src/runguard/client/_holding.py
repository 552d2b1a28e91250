"""The state of a slot held inside ``client.run(...)``, shared by both clients, with no
I/O: whether it was lost or asked to stop, the progress report to send, and how the End
on leaving the block goes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from runguard.client.errors import Cancelled, LeaseLost, RunGuardError
from runguard.client.models import OUTCOMES, Change, Grant, Run, Snapshot, WatchEvent

__all__ = ["PROGRESS_MESSAGE_MAX_CHARS", "PROGRESS_SEND_INTERVAL", "Holding"]

PROGRESS_MESSAGE_MAX_CHARS = 256
"""The server's limit on a progress message."""

PROGRESS_SEND_INTERVAL = 0.25
"""Seconds between two progress reports a held slot sends (the latest always goes)."""

E = TypeVar("E", bound=RunGuardError)


class Holding:
    """A slot held inside ``client.run(...)``.

    How the holder learns that it lost the slot (expired, force-ended): the
    ``lost`` flag turns true at once, the ``on_lost`` callback is called once
    with the LeaseLost error, and leaving the ``with`` block raises it.

    How it learns that somebody asked it to stop (``Client.cancel``): within a
    second (through the Watch the block keeps open, or the next renewal)
    ``cancel_requested`` turns true, ``on_cancel`` is called once with the
    Cancelled error, and ``check()`` raises it. The slot stays held until the
    block is left; then the run Ends with outcome "cancelled".

    ``report_progress(fraction, message)`` sends progress with a renewal sent at
    once (at most every ``PROGRESS_SEND_INTERVAL`` seconds; the latest report
    always goes). ``finish(result, outcome=...)`` sets what the End on leaving
    the block says; otherwise it says "succeeded" (or "cancelled" once cancel
    was requested, or "failed" when the block raised).
    """

    def __init__(
        self,
        grant: Grant,
        on_lost: Callable[[LeaseLost], object] | None = None,
        on_cancel: Callable[[Cancelled], object] | None = None,
    ) -> None:
        self.grant = grant
        self._on_lost = on_lost
        self._on_cancel = on_cancel
        self._lock = threading.Lock()
        self._lost: LeaseLost | None = None
        self._cancelled: Cancelled | None = None
        self._pending: tuple[float | None, str] | None = None
        self._sent_at = 0.0
        self.outcome: str | None = None
        """What the End on leaving the block says (None: decided when it is left)."""
        self.result: Any = None
        """The result the End on leaving the block carries."""
        self.wake: Callable[[], None] = lambda: None
        """Set by the client: wakes its renewer to send a progress report now."""

    @property
    def cancel_requested(self) -> bool:
        """True once somebody asked the run to stop."""
        return self._cancelled is not None

    def report_progress(self, fraction: float | None = None, message: str = "") -> None:
        """Report how far the run has got: ``fraction`` in [0, 1] and/or a short message."""
        if fraction is None and not message:
            raise ValueError("give a fraction, a message or both")
        if fraction is not None and not 0 <= fraction <= 1:
            raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
        if len(message) > PROGRESS_MESSAGE_MAX_CHARS:
            raise ValueError(f"message must be at most {PROGRESS_MESSAGE_MAX_CHARS} characters")
        with self._lock:
            self._pending = (fraction, message)
        self.wake()

    def take_progress(self) -> tuple[tuple[float | None, str] | None, float]:
        """The report to send now (or None), and how long to wait first if it is too soon."""
        with self._lock:
            if self._pending is None:
                return None, 0.0
            wait = self._sent_at + PROGRESS_SEND_INTERVAL - time.monotonic()
            if wait > 0:
                return None, wait
            pending, self._pending = self._pending, None
            self._sent_at = time.monotonic()
            return pending, 0.0

    def finish(self, result: Any = None, *, outcome: str = "succeeded") -> None:
        """Say how the run went: the End on leaving the block sends ``outcome`` and ``result``."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
        self.outcome, self.result = outcome, result

    def end_outcome(self, failed: bool) -> str:
        """The outcome the End on leaving the block sends."""
        if self.outcome is not None:
            return self.outcome
        if self.cancel_requested:
            return "cancelled"
        return "failed" if failed else "succeeded"

    def request_cancel(self, run: Run) -> None:
        """Record that the run was asked to stop (first time wins) and call ``on_cancel`` once."""
        why = f": {run.cancel_reason}" if run.cancel_reason else ""
        by = f" by {run.cancelled_by}" if run.cancelled_by else ""
        cancelled = Cancelled(
            f"run {run.operation_id!r} of guard {run.guard!r} was asked to stop{by}{why}",
            reason=run.cancel_reason,
            by=run.cancelled_by,
        )
        self._first("_cancelled", cancelled, self._on_cancel)

    def _first(self, slot: str, error: E, callback: Callable[[E], object] | None) -> None:
        """Keep ``error`` in the attribute ``slot`` unless one is there already (the first
        wins, also across threads), and then call ``callback`` with it."""
        with self._lock:
            if getattr(self, slot) is not None:
                return
            setattr(self, slot, error)
        if callback is not None:
            callback(error)

    def cancel_seen(self, event: WatchEvent) -> Run | None:
        """The run, if a watch event says this run was asked to stop."""
        mine = self.grant.run.fencing_token
        if isinstance(event, Change):
            run = event.run
            if event.kind == "cancel_requested" and run is not None and run.fencing_token == mine:
                return run
            return None
        if isinstance(event, Snapshot):
            for state in event.guards:
                for run in state.holders:
                    if run.fencing_token == mine and run.cancel_requested:
                        return run
        return None

    @property
    def run(self) -> Run:
        """The run holding the slot."""
        return self.grant.run

    @property
    def lost(self) -> bool:
        """True once the slot is known to be lost."""
        return self._lost is not None

    def check(self) -> None:
        """Raise LeaseLost if the slot was lost, Cancelled if the run was asked to stop;
        call it between steps of long work."""
        if self._lost is not None:
            raise self._lost
        if self._cancelled is not None:
            raise self._cancelled

    def lose(self, reason: str) -> None:
        """Record the loss (first reason wins) and call ``on_lost`` once."""
        run = self.grant.run
        lost = LeaseLost(
            f"run {run.operation_id!r} of guard {run.guard!r} lost its slot: {reason}",
            guard=run.guard,
            operation_id=run.operation_id,
        )
        self._first("_lost", lost, self._on_lost)

    def released(self, event: WatchEvent) -> str | None:
        """The reason, if a watch event says this run left its slot."""
        run = self.grant.run
        if isinstance(event, Change):
            same = (
                event.run is not None
                and event.run.operation_id == run.operation_id
                and event.run.fencing_token == run.fencing_token
            )
            return event.reason if same and event.kind == "released" else None
        if isinstance(event, Snapshot):
            for state in event.guards:
                if state.guard == run.guard and not any(
                    h.fencing_token == run.fencing_token for h in state.holders
                ):
                    return "not a holder any more"
        return None
