"""The client verbs of the ``runguard`` command, run as processes against a real server:
what each prints, and its exit code (0 done, 75 refused, 1 fault, 2 usage; ``run``
passes its command's code through)."""

from __future__ import annotations

import contextlib
import json
import queue
import re
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

import pytest

import runguard.client
from runguard.client import Client
from tests.client.cli.conftest import Cli, runguard_command
from tests.conftest import Served

REFUSED = 75


@contextlib.contextmanager
def background(command: list[str]) -> Iterator[subprocess.Popen[str]]:
    """Start ``command`` with its output piped; killed (if still running) and reaped on exit."""
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()


class Lines:
    """The lines a process prints, read on a thread so each wait can time out."""

    def __init__(self, stream: IO[str]) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        with contextlib.suppress(ValueError, OSError):  # closed under us when a test failed
            for line in stream:
                self._queue.put(line)
        self._queue.put(None)

    def next_event(self, timeout: float = 15) -> dict[str, Any]:
        """The next JSON line that is not a progress heartbeat."""
        while True:
            line = self._queue.get(timeout=timeout)
            assert line is not None, "the stream ended"
            event: dict[str, Any] = json.loads(line)
            if event["event"] != "progress":
                return event

    def join(self) -> None:
        """Wait for the stream's end (the process has exited)."""
        self._thread.join(10)


def wait_until(check: Callable[[], Any], timeout: float = 15) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"not true within {timeout} s: {check}")


def held(cli: Cli, guard: str) -> list[str]:
    """The operation_ids holding ``guard``, as ``current --json`` prints them."""
    result = cli("current", guard, "--json")
    assert result.returncode == 0, result.stderr
    return [run["operation_id"] for run in json.loads(result.stdout)["holders"]]


def holders(client: Client, guard: str) -> list[str]:
    """The operation_ids holding ``guard``, asked through the Python client."""
    return [run.operation_id for run in client.current(guard).holders]


def test_begin_prints_the_grant_and_its_lease_token(cli: Cli, client: Client, guard: str) -> None:
    """begin exits 0 and prints "granted" with the run, then a lease_token= line."""
    result = cli(
        "begin",
        guard,
        "--route",
        "/generate",
        "--payload",
        '{"prompt": "cats"}',
        "--operation-id",
        "op-1",
    )
    assert result.returncode == 0, result.stderr
    granted, token = result.stdout.splitlines()
    assert granted.startswith(f"granted {guard} op-1 fencing=")
    assert re.fullmatch(r"lease_token=\S+", token)
    assert holders(client, guard) == ["op-1"]


