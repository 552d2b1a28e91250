"""The README's examples, run as written against a real ``runguard serve``.

The grpcurl session is every ``sh`` block of the section "Try it with grpcurl", run in
order by one bash (so its shell variables carry over), with the documented address
swapped for the test server's. The Python example is the ``python`` block of "Python".
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from runguard.client import Client

pytestmark = pytest.mark.interop

README = Path(__file__).resolve().parents[2] / "README.md"
DOCUMENTED_ADDRESS = "localhost:50051"


def _section(title: str) -> str:
    """The README's text under ``## title``, up to the next second-level heading."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README.md has no section {title!r}"
    return match.group(1)


def _blocks(section: str, language: str) -> list[str]:
    """The fenced code blocks of one language in a section, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```$", section, re.M | re.S)


def _documents(output: str) -> list[Any]:
    """The JSON documents grpcurl printed, each starting with a '{' line."""
    decoder = json.JSONDecoder()
    found = []
    for match in re.finditer(r"^\{$", output, re.M):
        document, _ = decoder.raw_decode(output, match.start())
        found.append(document)
    return found


def _outcome(document: Any) -> str:
    """What one grpcurl response says, in a word: granted, a reason, a result, or an event."""
    if "rejected" in document:
        return str(document["rejected"]["reason"])
    if "result" in document:
        return str(document["result"])
    return next(key for key in ("granted", "snapshot", "change", "progress") if key in document)


def _environment() -> dict[str, str]:
    """The test's environment with this interpreter's bin directory (grpcurl) first on PATH."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def test_grpcurl_session_gives_the_documented_outcomes(
    served: Callable[..., Any], tmp_path: Path
) -> None:
    """The grpcurl session lists the service, is granted, IN_FLIGHT, ENDED, DUPLICATE, watches."""
    blocks = _blocks(_section("Try it with grpcurl"), "sh")
    assert blocks, "the grpcurl session has no sh blocks"
    for block in blocks:
        if "grpcurl" in block:
            assert DOCUMENTED_ADDRESS in block, f"a block without the address:\n{block}"
    env = _environment()
    assert shutil.which("grpcurl", path=env["PATH"]), "grpcurl is missing: install the dev extra"
    server = served()
    script = "\n".join(block.replace(DOCUMENTED_ADDRESS, server.address) for block in blocks)

    result = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
        check=False,
    )

    shown = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "runguard.v1.RunGuardService" in result.stdout.splitlines(), shown
    assert "service RunGuardService {" in result.stdout, shown
    documents = _documents(result.stdout)
    assert [_outcome(d) for d in documents] == [
        "granted",
        "REJECTION_REASON_IN_FLIGHT",
        "END_RESULT_ENDED",
        "REJECTION_REASON_DUPLICATE",
        "snapshot",
    ], shown
    granted, in_flight, ended, duplicate, watched = documents
    run = granted["granted"]["run"]
    assert run["operationId"] == "op-1", shown
    assert granted["granted"]["leaseToken"], shown
    assert f'"fingerprint": "{run["fingerprint"]}"' in README.read_text(encoding="utf-8"), shown
    assert in_flight["rejected"]["reason"] == "REJECTION_REASON_IN_FLIGHT", shown
    assert [h["operationId"] for h in in_flight["rejected"]["holders"]] == ["op-1"], shown
    assert ended["result"] == "END_RESULT_ENDED", shown
    assert ended["run"]["state"] == "RUN_STATE_ENDED", shown
    assert duplicate["rejected"]["reason"] == "REJECTION_REASON_DUPLICATE", shown
    assert duplicate["rejected"]["duplicateOf"]["operationId"] == "op-1", shown
    assert watched["snapshot"] == {
        "revision": "2",
        "guards": [{"guard": "generate", "capacity": 1, "dedupWindow": "5s", "maxQueue": 1000}],
    }, shown
    assert watched["epoch"], shown
    # The only error is the Watch's own end: -max-time elapsed (exit code 64 + 4).
    assert result.stderr.count("ERROR:") == 1, shown
    assert "Code: DeadlineExceeded" in result.stderr, shown
    assert result.returncode == 68, shown


def test_python_example_takes_and_gives_back_a_slot(
    served: Callable[..., Any], tmp_path: Path
) -> None:
    """The Python example holds a slot and gives it back; run again at once it is a duplicate."""
    block = _blocks(_section("Python"), "python")[0]
    assert DOCUMENTED_ADDRESS in block
    server = served()
    example = tmp_path / "example.py"
    example.write_text(block.replace(DOCUMENTED_ADDRESS, server.address), encoding="utf-8")

    def run_example() -> str:
        result = subprocess.run(
            [sys.executable, str(example)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            env=_environment(),
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    first, second = run_example(), run_example()
    assert re.fullmatch(r"holding [0-9a-f]{32} fencing token \d+", first), first
    assert second.startswith("refused: duplicate "), second
    with Client(server.address) as client:
        assert client.current("generate").holders == ()
