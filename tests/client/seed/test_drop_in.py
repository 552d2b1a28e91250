"""The seed's ``run_guard`` module, kept as a drop-in: each documented behaviour of
``begin_run / end_run / current_run / fingerprint / RunRejected``, through
``runguard.client.run_guard`` talking to a real ``runguard serve`` process."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

import runguard.client
from runguard.client import Client, run_guard
from runguard.client.run_guard import RunRejected
from runguard.contract import JSONValue
from tests.conftest import Served

ROUTE = "/generate-sse"


def _reject(operation_id: str, payload: Any, route: str = ROUTE) -> RunRejected:
    with pytest.raises(RunRejected) as caught:
        run_guard.begin_run(operation_id, route, payload)
    return caught.value


def test_begin_run_returns_the_active_run(drop_in: Callable[..., Served]) -> None:
    """begin_run returns the run: its operation_id, fingerprint and start in epoch seconds."""
    drop_in()
    before = time.time()
    run = run_guard.begin_run("op-1", ROUTE, {"prompt": "cats"})
    after = time.time()
    assert run.operation_id == "op-1"
    assert run.fingerprint == run_guard.fingerprint(ROUTE, {"prompt": "cats"})
    assert isinstance(run.started_at, float)
    assert before - 1 <= run.started_at <= after + 1


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"prompt": "dogs"}, id="another-submission"),
        pytest.param({"prompt": "cats"}, id="identical-submission"),
    ],
)
def test_second_run_while_one_is_in_flight_is_rejected_naming_the_holder(
    drop_in: Callable[..., Served], payload: dict[str, str]
) -> None:
    """While a run is in flight, begin_run raises RunRejected("in_flight") naming the holder."""
    drop_in()
    run_guard.begin_run("op-1", ROUTE, {"prompt": "cats"})
    rejected = _reject("op-2", payload)
    assert rejected.reason == "in_flight"
    assert rejected.operation_id == "op-1"
    assert "operation_id=op-1" in rejected.message
    assert str(rejected) == rejected.message
    assert run_guard.current_run() == "op-1"


def test_same_submission_within_the_window_is_duplicate_after_the_run_ended(
    drop_in: Callable[..., Served],
) -> None:
    """The same route and equal payload inside the dedup window is "duplicate", without a holder."""
    drop_in("--dedup-window", "60")
    run_guard.begin_run("op-1", ROUTE, {"prompt": "cats", "n": 1})
    run_guard.end_run("op-1")
    rejected = _reject("op-2", {"n": 1.0, "prompt": "cats"})
    assert rejected.reason == "duplicate"
    assert rejected.operation_id is None
    assert "an identical submission was accepted" in rejected.message
    assert run_guard.current_run() is None


def test_only_the_same_route_and_payload_is_a_duplicate(drop_in: Callable[..., Served]) -> None:
    """Inside the dedup window another route or another payload is accepted."""
    drop_in("--dedup-window", "60")
    run_guard.begin_run("op-1", ROUTE, {"prompt": "cats"})
    run_guard.end_run("op-1")
    assert run_guard.begin_run("op-2", "/generate", {"prompt": "cats"}).operation_id == "op-2"
    run_guard.end_run("op-2")
    assert run_guard.begin_run("op-3", ROUTE, {"prompt": "dogs"}).operation_id == "op-3"


def test_end_run_is_idempotent(drop_in: Callable[..., Served]) -> None:
    """end_run twice frees the slot once and the second call is a harmless no-op."""
    drop_in()
    run_guard.begin_run("op-1", ROUTE, {"prompt": "cats"})
    run_guard.end_run("op-1")
    run_guard.end_run("op-1")
    assert run_guard.current_run() is None
    assert run_guard.begin_run("op-2", ROUTE, {"prompt": "dogs"}).operation_id == "op-2"


def test_end_run_of_an_unknown_operation_changes_nothing(drop_in: Callable[..., Served]) -> None:
    """end_run of an operation_id that does not hold the slot leaves the holder in place."""
    drop_in()
    run_guard.begin_run("op-1", ROUTE, {"prompt": "cats"})
    run_guard.end_run("op-unknown")
    assert run_guard.current_run() == "op-1"
    assert _reject("op-2", {"prompt": "dogs"}).reason == "in_flight"


def test_current_run_is_the_in_flight_operation_or_none(drop_in: Callable[..., Served]) -> None:
    """current_run is None with no run, the holder's operation_id during one, None again after."""
    drop_in()
    assert run_guard.current_run() is None
    run_guard.begin_run("op-1", ROUTE, {"prompt": "cats"})
    assert run_guard.current_run() == "op-1"
    run_guard.end_run("op-1")
    assert run_guard.current_run() is None


