"""The sync client without a server: what it sends and how it reads statuses.

grpcio-testing's fake channel plays the server: each test takes the call the
client made, checks the request, and ends it with the response or status.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import grpc
import grpc_testing  # type: ignore[import-untyped]  # ships no types
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from runguard.client import (
    AlreadyExists,
    CallFailed,
    Client,
    EndResult,
    InvalidArgument,
    LeaseLost,
    PermissionDenied,
    ResourceExhausted,
    RetryPolicy,
    RunGuardError,
    RunRejected,
    Unauthenticated,
    Unavailable,
)
from runguard.v1 import runguard_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["RunGuardService"]


@pytest.fixture
def fake() -> Any:
    """A fake channel standing in for a server."""
    return grpc_testing.channel([SERVICE], grpc_testing.strict_real_time())


@pytest.fixture
def client(fake: Any) -> Iterator[Client]:
    """A client on the fake channel, retrying fast."""
    fast = RetryPolicy(attempts=3, initial_backoff=0.001, max_backoff=0.002)
    with Client(channel=fake, retry=fast) as made:
        yield made


def in_background(call: Callable[[], Any]) -> Future[Any]:
    """Run a blocking client call on a thread, so the test can play the server."""
    result: Future[Any] = Future()

    def target() -> None:
        try:
            result.set_result(call())
        except BaseException as error:
            result.set_exception(error)

    threading.Thread(target=target, daemon=True).start()
    return result


def take(fake: Any, method: str) -> tuple[Any, Any]:
    """The next call of ``method``: its request and the handle to answer it."""
    _, request, rpc = fake.take_unary_unary(SERVICE.methods_by_name[method])
    return request, rpc


def _run(operation_id: str = "op-1") -> pb.Run:
    return pb.Run(
        guard="generate", operation_id=operation_id, fingerprint="f" * 32, fencing_token=7
    )


def test_begin_sends_every_field_and_makes_an_operation_id(fake: Any, client: Client) -> None:
    """Begin carries guard, route, payload, ttl, wait and labels, and a client-made operation_id."""
    pending = in_background(
        lambda: client.begin(
            "generate",
            route="/generate",
            payload={"b": [1, 2], "a": "x"},
            ttl=2.5,
            wait=1,
            labels={"team": "ml"},
        )
    )
    request, rpc = take(fake, "Begin")
    assert request.guard == "generate"
    assert request.route == "/generate"
    assert len(request.operation_id) == 32
    assert request.payload.struct_value.fields["a"].string_value == "x"
    assert request.ttl == duration_pb2.Duration(seconds=2, nanos=500_000_000)
    assert request.wait == duration_pb2.Duration(seconds=1)
    assert dict(request.labels) == {"team": "ml"}
    rpc.terminate(
        pb.BeginResponse(granted=pb.Granted(run=_run(), lease_token="secret")),
        (),
        grpc.StatusCode.OK,
        "",
    )
    grant = pending.result(5)
    assert grant.lease_token == "secret"
    assert grant.run.fencing_token == 7


def test_begin_with_an_idempotency_key(fake: Any, client: Client) -> None:
    """An idempotency key is sent instead of a payload."""
    pending = in_background(lambda: client.begin("g", route="/r", idempotency_key="k-1"))
    request, rpc = take(fake, "Begin")
    assert request.WhichOneof("submission") == "idempotency_key"
    assert request.idempotency_key == "k-1"
    rpc.terminate(pb.BeginResponse(granted=pb.Granted(run=_run())), (), grpc.StatusCode.OK, "")
    pending.result(5)


def test_payload_and_key_together_are_refused_before_sending(client: Client) -> None:
    """Giving both a payload and an idempotency key is a caller error, raised at once."""
    with pytest.raises(ValueError, match="not both"):
        client.begin("g", payload={"a": 1}, idempotency_key="k")


@pytest.mark.parametrize(
    ("reason", "name"),
    [
        pytest.param(pb.REJECTION_REASON_IN_FLIGHT, "in_flight", id="in-flight"),
        pytest.param(pb.REJECTION_REASON_DUPLICATE, "duplicate", id="duplicate"),
        pytest.param(pb.REJECTION_REASON_WAIT_TIMEOUT, "wait_timeout", id="wait-timeout"),
        pytest.param(pb.REJECTION_REASON_QUEUE_FULL, "queue_full", id="queue-full"),
    ],
)
def test_a_rejection_raises_run_rejected_with_the_seeds_reason(
    fake: Any, client: Client, reason: pb.RejectionReason, name: str
) -> None:
    """A rejected Begin raises RunRejected whose reason reads like the seed's."""
    pending = in_background(lambda: client.begin("generate", route="/r"))
    _, rpc = take(fake, "Begin")
    rejection = pb.Rejection(
        reason=reason,
        message="no",
        holders=[_run("holder")],
        duplicate_of=_run("earlier"),
        retry_after=duration_pb2.Duration(seconds=3),
    )
    rpc.terminate(pb.BeginResponse(rejected=rejection), (), grpc.StatusCode.OK, "")
    with pytest.raises(RunRejected) as caught:
        pending.result(5)
    assert caught.value.reason == name
    assert caught.value.message == "no"
    assert caught.value.retry_after == 3
    assert [run.operation_id for run in caught.value.holders] == ["holder"]
    assert caught.value.duplicate_of is not None
    assert caught.value.duplicate_of.operation_id == "earlier"
    assert caught.value.operation_id == ("holder" if name == "in_flight" else None)


