"""Request validation: every documented limit at its edge, and every bad field named.

Each limit of ``runguard.server.limits`` is tried exactly at the limit
(accepted) and one over it (refused with a violation naming the field).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf import duration_pb2, json_format, struct_pb2

from runguard.contract import fingerprint
from runguard.server.config import ServerConfig
from runguard.server.errors import InvalidArgument
from runguard.server.limits import (
    EPOCH_MAX_CHARS,
    IDEMPOTENCY_KEY_MAX_CHARS,
    LABEL_VALUE_MAX_CHARS,
    LABELS_MAX,
    LEASE_TOKEN_MAX_CHARS,
    PAYLOAD_MAX_BYTES,
    PAYLOAD_MAX_DEPTH,
    ROUTE_MAX_CHARS,
    WATCH_GUARDS_MAX,
)
from runguard.server.validation import (
    parse_begin,
    parse_current,
    parse_end,
    parse_keep_alive,
    parse_watch,
)
from runguard.v1 import runguard_pb2 as pb

CONFIG = ServerConfig(max_ttl=60, max_wait=30)
"""A server whose longest lease is 60 s and longest wait 30 s."""


def value(data: Any) -> struct_pb2.Value:
    """A JSON value as google.protobuf.Value."""
    message = struct_pb2.Value()
    json_format.ParseDict(data, message)
    return message


def duration(seconds: int, nanos: int = 0) -> duration_pb2.Duration:
    """A Duration with exactly these fields (signs not normalised)."""
    return duration_pb2.Duration(seconds=seconds, nanos=nanos)


def begin_request(**fields: Any) -> pb.BeginRequest:
    """A valid Begin (guard g, route /r, payload {"n": 1}) with ``fields`` replaced."""
    request = pb.BeginRequest(guard="g", route="/r", payload=value({"n": 1}))
    for name, given in fields.items():
        if isinstance(given, struct_pb2.Value | duration_pb2.Duration):
            getattr(request, name).CopyFrom(given)
        elif name == "labels":
            request.labels.clear()
            request.labels.update(given)
        else:
            setattr(request, name, given)
    return request


def nested(levels: int) -> Any:
    """``levels`` lists nested in each other around the number 1."""
    data: Any = 1
    for _ in range(levels):
        data = [data]
    return data


def nested_objects(levels: int) -> Any:
    """``levels`` objects nested in each other around the number 1."""
    data: Any = 1
    for _ in range(levels):
        data = {"k": data}
    return data


def payload_of_size(size: int) -> struct_pb2.Value:
    """A string payload whose serialized Value is exactly ``size`` bytes."""
    length = size - 4  # one tag byte and a three-byte length prefix, for sizes near 64 KiB
    message = struct_pb2.Value(string_value="x" * length)
    assert message.ByteSize() == size
    return message


def refused(parse: Callable[[], object]) -> list[str]:
    """The fields named by the InvalidArgument that ``parse`` must raise, in order."""
    with pytest.raises(InvalidArgument) as raised:
        parse()
    return [v.field for v in raised.value.violations]


# -- Begin ---------------------------------------------------------------------

BEGIN_ACCEPTED = [
    pytest.param({"guard": "g" * 128}, id="guard-128"),
    pytest.param({"guard": "a-Z_0.9:/x"}, id="guard-all-characters"),
    pytest.param({"operation_id": "o" * 128}, id="operation-id-128"),
    pytest.param({"operation_id": "user@host:job/1.a_b-c"}, id="operation-id-all-characters"),
    pytest.param({"route": "r" * ROUTE_MAX_CHARS}, id="route-256"),
    pytest.param({"route": ""}, id="route-empty"),
    pytest.param({"route": "/générer ✓"}, id="route-unicode"),
    pytest.param({"idempotency_key": "k" * IDEMPOTENCY_KEY_MAX_CHARS}, id="key-256"),
    pytest.param({"payload": payload_of_size(PAYLOAD_MAX_BYTES)}, id="payload-64KiB"),
    pytest.param({"payload": value(nested(PAYLOAD_MAX_DEPTH))}, id="payload-32-lists"),
    pytest.param({"payload": value(nested_objects(PAYLOAD_MAX_DEPTH))}, id="payload-32-objects"),
    pytest.param({"payload": value(None)}, id="payload-null"),
    pytest.param({"ttl": duration(60)}, id="ttl-max"),
    pytest.param({"ttl": duration(0, 1)}, id="ttl-1ns"),
    pytest.param({"wait": duration(30)}, id="wait-max"),
    pytest.param({"wait": duration(0)}, id="wait-zero"),
    pytest.param({"labels": {f"k{i}": "v" for i in range(LABELS_MAX)}}, id="labels-16"),
    pytest.param({"labels": {"k" * 63: "v"}}, id="label-key-63"),
    pytest.param({"labels": {"a.b/c_d-E9": "v"}}, id="label-key-all-characters"),
    pytest.param({"labels": {"k": "v" * LABEL_VALUE_MAX_CHARS}}, id="label-value-256"),
    pytest.param({"labels": {"k": ""}}, id="label-value-empty"),
]


@pytest.mark.parametrize("fields", BEGIN_ACCEPTED)
def test_begin_at_each_limit_is_accepted(fields: dict[str, Any]) -> None:
    """A Begin whose fields sit exactly at their limits is valid."""
    parse_begin(begin_request(**fields), CONFIG)


BEGIN_REFUSED = [
    pytest.param({"guard": "g" * 129}, "guard", id="guard-129"),
    pytest.param({"guard": "bad guard"}, "guard", id="guard-space"),
    pytest.param({"guard": "g@h"}, "guard", id="guard-at-sign"),
    pytest.param({"operation_id": "o" * 129}, "operation_id", id="operation-id-129"),
    pytest.param({"operation_id": "op 1"}, "operation_id", id="operation-id-space"),
    pytest.param({"route": "r" * (ROUTE_MAX_CHARS + 1)}, "route", id="route-257"),
    pytest.param({"route": "/r\n"}, "route", id="route-newline"),
    pytest.param({"route": "/r\x00"}, "route", id="route-nul"),
    pytest.param(
        {"idempotency_key": "k" * (IDEMPOTENCY_KEY_MAX_CHARS + 1)}, "idempotency_key", id="key-257"
    ),
    pytest.param({"idempotency_key": ""}, "idempotency_key", id="key-empty"),
    pytest.param({"idempotency_key": "k\x07"}, "idempotency_key", id="key-control"),
    pytest.param({"payload": payload_of_size(PAYLOAD_MAX_BYTES + 1)}, "payload", id="payload-big"),
    pytest.param({"payload": value(nested(PAYLOAD_MAX_DEPTH + 1))}, "payload", id="payload-33"),
    pytest.param(
        {"payload": value(nested_objects(PAYLOAD_MAX_DEPTH + 1))}, "payload", id="payload-33-obj"
    ),
    pytest.param({"payload": struct_pb2.Value(number_value=float("nan"))}, "payload", id="nan"),
    pytest.param(
        {"payload": value({"a": [1, {"b": float("inf")}]})}, "payload", id="nested-infinity"
    ),
    pytest.param({"payload": struct_pb2.Value()}, "payload", id="payload-no-kind"),
    pytest.param({"ttl": duration(60, 1)}, "ttl", id="ttl-over-max"),
    pytest.param({"ttl": duration(0)}, "ttl", id="ttl-zero"),
    pytest.param({"ttl": duration(-1)}, "ttl", id="ttl-negative"),
    pytest.param({"ttl": duration(1, -1)}, "ttl", id="ttl-mixed-signs"),
    pytest.param({"ttl": duration(-1, 1)}, "ttl", id="ttl-mixed-signs-negative"),
    pytest.param({"ttl": duration(0, 1_000_000_000)}, "ttl", id="ttl-nanos-overflow"),
    pytest.param({"wait": duration(30, 1)}, "wait", id="wait-over-max"),
    pytest.param({"wait": duration(0, -1)}, "wait", id="wait-negative"),
    pytest.param({"wait": duration(5, -5)}, "wait", id="wait-mixed-signs"),
    pytest.param({"labels": {f"k{i}": "v" for i in range(LABELS_MAX + 1)}}, "labels", id="17"),
    pytest.param({"labels": {"bad key": "v"}}, "labels['bad key']", id="label-key-space"),
    pytest.param({"labels": {"k" * 64: "v"}}, f"labels[{'k' * 64!r}]", id="label-key-64"),
    pytest.param({"labels": {"": "v"}}, "labels['']", id="label-key-empty"),
    pytest.param(
        {"labels": {"k": "v" * (LABEL_VALUE_MAX_CHARS + 1)}}, "labels['k']", id="label-value-257"
    ),
    pytest.param({"labels": {"k": "line\nbreak"}}, "labels['k']", id="label-value-control"),
]


@pytest.mark.parametrize(("fields", "field"), BEGIN_REFUSED)
def test_begin_over_a_limit_names_the_field(fields: dict[str, Any], field: str) -> None:
    """A Begin with one bad field is refused with exactly one violation naming that field."""
    assert refused(lambda: parse_begin(begin_request(**fields), CONFIG)) == [field]


def test_begin_lists_every_bad_field_in_one_error() -> None:
    """Several bad fields give one InvalidArgument with one violation each, in field order."""
    request = begin_request(
        guard="bad guard",
        operation_id="bad op",
        route="\x00",
        idempotency_key="",
        ttl=duration(0),
        wait=duration(-1),
        labels={"bad key": "v", "ok": "\x01"},
    )
    fields = refused(lambda: parse_begin(request, CONFIG))
    assert fields[:6] == ["guard", "operation_id", "route", "idempotency_key", "ttl", "wait"]
    assert sorted(fields[6:]) == ["labels['bad key']", "labels['ok']"]  # map order is protobuf's


def test_begin_with_empty_guard_means_default() -> None:
    """An empty guard name is the guard called "default"."""
    assert parse_begin(begin_request(guard=""), CONFIG).guard == "default"


def test_begin_values_come_through() -> None:
    """A valid Begin yields its guard, operation_id, durations and sorted labels."""
    args = parse_begin(
        begin_request(
            operation_id="op-1",
            ttl=duration(1, 500_000_000),
            wait=duration(2),
            labels={"b": "2", "a": "1"},
        ),
        CONFIG,
    )
    assert (args.guard, args.operation_id) == ("g", "op-1")
    assert (args.ttl, args.wait) == (1.5, 2.0)
    assert args.labels == (("a", "1"), ("b", "2"))


def test_begin_without_ttl_or_wait_leaves_them_to_the_server() -> None:
    """No ttl means the server's max TTL (None); no wait means do not queue (0)."""
    request = begin_request()
    request.ClearField("ttl")
    request.ClearField("wait")
    args = parse_begin(request, CONFIG)
    assert (args.ttl, args.wait, args.operation_id) == (None, 0.0, "")