def test_same_submission_is_accepted_again_after_the_window(drop_in: Callable[..., Served]) -> None:
    """Once the dedup window has passed, the same submission is accepted again."""
    drop_in("--dedup-window", "0.3")
    run_guard.begin_run("op-1", ROUTE, {"prompt": "cats"})
    run_guard.end_run("op-1")
    time.sleep(0.5)
    assert run_guard.begin_run("op-2", ROUTE, {"prompt": "cats"}).operation_id == "op-2"
    assert run_guard.current_run() == "op-2"


def test_stale_slot_is_released_after_max_run_secs(drop_in: Callable[..., Served]) -> None:
    """A slot held past RUN_MAX_SECS is freed; the old run's end_run then leaves the new one."""
    drop_in("--max-ttl", "0.5")
    run_guard.begin_run("op-1", ROUTE, {"prompt": "cats"})
    time.sleep(0.8)
    assert run_guard.begin_run("op-2", ROUTE, {"prompt": "dogs"}).operation_id == "op-2"
    run_guard.end_run("op-1")
    assert run_guard.current_run() == "op-2"


@pytest.mark.parametrize(
    "guard",
    [
        pytest.param(None, id="unset-is-default"),
        pytest.param("generate", id="runguard-guard"),
    ],
)
def test_runs_take_the_guard_named_by_runguard_guard(
    drop_in: Callable[..., Served], guard: str | None
) -> None:
    """begin_run takes a slot of RUNGUARD_GUARD's guard ("default" when unset) and no other."""
    server = drop_in(guard=guard)
    operation_id = f"op-{uuid.uuid4().hex}"
    run_guard.begin_run(operation_id, ROUTE, {"prompt": "cats"})
    with Client(server.address) as client:
        holds = {
            name: [run.operation_id for run in client.current(name).holders] == [operation_id]
            for name in ("default", "generate")
        }
    assert holds == {name: name == (guard or "default") for name in holds}
    run_guard.end_run(operation_id)


def test_two_processes_share_one_slot(drop_in: Callable[..., Served]) -> None:
    """A run begun by another process using the drop-in holds the slot for this one too."""
    drop_in()
    script = (
        "from runguard.client import run_guard; "
        "run_guard.begin_run('worker-1', '/generate-sse', {'prompt': 'cats'})"
    )
    subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=30
    )
    assert run_guard.current_run() == "worker-1"
    rejected = _reject("web-1", {"prompt": "dogs"})
    assert rejected.reason == "in_flight"
    assert rejected.operation_id == "worker-1"


def test_another_process_reusing_the_operation_id_is_in_flight(
    drop_in: Callable[..., Served],
) -> None:
    """The same operation_id and payload from a second process is in_flight, not a shared grant."""
    drop_in()
    script = (
        "from runguard.client import run_guard; "
        "run_guard.begin_run('op-1', '/generate-sse', {'prompt': 'cats'})"
    )
    subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=30
    )
    rejected = _reject("op-1", {"prompt": "cats"})
    assert rejected.reason == "in_flight"
    assert rejected.operation_id == "op-1"
    run_guard.end_run("op-1")
    assert run_guard.current_run() == "op-1"


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"prompt": "cats"}, id="same-payload"),
        pytest.param({"prompt": "dogs"}, id="other-payload"),
    ],
)
def test_reusing_the_in_flight_operation_id_is_rejected(
    drop_in: Callable[..., Served], payload: dict[str, str]
) -> None:
    """As in the seed, begin_run with the in-flight run's own operation_id is "in_flight"."""
    drop_in()
    run_guard.begin_run("op-1", ROUTE, {"prompt": "cats"})
    rejected = _reject("op-1", payload)
    assert rejected.reason == "in_flight"
    assert rejected.operation_id == "op-1"


def test_fingerprint_is_32_hex_digits() -> None:
    """fingerprint(route, payload) is a string of 32 lowercase hex digits, as in the seed."""
    assert re.fullmatch(r"[0-9a-f]{32}", run_guard.fingerprint(ROUTE, {"prompt": "cats"}))


