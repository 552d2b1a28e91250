"""The CLI and a run's life, as processes against a real server: outcomes and results on
end, get, UNKNOWN told apart, progress on keepalive, and ``runguard cancel`` reaching the
command of ``runguard run``, whose slot frees only once the command has exited."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from runguard.client import Client
from tests.client.cli.conftest import Cli, runguard_command
from tests.client.cli.test_cli import REFUSED, background, holders, wait_until
from tests.conftest import Served


def test_end_keeps_an_outcome_and_result_that_get_and_a_duplicate_show(
    cli: Cli, client: Client, guard: str
) -> None:
    """end --outcome --result; get prints them; a duplicate begin prints the earlier result."""
    token = client.begin(guard, operation_id="op-1", payload={"n": 1}).lease_token
    ended = cli(
        "end", guard, "op-1", "--token", token, "--outcome", "succeeded", "--result", '{"batch": 7}'
    )
    assert (ended.returncode, ended.stdout.strip()) == (0, "ended")

    shown = cli("get", guard, "op-1")
    again = cli("begin", guard, "--operation-id", "op-2", "--payload", '{"n": 1}')

    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"ended {guard} op-1 ")
    assert 'end_reason=ended outcome=succeeded result={"batch": 7}' in shown.stdout
    assert again.returncode == REFUSED
    assert again.stdout.startswith("rejected duplicate: ")
    assert "earlier run: " in again.stdout
    assert 'outcome=succeeded result={"batch": 7}' in again.stdout


def test_end_of_a_run_never_held_says_unknown(cli: Cli, guard: str) -> None:
    """end of an operation_id the guard never had exits 0 and says so; get of it is a fault."""
    ended = cli("end", guard, "never-held", "--token", "x")
    shown = cli("get", guard, "never-held")

    assert ended.returncode == 0
    assert ended.stdout.startswith("unknown: the guard has no run of that operation_id")
    assert shown.returncode == 1
    assert "no such run" in shown.stderr


def test_keepalive_reports_progress(cli: Cli, client: Client, guard: str) -> None:
    """keepalive --fraction --message renews and prints the progress; a NaN is refused."""
    token = client.begin(guard, operation_id="op-1").lease_token

    renewed = cli(
        "keepalive", guard, "op-1", "--token", token, "--fraction", "0.4", "--message", "frames"
    )
    refused = cli("keepalive", guard, "op-1", "--token", token, "--fraction", "nan")

    assert renewed.returncode == 0, renewed.stderr
    assert 'progress=40% "frames"' in renewed.stdout
    assert refused.returncode == 1
    assert "progress.fraction" in refused.stderr
    progress = client.current(guard).holders[0].progress
    assert progress is not None
    assert progress.fraction == 0.4


def test_cancel_stops_the_command_and_frees_the_slot_only_after_it_exits(
    server: Served, cli: Cli, client: Client, guard: str, tmp_path: Path
) -> None:
    """cancel: the command gets SIGTERM, the slot stays held while it winds down, and once it
    exits the run has ended cancelled and the slot is free."""
    term, release = tmp_path / "term", tmp_path / "release"
    script = (
        f"trap 'touch {shlex.quote(str(term))}; "
        f"while [ ! -e {shlex.quote(str(release))} ]; do sleep 0.05; done; exit 3' TERM; "
        "while :; do sleep 0.05; done"
    )
    command = runguard_command(
        "run", server.address, guard, "--operation-id", "op-job", "--", "sh", "-c", script
    )
    with background(command) as run:
        wait_until(lambda: holders(client, guard))

        cancelled = cli("cancel", guard, "op-job", "--reason", "user pressed stop")

        assert cancelled.returncode == 0, cancelled.stderr
        assert cancelled.stdout.startswith(f"requested {guard} op-job ")
        wait_until(term.exists)
        assert holders(client, guard) == ["op-job"]  # still winding down: still held
        assert client.get_run(guard, "op-job").cancel_requested
        release.touch()
        stdout, stderr = run.communicate(timeout=20)
    assert run.returncode == 3
    assert "user pressed stop" in stderr
    assert stdout.strip().endswith("cancelled: the command exited with 3; the run ended cancelled")
    assert holders(client, guard) == []
    ended = client.get_run(guard, "op-job")
    assert (ended.outcome, ended.result) == ("cancelled", {"exit_code": 3})


def test_run_ends_with_the_commands_outcome(cli: Cli, client: Client, guard: str) -> None:
    """A command that fails ends its run failed with its exit code as the result."""
    result = cli("run", guard, "--operation-id", "op-f", "--json", "--", "sh", "-c", "exit 4")
    assert result.returncode == 4
    shown = json.loads(cli("get", guard, "op-f", "--json").stdout)["run"]
    assert (shown["outcome"], shown["result"]) == ("failed", {"exit_code": 4})


def test_cancel_reaches_every_process_of_the_command(
    server: Served, cli: Cli, client: Client, guard: str, tmp_path: Path
) -> None:
    """The SIGTERM of a cancel goes to the command's whole process group: a shell waiting on
    a long child gets its trap run (the child is stopped too), not after the child ends."""
    term = tmp_path / "term"
    script = f"trap 'touch {shlex.quote(str(term))}; exit 0' TERM; sleep 600"
    command = runguard_command(
        "run", server.address, guard, "--operation-id", "op-sh", "--", "sh", "-c", script
    )
    with background(command) as run:
        wait_until(lambda: holders(client, guard))
        assert cli("cancel", guard, "op-sh").returncode == 0
        run.communicate(timeout=30)  # far less than the child's 600 s
    assert term.exists()
    assert run.returncode == 0
    assert holders(client, guard) == []
    assert client.get_run(guard, "op-sh").outcome == "cancelled"
