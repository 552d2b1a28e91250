"""``run_of``: the run a change is about, for the core's and the client's changes alike."""

from __future__ import annotations

from typing import Protocol, TypeVar

RunT = TypeVar("RunT", covariant=True)
R = TypeVar("R")


class HasRun(Protocol[RunT]):
    """A change: it names a run, or None (a guard's CONFIGURED change)."""

    @property
    def run(self) -> RunT | None: ...


def run_of(change: HasRun[R]) -> R:
    """The change's run, failing the test if the change names none."""
    assert change.run is not None, f"the change names no run: {change!r}"
    return change.run
