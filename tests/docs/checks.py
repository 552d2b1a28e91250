"""What the pages' blocks must print, beyond running: one function per page, by file name.

A check gets the outcomes of the page's blocks by ``id`` marker and asserts what the page
promises its reader (see docs/WRITING.md). Register it in ``CHECKS``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from tests.docs.runner import Outcome
from tests.interop.node_run import CLIENT_STEPS

Outcomes = dict[str, Outcome]


def documents(output: str) -> list[Any]:
    """The JSON documents grpcurl printed, each starting with a '{' line."""
    decoder = json.JSONDecoder()
    found = []
    for match in re.finditer(r"^\{$", output, re.M):
        document, _ = decoder.raw_decode(output, match.start())
        found.append(document)
    return found


def outcome(document: Any) -> str:
    """What one grpcurl response says, in a word: granted, a reason, a result, or an event."""
    if "rejected" in document:
        return str(document["rejected"]["reason"])
    if "result" in document:
        return str(document["result"])
    return next(
        key for key in ("granted", "snapshot", "change", "progress", "state") if key in document
    )


def _shown(result: Outcome) -> str:
    return f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def readme(blocks: Outcomes) -> None:
    """The grpcurl session is granted, IN_FLIGHT, ENDED, DUPLICATE; Watch shows a snapshot at
    revision 3; Python holds then is refused duplicate; the drop-in and the CLI do as shown;
    the Node client ends twice."""
    session = blocks["session"]
    granted, in_flight, ended, duplicate = documents(session.stdout)
    assert [outcome(d) for d in (granted, in_flight, ended, duplicate)] == [
        "granted",
        "REJECTION_REASON_IN_FLIGHT",
        "END_RESULT_ENDED",
        "REJECTION_REASON_DUPLICATE",
    ], _shown(session)
    assert granted["granted"]["run"]["operationId"] == "op-1"
    assert [h["operationId"] for h in in_flight["rejected"]["holders"]] == ["op-1"]
    assert duplicate["rejected"]["duplicateOf"]["operationId"] == "op-1"
    assert duplicate["rejected"]["message"].startswith("an identical submission was accepted")
    (watched,) = documents(blocks["watch"].stdout)
    assert watched["snapshot"] == {
        "revision": "3",  # the quick start's curl Begin, then the session's Begin and End
        "guards": [{"guard": "generate", "capacity": 1, "dedupWindow": "5s", "maxQueue": 1000}],
    }
    assert "Code: DeadlineExceeded" in blocks["watch"].stderr
    configured, *listed = blocks["guards"].stdout.splitlines()
    assert configured == "generate: capacity=2 dedup_window=60s max_queue=1000 (own settings)"
    assert "generate: 0/2 held, 0 queued" in listed, listed
    assert any(line.startswith("thumbnails: 1/1 held") for line in listed), listed
    first, second = blocks["python"].stdout.splitlines()
    assert re.fullmatch(r"first holds [0-9a-f]{32} fencing token \d+", first), first
    assert second.startswith("double submit refused (duplicate): an identical submission"), second
    assert blocks["drop-in"].stdout == "in flight: True\nin flight after end_run: None\n"
    cli = blocks["cli"].stdout.splitlines()
    assert cli[0] == "report written"
    assert cli[1].startswith("rejected in_flight: guard 'nightly-report' is at capacity 1")
    assert cli[2:] == ["exit code 75", "ended", "nightly-report: 0/1 held, 0 queued"]
    steps = [json.loads(line)["step"] for line in blocks["node"].stdout.splitlines()]
    assert steps == CLIENT_STEPS


def contract(blocks: Outcomes) -> None:
    """The fingerprint is the session's; two bad fields are named; a resume replays the missed
    RELEASED, and one with another epoch is a resynced snapshot."""
    assert blocks["fingerprint"].stdout == "698066ee55f09563a152a50d0b9fe13b\n"
    invalid = blocks["invalid"].stderr
    assert "Code: InvalidArgument" in invalid
    assert '"field":"guard"' in invalid
    assert '"field":"ttl"' in invalid
    ended, replayed = documents(blocks["resume"].stdout)
    assert ended["result"] == "END_RESULT_ENDED"
    assert ended["run"]["state"] == "RUN_STATE_ENDED"
    assert replayed["change"]["kind"] == "CHANGE_KIND_RELEASED", blocks["resume"].stdout
    assert replayed["change"]["run"]["operationId"] == "op-9"
    (resynced,) = documents(blocks["resynced"].stdout)
    assert resynced["snapshot"]["resynced"] is True


def stores(blocks: Outcomes) -> None:
    """The sqlite holder and its fencing token survive a restart; on etcd one replica grants,
    another refuses in_flight, a third sees the holder."""
    token = re.search(r"fencing=(\d+)", blocks["held"].stdout)
    assert token, blocks["held"].stdout
    head, holder = blocks["survived"].stdout.splitlines()
    assert head == "nightly: 1/1 held, 0 queued"
    assert holder.startswith(f"  nightly op-1 fencing={token.group(1)} expires="), holder
    lines = blocks["replicas"].stdout.splitlines()
    assert lines[0].startswith("granted on "), lines
    assert lines[1].startswith("rejected in_flight: guard 'shared'"), lines
    assert lines[2:4] == ["exit code 75", "shared: 1/1 held, 0 queued"], lines
    assert lines[4].startswith("  shared first fencing="), lines


def configuration(blocks: Outcomes) -> None:
    """--guard sets a capacity, --max-ttl bounds a lease, a bad variable stops the server."""
    assert blocks["configured"].stdout == "generate: 0/2 held, 0 queued\nexit code 1\n"
    assert "ttl: must be in (0s, 600s], got 900s" in blocks["configured"].stderr
    assert blocks["bad-setting"].stdout == "exit code 2\n"
    assert blocks["bad-setting"].stderr == "runguard: RUN_MAX_SECS='soon' is not a number\n"
    assert blocks["health"].stdout == "SERVING\n"


def security(blocks: Outcomes) -> None:
    """Certificates and tokens: list without a token, Begin as worker-7, Current by the
    dashboard certificate, force refused twice then done by ops, each audited; the Python
    client and the verbs reach the server; plaintext is told to pass --cacert."""
    calls = blocks["calls"]
    assert "runguard.v1.RunGuardService" in calls.stdout.splitlines(), _shown(calls)
    granted, current, ended = documents(calls.stdout)
    assert granted["granted"]["run"]["principal"] == "worker-7"
    assert [h["principal"] for h in current["state"]["holders"]] == ["worker-7"]
    assert ended["result"] == "END_RESULT_ENDED"
    assert ended["run"]["state"] == "RUN_STATE_ENDED"
    assert calls.stderr.count("Code: PermissionDenied") == 2, _shown(calls)
    assert "principal 'build-host' has none" in calls.stderr
    audits = [
        json.loads(line)
        for line in blocks["server"].stderr.splitlines()
        if '"event": "audit"' in line
    ]
    assert [a["principal"] for a in audits] == ["build-host", "worker-7", "ops"]
    assert re.fullmatch(r"held by worker-7 fencing token \d+\n", blocks["python"].stdout)
    assert blocks["cli"].stdout == "nightly: 0/1 held, 0 queued\n"
    assert "Socket closed (hint: if the server serves TLS" in blocks["plaintext"].stderr


def operations(blocks: Outcomes) -> None:
    """The log shows the grant and its expiry; a port in use is one line; the scrape counts
    the two Begins (one refused), the run and its End."""
    events = [
        json.loads(line)
        for line in blocks["logged"].stderr.splitlines()
        if json.loads(line).get("operation_id") == "op-3"
    ]
    assert [e["event"] for e in events] == ["begin", "expired"], blocks["logged"].stderr
    assert blocks["in-use"].stdout == "exit code 1\n"
    assert blocks["in-use"].stderr.endswith(
        ": the port is in use (is another server running on it?)\n"
    )
    assert blocks["in-use"].stderr.count("\n") == 1
    scraped = blocks["scrape"].stdout.splitlines()
    assert scraped[0] == "exit code 75"
    for line in (
        'runguard_begin_total{guard="generate",outcome="granted",reason=""} 1.0',
        'runguard_begin_total{guard="generate",outcome="rejected",reason="in_flight"} 1.0',
        'runguard_begin_total{guard="other",outcome="granted",reason=""} 1.0',
        'runguard_end_total{guard="other",result="ended"} 1.0',
    ):
        assert line in scraped, scraped


def python(blocks: Outcomes) -> None:
    """The async run holds and refuses a second Begin; watch sees the acquire and release;
    the error table lists a class per code; a bad request names its fields; the seed API
    refuses in_flight naming the holder."""
    held, second, after = blocks["async"].stdout.splitlines()
    holder = held.split(" as ")[1]
    assert second == f"a second one: in_flight held by {holder}"
    assert after == "after the block: ()"
    assert blocks["watch"].stdout.splitlines()[1:] == ["acquired  True", "released ended True"]
    assert blocks["table"].stdout.split() == [
        *("INVALID_ARGUMENT", "InvalidArgument", "NOT_FOUND", "LeaseLost"),
        *("PERMISSION_DENIED", "PermissionDenied", "UNAUTHENTICATED", "Unauthenticated"),
        *("ALREADY_EXISTS", "AlreadyExists", "RESOURCE_EXHAUSTED", "ResourceExhausted"),
        *("UNAVAILABLE", "Unavailable"),
    ]
    assert blocks["errors"].stdout.splitlines() == [
        "guard -> must be 1 to 128 characters of letters, digits and ._:/-",
        "ttl -> must be in (0s, 1800s], got 0s",
    ]
    assert blocks["seed"].stdout == "in_flight op-a\n"


def cli(blocks: Outcomes) -> None:
    """Begin, keepalive, a refused Begin in JSON, End twice; watch prints both changes; run
    without -- is a usage error; --wait queues."""
    lease = blocks["lease"].stdout.splitlines()
    assert lease[0].startswith("renewed exports job-1 fencing=")
    assert json.loads(lease[1])["outcome"] == "rejected"
    assert lease[2:] == ["exit code 75", "ended", "already ended"]
    watched = blocks["watch"].stdout.splitlines()
    assert watched[0].startswith("snapshot rev=")
    assert [line.split()[1:3] for line in watched[2:]] == [
        ["acquired", "exports"],
        ["released", "(ended)"],
    ], watched
    assert blocks["usage"].stdout == "exit code 2\n"
    assert "put the command after --" in blocks["usage"].stderr
    assert blocks["queue"].stdout == "my turn came\nexports: 0/1 held, 0 queued\n"


def runs(blocks: Outcomes) -> None:
    """A second tab sees the running job; the watcher got coalesced progress and the ended
    run's last report and outcome; a double submit gets the first result; a cancel stops the
    command, keeps the slot (a second job is IN_FLIGHT) until it exits, then ends cancelled."""
    progress = blocks["progress"].stdout
    assert re.search(r"^(running|ended) generate job-1 ", progress, re.M), progress
    assert "job-1: succeeded {'batch': '/out/job-1'}" in progress, progress
    first, released = blocks["watched"].stdout.splitlines()
    assert first.endswith('progress=10% "frame 1 of 10"'), first
    assert re.search(
        r'released \(ended\) generate job-1 .*progress=100% "frame 10 of 10" end_reason=ended '
        r'outcome=succeeded result=\{"batch": "/out/job-1"\}',
        released,
    ), released
    assert blocks["duplicate"].stdout == "already made: succeeded {'batch': '/out/job-1'}\n"
    got = json.loads(blocks["get"].stdout)["run"]
    assert (got["state"], got["outcome"], got["result"]) == (
        "ended",
        "succeeded",
        {"batch": "/out/job-1"},
    )
    cancel = blocks["cancel"]
    lines = cancel.stdout.splitlines()
    assert lines[0].startswith("requested generate job-3 "), _shown(cancel)
    held = lines.index("generate: 1/1 held, 0 queued")
    assert "job-3" in lines[held + 1], _shown(cancel)
    assert "cancel-requested" in lines[held + 1], _shown(cancel)
    assert lines[held + 2].startswith("rejected in_flight: "), _shown(cancel)
    assert lines[held + 3] == "exit 75", _shown(cancel)
    assert "cancelled: the command exited with 0; the run ended cancelled" in lines, _shown(cancel)
    assert re.search(r"^ended generate job-3 .*outcome=cancelled", cancel.stdout, re.M)
    assert "was asked to stop: user pressed stop; stopping the command" in cancel.stderr


def guards(blocks: Outcomes) -> None:
    """configure changes the guard for every client; a bad value names the field; guards lists
    the configured guard and the held one."""
    assert blocks["configure"].stdout.splitlines() == [
        "generate: capacity=3 dedup_window=60s max_queue=1000 (own settings)",
        "3 60.0 True",
    ], _shown(blocks["configure"])
    assert blocks["refused"].stderr.strip() == (
        "runguard configure: invalid: capacity: must be 1 to 65535, got 0"
    ), _shown(blocks["refused"])
    listed = blocks["list"].stdout.splitlines()
    assert listed[0] == "generate: 0/3 held, 0 queued", _shown(blocks["list"])
    assert listed[1] == "thumbnails: 1/1 held, 0 queued", _shown(blocks["list"])
    assert listed[2].startswith("  thumbnails job-1 fencing="), _shown(blocks["list"])


CHECKS: dict[str, Callable[[Outcomes], None]] = {
    "guards.md": guards,
    "README.md": readme,
    "cli.md": cli,
    "configuration.md": configuration,
    "contract.md": contract,
    "operations.md": operations,
    "python.md": python,
    "runs.md": runs,
    "security.md": security,
    "stores.md": stores,
}