# -- fingerprints --------------------------------------------------------------


def fingerprint_of(**fields: Any) -> str:
    """The fingerprint parse_begin gives a Begin with ``fields``."""
    return parse_begin(begin_request(**fields), CONFIG).fingerprint


@pytest.mark.parametrize(
    ("left", "right"),
    [
        pytest.param({"a": 1, "b": [1, 2]}, {"b": [1.0, 2], "a": 1.0}, id="key-order-and-1.0"),
        pytest.param({"x": {"z": None, "y": True}}, {"x": {"y": True, "z": None}}, id="nested"),
        pytest.param(0.1, 0.1, id="same-float"),
    ],
)
def test_equal_json_payloads_give_equal_fingerprints(left: Any, right: Any) -> None:
    """Key order and 1 versus 1.0 do not change a payload's fingerprint."""
    assert fingerprint_of(payload=value(left)) == fingerprint_of(payload=value(right))


def test_payload_fingerprint_is_the_cores() -> None:
    """parse_begin fingerprints the route and payload as the core (and every language) does."""
    assert fingerprint_of(route="/x", payload=value({"n": 1})) == fingerprint("/x", {"n": 1})


@pytest.mark.parametrize(
    ("left", "right"),
    [
        pytest.param({"payload": value("k")}, {"idempotency_key": "k"}, id="payload-vs-key"),
        pytest.param({"payload": value({"n": 1})}, {"payload": value({"n": 2})}, id="payloads"),
        pytest.param({"route": "/a"}, {"route": "/b"}, id="routes"),
        pytest.param({"idempotency_key": "a"}, {"idempotency_key": "b"}, id="keys"),
        pytest.param({"payload": value("1")}, {"payload": value(1)}, id="string-vs-number"),
    ],
)
def test_different_submissions_give_different_fingerprints(
    left: dict[str, Any], right: dict[str, Any]
) -> None:
    """A payload and an idempotency key never collide, nor do different routes or values."""
    assert fingerprint_of(**left) != fingerprint_of(**right)


