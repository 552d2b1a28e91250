"""docs/runs.md, run as written against a real ``runguard serve``.

The first ``sh`` block is the server's command line: the test starts a server with the
same flags. The ``python`` block is saved as ``generate.py`` (the page says so), and the
other ``sh`` blocks run in order in one bash, with the documented address swapped for
the test server's.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.interop

PAGE = Path(__file__).resolve().parents[2] / "docs" / "runs.md"
DOCUMENTED_ADDRESS = "127.0.0.1:50051"


def _blocks(language: str) -> list[str]:
    """The page's fenced code blocks of one language, in order."""
    text = PAGE.read_text(encoding="utf-8")
    return re.findall(rf"^```{language}\n(.*?)^```$", text, re.M | re.S)


def test_the_pages_session_gives_the_documented_outcomes(
    served: Callable[..., Any], tmp_path: Path
) -> None:
    """Progress seen by a second tab and a watcher, a double submit answered with the first
    run's result, and a cancel whose slot frees only once the command has exited."""
    serve, *session = _blocks("sh")
    [program] = _blocks("python")
    command = shlex.split(serve)
    assert command[:2] == ["runguard", "serve"], serve
    server = served(*command[2:])
    (tmp_path / "generate.py").write_text(program, encoding="utf-8")
    script = "\n".join(block.replace(DOCUMENTED_ADDRESS, server.address) for block in session)
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}

    result = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
        check=False,
    )

    shown = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    out = result.stdout
    assert result.returncode == 0, shown
    # The second tab saw the run (still running, or just ended on a slow machine).
    assert re.search(r"^(running|ended) generate job-1 ", out, re.M), shown
    assert "job-1: succeeded {'batch': '/out/job-1'}" in out, shown
    watched = (tmp_path / "watch.log").read_text()
    progressed = [line for line in watched.splitlines() if " progressed " in line]
    assert progressed, watched
    assert progressed[0].endswith('progress=10% "frame 1 of 10"'), watched
    assert len(progressed) < 10, watched  # ten reports in about 3 s: coalesced
    assert re.search(
        r'released \(ended\) generate job-1 .*progress=100% "frame 10 of 10" ended=ended '
        r'outcome=succeeded result=\{"batch": "/out/job-1"\}',
        out,
    ), shown
    assert "already made: succeeded {'batch': '/out/job-1'}" in out, shown
    [got] = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert (got["run"]["outcome"], got["run"]["result"]) == ("succeeded", {"batch": "/out/job-1"})
    lines = out.splitlines()
    assert any(line.startswith("requested generate job-3 ") for line in lines), shown
    # After the cancel, while the command winds down, the run still holds the slot.
    held = lines.index("generate: 1/1 held, 0 queued")
    assert "job-3" in lines[held + 1], shown
    assert "cancel-requested" in lines[held + 1], shown
    assert "winding down" in out, shown
    assert "cancelled: the command exited with 0; the run ended cancelled" in out, shown
    assert re.search(r"^ended generate job-3 .*outcome=cancelled", out, re.M), shown
    assert "was asked to stop: user pressed stop; stopping the command" in result.stderr, shown