@pytest.mark.parametrize(
    ("left", "right"),
    [
        pytest.param({"a": 1, "b": 2}, {"b": 2, "a": 1}, id="key-order"),
        pytest.param({"n": 1}, {"n": 1.0}, id="int-and-float"),
        pytest.param(
            {"outer": {"x": [1, 2], "y": None}},
            {"outer": {"y": None, "x": [1.0, 2.0]}},
            id="nested",
        ),
        pytest.param([1, "two"], (1, "two"), id="list-and-tuple"),
    ],
)
def test_equal_json_values_have_equal_fingerprints(left: Any, right: Any) -> None:
    """Equal JSON values fingerprint alike whatever their key order or number type."""
    assert run_guard.fingerprint(ROUTE, left) == run_guard.fingerprint(ROUTE, right)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        pytest.param((ROUTE, {"n": 1}), ("/generate", {"n": 1}), id="route"),
        pytest.param((ROUTE, {"n": 1}), (ROUTE, {"n": 2}), id="payload-value"),
        pytest.param((ROUTE, {"n": 1}), (ROUTE, {"m": 1}), id="payload-key"),
        pytest.param((ROUTE, {"n": 1}), (ROUTE, {"n": "1"}), id="number-and-string"),
        pytest.param((ROUTE, None), (ROUTE, {}), id="null-and-empty"),
    ],
)
def test_different_submissions_have_different_fingerprints(
    left: tuple[str, Any], right: tuple[str, Any]
) -> None:
    """A different route or a different payload gives a different fingerprint."""
    assert run_guard.fingerprint(*left) != run_guard.fingerprint(*right)


def test_fingerprint_is_the_canonical_one_the_server_uses() -> None:
    """The drop-in's fingerprint of a JSON payload is the client package's canonical one."""
    payload: JSONValue = {"prompt": "cats", "sizes": [1, 2.5], "draft": False}
    assert run_guard.fingerprint(ROUTE, payload) == runguard.client.fingerprint(ROUTE, payload)


_OBJECT = object()


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({1, 2}, id="set"),
        pytest.param(_OBJECT, id="object"),
        pytest.param(b"bytes", id="bytes"),
        pytest.param({"nested": {3, 4}}, id="nested-set"),
    ],
)
def test_non_json_payloads_still_fingerprint(payload: object) -> None:
    """A payload JSON cannot hold is fingerprinted through its repr, stably and without raising."""
    first = run_guard.fingerprint(ROUTE, payload)
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert run_guard.fingerprint(ROUTE, payload) == first
    assert first != run_guard.fingerprint(ROUTE, None)


_CYCLE: list[Any] = []
_CYCLE.append(_CYCLE)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(float("nan"), id="nan"),
        pytest.param({"x": float("inf")}, id="infinity"),
        pytest.param({(1, 2): "tuple key"}, id="tuple-key"),
        pytest.param(_CYCLE, id="cycle"),
        pytest.param(10**400, id="huge-int"),
    ],
)
def test_payloads_json_cannot_hold_still_fingerprint(payload: object) -> None:
    """Like the seed's repr-based hash, fingerprint never raises on a payload JSON cannot hold."""
    assert re.fullmatch(r"[0-9a-f]{32}", run_guard.fingerprint(ROUTE, payload))


def test_run_rejected_is_the_client_error() -> None:
    """The drop-in's RunRejected is the client's, so one except clause catches both."""
    assert run_guard.RunRejected is runguard.client.RunRejected
    assert issubclass(run_guard.RunRejected, Exception)


@pytest.mark.parametrize(
    ("make", "operation_id"),
    [
        pytest.param(lambda: RunRejected("in_flight", "busy", "op-1"), "op-1", id="positional"),
        pytest.param(
            lambda: RunRejected(reason="in_flight", message="busy", operation_id="op-1"),
            "op-1",
            id="keywords",
        ),
        pytest.param(lambda: RunRejected("in_flight", "busy"), None, id="no-operation-id"),
    ],
)
def test_run_rejected_is_built_as_in_the_seed(
    make: Callable[[], RunRejected], operation_id: str | None
) -> None:
    """RunRejected(reason, message, operation_id=None) keeps the three as attributes and str."""
    error = make()
    assert (error.reason, error.message, error.operation_id) == ("in_flight", "busy", operation_id)
    assert str(error) == "busy"


def test_settings_default_to_the_seeds(reload_run_guard: Callable[[], None]) -> None:
    """With RUN_DEDUP_WINDOW_SECS and RUN_MAX_SECS unset the module has 5.0 s and 1800.0 s."""
    reload_run_guard()
    assert run_guard.DEDUP_WINDOW_SECS == 5.0
    assert run_guard.MAX_RUN_SECS == 1800.0


def test_settings_read_the_seeds_environment(
    monkeypatch: pytest.MonkeyPatch, reload_run_guard: Callable[[], None]
) -> None:
    """RUN_DEDUP_WINDOW_SECS and RUN_MAX_SECS set the module's constants at import, as floats."""
    monkeypatch.setenv("RUN_DEDUP_WINDOW_SECS", "2.5")
    monkeypatch.setenv("RUN_MAX_SECS", "60")
    reload_run_guard()
    assert run_guard.DEDUP_WINDOW_SECS == 2.5
    assert run_guard.MAX_RUN_SECS == 60.0