# -- End and KeepAlive ---------------------------------------------------------


def test_end_without_lease_token_is_refused() -> None:
    """An End must carry the run's lease token unless it is forced."""
    assert refused(lambda: parse_end(pb.EndRequest(guard="g", operation_id="op"))) == [
        "lease_token"
    ]


def test_forced_end_needs_no_lease_token() -> None:
    """An admin End with force frees the slot without the token."""
    args = parse_end(pb.EndRequest(guard="", operation_id="op", force=True))
    assert (args.guard, args.operation_id, args.lease_token, args.force) == (
        "default",
        "op",
        "",
        True,
    )


@pytest.mark.parametrize(
    ("request_", "fields"),
    [
        pytest.param(
            pb.EndRequest(guard="g", operation_id="", lease_token="t"),
            ["operation_id"],
            id="operation-id-required",
        ),
        pytest.param(
            pb.EndRequest(guard="g", operation_id="op", lease_token="t" * 129),
            ["lease_token"],
            id="token-129",
        ),
        pytest.param(
            pb.EndRequest(guard="g", operation_id="op", lease_token="t" * 129, force=True),
            ["lease_token"],
            id="forced-token-129",
        ),
        pytest.param(
            pb.EndRequest(guard="g g", operation_id="o p"),
            ["guard", "operation_id", "lease_token"],
            id="all-bad",
        ),
    ],
)
def test_bad_end_names_its_fields(request_: pb.EndRequest, fields: list[str]) -> None:
    """End refuses a missing operation_id and an over-long token, naming each field."""
    assert refused(lambda: parse_end(request_)) == fields


