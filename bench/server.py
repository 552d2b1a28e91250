"""The bench's RunGuard server: ``python -m bench.server --listen 127.0.0.1:0``.

It is the product's :class:`RunGuardServer` (the same grpc.aio server, options,
interceptors, health and reflection, the ``memory://`` store unless ``--store``
names another, and the same JSON logs as ``runguard serve``) with four
bench-only methods registered on that same grpc.aio server, the ceilings
RunGuard is measured against. They carry raw bytes (no protobuf) and hold no
state beyond what the stack needs:

- ``Noop`` (unary): returns at once. Its rate is what the stack does per call
  with no guard logic.
- ``Hold`` (server stream): sends ``ready``, then every payload that
  ``Broadcast`` publishes. All holders await one shared future, so a
  broadcast costs the stack's write per stream and nothing else: the fan-out
  ceiling, and its memory per stream the memory ceiling of a watcher.
- ``Broadcast`` (unary): hands its request bytes to every ``Hold`` stream.
- ``Exchange`` (bidirectional stream): answers every request message with one
  empty response message, in order. Its message rate is what the stack does
  per request/response pair when a client keeps one stream open instead of
  making one unary call per request: the ceiling of a streaming client path.

The contract is not touched; these methods exist only in this process.

Prints one JSON line ``{"port": ..., "pid": ...}`` on stdout once serving;
stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator

import grpc

from runguard.server.app import RunGuardServer, configure_logging
from runguard.server.config import ServerConfig

BENCH_SERVICE = "runguard.bench.v1.Bench"
NOOP_METHOD = f"/{BENCH_SERVICE}/Noop"
HOLD_METHOD = f"/{BENCH_SERVICE}/Hold"
BROADCAST_METHOD = f"/{BENCH_SERVICE}/Broadcast"
EXCHANGE_METHOD = f"/{BENCH_SERVICE}/Exchange"
READY = b"ready"

Context = grpc.aio.ServicerContext[bytes, bytes]


class _Ceilings:
    """The bench-only methods; one shared future is the whole broadcast state."""

    def __init__(self) -> None:
        self._next: asyncio.Future[bytes] | None = None

    def _future(self) -> asyncio.Future[bytes]:
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        return self._next

    async def noop(self, request: bytes, context: Context) -> bytes:
        return b""

    async def hold(self, request: bytes, context: Context) -> None:
        await context.write(READY)
        while True:
            await context.write(await self._future())

    async def broadcast(self, request: bytes, context: Context) -> bytes:
        future = self._future()
        self._next = None
        future.set_result(request)
        return b""

    async def exchange(self, requests: AsyncIterator[bytes], context: Context) -> None:
        # One message at a time: a response per request, in the requests' order.
        async for _ in requests:
            await context.write(b"")

    def handler(self) -> grpc.GenericRpcHandler[bytes, bytes]:
        """The four methods: raw bytes in and out (no (de)serialisation)."""
        return grpc.method_handlers_generic_handler(
            BENCH_SERVICE,
            {
                "Noop": grpc.unary_unary_rpc_method_handler(self.noop),
                "Hold": grpc.unary_stream_rpc_method_handler(self.hold),
                "Broadcast": grpc.unary_unary_rpc_method_handler(self.broadcast),
                "Exchange": grpc.stream_stream_rpc_method_handler(self.exchange),
            },
        )


async def _serve(args: argparse.Namespace) -> None:
    configure_logging(args.log_level)
    capacities: dict[str, int] = {}
    for item in args.capacity:
        guard, _, slots = item.rpartition("=")
        capacities[guard] = int(slots)
    config = ServerConfig(
        listen=args.listen,
        store_url=args.store,
        capacities=capacities,
        dedup_window=args.dedup_window,
    )
    server = RunGuardServer(config)
    # The product's own grpc.aio server object, so the ceilings run on exactly
    # the stack Begin, End and Watch run on (options, interceptors and all).
    server._server.add_generic_rpc_handlers((_Ceilings().handler(),))
    port = await server.start()
    print(json.dumps({"port": port, "pid": os.getpid()}), flush=True)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    await server.stop(1.0)


def main() -> None:
    """Run the bench server until it is told to stop."""
    parser = argparse.ArgumentParser(prog="python -m bench.server")
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument("--store", default="memory://", help="store URL (memory://)")
    parser.add_argument("--capacity", action="append", default=[], help="GUARD=SLOTS, repeatable")
    parser.add_argument("--dedup-window", type=float, default=5.0, help="seconds (5)")
    args = parser.parse_args()
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
