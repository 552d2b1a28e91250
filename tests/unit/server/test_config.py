"""ServerConfig: validated on construction with messages naming the field, and what it implies."""

from __future__ import annotations

from typing import Any

import pytest

from runguard.server.config import ServerConfig
from runguard.server.core import GuardPolicy


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        pytest.param({"default_capacity": 0}, "default_capacity", id="capacity-0"),
        pytest.param({"capacities": {"g": 0}}, "capacities", id="guard-capacity-0"),
        pytest.param({"capacities": {"bad name": 2}}, "capacities", id="guard-name-space"),
        pytest.param({"capacities": {"": 2}}, "capacities", id="guard-name-empty"),
        pytest.param({"capacities": {"g" * 129: 2}}, "capacities", id="guard-name-129"),
        pytest.param({"dedup_window": -0.1}, "dedup_window", id="dedup-negative"),
        pytest.param({"max_ttl": 0}, "max_ttl", id="max-ttl-0"),
        pytest.param({"max_wait": 0}, "max_wait", id="max-wait-0"),
        pytest.param({"progress_interval": -1}, "progress_interval", id="progress-negative"),
        pytest.param({"keepalive_time": 0}, "keepalive_time", id="keepalive-0"),
        pytest.param({"keepalive_timeout": 0}, "keepalive_timeout", id="keepalive-timeout-0"),
        pytest.param({"min_client_ping_interval": 0}, "min_client_ping_interval", id="min-ping-0"),
        pytest.param({"shutdown_grace": -1}, "shutdown_grace", id="grace-negative"),
        pytest.param({"max_connection_age": 0}, "max_connection_age", id="connection-age-0"),
        pytest.param({"history": 0}, "history", id="history-0"),
        pytest.param({"watch_buffer": 0}, "watch_buffer", id="watch-buffer-0"),
        pytest.param({"max_pending_requests": 0}, "max_pending_requests", id="pending-0"),
        pytest.param({"max_queue": -1}, "max_queue", id="queue-negative"),
        pytest.param({"max_concurrent_streams": 0}, "max_concurrent_streams", id="streams-0"),
        pytest.param({"listen": "localhost"}, "listen", id="listen-no-port"),
        pytest.param({"listen": ":50051"}, "listen", id="listen-no-host"),
        pytest.param({"listen": "localhost:"}, "listen", id="listen-empty-port"),
        pytest.param({"listen": "localhost:http"}, "listen", id="listen-named-port"),
        pytest.param({"listen": "localhost:65536"}, "listen", id="listen-port-too-big"),
    ],
)
def test_bad_value_is_refused_naming_the_field(overrides: dict[str, Any], field: str) -> None:
    """A bad setting raises ValueError whose message starts with the field's name."""
    with pytest.raises(ValueError, match=rf"^{field}\b"):
        ServerConfig(**overrides)


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({}, id="defaults"),
        pytest.param({"dedup_window": 0}, id="no-dedup"),
        pytest.param({"max_queue": 0}, id="no-queue"),
        pytest.param({"shutdown_grace": 0}, id="no-grace"),
        pytest.param({"listen": "127.0.0.1:0"}, id="port-0"),
        pytest.param({"listen": "[::1]:65535"}, id="ipv6-max-port"),
        pytest.param({"capacities": {"a.b:c/d-e_F9": 1}}, id="guard-name-all-characters"),
    ],
)
def test_edge_values_are_accepted(overrides: dict[str, Any]) -> None:
    """Values at the edge of what is allowed build a config."""
    ServerConfig(**overrides)


def test_seed_defaults() -> None:
    """Out of the box a guard behaves like the seed: single flight, 5 s dedup, 1800 s watchdog."""
    config = ServerConfig()
    assert config.policy("anything") == GuardPolicy(
        capacity=1, dedup_window=5.0, max_ttl=1800.0, max_queue=1000
    )
    assert config.store_url == "memory://"


def test_policy_uses_the_guard_capacity_and_the_shared_rules() -> None:
    """A guard named in capacities gets its capacity; others the default; the rest is shared."""
    config = ServerConfig(
        default_capacity=2, capacities={"wide": 5}, dedup_window=1.5, max_ttl=60, max_queue=3
    )
    assert config.policy("wide") == GuardPolicy(
        capacity=5, dedup_window=1.5, max_ttl=60, max_queue=3
    )
    assert config.policy("other").capacity == 2


def test_capacities_cannot_be_changed_after_construction() -> None:
    """The capacities mapping is frozen with the config, even if the caller's dict changes."""
    given = {"a": 2}
    config = ServerConfig(capacities=given)
    given["a"] = 9
    assert config.policy("a").capacity == 2
    with pytest.raises(TypeError):
        config.capacities["a"] = 3  # type: ignore[index]  # proving it is read-only


def test_grpc_options_by_default() -> None:
    """The options never reuse the port and ping idle connections; no connection age limit."""
    options = dict(ServerConfig(keepalive_time=30, keepalive_timeout=10).grpc_options())
    assert options["grpc.so_reuseport"] == 0
    assert options["grpc.keepalive_time_ms"] == 30_000
    assert options["grpc.keepalive_timeout_ms"] == 10_000
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 10_000
    assert options["grpc.server.max_pending_requests"] == 20_000
    assert "grpc.max_connection_age_ms" not in options
    assert "grpc.max_concurrent_streams" not in options


def test_grpc_options_with_connection_age_and_stream_limit() -> None:
    """max_connection_age (with its grace) and max_concurrent_streams appear when set."""
    config = ServerConfig(
        max_connection_age=300,
        max_connection_age_grace=15,
        max_concurrent_streams=50,
        keepalive_time=2.5,
    )
    options = dict(config.grpc_options())
    assert options["grpc.max_connection_age_ms"] == 300_000
    assert options["grpc.max_connection_age_grace_ms"] == 15_000
    assert options["grpc.max_concurrent_streams"] == 50
    assert options["grpc.keepalive_time_ms"] == 2_500
    assert options["grpc.so_reuseport"] == 0


def test_grpc_options_name_each_option_once() -> None:
    """No option is given twice (grpc would take an arbitrary one)."""
    names = [name for name, _ in ServerConfig(max_connection_age=1).grpc_options()]
    assert len(names) == len(set(names))
