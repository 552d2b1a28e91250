"""A real ``curl -N`` on ``/v1/events``, its events parsed as they arrive."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from typing import Any

import pytest


class SseReader:
    """Reads one SSE stream with curl in the background; tests wait for what they expect."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: list[dict[str, str]] = []
        self.status: int | None = None
        self.raw = b""
        self.retry: int | None = None
        """The reconnect delay the server asked for, in milliseconds."""
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str, *headers: str) -> SseReader:
        """Start ``curl -N URL`` with the given ``-H`` headers."""
        binary = shutil.which("curl")
        if binary is None:
            pytest.fail("curl is not on PATH: install it (Debian: apt-get install curl)")
        args = [binary, "-sS", "-N", "-i"]
        for header in headers:
            args += ["-H", header]
        process = await asyncio.create_subprocess_exec(
            *args, url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        block: dict[str, str] = {}
        in_head = True
        while line := await self.process.stdout.readline():
            self.raw += line
            text = line.decode().rstrip("\r\n")
            if in_head:
                if text.startswith("HTTP/"):
                    self.status = int(text.split()[1])
                elif not text:
                    in_head = False
                continue
            if text:
                if not text.startswith(":"):
                    name, _, value = text.partition(":")
                    block[name] = value[1:] if value.startswith(" ") else value
                continue
            if "retry" in block:
                self.retry = int(block.pop("retry"))
            if block:
                async with self._changed:
                    self.events.append(block)
                    self._changed.notify_all()
                block = {}
        async with self._changed:
            self._changed.notify_all()

    def of(self, kind: str) -> list[dict[str, Any]]:
        """The data (parsed JSON) of every event named ``kind`` so far."""
        return [json.loads(e["data"]) for e in self.events if e.get("event") == kind]

    async def wait(self, check: Callable[[list[dict[str, str]]], bool], within: float = 10) -> None:
        """Until ``check(events)`` holds (fails after ``within`` seconds)."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: check(self.events) or self._task.done())
        assert check(self.events), f"stream ended first: {self.events}"

    async def ended(self, within: float = 10) -> int:
        """Until curl exits by itself (the server ended the stream); its exit code."""
        async with asyncio.timeout(within):
            await self._task
            return await self.process.wait()

    async def close(self) -> None:
        """Stop curl (the client goes away)."""
        if self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()
        await self._task


def count(kind: str, n: int) -> Callable[[list[dict[str, str]]], bool]:
    """A check: at least ``n`` events named ``kind``."""
    return lambda events: sum(e.get("event") == kind for e in events) >= n
