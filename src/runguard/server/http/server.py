"""The HTTP listener: uvicorn, in the gRPC server's event loop, on the same coordinator.

The socket is bound here (not by uvicorn), so a port in use fails :meth:`HttpFront.start`
with one clear error before anything runs, and port 0 reports the port it got.
uvicorn's own signal handling is off (the process's handlers stop both fronts)
and so are its access logs (a URL may carry a watch token).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import ssl

import structlog
import uvicorn

from runguard.server.config import ServerConfig
from runguard.server.http.routes import HttpApp

__all__ = ["HttpFront"]

log = structlog.get_logger("runguard")


def _bind(address: str) -> socket.socket:
    """A listening socket on host:port.

    Raises:
        RuntimeError: the address cannot be bound (in use, not ours, bad host).
    """
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        family = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as error:
        raise RuntimeError(f"cannot listen on http_listen {address}: {error}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port)))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        raise RuntimeError(
            f"cannot listen on http_listen {address}: {error.strerror or error}"
        ) from None
    return sock


class HttpFront:
    """``await start()`` binds and serves, returning the port; ``await stop()`` ends it."""

    def __init__(self, config: ServerConfig, app: HttpApp) -> None:
        if config.http_listen is None:
            raise ValueError("HttpFront needs http_listen")
        self._config = config
        self._app = app
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None
        self.port = 0

    @property
    def running(self) -> bool:
        """Whether it serves (False before start, after stop, or when it failed)."""
        return self._task is not None and not self._task.done()

    def bind(self) -> int:
        """Bind the listening socket (nothing is served yet); returns the port.

        Raises:
            RuntimeError: the address cannot be bound.
        """
        assert self._config.http_listen is not None
        self._socket = _bind(self._config.http_listen)
        self.port = self._socket.getsockname()[1]
        return self.port

    def unbind(self) -> None:
        """Close a socket that :meth:`bind` opened and :meth:`start` never served."""
        if self._socket is not None and self._task is None:
            self._socket.close()
            self._socket = None

    async def start(self) -> int:
        """Serve on the bound socket (binding it first if needed); returns the port.

        Raises:
            RuntimeError: the address cannot be bound, or uvicorn did not start.
        """
        if self._socket is None:
            self.bind()
        sock = self._socket
        assert sock is not None
        config = self._config
        uvicorn_config = uvicorn.Config(
            self._app,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            ssl_certfile=config.tls_cert,
            ssl_keyfile=config.tls_key,
            ssl_ca_certs=config.tls_client_ca,
            ssl_cert_reqs=ssl.CERT_REQUIRED if config.tls_client_ca else ssl.CERT_NONE,
            timeout_graceful_shutdown=max(math.ceil(config.shutdown_grace), 1),
            h11_max_incomplete_event_size=64 * 1024,
        )
        server = uvicorn.Server(uvicorn_config)
        # The process's own handlers stop both fronts; uvicorn's would re-raise the signal.
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        self._server = server
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name="runguard-http")
        while not server.started and not self._task.done():  # noqa: ASYNC110  # uvicorn only sets a bool
            await asyncio.sleep(0.01)
        if not server.started:
            sock.close()
            with contextlib.suppress(BaseException):
                await self._task
            raise RuntimeError(f"cannot serve HTTP on {config.http_listen}")
        return self.port

    async def wait_failed(self) -> None:
        """Until the listener stops by itself (not by :meth:`stop`)."""
        if self._task is not None:
            with contextlib.suppress(BaseException):
                await asyncio.shield(self._task)

    async def stop(self) -> None:
        """Stop accepting, let open requests finish within the grace, close."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            async with asyncio.timeout(self._config.shutdown_grace + 1.0):
                await asyncio.shield(self._task)
        except TimeoutError:
            self._server.force_exit = True
            with contextlib.suppress(BaseException):
                await self._task
        except BaseException:  # it had failed already; the failure was logged
            pass
        for listener in self._server.servers:
            listener.close()
