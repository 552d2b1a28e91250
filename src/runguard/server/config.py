"""The server's configuration: frozen, validated, built only at the edge (the CLI).

Nothing here reads the environment; ``runguard.server.cli`` does, once.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from runguard.contract import DEFAULT_TARGET
from runguard.server.core import CAPACITY_MAX, GuardPolicy, GuardSettings

__all__ = ["DEFAULT_GUARD", "GUARD_PATTERN", "ServerConfig", "is_loopback"]

DEFAULT_GUARD = "default"
"""The guard an empty guard name means."""

GUARD_PATTERN = re.compile(r"[A-Za-z0-9._:/-]{1,128}")
"""What a guard name may be: 1 to 128 characters of letters, digits and ``._:/-``."""


def _positive(name: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")


def _not_negative(name: str, value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")


def is_loopback(address: str) -> bool:
    """Whether host:port names only this machine (``localhost``, 127.0.0.0/8, ``[::1]``)."""
    host = address.rpartition(":")[0].strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name may resolve to anything


ORIGIN_PATTERN = re.compile(
    r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?"
)
"""An exact web origin: scheme, host and optional port; no path, no wildcard."""

MIN_REQUEST_BYTES = 256 * 1024
"""The smallest ``max_request_bytes``: above the largest request the limits allow."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """Everything ``runguard serve`` can be told.

    Attributes:
        listen: host:port to serve on; port 0 picks a free port.
        store_url: where guards live (``memory://``).
        default_capacity: slots of a guard not named in ``capacities``.
        capacities: slots per named guard.
        dedup_window: seconds a submission is remembered after its run starts
            (the seed's ``RUN_DEDUP_WINDOW_SECS``).
        max_ttl: the longest lease and the default one (the seed's ``RUN_MAX_SECS``).
        max_wait: the longest a Begin may queue for a slot.
        max_queue: callers that may queue per guard.
        history: changes kept for resuming watchers.
        watch_buffer: changes buffered per watcher before it is resynced.
        progress_interval: seconds between Progress heartbeats on a quiet stream.
        shutdown_grace: seconds in-flight calls get when the server stops.
        keepalive_time: seconds between the server's pings on an idle connection.
        keepalive_timeout: seconds a ping may go unanswered before the
            connection (and its streams) is dropped.
        min_client_ping_interval: the shortest interval between client pings
            the server accepts.
        max_connection_age: seconds after which a connection is closed
            (its streams end UNAVAILABLE and clients reconnect); None: never.
        max_connection_age_grace: seconds calls get to finish after that.
        max_concurrent_streams: streams per connection; None: grpc's default.
        max_pending_requests: calls accepted but not yet handled.
        metrics_listen: host:port to serve Prometheus metrics on; None: off.
        tls_cert: PEM file of the server's certificate chain; with ``tls_key``,
            the server speaks TLS only.
        tls_key: PEM file of the server's private key.
        tls_client_ca: PEM file of the CAs that sign client certificates: every
            client must present one (mTLS), and its identity (first subject
            alternative name, else common name) is the caller's principal.
        auth_tokens: a file of bearer tokens (``TOKEN PRINCIPAL ROLE[,ROLE]``
            per line, see ``runguard.server.auth``), reread on SIGHUP.
        insecure: allow a non-loopback ``listen`` without TLS or tokens.
        max_watchers_per_principal: Watch streams one authenticated principal
            may hold open at once; one more is RESOURCE_EXHAUSTED. (Without
            authentication every caller is the same anonymous principal, and
            no such limit applies.)
        max_request_bytes: the largest request message the server reads
            (``grpc.max_receive_message_length``); a larger one is refused
            RESOURCE_EXHAUSTED before it is parsed.
        max_guards: guards the store may hold at once; a Begin or
            ConfigureGuard that would store one more is RESOURCE_EXHAUSTED.
        http_listen: host:port of the HTTP front (Connect, gRPC-Web, SSE at
            ``/v1/events``, the status page at ``/``); None: off. It has the
            gRPC port's TLS, tokens and refusals.
        http_cors_origins: exact origins (``https://app.example.com``) whose
            pages may call the HTTP front from another origin; none by default.

    ``default_capacity``, ``dedup_window``, ``max_queue`` and ``capacities``
    seed the store: the first server on a store writes them, and from then on
    the store's settings are what every server enforces (a server told
    otherwise logs a ``policy_mismatch`` warning and follows the store).
    """

    listen: str = DEFAULT_TARGET
    store_url: str = "memory://"
    default_capacity: int = 1
    capacities: Mapping[str, int] = field(default_factory=dict)
    dedup_window: float = 5.0
    max_ttl: float = 1800.0
    max_wait: float = 3600.0
    max_queue: int = 1000
    history: int = 10_000
    watch_buffer: int = 1000
    progress_interval: float = 10.0
    shutdown_grace: float = 5.0
    keepalive_time: float = 30.0
    keepalive_timeout: float = 10.0
    min_client_ping_interval: float = 10.0
    max_connection_age: float | None = None
    max_connection_age_grace: float = 30.0
    max_concurrent_streams: int | None = None
    max_pending_requests: int = 20_000
    metrics_listen: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    auth_tokens: str | None = None
    insecure: bool = False
    max_watchers_per_principal: int = 1000
    max_request_bytes: int = 1024 * 1024
    max_guards: int = 250_000
    http_listen: str | None = None
    http_cors_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("listen", "metrics_listen", "http_listen"):
            address = getattr(self, name)
            if address is None:
                continue
            host, sep, port = address.rpartition(":")
            if not sep or not host or not port.isdigit() or int(port) > 65535:
                raise ValueError(f"{name} must be host:port, got {address!r}")
        if not 1 <= self.default_capacity <= CAPACITY_MAX:
            raise ValueError(
                f"default_capacity must be 1 to {CAPACITY_MAX}, got {self.default_capacity}"
            )
        for guard, capacity in self.capacities.items():
            if not GUARD_PATTERN.fullmatch(guard):
                raise ValueError(f"capacities: {guard!r} is not a valid guard name")
            if not 1 <= capacity <= CAPACITY_MAX:
                raise ValueError(f"capacities: {guard} must be 1 to {CAPACITY_MAX}, got {capacity}")
        object.__setattr__(self, "capacities", MappingProxyType(dict(self.capacities)))
        _not_negative("dedup_window", self.dedup_window)
        for name in (
            "max_ttl",
            "max_wait",
            "progress_interval",
            "keepalive_time",
            "keepalive_timeout",
            "min_client_ping_interval",
        ):
            _positive(name, getattr(self, name))
        _not_negative("shutdown_grace", self.shutdown_grace)
        _not_negative("max_connection_age_grace", self.max_connection_age_grace)
        if self.max_connection_age is not None:
            _positive("max_connection_age", self.max_connection_age)
        for name in ("history", "watch_buffer", "max_pending_requests", "max_guards"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_queue < 0:
            raise ValueError(f"max_queue must not be negative, got {self.max_queue}")
        if self.max_concurrent_streams is not None and self.max_concurrent_streams < 1:
            raise ValueError(
                f"max_concurrent_streams must be at least 1, got {self.max_concurrent_streams}"
            )
        self._check_security()

    def _check_security(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca needs tls_cert and tls_key (mTLS is TLS first)")
        self._check_exposed("listen", self.listen, "--tls-cert/--tls-key (and --tls-client-ca)")
        self._check_http()
        if self.max_watchers_per_principal < 1:
            raise ValueError(
                "max_watchers_per_principal must be at least 1, "
                f"got {self.max_watchers_per_principal}"
            )
        if self.max_request_bytes < MIN_REQUEST_BYTES:
            raise ValueError(
                f"max_request_bytes must be at least {MIN_REQUEST_BYTES} (the largest valid "
                f"request fits), got {self.max_request_bytes}"
            )

    def _check_exposed(self, name: str, address: str, tls_flags: str) -> None:
        """Refuse a non-loopback ``address`` that nothing guards (TLS, tokens or --insecure)."""
        if not (self.tls or self.auth_tokens or self.insecure or is_loopback(address)):
            raise ValueError(
                f"{name}: refusing to serve {address} without TLS or auth tokens: anybody who "
                "can reach it could take, end and force-end every run. Give "
                f"{tls_flags}, or --auth-tokens, or --insecure to serve a network you trust "
                "anyway"
            )

    def _check_http(self) -> None:
        object.__setattr__(self, "http_cors_origins", tuple(self.http_cors_origins))
        for origin in self.http_cors_origins:
            if not ORIGIN_PATTERN.fullmatch(origin):
                raise ValueError(
                    f"http_cors_origins: {origin!r} is not an exact origin "
                    "(scheme://host[:port], no path, no wildcard)"
                )
        if self.http_listen is None:
            if self.http_cors_origins:
                raise ValueError("http_cors_origins needs http_listen")
            return
        self._check_exposed("http_listen", self.http_listen, "--tls-cert/--tls-key")
        if self.tls_client_ca is not None and self.auth_tokens is None:
            raise ValueError(
                "http_listen: the HTTP front cannot tell principals by client certificate; "
                "give --auth-tokens too (HTTP callers send 'Authorization: Bearer TOKEN')"
            )

    @property
    def tls(self) -> bool:
        """Whether the server speaks TLS."""
        return self.tls_cert is not None

    @property
    def default_settings(self) -> GuardSettings:
        """The guard defaults this server proposes to the store."""
        return GuardSettings(
            capacity=self.default_capacity,
            dedup_window=self.dedup_window,
            max_queue=self.max_queue,
        )

    def policy(self, guard: str) -> GuardPolicy:
        """The rules of one guard as this server's flags say (the store may say otherwise)."""
        return GuardPolicy(
            capacity=self.capacities.get(guard, self.default_capacity),
            dedup_window=self.dedup_window,
            max_ttl=self.max_ttl,
            max_queue=self.max_queue,
        )

    def grpc_options(self) -> list[tuple[str, int]]:
        """The grpc server options these settings mean (see docs/configuration.md)."""
        options = [
            ("grpc.so_reuseport", 0),
            ("grpc.keepalive_time_ms", int(self.keepalive_time * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.keepalive_timeout * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            (
                "grpc.http2.min_ping_interval_without_data_ms",
                int(self.min_client_ping_interval * 1000),
            ),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.server.max_pending_requests", self.max_pending_requests),
            ("grpc.max_receive_message_length", self.max_request_bytes),
        ]
        if self.max_connection_age is not None:
            options.append(("grpc.max_connection_age_ms", int(self.max_connection_age * 1000)))
            options.append(
                ("grpc.max_connection_age_grace_ms", int(self.max_connection_age_grace * 1000))
            )
        if self.max_concurrent_streams is not None:
            options.append(("grpc.max_concurrent_streams", self.max_concurrent_streams))
        return options
