"""The server process: grpc.aio server, TLS and authentication, health, reflection, logs,
graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from wsgiref.simple_server import WSGIServer

import grpc
import structlog
from google.rpc import error_details_pb2  # noqa: F401  # its types in the pool let grpcurl print details
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from runguard.server.auth import Authenticator, AuthInterceptor
from runguard.server.bind import bind_failure
from runguard.server.config import ServerConfig, is_loopback
from runguard.server.coordinator import Coordinator
from runguard.server.errors import StoreUnavailable
from runguard.server.http import HttpApp, HttpCredentials, HttpFront
from runguard.server.metrics import Metrics
from runguard.server.reflection import add_reflection
from runguard.server.servicer import RunGuardServicer, add_to_server
from runguard.server.stores import Store, open_store
from runguard.v1 import runguard_pb2

__all__ = ["RunGuardServer", "configure_logging"]

SERVICE_NAME = runguard_pb2.DESCRIPTOR.services_by_name["RunGuardService"].full_name

log = structlog.get_logger("runguard")

STORE_PROBE_INTERVAL = 1.0
"""Seconds between the health probes of the store (health is NOT_SERVING while it fails)."""


def configure_logging(level: str = "info") -> None:
    """One JSON object per line on stderr."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


class RunGuardServer:
    """A RunGuard server: ``await start()`` returns the bound port, ``await stop()`` drains."""

    def __init__(self, config: ServerConfig, store: Store | None = None) -> None:
        """Build the server (nothing is bound yet).

        Raises:
            ValueError: the token file cannot be read or does not parse.
        """
        self.config = config
        self.authenticator = Authenticator(
            tokens_path=config.auth_tokens, client_certificates=config.tls_client_ca is not None
        )
        self.store = (
            store if store is not None else open_store(config.store_url, history=config.history)
        )
        self.metrics = Metrics()
        self.metrics_port = 0
        self._metrics_server: WSGIServer | None = None
        self.coordinator = Coordinator(config, self.store, metrics=self.metrics)
        self.health = HealthServicer()
        self._probe: asyncio.Task[None] | None = None
        self._http_watch: asyncio.Task[None] | None = None
        self._serving = False
        """What health says: serving, the store reachable, the HTTP front (if any) up."""
        self._stopping = False
        self.port = 0
        self.http_port = 0
        self._server = grpc.aio.server(
            options=config.grpc_options(),
            interceptors=(
                [AuthInterceptor(self.authenticator, SERVICE_NAME)]
                if self.authenticator.enabled
                else None
            ),
        )
        servicer = RunGuardServicer(self.coordinator)
        add_to_server(servicer, self._server)
        self.http: HttpFront | None = None
        if config.http_listen is not None:
            app = HttpApp(
                config, servicer, HttpCredentials(self.authenticator), lambda: self._serving
            )
            self.http = HttpFront(config, app)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        add_reflection(
            self._server,
            [
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            ],
        )

    async def start(self) -> int:
        """Bind, start serving, and mark healthy; returns the port.

        Raises:
            RuntimeError: the address could not be bound, or a TLS file read.
        """
        credentials = self._credentials()
        if self.http is not None:
            # First: a plain socket closes for sure if gRPC's bind fails next (an unstarted
            # grpc server keeps the port it bound until the process ends).
            self.http_port = self.http.bind()
        try:
            self.port = (
                self._server.add_secure_port(self.config.listen, credentials)
                if credentials is not None
                else self._server.add_insecure_port(self.config.listen)
            )
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            self._unbind_http()
            listen = self.config.listen
            raise RuntimeError(f"cannot listen on {listen}: {bind_failure(listen)}") from None
        if self.config.metrics_listen is not None:
            try:
                self._metrics_server, _ = self.metrics.serve(self.config.metrics_listen)
            except OSError:
                self._unbind_http()
                listen = self.config.metrics_listen
                raise RuntimeError(
                    f"cannot serve metrics on {listen}: {bind_failure(listen)}"
                ) from None
            self.metrics_port = self._metrics_server.server_port
        try:
            await self.coordinator.start()
        except BaseException:
            self._unbind_http()
            raise
        await self._server.start()
        if self.http is not None:
            try:
                await self.http.start()
            except RuntimeError:
                await self.stop(0)
                raise
            self._http_watch = asyncio.create_task(self._watch_http(), name="runguard-http-watch")
        self._serving = True
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        self._probe = asyncio.create_task(self._probe_store(), name="runguard-store-probe")
        log.info(
            "serving",
            listen=self.config.listen,
            port=self.port,
            store=self.config.store_url,
            epoch=self.store.epoch,
            metrics_port=self.metrics_port or None,
            http_port=self.http_port or None,
            tls=self.config.tls,
            client_certificates=self.config.tls_client_ca is not None,
            auth_tokens=self.config.auth_tokens is not None,
        )
        if not self.authenticator.enabled and not is_loopback(self.config.listen):
            log.warning(
                "unauthenticated",
                detail=f"{self.config.listen} is not a loopback address and callers are not "
                "authenticated: whoever reaches it may Begin, End and force-End any run",
            )
        if (
            self.config.http_listen is not None
            and not self.authenticator.enabled
            and not is_loopback(self.config.http_listen)
        ):
            log.warning(
                "unauthenticated",
                detail=f"HTTP {self.config.http_listen} is not a loopback address and callers "
                "are not authenticated",
            )
        if not self.store.durable:
            log.warning(
                "memory_store",
                detail="state is lost on restart; fencing tokens of new guards are seeded "
                "from the clock (microseconds) so they stay above the last process's",
            )
        return self.port

    def _unbind_http(self) -> None:
        if self.http is not None:
            self.http.unbind()

    def _credentials(self) -> grpc.ServerCredentials | None:
        """TLS credentials from the configured files, or None for plaintext.

        Raises:
            RuntimeError: a file cannot be read.
        """
        config = self.config
        if config.tls_cert is None or config.tls_key is None:
            return None
        client_ca = (
            None if config.tls_client_ca is None else _read("tls_client_ca", config.tls_client_ca)
        )
        return grpc.ssl_server_credentials(
            [(_read("tls_key", config.tls_key), _read("tls_cert", config.tls_cert))],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )

    def reload_auth(self) -> bool:
        """Reread the token file (SIGHUP); a bad file keeps the old tokens and is logged.

        Open calls and streams are not touched.
        """
        return self.authenticator.reload()

    async def _probe_store(self) -> None:
        """Health follows the store: NOT_SERVING while it cannot be reached, SERVING again after."""
        serving = True
        while True:
            await asyncio.sleep(STORE_PROBE_INTERVAL)
            try:
                await self.store.snapshot([])
                reachable, detail = True, ""
            except StoreUnavailable as error:
                reachable, detail = False, str(error)
            if reachable == serving:
                continue
            serving = reachable
            self._serving = reachable and (self.http is None or self.http.running)
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if reachable
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            for name in ("", SERVICE_NAME):
                await self.health.set(name, status)
            log.warning("store_reachable" if reachable else "store_unreachable", detail=detail)

    async def _watch_http(self) -> None:
        """Health follows the HTTP front too: NOT_SERVING for good if it stops by itself."""
        assert self.http is not None
        await self.http.wait_failed()
        if self._stopping:
            return
        self._serving = False
        log.error("http_stopped", detail="the HTTP listener stopped; health is NOT_SERVING")
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

    async def stop(self, grace: float | None = None) -> None:
        """Drain: health NOT_SERVING, watchers told UNAVAILABLE, calls get ``grace`` seconds."""
        log.info("draining", grace=self.config.shutdown_grace if grace is None else grace)
        self._stopping = True
        self._serving = False
        if self._http_watch is not None:
            self._http_watch.cancel()
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        await self.health.enter_graceful_shutdown()
        self.coordinator.hub.close()  # ends every Watch: gRPC, Connect and SSE alike
        self.coordinator.drain()
        if self.http is not None:
            self.http.unbind()
            await self.http.stop()
        await self._server.stop(self.config.shutdown_grace if grace is None else grace)
        await self.coordinator.stop()
        await self.store.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        log.info("stopped")

    async def wait(self) -> None:
        """Until the server stops."""
        await self._server.wait_for_termination()


def _read(name: str, path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise RuntimeError(f"cannot read {name} {path}: {error}") from None
