"""Every block of README.md and docs/*.md runs as written (the rules: docs/WRITING.md)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.docs.checks import CHECKS
from tests.docs.runner import ROOT, RUN_INFO, SAMPLE_INFO, Block, pages, parse, run_page

pytestmark = pytest.mark.interop


def problems(page: Path) -> list[str]:
    """What keeps a page from being run whole: layout faults and blocks nothing runs."""
    blocks, found = parse(page)
    for block in blocks:
        if block.info not in RUN_INFO + SAMPLE_INFO and "not run" not in block.markers:
            found.append(
                f"{block.where}: a {block.info or 'plain'!r} block that nothing runs "
                "(use sh, python or text, or mark it <!-- not run: REASON -->)"
            )
    return found


def _expected(block: Block) -> int:
    return int(block.markers.get("exit", "0"))


def _left_behind(work: Path) -> list[str]:
    """The files and folders a page made in the clone-shaped folder."""
    return sorted(
        entry.name + ("/" if entry.is_dir() else "")
        for entry in work.iterdir()
        if not entry.is_symlink() and entry.name != ".docs-run"
    )


def _ignored(name: str) -> bool:
    found = subprocess.run(["git", "check-ignore", "-q", "--no-index", name], cwd=ROOT, check=False)
    return found.returncode == 0


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.name)
def test_page_runs_as_written(page: Path, tmp_path: Path) -> None:
    """Each runnable block of the page runs to its documented status without a traceback,
    prints what the page's checks expect, and leaves only files .gitignore keeps out."""
    assert problems(page) == []
    outcomes = run_page(page, tmp_path)
    failed = [
        f"{o.block.where}: status {o.status}, expected {_expected(o.block)}\n"
        f"--- block\n{o.block.code}--- stdout\n{o.stdout}--- stderr\n{o.stderr}"
        for o in outcomes
        if o.status != _expected(o.block) or "Traceback (most recent call last)" in o.stderr
    ]
    assert not failed, "\n".join(failed)
    check = CHECKS.get(page.name)
    if check is not None:
        check({o.block.markers["id"]: o for o in outcomes if "id" in o.block.markers})
    kept = [name for name in _left_behind(tmp_path) if not _ignored(name)]
    assert kept == [], f"{page.name} leaves files a clone would commit: {kept}"


@pytest.mark.parametrize(
    ("block", "complaint"),
    [
        pytest.param("```yaml\na: 1\n```\n", "a 'yaml' block that nothing runs", id="unknown-info"),
        pytest.param("```\nls\n```\n", "a 'plain' block that nothing runs", id="no-info"),
        pytest.param("<!-- not run: -->\n```sh\nls\n```\n", "without a reason", id="no-reason"),
        pytest.param("- a list\n  ```sh\n  ls\n  ```\n", "an indented fence", id="indented"),
        pytest.param("```sh\nls\n", "never closed", id="unclosed"),
    ],
)
def test_a_block_nothing_runs_is_a_problem(block: str, complaint: str, tmp_path: Path) -> None:
    """A page with a block that no runner takes, unmarked, is reported, naming the line."""
    page = tmp_path / "page.md"
    page.write_text(f"# A page\n\n{block}", encoding="utf-8")
    assert any(complaint in problem for problem in problems(page)), problems(page)


def test_marked_blocks_are_not_problems(tmp_path: Path) -> None:
    """A block marked not run with a reason, and sh, python and text blocks, are accepted."""
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- not run: needs an engine -->\n```dockerfile\nFROM x\n```\n"
        "```sh\nls\n```\n```python\nprint(1)\n```\n```text\n1\n```\n",
        encoding="utf-8",
    )
    assert problems(page) == []


def test_a_failing_block_is_reported_with_its_status(tmp_path: Path) -> None:
    """The runner reports each block's own status, keeps shell state between blocks, and
    maps the documented port to the one in RUNGUARD_TARGET."""
    page = tmp_path / "page.md"
    page.write_text(
        "```sh\nNAME=carried; echo $RUNGUARD_TARGET localhost:50051\n```\n"
        "```sh\necho $NAME; false\n```\n"
        "<!-- exit: 3 -->\n```python\nimport sys; sys.exit(3)\n```\n",
        encoding="utf-8",
    )
    work = tmp_path / "work"
    work.mkdir()
    first, second, third = run_page(page, work)
    target, documented = first.stdout.split()
    assert first.status == 0
    assert documented == "localhost:" + target.rsplit(":", 1)[1]
    assert (second.status, second.stdout) == (1, "carried\n")
    assert third.status == 3


def test_files_a_page_leaves_are_checked_against_gitignore(tmp_path: Path) -> None:
    """A file a page makes in the clone that .gitignore does not cover is caught; pki/ and
    tokens.txt, which the security walk-through makes, are covered."""
    page = tmp_path / "page.md"
    page.write_text(
        "```sh\nmkdir -p pki && touch pki/ca-key.pem tokens.txt notes.txt\n```\n",
        encoding="utf-8",
    )
    work = tmp_path / "work"
    work.mkdir()
    (made,) = run_page(page, work)
    assert made.status == 0
    assert _left_behind(work) == ["notes.txt", "pki/", "tokens.txt"]
    assert [name for name in _left_behind(work) if not _ignored(name)] == ["notes.txt"]