def _bad_request_trailers() -> tuple[tuple[str, bytes], ...]:
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field="guard", description="bad"),
                error_details_pb2.BadRequest.FieldViolation(field="ttl", description="neg"),
            ]
        )
    )
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message="m", details=[detail])
    return (("grpc-status-details-bin", status.SerializeToString()),)


@pytest.mark.parametrize(
    ("code", "error_type"),
    [
        pytest.param(grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument, id="invalid-argument"),
        pytest.param(grpc.StatusCode.NOT_FOUND, LeaseLost, id="not-found"),
        pytest.param(grpc.StatusCode.PERMISSION_DENIED, PermissionDenied, id="permission-denied"),
        pytest.param(grpc.StatusCode.UNAUTHENTICATED, Unauthenticated, id="unauthenticated"),
        pytest.param(grpc.StatusCode.ALREADY_EXISTS, AlreadyExists, id="already-exists"),
        pytest.param(
            grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhausted, id="resource-exhausted"
        ),
        pytest.param(grpc.StatusCode.UNAVAILABLE, Unavailable, id="unavailable"),
        pytest.param(grpc.StatusCode.INTERNAL, CallFailed, id="internal"),
        pytest.param(grpc.StatusCode.DEADLINE_EXCEEDED, CallFailed, id="deadline"),
    ],
)
def test_each_status_code_maps_to_one_error(
    fake: Any, client: Client, code: grpc.StatusCode, error_type: type[RunGuardError]
) -> None:
    """Every status code a call can end with becomes one typed error that carries the code."""
    pending = in_background(lambda: client.end("g", "op", "token"))
    trailers = _bad_request_trailers() if code is grpc.StatusCode.INVALID_ARGUMENT else ()
    for _ in range(3 if code is grpc.StatusCode.UNAVAILABLE else 1):
        _, rpc = take(fake, "End")
        rpc.terminate(None, trailers, code, "details")
    with pytest.raises(error_type) as caught:
        pending.result(5)
    assert caught.value.message == "details"
    if isinstance(caught.value, InvalidArgument):
        assert caught.value.violations == (("guard", "bad"), ("ttl", "neg"))
    assert caught.value.code is code


def test_unavailable_is_retried_with_the_same_request(fake: Any, client: Client) -> None:
    """An UNAVAILABLE Begin is sent again unchanged (same operation_id), so a retry is safe."""
    pending = in_background(lambda: client.begin("g", route="/r", payload=1))
    first, rpc = take(fake, "Begin")
    rpc.terminate(None, (), grpc.StatusCode.UNAVAILABLE, "down")
    second, rpc = take(fake, "Begin")
    rpc.terminate(pb.BeginResponse(granted=pb.Granted(run=_run())), (), grpc.StatusCode.OK, "")
    pending.result(5)
    assert second == first


@pytest.mark.parametrize(
    ("failures", "replayed"),
    [pytest.param(0, True, id="first-attempt"), pytest.param(1, False, id="own-retry")],
)
def test_a_replayed_grant_is_flagged_unless_it_answers_our_own_retry(
    fake: Any, client: Client, failures: int, replayed: bool
) -> None:
    """Grant.replayed says someone else's Begin got this run first, not our own resend."""
    pending = in_background(lambda: client.begin("g", route="/r", operation_id="op-1"))
    for _ in range(failures):
        _, rpc = take(fake, "Begin")
        rpc.terminate(None, (), grpc.StatusCode.UNAVAILABLE, "down")
    _, rpc = take(fake, "Begin")
    answer = pb.Granted(run=_run(), lease_token="t", replayed=True)
    rpc.terminate(pb.BeginResponse(granted=answer), (), grpc.StatusCode.OK, "")
    assert pending.result(5).replayed is replayed


def test_other_failures_are_not_retried(fake: Any, client: Client) -> None:
    """PERMISSION_DENIED is final: one call, no retry."""
    pending = in_background(lambda: client.keep_alive("g", "op", "wrong"))
    _, rpc = take(fake, "KeepAlive")
    rpc.terminate(None, (), grpc.StatusCode.PERMISSION_DENIED, "wrong lease_token")
    with pytest.raises(PermissionDenied):
        pending.result(5)


def test_end_reads_both_results(fake: Any, client: Client) -> None:
    """End's result is ENDED or ALREADY_ENDED; force is sent without a token."""
    pending = in_background(lambda: client.end("g", "op", force=True))
    request, rpc = take(fake, "End")
    assert request.force
    assert request.lease_token == ""
    rpc.terminate(pb.EndResponse(result=pb.END_RESULT_ALREADY_ENDED), (), grpc.StatusCode.OK, "")
    assert pending.result(5) is EndResult.ALREADY_ENDED


def test_lost_lease_names_the_run(fake: Any, client: Client) -> None:
    """KeepAlive's NOT_FOUND becomes LeaseLost naming the guard and operation_id."""
    pending = in_background(lambda: client.keep_alive("g", "op-7", "token", ttl=5))
    request, rpc = take(fake, "KeepAlive")
    assert request.ttl == duration_pb2.Duration(seconds=5)
    rpc.terminate(None, (), grpc.StatusCode.NOT_FOUND, "expired 1.0s ago")
    with pytest.raises(LeaseLost) as caught:
        pending.result(5)
    assert (caught.value.guard, caught.value.operation_id) == ("g", "op-7")
