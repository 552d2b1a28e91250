"""RunGuard's server, for embedding it in a program of your own::

    import asyncio

    from runguard.server import RunGuardServer, ServerConfig

    async def main() -> None:
        server = RunGuardServer(ServerConfig(listen="127.0.0.1:0"))
        port = await server.start()
        ...
        await server.stop()

``open_store(url)`` opens a store by URL (``memory://``, ``sqlite:///path.db``,
``etcd://host:port/prefix``) to hand to ``RunGuardServer(config, store)``;
``configure_logging(level)`` sets up the JSON log lines the ``runguard`` command writes.

The names load on first use: ``runguard.server.entry`` must set grpc's log level before
anything imports grpc, and importing this package runs first.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runguard.server.app import RunGuardServer, configure_logging
    from runguard.server.config import ServerConfig
    from runguard.server.stores import Store, open_store

__all__ = ["RunGuardServer", "ServerConfig", "Store", "configure_logging", "open_store"]

_HOMES = {
    "RunGuardServer": "runguard.server.app",
    "configure_logging": "runguard.server.app",
    "ServerConfig": "runguard.server.config",
    "Store": "runguard.server.stores",
    "open_store": "runguard.server.stores",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
