"""Optional py-spy profiles of the RunGuard server, one per phase (``--profile DIR``).

``py-spy record`` samples the server process from outside (no change to the
server) while a phase's load runs, and writes the collapsed stacks
(``DIR/PHASE.txt``, one ``frame;frame;... count`` per line; ``inferno`` or
speedscope draw them). Idle time (the event loop waiting in epoll) is not
sampled, so the shares below are of the server's busy time. The summary lists
the frames with the most samples on top of the stack (self) and anywhere in
it (inclusive).

Sampling costs the server a little CPU: numbers from a profiled run are
slightly low; the table in docs/performance.md comes from a run without ``--profile``.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

__all__ = ["Profiler", "summarize"]

RATE = 200
"""Samples per second."""


class Profiler:
    """Starts and stops ``py-spy record`` against one pid."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        beside = Path(sys.executable).parent / "py-spy"  # the venv's, when not on PATH
        self.binary = str(beside) if beside.exists() else shutil.which("py-spy")
        if directory is not None and self.binary is None:
            raise SystemExit("--profile needs py-spy: pip install -e '.[bench]'")
        self._process: subprocess.Popen[bytes] | None = None
        self._output: Path | None = None
        self.written: list[Path] = []

    @property
    def enabled(self) -> bool:
        """Whether profiles are wanted and py-spy is there."""
        return self.directory is not None and self.binary is not None

    def start(self, pid: int, phase: str) -> None:
        """Begin sampling ``pid`` for ``phase``."""
        if not self.enabled:
            return
        assert self.directory is not None
        assert self.binary is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        self._output = self.directory / f"{phase}.txt"
        self._process = subprocess.Popen(
            [
                *(self.binary, "record", "--pid", str(pid), "--rate", str(RATE)),
                *("--format", "raw", "--output", str(self._output), "--nonblocking"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        """Stop sampling and keep the file."""
        if self._process is None:
            return
        self._process.send_signal(signal.SIGINT)
        try:
            self._process.wait(30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(10)
        if self._output is not None and self._output.exists():
            self.written.append(self._output)
        self._process = None


_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?):(?P<line>\d+)\)$")


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    path = match["file"]
    for marker in ("/runguard/", "/site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['func']} ({path})"


def summarize(path: Path, top: int = 12) -> list[str]:
    """The frames with the most samples, self and inclusive, as text lines."""
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    total = 0
    for raw in path.read_text(errors="replace").splitlines():
        stack, _, count = raw.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = [_short(f) for f in stack.split(";") if f]
        if not frames:
            continue
        own[frames[-1]] += samples
        for frame in set(frames):
            anywhere[frame] += samples
    if total == 0:
        return [f"{path.name}: no samples"]
    lines = [f"{path.name}: {total} busy samples at {RATE}/s"]
    lines.append("  self:")
    lines.extend(f"    {n / total:6.1%}  {frame}" for frame, n in own.most_common(top))
    lines.append("  inclusive (RunGuard and grpc frames):")
    ours = [
        (frame, n)
        for frame, n in anywhere.most_common()
        if "server/" in frame or "grpc" in frame or "structlog" in frame
    ]
    lines.extend(f"    {n / total:6.1%}  {frame}" for frame, n in ours[:top])
    return lines
