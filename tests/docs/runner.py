"""Runs the fenced blocks of a Markdown page as a reader pasting them would: see docs/WRITING.md.

A page is one bash session in a fresh folder shaped like a clone of the repository (a
symlink to each top-level entry of the checkout, ``.git`` aside), with ``.venv/bin`` first
on ``PATH``. ``sh`` blocks run in that shell in page order (variables, functions and the
current directory carry over); each ``python`` block runs as a program of its own with the
virtualenv's Python; ``text`` blocks are output samples and never run. Markers are HTML
comments on the lines right above a fence:

``<!-- not run: REASON -->``  the block is not run, and says why (a reason is required)
``<!-- exit: N -->``          the block's exit status is N (otherwise it must be 0)
``<!-- background -->``       "in another terminal": started in the background (not a job of
                              the page's shell), ready once it logged RunGuard's ``serving``
                              line; stopped when the next background block starts (the
                              reader's Ctrl-C) or the page ends
``<!-- id: NAME -->``         names the block, so a check in tests/docs can read its output

Documented ports (50051-50059, 8080-8089, 9100-9109, 23790-23809) are replaced, as whole words, by
free ports, the same one for the same number all over the page; ``RUNGUARD_LISTEN`` and
``RUNGUARD_TARGET`` name the page's 50051, so ``scripts/serve`` and the clients' default
target meet there.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.ports import is_free

ROOT = Path(__file__).resolve().parents[2]
RUN_INFO = ("sh", "python")
SAMPLE_INFO = ("text",)
PORT_WORD = re.compile(r"\b(5005[1-9]|808\d|910\d|23[78]\d\d)\b")
FENCE = re.compile(r"^```(.*)$")
MARKER = re.compile(r"^<!--\s*(.*?)\s*-->$")
SERVING = '"event": "serving"'
PAGE_MARKER = "RUNGUARD_DOCS_PAGE"


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its info string, its text and the markers above it."""

    page: Path
    line: int
    info: str
    code: str
    markers: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.page.name}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.info in RUN_INFO and "not run" not in self.markers


@dataclass(frozen=True)
class Outcome:
    """What one block did: its exit status (None when it never ran) and its output."""

    block: Block
    status: int | None
    stdout: str
    stderr: str


def parse(page: Path) -> tuple[list[Block], list[str]]:
    """The page's fenced blocks, and the problems of its layout (indented fences, bad markers)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    problems: list[str] = []
    at = 0
    while at < len(lines):
        line = lines[at]
        if line.lstrip().startswith("```") and not line.startswith("```"):
            problems.append(f"{page.name}:{at + 1}: an indented fence (fences start at column 0)")
        match = FENCE.match(line)
        if not match:
            at += 1
            continue
        start = at
        at += 1
        body: list[str] = []
        while at < len(lines) and lines[at].rstrip() != "```":
            body.append(lines[at])
            at += 1
        if at == len(lines):
            problems.append(f"{page.name}:{start + 1}: a fence that is never closed")
        markers: dict[str, str] = {}
        above = start - 1
        while above >= 0 and (found := MARKER.match(lines[above])):
            key, _, value = found.group(1).partition(":")
            markers[key.strip()] = value.strip()
            above -= 1
        if "not run" in markers and not markers["not run"]:
            problems.append(f"{page.name}:{start + 1}: 'not run' without a reason")
        blocks.append(
            Block(page, start + 1, match.group(1).strip(), "\n".join(body) + "\n", markers)
        )
        at += 1
    return blocks, problems


def _port_map(blocks: list[Block]) -> dict[str, str]:
    """A free port in 30000-39999 for each documented port the page names (50051 always)."""
    wanted = {"50051"} | {m for b in blocks for m in PORT_WORD.findall(b.code)}
    chosen: dict[str, str] = {}
    while len(chosen) < len(wanted):
        port = str(random.randrange(30000, 40000))
        if port not in chosen.values() and is_free(int(port)):
            chosen[sorted(wanted - chosen.keys())[0]] = port
    return chosen


def clone_shaped(folder: Path) -> None:
    """Fill ``folder`` with a symlink to each top-level entry of the checkout but ``.git``."""
    for entry in ROOT.iterdir():
        if entry.name != ".git":
            (folder / entry.name).symlink_to(entry)


def _script(blocks: list[Block], work: Path, ports: dict[str, str]) -> str:
    """The page as one bash script: each block's output to files, its status to results."""

    def ported(code: str) -> str:
        return PORT_WORD.sub(lambda m: ports[m.group(1)], code)

    out = work / ".docs-run"
    parts = [
        "set -m",  # background blocks get a process group of their own, to stop as a whole
        f"exec 3>>{out}/results",
        "BACKGROUND=",
        # A background block is no job of the page's shell (the reader runs it in another
        # terminal), so a block's own `wait` or `jobs -p` never sees it.
        'stop_background() { if [ -n "$BACKGROUND" ]; then kill -TERM -- -$BACKGROUND'
        " 2>/dev/null; for _ in $(seq 200); do kill -0 $BACKGROUND 2>/dev/null || break;"
        " sleep 0.05; done; fi; BACKGROUND=; }",
        "trap stop_background EXIT",
    ]
    for number, block in enumerate(blocks):
        if not block.runs:
            continue
        files = f"{out}/{number}.out {out}/{number}.err"
        stdout, stderr = files.split()
        parts.append(f"echo 'start {number}' >&3")
        if block.info == "python":
            program = out / f"{number}.py"
            program.write_text(ported(block.code), encoding="utf-8")
            parts.append(f"python {program} > {stdout} 2> {stderr}")
        elif "background" in block.markers:
            parts += [
                "stop_background",
                f"( {ported(block.code).strip()}\n) > {stdout} 2> {stderr} &",
                "BACKGROUND=$!",
                "disown $BACKGROUND",
                "for _ in $(seq 300); do",
                f"  grep -q '{SERVING}' {stderr} {stdout} 2>/dev/null && break",
                '  kill -0 "$BACKGROUND" 2>/dev/null || break',
                "  sleep 0.1",
                "done",
                f"grep -q '{SERVING}' {stderr} {stdout} 2>/dev/null",
            ]
        else:
            parts.append(f"{{\n{ported(block.code)}\n}} > {stdout} 2> {stderr}")
        parts.append(f'echo "status {number} $?" >&3')
    return "\n".join(parts) + "\n"