def test_end_token_at_its_limit_is_accepted() -> None:
    """A lease token of exactly 128 characters is valid."""
    token = "t" * LEASE_TOKEN_MAX_CHARS
    assert parse_end(pb.EndRequest(guard="g", operation_id="op", lease_token=token)).lease_token


@pytest.mark.parametrize(
    ("request_", "fields"),
    [
        pytest.param(
            pb.KeepAliveRequest(guard="g", operation_id="op"), ["lease_token"], id="no-token"
        ),
        pytest.param(
            pb.KeepAliveRequest(guard="g", operation_id="op", lease_token="t", ttl=duration(61)),
            ["ttl"],
            id="ttl-over-max",
        ),
        pytest.param(
            pb.KeepAliveRequest(guard="g", operation_id="op", lease_token="t", ttl=duration(0)),
            ["ttl"],
            id="ttl-zero",
        ),
        pytest.param(
            pb.KeepAliveRequest(guard="g", operation_id="op", lease_token="t", ttl=duration(1, -1)),
            ["ttl"],
            id="ttl-mixed-signs",
        ),
        pytest.param(
            pb.KeepAliveRequest(guard="g" * 129, lease_token="t" * 129),
            ["guard", "operation_id", "lease_token"],
            id="all-bad",
        ),
    ],
)
def test_bad_keep_alive_names_its_fields(request_: pb.KeepAliveRequest, fields: list[str]) -> None:
    """KeepAlive needs an operation_id and token, and a ttl within the server's max TTL."""
    assert refused(lambda: parse_keep_alive(request_, CONFIG)) == fields


