"""The CLI where a newcomer trips: the command after --, a closed pipe, --version, the
outcome word of --json, and refusals that read as one sentence."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from importlib import metadata

from runguard.client import Client
from tests.client.cli.conftest import Cli, runguard_command
from tests.conftest import Served

DOUBLED = re.compile(r"\b(\w+)\W+\1\b", re.IGNORECASE)


def test_run_with_the_command_not_after_dashes_says_where_it_goes(
    cli: Cli, client: Client, guard: str
) -> None:
    """``runguard run GUARD true`` is a usage error (2) that shows the command after --, and
    takes no slot."""
    done = cli("run", guard, "python", "-c", "print(1)")
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        f"runguard run: put the command after --, as in: "
        f"runguard run {guard} -- python -c 'print(1)'\n"
    )
    assert client.current(guard).holders == ()


def test_other_unknown_arguments_are_still_named(cli: Cli, guard: str) -> None:
    """An unknown argument to another verb is argparse's usage error naming it."""
    done = cli("current", guard, "extra")
    assert done.returncode == 2
    assert "unrecognized arguments: extra" in done.stderr


def into_a_closed_pipe(command: list[str]) -> tuple[str, str]:
    """Run ``command | true`` in bash; what the shell prints of the command's exit status
    (``status N``), and the command's stderr."""
    done = subprocess.run(
        ["bash", "-c", f"{shlex.join(command)} | true; echo status ${{PIPESTATUS[0]}}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.stdout, done.stderr


def test_a_closed_pipe_ends_the_verb_quietly(server: Served, guard: str) -> None:
    """A verb whose reader has gone (``runguard begin ... | head -1``) exits 141, as a shell
    tool ended by SIGPIPE does, without a traceback."""
    assert into_a_closed_pipe(runguard_command("begin", server.address, guard)) == (
        "status 141\n",
        "",
    )


def test_version_comes_from_the_package_metadata() -> None:
    """``runguard --version`` prints the installed distribution's version and exits 0."""
    done = subprocess.run(
        [sys.executable, "-m", "runguard.server", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"runguard {metadata.version('runguard')}\n"


def test_json_names_a_refusal_rejected_as_the_protocol_does(cli: Cli, guard: str) -> None:
    """A refused Begin with --json says ``"outcome": "rejected"`` with its reason."""
    assert cli("begin", guard).returncode == 0
    done = cli("begin", guard, "--json")
    assert done.returncode == 75, done.stderr
    printed = json.loads(done.stdout)
    assert (printed["outcome"], printed["reason"]) == ("rejected", "in_flight")


def test_refusals_never_double_a_word(cli: Cli, client: Client, guard: str) -> None:
    """The text of an IN_FLIGHT and of a DUPLICATE refusal has no word twice in a row."""
    first = cli("begin", guard, "--route", "/r", "--payload", "1")
    in_flight = cli("begin", guard, "--route", "/r", "--payload", "2")
    holder = client.current(guard).holders[0]
    client.end(guard, holder.operation_id, force=True)
    duplicate = cli("begin", guard, "--route", "/r", "--payload", "1")
    assert first.returncode == 0, first.stderr
    texts = [in_flight.stdout, duplicate.stdout]
    assert [t.split(":")[0] for t in texts] == ["rejected in_flight", "rejected duplicate"]
    for text in texts:
        assert not DOUBLED.search(text), text


def test_a_closed_pipe_ends_health_quietly(server: Served) -> None:
    """``runguard health`` whose reader has gone exits 141 without a traceback too."""
    command = [sys.executable, "-m", "runguard.server", "health", "--target", server.address]
    assert into_a_closed_pipe(command) == ("status 141\n", "")
