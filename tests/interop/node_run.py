"""Running the Node.js programs under tests/interop/node and reading their JSON lines."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

NODE_DIR = Path(__file__).resolve().parent / "node"

CLIENT_STEPS = ["begin", "second_begin", "watch_snapshot", "end", "watch_released", "end_again"]
"""The steps ``node/client.mjs`` prints, one JSON line each, in this order."""


def node_program() -> str:
    """The ``node`` executable; fails the test if Node.js or the programs' packages are absent."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: install Node.js 20 or newer to run the interop tests")
    if not (NODE_DIR / "node_modules").is_dir():
        pytest.fail(
            "tests/interop/node/node_modules is missing: run scripts/bootstrap "
            "(it runs `npm ci` in tests/interop/node)"
        )
    return node


def run_node(script: Path, *args: str, timeout: float = 60) -> list[dict[str, Any]]:
    """Run ``node SCRIPT ARGS`` in tests/interop/node; its JSON lines (it must exit 0)."""
    done = subprocess.run(
        [node_program(), str(script), *args],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"node {script.name} failed:\n{done.stdout}\n{done.stderr}"
    return [json.loads(line) for line in done.stdout.splitlines()]
