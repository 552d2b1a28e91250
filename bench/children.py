"""The bench's child processes: collecting one report from each, and reaping them."""

from __future__ import annotations

import time
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any


def await_reports(
    conns: list[Connection],
    processes: Sequence[BaseProcess],
    expect: tuple[Any, ...],
    timeout: float,
    who: str,
) -> list[tuple[Any, ...]]:
    """One message per process that starts with ``expect``, in the processes' order.

    A process that reports an error, says something else, or dies first fails the run;
    ``who`` names the processes in those messages ("client", "watcher").
    """
    deadline = time.monotonic() + timeout
    got: dict[int, tuple[Any, ...]] = {}
    while len(got) < len(conns):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{who} processes did not report {expect} in {timeout:.0f}s")
        waiting: list[Connection | int] = [c for i, c in enumerate(conns) if i not in got]
        waiting += [p.sentinel for i, p in enumerate(processes) if i not in got]
        for ready in wait(waiting, remaining):
            if isinstance(ready, int):
                index = [p.sentinel for p in processes].index(ready)
                if index not in got and not conns[index].poll():
                    raise RuntimeError(f"{who} process {index} died before reporting {expect}")
                continue
            assert isinstance(ready, Connection)  # wait() was given connections and sentinels
            message = ready.recv()
            if message[0] == "error":
                raise RuntimeError(f"a {who} process failed: {message[1]}")
            if tuple(message[: len(expect)]) != expect:
                raise RuntimeError(f"unexpected report {message!r}, waiting for {expect}")
            got[conns.index(ready)] = tuple(message)
    return [got[i] for i in range(len(conns))]


def reap(processes: Sequence[BaseProcess], grace: float) -> None:
    """Wait up to ``grace`` seconds for each process to exit; kill those still running."""
    for process in processes:
        process.join(grace)
        if process.is_alive():
            process.kill()