def _stop_leftovers(tag: str) -> None:
    """Stop every process the page left running: they carry its tag in their environment."""
    needle = f"{PAGE_MARKER}={tag}".encode()
    for _ in range(2):
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        if not found:
            return
        time.sleep(1.0)
    for pid in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def environment(work: Path, ports: dict[str, str], tag: str) -> dict[str, str]:
    """A reader's environment: ours without RunGuard's or grpc's variables, .venv/bin first."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("RUNGUARD_", "RUN_", "GRPC_", "ETCD_", "PYTEST_"))
    }
    address = f"127.0.0.1:{ports['50051']}"
    env.update(
        PATH=f"{work / '.venv' / 'bin'}{os.pathsep}{Path(sys.executable).parent}"
        f"{os.pathsep}{env.get('PATH', '')}",
        RUNGUARD_LISTEN=address,
        RUNGUARD_TARGET=address,
        HOME=str(work / ".docs-run" / "home"),
        **{PAGE_MARKER: tag},
    )
    return env


def run_page(page: Path, work: Path, timeout: float = 150.0) -> list[Outcome]:
    """Run every runnable block of ``page`` in ``work`` (empty); one Outcome per block."""
    blocks, _ = parse(page)
    clone_shaped(work)
    out = work / ".docs-run"
    (out / "home").mkdir(parents=True)
    ports = _port_map(blocks)
    tag = uuid.uuid4().hex
    script = out / "page.sh"
    script.write_text(_script(blocks, work, ports), encoding="utf-8")
    try:
        subprocess.run(
            ["bash", str(script)],
            cwd=work,
            env=environment(work, ports, tag),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pass
    finally:
        _stop_leftovers(tag)
    statuses: dict[int, int | None] = {}
    results = out / "results"
    for line in results.read_text().splitlines() if results.exists() else []:
        kind, index, *rest = line.split()
        statuses[int(index)] = int(rest[0]) if kind == "status" else None
    outcomes = []
    for number, block in enumerate(blocks):
        if not block.runs:
            continue

        def read(suffix: str, number: int = number) -> str:
            path = out / f"{number}.{suffix}"
            return path.read_text(errors="replace") if path.exists() else ""

        outcomes.append(Outcome(block, statuses.get(number), read("out"), read("err")))
    return outcomes


def pages() -> list[Path]:
    """README.md and every page of docs/, in a stable order."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