def test_keep_alive_values_come_through() -> None:
    """A valid KeepAlive yields its guard (default for ""), token and ttl (None when unset)."""
    args = parse_keep_alive(
        pb.KeepAliveRequest(operation_id="op", lease_token="t", ttl=duration(60)), CONFIG
    )
    assert (args.guard, args.operation_id, args.lease_token, args.ttl) == (
        "default",
        "op",
        "t",
        60.0,
    )
    unset = parse_keep_alive(pb.KeepAliveRequest(operation_id="op", lease_token="t"), CONFIG)
    assert unset.ttl is None


# -- Current and Watch ---------------------------------------------------------


@pytest.mark.parametrize(
    ("guard", "expected"),
    [
        pytest.param("", "default", id="empty"),
        pytest.param("g" * 128, "g" * 128, id="128"),
    ],
)
def test_current_returns_the_guard(guard: str, expected: str) -> None:
    """Current validates its guard; "" means "default"."""
    assert parse_current(pb.CurrentRequest(guard=guard)) == expected


def test_current_with_bad_guard_names_it() -> None:
    """A bad guard name in Current is refused as "guard"."""
    assert refused(lambda: parse_current(pb.CurrentRequest(guard="g" * 129))) == ["guard"]


@pytest.mark.parametrize(
    ("request_", "fields"),
    [
        pytest.param(
            pb.WatchRequest(guards=[f"g{i}" for i in range(WATCH_GUARDS_MAX + 1)]),
            ["guards"],
            id="1001-guards",
        ),
        pytest.param(pb.WatchRequest(guards=["ok", "bad guard"]), ["guards[1]"], id="bad-name"),
        pytest.param(pb.WatchRequest(after_revision=-1), ["after_revision"], id="negative-rev"),
        pytest.param(pb.WatchRequest(epoch="e" * (EPOCH_MAX_CHARS + 1)), ["epoch"], id="epoch-65"),
        pytest.param(
            pb.WatchRequest(guards=["a b", "ok", "c d"], after_revision=-5, epoch="e" * 65),
            ["guards[0]", "guards[2]", "after_revision", "epoch"],
            id="all-bad",
        ),
    ],
)
def test_bad_watch_names_its_fields(request_: pb.WatchRequest, fields: list[str]) -> None:
    """Watch refuses too many guards, bad names (by index), a negative revision, a long epoch."""
    assert refused(lambda: parse_watch(request_)) == fields


def test_watch_at_its_limits_is_accepted() -> None:
    """1000 guards and a 64-character epoch are valid."""
    request = pb.WatchRequest(
        guards=[f"g{i}" for i in range(WATCH_GUARDS_MAX)],
        after_revision=7,
        epoch="e" * EPOCH_MAX_CHARS,
    )
    args = parse_watch(request)
    assert args.guards is not None
    assert len(args.guards) == WATCH_GUARDS_MAX
    assert (args.after_revision, args.epoch) == (7, "e" * EPOCH_MAX_CHARS)


def test_watch_guards_are_defaulted_and_deduplicated_in_order() -> None:
    """ "" is "default", and a guard named twice is watched once, in first-seen order."""
    args = parse_watch(pb.WatchRequest(guards=["b", "", "a", "default", "b"]))
    assert args.guards == ("b", "default", "a")


def test_watch_without_guards_watches_every_guard() -> None:
    """No guards means every guard (None)."""
    assert parse_watch(pb.WatchRequest()).guards is None


def test_limits_are_the_documented_ones() -> None:
    """The limits are the ones the proto comments and docs/configuration.md promise every client."""
    assert (ROUTE_MAX_CHARS, IDEMPOTENCY_KEY_MAX_CHARS) == (256, 256)
    assert (PAYLOAD_MAX_BYTES, PAYLOAD_MAX_DEPTH) == (64 * 1024, 32)
    assert (LABELS_MAX, LABEL_VALUE_MAX_CHARS) == (16, 256)
    assert (LEASE_TOKEN_MAX_CHARS, WATCH_GUARDS_MAX, EPOCH_MAX_CHARS) == (128, 1000, 64)
