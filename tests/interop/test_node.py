"""A Node.js client (@grpc/grpc-js + @grpc/proto-loader) against a real ``runguard serve``.

``node/client.mjs`` is built only from the contract (it loads
``protos/runguard/v1/runguard.proto`` at run time) and prints one JSON line per step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from runguard.v1 import runguard_pb2 as pb
from tests.interop.node_run import CLIENT_STEPS, NODE_DIR, node_program, run_node
from tests.stubs import sync_stub

pytestmark = pytest.mark.interop

CLIENT = NODE_DIR / "client.mjs"


@pytest.fixture
def node_client() -> Callable[..., list[dict[str, Any]]]:
    """Runs ``node client.mjs ARGS`` to its JSON lines; fails if Node or its packages are absent."""
    node_program()

    def run(*args: str) -> list[dict[str, Any]]:
        return run_node(CLIENT, *args, timeout=30)

    return run


def by_step(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The client's lines keyed by their ``step``."""
    return {line["step"]: line for line in lines}


def test_node_client_runs_begin_reject_watch_end(
    served: Callable[..., Any], node_client: Callable[..., list[dict[str, Any]]]
) -> None:
    """A grpc-js client is granted, refused IN_FLIGHT with the holder, and watches its End."""
    server = served()

    lines = node_client(server.address)

    steps = by_step(lines)
    assert [line["step"] for line in lines] == CLIENT_STEPS
    begin = steps["begin"]
    assert begin["outcome"] == "granted"
    assert begin["has_lease_token"] is True
    assert begin["operation_id"] == "node-holder"
    assert int(begin["fencing_token"]) > 0
    assert steps["second_begin"] == {
        "step": "second_begin",
        "outcome": "rejected",
        "reason": "REJECTION_REASON_IN_FLIGHT",
        "holders": ["node-holder"],
        "duplicate_of": None,
    }
    assert steps["watch_snapshot"]["guards"] == [
        {"guard": begin["guard"], "holders": ["node-holder"]}
    ]
    assert steps["end"]["result"] == "END_RESULT_ENDED"
    assert steps["watch_released"] == {
        "step": "watch_released",
        "kind": "CHANGE_KIND_RELEASED",
        "release_reason": "RELEASE_REASON_ENDED",
        "operation_id": "node-holder",
        "holders_after": [],
        "seen": ["SNAPSHOT", "CHANGE_KIND_RELEASED"],
    }
    assert steps["end_again"]["result"] == "END_RESULT_ALREADY_ENDED"


def test_equal_json_from_python_and_node_is_one_submission(
    served: Callable[..., Any], node_client: Callable[..., list[dict[str, Any]]]
) -> None:
    """Node's reordered payload spelled with 1.0 is a DUPLICATE of Python's, same fingerprint."""
    server = served("--dedup-window", "60")
    route = "/interop/fingerprint"
    node_payload = '{"b":[1.0,2],"a":1}'  # the text Node parses: other key order, 1.0
    payload = struct_pb2.Value()
    json_format.ParseDict({"a": 1, "b": [1, 2]}, payload)
    with grpc.insecure_channel(server.address) as channel:
        stub = sync_stub(channel)
        begun = stub.Begin(pb.BeginRequest(guard="fp", route=route, payload=payload), timeout=10)
        run = begun.granted.run
        ended = stub.End(
            pb.EndRequest(
                guard="fp", operation_id=run.operation_id, lease_token=begun.granted.lease_token
            ),
            timeout=10,
        )
        assert ended.result == pb.END_RESULT_ENDED

    [line] = node_client(server.address, "begin", "fp", route, node_payload)

    assert line["outcome"] == "rejected"
    assert line["reason"] == "REJECTION_REASON_DUPLICATE"
    assert line["duplicate_of"] == {
        "operation_id": run.operation_id,
        "fingerprint": run.fingerprint,
    }
    assert line["local_fingerprint"] == run.fingerprint


def test_node_client_sees_a_runs_life(
    served: Callable[..., Any], node_client: Callable[..., list[dict[str, Any]]]
) -> None:
    """grpc-js reports progress, sees it and a cancel in Watch, Ends CANCELLED with a result,
    and reads the ended run back from a DUPLICATE and GetRun; End of nothing is UNKNOWN."""
    server = served("--dedup-window", "60")

    steps = by_step(node_client(server.address, "life", "node-life"))

    progressed = steps["progressed"]["run"]
    assert progressed["state"] == "RUN_STATE_RUNNING"
    assert progressed["progress"] == {"fraction": 0.5, "message": "half"}
    assert steps["cancel"] == {
        "step": "cancel",
        "result": "CANCEL_RESULT_REQUESTED",
        "change_holders": ["node-job"],
        "keep_alive_cancel_requested": True,
    }
    released = steps["end"]["released"]
    assert steps["end"]["result"] == "END_RESULT_ENDED"
    ended = {
        "operation_id": "node-job",
        "state": "RUN_STATE_ENDED",
        "end_reason": "RELEASE_REASON_ENDED",
        "outcome": "RUN_OUTCOME_CANCELLED",
        "result": {"frames": 3},
        "has_ended_at": True,
        "progress": {"fraction": 0.5, "message": "half"},
        "cancel_requested": True,
        "cancel_reason": "stop",
    }
    assert released == ended
    assert steps["duplicate"] == {
        "step": "duplicate",
        "reason": "REJECTION_REASON_DUPLICATE",
        "duplicate_of": ended,
    }
    assert steps["get_run"]["run"] == ended
    assert steps["end_unknown"]["result"] == "END_RESULT_UNKNOWN"