def test_begin_json_prints_one_object_with_the_lease_token(cli: Cli, guard: str) -> None:
    """begin --json prints exactly one JSON object: outcome granted, the run, the lease token."""
    result = cli(
        "begin",
        guard,
        "--route",
        "/generate",
        "--payload",
        '{"prompt": "cats", "n": 1}',
        "--operation-id",
        "op-1",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    data = json.loads(line)
    assert data["outcome"] == "granted"
    assert isinstance(data["lease_token"], str)
    assert data["lease_token"]
    assert (data["run"]["guard"], data["run"]["operation_id"]) == (guard, "op-1")
    assert data["run"]["fingerprint"] == runguard.client.fingerprint(
        "/generate", {"n": 1.0, "prompt": "cats"}
    )


def test_second_begin_is_refused_in_flight(cli: Cli, client: Client, guard: str) -> None:
    """A begin while the guard is held exits 75 printing "rejected in_flight" and the holder."""
    client.begin(guard, operation_id="op-1", payload={"n": 1})
    result = cli("begin", guard, "--operation-id", "op-2", "--payload", '{"n": 2}')
    assert result.returncode == REFUSED
    assert result.stdout.startswith("rejected in_flight: ")
    assert "op-1" in result.stdout
    assert holders(client, guard) == ["op-1"]


def test_end_prints_ended_then_already_ended(cli: Cli, client: Client, guard: str) -> None:
    """end with the lease token exits 0 printing "ended", and again printing "already ended"."""
    token = client.begin(guard, operation_id="op-1").lease_token
    first = cli("end", guard, "op-1", "--token", token)
    assert (first.returncode, first.stdout.strip()) == (0, "ended")
    assert holders(client, guard) == []
    second = cli("end", guard, "op-1", "--token", token)
    assert (second.returncode, second.stdout.strip()) == (0, "already ended")


def test_end_with_a_wrong_token_is_permission_denied(cli: Cli, client: Client, guard: str) -> None:
    """end with another token exits 1, names PermissionDenied on stderr, and frees nothing."""
    client.begin(guard, operation_id="op-1")
    result = cli("end", guard, "op-1", "--token", "not-the-token")
    assert result.returncode == 1
    assert "PermissionDenied" in result.stderr
    assert holders(client, guard) == ["op-1"]


def test_keepalive_renews_until_the_run_ends(cli: Cli, client: Client, guard: str) -> None:
    """keepalive extends a live lease (exit 0) and exits 75 with "lease lost" once it ended."""
    grant = client.begin(guard, operation_id="op-1", ttl=60)
    token = grant.lease_token
    renewed = cli("keepalive", guard, "op-1", "--token", token, "--ttl", "600", "--json")
    assert renewed.returncode == 0, renewed.stderr
    expires_at = datetime.fromisoformat(json.loads(renewed.stdout)["run"]["expires_at"])
    assert expires_at - grant.run.expires_at > timedelta(seconds=500)
    client.end_grant(grant)
    lost = cli("keepalive", guard, "op-1", "--token", token)
    assert lost.returncode == REFUSED
    assert lost.stdout.startswith("lease lost: ")


def test_current_lists_the_holder_without_its_token(
    server: Served, client: Client, guard: str
) -> None:
    """current prints the guard's count and each holder, as text and as JSON, never a token."""
    token = client.begin(guard, operation_id="op-1").lease_token
    with (
        background(runguard_command("current", server.address, guard)) as text,
        background(runguard_command("current", server.address, guard, "--json")) as as_json,
    ):
        text_out, _ = text.communicate(timeout=30)
        json_out, _ = as_json.communicate(timeout=30)
    assert text.returncode == as_json.returncode == 0
    header, holder = text_out.splitlines()
    assert header == f"{guard}: 1/1 held, 0 queued"
    assert holder.startswith(f"  {guard} op-1 fencing=")
    state = json.loads(json_out)
    assert (state["guard"], state["capacity"]) == (guard, 1)
    assert [run["operation_id"] for run in state["holders"]] == ["op-1"]
    assert token not in text_out + json_out


@pytest.mark.parametrize(
    ("args", "field"),
    [
        pytest.param(("no spaces",), "guard", id="guard-with-a-space"),
        pytest.param(("{guard}", "--operation-id", "a b"), "operation_id", id="operation-id"),
        pytest.param(("{guard}", "--ttl", "-1"), "ttl", id="negative-ttl"),
    ],
)
def test_bad_request_is_a_fault_naming_the_field(
    cli: Cli, client: Client, guard: str, args: tuple[str, ...], field: str
) -> None:
    """A begin the server finds invalid exits 1, names the bad field on stderr, takes nothing."""
    result = cli("begin", *(arg.format(guard=guard) for arg in args))
    assert result.returncode == 1
    assert f"invalid: {field}: " in result.stderr
    assert result.stdout == ""
    assert holders(client, guard) == []


def test_unreachable_target_is_a_fault() -> None:
    """A verb whose server cannot be reached exits 1 naming Unavailable on stderr."""
    result = subprocess.run(
        runguard_command("current", "127.0.0.1:1", "generate", "--timeout", "2"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "Unavailable" in result.stderr


def test_watch_prints_a_snapshot_then_each_change_as_it_happens(
    server: Served, guard: str, tmp_path: Path
) -> None:
    """watch --json prints a snapshot, then a run's acquired change while it runs, then released."""
    release = tmp_path / "release"
    wait_for_release = f"while [ ! -e {shlex.quote(str(release))} ]; do sleep 0.05; done"
    with background(runguard_command("watch", server.address, guard, "--json")) as watcher:
        assert watcher.stdout is not None
        lines = Lines(watcher.stdout)
        snapshot = lines.next_event()
        assert snapshot["event"] == "snapshot"
        assert [(state["guard"], state["holders"]) for state in snapshot["guards"]] == [(guard, [])]
        run_command = runguard_command(
            "run",
            server.address,
            guard,
            "--operation-id",
            "op-w",
            "--",
            "sh",
            "-c",
            wait_for_release,
        )
        with background(run_command) as run:
            acquired = lines.next_event()
            assert run.poll() is None  # the change arrived while the run still held the slot
            assert (acquired["event"], acquired["kind"]) == ("change", "acquired")
            assert acquired["run"]["operation_id"] == "op-w"
            assert [h["operation_id"] for h in acquired["state"]["holders"]] == ["op-w"]
            release.touch()
            assert run.wait(20) == 0
        released = lines.next_event()
        assert (released["event"], released["kind"], released["reason"]) == (
            "change",
            "released",
            "ended",
        )
        assert released["run"]["operation_id"] == "op-w"
        assert released["revision"] > acquired["revision"] > snapshot["revision"]
        assert released["state"]["holders"] == []
        watcher.terminate()
        watcher.wait(10)
        lines.join()


def test_run_passes_the_exit_code_through_and_frees_the_slot(
    cli: Cli, client: Client, guard: str
) -> None:
    """run exits with its command's exit code, and the slot is free afterwards."""
    result = cli("run", guard, "--", "sh", "-c", "exit 7")
    assert result.returncode == 7
    assert holders(client, guard) == []


def test_run_refused_does_not_run_the_command(
    cli: Cli, client: Client, guard: str, tmp_path: Path
) -> None:
    """run on a guard someone else holds exits 75 and never starts its command."""
    client.begin(guard, operation_id="op-1")
    marker = tmp_path / "ran"
    result = cli("run", guard, "--", "touch", str(marker))
    assert result.returncode == REFUSED
    assert result.stdout.startswith("rejected in_flight: ")
    assert not marker.exists()
    assert holders(client, guard) == ["op-1"]


def test_run_renews_a_short_lease_for_the_whole_command(
    server: Served, cli: Cli, client: Client, guard: str, tmp_path: Path
) -> None:
    """run --ttl 3 keeps renewing, so an 8 s command holds the slot throughout and exits 0."""
    started = tmp_path / "started"
    command = runguard_command(
        "run",
        server.address,
        guard,
        "--ttl",
        "3",
        "--operation-id",
        "op-long",
        "--",
        "sh",
        "-c",
        f"touch {shlex.quote(str(started))}; sleep 8",  # ends well after the check below
    )
    with background(command) as run:
        wait_until(started.exists)
        time.sleep(3.5)  # past the first lease: only renewals keep it
        assert held(cli, guard) == ["op-long"]
        _, stderr = run.communicate(timeout=20)
        assert run.returncode == 0, stderr
    assert holders(client, guard) == []


def test_run_stops_its_command_when_force_ended(
    server: Served, cli: Cli, client: Client, guard: str
) -> None:
    """A run force-ended by an admin stops its command at once and exits 75."""
    command = runguard_command("run", server.address, guard, "--", "sleep", "30")
    with background(command) as run:
        [operation_id] = wait_until(lambda: holders(client, guard))
        assert held(cli, guard) == [operation_id]
        forced_at = time.monotonic()
        forced = cli("end", guard, operation_id, "--force")
        assert (forced.returncode, forced.stdout.strip()) == (0, "ended")
        stdout, _ = run.communicate(timeout=20)
        assert time.monotonic() - forced_at < 10
        assert run.returncode == REFUSED
        assert stdout.startswith("lease lost: ")
    assert holders(client, guard) == []


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param((), id="no-separator"),
        pytest.param(("--",), id="nothing-after-separator"),
    ],
)
def test_run_without_a_command_is_a_usage_error(
    cli: Cli, client: Client, guard: str, tail: tuple[str, ...]
) -> None:
    """run with no command after -- exits 2 and takes no slot."""
    result = cli("run", guard, *tail)
    assert result.returncode == 2
    assert "give the command after --" in result.stderr
    assert holders(client, guard) == []


def test_configure_changes_a_guard_every_client_then_sees(
    cli: Cli, client: Client, guard: str
) -> None:
    """configure sets a guard's capacity and window; Current shows them; --reset undoes it."""
    done = cli("configure", guard, "--capacity", "3", "--dedup-window", "0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"{guard}: capacity=3 dedup_window=0s max_queue=1000 (own settings)"
    )
    state = client.current(guard)
    assert (state.capacity, state.dedup_window, state.configured) == (3, 0.0, True)
    reset = cli("configure", guard, "--reset", "--json")
    assert reset.returncode == 0, reset.stderr
    assert json.loads(reset.stdout)["configured"] is False


def test_configure_with_a_bad_value_names_the_field_and_exits_1(cli: Cli, guard: str) -> None:
    """configure --capacity 0 is refused naming capacity, exit 1 (a fault), no traceback."""
    done = cli("configure", guard, "--capacity", "0")
    assert done.returncode == 1
    assert "capacity: must be 1 to 65535" in done.stderr
    assert "Traceback" not in done.stderr


def test_guards_lists_every_stored_guard_across_pages(cli: Cli, client: Client, guard: str) -> None:
    """guards prints every guard the store holds, following the pages to the end."""
    names = [f"{guard}-{i}" for i in range(5)]
    for name in names:
        client.configure_guard(name, capacity=2)
    done = cli("guards", "--page-size", "2", "--json")
    assert done.returncode == 0, done.stderr
    listed = [json.loads(line)["guard"] for line in done.stdout.splitlines()]
    assert [n for n in listed if n.startswith(guard)] == names


@pytest.mark.parametrize(
    ("verb", "args"),
    [
        pytest.param("configure", ["--dedup-window", "nan"], id="configure-nan"),
        pytest.param("configure", ["--dedup-window", "inf"], id="configure-inf"),
        pytest.param("begin", ["--ttl", "nan"], id="begin-ttl-nan"),
        pytest.param("begin", ["--wait", "inf"], id="begin-wait-inf"),
    ],
)
def test_seconds_that_are_not_finite_are_a_usage_error(
    cli: Cli, guard: str, verb: str, args: list[str]
) -> None:
    """NaN or an infinity where seconds go is refused as bad usage (exit 2), no traceback."""
    done = cli(verb, guard, *args)
    assert done.returncode == 2
    assert "must be a finite number of seconds" in done.stderr
    assert "Traceback" not in done.stderr


def test_free_text_values_may_start_with_a_dash(cli: Cli, client: Client, guard: str) -> None:
    """A token, key or reason that starts with "-" is a value, not another flag."""
    begun = cli("begin", guard, "--operation-id", "op-dash", "--key", "-k1", "--json")
    assert begun.returncode == 0, begun.stderr
    wrong = cli("end", guard, "op-dash", "--token", "-not-its-token")
    assert wrong.returncode == 1
    assert "wrong lease_token" in wrong.stderr
    assert "expected one argument" not in wrong.stderr
    token = json.loads(begun.stdout)["lease_token"]
    assert cli("end", guard, "op-dash", "--token", token).returncode == 0
